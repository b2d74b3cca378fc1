"""Settings for the test run: the project's own, with a throwaway secret key."""

import os
import secrets

os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))

from lbsite.settings import *  # noqa: E402,F403

# Test-client tests see their own writes through the signals; the background
# refresher is exercised by the end-to-end tests under gunicorn.
ROUTE_TABLE_REFRESH_INTERVAL = 0

# Test-client tests read each access-log line as their request ends; the
# batched writing is exercised by the end-to-end tests under gunicorn.
ACCESS_LOG_FLUSH = 0

# The test client serves the admin's static files from the apps themselves;
# gunicorn runs in the end-to-end tests serve them from collectstatic's output.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True

# Test-client tests write traffic samples themselves (traffic.flush()); the
# background writer is exercised by the end-to-end tests under gunicorn.
TRAFFIC_INTERVAL = 0
