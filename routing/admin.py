"""The routing table in the admin: pools with their backends, host and path rules."""

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from .admin_impact import ImpactPreviewMixin
from .certificate_admin import CertificateAdmin  # noqa: F401  (registers it)
from .forms import AccessListPasswordForm, AccessListUserCreationForm, RuleForm
from .models import (
    ACTION_FIELDS,
    AccessList,
    AccessListUser,
    Backend,
    HostRule,
    PathRule,
    Pool,
)

admin.site.site_header = "Load balancer administration"
admin.site.site_title = "Load balancer"
admin.site.index_title = "Routing table and accounts"
# "/" on an admin host is routed to a backend, not a page of the balancer.
admin.site.site_url = None


@admin.action(description="Enable selected %(verbose_name_plural)s")
def enable_selected(modeladmin, request, queryset):
    change_selected(modeladmin, request, queryset.enable)


@admin.action(description="Disable selected %(verbose_name_plural)s")
def disable_selected(modeladmin, request, queryset):
    change_selected(modeladmin, request, queryset.disable)


@admin.action(description="Drain selected backends (weight 0: no new requests)")
def drain_selected(modeladmin, request, queryset):
    change_selected(modeladmin, request, queryset.drain)


def change_selected(modeladmin, request, change):
    """Change the selected rows, or say why none was changed (a row breaks a rule)."""
    try:
        change()
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


class RuleAdmin(ImpactPreviewMixin, admin.ModelAdmin):
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
        """The rule, what answers it, then its actions: folded away while the rule has none."""
        has_actions = obj is not None and any(getattr(obj, name) for name in ACTION_FIELDS)
        return [
            (None, {"fields": self.rule_fields}),
            (
                "Answer",
                {
                    "fields": ["answer", "pool", "redirect", "respond"],
                    "description": "Forward to the pool (the usual), or answer "
                    "here with a redirect or a fixed response: only the chosen one is kept.",
                },
            ),
            (
                "Actions",
                {
                    "fields": ACTION_FIELDS,
                    "classes": [] if has_actions else ["collapse"],
                    "description": "Optional. In this order: the firewall may refuse "
                    "the request (403), the rate limit (429), the access list (401); "
                    "then a redirect or fixed response answers, or the path is "
                    "rewritten, the query and the request headers changed before "
                    "forwarding; the response headers on every answer. Leave a box "
                    "empty for no change.",
                },
            ),
        ]

    @admin.display(description="Live", boolean=True)
    def live(self, rule):
        """Enabled, and it answers itself or its pool has a backend that takes requests."""
        return rule.enabled and (rule.pool_id is None or rule.pool_usable)

    @admin.display(description="Answer", ordering="pool__name")
    def target(self, rule):
        return rule.target

    @admin.display(description="Actions")
    def action_list(self, rule):
        names = [self.form.base_fields[name].label for name in ACTION_FIELDS if getattr(rule, name)]
        return ", ".join(names) or "-"


@admin.register(HostRule)
class HostRuleAdmin(RuleAdmin):
    list_display = ("host", "target", "live", "enabled", "tls", "preserve_host", "action_list")
    list_filter = ("enabled", "tls", "pool")
    rule_fields = ("host", "enabled", "preserve_host", "tls", "force_https")
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
        "target",
        "live",
        "enabled",
        "strip_prefix",
        "preserve_host",
        "action_list",
    )
    list_filter = ("enabled", "pool", "strip_prefix")
    search_fields = ("prefix", "host", "pool__name")
    rule_fields = ("prefix", "host", "enabled", "strip_prefix", "preserve_host")

    @admin.display(description="Host", ordering="host")
    def scope(self, rule):
        return rule.host or "any host"


class AccessListUserInline(admin.TabularInline):
    """An access list's users; their passwords are set on each user's own page."""

    model = AccessListUser
    extra = 0
    fields = ("username", "password_link")
    readonly_fields = ("username", "password_link")
    can_delete = True
    show_change_link = True

    @admin.display(description="Password")
    def password_link(self, user):
        url = reverse("admin:routing_accesslistuser_password", args=[user.pk])
        return format_html('<a href="{}">Set a new password</a>', url)

    def has_add_permission(self, request, obj=None):
        return False  # a new user needs a password: "Add access list user" asks for it


@admin.register(AccessList)
class AccessListAdmin(admin.ModelAdmin):
    list_display = ("name", "user_list")
    search_fields = ("name", "users__username")
    inlines = [AccessListUserInline]

    @admin.display(description="Users")
    def user_list(self, access_list):
        return ", ".join(user.username for user in access_list.users.all()) or "-"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("users")


@admin.register(AccessListUser)
class AccessListUserAdmin(admin.ModelAdmin):
    """Users of access lists, as Django's UserAdmin does it: the password only through
    Django's own password forms, stored as a hash and never shown."""

    list_display = ("username", "access_list")
    list_filter = ("access_list",)
    search_fields = ("username", "access_list__name")
    list_select_related = ("access_list",)
    add_form = AccessListUserCreationForm
    fields = ("access_list", "username", "password_link")
    readonly_fields = ("password_link",)
    change_password_form = AccessListPasswordForm

    @admin.display(description="Password")
    def password_link(self, user):
        if not user.pk:
            return "-"
        url = reverse("admin:routing_accesslistuser_password", args=[user.pk])
        return format_html(
            'Stored as a hash, never shown. <a href="{}">Set a new password</a>.', url
        )

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("access_list", "username", "password1", "password2")
        return self.fields

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
            kwargs["fields"] = ("access_list", "username")
        return super().get_form(request, obj, **kwargs)

    def get_urls(self):
        return [
            path(
                "<id>/password/",
                self.admin_site.admin_view(self.set_password_view),
                name="routing_accesslistuser_password",
            ),
            *super().get_urls(),
        ]

    def set_password_view(self, request, id):
        """Set a user's password with Django's SetPasswordForm (typed twice, validated)."""
        user = self.get_object(request, unquote(id))
        if user is None:
            raise Http404("No such access list user.")
        if not self.has_change_permission(request, user):
            raise PermissionDenied
        form = self.change_password_form(user, request.POST or None)
        if request.method == "POST" and form.is_valid():
            form.save()
            self.log_change(request, user, "Changed the password.")
            self.message_user(request, f"The password of {user} was changed.")
            return HttpResponseRedirect(
                reverse("admin:routing_accesslistuser_change", args=[user.pk])
            )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Set the password of {user}",
            "form": form,
            "adminForm": admin.helpers.AdminForm(
                form, [(None, {"fields": list(form.base_fields)})], {}
            ),
            "original": user,
            "opts": self.opts,
            "is_popup": False,
            "add": True,
            "change": False,
            "has_delete_permission": False,
            "has_change_permission": True,
            "has_absolute_url": False,
            "has_view_permission": True,
            "has_editable_inline_admin_formsets": False,
            "save_as": False,
            "show_save": True,
        }
        return TemplateResponse(request, "admin/auth/user/change_password.html", context)
