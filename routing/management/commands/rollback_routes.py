from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from routing.models import Revision
from routing.revisions import roll_back
from routing.routes_file import RoutesFileError


class Command(BaseCommand):
    help = (
        "Make the routing table revision N's again (see routes_history), in one "
        "transaction, as a new revision noted 'rollback to N'; print each change."
    )

    def add_arguments(self, parser):
        parser.add_argument("number", type=int, help="the revision's number")
        parser.add_argument(
            "--dry-run", action="store_true", help="print the changes and write nothing"
        )

    def handle(self, number, dry_run=False, **options):
        try:
            revision = Revision.objects.get(number=number)
        except Revision.DoesNotExist:
            raise CommandError(f"No revision {number}: see routes_history.") from None
        try:
            changes = roll_back(revision, dry_run=dry_run)
        except RoutesFileError as error:
            for line in error.errors:
                self.stderr.write(line)
            raise CommandError(
                f"Revision {number} cannot be imported; nothing was written."
            ) from None
        for line in changes:
            self.stdout.write(line)
        if not changes:
            self.stdout.write(f"No changes: the table already is revision {number}'s.")
        elif dry_run:
            count = len(changes)
            self.stdout.write(f"Dry run: {count} change{pluralize(count)} not written.")
        else:
            latest = Revision.objects.first()
            self.stdout.write(f"Rolled back to revision {number}: revision {latest.number}.")
