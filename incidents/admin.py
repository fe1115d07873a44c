"""Django admin for configuration (severities, components, templates, tokens).

Incidents are run from /manage/, where every change goes through incidents.actions; the admin shows
them read-only so a change here can never skip the timeline or the clocks.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from incidents.models import ApiToken, Component, Incident, IncidentTemplate, Severity, TimelineEvent


@admin.register(Severity)
class SeverityAdmin(admin.ModelAdmin):
    list_display = [
        "name", "key", "rank", "acknowledge_target", "first_update_target", "update_cadence_target", "resolve_target",
        "postmortem_required", "postmortem_target",
    ]  # fmt: skip


@admin.register(Component)
class ComponentAdmin(admin.ModelAdmin):
    list_display = ["name", "group", "is_group", "position", "status", "showcase"]
    list_filter = ["is_group", "group"]
    readonly_fields = ["status"]  # status changes are recorded through the incident UI and the API


@admin.register(IncidentTemplate)
class IncidentTemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "title", "severity"]
    filter_horizontal = ["components"]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ["id", "title", "severity", "status", "public_status", "declared_at", "resolved_at"]
    list_filter = ["status", "severity"]


@admin.register(TimelineEvent)
class TimelineEventAdmin(ReadOnlyAdmin):
    list_display = ["incident", "kind", "message", "actor", "created_at"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used_at"]
    readonly_fields = ["prefix", "token_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are made with `manage.py create_api_token`, which prints the token once
