"""The admin's Traffic page: charts of every pool and backend, redrawn every few seconds."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpResponseBadRequest, JsonResponse
from django.template.response import TemplateResponse

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
    return JsonResponse(traffic_report(window))
