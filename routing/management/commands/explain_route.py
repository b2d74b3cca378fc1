from django.core.management.base import BaseCommand

from routing.explain import explain
from routing.table import build_route_table


class Command(BaseCommand):
    help = (
        "Explain how a URL is routed: the rule that serves it, its pool and "
        "backends, the path the backend receives, and why every other rule lost. "
        "Uses the same resolver as the balancer."
    )

    def add_arguments(self, parser):
        parser.add_argument("url", help="e.g. http://www.mango.com/apple/x")

    def handle(self, url, **options):
        explanation = explain(build_route_table(), url)
        write = self.stdout.write
        write(f"URL       {url}")
        if explanation.status == 400:
            write("Answer    400 Bad Request (malformed host or path)")
            return
        write(f"Host      {explanation.host}")
        if explanation.match is None:
            write("Answer    404 Not Found: no enabled rule matches")
        else:
            match, pool = explanation.match, explanation.pool
            write(f"Rule      {match.route}")
            write(f"Pool      {pool.name} ({pool.algorithm})")
            write(f"Backend receives  {match.upstream_path}")
            for backend in pool.backends:
                write(f"  backend {backend.url}  weight {backend.weight}  {state(backend)}")
            if explanation.status == 503:
                write("Answer    503 No backend servers available.")
        write("Rules:")
        for candidate in explanation.candidates:
            write(f"  {'*' if candidate.wins else ' '} {candidate.rule}: {candidate.verdict}")


def state(backend):
    if not backend.enabled:
        return "disabled"
    if not backend.healthy:
        return "down"
    return "draining" if backend.weight == 0 else "usable"
