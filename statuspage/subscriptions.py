"""The public subscription pages: sign up, confirm, change what you get, unsubscribe.

There is no account. The sign-up form sends a confirmation email (double opt-in); every later email
carries signed links (incidents/tokens.py) to the manage and unsubscribe pages, and the link is the
only credential. These pages are not snapshot routes: they take the ordinary middleware path, with
sessions and CSRF, and may read the database.

Nobody can learn from the sign-up form whether an address is subscribed: whatever the address's
state (new, waiting for confirmation, subscribed, unsubscribed), and for a bot that fills the trap
field, the answer is the same page with the same status. Sign-ups are rate-limited per client and
per address in the cache; actions.subscribe also sends an address at most one email an hour.

Every change is a POST: mail scanners fetch links with GET, and must not confirm or unsubscribe
anyone. Each POST that works redirects (303) to a GET of the same page, which shows the new state.
The one exception is unsubscribing, which answers at once, as RFC 8058 one-click unsubscribing
expects of the URL in the List-Unsubscribe header.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from incidents import actions
from incidents.actions import ActionRefused
from incidents.models import Component, Subscriber
from incidents.tokens import BadToken, make_token, read_token
from statuspage.snapshot import current, current_without_building
from statuspage.subscription_forms import ComponentLike, ListedComponent, PreferencesForm, SubscribeForm
from statuspage.views import document_context

log = logging.getLogger(__name__)

HTML = "text/html; charset=utf-8"
SUBSCRIBE_PAGE = "public/subscribe.html"
MANAGE_PAGE = "public/subscribe_manage.html"
UNAVAILABLE_PAGE = "public/subscribe_unavailable.html"
RETRY_AFTER_SECONDS = 120


@dataclass(frozen=True)
class RateLimit:
    name: str
    count: int
    seconds: int


# Enough for a person who mistypes twice; too few to mail-bomb an address or sweep a list of them.
PER_CLIENT = RateLimit("client", 5, 10 * 60)
PER_ADDRESS = RateLimit("address", 3, 60 * 60)

page_methods = require_http_methods(["GET", "HEAD", "POST"])


# --- helpers ------------------------------------------------------------------------------------


def client_address(request: HttpRequest) -> str:
    """REMOTE_ADDR; behind a proxy that appends the client to X-Forwarded-For (deploy/nginx.conf), the
    last entry when settings.TRUST_X_FORWARDED_FOR is on. Earlier entries are whatever the client sent.
    Sign-in throttling counts addresses with it too (AXES_CLIENT_IP_CALLABLE)."""
    if getattr(settings, "TRUST_X_FORWARDED_FOR", False):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def _count(limit: RateLimit, who: str) -> int | None:
    """Count one attempt in the current window; the seconds until it ends, when over the limit.

    Fixed windows in the cache (add, then incr: atomic on Redis and on locmem). The cache keys hold a
    digest, not the address itself. If the cache is down, sign-ups go on: the action still sends an
    address at most one email an hour.
    """
    now = time.time()
    window = int(now // limit.seconds)
    digest = hashlib.sha256(who.encode()).hexdigest()[:32]
    key = f"signalpost:subscribe:{limit.name}:{digest}:{window}"
    try:
        cache.add(key, 0, timeout=limit.seconds)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=limit.seconds)
            count = 1
    except Exception:
        log.warning("subscribe: the cache is unavailable; not rate-limiting this sign-up", exc_info=True)
        return None
    if count <= limit.count:
        return None
    return max(1, math.ceil((window + 1) * limit.seconds - now))


def _rate_limited(request: HttpRequest, email: str) -> HttpResponse | None:
    """A 429 page when this client or this address has signed up too often lately, else None."""
    retry_after = _count(PER_CLIENT, client_address(request))
    if retry_after is None:
        retry_after = _count(PER_ADDRESS, email.strip().lower())
    if retry_after is None:
        return None
    context = {**_page_context(), "retry_minutes": math.ceil(retry_after / 60)}
    response = HttpResponse(render_to_string("public/subscribe_limited.html", context), content_type=HTML, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def _page_context() -> dict[str, Any]:
    """What public/base.html needs: the page's name and current indicator, from the published snapshot."""
    snapshot = current()
    if snapshot is None:
        page = {"name": settings.SITE_NAME, "url": settings.SITE_URL}
        return {"page": page, "indicator": "none", "time_zone": settings.DISPLAY_TIME_ZONE}
    document = snapshot.document
    return {
        "page": document["page"],
        "indicator": document["status"]["indicator"],
        "time_zone": document["page"].get("time_zone") or "UTC",
    }


def _listed_components() -> list[ComponentLike]:
    """The sign-up page's choices: from the published snapshot, so the page renders without a query
    (with the database down or hanging it still shows); from the database before the first publish."""
    snapshot = current()
    if snapshot is not None:
        return list(ListedComponent.from_document(snapshot.document))
    return list(_components())


def _components() -> list[Component]:
    """Components outside a group first, then each group's, each in the status page's order."""
    rows = list(Component.objects.select_related("group").order_by("position", "name", "id"))
    loose = [c for c in rows if not c.is_group and c.group_id is None]
    grouped = [child for group in rows if group.is_group for child in rows if child.group_id == group.pk]
    return loose + grouped


def _links(subscriber: Subscriber) -> dict[str, str]:
    return {
        "manage_url": reverse("subscribe_manage", args=[make_token(subscriber, "manage")]),
        "unsubscribe_url": reverse("subscribe_unsubscribe", args=[make_token(subscriber, "unsubscribe")]),
    }


