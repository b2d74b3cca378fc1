from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing"

    def ready(self):
        from . import checks, signals  # noqa: F401  (registers checks, connects receivers)
