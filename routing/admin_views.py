"""Admin pages beyond the model lists: the route explainer and the routing table overview."""

from django import forms
from django.contrib import admin
from django.template.response import TemplateResponse

from .explain import explain, table_in_resolver_order
from .table import get_route_table


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


def explain_route_view(request):
    """Show which rule serves a URL, its pool and backends, and why the others lost."""
    form = ExplainForm(request.GET or None)
    explanation = None
    if form.is_valid():
        data = form.cleaned_data
        explanation = explain(get_route_table(), data["url"], data["client"] or None)
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
