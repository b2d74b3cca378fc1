"""Answers the traffic listener gives before any rule: ACME challenges, and HTTPS redirects.

A pending HTTP-01 challenge's token is in the database (acme.py stores it),
so whichever worker or instance the CA reaches answers it. Only a request
for a challenge path reads it: every other request makes no query.
"""

import re

from django.conf import settings

from .models import AcmeChallenge
from .responses import own_response, redirect_response
from .table import release_connection

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
# RFC 8555 §8.3: a token is base64url, without padding.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,200}")


def challenge_response(request):
    """Return the answer to a pending ACME challenge, or None when the request is not one."""
    if request.method not in ("GET", "HEAD") or not request.path.startswith(CHALLENGE_PREFIX):
        return None
    token = request.path.removeprefix(CHALLENGE_PREFIX)
    if not TOKEN_RE.fullmatch(token):
        return None
    key_authorization = (
        AcmeChallenge.objects.filter(token=token)
        .values_list("key_authorization", flat=True)
        .first()
    )
    release_connection()
    if key_authorization is None:  # not ours: the rules decide (a backend may answer its own)
        return None
    return own_response(200, key_authorization.encode(), "text/plain; charset=utf-8")


def https_redirect(request, header_edit=None):
    """Return the 308 that sends a plain-HTTP request to the same URL over HTTPS.

    header_edit: the rule's response headers (an HSTS header, say), as on its other answers.
    """
    return redirect_response(308, https_url(request.host, request.target), header_edit)


def https_url(host, target):
    """Return the HTTPS URL of a host and request target (HTTPS_PORT, left out when 443)."""
    port = "" if settings.HTTPS_PORT == 443 else f":{settings.HTTPS_PORT}"
    return f"https://{host}{port}{target}"
