"""The on-call staff UI: dashboard, declaration and the incident page.

Views are plain functions. They load objects through incidents.access (which refuses non-staff with
403), hand every change to incidents.actions, and show an ActionRefused to the person who asked.

Every page works without JavaScript: a form posts, the view redirects (303) back to the incident page
with a flash message, or re-renders the page with the errors next to their fields (422). With htmx the
same URLs answer with template partials instead: the form that was sent plus out-of-band swaps of the
parts of the page the action changed (header with clocks, updates, timeline). A refused or invalid
form answers 422, which the htmx-config meta in base.html tells htmx to swap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import wraps
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from incidents import access, actions, escalation
from incidents.actions import ActionRefused
from incidents.forms import (
    CommanderForm,
    DeclareForm,
    ReopenForm,
    ResolveForm,
    ScopeForm,
    SeverityForm,
    StaffForm,
    StopPagingForm,
    UpdateForm,
)
from incidents.models import Component, Incident, IncidentTemplate

DASHBOARD = "incidents/dashboard.html"
INCIDENT_PAGE = "incidents/incident.html"
OPEN_LIMIT = 100  # an on-call dashboard, not an archive; the heading says when more are open
RECENTLY_RESOLVED = 20


class HtmxHttpRequest(HttpRequest):
    """What HtmxMiddleware adds, for the type checker."""

    htmx: HtmxDetails


View = Callable[..., HttpResponse]


def staff_login_required(view: View) -> View:
    """Send anonymous visitors to the login page (staff-ness itself is checked by incidents.access).

    An htmx request (a poll after the session expired, say) gets HX-Redirect, so the login page
    replaces the whole page instead of being swapped into a fragment.
    """

    @wraps(view)
    def wrapper(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.htmx:
            current = request.htmx.current_url_abs_path or request.get_full_path()
            login = redirect_to_login(current, resolve_url(settings.LOGIN_URL))
            return HttpResponseClientRedirect(login.url)
        return redirect_to_login(request.get_full_path())

    return wrapper


def is_fragment_request(request: HtmxHttpRequest) -> bool:
    # A history restore after a cache miss needs the whole page, though htmx sends it.
    return bool(request.htmx) and not request.htmx.history_restore_request


def see_other(url: str) -> HttpResponseRedirect:
    return HttpResponseRedirect(url, status=303)


def _incident_url(incident_id: int) -> str:
    return reverse("incidents:detail", args=[incident_id])


# --- dashboard ----------------------------------------------------------------------------------


@staff_login_required
@require_GET
@vary_on_headers("HX-Request")
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    incidents = access.incidents_for(request.user)
    # incidents_for is typed as a plain QuerySet, so the filters are spelled out here.
    open_incidents = incidents.open().order_by("severity__rank", "declared_at", "id")
    shown = list(open_incidents[:OPEN_LIMIT])
    paging = access.escalations_for(request.user, [incident.pk for incident in shown])
    for incident in shown:
        incident.escalation = paging.get(incident.pk)  # type: ignore[attr-defined]
    now = timezone.now()
    context = {
        "now": now,
        "timers": access.timers_for(request.user, now),
        "public_page": access.public_page_for(request.user, now),
        "stuck_pages": access.stuck_pages_for(request.user),
        "unreachable": access.unreachable_targets_for(request.user),
        "open_incidents": shown,
        "open_count": open_incidents.count(),
        "open_limit": OPEN_LIMIT,
        "resolved_incidents": list(incidents.resolved().order_by("-resolved_at", "-id")[:RECENTLY_RESOLVED]),
        "breakers": access.troubled_breakers_for(request.user),
        "postmortems": access.unfinished_postmortems_for(request.user),
        "overdue_items": access.overdue_action_items_for(request.user, timezone.now().date()),
    }
    template = f"{DASHBOARD}#open-incidents" if is_fragment_request(request) else DASHBOARD
    return render(request, template, context)


# --- declaring ----------------------------------------------------------------------------------


def _template_initial(template: IncidentTemplate, components: Iterable[Component]) -> dict[str, Any]:
    initial: dict[str, Any] = {"title": template.title, "message": template.message}
    if template.severity_id is not None:
        initial["severity"] = template.severity_id
    chosen = {component.pk for component in template.components.all()}
    for component in components:
        # A group in a template stands for each of its components.
        if not component.is_group and (component.pk in chosen or component.group_id in chosen):
            initial[DeclareForm.component_field_name(component)] = template.component_status
    return initial


@staff_login_required
@require_http_methods(["GET", "POST"])
def declare(request: HtmxHttpRequest) -> HttpResponse:
    severities = access.severities_for(request.user)
    components = list(access.components_for(request.user))
    templates = list(access.incident_templates_for(request.user))
    chosen_template: IncidentTemplate | None = None

    if request.method == "POST":
        form = DeclareForm(request.POST, severities=severities, components=components)
        if form.is_valid():
            data = form.cleaned_data
            try:
                incident = actions.declare_incident(
                    actor=request.user,
                    title=data["title"],
                    severity=data["severity"],
                    message=data["message"],
                    message_is_public=form.message_is_public,
                    public_status=data["public_status"],
                    components=form.component_changes(),
                    customer_impact_percent=data["customer_impact_percent"],
                    regions=data["regions"],
                )
            except ActionRefused as refused:
                if not form.attach_refusal(refused):
                    form.add_error(None, refused.message)
            else:
                messages.success(request, f"Declared {incident.severity.name}: {incident.title}")
                return see_other(_incident_url(incident.pk))
        status = 422
    else:
        initial: dict[str, Any] = {}
        if template_id := request.GET.get("template"):
            chosen_template = access.get_incident_template_for_user(request.user, template_id)
            initial = _template_initial(chosen_template, components)
        form = DeclareForm(initial=initial, severities=severities, components=components)
        status = 200

    context = {"form": form, "templates": templates, "chosen_template": chosen_template}
    return render(request, "incidents/declare.html", context, status=status)


# --- the incident page --------------------------------------------------------------------------


def _incident_context(
    request: HtmxHttpRequest,
    incident: Incident,
    *,
    bound: Mapping[str, StaffForm] | None = None,
    header_error: str = "",
) -> dict[str, Any]:
    """Everything the incident page and its partials show; `bound` replaces the fresh forms."""
    user = request.user
    components = list(access.components_for(user))
    affected_ids = {component.pk for component in incident.components.all()}
    page_forms: dict[str, forms.Form] = {
        "update_form": UpdateForm(incident=incident, components=components, affected_ids=affected_ids),
        "severity_form": SeverityForm(incident=incident, severities=access.severities_for(user)),
        "scope_form": ScopeForm(incident=incident),
        "commander_form": CommanderForm(incident=incident, people=access.staff_users_for(user)),
        "resolve_form": ResolveForm(),
        "reopen_form": ReopenForm(),
        "stop_paging_form": StopPagingForm(),
    }
    page_forms.update(bound or {})
    counts = access.delivery_counts_for(user, incident)
    for update in incident.updates.all():  # the prefetched list the template iterates
        update.deliveries = counts.get(update.pk)  # type: ignore[attr-defined]
    return {
        "incident": incident,
        "events": list(access.timeline_for(user, incident)),
        "postmortem": access.postmortem_of(user, incident) if incident.is_resolved else None,
        "paging": access.paging_for(user, incident),
        "now": timezone.now(),
        "header_error": header_error,
        **page_forms,
    }


# Every part of the incident page that can be swapped on its own ({% partialdef %} in INCIDENT_PAGE).
PAGE_PARTS = (
    "header", "update-form", "updates", "timeline", "resolve-form", "severity-form", "commander-form", "scope-form",
    "paging",
)  # fmt: skip


def _fragments(
    request: HtmxHttpRequest,
    context: dict[str, Any],
    primary: str,
    oob: Iterable[str] = (),
    *,
    status: int = 200,
    with_messages: bool = False,
) -> HttpResponse:
    """One partial for the element that made the request, the others as out-of-band swaps."""
    return render_parts(request, INCIDENT_PAGE, context, primary, oob, status=status, with_messages=with_messages)


def render_parts(
    request: HtmxHttpRequest,
    page: str,
    context: dict[str, Any],
    primary: str,
    oob: Iterable[str],
    *,
    status: int = 200,
    with_messages: bool = False,
) -> HttpResponse:
    """The {% partialdef %} `primary` of `page`, then the `oob` ones as out-of-band swaps (and the
    flash messages). Shared by the incident and maintenance pages."""
    parts = [render_to_string(f"{page}#{primary}", context, request)]
    parts += [render_to_string(f"{page}#{name}", {**context, "oob": True}, request) for name in oob if name != primary]
    if with_messages:
        parts.append(render_to_string("base.html#messages", {"oob": True}, request))
    return HttpResponse("".join(parts), status=status)


@staff_login_required
@require_GET
@vary_on_headers("HX-Request")
def incident_detail(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    incident = access.get_incident_for_user(request.user, incident_id)
    context = _incident_context(request, incident)
    if is_fragment_request(request):
        # The header polls: it comes back with the updates and timeline others may have added.
        return _fragments(request, context, "header", ("updates", "timeline", "paging-status"))
    return render(request, INCIDENT_PAGE, context)


def _succeeded(
    request: HtmxHttpRequest, incident_id: int, message: str, primary: str, oob: Iterable[str]
) -> HttpResponse:
    messages.success(request, message)
    if not request.htmx:
        return see_other(_incident_url(incident_id))
    incident = access.get_incident_for_user(request.user, incident_id)
    return _fragments(request, _incident_context(request, incident), primary, oob, with_messages=True)


def _refused(
    request: HtmxHttpRequest,
    incident_id: int,
    refused: ActionRefused,
    primary: str,
    oob: Iterable[str] = (),
    form: tuple[str, StaffForm] | None = None,
) -> HttpResponse:
    """A refusal that names no field, shown where the person acted, with the page brought up to date.

    A refusal usually means someone else changed the incident meanwhile ("Already acknowledged by
    bob.", resolved in another tab), so the incident is read again and every part of the page shows its
    current state: with htmx all parts swap (out of band); without JavaScript a form's refusal
    re-renders the whole page (422) with what was typed kept, and a button's redirects with a flash.
    """
    if not request.htmx and form is None:
        messages.error(request, refused.message)
        return see_other(_incident_url(incident_id))
    incident = access.get_incident_for_user(request.user, incident_id)
    bound: dict[str, StaffForm] = {}
    header_error = ""
    if form is not None:
        name, bound_form = form
        bound_form.add_error(None, refused.message)
        bound[name] = bound_form
    else:
        header_error = refused.message
    context = _incident_context(request, incident, bound=bound, header_error=header_error)
    if not request.htmx:
        return render(request, INCIDENT_PAGE, context, status=422)
    oob_parts = [part for part in (*PAGE_PARTS, *oob) if part != primary]
    return _fragments(request, context, primary, dict.fromkeys(oob_parts), status=422)


def _invalid(request: HtmxHttpRequest, incident: Incident, name: str, form: StaffForm, primary: str) -> HttpResponse:
    """Errors next to their fields: the form fragment (htmx) or the whole page, both 422."""
    context = _incident_context(request, incident, bound={name: form})
    if request.htmx:
        return _fragments(request, context, primary, status=422)
    return render(request, INCIDENT_PAGE, context, status=422)


def _form_refused(
    request: HtmxHttpRequest,
    incident: Incident,
    refused: ActionRefused,
    name: str,
    form: StaffForm,
    primary: str,
    oob: Iterable[str] = (),
) -> HttpResponse:
    if form.attach_refusal(refused):
        return _invalid(request, incident, name, form, primary)
    if refused.code == "unchanged":
        # Nothing to change ("The incident is already SEV3.", "Nothing changed."): the page is as it
        # was, so only this form answers, and the text typed in the others stays where it is.
        form.add_error(None, refused.message)
        return _invalid(request, incident, name, form, primary)
    return _refused(request, incident.pk, refused, primary, oob, form=(name, form))


@staff_login_required
@require_POST
def acknowledge(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    incident = access.get_incident_for_user(request.user, incident_id)
    try:
        actions.acknowledge_incident(incident, actor=request.user)
    except ActionRefused as refused:
        return _refused(request, incident.pk, refused, "header")
    return _succeeded(request, incident.pk, "Acknowledged. You are on it.", "header", ("timeline", "paging"))


@staff_login_required
@require_POST
def post_update(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    incident = access.get_incident_for_user(request.user, incident_id)
    components = list(access.components_for(request.user))
    affected_ids = {component.pk for component in incident.components.all()}
    form = UpdateForm(request.POST, incident=incident, components=components, affected_ids=affected_ids)
    if not form.is_valid():
        return _invalid(request, incident, "update_form", form, "update-form")
    try:
        update = actions.post_update(
            incident,
            actor=request.user,
            body=form.cleaned_data["body"],
            public_status=form.cleaned_data["public_status"],
            is_public=form.is_public,
            components=form.component_changes(),
        )
    except ActionRefused as refused:
        return _form_refused(request, incident, refused, "update_form", form, "update-form")
    posted = "Public update posted." if update.is_public else "Internal update posted."
    return _succeeded(request, incident.pk, posted, "update-form", ("header", "updates", "timeline"))


@staff_login_required
@require_POST
def change_severity(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    incident = access.get_incident_for_user(request.user, incident_id)
    form = SeverityForm(request.POST, incident=incident, severities=access.severities_for(request.user))
    if not form.is_valid():
        return _invalid(request, incident, "severity_form", form, "severity-form")
    severity = form.cleaned_data["severity"]
    try:
        actions.change_severity(incident, actor=request.user, severity=severity)
    except ActionRefused as refused:
        return _form_refused(request, incident, refused, "severity_form", form, "severity-form")
    return _succeeded(
        request, incident.pk, f"Severity is now {severity.name}.", "severity-form", ("header", "timeline", "paging")
    )


@staff_login_required
@require_POST
def assign_commander(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    incident = access.get_incident_for_user(request.user, incident_id)
    form = CommanderForm(request.POST, incident=incident, people=access.staff_users_for(request.user))
    if not form.is_valid():
        return _invalid(request, incident, "commander_form", form, "commander-form")
    commander = form.cleaned_data["commander"]
    try:
        actions.assign_commander(incident, actor=request.user, commander=commander)
    except ActionRefused as refused:
        return _form_refused(request, incident, refused, "commander_form", form, "commander-form")
    message = f"{commander.get_username()} is now the incident commander."
    return _succeeded(request, incident.pk, message, "commander-form", ("header", "timeline"))


@staff_login_required
@require_POST
def update_scope(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    incident = access.get_incident_for_user(request.user, incident_id)
    form = ScopeForm(request.POST, incident=incident)
    if not form.is_valid():
        return _invalid(request, incident, "scope_form", form, "scope-form")
    data = form.cleaned_data
    try:
        actions.update_impact_scope(
            incident,
            actor=request.user,
            customer_impact_percent=data["customer_impact_percent"],
            regions=data["regions"],
            workaround=data["workaround"],
            impact_override=data["impact_override"],
        )
    except ActionRefused as refused:
        return _form_refused(request, incident, refused, "scope_form", form, "scope-form")
    return _succeeded(request, incident.pk, "Impact scope updated.", "scope-form", ("header", "timeline"))


@staff_login_required
@require_POST
def resolve(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    incident = access.get_incident_for_user(request.user, incident_id)
    form = ResolveForm(request.POST)
    if not form.is_valid():
        return _invalid(request, incident, "resolve_form", form, "resolve-form")
    try:
        actions.resolve_incident(
            incident,
            actor=request.user,
            message=form.cleaned_data["message"],
            is_public=form.is_public,
            restore_components=form.cleaned_data["restore_components"],
        )
    except ActionRefused as refused:
        return _form_refused(request, incident, refused, "resolve_form", form, "resolve-form", ("update-form",))
    oob = ("header", "updates", "timeline", "update-form", "paging")
    return _succeeded(request, incident.pk, "Resolved.", "resolve-form", oob)


@staff_login_required
@require_POST
def reopen(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    incident = access.get_incident_for_user(request.user, incident_id)
    form = ReopenForm(request.POST)
    if not form.is_valid():
        return _invalid(request, incident, "reopen_form", form, "resolve-form")
    try:
        actions.reopen_incident(
            incident, actor=request.user, reason=form.cleaned_data["reason"], message=form.cleaned_data["message"]
        )
    except ActionRefused as refused:
        return _form_refused(request, incident, refused, "reopen_form", form, "resolve-form", ("update-form",))
    oob = ("header", "timeline", "update-form", "updates")
    return _succeeded(request, incident.pk, "Reopened: the resolve clock runs again.", "resolve-form", oob)


# --- paging -------------------------------------------------------------------------------------


@staff_login_required
@require_POST
def stop_paging(request: HtmxHttpRequest, incident_id: int) -> HttpResponse:
    incident = access.get_incident_for_user(request.user, incident_id)
    form = StopPagingForm(request.POST)
    if not form.is_valid():
        return _invalid(request, incident, "stop_paging_form", form, "paging")
    try:
        stopped = actions.stop_paging(incident, actor=request.user, reason=form.cleaned_data["reason"])
    except ActionRefused as refused:
        return _form_refused(request, incident, refused, "stop_paging_form", form, "paging")
    message = f"Paging stopped ({stopped} step{'s' if stopped != 1 else ''} will not fire)."
    return _succeeded(request, incident.pk, message, "paging", ("timeline",))


ACK_LINK_PAGE = "incidents/ack_link.html"


@staff_login_required
@require_http_methods(["GET", "POST"])
def ack_link(request: HtmxHttpRequest, token: str) -> HttpResponse:
    """The acknowledgment link in a page email: asks first (GET changes nothing, since mail scanners
    open links), acknowledges on POST, and works once."""
    access.require_staff(request.user)
    notice = escalation.read_ack_token(token)
    if notice is None:
        problem = "This acknowledgment link is not valid or has expired (links work for 24 hours)."
        return render(request, ACK_LINK_PAGE, {"problem": problem}, status=404)
    incident = notice.incident
    paging = access.escalations_for(request.user, [incident.pk]).get(incident.pk)
    context: dict[str, Any] = {
        "notice": notice,
        "incident": incident,
        "now": timezone.now(),
        "still_paging": paging is not None and paging.is_paging,
    }
    if notice.used_at is not None:
        who = notice.used_by.get_username() if notice.used_by else "someone"
        context["problem"] = f"This link was already used, by {who}. Links work once."
        return render(request, ACK_LINK_PAGE, context, status=410)
    if request.method == "GET":
        return render(request, ACK_LINK_PAGE, context)
    try:
        actions.acknowledge_by_link(notice, actor=request.user)
    except ActionRefused as refused:
        context["problem"] = refused.message
        return render(request, ACK_LINK_PAGE, context, status=409)
    messages.success(request, "Acknowledged. You are on it: paging has stopped.")
    return see_other(_incident_url(incident.pk))
