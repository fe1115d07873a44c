"""The public pages: what each one says, and that none of them touches the database.

Data is set up through actions, published with incidents.publishing.publish(), then the literal URLs
are requested as an anonymous reader would. The page's zone is Europe/Berlin (CET in November), so
every time on the page is shown an hour ahead of UTC and says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client

from incidents import actions, publishing
from incidents.models import Component, Incident, Maintenance
from statuspage.http import clear_rendered
from statuspage.snapshot import reader
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 8, 14, 5, tzinfo=UTC)  # 15:05 CET
HTMX = {"HX-Request": "true"}
ROUTES = ["/", "/history", "/history/2", "/uptime", "/incidents/{open}", "/incidents/{resolved}", "/maintenance/{soon}"]


@dataclass
class Site:
    us: Component
    eu: Component
    website: Component
    open: Incident
    resolved: Incident
    old: Incident
    soon: Maintenance
    now: Maintenance
    cancelled: Maintenance
    version: int

    def url(self, route: str) -> str:
        return route.format(open=self.open.pk, resolved=self.resolved.pk, soon=self.soon.public_id)


def text(response: Any) -> str:
    content: bytes = response.content
    return content.decode()


def words(html: str) -> str:
    """The page's text, tags removed and spaces collapsed (what a reader sees, near enough)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture
def frozen() -> Iterator[None]:
    with time_machine.travel(T0, tick=False):
        yield


@pytest.fixture
def site(settings: Any, staff: User, frozen: None) -> Site:
    settings.DISPLAY_TIME_ZONE = "Europe/Berlin"
    june = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)

    def component(name: str, **kwargs: Any) -> Component:
        return actions.create_component(actor=staff, name=name, at=june, **kwargs)

    query_api = component("Query API", is_group=True)
    us = component("US", group=query_api, description="Queries from workspaces in our US region.")
    eu = component("EU", group=query_api)
    website = component("Website", showcase=False)
    component("Legacy API", only_show_if_degraded=True)
    emails = component("Status emails", only_show_if_degraded=True)
    actions.set_component_status(emails, actor=staff, status="degraded_performance", at=T0 - timedelta(hours=1))

    old = factories.declare(
        actor=staff, title="Webhooks delayed", message="Webhooks are late.", at=datetime(2026, 7, 14, 9, tzinfo=UTC)
    )
    actions.resolve_incident(old, actor=staff, message="Delivered.", at=datetime(2026, 7, 14, 10, tzinfo=UTC))

    # 5 Nov, 10:00–12:00 CET: a two-hour major outage of US.
    outage = datetime(2026, 11, 5, 9, 0, tzinfo=UTC)
    resolved = factories.declare(
        actor=staff,
        title="Query API down for US customers",
        message="Queries from the US fail.",
        components={us: "major_outage"},
        customer_impact_percent="45",
        regions=["US"],
        workaround="Use scheduled exports",
        at=outage,
    )
    actions.post_update(resolved, actor=staff, body="A switch failed; traffic moves.", at=outage + timedelta(hours=1))
    actions.resolve_incident(resolved, actor=staff, message="Queries work again.", at=outage + timedelta(hours=2))

    incident = factories.declare(
        actor=staff,
        title="Slow dashboards in EU",
        message="We are investigating slow dashboards.",
        components={eu: "partial_outage"},
        customer_impact_percent="12.5",
        regions=["EU"],
        workaround="Download the data with **Export → CSV**.",
        at=T0 - timedelta(minutes=30),
    )
    actions.post_update(
        incident,
        actor=staff,
        body="Internal: db-eu-3 is pinned at 100% CPU.",
        is_public=False,
        at=T0 - timedelta(minutes=20),
    )
    actions.post_update(
        incident,
        actor=staff,
        body="We found a **slow query** and are rolling out a fix.",
        public_status="identified",
        at=T0 - timedelta(minutes=10),
    )

    soon = actions.schedule_maintenance(
        actor=staff,
        title="Database upgrade in EU",
        scheduled_for=datetime(2026, 11, 10, 2, 0, tzinfo=UTC),
        scheduled_until=datetime(2026, 11, 10, 4, 0, tzinfo=UTC),
        components=[eu],
        message="EU queries may be slow for ten minutes.",
        at=T0 - timedelta(days=1),
    )
    now = actions.schedule_maintenance(
        actor=staff,
        title="Website hosting move",
        scheduled_for=T0 - timedelta(hours=1),
        scheduled_until=T0 + timedelta(hours=2),
        components=[website],
        at=T0 - timedelta(days=2),
    )
    actions.start_maintenance(now, actor=staff, at=T0 - timedelta(hours=1))
    cancelled = actions.schedule_maintenance(
        actor=staff,
        title="Abandoned network change",
        scheduled_for=datetime(2026, 11, 12, 2, 0, tzinfo=UTC),
        scheduled_until=datetime(2026, 11, 12, 3, 0, tzinfo=UTC),
        at=T0 - timedelta(days=3),
    )
    actions.cancel_maintenance(cancelled, actor=staff, at=T0 - timedelta(days=1))

    snapshot = publishing.publish()
    return Site(us, eu, website, incident, resolved, old, soon, now, cancelled, snapshot.version)


