"""Store every existing host, prefix and backend URL in its one spelling.

Rows written with the ORM used to skip the checks that the admin's forms
made; the next migration adds database constraints that such rows would
break, and every later write checks them. A row that is not valid as it
stands (a host that is no DNS name, a prefix with a '..' segment, a backend
URL with a path or credentials, a host rule that ties with a '/' path rule),
or that would become a duplicate of another once normalised, stops the
migration with a list of what to fix: nothing is rewritten beyond its
spelling.
"""

import re
from urllib.parse import quote, unquote, urlsplit

from django.db import IntegrityError, migrations, transaction
from django.db.models import F

# Frozen copies of routing.models' normalisation as this migration was
# written, so that later changes there cannot change what it does.
PREFIX_SAFE_CHARACTERS = "!$&'()*+,;=:@-._~"
HOST_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def normalise_host(value):
    return value.strip().lower().removesuffix(".")


def normalise_prefix(value):
    if not value.startswith("/"):
        return value
    segments = [unquote(segment) for segment in value.strip("/").split("/")] if value != "/" else []
    return "/" + "/".join(quote(segment, safe=PREFIX_SAFE_CHARACTERS) for segment in segments)


def normalise_url(value):
    return value.strip().lower().removesuffix("/")


def host_is_valid(value, blank=False):
    if blank and value == "":
        return True
    name = value[2:] if value.startswith("*.") else value
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(HOST_LABEL_RE.fullmatch(label) for label in labels)
        and (not value.startswith("*.") or len(labels) >= 2)
    )


def prefix_is_valid(value):
    segments = [unquote(part) for part in value.strip("/").split("/")] if value != "/" else []
    return (
        value.startswith("/")
        and (value == "/" or not value.endswith("/"))
        and value.isprintable()
        and not any(char in value for char in "?# ")
        and not any(segment in ("", ".", "..") for segment in segments)
    )


def url_is_valid(value):
    parts = urlsplit(value)
    try:
        parts.port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and parts.username is None
        and parts.password is None
        and parts.path in ("", "/")
        and not any(char in value for char in "?#")
    )


COLUMNS = [
    # model, field, normalise, what the constraint of the next migration accepts
    ("HostRule", "host", normalise_host, host_is_valid),
    ("PathRule", "host", normalise_host, lambda value: host_is_valid(value, blank=True)),
    ("PathRule", "prefix", normalise_prefix, prefix_is_valid),
    ("Backend", "url", normalise_url, url_is_valid),
]


def normalise_rows(apps, schema_editor):
    problems = []
    changed = False
    for model_name, field, normalise, acceptable in COLUMNS:
        model = apps.get_model("routing", model_name)
        for pk, value in model.objects.values_list("pk", field):
            new = normalise(value)
            if not acceptable(new):
                problems.append(f"{model_name} {pk}: {field} {value!r} is not valid")
            elif new != value:
                try:
                    with transaction.atomic():
                        model.objects.filter(pk=pk).update(**{field: new})
                    changed = True
                except IntegrityError:
                    problems.append(
                        f"{model_name} {pk}: {field} {value!r} is {new!r} normalised, "
                        "which another row has"
                    )
    host_rules = apps.get_model("routing", "HostRule").objects
    for pk, host in apps.get_model("routing", "PathRule").objects.filter(
        prefix="/", host__in=host_rules.values("host")
    ).values_list("pk", "host"):
        problems.append(f"PathRule {pk}: prefix / on {host!r} ties with that host's HostRule")
    if problems:
        raise RuntimeError(
            "Fix or delete these routing rows, then migrate again:\n  " + "\n  ".join(problems)
        )
    if changed:  # running workers of the previous release reload their tables
        version = apps.get_model("routing", "RoutingVersion")
        if not version.objects.filter(pk=1).update(version=F("version") + 1):
            version.objects.create(pk=1, version=1)


class Migration(migrations.Migration):
    dependencies = [
        ("routing", "0003_pool_balancing_and_health"),
    ]

    operations = [
        migrations.RunPython(normalise_rows, migrations.RunPython.noop),
    ]
