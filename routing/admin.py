"""The routing table in the admin: pools with their backends, host and path rules."""

import copy
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, Exists, OuterRef, Value, When
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

from .admin_impact import PREVIEW, ImpactPreviewMixin
from .certificate_admin import CertificateAdmin  # noqa: F401  (registers it)
from .consequences import (
    answers_503,
    pool_consequence,
    pools_taken_down,
    rule_consequence,
    site,
    summarise_error,
    taken_down,
)
from .forms import AccessListPasswordForm, AccessListUserCreationForm, RuleForm
from .models import (
    ACTION_FIELDS,
    AccessList,
    AccessListUser,
    Backend,
    HostRule,
    PathRule,
    Pool,
    RecentRequest,
    Revision,
    RoutingVersion,
)

# Characters that make a prefix look like a pattern; in a prefix they match literally.
PATTERN_CHARACTERS = "*?~^$"
# Seconds after which the health checker's heartbeat is stale, at the least.
STALE_AFTER = 30

admin.site.site_header = "Load balancer administration"
admin.site.site_title = "Load balancer"
admin.site.index_title = "Routing table and accounts"
# "/" on an admin host is routed to a backend, not a page of the balancer.
admin.site.site_url = None

# The routing models in the order people think of them: rules, pools, backends.
MODEL_ORDER = [
    "HostRule",
    "PathRule",
    "Pool",
    "Backend",
    "AccessList",
    "AccessListUser",
    "Certificate",
]


def get_app_list(request, app_label=None, _site_method=admin.site.get_app_list):
    """Django's app list, with the routing app's models in MODEL_ORDER (others after)."""
    apps = _site_method(request, app_label)
    for app in apps:
        if app["app_label"] == "routing":
            app["models"].sort(
                key=lambda model: (
                    MODEL_ORDER.index(model["object_name"])
                    if model["object_name"] in MODEL_ORDER
                    else len(MODEL_ORDER),
                    model["name"],
                )
            )
    return apps


admin.site.get_app_list = get_app_list


@admin.action(description="Enable selected %(verbose_name_plural)s")
def enable_selected(modeladmin, request, queryset):
    change_selected(modeladmin, request, queryset, "enable", "Enabled", enabled=True)


@admin.action(description="Disable selected %(verbose_name_plural)s")
def disable_selected(modeladmin, request, queryset):
    return change_selected(modeladmin, request, queryset, "disable", "Disabled", enabled=False)


@admin.action(description="Drain selected backends (no new requests, weight kept)")
def drain_selected(modeladmin, request, queryset):
    return change_selected(modeladmin, request, queryset, "drain", "Drained", draining=True)


@admin.action(description="Undrain selected backends (new requests again, at their weight)")
def undrain_selected(modeladmin, request, queryset):
    change_selected(modeladmin, request, queryset, "undrain", "Undrained", draining=False)


def change_selected(modeladmin, request, queryset, verb, done, **changes):
    """Change the selected rows: ask first when that takes a live rule's last backend,
    then say what changed for traffic and log each row's old → new values."""
    if verb == "enable" and queryset.model is Backend:
        changes = {"enabled": True, "draining": False}
    rows = list(queryset.select_related("pool") if queryset.model is Backend else queryset)
    if queryset.model is Backend and "confirmed" not in request.POST:
        changed = [copy.copy(row) for row in rows]
        down = pools_taken_down(changed, **changes)
        if down:
            return confirm_action(modeladmin, request, changed, verb, done, down, changes)
    newest = Revision.objects.values_list("number", flat=True).first()
    try:
        getattr(queryset, verb)()
    except ValidationError as error:
        modeladmin.message_user(
            request, f"Nothing was changed: {' '.join(error.messages)}", messages.ERROR
        )
        return None
    revision = Revision.objects.values_list("number", flat=True).first()
    revision = revision if revision != newest else None
    for row in rows:
        modeladmin.log_change(
            request, row, change_words(row, changes, revision, f"{done} (admin action)")
        )
    modeladmin.message_user(
        request,
        format_html(
            "{} {}. {}{}",
            done,
            ", ".join(str(row) for row in rows),
            "; ".join(traffic_consequences(rows)),
            revision_link(revision),
        ),
        messages.SUCCESS,
    )
    return None


