"""The pages of the admin listener (ADMIN_BIND), the API's included; traffic never reaches them.

/healthz, the liveness URL, is answered by routing.middleware before any
check of Host or client address, for probes.
"""

from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

from routing.admin_traffic import traffic_data_view, traffic_view
from routing.admin_views import (
    explain_route_view,
    history_view,
    rollback_view,
    routing_table_view,
)
from routing.observe import render_metrics
from routing.table import get_route_table


def metrics(request):
    """Serve every worker's metrics in Prometheus' text format."""
    body, content_type = render_metrics(get_route_table)
    return HttpResponse(body, content_type=content_type)


urlpatterns = [
    path("admin/routing/explain/", admin.site.admin_view(explain_route_view), name="explain"),
    path("admin/routing/table/", admin.site.admin_view(routing_table_view), name="route-table"),
    path("admin/routing/history/", admin.site.admin_view(history_view), name="history"),
    path(
        "admin/routing/history/<int:number>/rollback/",
        admin.site.admin_view(rollback_view),
        name="rollback",
    ),
    path("admin/routing/traffic/", admin.site.admin_view(traffic_view), name="traffic"),
    path(
        "admin/routing/traffic/data/",
        admin.site.admin_view(traffic_data_view),
        name="traffic-data",
    ),
    path("admin/", admin.site.urls),
    path("api/", include("routing.api.urls")),
    path("metrics", metrics, name="metrics"),
]
