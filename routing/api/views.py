"""The API's views: thin, each the model's, the routes file's or the explainer's own logic.

A routing model's rows are one ModelViewSet each; another resource is a
serializer and a viewset of a few lines, registered in urls.py.
"""

import dataclasses

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from routing.explain import explain
from routing.impact import TableChange, moves, preview_import
from routing.models import AccessList, Backend, HostRule, PathRule, Pool, Revision
from routing.revisions import roll_back
from routing.routes_file import export_routes, import_routes, read_routes_file
from routing.table import get_route_table

from .permissions import (
    AccessListUsersPermission,
    ChangePermission,
    ModelPermissions,
    RollbackPermission,
    TablePermissions,
)
from .renderers import YAMLRenderer
from .serializers import (
    AccessListSerializer,
    BackendSerializer,
    ExplainQuerySerializer,
    HostRuleSerializer,
    ImportResultSerializer,
    PathRuleSerializer,
    PoolSerializer,
    RevisionListSerializer,
    RevisionSerializer,
    RollbackResultSerializer,
)

TRUE_WORDS = {"1", "true", "yes", "on"}
DRY_RUN = OpenApiParameter(
    "dry_run", OpenApiTypes.BOOL, description="Return the changes and write nothing."
)
POOL_FILTER = OpenApiParameter("pool", OpenApiTypes.STR, description="Only this pool's rows.")


def impact_data(found):
    """The impact preview's recent requests that would go elsewhere, lines and fields."""
    return [{"line": str(move), **dataclasses.asdict(move)} for move in found]


def is_dry_run(request):
    return request.query_params.get("dry_run", "").strip().lower() in TRUE_WORDS


class RoutingViewSet(viewsets.ModelViewSet):
    """A routing model's rows; every write is checked by the model and goes live at once.

    The list of a model with a pool takes ?pool=NAME.
    """

    def get_queryset(self):
        queryset = super().get_queryset()
        pool = self.request.query_params.get("pool")
        if pool is not None and self.action == "list":
            queryset = queryset.filter(pool__name=pool)
        return queryset


class PoolViewSet(viewsets.ModelViewSet):
    queryset = Pool.objects.all()
    serializer_class = PoolSerializer
    lookup_field = "name"


class AccessListViewSet(viewsets.ModelViewSet):
    queryset = AccessList.objects.prefetch_related("users")
    serializer_class = AccessListSerializer
    lookup_field = "name"
    permission_classes = [ModelPermissions, AccessListUsersPermission]


@extend_schema_view(list=extend_schema(parameters=[POOL_FILTER]))
class BackendViewSet(RoutingViewSet):
    queryset = Backend.objects.select_related("pool")
    serializer_class = BackendSerializer

    def change(self, verb):
        """Apply the admin's bulk action of this name (a BackendQuerySet method) to one backend."""
        backend = self.get_object()
        getattr(Backend.objects.filter(pk=backend.pk), verb)()
        backend.refresh_from_db()
        return Response(self.get_serializer(backend).data)

    @extend_schema(request=None, summary="Drain the backend: no new requests, weight kept.")
    @action(detail=True, methods=["post"], permission_classes=[ChangePermission])
    def drain(self, request, pk=None):
        return self.change("drain")

    @extend_schema(request=None, summary="Undrain the backend: new requests again, at its weight.")
    @action(detail=True, methods=["post"], permission_classes=[ChangePermission])
    def undrain(self, request, pk=None):
        return self.change("undrain")

    @extend_schema(request=None, summary="Enable the backend.")
    @action(detail=True, methods=["post"], permission_classes=[ChangePermission])
    def enable(self, request, pk=None):
        return self.change("enable")

    @extend_schema(request=None, summary="Disable the backend.")
    @action(detail=True, methods=["post"], permission_classes=[ChangePermission])
    def disable(self, request, pk=None):
        return self.change("disable")


@extend_schema_view(list=extend_schema(parameters=[POOL_FILTER]))
class HostRuleViewSet(RoutingViewSet):
    queryset = HostRule.objects.select_related("pool")
    serializer_class = HostRuleSerializer


@extend_schema_view(list=extend_schema(parameters=[POOL_FILTER]))
class PathRuleViewSet(RoutingViewSet):
    queryset = PathRule.objects.select_related("pool")
    serializer_class = PathRuleSerializer