def publish_again(site: Site) -> int:
    """Publish a change, and let the reader look for it at once (instead of within a second)."""
    actions.post_update(site.open, actor=None, body="The fix is rolling out.", at=T0 + timedelta(minutes=1))
    version = publishing.publish().version
    reader.reset()
    return version


# --- what the pages say -------------------------------------------------------------------------


def test_it_shows_the_overall_status_and_the_components(client: Client, site: Site) -> None:
    html = text(client.get("/"))
    page = words(html)

    assert "<h1" in html and "Partial System Outage" in page
    # Groups fold away with <details>; a degraded group starts open, and its status is a word.
    assert re.search(r'<details id="group-\d+" data-default="open" open>', html)
    assert re.search(r"Query API 2 components Partial outage", page)
    assert "US Queries from workspaces in our US region. Operational" in page
    assert "EU Partial outage" in page
    # Only-if-degraded components show only while degraded.
    assert "Status emails Degraded performance" in page
    assert "Legacy API" not in page
    # Status is never colour alone: each status element carries its words.
    assert '<span class="status status--partial-outage">Partial outage</span>' in html


def test_it_shows_the_open_incident_with_its_public_updates_only(client: Client, site: Site) -> None:
    html = text(client.get("/"))
    page = words(html)

    assert "Slow dashboards in EU" in page
    assert "About 12.5% of customers in EU affected" in page
    assert "Affected Query API - EU" in page
    assert "Workaround: Download the data with **Export → CSV**." in page  # plain text, escaped
    # Public updates, newest first, their Markdown rendered; the internal one nowhere.
    assert page.index("Identified We found a slow query") < page.index("Investigating We are investigating")
    assert "<strong>slow query</strong>" in html
    assert "db-eu-3" not in html
    assert "Internal:" not in html
    # The next update is promised 30 minutes (SEV1's cadence) after the last public one.
    assert (
        '<span data-due-label>Next update by</span> <time datetime="2026-11-08T15:25:00+01:00" data-local="nearby">'
        "15:25 CET</time>"
    ) in html


def test_it_lists_incidents_resolved_in_the_last_week(client: Client, site: Site) -> None:
    page = words(text(client.get("/")))

    past = page[page.index("Past incidents") :]
    assert "Query API down for US customers" in past
    assert "Resolved – Queries work again." in past
    assert "5 Nov 2026, 10:00 CET to 12:00 CET · 2 h" in past
    assert "Webhooks delayed" not in page  # July: only in the history


def test_it_shows_maintenance_in_progress_and_upcoming_but_not_cancelled(client: Client, site: Site) -> None:
    page = words(text(client.get("/")))

    now = page[page.index("Maintenance in progress") : page.index("Components")]
    assert "Website hosting move In progress" in now
    assert "Window 8 Nov 2026, 14:05 CET to 17:05 CET" in now
    assert "Affected Website" in now
    upcoming = page[page.index("Scheduled maintenance") :]
    assert "Database upgrade in EU Scheduled" in upcoming
    assert "Window 10 Nov 2026, 03:00 CET to 05:00 CET" in upcoming
    assert "EU queries may be slow for ten minutes." in upcoming
    assert "Abandoned network change" not in page
    assert "Website Under maintenance" in page


