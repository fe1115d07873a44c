import sys

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views import defaults

from incidents import database
from incidents.api import urls as api_urls
from statuspage import signin, subscriptions
from statuspage.middleware import database_unavailable

# The admin's sign-in says until when it is paused after too many failures, as /login/ does.
admin.site.login_form = signin.AdminSignInForm

urlpatterns = [
    # Subscribing: ordinary pages (sessions, CSRF), not snapshot routes (statuspage/subscriptions.py).
    path("subscribe", subscriptions.subscribe, name="subscribe"),
    path("subscribe/confirm/<str:token>", subscriptions.confirm, name="subscribe_confirm"),
    path("subscribe/manage/<str:token>", subscriptions.manage, name="subscribe_manage"),
    path("subscribe/unsubscribe/<str:token>", subscriptions.unsubscribe, name="subscribe_unsubscribe"),
    path("", include("statuspage.urls_public")),
    path("", include("statuspage.urls_api_v2")),
    path("manage/", include("incidents.urls")),
    path("api/v1/", api_urls()),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(authentication_form=signin.SignInForm), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]


def server_error(request: HttpRequest) -> HttpResponse:
    """A failure outside the API's own handlers (in a middleware, say) still answers an API client in JSON;
    a database that is down or not answering gets the 503 that says so (statuspage/middleware.py)."""
    error = sys.exc_info()[1]
    if error is not None and database.is_unavailable(error):
        return database_unavailable(request)
    if request.path.startswith("/api/"):
        detail = "Something went wrong on our side. It has been logged; try again later."
        return JsonResponse({"detail": detail, "code": "server_error"}, status=500)
    return defaults.server_error(request)


handler500 = server_error
