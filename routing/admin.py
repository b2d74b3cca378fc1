"""The routing table in the admin: pools with their backends, host and path rules."""

from django.contrib import admin
from django.utils.html import format_html

from .models import Backend, HostRule, PathRule, Pool

admin.site.site_header = "Load balancer administration"
admin.site.site_title = "Load balancer"
admin.site.index_title = "Routing table and accounts"
# "/" on an admin host is routed to a backend, not a page of the balancer.
admin.site.site_url = None


@admin.action(description="Enable selected %(verbose_name_plural)s")
def enable_selected(modeladmin, request, queryset):
    queryset.update(enabled=True)


@admin.action(description="Disable selected %(verbose_name_plural)s")
def disable_selected(modeladmin, request, queryset):
    queryset.update(enabled=False)


class BackendInline(admin.TabularInline):
    model = Backend
    extra = 1
    fields = ("url", "weight", "enabled", "healthy", "last_checked", "last_error")
    readonly_fields = ("healthy", "last_checked", "last_error")


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "algorithm",
        "backend_list",
        "connect_timeout",
        "read_timeout",
    )
    list_filter = ("algorithm",)
    search_fields = ("name", "backends__url")
    inlines = [BackendInline]
    fieldsets = [
        (None, {"fields": ["name", "algorithm", "health_check_path"]}),
        ("Timeouts", {"fields": ["connect_timeout", "read_timeout"]}),
        ("TLS to https:// backends", {"fields": ["tls_verify", "tls_ca_bundle"]}),
    ]

    @admin.display(description="Backends")
    def backend_list(self, pool):
        return ", ".join(
            f"{backend.url}{'' if backend.enabled else ' (disabled)'}"
            for backend in pool.backends.all()
        )

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("backends")


@admin.register(Backend)
class BackendAdmin(admin.ModelAdmin):
    list_display = ("url", "pool", "weight", "enabled", "health")
    list_filter = ("pool", "enabled", "healthy")
    search_fields = ("url", "pool__name")
    list_select_related = ("pool",)
    readonly_fields = ("healthy", "last_checked", "last_error")
    actions = [enable_selected, disable_selected]

    @admin.display(description="Health", ordering="healthy")
    def health(self, backend):
        colour, label = ("#2e7d32", "healthy") if backend.healthy else ("#c62828", "down")
        return format_html('<span style="color: {}">● {}</span>', colour, label)


@admin.register(HostRule)
class HostRuleAdmin(admin.ModelAdmin):
    list_display = ("host", "pool", "enabled", "preserve_host")
    fields = ("host", "pool", "enabled", "preserve_host")
    list_filter = ("enabled", "pool")
    search_fields = ("host", "pool__name")
    list_select_related = ("pool",)
    actions = [enable_selected, disable_selected]


@admin.register(PathRule)
class PathRuleAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "scope",
        "pool",
        "enabled",
        "strip_prefix",
        "preserve_host",
    )
    list_filter = ("enabled", "pool", "strip_prefix")
    search_fields = ("prefix", "host", "pool__name")
    list_select_related = ("pool",)
    fields = ("prefix", "host", "pool", "enabled", "strip_prefix", "preserve_host")
    actions = [enable_selected, disable_selected]

    @admin.display(description="Host", ordering="host")
    def scope(self, rule):
        return rule.host or "any host"
