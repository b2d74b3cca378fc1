"""Who may do what through the API: Django's model permissions, as in the admin."""

from rest_framework.permissions import BasePermission, DjangoModelPermissions

from routing.revisions import ROUTING_MODELS, rollback_permissions

VIEW = "%(app_label)s.view_%(model_name)s"
CHANGE = "%(app_label)s.change_%(model_name)s"


class ModelPermissions(DjangoModelPermissions):
    """The model's view permission to read (DRF's own class lets any user read), add,
    change or delete to write."""

    perms_map = {
        **DjangoModelPermissions.perms_map,
        "GET": [VIEW],
        "HEAD": [VIEW],
    }


class ChangePermission(ModelPermissions):
    """The model's change permission for a POST: an action on existing rows (drain)."""

    perms_map = {**ModelPermissions.perms_map, "POST": [CHANGE]}


class TablePermissions(BasePermission):
    """A permission on every routing model: view to read the table, add, change and
    delete to replace it."""

    required = {
        "GET": ("view",),
        "HEAD": ("view",),
        "OPTIONS": (),
        "PUT": ("add", "change", "delete"),
    }

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        actions = self.required.get(request.method, ("add", "change", "delete"))
        return user.has_perms(table_permissions(*actions))


class AccessListUsersPermission(BasePermission):
    """Add, change and delete on access-list users for a write that lists them: it
    replaces them, as the admin's inline of users would need."""

    def has_permission(self, request, view):
        if request.method not in ("POST", "PUT", "PATCH"):
            return True
        if not isinstance(request.data, dict) or "users" not in request.data:
            return True
        return request.user.has_perms(
            [f"routing.{action}_accesslistuser" for action in ("add", "change", "delete")]
        )


class RollbackPermission(BasePermission):
    """Change permission on every routing model: a rollback may change any row."""

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.has_perms(rollback_permissions()))


def table_permissions(*actions):
    """Return the permission names of these actions on every routing model."""
    return [
        f"{model._meta.app_label}.{action}_{model._meta.model_name}"
        for model in ROUTING_MODELS
        for action in actions
    ]
