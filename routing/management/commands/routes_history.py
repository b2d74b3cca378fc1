from django.core.management.base import BaseCommand, CommandError

from routing.models import Revision


class Command(BaseCommand):
    help = (
        "List the routing table's revisions, newest first: number, time, user and "
        "the changes each made to the one before."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--limit", type=int, default=20, help="how many revisions (default 20; 0 for all)"
        )

    def handle(self, limit=20, **options):
        if limit < 0:
            raise CommandError("--limit is a number of revisions: 0 (all) or more.")
        revisions = Revision.objects.select_related("user")
        if limit:
            revisions = revisions[:limit]
        for revision in revisions:
            user = revision.user.username if revision.user else "-"
            when = revision.created_at.isoformat(timespec="seconds")
            self.stdout.write(f"revision {revision.number}  {when}  {user}")
            for line in (revision.summary or "(no change)").splitlines():
                self.stdout.write(f"  {line}")
