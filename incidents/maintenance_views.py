"""The staff UI for scheduled maintenance: the list, scheduling, and a window's page with its actions.

The same shape as the incident page (incidents/views.py): function views, objects from
incidents.access, every change through incidents.actions, an ActionRefused shown to the person who
asked (next to its field when it names one). Without JavaScript a form posts and the view redirects
(303) with a flash message, or re-renders the page (422) with the errors or the refusal and what was
typed; a refused button (start, complete) redirects with the refusal as a flash message. With htmx
the same URLs answer with the page's partials: the one that was sent, plus every other part out of
band, since starting, completing or cancelling a window changes what each part of the page offers. A
422 (form errors, refusals) is swapped too (see the htmx-config meta in base.html).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.db.models import QuerySet
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from incidents import access, actions
from incidents.actions import ActionRefused
from incidents.forms import StaffForm
from incidents.maintenance_forms import CancelForm, MaintenanceUpdateForm, RescheduleForm, ScheduleForm
from incidents.models import Maintenance, MaintenanceStatus
from incidents.views import HtmxHttpRequest, is_fragment_request, render_parts, see_other, staff_login_required

LIST_PAGE = "incidents/maintenance_list.html"
SCHEDULE_PAGE = "incidents/maintenance_schedule.html"
MAINTENANCE_PAGE = "incidents/maintenance.html"
RECENT_LIMIT = 20
PANEL_UPCOMING_LIMIT = 5  # the dashboard panel is a glance; the list page has the rest
PARTS = ("header", "update-form", "updates", "timeline", "reschedule-form", "cancel-form")


def _maintenance_url(maintenance_id: int) -> str:
    return reverse("incidents:maintenance", args=[maintenance_id])


def _unfinished(windows: QuerySet[Maintenance]) -> list[Maintenance]:
    """Active and upcoming windows, soonest first (one query, plus one for their components)."""
    return list(windows.filter(completed_at__isnull=True, cancelled_at__isnull=True).order_by("scheduled_for", "id"))


def _split(unfinished: Iterable[Maintenance]) -> tuple[list[Maintenance], list[Maintenance]]:
    active: list[Maintenance] = []
    upcoming: list[Maintenance] = []
    for maintenance in unfinished:
        (upcoming if maintenance.status == MaintenanceStatus.SCHEDULED else active).append(maintenance)
    return active, upcoming


# --- the list and the dashboard panel -----------------------------------------------------------


@staff_login_required
@require_GET
def maintenance_list(request: HtmxHttpRequest) -> HttpResponse:
    windows = access.maintenances_for(request.user)
    active, upcoming = _split(_unfinished(windows))
    finished = windows.exclude(completed_at__isnull=True, cancelled_at__isnull=True)
    recent = list(finished.order_by(Coalesce("completed_at", "cancelled_at").desc(), "-id")[:RECENT_LIMIT])
    context = {
        "now": timezone.now(),
        "display_zone": settings.DISPLAY_TIME_ZONE,
        "active": active,
        "upcoming": upcoming,
        "recent": recent,
    }
    return render(request, LIST_PAGE, context)


@staff_login_required
@require_GET
def maintenance_panel(request: HtmxHttpRequest) -> HttpResponse:
    """The dashboard's Maintenance panel, which htmx loads (and refreshes) into the dashboard."""
    active, upcoming = _split(_unfinished(access.maintenances_for(request.user)))
    context = {
        "now": timezone.now(),
        "windows": active + upcoming[:PANEL_UPCOMING_LIMIT],
        "active_count": len(active),
        "upcoming_count": len(upcoming),
        "more_upcoming": max(len(upcoming) - PANEL_UPCOMING_LIMIT, 0),
    }
    return render(request, f"{LIST_PAGE}#dashboard-panel", context)


# --- scheduling ---------------------------------------------------------------------------------


