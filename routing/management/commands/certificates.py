import argparse
import math

from django.core.management.base import BaseCommand
from django.template.defaultfilters import pluralize

from routing.acme import issue_due_certificates
from routing.management.loop import run_rounds


def seconds(text):
    """Return a positive, finite number of seconds, or refuse it (argparse's type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"give a positive number of seconds, not {text!r}")
    return value


class Command(BaseCommand):
    help = (
        "Order a certificate from the ACME CA (ACME_DIRECTORY_URL) for every enabled "
        "host rule with TLS auto that has none, or one expiring within ACME_RENEW_DAYS. "
        "Failures are stored on the host's certificate and retried after a back-off. "
        "Once, or with --loop again and again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--loop", action="store_true", help="Keep going: look for due hosts every --interval."
        )
        parser.add_argument(
            "--interval",
            type=seconds,
            default=60.0,
            help="Seconds between two rounds of --loop (default 60).",
        )

    def handle(self, loop, interval, **options):
        if not loop:
            self.report(issue_due_certificates(), quiet_when_none=False)
            return
        run_rounds(
            lambda: self.report(issue_due_certificates(), quiet_when_none=True),
            interval,
            "Certificate round",
        )

    def report(self, outcomes, quiet_when_none):
        if not outcomes and quiet_when_none:
            return
        for outcome in outcomes:
            state = "issued" if outcome.issued else f"FAILED ({outcome.error})"
            self.stdout.write(f"{outcome.host:40} {state}")
        due, failed = len(outcomes), sum(not outcome.issued for outcome in outcomes)
        self.stdout.write(f"{due} certificate{pluralize(due)} due, {failed} failed.")
        self.stdout.flush()
