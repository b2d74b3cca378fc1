"""Send traffic to the proxy view; guard the admin listener before Django's own middleware."""

import functools
import logging

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpResponse

from lbsite import listeners

from .headers import is_trusted
from .inbound import judge_peer
from .responses import error_response
from .revisions import changes_by
from .views import proxy_view

logger = logging.getLogger(__name__)

LIVENESS_PATH = "/healthz"


def is_admin_listener(environ):
    """Whether a request came in on the admin listener (ADMIN_BIND), told by its port.

    gunicorn sets SERVER_PORT from the listening socket, and so does
    runserver; Django's test client reaches the admin with SERVER_PORT set.
    """
    return settings.ADMIN_BIND is not None and environ.get("SERVER_PORT") == admin_port()


@functools.cache
def admin_port():
    """Return the admin listener's port, looked up once per process."""
    return listeners.admin_port()


class ListenerMiddleware:
    """Proxy traffic past the middleware below; let only good admin requests through.

    Placed first, it keeps sessions, CSRF, security headers and clickjacking
    protection on the admin listener and off proxied traffic, whose
    responses must carry only what the backend sent. Under gunicorn,
    routing.handler sends traffic to the proxy view before any middleware;
    this does the same under Django's own handler (test client, runserver).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not is_admin_listener(request.META):
            return proxy_view(request)
        if request.path_info == LIVENESS_PATH:
            return liveness()
        return refuse_admin_request(request) or self.get_response(request)


def liveness():
    """Answer liveness probes, whatever their Host or address: the process is up."""
    return HttpResponse("OK", content_type="text/plain; charset=utf-8")


def refuse_admin_request(request):
    """Return the answer for an admin request that may not go further, or None.

    A Host outside ADMIN_HOSTS gets 400 and one log line (Django's own
    answer would log a traceback for each); a client outside
    ADMIN_ALLOWED_NETWORKS gets 403.
    """
    _trusted, client = judge_peer(request.META)  # the peer, or what a trusted proxy reports
    try:
        request.get_host()
    except DisallowedHost as error:
        logger.warning("Admin listener refused a request from %s: %s", client, error)
        return error_response(400)
    networks = settings.ADMIN_ALLOWED_NETWORKS
    if networks and not is_trusted(client, networks):
        return error_response(403)
    return None


class RevisionUserMiddleware:
    """Name the user of an admin-listener request in the revisions its changes make.

    Below authentication; the API authenticates a token only in its view,
    so the user is read when a change is made, not here.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with changes_by(request):
            return self.get_response(request)
