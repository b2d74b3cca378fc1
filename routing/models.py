"""The routing table as the admin edits it: pools of backends and the rules that pick them."""

import contextlib
import os
import re
import threading
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import hashers
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MinValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.dispatch import Signal

from .actions import (
    validate_firewall,
    validate_query,
    validate_rate_limit,
    validate_redirect,
    validate_request_headers,
    validate_respond,
    validate_response_headers,
    validate_rewrite,
)
from .prefixes import canonical_prefix, validate_prefix

ALGORITHM_CHOICES = [
    ("random", "Random, in proportion to weight"),
    ("round_robin", "Round robin, one request each in turn"),
    ("weighted", "Weighted round robin (smooth, as nginx)"),
    ("least_connections", "Least connections for the weight"),
    ("ip_hash", "Client address hash (the same backend per client)"),
]

# Sent after every change to the routing rules, once the version is bumped.
routing_changed = Signal()

# The bumps a thread has held back inside RoutingVersion.one_bump().
_held_bumps = threading.local()

HOST_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
MAX_HOST_LENGTH = 253


def normalise_host_pattern(value):
    """Return a host pattern lower-cased and without a trailing dot.

    A pasted URL with nothing but a host (http://www.kiwi.com/) is its host.
    """
    host = value.strip().lower()
    for scheme in ("http://", "https://"):
        if host.startswith(scheme) and "/" not in host[len(scheme) :].rstrip("/"):
            host = host[len(scheme) :].rstrip("/")
    return host.removesuffix(".")


def validate_host_pattern(value):
    """Refuse anything but a DNS name or a single leading `*.` wildcard."""
    host = normalise_host_pattern(value)
    name = host[2:] if host.startswith("*.") else host
    labels = name.split(".")
    if (
        not name
        or len(name) > MAX_HOST_LENGTH
        or not all(HOST_LABEL_RE.fullmatch(label) for label in labels)
    ):
        raise ValidationError(
            "Enter a host name such as www.mango.com, or a wildcard such as "
            "*.mango.com (one leading '*.' only, no port, no path: a rule matches "
            "every port and scheme of the host).",
            code="invalid_host",
        )
    if host.startswith("*.") and len(labels) < 2:
        raise ValidationError(
            "A wildcard needs at least two labels after '*.', e.g. *.mango.com.",
            code="wildcard_too_broad",
        )


