"""WSGI entry point of the demo backend: `APP=mango gunicorn backend_app.wsgi`."""

from .app import application

__all__ = ["application"]