def change_words(row, changes, revision, what="Changed"):
    """`Drained: draining no → yes. Revision 7.` for a row's log entry."""
    parts = [
        f"{name}: {shown(getattr(row, name))} → {shown(value)}"
        for name, value in changes.items()
        if getattr(row, name) != value
    ]
    text = f"{what}: {'; '.join(parts) or 'no change'}."
    return f"{text} Revision {revision}." if revision else text


def shown(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "(empty)" if value in ("", None) else str(value)


def traffic_consequences(rows):
    """What changed for traffic: each touched pool's usable backends and rules."""
    if rows and isinstance(rows[0], Backend):
        pools = {row.pool_id: row.pool for row in rows}
        return [pool_consequence(pool) for pool in pools.values()]
    lines = []
    for row in rows:
        row.refresh_from_db()
        if not row.enabled:
            lines.append(f"{site(row)} is no longer routed by this rule")
        elif row.pool_id:
            lines.append(pool_consequence(row.pool))
        else:
            lines.append(f"{site(row)} answered by the rule itself")
    return lines


def revision_link(number):
    if number is None:
        return ""
    return format_html(
        ' (<a href="{}#revision-{}">revision {}</a>)', reverse("history"), number, number
    )


def confirm_action(modeladmin, request, rows, verb, done, pools, changes):
    """The page that shows what an action would take down, before it is taken."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"{verb.capitalize()} the selected backends? A live rule loses its last backend",
        "opts": modeladmin.opts,
        "rows": rows,
        "verb": verb,
        "action": request.POST.get("action", ""),
        "consequences": [pool_consequence(pool, after(pool, rows)) for pool in pools],
        "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/routing/confirm_action.html", context)


def after(pool, rows):
    """A pool's backends with the selected rows as the action would leave them."""
    changed = {row.pk: row for row in rows}
    return [changed.get(backend.pk, backend) for backend in pool.backends.all()]


class ConfirmTakingDown:
    """Ask before a save leaves a live rule with no usable backend, as a delete is
    confirmed: a page with the consequence, posting the form again."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if (
            request.method == "POST"
            and object_id
            and "_confirmed" not in request.POST
            and PREVIEW not in request.POST
        ):
            obj = self.get_object(request, unquote(object_id))
            down = None if obj is None else self.taking_down(request, obj)
            if down is not None:
                title, explanation, consequence = down
                return TemplateResponse(
                    request,
                    "admin/routing/confirm_save.html",
                    {
                        **self.admin_site.each_context(request),
                        "title": title,
                        "explanation": explanation,
                        "opts": self.opts,
                        "consequence": consequence,
                        "fields": [
                            (name, value)
                            for name, values in request.POST.lists()
                            if name != "csrfmiddlewaretoken"
                            for value in values
                        ],
                    },
                )
        extra_context = {**(extra_context or {}), "heartbeat": heartbeat()}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def taking_down(self, request, obj):
        """Return the confirmation's title, explanation and consequence, or None if the
        posted form takes no live rule down (pools and backends: see backends_after)."""
        pool, after = self.backends_after(request, obj)
        if pool is None or not taken_down(pool, after):
            return None
        return (
            f"Save {obj}? A live rule loses its last backend",
            "Saving this leaves a pool that live rules send requests to with no usable backend:",
            pool_consequence(pool, after),
        )


class BackendStateAdmin(ConfirmTakingDown):
    """Pools and backends: the health checker's heartbeat over their lists, old → new
    values in their history, and what a save left serving (pool_of: the pool it changed)."""

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "heartbeat": heartbeat()}
        return super().changelist_view(request, extra_context)

    def construct_change_message(self, request, form, formsets, add=False):
        return old_new_message(form, formsets, add)

    def response_change(self, request, obj):
        messages.info(request, pool_consequence(self.pool_of(obj)))
        return super().response_change(request, obj)


def heartbeat():
    """When the health checker last ran, and whether that is too long ago (stale)."""
    last = RoutingVersion.last_health_round()
    intervals = [p.health_check_interval for p in Pool.objects.exclude(health_check_path="")]
    if last is None:
        return {"text": "The health checker has never run: health below is unknown.", "stale": True}
    age = (timezone.now() - last).total_seconds()
    stale = age > max(STALE_AFTER, 3 * min(intervals, default=STALE_AFTER))
    text = f"Health checker last ran {timesince(last)} ago ({last:%Y-%m-%d %H:%M:%S %Z})."
    if stale:
        text += " It looks stopped: health below may be out of date."
    return {"text": text, "stale": stale}


def health_badge(backend):
    """Return a badge: disabled, draining, down, healthy, or unchecked (neutral, never green)."""
    if not backend.enabled:
        colour, label = "#757575", "disabled"
    elif backend.draining:
        colour, label = "#ef6c00", "draining"
    elif not backend.healthy:
        colour, label = "#c62828", "down"
    elif backend.weight == 0:
        colour, label = "#ef6c00", "weight 0"
    elif not backend.last_checked:
        colour, label = "#757575", "unchecked"
    else:
        colour, label = "#2e7d32", "healthy"
    return format_html(
        '<span class="health-badge" style="color: {}; font-weight: bold" title="{}">● {}</span>',
        colour,
        backend.last_error or label,
        label,
    )


def latency(backend):
    return "-" if backend.latency_ms is None else f"{backend.latency_ms:.1f} ms"


def error_summary(backend):
    if not backend.last_error:
        return "-"
    return format_html(
        '<span title="{}">{}</span>', backend.last_error, summarise_error(backend.last_error)
    )


def unsaved(form):
    """The row a valid model form would save, without saving it; None if invalid."""
    if not form.is_valid():
        return None
    return form.instance


class BackendInline(admin.TabularInline):
    model = Backend
    extra = 1
    fields = ("url", "weight", "enabled", "draining", "health", "latency", "error")
    readonly_fields = ("health", "latency", "error")

    @admin.display(description="Health")
    def health(self, backend):
        return health_badge(backend) if backend.pk else "-"

    @admin.display(description="Latency")
    def latency(self, backend):
        return latency(backend) if backend.pk else "-"

    @admin.display(description="Last error")
    def error(self, backend):
        return error_summary(backend) if backend.pk else "-"


@admin.register(Pool)
class PoolAdmin(BackendStateAdmin, admin.ModelAdmin):
    list_display = ("name", "algorithm", "backend_list", "connect_timeout", "read_timeout")
    list_filter = ("algorithm",)
    search_fields = ("name", "backends__url")
    inlines = [BackendInline]
    readonly_fields = ("used_by",)
    change_form_template = "admin/routing/pool/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "algorithm", "used_by"]}),
        (
            "Timeouts and retries",
            {
                "fields": ["connect_timeout", "read_timeout", "max_attempts"],
                "classes": ["collapse"],
            },
        ),
        (
            "Health",
            {
                "classes": ["collapse"],
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
        (
            "TLS to https:// backends",
            {"fields": ["tls_verify", "tls_ca_bundle"], "classes": ["collapse"]},
        ),
    ]

    @admin.display(description="Used by")
    def used_by(self, pool):
        """Links to the rules that send requests to this pool."""
        if not pool.pk:
            return "-"
        return rule_links([*pool.hostrules.all(), *pool.pathrules.all()]) or "no rule yet"

    def backends_after(self, request, pool):
        """The pool's backends as the posted form and inline would leave them."""
        form = self.get_form(request, pool, change=True)(request.POST, instance=pool)
        formsets, _inlines = self._create_formsets(request, pool, change=True)
        if not form.is_valid() or not all(formset.is_valid() for formset in formsets):
            return None, []  # the form shows its errors; nothing is saved
        after = [
            subform.instance
            for formset in formsets
            for subform in formset.forms
            if subform.has_changed() or subform.instance.pk
            if subform not in formset.deleted_forms and subform.instance.url
        ]
        return pool, after

    def pool_of(self, pool):
        return pool

    def response_add(self, request, obj, post_url_continue=None):
        messages.info(request, pool_consequence(obj))
        return super().response_add(request, obj, post_url_continue)

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
class BackendAdmin(BackendStateAdmin, admin.ModelAdmin):
    list_display = ("url", "pool", "weight", "health", "checked", "latency", "error")
    list_filter = ("pool", "enabled", "draining", "healthy")
    search_fields = ("url", "pool__name")
    list_select_related = ("pool",)
    readonly_fields = ("healthy", "last_checked", "latency_ms", "last_error")
    actions = [enable_selected, disable_selected, drain_selected, undrain_selected]

    @admin.display(description="Health", ordering="healthy")
    def health(self, backend):
        return health_badge(backend)

    @admin.display(description="Checked", ordering="last_checked")
    def checked(self, backend):
        return timesince(backend.last_checked) + " ago" if backend.last_checked else "never"

    @admin.display(description="Latency", ordering="latency_ms")
    def latency(self, backend):
        return latency(backend)

    @admin.display(description="Last error")
    def error(self, backend):
        return error_summary(backend)

    def backends_after(self, request, backend):
        """The backend's pool, with the backend as the posted form would leave it."""
        form = self.get_form(request, backend, change=True)(
            request.POST, instance=copy.copy(backend)
        )
        changed = unsaved(form)
        if changed is None or changed.pool_id != backend.pool_id:
            return None, []
        return backend.pool, [
            changed if other.pk == backend.pk else other for other in backend.pool.backends.all()
        ]

    def pool_of(self, backend):
        return backend.pool


LIVE_STATES = {
    0: "live",
    1: "live: answers itself",
    2: "503: no usable backend",
    3: "off: disabled",
}


class LiveFilter(admin.SimpleListFilter):
    title = "live"
    parameter_name = "live"

    def lookups(self, request, model_admin):
        return [(str(key), label) for key, label in LIVE_STATES.items()]

    def queryset(self, request, queryset):
        if self.value() in {str(key) for key in LIVE_STATES}:
            return queryset.filter(live_state=int(self.value()))
        return queryset


def yes_no(value):
    """A neutral mark for an option: not the red ✗ that means a site is down."""
    return "yes" if value else "no"


class RuleAdmin(ConfirmTakingDown, ImpactPreviewMixin, admin.ModelAdmin):
    """What host and path rules share: the target pool, whether the rule is live, its actions."""

    form = RuleForm
    list_filter = (LiveFilter, "enabled", "pool")
    list_select_related = ("pool",)
    actions = [enable_selected, disable_selected]
    rule_fields = ()

    def get_queryset(self, request):
        usable = Backend.objects.usable().filter(pool=OuterRef("pool"))
        return (
            super()
            .get_queryset(request)
            .annotate(pool_usable=Exists(usable))
            .annotate(
                live_state=Case(
                    When(enabled=False, then=Value(3)),
                    When(pool__isnull=True, then=Value(1)),
                    When(pool_usable=True, then=Value(0)),
                    default=Value(2),
                )
            )
        )

    def taking_down(self, request, rule):
        """Confirm a save that sends a rule's requests to a pool with no usable backend."""
        form = self.get_form(request, rule, change=True)(request.POST, instance=copy.copy(rule))
        after = unsaved(form)
        if after is None or not answers_503(after) or answers_503(rule):
            return None
        return (
            f"Save {rule}? It would answer 503",
            "After this save the rule sends its requests to a pool with no usable backend:",
            rule_consequence(after),
        )

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

    @admin.display(description="Live", ordering="live_state")
    def live(self, rule):
        """A worded badge: live, or why not (503: no usable backend, off: disabled)."""
        state = getattr(rule, "live_state", 0)
        colour = {0: "#2e7d32", 1: "#2e7d32", 2: "#c62828", 3: "#757575"}[state]
        return format_html(
            '<span class="live-badge" style="color: {}; font-weight: bold">{}</span>',
            colour,
            LIVE_STATES[state],
        )

    @admin.display(description="Answer", ordering="pool__name")
    def target(self, rule):
        if rule.pool_id:
            url = reverse("admin:routing_pool_change", args=[rule.pool_id])
            return format_html('<a href="{}">{}</a>', url, rule.target)
        return rule.target

    @admin.display(description="Actions")
    def action_list(self, rule):
        names = [self.form.base_fields[name].label for name in ACTION_FIELDS if getattr(rule, name)]
        return ", ".join(names) or "-"

    @admin.display(description="Preserve host", ordering="preserve_host")
    def preserves_host(self, rule):
        return yes_no(rule.preserve_host)

    def construct_change_message(self, request, form, formsets, add=False):
        return old_new_message(form, formsets, add)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        for warning in rule_warnings(obj):
            messages.warning(request, warning)
        url = reverse("explain") + "?" + urlencode({"url": explain_url(obj)})
        messages.info(
            request,
            format_html(
                '{}. <a href="{}" class="explain-link">Explain {}</a>',
                traffic_consequences([obj])[0],
                url,
                explain_url(obj),
            ),
        )


def explain_url(rule):
    """A URL the rule serves, to explain: http://www.kiwi.com/shop."""
    host = (rule.host or "www.example.com").replace("*", "www", 1)
    return f"http://{host}{getattr(rule, 'prefix', '/')}"


def rule_warnings(rule):
    """Likely mistakes that are still valid: a prefix with pattern characters, a host typo."""
    if isinstance(rule, PathRule):
        special = sorted(set(rule.prefix) & set(PATTERN_CHARACTERS))
        if special:
            yield (
                f"The prefix {rule.prefix} contains {' '.join(special)}, which match "
                "literally: it is not a pattern. A prefix already matches everything "
                "below it (/shop matches /shop/x)."
            )
        if rule.host and not host_has_rule(rule.host) and not host_seen(rule.host):
            yield (
                f"No host rule matches {rule.host}, and no recent request was for it: "
                "check its spelling. The rule serves only requests for that host."
            )


def host_seen(host):
    """Whether recent traffic (the impact preview's sample) asked for a host."""
    return RecentRequest.objects.filter(host=host).exists()


def host_has_rule(host):
    """Whether a host rule (exact or wildcard) covers a host."""
    hosts = set(HostRule.objects.values_list("host", flat=True))
    return host in hosts or any(
        pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]
        for pattern in hosts
    )


