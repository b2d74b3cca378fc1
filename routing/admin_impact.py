"""The rule change form's "Preview impact" button: the recent requests a change moves."""

import copy

from .impact import preview_rule_form

PREVIEW = "_preview_impact"


class ImpactPreviewMixin:
    """A rule admin whose change form previews the impact of the change instead of saving it.

    The button posts the form as Save does; the form is validated as for a
    save, and when it is valid its change is written and rolled back to
    read the table it would make. It is then shown again, unsaved, with the
    recent requests that would go elsewhere.
    """

    change_form_template = "admin/routing/rule_change_form.html"

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change, **kwargs)
        if request.method != "POST" or PREVIEW not in request.POST:
            return form_class

        class PreviewForm(form_class):
            def __init__(self, *args, instance=None, **kwargs):
                # A copy takes the edit: the page's title and breadcrumbs keep
                # naming the rule as it is saved.
                super().__init__(*args, instance=copy.copy(instance), **kwargs)

            def is_valid(self):
                """Preview a valid change, then answer False: the admin then saves nothing."""
                if super().is_valid():
                    request.impact_preview = preview_rule_form(self)
                return False

        return PreviewForm

    def render_change_form(self, request, context, *args, **kwargs):
        context["impact"] = getattr(request, "impact_preview", None)
        return super().render_change_form(request, context, *args, **kwargs)
