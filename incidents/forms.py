"""Staff UI forms: they validate and present input; the views hand the cleaned data to incidents.actions.

Forms never save anything. An ActionRefused from an action lands next to the field it names (see
`attach_refusal`), so the action's own checks and the form's checks show up the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.auth import get_user_model

from incidents.actions import ActionRefused
from incidents.models import (
    MAX_MESSAGE_LENGTH,
    MAX_REASON_LENGTH,
    MAX_REGION_LENGTH,
    MAX_REGIONS,
    MAX_WORKAROUND_LENGTH,
    Component,
    ComponentStatus,
    Impact,
    Incident,
    PublicStatus,
    Severity,
)
from incidents.text import is_blank

COMPONENT_FIELD_PREFIX = "component-"
VISIBILITY_CHOICES = [
    ("public", "Public: on the status page and sent to subscribers"),
    ("internal", "Internal: staff only"),
]
# Room for every region the actions accept, with ", " between; the actions refuse more.
REGIONS_INPUT_LENGTH = MAX_REGIONS * (MAX_REGION_LENGTH + 2)
OPEN_PUBLIC_STATUSES = [(value, label) for value, label in PublicStatus.choices if value != PublicStatus.RESOLVED]


class OptionalTextField(forms.CharField):
    """Optional text: empty means none, but text of only spaces or blank lines is an error next to the field
    rather than quietly read as none (as the API answers it: a 422 naming the field)."""

    default_error_messages = {"blank": "This is only spaces: write something, or leave it empty."}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(strip=False, **kwargs)

    def clean(self, value: Any) -> str:
        text: str = super().clean(value)
        if text and is_blank(text):  # invisible characters (a zero-width space) count as spaces
            raise forms.ValidationError(self.error_messages["blank"], code="blank")
        return text.strip()


class RegionsField(forms.CharField):
    """Comma-separated regions. An empty one ("EU, , US", a comma at either end, or only spaces) is an error
    next to the field, as the API refuses a blank region, rather than quietly dropped."""

    default_error_messages = {
        "blank": "A region is empty (only spaces, or nothing between two commas): write it, or remove the comma."
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", REGIONS_INPUT_LENGTH)
        kwargs.setdefault("label", "Regions or segments")
        super().__init__(strip=False, **kwargs)

    def clean(self, value: Any) -> str:
        text: str = super().clean(value)
        if text and any(is_blank(region) for region in text.split(",")):
            raise forms.ValidationError(self.error_messages["blank"], code="blank")
        return text.strip()


def _plain_number(value: Decimal | None) -> str | None:
    """12.50 → '12.5', 100.00 → '100' (normalize alone would give '1E+2')."""
    return None if value is None else f"{value.normalize():f}"


class SeverityChoiceField(forms.ModelChoiceField):
    """'SEV2: Major: a significant feature is impaired…', or with short=True 'SEV2 · Major'."""

    def __init__(self, *args: Any, short: bool = False, **kwargs: Any) -> None:
        self.short = short
        super().__init__(*args, **kwargs)

    def label_from_instance(self, obj: Any) -> str:
        if not obj.description:
            return str(obj.name)
        if self.short:
            return f"{obj.name} · {obj.description.split(':')[0]}"
        return f"{obj.name} · {obj.description}"


@dataclass
class ComponentSection:
    """Components shown together under their group's name (None for top-level components)."""

    title: str | None
    fields: list[tuple[Component, forms.BoundField]] = field(default_factory=list)


class StaffForm(forms.Form):
    # ActionRefused.field names that differ from the form's field names.
    refusal_fields: dict[str, str] = {}

    def full_clean(self) -> None:
        """A required text of only invisible characters (a zero-width space survives strip()) is as empty
        as no text: the field's "required" error, as the API's 422 for the same text."""
        super().full_clean()
        if not self.is_bound:
            return
        for name, form_field in self.fields.items():
            value = self.cleaned_data.get(name)
            text_required = isinstance(form_field, forms.CharField) and form_field.required
            if text_required and isinstance(value, str) and is_blank(value):
                required = form_field.error_messages["required"]
                self.add_error(name, forms.ValidationError(required, code="required"))

    def attach_refusal(self, refused: ActionRefused) -> bool:
        """Show an action's refusal next to its field; False when it names no field of this form."""
        name = self.refusal_fields.get(refused.field or "", refused.field)
        if name is None or name not in self.fields:
            return False
        self.add_error(name, refused.message)
        return True


