from django.core.management.base import BaseCommand

from routing.routes_file import dump_routes, export_routes

HEADER = (
    "# The routing table of django-lb. Fields at their default are left out.\n"
    "# Edit, then: python manage.py import_routes FILE (--dry-run first to see the changes)\n"
)


class Command(BaseCommand):
    help = (
        "Print the whole routing table (pools, backends, host and path rules with "
        "their actions) as a routes file, in YAML. `import_routes` reads it back."
    )

    def handle(self, **options):
        self.stdout.write(HEADER + dump_routes(export_routes()), ending="")
