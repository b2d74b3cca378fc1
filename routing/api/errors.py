"""The API's answers to the model's refusals: 400 naming the field, 409 for a pool in use
or a clash with a concurrent write."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError
from rest_framework import exceptions
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from routing.routes_file import RoutesFileError


class Conflict(exceptions.APIException):
    status_code = 409
    default_detail = "The row is still in use."
    default_code = "conflict"


def exception_handler(exc, context):
    """Answer the model's and the routes file's errors as DRF answers its own."""
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(validation_detail(exc))
    elif isinstance(exc, RoutesFileError):
        exc = exceptions.ValidationError({"errors": exc.errors})
    elif isinstance(exc, ProtectedError):
        users = ", ".join(sorted(str(row) for row in exc.protected_objects))
        exc = Conflict(f"Still used by: {users}. Delete or change those first.")
    elif isinstance(exc, IntegrityError):  # a concurrent write the model's check could not see
        exc = Conflict(
            "A change made at the same moment conflicts: nothing was written; try again."
        )
    return drf_exception_handler(exc, context)


def validation_detail(error):
    """Return a model's ValidationError as DRF's detail: {field: [messages]}."""
    if not hasattr(error, "error_dict"):
        return {api_settings.NON_FIELD_ERRORS_KEY: error.messages}
    return {
        api_settings.NON_FIELD_ERRORS_KEY if name == "__all__" else name: messages
        for name, messages in error.message_dict.items()
    }
