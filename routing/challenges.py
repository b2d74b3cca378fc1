"""Answers the traffic listener gives before any rule: ACME challenges, and HTTPS redirects.

A pending HTTP-01 challenge's token is in the database (acme.py stores it),
so whichever worker or instance the CA reaches answers it. Only a request
for a challenge path reads it: every other request makes no query.
"""

import re

from django.conf import settings
from django.http import HttpResponse

from .models import AcmeChallenge
from .responses import edit_headers
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
    return plain_response(200, key_authorization)


def https_redirect(request, header_edit=None):
    """Return the 308 that sends a plain-HTTP request to the same URL over HTTPS.

    header_edit: the rule's response headers (an HSTS header, say), as on its other answers.
    """
    port = "" if settings.HTTPS_PORT == 443 else f":{settings.HTTPS_PORT}"
    response = plain_response(308, "Permanent Redirect")
    response["Location"] = f"https://{request.host}{port}{request.target}"
    return edit_headers(response, header_edit)


def plain_response(status, text):
    body = text.encode()
    response = HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")
    response["Content-Length"] = len(body)
    return response