@staff_login_required
@require_http_methods(["GET", "POST"])
def schedule(request: HtmxHttpRequest) -> HttpResponse:
    components = list(access.components_for(request.user))
    if request.method == "POST":
        form = ScheduleForm(request.POST, components=components)
        if form.is_valid():
            data = form.cleaned_data
            try:
                maintenance = actions.schedule_maintenance(
                    actor=request.user,
                    title=data["title"],
                    scheduled_for=data["scheduled_for"],
                    scheduled_until=data["scheduled_until"],
                    components=data["components"],
                    message=data["message"],
                    auto_start=data["auto_start"],
                    auto_complete=data["auto_complete"],
                )
            except ActionRefused as refused:
                if not form.attach_refusal(refused):
                    form.add_error(None, refused.message)
            else:
                messages.success(request, f"Scheduled: {maintenance.title}")
                return see_other(_maintenance_url(maintenance.pk))
        status = 422
    else:
        form = ScheduleForm(components=components)
        status = 200
    return render(request, SCHEDULE_PAGE, {"form": form}, status=status)


# --- a window's page ----------------------------------------------------------------------------


def _context(
    request: HtmxHttpRequest,
    maintenance: Maintenance,
    *,
    bound: Mapping[str, StaffForm] | None = None,
    header_error: str = "",
) -> dict[str, Any]:
    """Everything the page and its partials show; `bound` replaces the fresh forms."""
    page_forms: dict[str, StaffForm] = {
        "update_form": MaintenanceUpdateForm(maintenance=maintenance),
        "reschedule_form": RescheduleForm(maintenance=maintenance),
        "cancel_form": CancelForm(),
    }
    page_forms.update(bound or {})
    return {
        "maintenance": maintenance,
        "events": list(access.maintenance_timeline_for(request.user, maintenance)),
        "now": timezone.now(),
        "header_error": header_error,
        **page_forms,
    }


def _fragments(
    request: HtmxHttpRequest,
    context: dict[str, Any],
    primary: str,
    oob: Iterable[str] = PARTS,
    *,
    status: int = 200,
    with_messages: bool = False,
) -> HttpResponse:
    """The part that made the request, then the others (by default every other part) out of band."""
    return render_parts(request, MAINTENANCE_PAGE, context, primary, oob, status=status, with_messages=with_messages)


@staff_login_required
@require_GET
@vary_on_headers("HX-Request")
def maintenance_detail(request: HtmxHttpRequest, maintenance_id: int) -> HttpResponse:
    maintenance = access.get_maintenance_for_user(request.user, maintenance_id)
    context = _context(request, maintenance)
    if is_fragment_request(request):
        # The header polls, so a start or completion by the sweep (or a colleague) shows up. The forms
        # stay as they are: someone may be typing into them.
        return _fragments(request, context, "header", ("updates", "timeline"))
    return render(request, MAINTENANCE_PAGE, context)


def _succeeded(request: HtmxHttpRequest, maintenance_id: int, message: str, primary: str) -> HttpResponse:
    messages.success(request, message)
    if not request.htmx:
        return see_other(_maintenance_url(maintenance_id))
    maintenance = access.get_maintenance_for_user(request.user, maintenance_id)
    return _fragments(request, _context(request, maintenance), primary, with_messages=True)


def _refused(
    request: HtmxHttpRequest,
    maintenance_id: int,
    refused: ActionRefused,
    primary: str,
    form: tuple[str, StaffForm] | None = None,
) -> HttpResponse:
    """A refusal that names no field, shown where the person acted, with the page brought up to date.

    A refusal usually means the window moved on meanwhile ("This maintenance has already started.",
    by a colleague or the sweep), so it is read again and every part of the page shows its current
    state: with htmx all parts swap (out of band); without JavaScript a form's refusal re-renders the
    whole page (422) with what was typed kept, and a button's redirects with a flash message.
    """
    if not request.htmx and form is None:
        messages.error(request, refused.message)
        return see_other(_maintenance_url(maintenance_id))
    maintenance = access.get_maintenance_for_user(request.user, maintenance_id)
    bound: dict[str, StaffForm] = {}
    header_error = ""
    if form is not None:
        name, bound_form = form
        bound_form.add_error(None, refused.message)
        bound[name] = bound_form
    else:
        header_error = refused.message
    context = _context(request, maintenance, bound=bound, header_error=header_error)
    if not request.htmx:
        return render(request, MAINTENANCE_PAGE, context, status=422)
    return _fragments(request, context, primary, status=422)


