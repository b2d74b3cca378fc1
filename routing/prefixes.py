"""Path prefixes as rules store and match them: decoded segment by segment."""

from urllib.parse import quote, unquote

from django.core.exceptions import ValidationError

# Characters a path segment may hold unencoded (RFC 3986 pchar), bar "%".
PREFIX_SAFE_CHARACTERS = "!$&'()*+,;=:@-._~"


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
