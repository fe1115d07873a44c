"""The staff API's post-mortem operations, under the same conventions as the incident ones (endpoints.py).

A post-mortem is addressed through its incident: /incidents/{id}/postmortem. It loads through
incidents.access and changes only through incidents.actions; an ActionRefused becomes 409 (impossible
in its current state, e.g. publishing a draft) or 422 (names a field). Writes answer with the
post-mortem read back fresh.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from incidents import access, actions
from incidents.actions import ActionRefused
from incidents.api.fields import BodyIn, Choice, Day, Moment, NonBlank
from incidents.api.schemas import READ_ERRORS, WRITE_ERRORS
from incidents.models import ActionKind, ActionPriority, ActionStatus, Postmortem, PostmortemState, SectionKey

router = Router(tags=["post-mortems"])


class SectionOut(Schema):
    key: SectionKey
    title: str
    body: str = Field(description="Markdown.")
    is_public: bool


class EntryOut(Schema):
    id: int
    at: datetime
    text: str
    source: str = Field(description="event:<id>, update:<id>, or empty for a line added by hand.")
    is_starred: bool
    is_hidden: bool
    is_public: bool


class ActionItemOut(Schema):
    id: int
    title: str
    kind: ActionKind
    priority: ActionPriority
    owner: str | None
    due_date: date | None
    status: ActionStatus
    link: str
    closed_at: datetime | None


class PostmortemOut(Schema):
    incident_id: int
    state: PostmortemState
    public: bool = Field(
        description="False when the incident was never public: published means completed, for staff only."
    )
    owner: str | None
    due_at: datetime | None
    created_at: datetime
    submitted_at: datetime | None
    published_at: datetime | None
    sections: list[SectionOut]
    timeline: list[EntryOut]
    action_items: list[ActionItemOut]


class SectionIn(BodyIn):
    body: str = Field(max_length=50_000)
    is_public: bool


class PostmortemPatchIn(BodyIn):
    sections: dict[Annotated[SectionKey, Choice], SectionIn] | None = None
    owner: str | None = Field(None, max_length=150, description="A staff username.")
    due_at: Moment | None = None


class ReturnIn(BodyIn):
    reason: NonBlank = Field(max_length=500)


class EntryIn(BodyIn):
    at: Moment
    text: NonBlank = Field(max_length=500)
    is_public: bool = False


class ActionItemIn(BodyIn):
    title: NonBlank = Field(max_length=200)
    kind: Annotated[ActionKind, Choice] = ActionKind.PREVENT
    priority: Annotated[ActionPriority, Choice] = ActionPriority.P2
    owner: str | None = Field(None, max_length=150, description="A staff username.")
    due_date: Day | None = None
    link: str = Field("", max_length=200)


class ActionItemPatchIn(BodyIn):
    status: Literal["open", "in_progress", "done", "wont_do"]


def _out(postmortem: Postmortem) -> dict[str, Any]:
    def name(user: Any) -> str | None:
        return user.get_username() if user is not None else None

    return {
        "incident_id": postmortem.incident_id,
        "state": postmortem.state,
        "public": postmortem.incident.published_at is not None,
        "owner": name(postmortem.owner),
        "due_at": postmortem.due_at,
        "created_at": postmortem.created_at,
        "submitted_at": postmortem.submitted_at,
        "published_at": postmortem.published_at,
        "sections": [
            {"key": s.key, "title": s.get_key_display(), "body": s.body, "is_public": s.is_public}
            for s in postmortem.sections.all()
        ],
        "timeline": [
            {
                "id": e.pk,
                "at": e.at,
                "text": e.text,
                "source": e.source,
                "is_starred": e.is_starred,
                "is_hidden": e.is_hidden,
                "is_public": e.is_public,
            }
            for e in postmortem.entries.all()
        ],
        "action_items": [
            {
                "id": i.pk,
                "title": i.title,
                "kind": i.kind,
                "priority": i.priority,
                "owner": name(i.owner),
                "due_date": i.due_date,
                "status": i.status,
                "link": i.link,
                "closed_at": i.closed_at,
            }
            for i in postmortem.action_items.all()
        ],
    }


def _as_shown(moment: datetime) -> datetime:
    """A time at the precision the API's JSON gives it: milliseconds, the rest cut off (as ninja's encoder,
    Django's DjangoJSONEncoder, writes it)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _read(user: Any, incident_id: int) -> dict[str, Any]:
    return _out(access.get_postmortem_for_user(user, incident_id))


def _person(user: Any, username: str | None, field: str) -> Any:
    if username is None:
        return None
    person = access.staff_users_for(user).filter(username=username).first()
    if person is None:
        raise ActionRefused(f"No active staff member {username!r}.", field=field, code="unknown")
    return person


@router.get("/incidents/{int:incident_id}/postmortem", response={200: PostmortemOut, **READ_ERRORS})
def get_postmortem(request: HttpRequest, incident_id: int) -> dict[str, Any]:
    return _read(request.auth, incident_id)  # type: ignore[attr-defined]


