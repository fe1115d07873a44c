from django.urls import path

from incidents import maintenance_views, postmortem_views, report_views, views

app_name = "incidents"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("incidents/new", views.declare, name="declare"),
    path("incidents/<int:incident_id>", views.incident_detail, name="detail"),
    path("incidents/<int:incident_id>/acknowledge", views.acknowledge, name="acknowledge"),
    path("incidents/<int:incident_id>/update", views.post_update, name="update"),
    path("incidents/<int:incident_id>/severity", views.change_severity, name="severity"),
    path("incidents/<int:incident_id>/scope", views.update_scope, name="scope"),
    path("incidents/<int:incident_id>/commander", views.assign_commander, name="commander"),
    path("incidents/<int:incident_id>/resolve", views.resolve, name="resolve"),
    path("incidents/<int:incident_id>/reopen", views.reopen, name="reopen"),
    path("incidents/<int:incident_id>/stop-paging", views.stop_paging, name="stop_paging"),
    path("ack/<str:token>/", views.ack_link, name="ack_link"),
    path("incidents/<int:incident_id>/postmortem/", postmortem_views.postmortem_page, name="postmortem"),
    path("incidents/<int:incident_id>/postmortem/start", postmortem_views.start, name="postmortem_start"),
    path(
        "incidents/<int:incident_id>/postmortem/sections/<slug:key>",
        postmortem_views.save_section,
        name="postmortem_section",
    ),
    path("incidents/<int:incident_id>/postmortem/details", postmortem_views.save_details, name="postmortem_details"),
    path("incidents/<int:incident_id>/postmortem/entries", postmortem_views.add_entry, name="postmortem_entry"),
    path(
        "incidents/<int:incident_id>/postmortem/entries/<int:entry_id>",
        postmortem_views.toggle_entry,
        name="postmortem_entry_toggle",
    ),
    path(
        "incidents/<int:incident_id>/postmortem/refresh", postmortem_views.refresh_timeline, name="postmortem_refresh"
    ),
    path("incidents/<int:incident_id>/postmortem/items", postmortem_views.add_item, name="postmortem_item"),
    path(
        "incidents/<int:incident_id>/postmortem/items/<int:item_id>",
        postmortem_views.item_status,
        name="postmortem_item_status",
    ),
    path("incidents/<int:incident_id>/postmortem/submit", postmortem_views.submit, name="postmortem_submit"),
    path("incidents/<int:incident_id>/postmortem/return", postmortem_views.return_to_draft, name="postmortem_return"),
    path("incidents/<int:incident_id>/postmortem/publish", postmortem_views.publish, name="postmortem_publish"),
    path("reports/", report_views.report, name="reports"),
    path("reports/export.csv", report_views.export_csv, name="reports_csv"),
    path("reports/export.json", report_views.export_json, name="reports_json"),
    path("maintenance/", maintenance_views.maintenance_list, name="maintenance_list"),
    path("maintenance/panel", maintenance_views.maintenance_panel, name="maintenance_panel"),
    path("maintenance/new", maintenance_views.schedule, name="maintenance_schedule"),
    path("maintenance/<int:maintenance_id>", maintenance_views.maintenance_detail, name="maintenance"),
    path("maintenance/<int:maintenance_id>/start", maintenance_views.start, name="maintenance_start"),
    path("maintenance/<int:maintenance_id>/complete", maintenance_views.complete, name="maintenance_complete"),
    path("maintenance/<int:maintenance_id>/update", maintenance_views.post_update, name="maintenance_update"),
    path("maintenance/<int:maintenance_id>/reschedule", maintenance_views.reschedule, name="maintenance_reschedule"),
    path("maintenance/<int:maintenance_id>/cancel", maintenance_views.cancel, name="maintenance_cancel"),
]
