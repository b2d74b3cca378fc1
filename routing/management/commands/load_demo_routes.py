from django.core.management import call_command
from django.core.management.base import BaseCommand

from routing.models import HostRule, PathRule, Pool


class Command(BaseCommand):
    help = (
        "Load the demo routes (fruit_routes) into an empty routing table; "
        "leave a table that already has pools or rules alone, so a restart "
        "never undoes an admin edit."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "fixture",
            nargs="?",
            default="fruit_routes",
            help="Fixture to load (default: fruit_routes; Compose uses fruit_routes_compose).",
        )

    def handle(self, fixture, **options):
        if Pool.objects.exists() or HostRule.objects.exists() or PathRule.objects.exists():
            self.stdout.write("Routing table is not empty; demo routes not loaded.")
            return
        call_command("loaddata", fixture, verbosity=options["verbosity"])
