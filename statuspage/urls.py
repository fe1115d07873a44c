from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from incidents.api import api

urlpatterns = [
    # The public status page arrives with the publishing work; until then / leads staff to the dashboard.
    path("", RedirectView.as_view(pattern_name="incidents:dashboard", permanent=False)),
    path("manage/", include("incidents.urls")),
    path("api/v1/", api.urls),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
