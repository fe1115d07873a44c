"""Staff UI forms for maintenance windows. They validate and present; incidents.actions makes the changes.

Times are typed into datetime-local inputs, which carry no zone: the forms read them as wall-clock
times in settings.DISPLAY_TIME_ZONE (the zone every staff page shows times in) and say so next to the
field. A time that does not exist there, or exists twice (a daylight-saving change), is refused
rather than guessed.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.forms.boundfield import BoundWidget

from incidents.api.fields import EARLIEST, LATEST
from incidents.forms import OptionalTextField, StaffForm
from incidents.models import MAX_MESSAGE_LENGTH, MAX_REASON_LENGTH, Component, Maintenance, MaintenanceStatus

LOCAL_INPUT_FORMAT = "%Y-%m-%dT%H:%M"
# What browsers send from <input type="datetime-local">: seconds only when the value had them.
LOCAL_INPUT_FORMATS = [LOCAL_INPUT_FORMAT, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]
UPDATE_STATUSES = [(value, label) for value, label in MaintenanceStatus.choices if value != MaintenanceStatus.SCHEDULED]


def display_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.DISPLAY_TIME_ZONE)


def in_display_zone(naive: datetime) -> datetime:
    """A wall-clock time in the display zone as an aware datetime; refuses gaps and overlaps (DST)."""
    zone = display_zone()
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    when = f"{naive:%d %b %Y %H:%M}"
    if first.utcoffset() != second.utcoffset():
        # fold only matters for times that are skipped or repeated when the clocks change.
        round_trip = first.astimezone(zoneinfo.ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None)
        if round_trip != naive:
            message = f"{when} does not exist in {zone.key}: the clocks skip it. Choose another time."
        else:
            message = f"{when} happens twice in {zone.key}: the clocks go back. Choose a time an hour apart."
        raise ValidationError(message, code="ambiguous_time")
    return first


class DisplayZoneDateTimeField(forms.DateTimeField):
    """A datetime-local input read and shown in settings.DISPLAY_TIME_ZONE (not Django's current zone)."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format=LOCAL_INPUT_FORMAT)
    input_formats = LOCAL_INPUT_FORMATS

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.help_text:
            self.help_text = f"In {settings.DISPLAY_TIME_ZONE} (the time zone every time here is shown in)."

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(display_zone()).replace(tzinfo=None)
        return value

    def to_python(self, value: Any) -> datetime | None:
        if value in self.empty_values:
            return None
        if isinstance(value, datetime):
            return value if value.tzinfo is not None else in_display_zone(value)
        text = str(value).strip()
        for fmt in self.input_formats:
            try:
                parsed = datetime.strptime(text, fmt)  # noqa: DTZ007 - a wall-clock time, placed in the zone below
            except ValueError:
                continue
            moment = in_display_zone(parsed)
            if not EARLIEST <= moment < LATEST:  # the staff API's range (incidents/api/fields.py)
                raise ValidationError("Choose a time from the year 2000 to 2099.", code="out_of_range")
            return moment
        raise ValidationError("Enter a date and time, e.g. 2026-03-14T22:00.", code="invalid")


def _window_fields(form: forms.Form, start_label: str, end_label: str) -> None:
    zone = settings.DISPLAY_TIME_ZONE
    form.fields["scheduled_for"] = DisplayZoneDateTimeField(label=start_label, help_text=f"In {zone}.")
    form.fields["scheduled_until"] = DisplayZoneDateTimeField(label=end_label, help_text=f"In {zone}.")


@dataclass
class CheckboxSection:
    """Component checkboxes shown together under their group's name (None for top-level components)."""

    title: str | None
    boxes: list[tuple[Component, BoundWidget]] = field(default_factory=list)


class ScheduleForm(StaffForm):
    title = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    components = forms.TypedMultipleChoiceField(
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Affected components",
        help_text="They show “Under maintenance” while the window is in progress, and get back their status after.",
    )
    message = OptionalTextField(
        max_length=MAX_MESSAGE_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Markdown, shown on the status page. Leave empty to announce just the window.",
    )
    auto_start = forms.BooleanField(required=False, initial=True, label="Start automatically at the start time")
    auto_complete = forms.BooleanField(required=False, initial=True, label="Complete automatically at the end time")

    field_order = ["title", "scheduled_for", "scheduled_until", "components", "message", "auto_start"]

    def __init__(self, *args: Any, components: Sequence[Component], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _window_fields(self, "Starts", "Ends")
        self.order_fields(self.field_order)
        self.all_components = {component.pk: component for component in components}
        choices_field = self.fields["components"]
        assert isinstance(choices_field, forms.TypedMultipleChoiceField)
        # Groups are valid choices so that picking one is explained, not dismissed as unknown.
        choices_field.choices = [(component.pk, component.display_name) for component in components]

    def clean_components(self) -> list[Component]:
        chosen = [self.all_components[pk] for pk in self.cleaned_data.get("components", [])]
        groups = [component.name for component in chosen if component.is_group]
        if len(groups) == 1:
            raise ValidationError(f"{groups[0]} is a group; choose its components instead.")
        if groups:
            raise ValidationError(f"{', '.join(groups)} are groups; choose their components instead.")
        return chosen

    @property
    def component_sections(self) -> list[CheckboxSection]:
        boxes = {int(box.data["value"]): box for box in self["components"]}
        sections: list[CheckboxSection] = []
        by_title: dict[str | None, CheckboxSection] = {}
        for component in self.all_components.values():
            if component.is_group:
                continue
            title = component.group.name if component.group_id is not None and component.group else None
            if title not in by_title:
                by_title[title] = CheckboxSection(title)
                sections.append(by_title[title])
            by_title[title].boxes.append((component, boxes[component.pk]))
        return sorted(sections, key=lambda section: section.title is not None)


class MaintenanceUpdateForm(StaffForm):
    status = forms.ChoiceField(choices=UPDATE_STATUSES)
    body = forms.CharField(
        max_length=MAX_MESSAGE_LENGTH, widget=forms.Textarea(attrs={"rows": 4}), label="Message", help_text="Markdown."
    )

    def __init__(self, *args: Any, maintenance: Maintenance, **kwargs: Any) -> None:
        # The natural next step: a scheduled window starts, an ongoing one keeps its status.
        current = maintenance.status
        initial = MaintenanceStatus.IN_PROGRESS if current == MaintenanceStatus.SCHEDULED else current
        kwargs.setdefault("initial", {"status": initial})
        kwargs.setdefault("auto_id", "update-%s")
        super().__init__(*args, **kwargs)
        status_field = self.fields["status"]
        assert isinstance(status_field, forms.ChoiceField)
        status_field.help_text = "In progress starts the window; Completed completes it."


class RescheduleForm(StaffForm):
    message = OptionalTextField(
        max_length=MAX_MESSAGE_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Note (optional)",
        help_text="Markdown. Default: the new window.",
    )

    def __init__(self, *args: Any, maintenance: Maintenance, **kwargs: Any) -> None:
        kwargs.setdefault(
            "initial", {"scheduled_for": maintenance.scheduled_for, "scheduled_until": maintenance.scheduled_until}
        )
        kwargs.setdefault("auto_id", "reschedule-%s")
        super().__init__(*args, **kwargs)
        _window_fields(self, "Starts", "Ends")
        self.order_fields(["scheduled_for", "scheduled_until", "message"])
        if maintenance.status != MaintenanceStatus.SCHEDULED:
            # Still posted (so the action, not the form, decides), but shown as fixed.
            self.fields["scheduled_for"].widget.attrs["readonly"] = True
            self.fields["scheduled_for"].help_text = "It has started; only the end can move."


class CancelForm(StaffForm):
    refusal_fields = {"reason": "reason"}

    reason = OptionalTextField(
        max_length=MAX_REASON_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Reason (optional)",
        help_text="Shown on the status page. Default: “This maintenance has been cancelled.”",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "cancel-%s")
        super().__init__(*args, **kwargs)
