"""The routing table as the admin edits it: pools of backends and the rules that pick them."""

import contextlib
import os
import re
from urllib.parse import quote, unquote, urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import F
from django.dispatch import Signal

ALGORITHM_CHOICES = [
    ("random", "Random, in proportion to weight"),
    ("round_robin", "Round robin, one request each in turn"),
    ("weighted", "Weighted round robin (smooth, as nginx)"),
    ("least_connections", "Least connections for the weight"),
    ("ip_hash", "Client address hash (the same backend per client)"),
]

# Sent after every change to the routing rules, once the version is bumped.
routing_changed = Signal()

HOST_LABEL_RE = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
MAX_HOST_LENGTH = 253
# Characters a path segment may hold unencoded (RFC 3986 pchar), bar "%".
PREFIX_SAFE_CHARACTERS = "!$&'()*+,;=:@-._~"


def normalise_host_pattern(value):
    """Return a host pattern lower-cased and without a trailing dot."""
    return value.strip().lower().removesuffix(".")


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
            "*.mango.com (one leading '*.' only, no port, no scheme).",
            code="invalid_host",
        )
    if host.startswith("*.") and len(labels) < 2:
        raise ValidationError(
            "A wildcard needs at least two labels after '*.', e.g. *.mango.com.",
            code="wildcard_too_broad",
        )


def prefix_segments(prefix):
    """Return a prefix's segments percent-decoded, as request paths are matched."""
    return [unquote(segment) for segment in prefix.strip("/").split("/")] if prefix != "/" else []


def canonical_prefix(prefix):
    """Return the one spelling of a prefix: each segment decoded, then encoded once.

    "/%6Dango/" and "/mango" match the same requests, so both are stored as
    "/mango"; an encoded slash stays encoded inside its segment.
    """
    segments = prefix_segments(prefix)
    return "/" + "/".join(quote(segment, safe=PREFIX_SAFE_CHARACTERS) for segment in segments)


def validate_prefix(value):
    """Refuse a path prefix that could not match a request path as written."""
    if not value.startswith("/"):
        raise ValidationError("A prefix starts with '/', e.g. /mango.", code="prefix_without_slash")
    if any(char in value for char in "?#") or not value.isprintable() or " " in value:
        raise ValidationError(
            "A prefix is a path only: no query, fragment, spaces or control characters.",
            code="prefix_not_a_path",
        )
    if any(segment in ("", ".", "..") for segment in prefix_segments(value.rstrip("/") or "/")):
        raise ValidationError(
            "A prefix has no empty, '.' or '..' segments (written plainly or "
            "percent-encoded), e.g. /api/v1.",
            code="prefix_bad_segment",
        )


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


def validate_ca_bundle(value):
    """Refuse a CA bundle path that this machine cannot read."""
    if value and not os.access(value, os.R_OK):
        raise ValidationError(f"No readable file at {value}.", code="ca_bundle_unreadable")


class RoutingQuerySet(models.QuerySet):
    """A queryset whose bulk writes bump the routing version like save() does."""

    def update(self, **kwargs):
        rows = super().update(**kwargs)
        RoutingVersion.bump()
        return rows

    def bulk_create(self, *args, **kwargs):
        objects = super().bulk_create(*args, **kwargs)
        RoutingVersion.bump()
        return objects

    def bulk_update(self, *args, **kwargs):
        rows = super().bulk_update(*args, **kwargs)
        RoutingVersion.bump()
        return rows


class PoolQuerySet(RoutingQuerySet):
    def get_by_natural_key(self, name):
        return self.get(name=name)


