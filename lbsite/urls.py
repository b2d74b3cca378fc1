"""The balancer's own pages, served only for the admin hosts (see ProxyMiddleware)."""

from django.contrib import admin
from django.http import HttpResponse
from django.urls import path


def healthz(request):
    """Answer liveness probes: the balancer process is up."""
    return HttpResponse("OK", content_type="text/plain; charset=utf-8")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
]