class ComponentStatusForm(StaffForm):
    """A status select per (non-group) component, named component-<id>; empty means no change."""

    # Never rendered as an input: it carries the errors about the component selects as a whole
    # (an unknown component id, a group), so they can be shown next to the component fieldset.
    components = forms.CharField(required=False, disabled=True, widget=forms.HiddenInput)
    no_change_label = "No change"

    def __init__(
        self,
        *args: Any,
        components: Sequence[Component],
        affected_ids: Iterable[int] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.all_components = {component.pk: component for component in components}
        self.affected_ids = set(affected_ids)
        choices = [("", self.no_change_label), *ComponentStatus.choices]
        for component in components:
            if component.is_group:
                continue
            self.fields[self.component_field_name(component)] = forms.ChoiceField(
                required=False, choices=choices, label=component.name
            )

    @staticmethod
    def component_field_name(component: Component) -> str:
        return f"{COMPONENT_FIELD_PREFIX}{component.pk}"

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for key in self.data:
            if not key.startswith(COMPONENT_FIELD_PREFIX) or key in self.fields or not self.data.get(key):
                continue  # a known component, or "no change" for one that has gone since the page loaded
            raw_id = key.removeprefix(COMPONENT_FIELD_PREFIX)
            component = self.all_components.get(int(raw_id)) if raw_id.isdigit() else None
            if component is not None and component.is_group:
                self.add_error("components", f"{component.name} is a group; set the status of its components instead.")
            else:
                self.add_error("components", f"There is no component with id {raw_id!r}.")
        return cleaned

    def component_changes(self) -> dict[Component, str]:
        changes: dict[Component, str] = {}
        for pk, component in self.all_components.items():
            status = self.cleaned_data.get(f"{COMPONENT_FIELD_PREFIX}{pk}")
            if status:
                changes[component] = status
        return changes

    def _sections(self, wanted: set[int] | None, unwanted: set[int]) -> list[ComponentSection]:
        sections: list[ComponentSection] = []
        by_title: dict[str | None, ComponentSection] = {}
        for component in self.all_components.values():
            if component.is_group or component.pk in unwanted or (wanted is not None and component.pk not in wanted):
                continue
            title = component.group.name if component.group_id is not None and component.group else None
            if title not in by_title:
                by_title[title] = ComponentSection(title)
                sections.append(by_title[title])
            by_title[title].fields.append((component, self[self.component_field_name(component)]))
        # Top-level components first, then each group in the order the components came (position).
        return sorted(sections, key=lambda section: section.title is not None)

    @property
    def component_sections(self) -> list[ComponentSection]:
        return self._sections(None, set())

    @property
    def affected_sections(self) -> list[ComponentSection]:
        return self._sections(self.affected_ids, set())

    @property
    def other_sections(self) -> list[ComponentSection]:
        return self._sections(None, self.affected_ids)


class DeclareForm(ComponentStatusForm):
    refusal_fields = {"customer_impact_percent": "customer_impact_percent"}

    title = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    severity = SeverityChoiceField(queryset=Severity.objects.none(), empty_label=None, widget=forms.RadioSelect)
    public_status = forms.ChoiceField(
        choices=OPEN_PUBLIC_STATUSES, initial=PublicStatus.INVESTIGATING, label="Public status"
    )
    message = OptionalTextField(
        max_length=MAX_MESSAGE_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4}),
        label="First message",
        help_text="Markdown. A public first message starts the update cadence and stops the first-update clock.",
    )
    message_visibility = forms.ChoiceField(
        choices=VISIBILITY_CHOICES, initial="public", widget=forms.RadioSelect, label="Message visibility"
    )
    customer_impact_percent = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_value=Decimal(100),
        max_digits=5,
        decimal_places=2,
        label="Customers affected (%)",
    )
    regions = RegionsField(help_text="Comma-separated, e.g. eu-west, us-east")

    def __init__(self, *args: Any, severities: Iterable[Severity], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        severity_field = self.fields["severity"]
        assert isinstance(severity_field, forms.ModelChoiceField)
        severity_field.queryset = severities  # type: ignore[assignment]

    @property
    def message_is_public(self) -> bool:
        return self.cleaned_data.get("message_visibility") == "public"


class UpdateForm(ComponentStatusForm):
    refusal_fields = {"status": "public_status", "body": "body"}

    public_status = forms.ChoiceField(choices=OPEN_PUBLIC_STATUSES, label="Public status")
    body = forms.CharField(
        max_length=MAX_MESSAGE_LENGTH, widget=forms.Textarea(attrs={"rows": 5}), label="Message", help_text="Markdown."
    )
    visibility = forms.ChoiceField(choices=VISIBILITY_CHOICES, initial="public", widget=forms.RadioSelect)

    def __init__(self, *args: Any, incident: Incident, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"public_status": incident.public_status, "visibility": "public"})
        kwargs.setdefault("auto_id", "update-%s")
        super().__init__(*args, **kwargs)

    @property
    def is_public(self) -> bool:
        return self.cleaned_data.get("visibility") == "public"