class RoutingVersion(models.Model):
    """A single row whose number every change to the routing rules increases."""

    version = models.PositiveBigIntegerField(default=0)

    SINGLETON_ID = 1

    class Meta:
        verbose_name = "routing version"

    def __str__(self):
        return f"routing version {self.version}"

    @classmethod
    def bump(cls):
        """Increase the version, creating its row on first use."""
        bumped = cls.objects.filter(pk=cls.SINGLETON_ID).update(version=F("version") + 1)
        if not bumped:
            try:
                with transaction.atomic():
                    cls.objects.create(pk=cls.SINGLETON_ID, version=1)
            except IntegrityError:  # another writer created it first
                cls.objects.filter(pk=cls.SINGLETON_ID).update(version=F("version") + 1)
        routing_changed.send(sender=cls)

    @classmethod
    def current(cls):
        """Return the current version (0 before the first change)."""
        return (
            cls.objects.filter(pk=cls.SINGLETON_ID).values_list("version", flat=True).first() or 0
        )


class Pool(models.Model):
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

    def __str__(self):
        return self.name

    def natural_key(self):
        return (self.name,)

    @property
    def tls_verification(self):
        """requests' `verify` for this pool: the CA bundle, True, or False (verify off)."""
        return (self.tls_ca_bundle or True) if self.tls_verify else False


class Backend(models.Model):
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
        help_text="Relative share of new requests, e.g. 2 for twice as many; "
        "0 drains the backend (no new requests).",
    )
    enabled = models.BooleanField(
        default=True, help_text="Untick to take the backend out of its pool."
    )
    healthy = models.BooleanField(
        default=True,
        help_text="Result of the last health check; a backend never checked counts as healthy.",
    )
    last_checked = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    latency_ms = models.FloatField("latency (ms)", null=True, blank=True)

    objects = RoutingQuerySet.as_manager()

    class Meta:
        ordering = ["pool__name", "url"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "url"], name="backend_unique_url_per_pool"),
        ]

    def __str__(self):
        return f"{self.url} ({self.pool})"

    def clean(self):
        parts = urlsplit(self.url.strip())
        self.url = f"{parts.scheme}://{parts.netloc}".lower()


class Rule(models.Model):
    """What host and path rules share: a target pool and how to forward."""

    pool = models.ForeignKey(
        Pool,
        on_delete=models.PROTECT,
        related_name="%(class)ss",
        help_text="The pool whose backends serve the matching requests.",
    )
    enabled = models.BooleanField(default=True, help_text="Untick to stop routing by this rule.")
    preserve_host = models.BooleanField(
        default=False,
        help_text="Send the client's Host header to the backend instead of the backend's own host.",
    )

    objects = RoutingQuerySet.as_manager()

    class Meta:
        abstract = True


class HostRule(Rule):
    """Send every request for a host to a pool."""

    host = models.CharField(
        max_length=MAX_HOST_LENGTH,
        unique=True,
        validators=[validate_host_pattern],
        help_text="Host name, e.g. www.mango.com, or a wildcard for its "
        "subdomains, e.g. *.mango.com (which does not match mango.com).",
    )

    class Meta:
        ordering = ["host"]

    def __str__(self):
        return f"{self.host} → {self.pool}"

    def clean(self):
        self.host = normalise_host_pattern(self.host)
        if PathRule.objects.filter(host=self.host, prefix="/").exists():
            raise ValidationError(
                {
                    "host": ValidationError(
                        f"A path rule with prefix / for {self.host} already "
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
        constraints = [
            models.UniqueConstraint(fields=["host", "prefix"], name="pathrule_unique_host_prefix"),
        ]

    def __str__(self):
        return f"{self.host or '*'}{self.prefix} → {self.pool}"

    def clean(self):
        self.host = normalise_host_pattern(self.host)
        with contextlib.suppress(ValidationError):  # a bad prefix is the field's error
            validate_prefix(self.prefix)
            self.prefix = canonical_prefix(self.prefix)
        if self.host and self.prefix == "/" and HostRule.objects.filter(host=self.host).exists():
            raise ValidationError(
                {
                    "prefix": ValidationError(
                        f"A host rule for {self.host} already exists; a path "
                        "rule with prefix / on that host would tie with it.",
                        code="ties_with_host_rule",
                    )
                }
            )
