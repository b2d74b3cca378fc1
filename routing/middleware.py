"""Send every request that is not for the balancer's own pages to the proxy view."""

from django.conf import settings

from .resolver import normalise_host
from .views import proxy_view


def is_balancer_page(request):
    """Whether the request is for the admin, its static files or the liveness URL."""
    # The path test is the cheap one, and fails for nearly all proxied traffic.
    path = request.path_info
    return (
        any(
            path == prefix or path.startswith(prefix + "/")
            for prefix in settings.BALANCER_PATH_PREFIXES
        )
        and normalise_host(request.META.get("HTTP_HOST")) in settings.ADMIN_HOSTS
    )


class ProxyMiddleware:
    """Proxy every other request past the middleware below it.

    Placed first, it keeps sessions, CSRF, security headers and clickjacking
    protection on the balancer's own pages and off proxied traffic, whose
    responses must carry only what the backend sent.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if is_balancer_page(request):
            return self.get_response(request)
        return proxy_view(request)