def normalise_backend_url(value):
    """Return a backend URL as its bare origin, lower-cased: HTTP://A:1/ is http://a:1."""
    parts = urlsplit(value.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


def validate_backend_url(value):
    """Refuse a backend URL that is not a bare http(s) origin."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ValidationError(
            "Enter an http:// or https:// URL with a host, e.g. http://127.0.0.1:8081.",
            code="invalid_backend_url",
        )
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "A backend URL carries no credentials.", code="backend_url_credentials"
        )
    if parts.path not in ("", "/") or "?" in value or "#" in value:
        raise ValidationError(
            "A backend URL has no path, query or fragment: the request's own "
            "path is appended to it.",
            code="backend_url_path",
        )


def validate_basic_username(value):
    """Refuse a username that HTTP Basic cannot carry: a colon ends it, control characters."""
    if ":" in value or not value.isprintable():
        raise ValidationError(
            "A username has no colon and no control characters.", code="username_invalid"
        )


def validate_ca_bundle(value):
    """Refuse a CA bundle path that this machine cannot read."""
    if value and not os.access(value, os.R_OK):
        raise ValidationError(f"No readable file at {value}.", code="ca_bundle_unreadable")


# Values per IN (...) list when checking a batch: well inside every
# database's limit on query parameters.
IN_LIST_SIZE = 500


def check_rows(rows, duplicates=True):
    """Normalise rows of one model and refuse them, as the admin would, if one breaks a rule.

    Every write calls this before it writes anything: save() and loaddata
    through pre_save (signals.py), bulk writes and update() through
    RoutingQuerySet. The checks that read the database (references, ties,
    duplicates) take a query per batch, not per row. The first bad row's
    ValidationError names its fields, with the messages the admin shows.
    duplicates=False leaves duplicates to the database, for an upsert.
    """
    rows = list(rows)
    if not rows:
        return
    model = type(rows[0])
    checks = [field_errors, reference_errors, model.row_errors, model.tie_errors]
    if duplicates:
        checks.append(duplicate_errors)
    for check in checks:
        for error in check(rows):
            raise error


def field_errors(rows):
    """Check each row's own fields, then store it in its one spelling."""
    for row in rows:
        references = {field.name for field in row._meta.concrete_fields if field.many_to_one}
        try:
            row.clean_fields(exclude=references)
        except ValidationError as error:
            yield error
        row.normalise()


def reference_errors(rows):
    """Refuse a row whose foreign key points at no row, as the field itself would."""
    for field in rows[0]._meta.concrete_fields:
        if not field.many_to_one:
            continue
        target = field.target_field.attname
        existing = {
            value
            for (value,) in values_among(
                field.related_model._base_manager.all(),
                target,
                {getattr(row, field.attname) for row in rows} - {None},
                target,
            )
        }
        for row in rows:
            value = getattr(row, field.attname)
            if value not in existing:
                try:
                    field.validate(value, row)  # Django's own message: null, or no such row
                except ValidationError as error:
                    yield ValidationError({field.name: error.error_list})


def duplicate_errors(rows):
    """Refuse a row whose unique fields a stored row or an earlier row of the batch has."""
    model = type(rows[0])
    unique_checks, _date_checks = rows[0]._get_unique_checks(include_meta_constraints=True)
    for model_class, names in unique_checks:
        fields = [model._meta.get_field(name) for name in names]
        if any(field.primary_key for field in fields):
            continue  # a row written with its primary key replaces that row (loaddata)
        columns = [field.attname for field in fields]
        keys = [tuple(getattr(row, column) for column in columns) for row in rows]
        firsts = {key[0] for key in keys}
        stored = {}
        for *key, pk in values_among(model._base_manager.all(), columns[0], firsts, *columns, "pk"):
            stored.setdefault(tuple(key), set()).add(pk)
        seen = set()
        for row, key in zip(rows, keys, strict=True):
            if None in key:
                continue
            if key in seen or stored.get(key, set()) - {row.pk}:
                error = row.unique_error_message(model_class, names)
                yield ValidationError({names[0] if len(names) == 1 else NON_FIELD_ERRORS: error})
            seen.add(key)


def values_among(queryset, field, values, *columns):
    """Return the columns of the rows whose field is one of the values, a chunk at a time."""
    values = list(values)
    found = []
    for start in range(0, len(values), IN_LIST_SIZE):
        chunk = values[start : start + IN_LIST_SIZE]
        found += queryset.filter(**{f"{field}__in": chunk}).values_list(*columns)
    return found


def rows_sharing_a_host(rows, rules):
    """Return the rows whose host one of the rules (a queryset) has too: one query."""
    hosts = {host for (host,) in values_among(rules, "host", {row.host for row in rows}, "host")}
    return [row for row in rows if row.host in hosts]


class RoutingQuerySet(models.QuerySet):
    """A queryset whose bulk writes are checked like save() and bump the routing version.

    Every row is checked before anything is written, so a bad row raises
    ValidationError and none of the batch is stored.
    """

    def update(self, **kwargs):
        """Check each row as the update would leave it, then write the rows as checked."""
        self._for_write = True
        with transaction.atomic(using=self.db):
            rows = self._rows_as_updated(kwargs)
            check_rows(rows)
            updated = self._unchecked().bulk_update(rows, list(kwargs)) if rows else 0
            RoutingVersion.bump()
        return updated

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        upsert = kwargs.get("ignore_conflicts") or kwargs.get("update_conflicts")
        check_rows(objs, duplicates=not upsert)
        with transaction.atomic(using=self.db):
            created = super().bulk_create(objs, *args, **kwargs)
            RoutingVersion.bump()
        return created

    def bulk_update(self, objs, fields, *args, **kwargs):
        objs = list(objs)
        check_rows(objs)
        with transaction.atomic(using=self.db):
            # QuerySet.bulk_update writes through update(): the plain one, as
            # these rows are checked already.
            updated = self._unchecked().bulk_update(objs, fields, *args, **kwargs)
            RoutingVersion.bump()
        return updated

    def enable(self):
        """Turn the rows on: the admin's and the API's Enable."""
        return self.update(enabled=True)

    def disable(self):
        """Turn the rows off: the admin's and the API's Disable."""
        return self.update(enabled=False)

    def _unchecked(self):
        """Return a plain queryset of the model, to write rows that were checked."""
        return models.QuerySet(self.model, using=self.db)

    def _rows_as_updated(self, values):
        """Return the rows an update changes, with its values set on them.

        A value the database computes (an F() expression, a function) is
        computed for each row first, so that it is checked like any other.
        """
        computed = {
            f"_new_{name}": value
            for name, value in values.items()
            if hasattr(value, "resolve_expression")
        }
        rows = list(
            self._unchecked().filter(pk__in=self.values("pk")).annotate(**computed).order_by("pk")
        )
        for row in rows:
            for name, value in values.items():
                if f"_new_{name}" in computed:
                    field = self.model._meta.get_field(name)
                    setattr(row, field.attname, getattr(row, f"_new_{name}"))
                else:
                    setattr(row, name, value)
        return rows


class PoolQuerySet(RoutingQuerySet):
    def get_by_natural_key(self, name):
        return self.get(name=name)


class AccessListQuerySet(RoutingQuerySet):
    def get_by_natural_key(self, name):
        return self.get(name=name)


class BackendQuerySet(RoutingQuerySet):
    def drain(self):
        """Send the backends no new requests, keeping their weight: the admin's and API's Drain."""
        return self.update(draining=True)

    def undrain(self):
        """Give drained backends new requests again, at their weight: Undrain."""
        return self.update(draining=False)

    def enable(self):
        """Turn the backends on, drained ones back at their weight: Enable."""
        return self.update(enabled=True, draining=False)

    def usable(self):
        """The backends that take new requests (one never checked counts as healthy)."""
        return self.filter(enabled=True, draining=False, healthy=True, weight__gt=0)


class RoutingVersion(models.Model):
    """A single row whose number every change to the routing rules increases."""

    version = models.PositiveBigIntegerField(default=0)
    # Increased after each round of active checks in which a backend passed;
    # workers then re-read when their cooling backends last passed, never
    # the whole table.
    health_version = models.PositiveBigIntegerField(default=0)
    # Increased whenever a certificate is stored or deleted: workers serving
    # TLS then reload their certificates. Certificates are state, not
    # configuration, so this never moves the routing version.
    certificate_version = models.PositiveBigIntegerField(default=0)
    # The health checker's heartbeat: when its last round ended. State, not
    # configuration: writing it bumps nothing and records no revision.
    health_checked_at = models.DateTimeField(null=True, blank=True)

    SINGLETON_ID = 1

    class Meta:
        verbose_name = "routing version"

    def __str__(self):
        return f"routing version {self.version}"

    @classmethod
    def bump(cls):
        """Increase the version, creating its row on first use."""
        if getattr(_held_bumps, "depth", 0):
            _held_bumps.wanted = True
            return
        cls._increase("version")
        routing_changed.send(sender=cls)

    @classmethod
    @contextlib.contextmanager
    def one_bump(cls):
        """Make the writes inside one change: their bumps become one, made at the end.

        For a batch of writes in one transaction (a routes file's import):
        workers then rebuild their table once, from the whole batch. Nothing
        is bumped when nothing was written, or when the block raises (its
        transaction is rolled back anyway).
        """
        if getattr(_held_bumps, "depth", 0):  # nested: the outermost block bumps
            _held_bumps.depth += 1
            try:
                yield
            finally:
                _held_bumps.depth -= 1
            return
        _held_bumps.depth, _held_bumps.wanted = 1, False
        try:
            yield
        finally:
            _held_bumps.depth = 0
        if _held_bumps.wanted:
            cls.bump()

    @classmethod
    def bump_health(cls):
        """Increase the health version: some backend passed an active check."""
        cls._increase("health_version")

    @classmethod
    def bump_certificates(cls):
        """Increase the certificate version: a certificate was stored or deleted."""
        cls._increase("certificate_version")

    @classmethod
    def beat(cls, when):
        """Store the health checker's heartbeat (no version moves: nobody needs to rebuild)."""
        if not cls.objects.filter(pk=cls.SINGLETON_ID).update(health_checked_at=when):
            cls.objects.get_or_create(pk=cls.SINGLETON_ID, defaults={"health_checked_at": when})

    @classmethod
    def last_health_round(cls):
        """Return when the health checker last ran a round, or None if never."""
        return (
            cls.objects.filter(pk=cls.SINGLETON_ID)
            .values_list("health_checked_at", flat=True)
            .first()
        )

    @classmethod
    def _increase(cls, field):
        row = cls.objects.filter(pk=cls.SINGLETON_ID)
        if not row.update(**{field: F(field) + 1}):
            try:
                with transaction.atomic():
                    cls.objects.create(pk=cls.SINGLETON_ID, **{field: 1})
            except IntegrityError:  # another writer created it first
                row.update(**{field: F(field) + 1})

    @classmethod
    def current(cls):
        """Return the current version (0 before the first change)."""
        return cls.current_versions()[0]

    @classmethod
    def current_versions(cls):
        """Return the current version and health version, in one query."""
        return cls.all_versions()[:2]

    @classmethod
    def all_versions(cls):
        """Return the version, the health version and the certificate version, in one query."""
        versions = cls.objects.filter(pk=cls.SINGLETON_ID).values_list(
            "version", "health_version", "certificate_version"
        )
        return versions.first() or (0, 0, 0)


class RoutingModel(models.Model):
    """A row of the routing table, checked and normalised however it is written."""

    objects = RoutingQuerySet.as_manager()

    class Meta:
        abstract = True

    def validate_for_write(self):
        """Normalise this row and refuse it, as the admin's form would, if it breaks a rule."""
        check_rows([self])

    def clean(self):
        """What a form checks beyond the fields: the one spelling, and ties with other rules."""
        self.normalise()
        for error in [*self.row_errors([self]), *self.tie_errors([self])]:
            raise error

    def normalise(self):
        """Rewrite values into the one spelling they are stored in."""

    @classmethod
    def row_errors(cls, rows):
        """Yield an error for each row whose fields, each valid alone, do not go together."""
        return ()

    @classmethod
    def tie_errors(cls, rows):
        """Yield an error for each row that would tie with a rule of another kind."""
        return ()


def normalised_host_constraint(model_name):
    """The database's own guard that a host column holds its normalised spelling."""
    return models.CheckConstraint(
        condition=Q(host=Lower("host")) & ~Q(host__endswith="."),
        name=f"{model_name}_host_normalised",
        violation_error_message="A host is stored lower-case, without a trailing dot.",
    )


class Pool(RoutingModel):
    """A named group of backend servers that serve the same application."""

    name = models.SlugField(
        max_length=100,
        unique=True,
        help_text="A short name for the application, e.g. mango.",
    )
    algorithm = models.CharField(
        max_length=32,
        choices=ALGORITHM_CHOICES,
        default="random",
        help_text="How a backend is chosen for each request. Counters (turns, "
        "connections, failures) are kept by each worker process on its own.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1)],
        help_text="Backends tried per request, e.g. 3. A failed connection is "
        "retried on another backend for any method; a failure after the "
        "request was sent only for GET, HEAD, OPTIONS, PUT and DELETE without a body.",
    )
    max_fails = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1)],
        help_text="Failures in a row after which a worker skips a backend, e.g. 3.",
    )
    fail_timeout = models.FloatField(
        default=10.0,
        validators=[MinValueValidator(0)],
        help_text="Seconds a failing backend is skipped before it is tried again, e.g. 10.",
    )
    connect_timeout = models.FloatField(
        default=3.0,
        validators=[MinValueValidator(0.001)],
        help_text="Seconds to wait for a backend to accept a connection, e.g. 3.",
    )
    read_timeout = models.FloatField(
        default=10.0,
        validators=[MinValueValidator(0.001)],
        help_text="Seconds a backend has for its response head (status line and "
        "headers, in all), then for each wait for body bytes, e.g. 10.",
    )
    tls_verify = models.BooleanField(
        "verify TLS certificates",
        default=True,
        help_text="For https:// backends: check their certificates. Untick "
        "only for backends you reach over a network you trust.",
    )
    tls_ca_bundle = models.CharField(
        "CA bundle",
        max_length=500,
        blank=True,
        validators=[validate_ca_bundle],
        help_text="For https:// backends with a private CA: path of a PEM "
        "file of trusted certificates, e.g. /etc/ssl/private-ca.pem. Blank: "
        "the system's trusted CAs.",
    )
    health_check_interval = models.FloatField(
        default=5.0,
        validators=[MinValueValidator(0.1)],
        help_text="Seconds between active health checks of each backend, e.g. 5.",
    )
    health_check_timeout = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(0.001)],
        help_text="Seconds a health check waits for an answer, e.g. 2.",
    )
    health_check_path = models.CharField(
        max_length=200,
        default="/healthcheck",
        blank=True,
        validators=[validate_prefix],
        help_text="Path that active health checks request, e.g. /healthcheck. "
        "Blank: no active checks (failures are still noticed passively).",
    )

    objects = PoolQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        # Django's own writes (a related manager's add(), ...) go through the
        # base manager: it must check and bump too.
        base_manager_name = "objects"

    def __str__(self):
        return self.name

    def natural_key(self):
        return (self.name,)

    @property
    def tls_verification(self):
        """requests' `verify` for this pool: the CA bundle, True, or False (verify off)."""
        return (self.tls_ca_bundle or True) if self.tls_verify else False


