"""What the traffic sample costs a request: its two calls on the request path, timed in process.

Each proxied request is counted twice in memory (traffic.py): its method,
host and path for the impact preview, and its answer for the Traffic page.
`make bench` sets this against the balancer's CPU per proxied GET.
"""

import os
import secrets
import sys
import timeit
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 7
DISTINCT = 500  # distinct requests, as a busy site's recent ones


def sampling_us_per_request():
    """Return the best of ROUNDS timings, in microseconds per request, of both calls."""
    from routing.traffic import RECORDER

    requests = [("GET", f"www.site{n % 20}.example", f"/shop/item/{n}") for n in range(DISTINCT)]

    def run():
        for method, host, path in requests:
            RECORDER.request_seen(method, host, path)
            RECORDER.exchange_finished("shop", "http://10.0.0.1:8080", 200, 0.004)

    return min(timeit.repeat(run, number=20, repeat=ROUNDS)) / (20 * DISTINCT) * 1e6


def main():
    os.environ.update(
        DJANGO_SETTINGS_MODULE="lbsite.settings",
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        TRAFFIC_INTERVAL="0",  # no writer thread: the request path's share alone
    )
    sys.path.insert(0, str(PROJECT_ROOT))
    import django

    django.setup()
    print(f"{sampling_us_per_request():.3f}")


if __name__ == "__main__":
    main()
