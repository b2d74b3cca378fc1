"""The admin's form fields for rule actions: plain lines an operator can read, not JSON.

Each field turns its lines into the value the model stores (and back for
editing); the model's validators then check that value, as on every other
write, and their messages show under the field.
"""

from django import forms
from django.contrib.auth.forms import SetPasswordMixin
from django.core.exceptions import ValidationError

from .actions import (
    DEFAULT_REDIRECT_STATUS,
    DEFAULT_RESPOND_CONTENT_TYPE,
    DEFAULT_RESPOND_STATUS,
    RATE_LIMIT_BY,
    REDIRECT_STATUSES,
)
from .models import AccessListUser

REWRITE_ARROW = " => "


def lines_of(text):
    """Return the non-blank lines of a textarea, without their outer spaces."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def pairs_of(text, separator, what, example):
    """Return {name: value} of lines `name<separator>value`."""
    pairs = {}
    for number, line in enumerate(lines_of(text), start=1):
        name, found, value = line.partition(separator)
        if not found or not name.strip():
            raise ValidationError(
                f"{what}, line {number}: {line!r} is not “{example}”.", code="action_line"
            )
        pairs[name.strip()] = value.strip()
    return pairs


class LabelledWidget(forms.MultiWidget):
    """Widgets side by side, each with its own label, for one JSON value."""

    template_name = "routing/widgets/action_lines.html"

    def __init__(self, parts, decompress):
        self.labels = [label for label, _widget in parts]
        self._decompress = decompress
        super().__init__([widget for _label, widget in parts])

    def decompress(self, value):
        return self._decompress(value or {})

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        for subwidget, label in zip(context["widget"]["subwidgets"], self.labels, strict=True):
            subwidget["label"] = label
        return context


class LinesWidget(LabelledWidget):
    """Textareas side by side, each with its own label."""

    def __init__(self, labels, decompress, attrs=None):
        textarea = {"rows": 3, "cols": 40, "spellcheck": "false", **(attrs or {})}
        super().__init__([(label, forms.Textarea(attrs=textarea)) for label in labels], decompress)


class LinesField(forms.MultiValueField):
    """A JSON action edited as textareas of lines; empty textareas mean no action."""

    def __init__(self, labels, decompress, compress, **kwargs):
        self._compress = compress
        parts = [forms.CharField(required=False, strip=False) for _label in labels]
        kwargs.setdefault("help_text", "")
        super().__init__(
            parts,
            widget=LinesWidget(labels, decompress),
            required=False,
            require_all_fields=False,
            **kwargs,
        )

    def compress(self, data_list):
        return self._compress(*(data_list or [""] * len(self.fields)))


def set_remove(value, separator):
    set_lines = "\n".join(f"{name}{separator}{text}" for name, text in value.get("set", {}).items())
    return [set_lines, "\n".join(value.get("remove", []))]


def set_remove_value(set_values, remove):
    value = {}
    if set_values:
        value["set"] = set_values
    if remove:
        value["remove"] = remove
    return value


def header_action_field(**kwargs):
    return LinesField(
        ["Set: one “Name: value” a line", "Remove: one name a line"],
        lambda value: set_remove(value, ": "),
        lambda set_text, remove_text: set_remove_value(
            pairs_of(set_text, ":", "Set", "Name: value"), lines_of(remove_text)
        ),
        **kwargs,
    )


def query_action_field(**kwargs):
    return LinesField(
        ["Set: one “key=value” a line", "Remove: one key a line"],
        lambda value: set_remove(value, "="),
        lambda set_text, remove_text: set_remove_value(
            pairs_of(set_text, "=", "Set", "key=value"), lines_of(remove_text)
        ),
        **kwargs,
    )


def firewall_value(allow, deny, deny_paths):
    value = {"allow": lines_of(allow), "deny": lines_of(deny), "deny_paths": lines_of(deny_paths)}
    return {key: items for key, items in value.items() if items}


def firewall_field(**kwargs):
    return LinesField(
        [
            "Allow only: one address or network a line (empty: every client)",
            "Deny: one address or network a line",
            "Deny paths: one prefix a line",
        ],
        lambda value: ["\n".join(value.get(key, [])) for key in ("allow", "deny", "deny_paths")],
        firewall_value,
        **kwargs,
    )


class PartsField(forms.MultiValueField):
    """A JSON object edited as a few plain fields; all of them empty means none."""

    def __init__(self, parts, decompress, compress, **kwargs):
        self._compress = compress
        kwargs.setdefault("help_text", "")
        super().__init__(
            [field for _label, field, _widget in parts],
            widget=LabelledWidget([(label, widget) for label, _field, widget in parts], decompress),
            required=False,
            require_all_fields=False,
            **kwargs,
        )

    def compress(self, data_list):
        return self._compress(*(data_list or [None] * len(self.fields)))


def redirect_field(**kwargs):
    statuses = [(status, str(status)) for status in REDIRECT_STATUSES]

    def compress(to, status, keep_path):
        if not to:
            return {}
        return {"to": to, "status": status or DEFAULT_REDIRECT_STATUS, "keep_path": bool(keep_path)}

    return PartsField(
        [
            (
                "To: a URL",
                forms.CharField(required=False),
                forms.TextInput(attrs={"size": 50, "placeholder": "https://www.example.com"}),
            ),
            (
                "Status",
                forms.TypedChoiceField(choices=statuses, coerce=int, required=False),
                forms.Select(choices=statuses),
            ),
            (
                "Keep the path and query",
                forms.BooleanField(required=False),
                forms.CheckboxInput(),
            ),
        ],
        lambda value: [
            value.get("to", ""),
            value.get("status", DEFAULT_REDIRECT_STATUS),
            value.get("keep_path", False),
        ],
        compress,
        **kwargs,
    )


def respond_field(**kwargs):
    def compress(status, content_type, body):
        if status is None and not body:
            return {}
        return {
            "status": DEFAULT_RESPOND_STATUS if status is None else status,
            "body": body or "",
            "content_type": content_type or DEFAULT_RESPOND_CONTENT_TYPE,
        }

    return PartsField(
        [
            (
                "Status",
                forms.IntegerField(required=False),
                forms.NumberInput(attrs={"style": "width: 6em", "placeholder": "503"}),
            ),
            (
                "Content type",
                forms.CharField(required=False),
                forms.TextInput(attrs={"size": 30, "placeholder": DEFAULT_RESPOND_CONTENT_TYPE}),
            ),
            (
                "Body",
                forms.CharField(required=False, strip=False),
                forms.Textarea(attrs={"rows": 3, "cols": 60}),
            ),
        ],
        lambda value: [
            value.get("status"),
            value.get("content_type", DEFAULT_RESPOND_CONTENT_TYPE),
            value.get("body", ""),
        ],
        compress,
        **kwargs,
    )


def rate_limit_field(**kwargs):
    choices = [(by, by) for by in RATE_LIMIT_BY]

    def compress(requests, per, burst, by):
        if requests is None:
            return {}
        return {"requests": requests, "per": per or 1, "burst": burst or 0, "by": by or "client"}

    def decompress(value):
        return [value.get("requests"), value.get("per"), value.get("burst"), value.get("by")]

    number = {"style": "width: 6em"}
    return PartsField(
        [
            (
                "Requests",
                forms.IntegerField(required=False),
                forms.NumberInput(attrs={**number, "placeholder": "10"}),
            ),
            (
                "Per seconds",
                forms.FloatField(required=False),
                forms.NumberInput(attrs={**number, "placeholder": "1", "step": "any"}),
            ),
            (
                "Burst",
                forms.IntegerField(required=False),
                forms.NumberInput(attrs={**number, "placeholder": "0"}),
            ),
            (
                "By",
                forms.ChoiceField(choices=choices, required=False),
                forms.Select(
                    choices=[("client", "each client address"), ("rule", "the whole rule")]
                ),
            ),
        ],
        decompress,
        compress,
        **kwargs,
    )


ANSWER_CHOICES = [
    ("pool", "Forward to the pool"),
    ("redirect", "Redirect"),
    ("respond", "Respond with a fixed answer"),
]


class RewriteField(forms.CharField):
    """Rewrite steps as lines `pattern => replacement`."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 80, "spellcheck": "false"})

    def __init__(self, **kwargs):
        super().__init__(required=False, strip=False, **kwargs)

    def prepare_value(self, value):
        if isinstance(value, list):
            steps = (f"{step['pattern']}{REWRITE_ARROW}{step['replacement']}" for step in value)
            return "\n".join(steps)
        return value

    def to_python(self, value):
        steps = []
        for number, line in enumerate(lines_of(value), start=1):
            if line.endswith(REWRITE_ARROW.rstrip()):
                line += " "  # an empty replacement
            pattern, found, replacement = line.partition(REWRITE_ARROW)
            if not found or not pattern:
                raise ValidationError(
                    f"Line {number}: {line!r} is not “pattern => replacement”.",
                    code="action_line",
                )
            steps.append({"pattern": pattern, "replacement": replacement.strip()})
        return steps

    def has_changed(self, initial, data):
        try:
            return self.to_python(self.prepare_value(initial)) != self.to_python(data)
        except ValidationError:
            return True