class Backend(RoutingModel):
    """One server of a pool, reached at a base URL."""

    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="backends")
    url = models.CharField(
        "URL",
        max_length=200,
        validators=[validate_backend_url],
        help_text="Base URL of the server, no path, e.g. http://127.0.0.1:8081.",
    )
    weight = models.PositiveIntegerField(
        default=1,
        help_text="Relative share of new requests, e.g. 2 for twice as many; 0 sends it none.",
    )
    enabled = models.BooleanField(
        default=True, help_text="Untick to take the backend out of its pool."
    )
    draining = models.BooleanField(
        default=False,
        help_text="Tick to send the backend no new requests, keeping its weight "
        "(requests in flight finish); untick (Undrain) to bring it back.",
    )
    healthy = models.BooleanField(
        default=True,
        help_text="Result of the last health check; a backend never checked takes "
        "requests until a check fails.",
    )
    last_checked = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    latency_ms = models.FloatField("latency (ms)", null=True, blank=True)

    objects = BackendQuerySet.as_manager()

    class Meta:
        ordering = ["pool__name", "url"]
        # Django's own writes (a related manager's add(), ...) go through the
        # base manager: it must check and bump too.
        base_manager_name = "objects"
        constraints = [
            models.UniqueConstraint(fields=["pool", "url"], name="backend_unique_url_per_pool"),
            models.CheckConstraint(
                condition=Q(url=Lower("url"))
                & (Q(url__startswith="http://") | Q(url__startswith="https://")),
                name="backend_url_normalised",
                violation_error_message="A backend URL is stored as a lower-case "
                "http:// or https:// origin.",
            ),
        ]

    def __str__(self):
        return f"{self.url} ({self.pool})"

    @classmethod
    def health_rows(cls):
        """Return the backends for the health checker's writes, which are neither checked
        nor a routing change: health state is not configuration."""
        return models.QuerySet(cls)

    def normalise(self):
        self.url = normalise_backend_url(self.url)