def test_it_gives_every_uptime_bar_its_words(client: Client, site: Site) -> None:
    html = text(client.get("/"))

    us_bars = re.search(r'<ol class="bars" aria-label="US: uptime per day, last 90 days">(.*?)</ol>', html)
    assert us_bars is not None
    # One item per day with its words; a clean day needs no class (the stylesheet's default colour).
    bars = re.findall(r'<li(?: class="(\w)")?>([^<]*)</li>', us_bars.group(1))
    assert len(bars) == 90
    assert bars[0] == ("", "11 Aug 2026: 100% uptime")
    # 2 h of major outage in the 24 h of 5 Nov (CET): 91.66%, rounded down.
    assert ("m", "5 Nov 2026: 91.66% uptime, major outage (2 h of counted downtime)") in bars
    assert bars[-1] == ("", "8 Nov 2026: 100% uptime")
    # A sentence per component for screen readers, and the figure people see.
    assert re.search(
        r'<p class="visually-hidden">US: 99\.\d+% uptime over the last 90 days\. 1 day with incidents or maintenance; '
        r"the worst was 5 Nov 2026: 91\.66% uptime, major outage \(2 h of counted downtime\)\.</p>",
        html,
    )
    eu_bars = re.search(r'aria-label="EU: uptime per day, last 90 days">(.*?)</ol>', html)
    assert eu_bars is not None
    # Today so far (15 h 5 min in CET), 30 min of partial outage counted at 0.3: 9 min down.
    assert '<li class="p">8 Nov 2026: 99% uptime, partial outage (9 min of counted downtime)</li>' in eu_bars.group(1)
    # Website is not showcased: no bars.
    assert "Website: uptime per day" not in html


def test_it_says_when_the_snapshot_was_made_in_the_page_zone(client: Client, site: Site) -> None:
    html = text(client.get("/"))

    assert (
        'Last updated <time datetime="2026-11-08T15:05:00+01:00" data-local="datetime">8 Nov 2026, 15:05 CET</time>'
        in html
    )
    # Each time is machine-readable with its offset, and names the zone in its words.
    for stamp, shown in re.findall(r'<time datetime="([^"]+)" data-local="\w+">([^<]+)</time>', html):
        assert stamp.endswith("+01:00")
        assert shown.endswith(" CET")
    # The script that shows times in the reader's zone is a same-origin file, never inline.
    assert re.search(r'<script src="/static/js/public\.js" defer></script>', html)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)


def test_it_shows_an_incident_with_all_public_updates_newest_first(client: Client, site: Site) -> None:
    response = client.get(f"/incidents/{site.resolved.pk}")
    page = words(text(response))

    assert response.status_code == 200
    assert "Query API down for US customers" in page
    assert "Critical impact Resolved" in page
    assert "This incident has been resolved." in page
    assert "Started 5 Nov 2026, 10:00 CET" in page
    assert "Resolved 5 Nov 2026, 12:00 CET" in page
    assert "Duration 2 h" in page
    assert "Impact About 45% of customers in US affected" in page
    assert "Workaround Use scheduled exports" in page
    assert "Affected components Query API - US" in page
    updates = ["Resolved Queries work again.", "Investigating A switch failed", "Investigating Queries from the US"]
    positions = [page.index(update) for update in updates]
    assert positions == sorted(positions)
    assert "Query API - US: operational" in page  # the component change an update made


def test_it_shows_an_open_incident_without_internal_updates(client: Client, site: Site) -> None:
    html = text(client.get(f"/incidents/{site.open.pk}"))
    page = words(html)

    assert "Duration Ongoing" in page
    assert "Next update by 15:25 CET" in page
    assert "Identified We found a slow query" in page
    assert "db-eu-3" not in html


def test_it_shows_a_maintenance_window(client: Client, site: Site) -> None:
    page = words(text(client.get(f"/maintenance/{site.soon.public_id}")))

    assert "Database upgrade in EU" in page
    assert "Scheduled 10 Nov 2026, 03:00 CET to 05:00 CET" in page
    assert "Affected components Query API - EU" in page


def test_it_pages_the_history_by_three_months(client: Client, site: Site) -> None:
    first = text(client.get("/history"))
    page = words(first)

    assert [m for m in ("November 2026", "October 2026", "September 2026") if m in page] == [
        "November 2026",
        "October 2026",
        "September 2026",
    ]
    assert page.index("Slow dashboards in EU") < page.index("Query API down for US customers")
    assert "No incidents reported." in page  # October and September were quiet
    assert "Webhooks delayed" not in page
    assert "Page 1 of 2" in page
    assert '<a class="pager__link" rel="next" href="/history/2">Older →</a>' in first

    second = text(client.get("/history/2"))
    page = words(second)
    assert "August 2026" in page and "July 2026" in page and "June 2026" in page
    assert "Webhooks delayed" in page
    assert "Resolved – Delivered." in page
    assert '<a class="pager__link" rel="prev" href="/history">← Newer</a>' in second
    assert "Older →" in page and 'rel="next"' not in second

    assert client.get("/history/3").status_code == 404
    assert client.get("/history/0").status_code == 404
    redirect = client.get("/history/1")
    assert (redirect.status_code, redirect["Location"]) == (301, "/history")


