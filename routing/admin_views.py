"""Admin pages beyond the model lists: the route explainer, the routing table, its history."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse

from .explain import explain, table_in_resolver_order
from .impact import TableChange, moves
from .models import Revision
from .revisions import roll_back, rollback_permissions
from .routes_file import RoutesFileError
from .table import get_route_table

REVISIONS_PER_PAGE = 50


class ExplainForm(forms.Form):
    url = forms.CharField(
        label="URL",
        max_length=2000,
        help_text="As a client would ask for it, e.g. http://www.mango.com/apple/x",
        widget=forms.TextInput(attrs={"size": 70, "autofocus": True}),
    )
    client = forms.GenericIPAddressField(
        label="Client address",
        required=False,
        help_text="Optional, for the rule's firewall to judge, e.g. 10.192.0.1",
    )


def admin_hosts(request):
    """The host:port spellings of the admin listener a URL may name: never routed."""
    port = request.get_port()
    hosts = {request.get_host().lower()}
    hosts |= {f"{host}:{port}" for host in settings.ADMIN_HOSTS}
    return hosts


def explain_route_view(request):
    """Show which rule serves a URL, its pool and backends, and why the others lost."""
    form = ExplainForm(request.GET or None)
    explanation = None
    if form.is_valid():
        data = form.cleaned_data
        explanation = explain(
            get_route_table(), data["url"], data["client"] or None, admin_hosts(request)
        )
    context = {
        **admin.site.each_context(request),
        "title": "Explain a route",
        "form": form,
        "explanation": explanation,
    }
    return TemplateResponse(request, "admin/routing/explain.html", context)


def routing_table_view(request):
    """Show the live routing table in the order the resolver applies it."""
    table = get_route_table()
    context = {
        **admin.site.each_context(request),
        "title": "Routing table",
        "version": table.version,
        "groups": table_in_resolver_order(table),
    }
    return TemplateResponse(request, "admin/routing/table.html", context)


def history_view(request):
    """List the revisions of the routing table, newest first, each with its changes."""
    if not request.user.has_perm("routing.view_revision"):
        raise PermissionDenied
    page = Paginator(Revision.objects.select_related("user"), REVISIONS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    context = {
        **admin.site.each_context(request),
        "title": "History of the routing table",
        "page": page,
        "newest": Revision.objects.values_list("number", flat=True).first(),
        "can_roll_back": request.user.has_perms(rollback_permissions()),
    }
    return TemplateResponse(request, "admin/routing/history.html", context)


def rollback_view(request, number):
    """Show what rolling back to a revision would change; on confirmation (POST), do it."""
    if not request.user.has_perms(rollback_permissions()):
        raise PermissionDenied
    revision = get_object_or_404(Revision, number=number)
    if request.method == "POST":
        try:
            changes = roll_back(revision)
        except RoutesFileError as error:
            messages.error(request, f"Nothing was rolled back: {' '.join(error.errors)}")
        else:
            if changes:
                messages.success(
                    request, f"Rolled back to revision {number}: {len(changes)} changes."
                )
            else:
                messages.info(request, f"The table already is revision {number}'s.")
        return redirect("history")
    change = TableChange()
    try:
        changes, errors = roll_back(revision, dry_run=True, around_writes=change), []
    except RoutesFileError as error:
        changes, errors = [], error.errors
    context = {
        "impact": moves(change.before, change.after),
        **admin.site.each_context(request),
        "title": f"Roll back to revision {number}?",
        "revision": revision,
        "changes": changes,
        "errors": errors,
    }
    return TemplateResponse(request, "admin/routing/rollback.html", context)
