"""The Statuspage-compatible v2 API and the feeds, served from the snapshot."""

from django.urls import path

from statuspage import api_v2, feeds

urlpatterns = [
    path("api/v2/summary.json", api_v2.summary, name="api_v2_summary"),
    path("api/v2/status.json", api_v2.status_json, name="api_v2_status"),
    path("api/v2/components.json", api_v2.components_json, name="api_v2_components"),
    path("api/v2/incidents.json", api_v2.incidents_json, name="api_v2_incidents"),
    path("api/v2/incidents/unresolved.json", api_v2.unresolved_json, name="api_v2_incidents_unresolved"),
    path("api/v2/scheduled-maintenances.json", api_v2.maintenances_json, name="api_v2_maintenances"),
    path("api/v2/scheduled-maintenances/upcoming.json", api_v2.upcoming_json, name="api_v2_maintenances_upcoming"),
    path("api/v2/scheduled-maintenances/active.json", api_v2.active_json, name="api_v2_maintenances_active"),
    path("history.atom", feeds.history_atom, name="history_atom"),
    path("history.rss", feeds.history_rss, name="history_rss"),
    path("maintenance.ics", feeds.maintenance_ics, name="maintenance_ics"),
]
