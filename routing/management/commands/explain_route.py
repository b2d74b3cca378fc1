from django.core.management.base import BaseCommand

from routing.explain import explain
from routing.table import build_route_table


class Command(BaseCommand):
    help = (
        "Explain how a URL is routed: the rule that serves it, its pool and "
        "backends, the path, query and headers the backend receives after the "
        "rule's actions, the firewall's verdict, and why every other rule lost. "
        "Uses the same resolver as the balancer."
    )

    def add_arguments(self, parser):
        parser.add_argument("url", help="e.g. http://www.mango.com/apple/x")
        parser.add_argument(
            "--client",
            metavar="ADDRESS",
            help="the client's address, for the rule's firewall to judge, e.g. 10.192.0.1",
        )

    def handle(self, url, client=None, **options):
        explanation = explain(build_route_table(), url, client)
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
            if pool:
                write(f"Pool      {pool.name} ({pool.algorithm})")
                write(f"Backend receives  {explanation.upstream_target}")
            for change in explanation.request_header_changes:
                write(f"  request header  {change}")
            for change in explanation.response_header_changes:
                write(f"  response header {change}")
            if explanation.firewall:
                write(f"Firewall  {explanation.firewall}")
            for guard in explanation.guards:
                write(f"Guard     {guard}")
            for backend in pool.backends if pool else ():
                write(f"  backend {backend.url}  weight {backend.weight}  {state(backend)}")
            if explanation.status != 200:
                write(f"Answer    {explanation.answer}")
        write("Rules:")
        for candidate in explanation.candidates:
            write(f"  {'*' if candidate.wins else ' '} {candidate.rule}: {candidate.verdict}")


def state(backend):
    if not backend.enabled:
        return "disabled"
    if not backend.healthy:
        return "down"
    return "draining" if backend.weight == 0 else "usable"