class RevisionViewSet(viewsets.ReadOnlyModelViewSet):
    """The routing table's revisions, newest first; rollback to one."""

    queryset = Revision.objects.select_related("user")
    serializer_class = RevisionSerializer

    def get_serializer_class(self):
        return RevisionListSerializer if self.action == "list" else RevisionSerializer

    def get_permissions(self):
        """A revision's own page holds the whole table: reading it is reading the table."""
        permissions = super().get_permissions()
        if self.action == "retrieve":
            permissions.append(TablePermissions())
        return permissions

    @extend_schema(request=None, parameters=[DRY_RUN], responses=RollbackResultSerializer)
    @action(detail=True, methods=["post"], permission_classes=[RollbackPermission])
    def rollback(self, request, pk=None):
        """Make the table this revision's again, as a new revision ("rollback to N")."""
        target = self.get_object()
        dry_run = is_dry_run(request)
        newest = Revision.objects.first()
        change = TableChange() if dry_run else None
        changes = roll_back(target, dry_run=dry_run, around_writes=change)
        made = Revision.objects.first()
        revision = RevisionSerializer(made).data if made and made != newest else None
        answer = {"dry_run": dry_run, "changes": changes, "revision": revision}
        if dry_run:
            answer["impact"] = impact_data(moves(change.before, change.after))
        return Response(answer)


class RoutesView(APIView):
    """The whole routing table as a routes file: GET exports it, PUT imports one."""

    permission_classes = [TablePermissions]
    renderer_classes = [YAMLRenderer, JSONRenderer]

    @extend_schema(
        responses={
            (200, "application/yaml"): OpenApiTypes.OBJECT,
            (200, "application/json"): OpenApiTypes.OBJECT,
        },
        summary="The whole table as a routes file (YAML; JSON with Accept: application/json).",
    )
    def get(self, request):
        return Response(export_routes())

    @extend_schema(
        request={"application/yaml": OpenApiTypes.STR, "application/json": OpenApiTypes.OBJECT},
        parameters=[DRY_RUN],
        responses=ImportResultSerializer,
        summary="Make the table equal to a routes file, in one change; 400 names each error.",
    )
    def put(self, request):
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise serializers.ValidationError({"errors": ["the file is not UTF-8"]}) from None
        dry_run = is_dry_run(request)
        document = read_routes_file(text)
        if not dry_run:
            return Response({"dry_run": False, "changes": import_routes(document)})
        changes, moves = preview_import(document)
        return Response({"dry_run": True, "changes": changes, "impact": impact_data(moves)})


class ExplainView(APIView):
    """The route explainer: which rule serves a URL, and why every other rule lost."""

    permission_classes = [TablePermissions]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]

    @extend_schema(parameters=[ExplainQuerySerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        query = ExplainQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        explanation = explain(
            get_route_table(), query.validated_data["url"], query.validated_data.get("client")
        )
        return Response(explanation_data(explanation))


def explanation_data(explanation):
    """Return an Explanation as the API answers it: plain values, rules by their text."""
    data = {
        "url": explanation.url,
        "host": explanation.host,
        "path": explanation.path,
        "status": explanation.status,
        "client": explanation.client,
        "rule": None,
        "pool": None,
        "candidates": [
            {
                "rule": str(candidate.rule),
                "kind": "path" if isinstance(candidate.rule, PathRule) else "host",
                "id": candidate.rule.pk,
                "matches": candidate.matches,
                "wins": candidate.wins,
                "verdict": candidate.verdict,
            }
            for candidate in explanation.candidates
        ],
    }
    match = explanation.match
    if match is None:
        return data
    pool = explanation.pool
    data.update(
        rule={"kind": match.route.kind, "id": match.route.rule_id, "label": match.route.label},
        answer=explanation.answer,
        location=explanation.location or None,
        guards=list(explanation.guards),
        upstream_path=explanation.upstream_path,
        upstream_query=explanation.upstream_query,
        request_headers=explanation.request_header_changes,
        response_headers=explanation.response_header_changes,
        firewall=explanation.firewall,
    )
    if pool is None:  # the rule answers by itself: a redirect or a fixed response
        return data
    data.update(
        pool={
            "name": pool.name,
            "algorithm": pool.algorithm,
            "backends": [
                {
                    "url": backend.url,
                    "weight": backend.weight,
                    "enabled": backend.enabled,
                    "healthy": backend.healthy,
                    "draining": backend.draining,
                    "usable": backend in pool.usable_backends,
                }
                for backend in pool.backends
            ],
        },
    )
    return data