def validate_password_hash(value):
    """Refuse anything but a password hash Django recognises: never a password in plain text."""
    try:
        hashers.identify_hasher(value)
    except ValueError:
        raise ValidationError(
            "Not a Django password hash (such as pbkdf2_sha256$...): passwords "
            "are never stored in plain text. Set it with the admin's password form, "
            'or write the hash of `python manage.py shell -c "from '
            "django.contrib.auth.hashers import make_password; print(make_password('...'))\"`.",
            code="password_not_hashed",
        ) from None


class AccessList(RoutingModel):
    """Users who may pass the rules that refer to this list, by HTTP Basic authentication."""

    name = models.SlugField(
        max_length=100,
        unique=True,
        help_text="A short name, also the realm clients are asked for, e.g. staff.",
    )

    objects = AccessListQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        base_manager_name = "objects"

    def __str__(self):
        return self.name

    def natural_key(self):
        return (self.name,)


class AccessListUser(RoutingModel):
    """A user of an access list, with a Django password hash (never the password)."""

    access_list = models.ForeignKey(AccessList, on_delete=models.CASCADE, related_name="users")
    username = models.CharField(
        max_length=150,
        validators=[validate_basic_username],
        help_text="The name the client gives, e.g. alice (no colon).",
    )
    password = models.CharField(
        max_length=256,
        validators=[validate_password_hash],
        help_text="A Django password hash; set it with the password form.",
    )

    class Meta:
        ordering = ["access_list__name", "username"]
        base_manager_name = "objects"
        verbose_name = "access list user"
        constraints = [
            models.UniqueConstraint(
                fields=["access_list", "username"], name="accesslistuser_unique_username"
            )
        ]

    def __str__(self):
        return f"{self.username} ({self.access_list})"

    def set_password(self, raw_password):
        self.password = hashers.make_password(raw_password)

    def check_password(self, raw_password):
        return hashers.check_password(raw_password, self.password)

    # What Django's admin password page asks of a user.
    def has_usable_password(self):
        return hashers.is_password_usable(self.password)

    def get_username(self):
        return self.username