def test_it_shows_monthly_uptime_and_how_it_is_counted(client: Client, site: Site) -> None:
    html = text(client.get("/uptime"))
    page = words(html)

    assert "A major outage counts fully as downtime, a partial outage counts as 0.3 of its duration" in page
    assert "degraded performance does not count as downtime at all" in page
    assert "Time under maintenance is left out of the calculation" in page
    assert "Component Last 90 days Nov 2026 Oct 2026 Sep 2026 Aug 2026 Jul 2026 Jun 2026" in page
    assert "May 2026" not in page  # before any component existed
    # November so far: 7 days 15 h 5 min, two hours of them down.
    assert re.search(r"Query API – US 99\.\d+% 98\.9% 100% 100% 100% 100% 100%", page)
    assert "Website" not in page  # not showcased


# --- HTTP: zero queries, ETags, HEAD, htmx ------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_it_answers_without_a_single_query(
    client: Client, site: Site, route: str, django_assert_num_queries: Callable[..., Any]
) -> None:
    url = site.url(route)
    assert client.get(url).status_code == 200  # warm: rendered once for this version

    with django_assert_num_queries(0):
        assert client.get(url).status_code == 200
        assert client.get(url, headers=HTMX).status_code == 200


def test_it_never_looks_at_who_is_asking(
    staff_client: Client, site: Site, django_assert_num_queries: Callable[..., Any]
) -> None:
    """A signed-in reader gets the same bytes: no session, user or messages lookup (each would query)."""
    anonymous = Client().get("/").content

    with django_assert_num_queries(0):
        signed_in = staff_client.get("/")

    assert signed_in.content == anonymous
    assert "alice" not in signed_in.content.decode()
    assert "csrftoken" not in signed_in.cookies


@pytest.mark.parametrize("source", ["file", "configured stores"])
@pytest.mark.parametrize("route", ROUTES)
def test_it_answers_a_cold_first_request_without_a_query(
    client: Client,
    site: Site,
    settings: Any,
    route: str,
    source: str,
    django_assert_num_queries: Callable[..., Any],
) -> None:
    if source == "file":
        settings.REDIS_URL = ""  # only the snapshot file to go on
    reader.reset()
    clear_rendered()

    with django_assert_num_queries(0):
        response = client.get(site.url(route))

    assert response.status_code == 200
    assert response["ETag"] == f'"v{site.version}"'


@pytest.mark.parametrize(
    "url",
    ["/incidents/not-a-number", "/incidents/0042", "/maintenance/not-an-id", "/maintenance/Abcdefghijkl", "/history/9"],
)
def test_it_answers_404_for_what_the_snapshot_does_not_have_without_a_query(
    client: Client, site: Site, url: str, django_assert_num_queries: Callable[..., Any]
) -> None:
    reader.reset()
    clear_rendered()

    with django_assert_num_queries(0):
        response = client.get(url)

    assert response.status_code == 404
    assert "We could not find that" in text(response)
    assert "<title>Not found · Signalpost status</title>" in text(response)


