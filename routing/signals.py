"""Bump the routing version whenever a rule, pool or backend changes."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import Backend, HostRule, PathRule, Pool, RoutingVersion, routing_changed
from .table import clear_route_table


def bump_routing_version(sender, **kwargs):
    """Tell every worker that the routing table is stale."""
    RoutingVersion.bump()


for model in (Pool, Backend, HostRule, PathRule):
    post_save.connect(bump_routing_version, sender=model)
    post_delete.connect(bump_routing_version, sender=model)


@receiver(routing_changed)
def forget_route_table(sender, **kwargs):
    """Drop this process's table at once; other processes poll the version."""
    clear_route_table()
