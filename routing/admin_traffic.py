"""The admin's Traffic page: charts of every pool and backend, redrawn every few seconds."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpResponseBadRequest, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from .models import Pool
from .traffic import traffic_report

# The windows the page offers, in seconds, by their label.
WINDOWS = {"15 min": 900, "1 h": 3600, "6 h": 6 * 3600, "24 h": 24 * 3600}
DEFAULT_WINDOW = 900


def traffic_view(request):
    """Show the Traffic page; its script fetches the data from traffic_data_view."""
    context = {
        **admin.site.each_context(request),
        "title": "Traffic",
        "windows": WINDOWS,
        "default_window": DEFAULT_WINDOW,
        "interval": settings.TRAFFIC_INTERVAL,
        "retention_hours": settings.TRAFFIC_RETENTION / 3600,
    }
    return TemplateResponse(request, "admin/routing/traffic.html", context)


def traffic_data_view(request):
    """Return the charts' data over ?window=SECONDS (one of WINDOWS), as JSON."""
    try:
        window = int(request.GET.get("window", DEFAULT_WINDOW))
    except ValueError:
        window = None
    if window not in WINDOWS.values():
        allowed = ", ".join(str(seconds) for seconds in WINDOWS.values())
        return HttpResponseBadRequest(
            f"window is one of {allowed} (seconds).", content_type="text/plain"
        )
    return JsonResponse(with_links(traffic_report(window)))


def with_links(report):
    """Add each pool's admin page and the rules that send requests to it, as links."""
    pools = {pool.name: pool for pool in Pool.objects.prefetch_related("hostrules", "pathrules")}
    for entry in report["pools"]:
        pool = pools.get(entry["name"])  # a pool deleted since its samples: no links
        entry["url"] = None if pool is None else admin_url(pool)
        rules = [] if pool is None else [*pool.hostrules.all(), *pool.pathrules.all()]
        entry["rules"] = [{"label": str(rule), "url": admin_url(rule)} for rule in rules]
    return report


def admin_url(row):
    return reverse(f"admin:routing_{row._meta.model_name}_change", args=[row.pk])