# A rule's actions besides its answer, in the order they act on a request (see actions.py).
ACTION_FIELDS = (
    "firewall",
    "rate_limit",
    "access_list",
    "rewrite",
    "query",
    "request_headers",
    "response_headers",
)
# What answers a rule's requests: exactly one of these.
ANSWER_FIELDS = ("pool", "redirect", "respond")


class Rule(RoutingModel):
    """What host and path rules share: what answers them (a pool, a redirect or a fixed
    answer) and how to forward."""

    pool = models.ForeignKey(
        Pool,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="%(class)ss",
        help_text="The pool whose backends serve the matching requests.",
    )
    redirect = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_redirect],
        help_text="Answer with a redirect instead of forwarding (301, 302, 303, 307 or "
        "308); with keep_path, the path after the prefix and the query are appended, e.g. "
        '{"to": "https://www.example.com", "status": 301, "keep_path": true}.',
    )
    respond = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_respond],
        help_text="Answer with a fixed response instead of forwarding, e.g. "
        '{"status": 503, "body": "Down for maintenance.", "content_type": "text/plain"}.',
    )
    enabled = models.BooleanField(default=True, help_text="Untick to stop routing by this rule.")
    preserve_host = models.BooleanField(
        default=False,
        help_text="Send the client's Host header to the backend instead of the backend's own host.",
    )
    # Actions (see actions.py): each empty by default, which does nothing.
    firewall = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_firewall],
        help_text="403 Forbidden for clients in deny, clients outside allow (when "
        "allow is not empty), or paths under a deny_paths prefix, e.g. "
        '{"allow": ["10.0.0.0/8"], "deny": ["10.0.0.9"], "deny_paths": ["/admin"]}.',
    )
    rate_limit = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_rate_limit],
        help_text="At most `requests` per `per` seconds on average, `burst` more at "
        "once, by client address or for the whole rule; over it 429 Too Many Requests, e.g. "
        '{"requests": 10, "per": 1, "burst": 20, "by": "client"}.',
    )
    access_list = models.ForeignKey(
        AccessList,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="%(class)ss",
        help_text="Ask for a user and password of this list (HTTP Basic); "
        "anyone else gets 401 Unauthorized.",
    )
    request_headers = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_request_headers],
        help_text="Headers set (replacing what the client sent) or removed before "
        'forwarding, e.g. {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]}.',
    )
    query = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_query],
        help_text="Query parameters set or removed before forwarding; the others keep "
        'their bytes and order, e.g. {"set": {"lang": "en"}, "remove": ["debug"]}.',
    )
    rewrite = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_rewrite],
        help_text="Regular-expression substitutions on the path the backend gets "
        "(after prefix stripping), in order, e.g. "
        '[{"pattern": "^/v1/", "replacement": "/v2/"}].',
    )
    response_headers = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_response_headers],
        help_text="Headers set or removed on every answer of the rule, the "
        "balancer's own errors included, e.g. "
        '{"set": {"Strict-Transport-Security": "max-age=31536000"}, "remove": ["X-Powered-By"]}.',
    )

    class Meta:
        abstract = True

    @property
    def target(self):
        """What answers the rule: its pool, a redirect or a fixed answer."""
        if self.redirect:
            return f"redirect {self.redirect.get('to', '')}"
        if self.respond:
            return f"respond {self.respond.get('status', 200)}"
        return str(self.pool) if self.pool_id else "-"

    @classmethod
    def row_errors(cls, rows):
        """Refuse a rule with no answer, or with more than one: a pool, a redirect, a response."""
        for row in rows:
            values = (row.pool_id, row.redirect, row.respond)
            answers = [name for name, value in zip(ANSWER_FIELDS, values, strict=True) if value]
            if len(answers) == 1:
                continue
            message = (
                "A rule needs a pool, a redirect or a fixed response."
                if not answers
                else f"A rule has one answer, a pool, a redirect or a fixed response, "
                f"not {' and '.join(answers)}."
            )
            yield ValidationError(
                {
                    "pool" if not answers else NON_FIELD_ERRORS: ValidationError(
                        message, code="answer"
                    )
                }
            )


