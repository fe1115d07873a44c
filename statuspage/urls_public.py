"""Public pages (statuspage/views.py), served from the snapshot."""

from django.urls import path, re_path

from statuspage import views

urlpatterns = [
    path("", views.status, name="status"),
    path("history", views.history, name="history"),
    path("history/<int:page>", views.history, name="history_page"),
    path("incidents/<str:incident_id>", views.incident, name="incident"),
    path("maintenance/<str:maintenance_id>", views.maintenance, name="maintenance"),
    path("uptime", views.uptime, name="uptime"),
    # A trailing slash typed or linked by habit finds the page.
    re_path(
        r"^(?P<path>history|history/\d+|uptime|incidents/[^/]+|maintenance/[^/]+)/$",
        views.without_trailing_slash,
        name="without_trailing_slash",
    ),
]
