"""Check every row before it is saved; bump the routing version whenever one changes."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from .models import (
    AccessList,
    AccessListUser,
    Backend,
    Certificate,
    HostRule,
    PathRule,
    Pool,
    RoutingVersion,
    routing_changed,
)
from .revisions import schedule_revision
from .table import clear_route_table


def validate_before_save(sender, instance, **kwargs):
    """Refuse a bad row on every save, loaddata's raw ones included (which skip save())."""
    instance.validate_for_write()


def bump_routing_version(sender, **kwargs):
    """Tell every worker that the routing table is stale."""
    RoutingVersion.bump()


for model in (Pool, Backend, AccessList, AccessListUser, HostRule, PathRule):
    pre_save.connect(validate_before_save, sender=model)
    post_save.connect(bump_routing_version, sender=model)
    post_delete.connect(bump_routing_version, sender=model)


def bump_certificate_version(sender, **kwargs):
    """Tell every worker serving TLS that its certificates are stale (never a routing change)."""
    RoutingVersion.bump_certificates()


post_save.connect(bump_certificate_version, sender=Certificate)
post_delete.connect(bump_certificate_version, sender=Certificate)


@receiver(routing_changed)
def forget_route_table(sender, **kwargs):
    """Drop this process's table now, and again once the change is committed.

    Now, so that the writer's own transaction reads its writes; again at
    commit, because another thread may have rebuilt the table meanwhile from
    the rows the change had not yet committed. Other processes poll the version.
    """
    clear_route_table()
    transaction.on_commit(clear_route_table)


@receiver(routing_changed)
def record_revision_at_commit(sender, **kwargs):
    """Have the transaction record the table as a revision when it commits."""
    schedule_revision()