TLS_CHOICES = [
    ("off", "Off: plain HTTP only (or a certificate you upload)"),
    ("auto", "Automatic: a certificate from the ACME CA, renewed before it expires"),
]


class HostRule(Rule):
    """Send every request for a host to a pool."""

    host = models.CharField(
        max_length=MAX_HOST_LENGTH,
        unique=True,
        validators=[validate_host_pattern],
        help_text="Host name, e.g. www.mango.com, or a wildcard for its "
        "subdomains, e.g. *.mango.com (which does not match mango.com).",
    )
    tls = models.CharField(
        "TLS",
        max_length=8,
        choices=TLS_CHOICES,
        default="off",
        help_text="auto: `manage.py certificates` gets a certificate for this host from "
        "the ACME CA (ACME_DIRECTORY_URL, e.g. Let's Encrypt) over HTTP-01 and "
        "renews it; the HTTPS listener serves it by SNI. Not for wildcard hosts.",
    )
    force_https = models.BooleanField(
        "force HTTPS",
        default=False,
        help_text="Answer plain-HTTP requests for this host with a 308 redirect to "
        "https://host/path?query (ACME challenges excepted).",
    )

    class Meta:
        ordering = ["host"]
        constraints = [normalised_host_constraint("hostrule")]
        # Django's own writes (a related manager's add(), ...) go through the
        # base manager: it must check and bump too.
        base_manager_name = "objects"

    def __str__(self):
        return f"{self.host} → {self.target}"

    def normalise(self):
        self.host = normalise_host_pattern(self.host)

    @classmethod
    def row_errors(cls, rows):
        """Refuse what any rule refuses, and tls=auto on a wildcard host: HTTP-01
        cannot prove a wildcard."""
        yield from super().row_errors(rows)
        for row in rows:
            if row.tls == "auto" and row.host.startswith("*."):
                yield ValidationError(
                    {
                        "tls": ValidationError(
                            "Automatic TLS cannot cover a wildcard host: the ACME HTTP-01 "
                            "challenge proves one name at a time. Upload a wildcard "
                            "certificate instead, or list the hosts one by one.",
                            code="tls_auto_wildcard",
                        )
                    }
                )

    @classmethod
    def tie_errors(cls, rows):
        """Refuse a host rule for a host that has a path rule with prefix /."""
        for row in rows_sharing_a_host(rows, PathRule.objects.filter(prefix="/")):
            yield ValidationError(
                {
                    "host": ValidationError(
                        f"A path rule with prefix / for {row.host} already "
                        "exists; the two would tie.",
                        code="ties_with_path_rule",
                    )
                }
            )


