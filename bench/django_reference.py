"""A bare Django view proxying with a shared requests.Session: `make bench`'s reference.

No middleware, one URL pattern, no routing table, metrics or logs; see
bench/references.py for what it is compared with.
"""

import os
import random

import django
import requests
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.urandom(32).hex(),
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import re_path  # noqa: E402

BACKENDS = [b for b in os.environ.get("BENCH_BACKENDS", "").split(",") if b]
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
)
session = requests.Session()
session.trust_env = False


def proxy(request, path):
    upstream = session.get(f"http://{random.choice(BACKENDS)}/{path}", stream=True)
    body = upstream.raw.read(decode_content=False)  # passed on as it came
    response = HttpResponse(body, status=upstream.status_code)
    for name, value in upstream.headers.items():
        if name.lower() not in HOP_BY_HOP:
            response[name] = value
    response["Content-Length"] = len(body)
    return response


urlpatterns = [re_path(r"^(?P<path>.*)$", proxy)]
application = get_wsgi_application()
