"""Forms of the post-mortem page. They validate and present; incidents.actions does the writing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model

from incidents.forms import PersonChoiceField, StaffForm
from incidents.maintenance_forms import DisplayZoneDateTimeField
from incidents.models import ActionItem, ActionKind, ActionPriority, ActionStatus, PostmortemSection


class SectionForm(StaffForm):
    """One section: its Markdown and whether customers see it. Each section is saved on its own, so two
    people writing different sections never overwrite each other."""

    body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 5}), help_text="Markdown.")
    is_public = forms.BooleanField(required=False, label="Public: shown on the status page once published")

    def __init__(self, *args: Any, section: PostmortemSection, **kwargs: Any) -> None:
        kwargs.setdefault("initial", {"body": section.body, "is_public": section.is_public})
        kwargs.setdefault("auto_id", f"section-{section.key}-%s")
        super().__init__(*args, **kwargs)
        self.section = section
        self.fields["body"].label = section.get_key_display()


class DetailsForm(StaffForm):
    owner = PersonChoiceField(queryset=get_user_model().objects.none(), empty_label=None, label="Owner")
    due_at = DisplayZoneDateTimeField(label="Due", required=False)

    def __init__(self, *args: Any, people: Iterable[Any], **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "details-%s")
        super().__init__(*args, **kwargs)
        owner_field = self.fields["owner"]
        assert isinstance(owner_field, forms.ModelChoiceField)
        owner_field.queryset = people  # type: ignore[assignment]
        due_at = self.fields["due_at"]
        due_at.help_text = f"In {settings.DISPLAY_TIME_ZONE}. After now; the post-mortem clock follows it."


class EntryForm(StaffForm):
    at = DisplayZoneDateTimeField(label="When")
    text = forms.CharField(max_length=500, label="What happened")
    is_public = forms.BooleanField(required=False, label="Public")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "entry-%s")
        super().__init__(*args, **kwargs)


ENTRY_TOGGLES = {
    "star": ("is_starred", True),
    "unstar": ("is_starred", False),
    "hide": ("is_hidden", True),
    "show": ("is_hidden", False),
    "public": ("is_public", True),
    "internal": ("is_public", False),
}


class EntryToggleForm(StaffForm):
    toggle = forms.ChoiceField(choices=[(key, key) for key in ENTRY_TOGGLES])


class ActionItemForm(StaffForm):
    title = forms.CharField(max_length=200)
    kind = forms.ChoiceField(choices=ActionKind.choices, initial=ActionKind.PREVENT)
    priority = forms.ChoiceField(choices=ActionPriority.choices, initial=ActionPriority.P2)
    owner = PersonChoiceField(queryset=get_user_model().objects.none(), required=False, empty_label="Nobody yet")
    due_date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="Due date")
    link = forms.URLField(required=False, assume_scheme="https", help_text="The ticket or pull request.")

    def __init__(self, *args: Any, people: Iterable[Any], **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "item-%s")
        super().__init__(*args, **kwargs)
        owner_field = self.fields["owner"]
        assert isinstance(owner_field, forms.ModelChoiceField)
        owner_field.queryset = people  # type: ignore[assignment]


class ActionStatusForm(StaffForm):
    status = forms.ChoiceField(choices=ActionStatus.choices)

    def __init__(self, *args: Any, item: ActionItem | None = None, **kwargs: Any) -> None:
        if item is not None:
            kwargs.setdefault("initial", {"status": item.status})
            kwargs.setdefault("auto_id", f"item-{item.pk}-%s")
        super().__init__(*args, **kwargs)


class ReturnForm(StaffForm):
    reason = forms.CharField(
        max_length=500, widget=forms.Textarea(attrs={"rows": 2}), label="What should change", required=True
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "return-%s")
        super().__init__(*args, **kwargs)
