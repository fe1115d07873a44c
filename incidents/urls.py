from django.urls import path

from incidents import maintenance_views, views

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