def _invalid(
    request: HtmxHttpRequest, maintenance: Maintenance, name: str, form: StaffForm, primary: str
) -> HttpResponse:
    """Errors next to their fields: the form's fragment (htmx) or the whole page, both 422."""
    context = _context(request, maintenance, bound={name: form})
    if request.htmx:
        return HttpResponse(render_to_string(f"{MAINTENANCE_PAGE}#{primary}", context, request), status=422)
    return render(request, MAINTENANCE_PAGE, context, status=422)


def _form_refused(
    request: HtmxHttpRequest,
    maintenance: Maintenance,
    refused: ActionRefused,
    name: str,
    form: StaffForm,
    primary: str,
) -> HttpResponse:
    if form.attach_refusal(refused):
        return _invalid(request, maintenance, name, form, primary)
    if refused.code == "unchanged":
        # "Nothing changed.": the window is as it was, so only this form answers, and the text typed in
        # the others (the update, the cancel reason) stays where it is.
        form.add_error(None, refused.message)
        return _invalid(request, maintenance, name, form, primary)
    return _refused(request, maintenance.pk, refused, primary, form=(name, form))


@staff_login_required
@require_POST
def start(request: HtmxHttpRequest, maintenance_id: int) -> HttpResponse:
    maintenance = access.get_maintenance_for_user(request.user, maintenance_id)
    try:
        actions.start_maintenance(maintenance, actor=request.user)
    except ActionRefused as refused:
        return _refused(request, maintenance.pk, refused, "header")
    return _succeeded(request, maintenance.pk, "Started: the components are under maintenance.", "header")


@staff_login_required
@require_POST
def complete(request: HtmxHttpRequest, maintenance_id: int) -> HttpResponse:
    maintenance = access.get_maintenance_for_user(request.user, maintenance_id)
    try:
        actions.complete_maintenance(maintenance, actor=request.user)
    except ActionRefused as refused:
        return _refused(request, maintenance.pk, refused, "header")
    return _succeeded(request, maintenance.pk, "Completed: the components have their status back.", "header")


@staff_login_required
@require_POST
def post_update(request: HtmxHttpRequest, maintenance_id: int) -> HttpResponse:
    maintenance = access.get_maintenance_for_user(request.user, maintenance_id)
    form = MaintenanceUpdateForm(request.POST, maintenance=maintenance)
    if not form.is_valid():
        return _invalid(request, maintenance, "update_form", form, "update-form")
    try:
        actions.post_maintenance_update(
            maintenance, actor=request.user, body=form.cleaned_data["body"], status=form.cleaned_data["status"]
        )
    except ActionRefused as refused:
        return _form_refused(request, maintenance, refused, "update_form", form, "update-form")
    return _succeeded(request, maintenance.pk, "Update posted.", "update-form")


@staff_login_required
@require_POST
def reschedule(request: HtmxHttpRequest, maintenance_id: int) -> HttpResponse:
    maintenance = access.get_maintenance_for_user(request.user, maintenance_id)
    form = RescheduleForm(request.POST, maintenance=maintenance)
    if not form.is_valid():
        return _invalid(request, maintenance, "reschedule_form", form, "reschedule-form")
    try:
        actions.reschedule_maintenance(
            maintenance,
            actor=request.user,
            scheduled_for=form.cleaned_data["scheduled_for"],
            scheduled_until=form.cleaned_data["scheduled_until"],
            message=form.cleaned_data["message"],
        )
    except ActionRefused as refused:
        return _form_refused(request, maintenance, refused, "reschedule_form", form, "reschedule-form")
    return _succeeded(request, maintenance.pk, "Rescheduled.", "reschedule-form")


@staff_login_required
@require_POST
def cancel(request: HtmxHttpRequest, maintenance_id: int) -> HttpResponse:
    maintenance = access.get_maintenance_for_user(request.user, maintenance_id)
    form = CancelForm(request.POST)
    if not form.is_valid():
        return _invalid(request, maintenance, "cancel_form", form, "cancel-form")
    try:
        actions.cancel_maintenance(maintenance, actor=request.user, reason=form.cleaned_data["reason"])
    except ActionRefused as refused:
        return _form_refused(request, maintenance, refused, "cancel_form", form, "cancel-form")
    return _succeeded(request, maintenance.pk, "Cancelled.", "cancel-form")