@router.post("/incidents/{int:incident_id}/postmortem", response={201: PostmortemOut, **WRITE_ERRORS})
def start_postmortem(request: HttpRequest, incident_id: int) -> Status[dict[str, Any]]:
    """Open a post-mortem by hand (resolving a SEV1 or SEV2 opens one by itself)."""
    user = request.auth  # type: ignore[attr-defined]
    actions.start_postmortem(access.get_incident_for_user(user, incident_id), actor=user)
    return Status(201, _read(user, incident_id))


@router.patch("/incidents/{int:incident_id}/postmortem", response={200: PostmortemOut, **WRITE_ERRORS})
def patch_postmortem(request: HttpRequest, incident_id: int, payload: PostmortemPatchIn) -> dict[str, Any]:
    """Change sections (only those sent), the owner or the due date."""
    user = request.auth  # type: ignore[attr-defined]
    given = payload.model_fields_set
    if not given:
        raise ActionRefused("Nothing to change: send sections, owner and/or due_at.", field="body", code="empty")
    for name in sorted(given):
        if getattr(payload, name) is None:
            # null would read as "leave it", which a client that meant "clear it" would never learn.
            raise ActionRefused(f"{name} cannot be null: leave it out to keep it as it is.", field=name, code="invalid")
    postmortem = access.get_postmortem_for_user(user, incident_id)
    sections = {key.value: (s.body, s.is_public) for key, s in (payload.sections or {}).items()}
    due_at = payload.due_at
    if due_at is not None and postmortem.due_at is not None and _as_shown(due_at) == _as_shown(postmortem.due_at):
        # The due date as this API shows it (to the millisecond; it is stored to the microsecond): a client
        # sending back what it read changes nothing.
        due_at = None
    actions.edit_postmortem(
        postmortem, actor=user, sections=sections, owner=_person(user, payload.owner, "owner"), due_at=due_at
    )
    return _read(user, incident_id)


@router.post("/incidents/{int:incident_id}/postmortem/submit", response={200: PostmortemOut, **WRITE_ERRORS})
def submit_postmortem(request: HttpRequest, incident_id: int) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    actions.submit_postmortem(access.get_postmortem_for_user(user, incident_id), actor=user)
    return _read(user, incident_id)


@router.post("/incidents/{int:incident_id}/postmortem/return", response={200: PostmortemOut, **WRITE_ERRORS})
def return_postmortem(request: HttpRequest, incident_id: int, payload: ReturnIn) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    actions.return_postmortem_to_draft(
        access.get_postmortem_for_user(user, incident_id), actor=user, reason=payload.reason
    )
    return _read(user, incident_id)


@router.post("/incidents/{int:incident_id}/postmortem/publish", response={200: PostmortemOut, **WRITE_ERRORS})
def publish_postmortem(request: HttpRequest, incident_id: int) -> dict[str, Any]:
    """Public sections to the status page and the v2 API; an email to subscribers who chose post-mortems."""
    user = request.auth  # type: ignore[attr-defined]
    actions.publish_postmortem(access.get_postmortem_for_user(user, incident_id), actor=user)
    return _read(user, incident_id)


@router.post("/incidents/{int:incident_id}/postmortem/timeline", response={201: PostmortemOut, **WRITE_ERRORS})
def add_entry(request: HttpRequest, incident_id: int, payload: EntryIn) -> Status[dict[str, Any]]:
    user = request.auth  # type: ignore[attr-defined]
    postmortem = access.get_postmortem_for_user(user, incident_id)
    actions.add_postmortem_entry(postmortem, actor=user, at=payload.at, text=payload.text, is_public=payload.is_public)
    return Status(201, _read(user, incident_id))


@router.post("/incidents/{int:incident_id}/postmortem/action-items", response={201: PostmortemOut, **WRITE_ERRORS})
def add_action_item(request: HttpRequest, incident_id: int, payload: ActionItemIn) -> Status[dict[str, Any]]:
    user = request.auth  # type: ignore[attr-defined]
    postmortem = access.get_postmortem_for_user(user, incident_id)
    actions.add_action_item(
        postmortem,
        actor=user,
        title=payload.title,
        kind=payload.kind,
        priority=payload.priority,
        owner=_person(user, payload.owner, "owner"),
        due_date=payload.due_date,
        link=payload.link,
    )
    return Status(201, _read(user, incident_id))


@router.patch(
    "/incidents/{int:incident_id}/postmortem/action-items/{int:item_id}", response={200: PostmortemOut, **WRITE_ERRORS}
)
def patch_action_item(
    request: HttpRequest, incident_id: int, item_id: int, payload: ActionItemPatchIn
) -> dict[str, Any]:
    user = request.auth  # type: ignore[attr-defined]
    postmortem = access.get_postmortem_for_user(user, incident_id)
    item = access.get_action_item_for_user(user, postmortem, item_id)
    actions.set_action_item_status(item, actor=user, status=payload.status)
    return _read(user, incident_id)
