"""Rows as the API reads and writes them: the model's fields, checked by the model itself.

Fields come from the models (fields = "__all__"), so a field added to a
model appears in the API with no change here. A foreign key to a model with
a unique name (a rule's pool) is written as that name.
"""

import copy

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework import serializers

from routing.models import AccessList, AccessListUser, Backend, HostRule, PathRule, Pool, Revision
from routing.routes_file import HEALTH_STATE_FIELDS, field_names

from .errors import validation_detail

# The field by which a row is referred to from another, when its model has it (unique).
NAME_FIELD = "name"


def has_unique_name(model):
    names = [field.name for field in model._meta.fields if field.unique]
    return NAME_FIELD in names


class ModelCheckedSerializer(serializers.ModelSerializer):
    """A model's fields; every write passes the model's full_clean(), as in the admin.

    DRF's copies of the model's validators (and its uniqueness checks) are
    left out: the model's own run instead, and a 400 names the field with
    the message the admin shows. Values come back in their stored spelling
    (WWW.Mango.COM. is www.mango.com).
    """

    class Meta:
        fields = "__all__"

    def build_relational_field(self, field_name, relation_info):
        field_class, kwargs = super().build_relational_field(field_name, relation_info)
        if not relation_info.reverse and has_unique_name(relation_info.related_model):
            field_class = serializers.SlugRelatedField
            kwargs["slug_field"] = NAME_FIELD
        return field_class, kwargs

    def get_field_names(self, declared_fields, info):
        """The routes file's order: the identifying fields first, then the model's."""
        names = super().get_field_names(declared_fields, info)
        order = ["id", *field_names(self.Meta.model)]
        return sorted(names, key=lambda name: order.index(name) if name in order else len(order))

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            field.validators = []
        return fields

    def get_validators(self):
        return []

    def save(self, **kwargs):
        """Store the row; one another request stored first is refused as the check would.

        Two requests may both pass the check before either writes (the same
        name at once): the database refuses the second, which is then checked
        again and answered 400 naming the field (else 409, errors.py).
        """
        try:
            return super().save(**kwargs)
        except IntegrityError:
            self.run_validation(self.initial_data)
            raise

    def validate(self, attrs):
        """Check the row as it would be stored, with the model's full_clean()."""
        row = copy.copy(self.instance) if self.instance is not None else self.Meta.model()
        for name, value in attrs.items():
            setattr(row, name, value)
        try:
            row.full_clean()
        except DjangoValidationError as error:
            raise serializers.ValidationError(validation_detail(error)) from None
        return {name: getattr(row, name) for name in attrs}


class PoolSerializer(ModelCheckedSerializer):
    class Meta(ModelCheckedSerializer.Meta):
        model = Pool


class BackendSerializer(ModelCheckedSerializer):
    class Meta(ModelCheckedSerializer.Meta):
        model = Backend
        # Written by the health checker: state, not configuration.
        read_only_fields = HEALTH_STATE_FIELDS


class HostRuleSerializer(ModelCheckedSerializer):
    class Meta(ModelCheckedSerializer.Meta):
        model = HostRule


class PathRuleSerializer(ModelCheckedSerializer):
    class Meta(ModelCheckedSerializer.Meta):
        model = PathRule


class AccessListUserSerializer(serializers.Serializer):
    """A user as the API shows it (its name) and takes it (a password, hashed on the way in)."""

    username = serializers.CharField()
    password = serializers.CharField(
        write_only=True,
        required=False,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Hashed before it is stored; never returned. Leave out to keep a user's own.",
    )


class AccessListSerializer(ModelCheckedSerializer):
    """An access list with its users; a write replaces the users with those it lists.

    A listed user without a password keeps the one stored; a new user needs one.
    """

    users = AccessListUserSerializer(many=True, required=False)

    class Meta(ModelCheckedSerializer.Meta):
        model = AccessList

    def validate(self, attrs):
        users = attrs.pop("users", None)
        attrs = super().validate(attrs)
        if users is not None:
            attrs["users"] = self.checked_users(users)
        return attrs

    def checked_users(self, users):
        """Return the users as unsaved rows, each checked by the model, or raise a 400."""
        stored = {}
        if self.instance is not None:
            stored = {user.username: user for user in self.instance.users.all()}
        rows, errors, seen = [], [], set()
        for user in users:
            row = AccessListUser(username=user["username"])
            error = {}
            if "password" in user:
                row.set_password(user["password"])
            elif user["username"] in stored:
                row.password = stored[user["username"]].password
            else:
                error["password"] = ["A new user needs a password."]
            try:
                row.full_clean(exclude=["access_list", "password"])
            except DjangoValidationError as invalid:
                error.update(validation_detail(invalid))
            if row.username in seen:
                error.setdefault("username", []).append("This user is listed twice.")
            seen.add(row.username)
            rows.append(row)
            errors.append(error)
        if any(errors):
            raise serializers.ValidationError({"users": errors})
        return rows

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["users"] = [{"username": user.username} for user in instance.users.all()]
        return data

    def create(self, validated_data):
        users = validated_data.pop("users", [])
        with transaction.atomic():
            access_list = super().create(validated_data)
            self.save_users(access_list, users)
        return access_list

    def update(self, instance, validated_data):
        users = validated_data.pop("users", None)
        with transaction.atomic():
            access_list = super().update(instance, validated_data)
            if users is not None:
                self.save_users(access_list, users)
        return access_list

    @staticmethod
    def save_users(access_list, users):
        """Make the list's users these: one change, whatever it adds, updates or removes."""
        access_list.users.exclude(username__in=[user.username for user in users]).delete()
        stored = {user.username: user for user in access_list.users.all()}
        for user in users:
            row = stored.get(user.username) or user
            if row.pk is None or row.password != user.password:
                row.access_list, row.password = access_list, user.password
                row.save()


class RevisionSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Revision
        fields = ["id", "number", "created_at", "user", "summary", "routes"]
        read_only_fields = fields


class RevisionListSerializer(RevisionSerializer):
    """A revision in the list: its table is in its own page (/api/revisions/{id}/)."""

    class Meta(RevisionSerializer.Meta):
        fields = [name for name in RevisionSerializer.Meta.fields if name != "routes"]
        read_only_fields = fields


class ExplainQuerySerializer(serializers.Serializer):
    url = serializers.CharField(
        max_length=2000, help_text="As a client would ask for it, e.g. http://www.mango.com/x"
    )
    client = serializers.IPAddressField(
        required=False, help_text="A client address for the rule's firewall to judge."
    )


class MoveSerializer(serializers.Serializer):
    """A recent request that the previewed change would send elsewhere (impact.py)."""

    line = serializers.CharField()
    method = serializers.CharField()
    host = serializers.CharField()
    path = serializers.CharField()
    count = serializers.IntegerField(help_text="Requests in the last hour.")
    now = serializers.CharField(help_text="Where it goes now.")
    then = serializers.CharField(help_text="Where it would go.")


class RollbackResultSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    changes = serializers.ListField(child=serializers.CharField())
    revision = RevisionSerializer(allow_null=True)
    impact = MoveSerializer(many=True, required=False, help_text="With dry_run only.")


class ImportResultSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    changes = serializers.ListField(child=serializers.CharField())
    impact = MoveSerializer(many=True, required=False, help_text="With dry_run only.")