class PathRule(Rule):
    """Send requests whose path starts with a prefix (on one host or any) to a pool."""

    prefix = models.CharField(
        max_length=500,
        validators=[validate_prefix],
        help_text="Path prefix matched on whole segments, e.g. /mango matches "
        "/mango and /mango/x but not /mangoes.",
    )
    host = models.CharField(
        max_length=MAX_HOST_LENGTH,
        blank=True,
        validators=[validate_host_pattern],
        help_text="Leave blank to match any host, or limit the rule to one "
        "host, e.g. www.mango.com or *.mango.com.",
    )
    strip_prefix = models.BooleanField(
        default=True,
        help_text="Remove the prefix before forwarding: /mango/x reaches the "
        "backend as /x, /mango as /.",
    )

    class Meta:
        ordering = ["host", "prefix"]
        # Django's own writes (a related manager's add(), ...) go through the
        # base manager: it must check and bump too.
        base_manager_name = "objects"
        constraints = [
            models.UniqueConstraint(fields=["host", "prefix"], name="pathrule_unique_host_prefix"),
            normalised_host_constraint("pathrule"),
            models.CheckConstraint(
                condition=Q(prefix__startswith="/") & (Q(prefix="/") | ~Q(prefix__endswith="/")),
                name="pathrule_prefix_canonical",
                violation_error_message="A prefix is stored starting with '/' and "
                "without a trailing '/'.",
            ),
        ]

    def __str__(self):
        where = f"{self.host}{self.prefix}" if self.host else f"{self.prefix} (any host)"
        return f"{where} → {self.target}"

    def normalise(self):
        self.host = normalise_host_pattern(self.host)
        with contextlib.suppress(ValidationError):  # a bad prefix is the field's error
            validate_prefix(self.prefix)
            self.prefix = canonical_prefix(self.prefix)

    @classmethod
    def tie_errors(cls, rows):
        """Refuse a path rule with prefix / on a host that has a host rule."""
        roots = [row for row in rows if row.host and row.prefix == "/"]
        for row in rows_sharing_a_host(roots, HostRule.objects.all()):
            yield ValidationError(
                {
                    "prefix": ValidationError(
                        f"A host rule for {row.host} already exists; a path "
                        "rule with prefix / on that host would tie with it.",
                        code="ties_with_host_rule",
                    )
                }
            )


class Revision(models.Model):
    """The whole routing table after one committed change, as a routes file (revisions.py)."""

    number = models.PositiveIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who made the change, when it came through the admin listener.",
    )
    summary = models.TextField(
        blank=True, help_text="The changes from the revision before, one line each."
    )
    routes = models.TextField(help_text="The whole table after the change, as a routes file.")

    class Meta:
        ordering = ["-number"]

    def __str__(self):
        return f"revision {self.number}"


