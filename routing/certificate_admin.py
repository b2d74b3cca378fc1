"""Certificates in the admin: expiry badges, the last error, and uploading one with its key.

A stored private key is never shown: the form's key box is always empty,
and a certificate is replaced by uploading a chain and key together.
"""

import datetime

from django import forms
from django.contrib import admin, messages
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters

from .models import Certificate, normalise_host_pattern, validate_host_pattern
from .pem import check_covers, read_certificate
from .tls import check_servable

# A certificate that expires sooner than this shows amber.
EXPIRY_WARNING = datetime.timedelta(days=30)


def expiry_badge(certificate, now=None):
    """Return a coloured badge: red expired or failing, amber expiring soon, green valid."""
    now = now or timezone.now()
    if not certificate.issued:
        colour, label = "#c62828", "failing" if certificate.last_error else "not issued"
    elif certificate.not_after <= now:
        colour, label = "#c62828", "expired"
    elif certificate.last_error:
        colour, label = "#c62828", f"failing, expires in {(certificate.not_after - now).days} days"
    elif certificate.not_after - now <= EXPIRY_WARNING:
        colour, label = "#ef6c00", f"expires in {(certificate.not_after - now).days} days"
    else:
        colour, label = "#2e7d32", f"valid, {(certificate.not_after - now).days} days left"
    return format_html(
        '<span style="color: {}; font-weight: bold; white-space: nowrap" title="{}">● {}</span>',
        colour,
        certificate.last_error or label,
        label,
    )


class CertificateUploadForm(forms.ModelForm):
    """A certificate chain and its key, checked to parse and to match before they are stored."""

    private_key_pem = forms.CharField(
        label="Private key (PEM)",
        widget=forms.Textarea(attrs={"rows": 6, "autocomplete": "off"}),
        help_text="The certificate's unencrypted key (-----BEGIN PRIVATE KEY----- ...). "
        "Never shown again once stored: upload chain and key together to replace them.",
    )

    class Meta:
        model = Certificate
        fields = ["host", "chain_pem", "private_key_pem"]
        widgets = {"chain_pem": forms.Textarea(attrs={"rows": 10})}
        help_texts = {
            "chain_pem": "The certificate first, then its intermediates, in PEM "
            "(-----BEGIN CERTIFICATE----- ...).",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial["private_key_pem"] = ""  # never sent back to a browser

    def clean_host(self):
        host = normalise_host_pattern(self.cleaned_data["host"])
        validate_host_pattern(host)
        return host

    def clean(self):
        cleaned = super().clean()
        chain, key = cleaned.get("chain_pem"), cleaned.get("private_key_pem")
        if chain and key:
            self.details = read_certificate(chain, key)  # ValidationError: shown on the form
            check_servable(chain, key)
            if cleaned.get("host"):
                check_covers(self.details, cleaned["host"])
        return cleaned

    def save(self, commit=True):
        certificate = super().save(commit=False)
        details = self.details
        certificate.names = details.names
        certificate.not_before, certificate.not_after = details.not_before, details.not_after
        certificate.issuer = details.issuer
        certificate.uploaded = True
        certificate.last_error, certificate.failures, certificate.next_attempt = "", 0, None
        if commit:
            certificate.save()
        return certificate


@admin.action(
    description="Order again at the loop's next round (end the back-off)",
    permissions=["change"],
)
def order_again(modeladmin, request, queryset):
    """End the back-off of failed orders: the certificate loop's next round tries them."""
    uploaded = queryset.filter(uploaded=True).count()
    retried = list(queryset.filter(uploaded=False).exclude(next_attempt=None))
    for certificate in retried:
        certificate.next_attempt = None
        certificate.save(update_fields=["next_attempt"])
        modeladmin.log_change(request, certificate, "Ordered again: back-off ended.")
    if retried:
        modeladmin.message_user(
            request,
            f"{len(retried)} host{'s are' if len(retried) > 1 else ' is'} ordered again at "
            "the certificate loop's next round (if its host rule has TLS auto).",
            messages.SUCCESS,
        )
    if uploaded:
        modeladmin.message_user(
            request,
            "Left alone: uploaded certificates are never ordered from the CA.",
            messages.WARNING,
        )
    if not retried and not uploaded:
        modeladmin.message_user(request, "Nothing was backing off.", messages.INFO)


@admin.register(Certificate)
class CertificateAdmin(admin.ModelAdmin):
    form = CertificateUploadForm
    actions = [order_again]
    list_display = ("host", "expiry", "not_after", "issuer_name", "source", "last_error_line")
    search_fields = ("host", "names", "issuer")
    # What the CA, the loop and the certificate itself say: shown, never edited.
    state_fields = [
        "expiry",
        "names",
        "not_before",
        "not_after",
        "issuer",
        "uploaded",
        "last_error",
        "failures",
        "next_attempt",
    ]
    readonly_fields = ["private_key", *state_fields]

    @method_decorator(sensitive_post_parameters("private_key_pem"))
    def changeform_view(self, request, *args, **kwargs):
        """The add and change pages; an error report of theirs never shows the posted key."""
        return super().changeform_view(request, *args, **kwargs)

    def get_fieldsets(self, request, obj=None):
        # Who may only view gets the form's fields as read-only displays of
        # the stored values: the key's is replaced by one that never shows it.
        can_upload = self.has_change_permission(request, obj) if obj else True
        key = "private_key_pem" if can_upload else "private_key"
        upload = (
            "Upload" if obj is None else "Replace with an uploaded certificate",
            {"fields": ["host", "chain_pem", key]},
        )
        if obj is None:
            return [upload]
        return [(None, {"fields": self.state_fields}), upload]

    @admin.display(description="Private key (PEM)")
    def private_key(self, certificate):
        return "stored, never shown" if certificate.private_key_pem else "-"

    @admin.display(description="Expiry", ordering="not_after")
    def expiry(self, certificate):
        return expiry_badge(certificate)

    @admin.display(description="Issuer", ordering="issuer")
    def issuer_name(self, certificate):
        """The issuer's common name (CN=...), or the whole name without one."""
        for part in certificate.issuer.split(","):
            if part.startswith("CN="):
                return part.removeprefix("CN=")
        return certificate.issuer or "-"

    @admin.display(description="Source", ordering="uploaded")
    def source(self, certificate):
        return "uploaded" if certificate.uploaded else "ACME"

    @admin.display(description="Last error")
    def last_error_line(self, certificate):
        return certificate.last_error[:120] or "-"
