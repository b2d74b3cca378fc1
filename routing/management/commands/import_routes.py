import sys

from django.core.management.base import BaseCommand, CommandError

from routing.impact import preview_import
from routing.routes_file import RoutesFileError, import_routes, read_routes_file


class Command(BaseCommand):
    help = (
        "Make the routing table equal to a routes file (YAML: the project's schema, or "
        "the tutorial's loadbalancer.yaml): creates, updates and deletes pools, backends "
        "and rules in one transaction, as one routing change, and prints each change. "
        "A file with any error writes nothing."
    )
    # call_command(..., stdin=...) for `-`, as tests give it.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("file", help="the routes file; - reads standard input")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print the changes the file would make and the recent requests they "
            "would send elsewhere, and write nothing",
        )

    def handle(self, file, dry_run=False, **options):
        try:
            document = read_routes_file(self.read(file, options.get("stdin") or sys.stdin))
            if dry_run:
                changes, moves = preview_import(document)
            else:
                changes, moves = import_routes(document), []
        except RoutesFileError as error:
            for line in error.errors:
                self.stderr.write(line)
            count = len(error.errors)
            errors = f"{count} error{'s' if count > 1 else ''}"
            raise CommandError(f"{errors} in {self.name(file)}; nothing was written.") from None
        for line in changes:
            self.stdout.write(line)
        if not changes:
            self.stdout.write("No changes.")
        elif dry_run:
            self.stdout.write(f"Dry run: {self.count(changes)} not written.")
            self.write_impact(moves)
        else:
            self.stdout.write(f"Imported: {self.count(changes)}.")

    def write_impact(self, moves):
        """List the recent requests the changes would send elsewhere (impact preview)."""
        if not moves:
            self.stdout.write("No request of the last hour would go elsewhere.")
            return
        self.stdout.write("Requests of the last hour that would go elsewhere:")
        for move in moves:
            self.stdout.write(f"  {move}")

    def read(self, file, stdin):
        if file == "-":
            return stdin.read()
        try:
            with open(file, encoding="utf-8") as handle:
                return handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"Cannot read {file}: {error}") from None

    @staticmethod
    def name(file):
        return "standard input" if file == "-" else file

    @staticmethod
    def count(changes):
        return f"{len(changes)} change{'s' if len(changes) > 1 else ''}"