class RuleForm(forms.ModelForm):
    """A host or path rule: what answers it (a pool, a redirect, a fixed answer), and its
    actions as lines of text."""

    answer = forms.ChoiceField(
        label="Answer",
        choices=ANSWER_CHOICES,
        initial="pool",
        required=False,
        widget=forms.RadioSelect,
        help_text="Forward the requests to the pool (the usual), or answer them "
        "here: with a redirect, or with a fixed response such as a maintenance page.",
    )
    redirect = redirect_field(
        label="Redirect",
        help_text="e.g. to https://new.example.com with “keep the path”: "
        "http://old.example.com/a/b?c=1 goes to https://new.example.com/a/b?c=1 "
        "(the path after the prefix, as a backend would get it). 301 and 308 are "
        "permanent (browsers remember them), 302, 303 and 307 temporary.",
    )
    respond = respond_field(
        label="Fixed response",
        help_text="e.g. 503 with “Down for maintenance, back at 10:00.”, or 404 with an "
        "empty body for a host that serves nothing.",
    )
    rate_limit = rate_limit_field(
        label="Rate limit",
        help_text="At most Requests per Per seconds on average, Burst more at once; "
        "over it 429 Too Many Requests with Retry-After. Counted in Redis when "
        "REDIS_URL is set (shared by every worker), else by each worker. Empty "
        "Requests: no limit.",
    )

    firewall = firewall_field(
        label="Firewall",
        help_text="403 Forbidden for a client in Deny, or outside Allow only when it "
        "has lines, or a path under a Deny path (whole segments, however it is "
        "spelled: /%70rivate and /x/../private are /private). Addresses such as "
        "10.192.0.1, networks such as 10.0.0.0/8 or 2001:db8::/32; paths such as /admin.",
    )
    request_headers = header_action_field(
        label="Request headers",
        help_text="Sent to the backend instead of what the client sent, e.g. "
        "“X-Env: prod”; removed, e.g. “X-Debug”. Host, Via, Forwarded, X-Forwarded-* "
        "and hop-by-hop headers are the balancer's own.",
    )
    query = query_action_field(
        label="Query parameters",
        help_text="Set, e.g. “lang=en” (replacing any lang), or removed, e.g. "
        "“debug”; every other parameter keeps its bytes and order.",
    )
    rewrite = RewriteField(
        label="Rewrite path",
        help_text="One “pattern => replacement” a line, applied in order with Python's "
        "re.sub to the path the backend gets (after the prefix is stripped), e.g. "
        r"“^/v1/ => /v2/” or “^/old/(.*) => /new/\1”. The query is left as it is.",
    )
    response_headers = header_action_field(
        label="Response headers",
        help_text="Set or removed on every answer of the rule, the balancer's own "
        "errors included, e.g. “Strict-Transport-Security: max-age=31536000”; "
        "remove e.g. “X-Powered-By”.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        instance = self.instance
        if instance.redirect:
            self.initial["answer"] = "redirect"
        elif instance.respond:
            self.initial["answer"] = "respond"

    def clean(self):
        """Keep the chosen answer and clear the others, so the rule has exactly one."""
        cleaned = super().clean()
        answer = cleaned.get("answer") or "pool"
        missing = {
            "pool": "Choose the pool, or another answer.",
            "redirect": "Give the URL to redirect to.",
            "respond": "Give the status to respond with.",
        }
        for name in ("pool", "redirect", "respond"):
            if name not in self.fields:
                continue
            if name != answer:
                cleaned[name] = None if name == "pool" else {}
            elif not cleaned.get(name) and name not in self.errors:
                self.add_error(name, ValidationError(missing[name], code="answer_missing"))
        return cleaned


class AccessListUserCreationForm(SetPasswordMixin, forms.ModelForm):
    """A new access list user with a password typed twice (Django's own fields and checks)."""

    password1, password2 = SetPasswordMixin.create_password_fields()

    class Meta:
        model = AccessListUser
        fields = ("access_list", "username")

    def clean(self):
        self.validate_passwords()
        user = AccessListUser(username=self.cleaned_data.get("username", ""))
        self.validate_password_for_user(user)
        return super().clean()

    def save(self, commit=True):
        self.instance.set_password(self.cleaned_data["password1"])
        return super().save(commit=commit)


class AccessListPasswordForm(SetPasswordMixin, forms.Form):
    """A new password for an access list user, typed twice: Django's admin password form,
    without the switch to turn password login off (a user without one is deleted instead)."""

    required_css_class = "required"
    password1, password2 = SetPasswordMixin.create_password_fields()

    def __init__(self, user, *args, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)
        self.fields["password1"].widget.attrs["autofocus"] = True

    def clean(self):
        self.validate_passwords()
        self.validate_password_for_user(self.user)
        return super().clean()

    def save(self, commit=True):
        return self.set_password_and_save(self.user, commit=commit)
