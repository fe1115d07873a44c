"""Django admin for configuration (severities, components, templates, tokens).

Incidents are run from /manage/, where every change goes through incidents.actions; the admin shows
them read-only so a change here can never skip the timeline or the clocks.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from incidents import actions
from incidents.models import (
    ApiToken,
    Benchmark,
    Component,
    Incident,
    IncidentTemplate,
    Severity,
    Subscriber,
    TimelineEvent,
)


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


@admin.register(Subscriber)
class SubscriberAdmin(admin.ModelAdmin):
    """Email subscribers and webhooks: find them, see their state, unsubscribe them (through the action)."""

    list_display = ["__str__", "kind", "confirmed_at", "unsubscribed_at", "created_at"]
    list_filter = ["kind", ("unsubscribed_at", admin.EmptyFieldListFilter)]
    search_fields = ["email", "webhook_url"]
    exclude = ["secret", "webhook_secret"]
    actions = ["unsubscribe"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # people subscribe at /subscribe; webhooks come from manage.py add_webhook

    # Choices change on the subscriber's own manage page; here only the Unsubscribe action writes.
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Unsubscribe (stops pending deliveries; webhooks too)", permissions=["view"])
    def unsubscribe(self, request: HttpRequest, queryset: QuerySet[Subscriber]) -> None:
        for subscriber in queryset.filter(unsubscribed_at__isnull=True):
            actions.unsubscribe(subscriber)
        self.message_user(request, "Unsubscribed.")


@admin.register(Benchmark)
class BenchmarkAdmin(admin.ModelAdmin):
    list_display = ["label", "metric", "statistic", "value_seconds", "upper_seconds", "verified"]
