"""The routes PublicFastPathMiddleware serves ahead of the middleware stack: the whole public side."""

from django.urls import include, path

urlpatterns = [
    path("", include("statuspage.urls_public")),
    path("", include("statuspage.urls_api_v2")),
]
