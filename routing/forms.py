"""The admin's form fields for rule actions: plain lines an operator can read, not JSON.

Each field turns its lines into the value the model stores (and back for
editing); the model's validators then check that value, as on every other
write, and their messages show under the field.
"""

from django import forms
from django.core.exceptions import ValidationError

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


class LinesWidget(forms.MultiWidget):
    """Textareas side by side, each with its own label."""

    template_name = "routing/widgets/action_lines.html"

    def __init__(self, labels, decompress, attrs=None):
        self.labels = labels
        self._decompress = decompress
        textarea = {"rows": 3, "cols": 40, "spellcheck": "false", **(attrs or {})}
        super().__init__([forms.Textarea(attrs=textarea) for _label in labels])

    def decompress(self, value):
        return self._decompress(value or {})

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        for subwidget, label in zip(context["widget"]["subwidgets"], self.labels, strict=True):
            subwidget["label"] = label
        return context


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
        return self.to_python(self.prepare_value(initial)) != self.to_python(data)


class RuleForm(forms.ModelForm):
    """A host or path rule with its actions as lines of text."""

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
