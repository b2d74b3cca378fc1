"""WSGI entry point: `gunicorn lbsite.wsgi`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lbsite.settings")

application = get_wsgi_application()