def rule_links(rules):
    """Links to rules' change pages, one a line."""
    return format_html_join(
        mark_safe("<br>"),
        '<a href="{}">{}</a>',
        (
            (reverse(f"admin:routing_{rule._meta.model_name}_change", args=[rule.pk]), str(rule))
            for rule in rules
        ),
    )


def old_new_message(form, formsets, add):
    """A change message with old → new values, not Django's bare "Changed Weight."."""
    if add:
        return f"Added {form.instance}."
    parts = [field_change(form, name) for name in form.changed_data]
    for formset in formsets or []:
        for added in formset.new_objects:
            parts.append(f"added {added}")
        for changed, names in formset.changed_objects:
            subform = next(f for f in formset.forms if f.instance.pk == changed.pk)
            parts.append(f"{changed}: " + ", ".join(field_change(subform, n) for n in names))
        for deleted in formset.deleted_objects:
            parts.append(f"deleted {deleted}")
    return ("Changed " + "; ".join(parts) + ".") if parts else "No fields changed."


def field_change(form, name):
    field = form.fields.get(name)
    label = field.label if field is not None and field.label else name
    old = form.initial.get(name)
    new = form.cleaned_data.get(name)
    if hasattr(old, "pk") or (field is not None and hasattr(field, "queryset")):
        old = field.queryset.filter(pk=getattr(old, "pk", old)).first() if old else None
    return f"{label.lower()}: {shown(old)} → {shown(new)}"


