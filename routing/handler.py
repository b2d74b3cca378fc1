"""The WSGI application: proxied traffic goes straight to the proxy view."""

from django.core.handlers.wsgi import WSGIHandler, WSGIRequest

from .middleware import wants_own_page
from .resolver import normalise_host
from .views import proxy_view


class BalancerHandler(WSGIHandler):
    """Django's WSGI handler, with a short way for the traffic it proxies.

    A request for a backend needs nothing of what Django's handler does
    around a view: no URL resolving, no middleware (Django's security
    machinery guards the balancer's own pages only, DESIGN.md §7), no
    request signals (they close stale database connections, and a proxied
    request needs none: the route table is rebuilt off the request path, and
    a request that has to build it closes its connection itself).
    It goes to the proxy view at once, as ProxyMiddleware would send it. The
    balancer's own pages take Django's full way, ProxyMiddleware and the
    admin-address check included.
    """

    def __call__(self, environ, start_response):
        request = WSGIRequest(environ)
        host = normalise_host(environ.get("HTTP_HOST"))
        if wants_own_page(request, host):
            return super().__call__(environ, start_response)
        response = proxy_view(request, host)
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