# Certificates and the ACME state behind them. They are state, not
# configuration: never in the routes file, and their writes move the
# certificate version (signals.py), never the routing version.


class Certificate(models.Model):
    """A host's TLS certificate and key, from the ACME CA or uploaded, with its renewal state."""

    host = models.CharField(
        max_length=MAX_HOST_LENGTH,
        unique=True,
        help_text="The host it is for, e.g. www.mango.com: the host rule's host "
        "for an automatic certificate.",
    )
    names = models.JSONField(
        default=list,
        blank=True,
        help_text="The DNS names the certificate covers, read from it.",
    )
    chain_pem = models.TextField(
        "certificate chain (PEM)",
        blank=True,
        help_text="The certificate first, then its intermediates.",
    )
    private_key_pem = models.TextField("private key (PEM)", blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    not_after = models.DateTimeField("expires", null=True, blank=True)
    issuer = models.CharField(max_length=500, blank=True)
    uploaded = models.BooleanField(
        default=False,
        help_text="Uploaded by an operator: never renewed by the ACME loop.",
    )
    last_error = models.TextField(blank=True)
    failures = models.PositiveIntegerField(
        default=0, help_text="Failed orders in a row since the last success."
    )
    next_attempt = models.DateTimeField(
        null=True,
        blank=True,
        help_text="After a failed order: no new order before this time (back-off).",
    )
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["host"]
        constraints = [normalised_host_constraint("certificate")]

    def __str__(self):
        return self.host

    @property
    def issued(self):
        """Whether a certificate and key are stored (a failed first order stores none)."""
        return bool(self.chain_pem and self.private_key_pem)


class AcmeAccount(models.Model):
    """The deployment's one account with an ACME CA: its key and URL, per directory."""

    directory_url = models.CharField(max_length=500, unique=True)
    key_pem = models.TextField()
    uri = models.CharField("account URL", max_length=500, blank=True)
    email = models.CharField(max_length=254, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "ACME account"

    def __str__(self):
        return self.uri or self.directory_url


class AcmeChallenge(models.Model):
    """A pending HTTP-01 challenge: the traffic listener answers its token for the CA."""

    token = models.CharField(max_length=200, unique=True)
    key_authorization = models.CharField(max_length=500)
    host = models.CharField(max_length=MAX_HOST_LENGTH)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "ACME challenge"

    def __str__(self):
        return f"{self.host}: {self.token}"


class TrafficSample(models.Model):
    """One writer's counts for one backend over one sampling interval (traffic.py).

    A writer is one process of one instance (host name and process id); the
    Traffic page adds up every writer's rows. Rows older than
    TRAFFIC_RETENTION are deleted as new ones are written.
    """

    at = models.BigIntegerField(
        db_index=True, help_text="Start of the interval, in seconds since the epoch."
    )
    writer = models.CharField(max_length=100, help_text="host name:process id")
    pool = models.CharField(max_length=100)
    backend = models.CharField(max_length=2000, help_text='The backend URL; "-" for none.')
    requests = models.PositiveIntegerField(default=0)
    status_4xx = models.PositiveIntegerField(default=0)
    status_5xx = models.PositiveIntegerField(default=0)
    # Upstream latencies counted in traffic.LATENCY_BUCKETS (seconds, upper bounds).
    latency_buckets = models.JSONField(default=list)
    in_flight = models.PositiveIntegerField(default=0)
    up = models.BooleanField(default=True)

    class Meta:
        ordering = ["at"]

    def __str__(self):
        return f"{self.pool} {self.backend} at {self.at}: {self.requests} requests"


class RecentRequest(models.Model):
    """A request seen lately, by method, host and path only: never its query, headers or body.

    Each writer keeps counts for the current period in memory and writes
    them every few seconds (traffic.py); impact previews read them.
    """

    writer = models.CharField(max_length=100, help_text="host name:process id")
    period = models.BigIntegerField(
        help_text="Start of the counting period, in seconds since the epoch."
    )
    method = models.CharField(max_length=20)
    host = models.CharField(max_length=255)
    path = models.CharField(max_length=2000)
    count = models.PositiveIntegerField(default=0)
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["writer", "period", "method", "host", "path"],
                name="one_recent_request_per_writer_and_period",
            )
        ]

    def __str__(self):
        return f"{self.method} {self.host}{self.path} ({self.count})"