@admin.register(HostRule)
class HostRuleAdmin(RuleAdmin):
    list_display = ("host", "target", "live", "tls", "preserves_host", "action_list")
    list_filter = (LiveFilter, "enabled", "tls", "pool")
    rule_fields = ("host", "enabled", "preserve_host", "tls", "force_https", "path_rules")
    readonly_fields = ("path_rules",)
    search_fields = ("host", "pool__name")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "tls":
            # A post without it (a script's) keeps the default, as in the routes file.
            kwargs["required"] = False
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="Path rules on this host")
    def path_rules(self, rule):
        if not rule.pk:
            return "-"
        return rule_links(PathRule.objects.filter(host=rule.host)) or "none"


@admin.register(PathRule)
class PathRuleAdmin(RuleAdmin):
    list_display = (
        "prefix",
        "scope",
        "target",
        "live",
        "strips_prefix",
        "preserves_host",
        "action_list",
    )
    list_filter = (LiveFilter, "enabled", "pool", "strip_prefix")
    search_fields = ("prefix", "host", "pool__name")
    rule_fields = ("prefix", "host", "enabled", "strip_prefix", "preserve_host")

    @admin.display(description="Host", ordering="host")
    def scope(self, rule):
        return rule.host or "any host"

    @admin.display(description="Strip prefix", ordering="strip_prefix")
    def strips_prefix(self, rule):
        return yes_no(rule.strip_prefix)


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
