import time

from django.core.management.base import BaseCommand

from routing.health import run_checks
from routing.management.loop import run_rounds
from routing.models import Pool

# How often the loop looks for pools whose next check is due.
TICK = 0.2


class Command(BaseCommand):
    help = (
        "Probe every enabled backend at its pool's health-check path and store "
        "the result (healthy, last checked, last error, latency) for every worker "
        "and instance to see. Once, or with --loop at each pool's interval."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--loop",
            action="store_true",
            help="Keep checking, each pool at its own health-check interval.",
        )

    def handle(self, loop, **options):
        if not loop:
            self.report(run_checks())
            return
        due = {}
        run_rounds(lambda: self.check_due_pools(due), TICK, "Health checks")

    def check_due_pools(self, due):
        now = time.monotonic()
        pools = [pool for pool in Pool.objects.all() if due.get(pool.id, 0) <= now]
        if pools:
            run_checks(pools)
            for pool in pools:
                due[pool.id] = now + pool.health_check_interval

    def report(self, results):
        for backend, result in results:
            state = "healthy" if result.healthy else f"DOWN ({result.error})"
            latency = f" {result.latency_ms:.1f} ms" if result.latency_ms is not None else ""
            self.stdout.write(f"{backend.pool.name:20} {backend.url:40} {state}{latency}")
        down = sum(not result.healthy for _backend, result in results)
        self.stdout.write(f"{len(results)} backends checked, {down} down.")
