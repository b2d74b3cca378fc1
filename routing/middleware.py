"""Send every request that is not for the balancer's own pages to the proxy view."""

from django.conf import settings
from django.http import HttpResponseForbidden

from .headers import is_trusted
from .proxy import raw_target
from .resolver import normalise_host, path_segments, split_target
from .views import proxy_view


def wants_own_page(request, host):
    """Whether a request is for the balancer's own pages, which exist for the admin hosts only."""
    return host in settings.ADMIN_HOSTS and is_balancer_page(request)


def is_balancer_page(request):
    """Whether the request's path is under one of the balancer's own pages.

    The raw target is read as the resolver reads it (decoded, dot segments
    removed): "/admin/../x" is routed, and "/x/../admin/" never reaches a backend.
    """
    target = split_target(raw_target(request))
    return target is not None and path_segments(target[0])[0][1] in settings.BALANCER_PAGES


class ProxyMiddleware:
    """Proxy every other request past the middleware below it.

    Placed first, it keeps sessions, CSRF, security headers and clickjacking
    protection on the balancer's own pages and off proxied traffic, whose
    responses must carry only what the backend sent. The own pages exist for
    the admin hosts only.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        host = normalise_host(request.META.get("HTTP_HOST"))
        if not wants_own_page(request, host):
            return proxy_view(request, host)
        if request.path_info != "/healthz" and not is_allowed_client(request):
            return HttpResponseForbidden("Forbidden", content_type="text/plain; charset=utf-8")
        return self.get_response(request)


def is_allowed_client(request):
    """Whether the client may use the balancer's own pages (ADMIN_ALLOWED_NETWORKS)."""
    networks = settings.ADMIN_ALLOWED_NETWORKS
    return not networks or is_trusted(request.META.get("REMOTE_ADDR", ""), networks)
