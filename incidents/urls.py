from django.urls import path

from incidents import views

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
]
