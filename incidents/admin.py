"""Django admin for configuration (severities, components, templates, tokens).

Incidents are run from /manage/, where every change goes through incidents.actions; the admin shows
them read-only so a change here can never skip the timeline or the clocks.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from incidents import actions, escalation, publishing
from incidents.addresses import sending_problem
from incidents.models import (
    MAX_COMPONENT_DESCRIPTION_LENGTH,
    ApiToken,
    Benchmark,
    Component,
    Delivery,
    EscalationStep,
    Incident,
    IncidentTemplate,
    Severity,
    StaffNotice,
    Subscriber,
    TimelineEvent,
)
from incidents.text import is_blank


class EscalationStepForm(forms.ModelForm):
    class Meta:
        model = EscalationStep
        fields = ["position", "after_minutes", "users", "addresses"]
        widgets = {"addresses": forms.Textarea(attrs={"rows": 2, "cols": 30})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Pages go to people who can sign in and acknowledge: active staff.
        people = self.fields["users"]
        assert isinstance(people, forms.ModelMultipleChoiceField)
        people.queryset = get_user_model().objects.filter(is_active=True, is_staff=True).order_by("username")

    def clean_users(self) -> Any:
        users = self.cleaned_data["users"]
        unreachable = sorted(user.get_username() for user in users if not (user.email or "").strip())
        if unreachable:
            names = ", ".join(unreachable)
            has = "has" if len(unreachable) == 1 else "have"
            raise ValidationError(
                f"{names} {has} no email address, so a page cannot reach them. "
                "Add one on the user's page, or choose someone else."
            )
        return users

    def clean_addresses(self) -> str:
        addresses = self.cleaned_data["addresses"]
        for address in EscalationStep(addresses=addresses).address_list():
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(f"{address!r} is not an email address.") from None
            # One the sender could not send to would fail every page of the step (staff may page a
            # local relay, so @localhost stays allowed here, unlike at sign-up).
            problem = sending_problem(address)
            if problem is not None:
                raise ValidationError(f"We cannot send email to this address: {problem}.")
        return str(addresses)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "addresses" in self.errors or "users" in self.errors or cleaned.get("DELETE"):
            return cleaned  # the error on the addresses or the people says what is wrong
        if not cleaned.get("users") and not cleaned.get("addresses", "").strip():
            raise ValidationError("Page someone: choose staff, or give an address.")
        return cleaned


class EscalationStepFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        steps = [
            form.cleaned_data
            for form in self.forms
            if form.is_valid() and form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        steps.sort(key=lambda step: step["position"])
        for earlier, later in pairwise(steps):
            if later["after_minutes"] < earlier["after_minutes"]:
                raise ValidationError(
                    f"Step {later['position']} (after {later['after_minutes']} min) would fire before step "
                    f"{earlier['position']} (after {earlier['after_minutes']} min): minutes count from the "
                    "declaration, so give later steps more of them."
                )


class EscalationStepInline(admin.TabularInline):
    model = EscalationStep
    form = EscalationStepForm
    formset = EscalationStepFormSet
    extra = 0
    ordering = ["position"]


@admin.register(Severity)
class SeverityAdmin(admin.ModelAdmin):
    list_display = [
        "name", "key", "rank", "acknowledge_target", "first_update_target", "update_cadence_target", "resolve_target",
        "postmortem_required", "postmortem_target", "escalation_repeats",
    ]  # fmt: skip
    inlines = [EscalationStepInline]
    fieldsets = [
        (None, {"fields": ["key", "name", "description", "rank"]}),
        (
            "Response targets (seconds; empty means none)",
            {"fields": ["acknowledge_target", "first_update_target", "update_cadence_target", "resolve_target"]},
        ),
        ("Post-mortem", {"fields": ["postmortem_required", "postmortem_target"]}),
        (
            "Escalation",
            {
                "fields": ["escalation_repeats", "escalation_repeat_minutes"],
                "description": "Steps below page people while an incident of this severity is unacknowledged. "
                "They are copied onto each incident when it is declared: changes apply to new incidents.",
            },
        ),
    ]


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class StaffUserAdmin(UserAdmin):
    """Django's user admin, warning when a saved user is an escalation target that pages cannot reach
    (the step admin refuses such a target, but an address removed here later would go unnoticed until
    an incident paged nobody)."""

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: str | None = None) -> HttpResponse:
        response = super().response_add(request, obj, post_url_continue)
        self._warn_if_unreachable(request, obj)
        return response

    def response_change(self, request: HttpRequest, obj: Any) -> HttpResponse:
        response = super().response_change(request, obj)
        self._warn_if_unreachable(request, obj)
        return response

    def _warn_if_unreachable(self, request: HttpRequest, user: Any) -> None:
        targets = escalation.unreachable_targets(user_id=user.pk)
        if not targets:
            return
        steps = ", ".join(target.where for target in targets)
        if targets[0].no_address:
            problem, remedy = "has no email address", "Give them an email address"
        else:
            problem, remedy = "is deactivated", "Reactivate them"
        nobody = [target.where for target in targets if target.nobody]
        consequence = f" {', '.join(nobody)} would page nobody." if nobody else ""
        self.message_user(
            request,
            f"{user.get_username()} {problem} but is paged by {steps}: those pages cannot reach them.{consequence} "
            f"{remedy}, or take them out of those escalation steps (Severities).",
            messages.WARNING,
        )


class ComponentAdminForm(forms.ModelForm):
    description = forms.CharField(
        required=False,
        max_length=MAX_COMPONENT_DESCRIPTION_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Shown under the name on the status page.",
    )

    class Meta:
        model = Component
        # Every field the admin edits, listed: the admin takes a custom form's fields as they are, so
        # listing only the one redefined above left the add form without a name.
        fields = [
            "name",
            "description",
            "group",
            "is_group",
            "position",
            "showcase",
            "only_show_if_degraded",
            "start_date",
        ]

    # The public page shows both: text of only invisible characters (a zero-width space) is no name,
    # and no description (the staff API refuses the same).
    def clean_name(self) -> str:
        name = str(self.cleaned_data.get("name") or "")
        if is_blank(name):
            raise forms.ValidationError(
                "Give the component a name: this one shows nothing (only invisible characters)."
            )
        return name

    def clean_description(self) -> str:
        description = str(self.cleaned_data.get("description") or "")
        if description and is_blank(description):
            raise forms.ValidationError(
                "A description of only invisible characters (such as a zero-width space) shows nothing: "
                "write one, or leave it empty."
            )
        return description


@admin.register(Component)
class ComponentAdmin(admin.ModelAdmin):
    """Components are public: every add, change and delete here asks for a publish when it commits, as
    the actions do, so the public page shows it within seconds rather than at the next periodic one."""

    form = ComponentAdminForm
    list_display = ["name", "group", "is_group", "position", "status", "showcase"]
    list_filter = ["is_group", "group"]
    readonly_fields = ["status"]  # status changes are recorded through the incident UI and the API

    def save_model(self, request: HttpRequest, obj: Component, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        publishing.request_publish()

    def delete_model(self, request: HttpRequest, obj: Component) -> None:
        super().delete_model(request, obj)
        publishing.request_publish()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Component]) -> None:
        super().delete_queryset(request, queryset)
        publishing.request_publish()


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


@admin.register(StaffNotice)
class StaffNoticeAdmin(ReadOnlyAdmin):
    """Pages and nudges sent to staff, for the record."""

    list_display = ["incident", "kind", "email", "status", "sent_at", "used_at"]
    list_filter = ["kind", "status"]
    search_fields = ["email"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used_at"]
    readonly_fields = ["prefix", "token_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are made with `manage.py create_api_token`, which prints the token once


@admin.register(Subscriber)
class SubscriberAdmin(admin.ModelAdmin):
    """Email subscribers and webhooks: find them, see their state, unsubscribe them (through the action).
    One unsubscribed by the sender (an address that does not exist, a webhook that answered 410 Gone)
    has "bounced at" set and says why."""

    list_display = ["__str__", "kind", "confirmed_at", "unsubscribed_at", "bounced_at", "bounce_reason", "created_at"]
    list_filter = ["kind", ("unsubscribed_at", admin.EmptyFieldListFilter), ("bounced_at", admin.EmptyFieldListFilter)]
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


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    """The outbox, for the record: what went to whom, how many tries, and why one failed or waits (a
    refusal, a redirect and where it pointed, a timeout). Filter by status to see what is failing."""

    list_display = ["id", "message", "subscriber", "transport", "status", "attempts", "next_attempt_at", "sent_at",
                    "last_error"]  # fmt: skip
    list_filter = ["status", "transport", "message__kind"]
    list_select_related = ["message", "subscriber"]
    search_fields = ["subscriber__email", "subscriber__webhook_url", "last_error"]
    exclude = ["claim"]


@admin.register(Benchmark)
class BenchmarkAdmin(admin.ModelAdmin):
    list_display = ["label", "metric", "statistic", "value_seconds", "upper_seconds", "verified"]
