"""The routing table in the admin: pools with their backends, host and path rules."""

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from .certificate_admin import CertificateAdmin  # noqa: F401  (registers it)
from .forms import RuleForm
from .models import ACTION_FIELDS, Backend, HostRule, PathRule, Pool

admin.site.site_header = "Load balancer administration"
admin.site.site_title = "Load balancer"
admin.site.index_title = "Routing table and accounts"
# "/" on an admin host is routed to a backend, not a page of the balancer.
admin.site.site_url = None


@admin.action(description="Enable selected %(verbose_name_plural)s")
def enable_selected(modeladmin, request, queryset):
    update_selected(modeladmin, request, queryset, enabled=True)


@admin.action(description="Disable selected %(verbose_name_plural)s")
def disable_selected(modeladmin, request, queryset):
    update_selected(modeladmin, request, queryset, enabled=False)


@admin.action(description="Drain selected backends (weight 0: no new requests)")
def drain_selected(modeladmin, request, queryset):
    update_selected(modeladmin, request, queryset, weight=0)


def update_selected(modeladmin, request, queryset, **values):
    """Update the selected rows, or say why none was changed (a row breaks a rule)."""
    try:
        queryset.update(**values)
    except ValidationError as error:
        modeladmin.message_user(
            request, f"Nothing was changed: {' '.join(error.messages)}", messages.ERROR
        )


def health_badge(backend):
    """Return a coloured badge: disabled, drained, down or healthy (never checked counts)."""
    if not backend.enabled:
        colour, label = "#757575", "disabled"
    elif not backend.healthy:
        colour, label = "#c62828", "down"
    elif backend.weight == 0:
        colour, label = "#ef6c00", "draining"
    else:
        colour, label = "#2e7d32", "healthy" if backend.last_checked else "healthy (unchecked)"
    return format_html(
        '<span style="color: {}; font-weight: bold" title="{}">● {}</span>',
        colour,
        backend.last_error or label,
        label,
    )


class BackendInline(admin.TabularInline):
    model = Backend
    extra = 1
    fields = ("url", "weight", "enabled", "health", "last_checked", "latency_ms", "last_error")
    readonly_fields = ("health", "last_checked", "latency_ms", "last_error")

    @admin.display(description="Health")
    def health(self, backend):
        return health_badge(backend) if backend.pk else "-"


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ("name", "algorithm", "backend_list", "connect_timeout", "read_timeout")
    list_filter = ("algorithm",)
    search_fields = ("name", "backends__url")
    inlines = [BackendInline]
    fieldsets = [
        (None, {"fields": ["name", "algorithm"]}),
        (
            "Timeouts and retries",
            {"fields": ["connect_timeout", "read_timeout", "max_attempts"]},
        ),
        (
            "Health",
            {
                "fields": [
                    "health_check_path",
                    "health_check_interval",
                    "health_check_timeout",
                    "max_fails",
                    "fail_timeout",
                ],
                "description": "Active checks run in `python manage.py healthcheck "
                "--loop` and are shared by every worker through the database. "
                "Passive failures (max fails, fail timeout) are counted by each "
                "worker on its own.",
            },
        ),
        ("TLS to https:// backends", {"fields": ["tls_verify", "tls_ca_bundle"]}),
    ]

    @admin.display(description="Backends")
    def backend_list(self, pool):
        return format_html_join(
            mark_safe("<br>"),
            "{} {}",
            ((health_badge(backend), backend.url) for backend in pool.backends.all()),
        )

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("backends")


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    list_display = (
        "url",
        "pool",
        "weight",
        "enabled",
        "health",
        "last_checked",
        "latency_ms",
        "last_error",
    )
    list_filter = ("pool", "enabled", "healthy")
    search_fields = ("url", "pool__name")
    list_select_related = ("pool",)
    readonly_fields = ("healthy", "last_checked", "latency_ms", "last_error")
    actions = [enable_selected, disable_selected, drain_selected]

    @admin.display(description="Health", ordering="healthy")
    def health(self, backend):
        return health_badge(backend)


class RuleAdmin(admin.ModelAdmin):
    """What host and path rules share: the target pool, whether the rule is live, its actions."""

    form = RuleForm
    list_filter = ("enabled", "pool")
    list_select_related = ("pool",)
    actions = [enable_selected, disable_selected]
    rule_fields = ()

    def get_queryset(self, request):
        usable = Backend.objects.filter(
            pool=OuterRef("pool"), enabled=True, healthy=True, weight__gt=0
        )
        return super().get_queryset(request).annotate(pool_usable=Exists(usable))

    def get_fieldsets(self, request, obj=None):
        """The rule, then its actions: folded away while the rule has none."""
        has_actions = obj is not None and any(getattr(obj, name) for name in ACTION_FIELDS)
        return [
            (None, {"fields": self.rule_fields}),
            (
                "Actions",
                {
                    "fields": ACTION_FIELDS,
                    "classes": [] if has_actions else ["collapse"],
                    "description": "Optional. In this order: the firewall may refuse "
                    "the request (403); the path is rewritten, the query and the "
                    "request headers changed before forwarding; the response headers "
                    "on the way back. Leave a box empty for no change.",
                },
            ),
        ]

    @admin.display(description="Live", boolean=True)
    def live(self, rule):
        """Enabled, and its pool has a backend that takes requests."""
        return rule.enabled and rule.pool_usable

    @admin.display(description="Actions")
    def action_list(self, rule):
        names = [self.form.base_fields[name].label for name in ACTION_FIELDS if getattr(rule, name)]
        return ", ".join(names) or "-"


@admin.register(HostRule)
class HostRuleAdmin(RuleAdmin):
    list_display = ("host", "pool", "live", "enabled", "tls", "preserve_host", "action_list")
    list_filter = ("enabled", "tls", "pool")
    rule_fields = ("host", "pool", "enabled", "preserve_host", "tls", "force_https")
    search_fields = ("host", "pool__name")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "tls":
            # A post without it (a script's) keeps the default, as in the routes file.
            kwargs["required"] = False
        return super().formfield_for_dbfield(db_field, request, **kwargs)


@admin.register(PathRule)
class PathRuleAdmin(RuleAdmin):
    list_display = (
        "prefix",
        "scope",
        "pool",
        "live",
        "enabled",
        "strip_prefix",
        "preserve_host",
        "action_list",
    )
    list_filter = ("enabled", "pool", "strip_prefix")
    search_fields = ("prefix", "host", "pool__name")
    rule_fields = ("prefix", "host", "pool", "enabled", "strip_prefix", "preserve_host")

    @admin.display(description="Host", ordering="host")
    def scope(self, rule):
        return rule.host or "any host"