def test_it_revalidates_with_the_snapshot_version(
    client: Client, site: Site, monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Callable[..., Any]
) -> None:
    first = client.get("/")
    etag = first["ETag"]

    assert etag == f'"v{site.version}"'
    assert first["Last-Modified"] == "Sun, 08 Nov 2026 14:05:00 GMT"
    assert first["Cache-Control"].startswith("public, max-age=15")
    assert first["Content-Type"] == "text/html; charset=utf-8"
    with django_assert_num_queries(0):
        not_modified = client.get("/", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified["ETag"] == etag

    version = publish_again(site)
    fresh = client.get("/", headers={"If-None-Match": etag})
    assert fresh.status_code == 200
    assert fresh["ETag"] == f'"v{version}"'
    assert "The fix is rolling out." in text(fresh)


@pytest.mark.parametrize("route", ROUTES)
def test_it_answers_head_like_get_without_a_body(client: Client, site: Site, route: str) -> None:
    get = client.get(site.url(route))
    head = client.head(site.url(route))

    assert head.status_code == 200
    assert head.content == b""
    assert head["ETag"] == get["ETag"]
    assert client.post(site.url(route)).status_code == 405


def test_it_gives_htmx_the_live_fragment_only(client: Client, site: Site) -> None:
    full = client.get("/")
    fragment = client.get("/", headers=HTMX)
    html = text(fragment)

    assert fragment.status_code == 200
    assert html.lstrip().startswith('<div id="live"')
    assert "<!doctype html>" not in html and "<head>" not in html and "masthead" not in html
    assert "Slow dashboards in EU" in html and "Partial System Outage" in html
    assert fragment["ETag"] == f'"v{site.version}-hx"' != full["ETag"]
    assert "HX-Request" in fragment["Vary"] and "HX-Request" in full["Vary"]
    # The page polls for it every 30 s, and takes #live out of whatever comes back (fragment or page).
    assert 'data-hx-get="/" data-hx-trigger="every 30s" data-hx-select="#live" data-hx-swap="outerHTML"' in text(full)
    assert client.get("/", headers={**HTMX, "If-None-Match": fragment["ETag"]}).status_code == 304


def test_it_names_each_history_page_for_the_static_export(site: Site) -> None:
    from statuspage.views import history_paths

    document = publishing.publish().document

    assert history_paths(document) == ["/history", "/history/2"]


def test_it_shows_an_empty_page_before_anything_is_set_up(client: Client, frozen: None) -> None:
    publishing.publish()

    page = words(text(client.get("/")))
    assert "All Systems Operational" in page
    assert "No components are listed yet." in page
    assert "No incidents resolved in the last 7 days." in page
    assert "Page 1 of 1" in words(text(client.get("/history")))
    assert "No component shows its uptime yet." in words(text(client.get("/uptime")))


def test_it_serves_public_routes_ahead_of_sessions_and_csrf_with_the_security_headers(
    client: Client, staff: User
) -> None:
    """The fast path (statuspage/middleware.py): no cookie is touched, the policy needs no nonce."""
    from incidents.publishing import publish

    publish()
    client.force_login(staff)
    response = client.get("/")

    assert response.status_code == 200
    assert not hasattr(response.wsgi_request, "session")  # the session and auth middleware never ran
    assert not hasattr(response.wsgi_request, "user")
    assert response["Content-Security-Policy"].startswith("default-src 'self'; script-src 'self';")
    assert "nonce" not in response["Content-Security-Policy"]
    assert (response["X-Content-Type-Options"], response["X-Frame-Options"]) == ("nosniff", "DENY")
    assert int(response["Content-Length"]) == len(response.content)


def test_it_makes_the_pages_own_poll_revalidate_every_time(client: Client, staff: User) -> None:
    """A cached poll with stale-while-revalidate would show every change one poll late."""
    factories.declare(actor=staff, title="Slow queries")
    publishing.publish()

    full = client.get("/")
    poll = client.get("/", headers={"HX-Request": "true"})
    weak = client.get("/", headers={"If-None-Match": f"W/{full['ETag']}"})

    assert "max-age=15" in full["Cache-Control"]
    assert poll["Cache-Control"] == "no-cache"
    assert weak.status_code == 304


@pytest.mark.django_db(transaction=True)  # real commits: each action's publish runs as in production
def test_it_republishes_the_next_update_time_when_severity_changes() -> None:
    staff = factories.make_user(username="alice")
    incident = factories.declare(actor=staff, severity_key="sev3")  # public updates every 4 h
    before = publishing.Snapshot.objects.latest().document["incidents"][0]["next_update_at"]

    actions.change_severity(incident, actor=staff, severity=factories.severity("sev1"))  # every 30 min

    after = publishing.Snapshot.objects.latest().document["incidents"][0]["next_update_at"]
    assert after != before


@pytest.mark.parametrize(
    ("typed", "page"),
    [
        ("/history/", "/history"),
        ("/history/2/", "/history/2"),
        ("/uptime/?x=1", "/uptime?x=1"),
        ("/incidents/7/", "/incidents/7"),
    ],
)
def test_a_trailing_slash_finds_the_page(client: Client, typed: str, page: str) -> None:
    response = client.get(typed)
    assert (response.status_code, response["Location"]) == (301, page)