def _page(
    request: HttpRequest, template: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> HttpResponse:
    response = render(request, template, {**_page_context(), **(context or {})}, status=status)
    response["X-Robots-Tag"] = "noindex"
    return response


def _problem(request: HttpRequest, message: str, *, status: int) -> HttpResponse:
    """A link that cannot be used: why, and what to do instead."""
    return _page(request, "public/subscribe_problem.html", {"message": message}, status=status)


def _see_other(request: HttpRequest) -> HttpResponse:
    return HttpResponseRedirect(request.path, status=303)


# --- views --------------------------------------------------------------------------------------


@never_cache
@page_methods
def subscribe(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _page(request, SUBSCRIBE_PAGE, {"form": SubscribeForm(components=_listed_components())})
    form = SubscribeForm(request.POST, components=_components())
    if form.is_trapped:
        return _sent(request.POST.get("email", "")[:254])  # a bot: the same answer, and nothing happens
    if form.is_valid():
        email = form.cleaned_data["email"]
        limited = _rate_limited(request, email)
        if limited is not None:
            return limited
        try:
            actions.subscribe(email=email, **form.choices())
        except ActionRefused as refused:
            if not form.attach_refusal(refused):
                form.add_error(None, refused.message)
        else:
            return _sent(email)
    return _page(request, SUBSCRIBE_PAGE, {"form": form}, status=422)


def _sent(email: str) -> HttpResponse:
    """The one answer to every accepted sign-up. Rendered without the request, so it carries no CSRF
    token or CSP nonce: the same bytes whatever the address's state, which is the point."""
    context = {**_page_context(), "email": email.strip()}
    return HttpResponse(render_to_string("public/subscribe_sent.html", context), content_type=HTML)


@never_cache
@page_methods
def confirm(request: HttpRequest, token: str) -> HttpResponse:
    try:
        subscriber = read_token(token, "confirm")
    except BadToken as bad:
        return _problem(request, bad.message, status=400)
    if request.method == "POST":
        try:
            actions.confirm_subscription(subscriber)
        except ActionRefused as refused:
            return _problem(request, refused.message, status=409)
        return _see_other(request)
    if subscriber.unsubscribed_at is not None:
        return _problem(request, "This address has unsubscribed. Subscribe again to get updates.", status=409)
    if subscriber.confirmed_at is not None:
        context = {"subscriber": subscriber, "summary": _summary(subscriber), **_links(subscriber)}
        return _page(request, "public/subscribe_confirmed.html", context)
    return _page(request, "public/subscribe_confirm.html", {"subscriber": subscriber})


@never_cache
@page_methods
def manage(request: HttpRequest, token: str) -> HttpResponse:
    try:
        subscriber = read_token(token, "manage")
    except BadToken as bad:
        return _problem(request, bad.message, status=400)
    if subscriber.unsubscribed_at is not None and request.method != "POST":
        return _page(request, "public/subscribe_unsubscribed.html", {"subscriber": subscriber})
    components = _components()
    if request.method == "POST":
        form = PreferencesForm(request.POST, components=components)
        if form.is_valid():
            try:
                actions.update_subscription(subscriber, **form.choices())
            except ActionRefused as refused:
                if refused.field is None:
                    return _problem(request, refused.message, status=409)
                form.attach_refusal(refused)
            else:
                messages.success(request, "Saved. Your next emails follow these choices.")
                return _see_other(request)
        status = 422
    else:
        form = PreferencesForm(components=components, initial=PreferencesForm.initial_for(subscriber))
        status = 200
    context = {"form": form, "subscriber": subscriber, **_links(subscriber)}
    return _page(request, MANAGE_PAGE, context, status=status)


# RFC 8058 one-click unsubscribing: a mail provider POSTs "List-Unsubscribe=One-Click" to the URL in the
# List-Unsubscribe header, with no cookies, so it has no CSRF token. The signed token in the URL is what
# makes the request genuine (CSRF protects a session's authority, and this request needs none), and the
# only thing a forged POST could do is what the token's owner asked for. GETs never change anything.
@csrf_exempt
@never_cache
@page_methods
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        subscriber = read_token(token, "unsubscribe")
    except BadToken as bad:
        return _problem(request, bad.message, status=400)
    if request.method == "POST":
        subscriber = actions.unsubscribe(subscriber)
    if subscriber.unsubscribed_at is not None:
        return _page(request, "public/subscribe_unsubscribed.html", {"subscriber": subscriber})
    return _page(request, "public/subscribe_unsubscribe.html", {"subscriber": subscriber, **_links(subscriber)})


def unavailable(request: HttpRequest) -> HttpResponse:
    """503 for a subscription page that needs the database while it is down or not answering: the
    current status from the snapshot above, and what cannot be done right now (statuspage/middleware.py)."""
    snapshot = current_without_building()
    context: dict[str, Any] = {"signing_up": request.path.rstrip("/") == reverse("subscribe")}
    if snapshot is not None:
        context.update(document_context(snapshot.document))
    else:
        context.update(page={"name": settings.SITE_NAME, "url": settings.SITE_URL}, indicator="none")
    response = HttpResponse(render_to_string(UNAVAILABLE_PAGE, context), content_type=HTML, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    response["X-Robots-Tag"] = "noindex"
    return response


def _summary(subscriber: Subscriber) -> dict[str, Any]:
    """What a subscriber will be sent, for the confirmation page."""
    return {
        "components": None if subscriber.all_components else [c.display_name for c in subscriber.components.all()],
        "incidents": subscriber.notify_incidents,
        "maintenance": subscriber.notify_maintenance,
        "postmortems": subscriber.notify_postmortems,
        "minimum_impact": subscriber.minimum_impact,
    }
