"""The staff UI for post-mortems: one page per incident, with its sections, timeline and action items.

The same shape as the incident and maintenance pages: objects from incidents.access, every change
through incidents.actions, an ActionRefused shown to the person who asked (next to its field when it
names one). Without JavaScript a form posts and the view redirects (303) back to the page with a flash
message, or re-renders the page (422) with the errors and what was typed. With htmx a section's form
swaps only that section (so text typed in another section is kept), and the other forms swap the
page's body, which every other change can affect (the state, the buttons, the timeline, the items).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from incidents import access, actions
from incidents.actions import ActionRefused
from incidents.forms import StaffForm
from incidents.models import Postmortem, SectionKey
from incidents.postmortem_forms import (
    ENTRY_TOGGLES,
    ActionItemForm,
    ActionStatusForm,
    DetailsForm,
    EntryForm,
    EntryToggleForm,
    ReturnForm,
    SectionForm,
)
from incidents.views import HtmxHttpRequest, is_fragment_request, see_other, staff_login_required

PAGE = "incidents/postmortem.html"


def _page_url(incident_id: int) -> str:
    return reverse("incidents:postmortem", args=[incident_id])


def _context(request: HtmxHttpRequest, postmortem: Postmortem, bound: dict[str, Any] | None = None) -> dict[str, Any]:
    people = access.staff_users_for(request.user)
    bound = bound or {}
    sections = [
        bound["section"]
        if "section" in bound and bound["section"].section.pk == section.pk
        else SectionForm(section=section)
        for section in postmortem.sections.all()
    ]
    items = list(postmortem.action_items.all())
    for item in items:
        item.status_form = ActionStatusForm(item=item)  # type: ignore[attr-defined]
    incident = postmortem.incident
    return {
        "postmortem": postmortem,
        "incident": incident,
        "now": timezone.now(),
        "today": timezone.now().date(),
        "section_forms": sections,
        "entries": list(postmortem.entries.all()),
        "items": items,
        "details_form": bound.get("details")
        or DetailsForm(people=people, initial={"owner": postmortem.owner_id, "due_at": postmortem.due_at}),
        "entry_form": bound.get("entry") or EntryForm(initial={"at": timezone.now().replace(second=0, microsecond=0)}),
        "item_form": bound.get("item") or ActionItemForm(people=people),
        "return_form": bound.get("return") or ReturnForm(),
        "header_error": bound.get("error", ""),
        "is_public_incident": incident.published_at is not None,
        # What a draft still needs before review, from the sections already loaded.
        "missing": [
            section.section.get_key_display().lower()
            for section in sections
            if section.section.key in REQUIRED_FOR_REVIEW and not section.section.body.strip()
        ],
        "sent_back": access.last_return_of(request.user, postmortem) if postmortem.state == "draft" else None,
    }


REQUIRED_FOR_REVIEW = (SectionKey.SUMMARY, SectionKey.ROOT_CAUSE)


def _body(request: HtmxHttpRequest, postmortem: Postmortem, *, status: int = 200, **bound: Any) -> HttpResponse:
    context = _context(request, postmortem, bound)
    if request.htmx:
        body = render_to_string(f"{PAGE}#body", context, request)
        body += render_to_string("base.html#messages", {"oob": True}, request)
        return HttpResponse(body, status=status)
    return render(request, PAGE, context, status=status)


NOTHING_CHANGED = "Nothing changed."


def _done(request: HtmxHttpRequest, incident_id: int, message: str) -> HttpResponse:
    messages.success(request, message)
    if not request.htmx:
        return see_other(_page_url(incident_id))
    return _body(request, access.get_postmortem_for_user(request.user, incident_id))


def _refused(
    request: HtmxHttpRequest, incident_id: int, refused: ActionRefused, name: str = "", form: StaffForm | None = None
) -> HttpResponse:
    """A refusal next to its field (422 with what was typed), or at the top of the page."""
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    if form is not None and name:
        if not form.attach_refusal(refused):
            form.add_error(None, refused.message)
        return _body(request, postmortem, status=422, **{name: form})
    if not request.htmx:
        messages.error(request, refused.message)
        return see_other(_page_url(incident_id))
    return _body(request, postmortem, status=422, error=refused.message)


@staff_login_required
@require_GET
@vary_on_headers("HX-Request")
def postmortem_page(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    context = _context(request, postmortem)
    if is_fragment_request(request):
        return render(request, f"{PAGE}#body", context)
    return render(request, PAGE, context)


@staff_login_required
@require_POST
def start(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    incident = access.get_incident_for_user(request.user, incident_id)
    try:
        actions.start_postmortem(incident, actor=request.user)
    except ActionRefused as refused:
        messages.error(request, refused.message)
        return see_other(reverse("incidents:detail", args=[incident.pk]))
    messages.success(request, "Post-mortem draft opened.")
    return see_other(_page_url(incident.pk))


@staff_login_required
@require_POST
def save_section(request: HtmxHttpRequest, incident_id: int, key: str) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    section = next((s for s in postmortem.sections.all() if s.key == key), None)
    if section is None:
        return HttpResponse("No such section.", status=404)
    form = SectionForm(request.POST, section=section)
    status = 422
    if form.is_valid() and (section.body, section.is_public) == (
        form.cleaned_data["body"].strip(),
        form.cleaned_data["is_public"],
    ):
        # As the incident and maintenance pages say: nothing is saved or recorded, and the form says so.
        form.add_error(None, NOTHING_CHANGED)
    elif form.is_valid():
        try:
            actions.edit_postmortem(
                postmortem,
                actor=request.user,
                sections={key: (form.cleaned_data["body"], form.cleaned_data["is_public"])},
            )
        except ActionRefused as refused:
            form.add_error("body", refused.message)
        else:
            if not request.htmx:
                messages.success(request, f"{section.get_key_display()} saved.")
                return see_other(f"{_page_url(incident_id)}#section-{key}")
            section.refresh_from_db()
            form = SectionForm(section=section)
            form.saved = True  # type: ignore[attr-defined]
            status = 200
    if not request.htmx:
        return _body(request, postmortem, status=422, section=form)
    context = {**_context(request, postmortem), "form": form}
    return HttpResponse(render_to_string(f"{PAGE}#section", context, request), status=status)


@staff_login_required
@require_POST
def save_details(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    form = DetailsForm(request.POST, people=access.staff_users_for(request.user))
    if not form.is_valid():
        return _body(request, postmortem, status=422, details=form)
    due_at = form.cleaned_data["due_at"]
    if (
        due_at is not None
        and postmortem.due_at is not None
        and due_at == postmortem.due_at.replace(second=0, microsecond=0)
    ):
        # The field shows the due date to the minute: sent back as shown, it is not a new due date (and an
        # overdue one must not stop a change of owner).
        due_at = None
    owner = form.cleaned_data["owner"]
    if owner == postmortem.owner and (due_at is None or due_at == postmortem.due_at):
        return _refused(request, incident_id, ActionRefused(NOTHING_CHANGED, code="unchanged"), "details", form)
    try:
        actions.edit_postmortem(postmortem, actor=request.user, owner=owner, due_at=due_at)
    except ActionRefused as refused:
        return _refused(request, incident_id, refused, "details", form)
    return _done(request, incident_id, "Saved.")


@staff_login_required
@require_POST
def add_entry(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    form = EntryForm(request.POST)
    if not form.is_valid():
        return _body(request, postmortem, status=422, entry=form)
    try:
        actions.add_postmortem_entry(
            postmortem,
            actor=request.user,
            at=form.cleaned_data["at"],
            text=form.cleaned_data["text"],
            is_public=form.cleaned_data["is_public"],
        )
    except ActionRefused as refused:
        return _refused(request, incident_id, refused, "entry", form)
    return _done(request, incident_id, "Added to the timeline.")


@staff_login_required
@require_POST
def toggle_entry(request: HtmxHttpRequest, incident_id: int, entry_id: int) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    entry = access.get_postmortem_entry_for_user(request.user, postmortem, entry_id)
    form = EntryToggleForm(request.POST)
    if not form.is_valid():
        return _refused(request, incident_id, ActionRefused("Choose star, hide or public."))
    name, value = ENTRY_TOGGLES[form.cleaned_data["toggle"]]
    actions.mark_postmortem_entry(entry, actor=request.user, **{name: value})
    return _done(request, incident_id, "Timeline updated.")


@staff_login_required
@require_POST
def refresh_timeline(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    added = actions.refresh_postmortem_timeline(postmortem, actor=request.user)
    return _done(request, incident_id, f"{added} new line{'s' if added != 1 else ''} from the incident.")


@staff_login_required
@require_POST
def add_item(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    form = ActionItemForm(request.POST, people=access.staff_users_for(request.user))
    if not form.is_valid():
        return _body(request, postmortem, status=422, item=form)
    data = form.cleaned_data
    try:
        actions.add_action_item(
            postmortem,
            actor=request.user,
            title=data["title"],
            kind=data["kind"],
            priority=data["priority"],
            owner=data["owner"],
            due_date=data["due_date"],
            link=data["link"],
        )
    except ActionRefused as refused:
        return _refused(request, incident_id, refused, "item", form)
    return _done(request, incident_id, "Action item added.")


@staff_login_required
@require_POST
def item_status(request: HtmxHttpRequest, incident_id: int, item_id: int) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    item = access.get_action_item_for_user(request.user, postmortem, item_id)
    form = ActionStatusForm(request.POST)
    if not form.is_valid():
        return _refused(request, incident_id, ActionRefused("Choose open, in progress, done or won't do."))
    try:
        actions.set_action_item_status(item, actor=request.user, status=form.cleaned_data["status"])
    except ActionRefused as refused:
        return _refused(request, incident_id, refused)
    return _done(request, incident_id, "Action item updated.")


@staff_login_required
@require_POST
def submit(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    try:
        actions.submit_postmortem(postmortem, actor=request.user)
    except ActionRefused as refused:
        if refused.code == "missing":
            refused = _missing_or_unsaved(postmortem, refused, request.POST.getlist("unsaved"))
        return _refused(request, incident_id, refused)
    return _done(request, incident_id, "Sent for review.")


def _missing_or_unsaved(postmortem: Postmortem, refused: ActionRefused, unsaved: list[str]) -> ActionRefused:
    """ "Write the summary" is wrong when the summary is typed in its box and not saved yet (the page keeps
    such text, and says which sections hold it): then the refusal says to save it first."""
    missing = [s for s in postmortem.sections.all() if s.key in REQUIRED_FOR_REVIEW and not s.body.strip()]
    typed = [s.get_key_display().lower() for s in missing if s.key in unsaved]
    if not typed:
        return refused
    untyped = [s.get_key_display().lower() for s in missing if s.key not in unsaved]
    todo = [f"save the {' and the '.join(typed)} (typed but not saved yet)"]
    if untyped:
        todo.append(f"write the {' and the '.join(untyped)}")
    return ActionRefused(f"Before sending it for review, {' and '.join(todo)}.", code=refused.code)


@staff_login_required
@require_POST
def return_to_draft(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    form = ReturnForm(request.POST)
    if not form.is_valid():
        return _body(request, postmortem, status=422, **{"return": form})
    try:
        actions.return_postmortem_to_draft(postmortem, actor=request.user, reason=form.cleaned_data["reason"])
    except ActionRefused as refused:
        return _refused(request, incident_id, refused, "return", form)
    return _done(request, incident_id, "Back to draft.")


@staff_login_required
@require_POST
def publish(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    postmortem = access.get_postmortem_for_user(request.user, incident_id)
    try:
        actions.publish_postmortem(postmortem, actor=request.user)
    except ActionRefused as refused:
        return _refused(request, incident_id, refused)
    return _done(request, incident_id, "Published: it is on the status page and on its way to subscribers.")
