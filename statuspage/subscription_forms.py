"""Forms for the public subscription pages: they validate and present, and never save anything.

The views hand the cleaned data to incidents.actions (subscribe, update_subscription); an
ActionRefused lands next to the field it names, as on the staff side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.forms.boundfield import BoundWidget

from incidents.actions import ActionRefused
from incidents.addresses import signup_problem
from incidents.models import Component, Impact, Subscriber

SCOPE_CHOICES = [
    ("all", "All components, including ones added later"),
    ("some", "Only the components I choose"),
]
KIND_CHOICES = [
    ("incidents", "Incidents"),
    ("maintenance", "Scheduled maintenance"),
    ("postmortems", "Post-mortems"),
]
KINDS = [value for value, _ in KIND_CHOICES]
# The page explains each in words (public/subscribe_choices.html). An incident's impact follows the
# worst status it gives a component: degraded is minor, a partial outage major, a major outage critical.
IMPACT_CHOICES = [
    (Impact.NONE.value, "Every incident"),
    (Impact.MINOR.value, "Minor impact or worse"),
    (Impact.MAJOR.value, "Major impact or worse"),
    (Impact.CRITICAL.value, "Critical impact only"),
]


@dataclass(frozen=True)
class ListedComponent:
    """A component as the published snapshot lists it: what the sign-up page's checkboxes need, so the
    page renders with the database down (statuspage/subscriptions.py)."""

    pk: int
    name: str
    is_group: bool
    group_id: int | None
    group: ListedComponent | None

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> list[ListedComponent]:
        """Components outside a group first, then each group's, in the status page's order."""
        rows = document.get("components", [])
        groups = {row["id"]: cls(int(row["id"]), row["name"], True, None, None) for row in rows if row.get("group")}
        listed = [
            cls(int(row["id"]), row["name"], False, int(row["group_id"]) if row.get("group_id") else None,
                groups.get(row.get("group_id") or ""))
            for row in rows
            if not row.get("group")
        ]  # fmt: skip
        loose = [c for c in listed if c.group_id is None]
        grouped = [child for group in groups.values() for child in listed if child.group is group]
        return loose + grouped


ComponentLike = Component | ListedComponent


class ComponentChoiceField(forms.ModelMultipleChoiceField):
    """Checkboxes labelled with the component's own name: its group's name heads the checkboxes."""

    def label_from_instance(self, obj: Any) -> str:
        return str(obj.name)


@dataclass
class ComponentSection:
    """Checkboxes shown together under their group's name (None for components outside a group)."""

    title: str | None
    choices: list[BoundWidget] = field(default_factory=list)


class PreferencesForm(forms.Form):
    """What a subscriber wants to hear about: components, kinds of update, minimum impact."""

    scope = forms.ChoiceField(choices=SCOPE_CHOICES, initial="all", widget=forms.RadioSelect, label="Which components?")
    components = ComponentChoiceField(
        queryset=Component.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Components",
        error_messages={"invalid_choice": "That component is no longer listed; choose from the ones shown."},
    )
    kinds = forms.MultipleChoiceField(
        choices=KIND_CHOICES,
        initial=KINDS,
        required=False,  # an empty choice gets the action's own words (clean_kinds)
        widget=forms.CheckboxSelectMultiple,
        label="What to email you about",
    )
    minimum_impact = forms.ChoiceField(
        choices=IMPACT_CHOICES,
        initial=Impact.NONE.value,
        widget=forms.RadioSelect,
        label="Which incidents?",
        help_text="Maintenance and post-mortems are sent whatever you choose here.",
    )

    def __init__(self, *args: Any, components: Iterable[ComponentLike], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.component_list = [c for c in components if not c.is_group]
        field = self.fields["components"]
        assert isinstance(field, forms.ModelMultipleChoiceField)
        field.queryset = Component.objects.filter(pk__in=[c.pk for c in self.component_list])
        if any(isinstance(c, ListedComponent) for c in self.component_list):
            # Shown from the snapshot, without a query; a submitted form is checked against the database.
            field.choices = [(c.pk, c.name) for c in self.component_list]

    def clean_kinds(self) -> list[str]:
        kinds: list[str] = self.cleaned_data.get("kinds") or []
        if not kinds:
            raise forms.ValidationError("Choose at least one kind of update.")
        return kinds

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("scope") == "some" and not cleaned.get("components") and "components" not in self.errors:
            self.add_error("components", "Choose at least one component, or all of them.")
        return cleaned

    def attach_refusal(self, refused: ActionRefused) -> bool:
        """Show an action's refusal next to its field; False when it names no field of this form."""
        if refused.field is None or refused.field not in self.fields:
            return False
        self.add_error(refused.field, refused.message)
        return True

    def choices(self) -> dict[str, Any]:
        """The cleaned choices, as the actions take them."""
        data = self.cleaned_data
        all_components = data["scope"] == "all"
        return {
            "all_components": all_components,
            "components": [] if all_components else list(data["components"]),
            "notify_incidents": "incidents" in data["kinds"],
            "notify_maintenance": "maintenance" in data["kinds"],
            "notify_postmortems": "postmortems" in data["kinds"],
            "minimum_impact": data["minimum_impact"],
        }

    @property
    def component_sections(self) -> list[ComponentSection]:
        """The component checkboxes under their groups' names, components outside a group first."""
        by_value = {str(choice.data["value"]): choice for choice in self["components"]}
        sections: list[ComponentSection] = []
        by_title: dict[str | None, ComponentSection] = {}
        for component in self.component_list:
            choice = by_value.get(str(component.pk))
            if choice is None:
                continue
            title = component.group.name if component.group_id is not None and component.group else None
            if title not in by_title:
                by_title[title] = ComponentSection(title)
                sections.append(by_title[title])
            by_title[title].choices.append(choice)
        return sorted(sections, key=lambda section: section.title is not None)

    @classmethod
    def initial_for(cls, subscriber: Subscriber) -> dict[str, Any]:
        kinds = [
            kind
            for kind, wanted in (
                ("incidents", subscriber.notify_incidents),
                ("maintenance", subscriber.notify_maintenance),
                ("postmortems", subscriber.notify_postmortems),
            )
            if wanted
        ]
        return {
            "scope": "all" if subscriber.all_components else "some",
            "components": [c.pk for c in subscriber.components.all()],
            "kinds": kinds,
            "minimum_impact": subscriber.minimum_impact,
        }


class SubscribeForm(PreferencesForm):
    """Sign-up: an address, the choices, and a trap field that people leave empty and simple bots fill."""

    email = forms.EmailField(
        max_length=254,
        label="Email address",
        widget=forms.EmailInput(attrs={"autocomplete": "email", "placeholder": "you@example.com"}),
        error_messages={
            "required": "Enter your email address.",
            "invalid": "Enter a valid email address, like name@example.com.",
        },
    )
    # Hidden by CSS (not type=hidden, which bots skip); people, and screen readers, are told to leave it.
    website = forms.CharField(
        required=False,
        label="Leave this empty",
        widget=forms.TextInput(attrs={"autocomplete": "off", "tabindex": "-1"}),
    )

    field_order = ["email", "scope", "components", "kinds", "minimum_impact", "website"]

    def clean_email(self) -> str:
        """Stricter than the RFC's grammar: only addresses our mail can reach (incidents/addresses.py)."""
        email: str = self.cleaned_data["email"]
        problem = signup_problem(email)
        if problem is not None:
            raise forms.ValidationError(problem, code="invalid")
        return email

    @property
    def is_trapped(self) -> bool:
        return bool(self.data.get("website", "").strip())
