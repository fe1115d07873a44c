from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from incidents.api import api

urlpatterns = [
    path("", include("statuspage.urls_public")),
    path("", include("statuspage.urls_api_v2")),
    path("manage/", include("incidents.urls")),
    path("api/v1/", api.urls),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
