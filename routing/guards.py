"""The actions that may answer a request before any backend: rate limit, access list,
redirect, fixed response (the firewall is in actions.py).

Pure but for the counts they keep: the rate limits' (ratelimit.py), and each
worker's memory of HTTP Basic credentials already checked.
"""

import base64
import binascii
import hashlib
import logging
import math
import sys
import time

from django.contrib.auth import hashers

from . import ratelimit
from .errors import TooManyRequests, Unauthorized
from .responses import fixed_response, redirect_response

logger = logging.getLogger(__name__)

# How long a worker remembers credentials it checked: a password hash costs
# ~0.3 s by design, too much for every request of a client. A change to the
# access list (or any other routing change) starts a new memory at once.
VERIFIED_SECONDS = 60.0
# Credentials a worker remembers per access list at most.
MAX_VERIFIED = 10_000


def enforce_rate_limit(route, client):
    """Raise TooManyRequests, with Retry-After, when the route's rate limit is spent."""
    limit = route.actions.rate_limit
    if limit is None:
        return
    key = f"{route.kind}:{route.rule_id}"
    if limit.by_client:
        key = f"{key}:{client}"
    wait = ratelimit.take(key, limit)
    if wait is not None:
        raise TooManyRequests(
            f"rate limit: {'client ' + client if limit.by_client else 'rule'} over the limit",
            headers=[("Retry-After", str(max(1, math.ceil(wait))))],
        )


def enforce_access_list(access_list, authorization, client):
    """Raise Unauthorized unless the Authorization header holds a user of the access list."""
    if access_list is None:
        return
    username = authenticated_user(access_list, authorization)
    if username is None:
        if authorization:
            logger.warning(
                "Access list %s: failed Basic authentication from %s", access_list.name, client
            )
        raise Unauthorized(
            f"access list {access_list.name}: "
            + ("wrong credentials" if authorization else "no credentials"),
            headers=[("WWW-Authenticate", f'Basic realm="{access_list.name}"')],
        )


def authenticated_user(access_list, authorization):
    """Return the username whose Basic credentials the header holds, or None."""
    if not authorization:
        return None
    digest = hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).digest()
    now = time.monotonic()
    remembered = access_list.verified.get(digest)
    if remembered is not None and remembered[1] > now:
        return remembered[0]
    credentials = basic_credentials(authorization)
    if credentials is None:
        return None
    username, password = credentials
    encoded = access_list.users.get(username)
    if encoded is None:
        # As long as a real check, so that timing does not tell which users exist.
        off_the_event_loop(hashers.make_password, password)
        return None
    if not off_the_event_loop(hashers.check_password, password, encoded):
        return None
    if len(access_list.verified) >= MAX_VERIFIED:
        access_list.verified.clear()
    access_list.verified[digest] = (username, now + VERIFIED_SECONDS)
    return username


def off_the_event_loop(function, *args):
    """Return function(*args), computed where it holds up no other request.

    A password hash is ~0.3 s of CPU. Under gevent, a worker's requests share
    one thread: the hash runs in a real thread of gevent's pool instead
    (hashlib's PBKDF2 lets go of the GIL), and the worker serves its other
    connections meanwhile. Under threaded workers it runs where it is.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        import gevent

        return gevent.get_hub().threadpool.apply(function, args)
    return function(*args)


def basic_credentials(authorization):
    """Return (username, password) of a Basic Authorization header, or None."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def rule_answer(match, request):
    """Return (action, response) of a rule that redirects or responds by itself."""
    rule_actions = match.route.actions
    if rule_actions.redirect:
        redirect = rule_actions.redirect
        location = redirect_location(
            redirect, match.upstream_path, request.query, "?" in request.target
        )
        return "redirect", redirect_response(
            redirect.status, location, rule_actions.response_headers
        )
    return "respond", fixed_response(rule_actions.respond, rule_actions.response_headers)


def redirect_location(redirect, upstream_path, query, has_query):
    """Return a redirect's Location: its target, plus with keep_path the path and query."""
    if not redirect.keep_path:
        return redirect.to
    return redirect.to.rstrip("/") + upstream_path + ("?" + query if has_query else "")