class SeverityForm(StaffForm):
    severity = SeverityChoiceField(queryset=Severity.objects.none(), empty_label=None, short=True, label="New severity")

    def __init__(self, *args: Any, incident: Incident, severities: Iterable[Severity], **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"severity": incident.severity_id})
        kwargs.setdefault("auto_id", "severity-%s")
        super().__init__(*args, **kwargs)
        severity_field = self.fields["severity"]
        assert isinstance(severity_field, forms.ModelChoiceField)
        severity_field.queryset = severities  # type: ignore[assignment]


class PersonChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return str(obj.get_username())


class CommanderForm(StaffForm):
    commander = PersonChoiceField(
        queryset=get_user_model().objects.none(), empty_label=None, label="Incident commander"
    )

    def __init__(self, *args: Any, incident: Incident, people: Iterable[Any], **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"commander": incident.commander_id})
        kwargs.setdefault("auto_id", "commander-%s")
        super().__init__(*args, **kwargs)
        commander_field = self.fields["commander"]
        assert isinstance(commander_field, forms.ModelChoiceField)
        commander_field.queryset = people  # type: ignore[assignment]


class ScopeForm(StaffForm):
    customer_impact_percent = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_value=Decimal(100),
        max_digits=5,
        decimal_places=2,
        label="Customers affected (%)",
    )
    regions = RegionsField(help_text="Comma-separated.")
    workaround = OptionalTextField(max_length=MAX_WORKAROUND_LENGTH, widget=forms.Textarea(attrs={"rows": 3}))
    impact_override = forms.ChoiceField(
        required=False,
        choices=[("", "Derived from component statuses"), *Impact.choices],
        label="Impact",
    )

    def __init__(self, *args: Any, incident: Incident, **kwargs: Any) -> None:
        kwargs.setdefault(
            "initial",
            {
                "customer_impact_percent": _plain_number(incident.customer_impact_percent),
                "regions": incident.regions_display,
                "workaround": incident.workaround,
                "impact_override": incident.impact_override,
            },
        )
        kwargs.setdefault("auto_id", "scope-%s")
        super().__init__(*args, **kwargs)


class ResolveForm(StaffForm):
    refusal_fields = {"body": "message"}

    message = OptionalTextField(
        max_length=MAX_MESSAGE_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Final message (optional)",
        help_text=(
            "Markdown. Posted as the resolving update. Without it, or when it is internal, customers of a "
            "public incident read “This incident has been resolved.”"
        ),
    )
    visibility = forms.ChoiceField(choices=VISIBILITY_CHOICES, initial="public", widget=forms.RadioSelect)
    restore_components = forms.BooleanField(
        required=False, initial=True, label="Set the affected components back to operational"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "resolve-%s")
        super().__init__(*args, **kwargs)

    @property
    def is_public(self) -> bool:
        return self.cleaned_data.get("visibility") == "public"


class ReopenForm(StaffForm):
    reason = forms.CharField(
        max_length=MAX_REASON_LENGTH, label="Why reopen?", help_text="For the timeline (internal)."
    )
    message = OptionalTextField(
        max_length=MAX_MESSAGE_LENGTH,
        label="Tell customers (optional)",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=(
            "Posted as a public update at once. Without it, customers of a public incident read "
            "“We are investigating this issue again.”"
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "reopen-%s")
        super().__init__(*args, **kwargs)


class StopPagingForm(StaffForm):
    reason = forms.CharField(
        max_length=MAX_REASON_LENGTH,
        label="Why stop paging?",
        help_text="For the timeline. The acknowledge clock keeps running.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "paging-%s")
        super().__init__(*args, **kwargs)
