"""WSGI entry point: `gunicorn lbsite.wsgi`."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lbsite.settings")
django.setup(set_prefix=False)

# Importable once the apps are loaded (it reaches the models).
from routing.handler import BalancerHandler  # noqa: E402

application = BalancerHandler()
