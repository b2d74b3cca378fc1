"""The WSGI application: traffic goes straight to the proxy view, the admin listener to Django."""

from django.core.handlers.wsgi import WSGIHandler
from django.db import connections

from .inbound import ClientRequest
from .middleware import is_admin_listener
from .views import proxy


class BalancerHandler(WSGIHandler):
    """Django's WSGI handler, with a short way for the traffic it proxies.

    A request on the traffic listener needs nothing of what Django's handler
    does around a view: no URL resolving, no middleware (Django's security
    machinery guards the admin listener only), no request signals (they
    close stale database connections, and a proxied request needs none: the
    route table is rebuilt off the request path, and a request that has to
    build it closes its connection itself). It goes to the proxy view at
    once, read from the environ into a ClientRequest (not into Django's
    request object, which it would never use), as ListenerMiddleware would
    send it. Requests on the admin listener take Django's full way,
    ListenerMiddleware's checks included, and close their database
    connections when their response is ready.
    """

    def __call__(self, environ, start_response):
        if is_admin_listener(environ):
            try:
                return super().__call__(environ, start_response)
            finally:
                # Django keeps a connection per thread for CONN_MAX_AGE; under
                # gevent a thread is a client connection's greenlet, which
                # ends with it, so a kept connection would stay open unused
                # until the garbage collector found it. Only the refresher,
                # which lives as long as the worker, keeps one.
                connections.close_all()
        response = proxy(ClientRequest.from_environ(environ))
        try:
            start_response(
                f"{response.status_code} {response.reason_phrase}", list(response.items())
            )
        except BaseException:
            # The server refused the status or headers: the response is never
            # iterated, so release the backend connection and finish the
            # exchange here.
            response.close()
            raise
        return response
