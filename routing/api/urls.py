"""The API's URLs: one router line per resource, under /api/ on the admin listener."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter()
router.register("pools", views.PoolViewSet)
router.register("backends", views.BackendViewSet)
router.register("host-rules", views.HostRuleViewSet)
router.register("path-rules", views.PathRuleViewSet)
router.register("access-lists", views.AccessListViewSet)
router.register("revisions", views.RevisionViewSet)

urlpatterns = [
    path("routes", views.RoutesView.as_view(), name="api-routes"),
    path("explain/", views.ExplainView.as_view(), name="api-explain"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    *router.urls,
]
