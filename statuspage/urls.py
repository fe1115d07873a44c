import sys

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path, re_path
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from incidents import database
from incidents.api import ROOT_DETAIL as api_root_detail
from incidents.api import urls as api_urls
from statuspage import signin, subscriptions
from statuspage.middleware import database_unavailable

# The admin's sign-in says until when it is paused after too many failures, as /login/ does.
admin.site.login_form = signin.AdminSignInForm


@csrf_exempt
def api_not_found(request: HttpRequest) -> HttpResponse:
    """A JSON 404 for an /api URL no API serves; /api/v1 (as /api/v1/) says where its endpoints are listed."""
    if request.path == "/api/v1":
        detail = api_root_detail
    else:
        detail = (
            "No such API endpoint. The staff API's endpoints are listed in /api/v1/openapi.json; the public "
            "status API (Statuspage's v2) answers /api/v2/summary.json, status.json, components.json, "
            "incidents.json and scheduled-maintenances.json."
        )
    return JsonResponse({"detail": detail, "code": "not_found"}, status=404)


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
    # Whatever else is under /api (/api/v1 itself, an unknown /api/v2/… path) answers JSON, not the HTML page.
    re_path(r"^api(?:/.*)?$", api_not_found, name="api_not_found"),
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
