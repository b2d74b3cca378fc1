"""Store every existing host, prefix and backend URL in its one spelling.

Rows written with the ORM used to skip the checks that the admin's forms
made; the next migration adds database constraints that such rows would
break. A row that cannot be normalised (a prefix without a leading '/', a
backend URL that is not http or https) or that would become a duplicate of
another stops the migration with a list of what to fix.
"""

from urllib.parse import quote, unquote, urlsplit

from django.db import IntegrityError, migrations, transaction
from django.db.models import F

# Frozen copies of routing.models' normalisation as this migration was
# written, so that later changes there cannot change what it does.
PREFIX_SAFE_CHARACTERS = "!$&'()*+,;=:@-._~"


def normalise_host(value):
    return value.strip().lower().removesuffix(".")


def normalise_prefix(value):
    if not value.startswith("/"):
        return value
    segments = [unquote(segment) for segment in value.strip("/").split("/")] if value != "/" else []
    return "/" + "/".join(quote(segment, safe=PREFIX_SAFE_CHARACTERS) for segment in segments)


def normalise_url(value):
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https"):
        return value
    return f"{parts.scheme}://{parts.netloc}".lower()


def host_is_normalised(value):
    return value == value.lower() and not value.endswith(".")


def prefix_is_canonical(value):
    return value.startswith("/") and (value == "/" or not value.endswith("/"))


def url_is_normalised(value):
    return value == value.lower() and value.startswith(("http://", "https://"))


COLUMNS = [
    # model, field, normalise, what the constraint of the next migration accepts
    ("HostRule", "host", normalise_host, host_is_normalised),
    ("PathRule", "host", normalise_host, host_is_normalised),
    ("PathRule", "prefix", normalise_prefix, prefix_is_canonical),
    ("Backend", "url", normalise_url, url_is_normalised),
]


def normalise_rows(apps, schema_editor):
    problems = []
    changed = False
    for model_name, field, normalise, acceptable in COLUMNS:
        model = apps.get_model("routing", model_name)
        for pk, value in model.objects.values_list("pk", field):
            new = normalise(value)
            if new != value:
                try:
                    with transaction.atomic():
                        model.objects.filter(pk=pk).update(**{field: new})
                    changed = True
                except IntegrityError:
                    problems.append(
                        f"{model_name} {pk}: {field} {value!r} is {new!r} normalised, "
                        "which another row has"
                    )
                    continue
            if not acceptable(new):
                problems.append(f"{model_name} {pk}: {field} {value!r} is not valid")
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
