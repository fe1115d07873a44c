"""Create a demo status page: an analytics vendor, its components, and a history of incidents.

`make run` calls this on every start, so it is idempotent: when the demo is there it changes nothing,
and it never adds demo data to a database that already holds components or incidents of its own.
Everything goes through incidents.actions with `at=` in the past, so timelines, clocks, breaches and
component history are the ones the app itself would have recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from incidents import actions
from incidents.clocks import sweep_due
from incidents.models import (
    ClockEvent,
    ClockEventKind,
    ClockState,
    Component,
    ComponentStatus,
    EscalationStep,
    Incident,
    IncidentTemplate,
    Metric,
    Postmortem,
    PublicStatus,
    Severity,
)

LOGIN_USERNAME = "oncall"
LOGIN_PASSWORD = "signalpost"  # noqa: S105 - the published demo login
SECOND_USERNAME = "dana"
STORY_TITLE = "Query API degraded for US customers"
# The story's post-mortem: public sections first (customers read them), then the internal ones.
STORY_POSTMORTEM = {
    "summary": (
        "For about five hours, queries from customers in our US region were slow or failing. A faulty network "
        "switch caused timeouts; our own retries then overloaded a database shard, and the slowdown spread "
        "across the region. We were also slow to respond: the first alert went unacknowledged for two and a "
        "half hours, and customers heard nothing from us during that time.",
        True,
    ),
    "root_cause": (
        "A failing top-of-rack switch dropped a share of packets between the query tier and database shard 3. "
        "Queries timed out, and the query client retried each one immediately, up to five times, with no "
        "backoff and no limit across clients. The retries multiplied the load on the shard until it could no "
        "longer keep up with normal traffic either, and queries routed to it from the whole region queued "
        "behind them.",
        True,
    ),
    "trigger": ("Packet loss on one switch in us-east-2.", False),
    "contributing_factors": (
        "- Retries with no backoff, jitter or circuit breaker turned a partial network fault into an overload.\n"
        "- Every dashboard and export read through the same query path: there was no other way to the data.\n"
        "- The page went to one person, whose phone was on silent; nobody else was paged.",
        False,
    ),
    "detection": (
        "An automated latency alert fired 10 minutes after the switch began failing. It was acknowledged 2 h 30 min "
        "later, against a 15-minute target for this severity.",
        True,
    ),
    "resolution": (
        "We took the faulty switch out of service, rerouted traffic, and capped retries in the query client. The "
        "backlog on the shard cleared within 40 minutes.",
        True,
    ),
    "went_well": ("Rerouting around the switch took minutes once someone was looking.", False),
    "went_wrong": (
        "Two and a half hours passed before anyone acknowledged the page, and our first public update came "
        "after that. Customers worked around us with exports and cached dashboards.",
        False,
    ),
    "lessons": (
        "- **Back off.** Retries now back off exponentially with jitter, and a circuit breaker stops them when "
        "a shard is struggling, so a small fault stays small.\n"
        "- **More than one path to the data.** Dashboards and exports will fall back to cached results when "
        "the query path is down.\n"
        "- **Acknowledge fast.** A SEV1 or SEV2 that is not acknowledged in 15 minutes now pages a second "
        "person, and we post a first public update within 30 minutes whatever we know by then.",
        True,
    ),
}
OPEN_TITLE = "Delayed CSV exports in EU"

OPERATIONAL = ComponentStatus.OPERATIONAL
DEGRADED = ComponentStatus.DEGRADED_PERFORMANCE
PARTIAL = ComponentStatus.PARTIAL_OUTAGE
MAJOR = ComponentStatus.MAJOR_OUTAGE
INVESTIGATING = PublicStatus.INVESTIGATING
IDENTIFIED = PublicStatus.IDENTIFIED
MONITORING = PublicStatus.MONITORING

# (group, description, [(component, description)]); a group of None is a top-level component.
COMPONENTS: list[tuple[str | None, str, list[tuple[str, str]]]] = [
    (
        "Query API",
        "Runs the queries behind dashboards, exports and our public API.",
        [
            ("US", "Queries for workspaces hosted in our US region."),
            ("EU", "Queries for workspaces hosted in our EU region."),
            ("APAC", "Queries for workspaces hosted in our Asia-Pacific region."),
        ],
    ),
    (
        "Ingestion",
        "Receives and processes the data you send us.",
        [
            ("HTTP collector", "Receives events from our SDKs and the HTTP tracking API."),
            ("Batch import", "Imports CSV and Parquet files and scheduled warehouse syncs."),
        ],
    ),
    (
        "Dashboards",
        "Charts, reports and dashboards, in our web app and embedded in yours.",
        [
            ("Web app", "Dashboards, reports and workspace settings in our web app."),
            ("Embedded dashboards", "Dashboards embedded in your own site or product."),
        ],
    ),
    (
        "Exports",
        "Scheduled and on-demand exports of your data.",
        [
            ("US", "CSV and warehouse exports for workspaces in our US region."),
            ("EU", "CSV and warehouse exports for workspaces in our EU region."),
        ],
    ),
    (None, "", [("Alerts", "Threshold and anomaly alerts by email, Slack and webhook.")]),
    (None, "", [("Authentication", "Sign-in with password, Google and single sign-on (SAML).")]),
    (None, "", [("Website", "Our website, documentation and pricing pages.")]),
]

# (name, title, severity, message, components, component status)
TEMPLATES: list[tuple[str, str, str, str, list[str], str]] = [
    (
        "Elevated API latency",
        "Elevated query latency",
        "sev2",
        "We're investigating slower than usual responses from the Query API. Dashboards and API requests "
        "may take longer to load or time out. Incoming data is not affected.",
        ["Query API - US", "Query API - EU", "Query API - APAC"],
        DEGRADED,
    ),
    (
        "Ingestion delays",
        "Delays in data ingestion",
        "sev3",
        "Data you send us is being received, but is taking longer than usual to appear in dashboards. "
        "No data has been lost.",
        ["Ingestion - HTTP collector", "Ingestion - Batch import"],
        DEGRADED,
    ),
    (
        "Dashboard errors",
        "Dashboards failing to load",
        "sev2",
        "Some dashboards are failing to load or show an error. We're investigating. "
        "The Query API and data ingestion are working normally.",
        ["Dashboards - Web app", "Dashboards - Embedded dashboards"],
        PARTIAL,
    ),
    (
        "Scheduled exports delayed",
        "Scheduled exports delayed",
        "sev3",
        "Scheduled exports are running later than usual. Exports are queued and will complete; no data has been lost.",
        ["Exports - US", "Exports - EU"],
        DEGRADED,
    ),
]


def _hhmm(moment: datetime) -> str:
    return f"{moment:%H:%M} UTC"


def _day(moment: datetime) -> str:
    return f"{moment.day} {moment:%B}"


def _duration(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        return f"{hours} h {minutes} min"
    return f"{hours} h" if hours else f"{minutes} min"


@dataclass
class Summary:
    users: list[str] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    templates: int = 0
    escalation: list[str] = field(default_factory=list)
    swept: int = 0


class Demo:
    """Builds the demo page; each incident is a short script of actions at times relative to `now`."""

    def __init__(self, now: datetime, summary: Summary) -> None:
        self.now = now
        self.summary = summary
        self.severities = {severity.key: severity for severity in Severity.objects.all()}
        missing = {"sev1", "sev2", "sev3", "sev4"} - set(self.severities)
        if missing:
            raise CommandError(f"Severities {', '.join(sorted(missing))} are missing; run `manage.py migrate` first.")
        self.components: dict[str, Component] = {}
        self.oncall = self._user(
            LOGIN_USERNAME, first_name="Alex", last_name="Moreno", password=LOGIN_PASSWORD, superuser=True
        )
        self.dana = self._user(SECOND_USERNAME, first_name="Dana", last_name="Okafor", password=None, superuser=False)

    def _user(self, username: str, *, first_name: str, last_name: str, password: str | None, superuser: bool) -> User:
        user = User.objects.filter(username=username).first()
        if user is not None:
            return user  # someone made it already: keep their password and permissions
        email = f"{username}@example.com"
        names = {"first_name": first_name, "last_name": last_name}
        if superuser:
            user = User.objects.create_superuser(username, email, password, **names)
        else:
            user = User.objects.create_user(username, email, password, is_staff=True, **names)
        self.summary.users.append(f"{username} ({'superuser' if superuser else 'staff'})")
        return user

    def days_ago(self, days: int, hour: int, minute: int) -> datetime:
        return (self.now - timedelta(days=days)).replace(hour=hour, minute=minute, second=0, microsecond=0)

    def _parts(self, statuses: dict[str, str]) -> dict[Component, str]:
        return {self.components[name]: status for name, status in statuses.items()}

    def build(self) -> None:
        self.create_components(self.now - timedelta(days=90))
        self.create_templates()
        self.slack_alerts_delayed()
        self.http_collector_delays()
        self.embedded_dashboards_safari()
        self.sso_certificate_expired()
        self.pricing_page_outdated()
        self.story_query_api_us()
        self.batch_imports_stuck()
        self.query_api_eu_errors()
        self.open_exports_eu()
        # Resolved incidents recorded their thresholds as their clocks stopped; this catches the open one.
        self.summary.swept = sweep_due(self.now)
        # After the history, which predates paging: incidents declared from now on page people.
        self.create_escalation()

    # --- configuration ---------------------------------------------------------------------------

    def create_components(self, since: datetime) -> None:
        for group_name, group_description, children in COMPONENTS:
            group = None
            if group_name is not None:
                group = actions.create_component(
                    actor=self.oncall, name=group_name, is_group=True, description=group_description, at=since
                )
            for name, description in children:
                component = actions.create_component(
                    actor=self.oncall, name=name, group=group, description=description, at=since
                )
                self.components[component.display_name] = component

    def create_templates(self) -> None:
        for name, title, severity, message, components, status in TEMPLATES:
            template, created = IncidentTemplate.objects.get_or_create(
                name=name,
                defaults={
                    "title": title,
                    "severity": self.severities[severity],
                    "message": message,
                    "component_status": status,
                },
            )
            if created:
                template.components.set([self.components[c] for c in components])
                self.summary.templates += 1

    def create_escalation(self) -> None:
        """SEV1 pages the on-call at once, then Dana and the managers' alias, and goes round once more;
        SEV2 pages the on-call, then Dana. The lesson of the story: nobody acknowledged for 2.5 h."""
        policies = {
            "sev1": (1, 15, [(0, [self.oncall], ""), (5, [self.dana], "incident-managers@example.com")]),
            "sev2": (0, 30, [(0, [self.oncall], ""), (15, [self.dana], "")]),
        }
        for key, (repeats, repeat_minutes, steps) in policies.items():
            severity = self.severities[key]
            if severity.escalation_steps.exists():
                continue  # someone set their own
            severity.escalation_repeats, severity.escalation_repeat_minutes = repeats, repeat_minutes
            severity.save(update_fields=["escalation_repeats", "escalation_repeat_minutes"])
            for position, (after, people, addresses) in enumerate(steps, start=1):
                step = EscalationStep.objects.create(
                    severity=severity, position=position, after_minutes=after, addresses=addresses
                )
                step.users.set(people)
            self.summary.escalation.append(
                f"{severity.name} {len(steps)} steps" + (f" ×{repeats + 1}" if repeats else "")
            )

    # --- the story -------------------------------------------------------------------------------

    def story_query_api_us(self) -> None:
        """The SEV1: a bad switch, retries that overloaded a database shard, and a page nobody saw."""
        start = self.days_ago(20, 14, 5)

        def t(minutes: int) -> datetime:
            return start + timedelta(minutes=minutes)

        us = self.components["Query API - US"]
        incident = actions.declare_incident(
            actor=None,  # declared by monitoring
            title=STORY_TITLE,
            severity=self.severities["sev2"],
            message=(
                "Automated alert: p95 query latency in the US region has been above 4 s for 10 minutes "
                "(normal: under 800 ms). Error rate 6%."
            ),
            message_is_public=False,
            components={us: PARTIAL},
            regions=["US"],
            at=start,
        )
        actions.acknowledge_incident(incident, actor=self.oncall, at=t(150))
        actions.assign_commander(incident, actor=self.oncall, commander=self.oncall, at=t(150))
        actions.post_update(
            incident,
            actor=self.oncall,
            is_public=False,
            body=(
                "Picking this up. The page went to the secondary rotation, which had nobody scheduled after "
                "Monday's handover change; support escalated after customer tickets. Latency and errors on the "
                "US cluster are still climbing."
            ),
            at=t(152),
        )
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=INVESTIGATING,
            body=(
                "We're investigating slow and failing queries on the Query API for customers in our US region. "
                "Dashboards and API requests that run queries may take a long time to load or time out. "
                "Incoming data is not affected: events are being collected as normal."
            ),
            at=t(160),
        )
        actions.change_severity(incident, actor=self.dana, severity=self.severities["sev1"], at=t(165))
        actions.update_impact_scope(
            incident,
            actor=self.dana,
            customer_impact_percent=45,
            regions=["US"],
            workaround="Use scheduled exports and cached dashboards",
            at=t(170),
        )
        actions.post_update(
            incident,
            actor=self.dana,
            public_status=INVESTIGATING,
            body=(
                "The problem has got worse: most queries in our US region are now failing, and about 45% of our "
                "customers are affected. While we work on it, scheduled exports still run, and dashboards with "
                "caching turned on keep showing their last refreshed data."
            ),
            components={us: MAJOR},
            at=t(175),
        )
        actions.post_update(
            incident,
            actor=self.oncall,
            is_public=False,
            body=(
                "Network team confirmed packet loss on the top-of-rack switch for rack C14 in the US data centre. "
                "Query workers behind it time out and retry up to 5 times with no backoff; shard us-07 is at "
                "100% CPU from the retries and its replicas are falling behind."
            ),
            at=t(195),
        )
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=IDENTIFIED,
            body=(
                "We've found the cause. A faulty network switch in one of our US data centres is dropping traffic "
                "between our query servers and one of our databases. Failed queries were retried automatically, "
                "and the extra load overwhelmed that database, which slowed down queries for other US customers "
                "too. We're moving traffic away from the faulty switch and reducing the retry load."
            ),
            at=t(200),
        )
        actions.post_update(
            incident,
            actor=self.oncall,
            is_public=False,
            body=(
                "Rolled back retry policy on query workers: at most 2 retries, with exponential backoff. "
                "Drained rack C14 from the query pool; us-07 CPU down to 70%."
            ),
            at=t(215),
        )
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=IDENTIFIED,
            body=(
                "Traffic has been moved off the faulty switch and the load on the database is falling. "
                "Many queries are succeeding again, but responses are still slow while the database catches up."
            ),
            components={us: PARTIAL},
            at=t(225),
        )
        actions.post_update(
            incident,
            actor=self.dana,
            public_status=MONITORING,
            body=(
                "A fix is in place. Query response times for US customers are back to normal for most requests. "
                "The database is still working through a backlog, so some large queries may be slower than usual "
                "for a while. We're monitoring closely."
            ),
            components={us: DEGRADED},
            at=t(250),
        )
        actions.post_update(
            incident,
            actor=self.dana,
            public_status=MONITORING,
            body=(
                "Response times and error rates have been normal for the last 30 minutes and the database backlog "
                "has cleared. Scheduled exports that ran late during the incident have all completed."
            ),
            at=t(280),
        )
        end = t(315)
        incident = actions.resolve_incident(
            incident,
            actor=self.oncall,
            message=(
                f"This incident has been resolved. Between {_hhmm(start)} and {_hhmm(end)} on {_day(start)}, "
                "queries from customers in our US region were slow or failing. A faulty network switch caused "
                "timeouts; automatic retries then overloaded one of our databases, which spread the slowdown "
                "across the region. We've replaced the switch and limited how often failed queries are retried. "
                "We were also too slow to respond, and we'll publish a post-mortem covering both."
            ),
            at=end,
        )
        self.summary.incidents.append(incident)
        self.story_postmortem(incident, end)

    def story_postmortem(self, incident: Incident, resolved: datetime) -> None:
        """The story's post-mortem, reviewed and published four days after the incident."""
        postmortem = Postmortem.objects.get(incident=incident)

        def day(days: float) -> datetime:
            return resolved + timedelta(days=days)

        actions.edit_postmortem(postmortem, actor=self.oncall, at=day(1), sections=STORY_POSTMORTEM)
        for at, text in (
            (incident.declared_at - timedelta(minutes=12), "A top-of-rack switch in us-east-2 starts dropping packets"),
            (incident.declared_at + timedelta(minutes=35), "Retry traffic reaches 4x normal; shard 3 CPU at 100%"),
            (incident.declared_at + timedelta(minutes=190), "Switch taken out of service; traffic rerouted"),
        ):
            actions.add_postmortem_entry(postmortem, actor=self.oncall, at=at, text=text, is_public=True)
        for title, kind, priority, owner, days, status in (
            ("Exponential backoff with full jitter in the query client", "prevent", "p1", self.dana, 7, "done"),
            ("Circuit breaker in front of each database shard", "mitigate", "p1", self.oncall, 14, "in_progress"),
            ("Page a second person when a SEV1 or SEV2 is not acknowledged in 15 minutes", "process", "p1",
             self.oncall, 5, "done"),
            ("Alert on switch packet loss, not only on query latency", "detect", "p2", self.dana, 21, "open"),
            ("Serve dashboards from the cache and exports when the query path is down", "mitigate", "p2",
             self.dana, 30, "open"),
        ):  # fmt: skip
            item = actions.add_action_item(
                postmortem,
                actor=self.oncall,
                title=title,
                kind=kind,
                priority=priority,
                owner=owner,
                due_date=(resolved + timedelta(days=days)).date(),
                at=day(1),
            )
            if status != "open":
                actions.set_action_item_status(item, actor=owner, status=status, at=day(min(days, 3)))
        actions.submit_postmortem(postmortem, actor=self.oncall, at=day(2))
        actions.publish_postmortem(postmortem, actor=self.dana, at=day(4))

    # --- the open incident -----------------------------------------------------------------------

    def open_exports_eu(self) -> None:
        start = (self.now - timedelta(minutes=65)).replace(second=0, microsecond=0)
        incident = actions.declare_incident(
            actor=self.dana,
            title=OPEN_TITLE,
            severity=self.severities["sev3"],
            message=(
                "Scheduled CSV exports for workspaces in our EU region are running late: most are finishing "
                "20 to 40 minutes after their scheduled time. Exports are queued and none have been lost. "
                "Exports in other regions are not affected."
            ),
            components={self.components["Exports - EU"]: DEGRADED},
            customer_impact_percent=8,
            regions=["EU"],
            workaround="Download the data you need from the dashboard with Export → CSV.",
            at=start,
        )
        actions.acknowledge_incident(incident, actor=self.oncall, at=start + timedelta(minutes=7))
        actions.post_update(
            incident,
            actor=self.oncall,
            is_public=False,
            body=(
                "Export workers in the EU region are saturated: one customer's backfill scheduled 1,200 exports "
                "at once. Added 4 workers; the queue is draining at about 150 jobs a minute."
            ),
            at=start + timedelta(minutes=25),
        )
        self.summary.incidents.append(incident)

    # --- older history ---------------------------------------------------------------------------

    def slack_alerts_delayed(self) -> None:
        """SEV3, 58 days ago: every target met."""
        start = self.days_ago(58, 13, 0)
        incident = actions.declare_incident(
            actor=self.oncall,
            title="Slack alert notifications delayed",
            severity=self.severities["sev3"],
            message=(
                "Alert notifications sent to Slack are arriving up to 15 minutes late. "
                "Email and webhook notifications are on time."
            ),
            components=self._parts({"Alerts": DEGRADED}),
            customer_impact_percent=15,
            workaround="Add an email or webhook destination to alerts you rely on.",
            at=start,
        )
        actions.acknowledge_incident(incident, actor=self.oncall, at=start + timedelta(minutes=1))
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=IDENTIFIED,
            body=(
                "Slack is limiting how many messages we can send, after a change on our side put fewer alerts "
                "into each message. We're reverting that change."
            ),
            at=start + timedelta(minutes=30),
        )
        end = start + timedelta(minutes=75)
        incident = actions.resolve_incident(
            incident,
            actor=self.oncall,
            message=(
                f"Slack notifications have been on time since {_hhmm(start + timedelta(minutes=55))}, "
                "and every delayed notification has been delivered."
            ),
            at=end,
        )
        self.summary.incidents.append(incident)

    def http_collector_delays(self) -> None:
        """SEV2, 54 days ago: every target met."""
        start = self.days_ago(54, 9, 20)
        incident = actions.declare_incident(
            actor=self.dana,
            title="Ingestion delays for the HTTP collector",
            severity=self.severities["sev2"],
            message=(
                "Events sent to the HTTP collector are being accepted, but are taking about 20 minutes to appear "
                "in dashboards. No data has been lost."
            ),
            components=self._parts({"Ingestion - HTTP collector": DEGRADED}),
            customer_impact_percent=30,
            regions=["US", "EU", "APAC"],
            at=start,
        )
        actions.acknowledge_incident(incident, actor=self.oncall, at=start + timedelta(minutes=6))
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=IDENTIFIED,
            body=(
                "A configuration change to our event queue this morning made the workers that process incoming "
                "events restart repeatedly. We're rolling the change back."
            ),
            at=start + timedelta(minutes=35),
        )
        recovered = start + timedelta(minutes=70)
        actions.post_update(
            incident,
            actor=self.dana,
            public_status=MONITORING,
            body=(
                "The change has been rolled back and the backlog is shrinking. New events appear in dashboards "
                "within a minute again; events that were delayed will catch up over the next half hour."
            ),
            at=recovered,
        )
        incident = actions.resolve_incident(
            incident,
            actor=self.dana,
            message=(
                "The backlog has cleared and every delayed event has been processed. Ingestion has been running "
                f"normally since {_hhmm(recovered)}."
            ),
            at=start + timedelta(minutes=110),
        )
        self.summary.incidents.append(incident)

    def embedded_dashboards_safari(self) -> None:
        """SEV3, 43 days ago: acknowledged in time, but the first public update came late."""
        start = self.days_ago(43, 16, 40)
        incident = actions.declare_incident(
            actor=self.oncall,
            title="Embedded dashboards not loading in Safari",
            severity=self.severities["sev3"],
            message=(
                "Support has three tickets about embedded dashboards showing a blank frame in Safari. "
                "Reproduced on Safari 18; Chrome and Firefox work."
            ),
            message_is_public=False,
            components=self._parts({"Dashboards - Embedded dashboards": PARTIAL}),
            customer_impact_percent=5,
            workaround="Open the dashboard in our web app, or view the embedding page in another browser.",
            at=start,
        )
        actions.acknowledge_incident(incident, actor=self.oncall, at=start + timedelta(minutes=3))
        actions.post_update(
            incident,
            actor=self.dana,
            public_status=INVESTIGATING,
            body=(
                "Embedded dashboards are not loading for some visitors using Safari: the dashboard area stays "
                "blank. Dashboards in our web app, and embedded dashboards in other browsers, work normally. "
                "We're investigating."
            ),
            at=start + timedelta(minutes=95),
        )
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=IDENTIFIED,
            body=(
                "Yesterday's release changed how embedded dashboards sign viewers in, and Safari blocks that "
                "sign-in inside an embedded frame. We're preparing a fix."
            ),
            at=start + timedelta(minutes=150),
        )
        fixed = start + timedelta(minutes=260)
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=MONITORING,
            body=(
                "We've released a fix, and embedded dashboards load in Safari again. If a dashboard still looks "
                "blank, reload the page it is embedded in."
            ),
            at=fixed,
        )
        incident = actions.resolve_incident(
            incident,
            actor=self.dana,
            message=(
                f"Embedded dashboards have loaded normally in Safari since the fix at {_hhmm(fixed)}. "
                "Our release checks now run in Safari too."
            ),
            at=start + timedelta(minutes=330),
        )
        self.summary.incidents.append(incident)

    def sso_certificate_expired(self) -> None:
        """SEV2, 34 days ago: public within minutes, but acknowledged late."""
        start = self.days_ago(34, 7, 50)
        incident = actions.declare_incident(
            actor=self.dana,
            title="Single sign-on logins failing",
            severity=self.severities["sev2"],
            message=(
                "Some customers who sign in with single sign-on (SAML) see an error and can't log in. "
                "Password and Google sign-in work normally, and people who are already signed in are not affected."
            ),
            components=self._parts({"Authentication": PARTIAL}),
            customer_impact_percent=12,
            at=start,
        )
        actions.acknowledge_incident(incident, actor=self.oncall, at=start + timedelta(minutes=24))
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=IDENTIFIED,
            body=(
                "A certificate we use to check single sign-on responses expired at "
                f"{_hhmm(start - timedelta(minutes=20))}. We're installing a renewed certificate."
            ),
            at=start + timedelta(minutes=40),
        )
        fixed = start + timedelta(minutes=58)
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=MONITORING,
            body=(
                "The renewed certificate is installed and single sign-on works again. If you still see an error, "
                "close the browser tab and sign in again."
            ),
            components=self._parts({"Authentication": OPERATIONAL}),
            at=fixed,
        )
        incident = actions.resolve_incident(
            incident,
            actor=self.oncall,
            message=(
                f"Single sign-on has worked normally since {_hhmm(fixed)}. We now get a warning 30 days before "
                "any of our certificates expires."
            ),
            at=start + timedelta(minutes=85),
        )
        self.summary.incidents.append(incident)

    def pricing_page_outdated(self) -> None:
        """SEV4, 27 days ago: internal only, as SEV4s are."""
        start = self.days_ago(27, 11, 15)
        incident = actions.declare_incident(
            actor=self.dana,
            title="Pricing page shows outdated plan limits",
            severity=self.severities["sev4"],
            message=(
                "The pricing page still lists the old limit of 10M events a month for the Team plan; it went up "
                "to 25M on the 1st. Flagged by sales."
            ),
            message_is_public=False,
            at=start,
        )
        actions.acknowledge_incident(incident, actor=self.oncall, at=start + timedelta(minutes=50))
        actions.post_update(
            incident,
            actor=self.oncall,
            is_public=False,
            body=(
                "The page was served from a stale CDN cache after a CMS publish failed without an error. "
                "Re-published and purged the cache."
            ),
            at=start + timedelta(minutes=130),
        )
        incident = actions.resolve_incident(
            incident,
            actor=self.oncall,
            message="The pricing page shows the current limits. Follow-up: alert when a CMS publish fails.",
            is_public=False,
            at=start + timedelta(minutes=140),
        )
        self.summary.incidents.append(incident)

    def batch_imports_stuck(self) -> None:
        """SEV3, 13 days ago, overnight: public in time, acknowledged late."""
        start = self.days_ago(13, 3, 10)
        incident = actions.declare_incident(
            actor=None,  # declared by monitoring
            title="Batch imports stuck in queue",
            severity=self.severities["sev3"],
            message="Automated alert: 214 batch import jobs have waited more than 30 minutes (threshold: 50).",
            message_is_public=False,
            components=self._parts({"Ingestion - Batch import": DEGRADED}),
            customer_impact_percent=10,
            at=start,
        )
        actions.post_update(
            incident,
            actor=self.dana,
            public_status=INVESTIGATING,
            body=(
                "Batch imports are taking longer than usual to start. Jobs are queued and will run; no data has "
                "been lost. Live data sent through the HTTP collector is not affected."
            ),
            at=start + timedelta(minutes=40),
        )
        actions.acknowledge_incident(incident, actor=self.oncall, at=start + timedelta(minutes=85))
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=IDENTIFIED,
            body=(
                "One very large import file was holding up the import workers for everyone else. We've moved it "
                "to a separate queue, and the backlog is being processed."
            ),
            at=start + timedelta(minutes=100),
        )
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=MONITORING,
            body=(
                "Every queued import has started, and most finished within an hour of being submitted. "
                "We're watching the last few."
            ),
            at=start + timedelta(minutes=150),
        )
        incident = actions.resolve_incident(
            incident,
            actor=self.oncall,
            message=(
                "All delayed batch imports have finished. Large imports now run in their own queue, so one big "
                "file can no longer hold up everyone else's."
            ),
            at=start + timedelta(minutes=200),
        )
        self.summary.incidents.append(incident)

    def query_api_eu_errors(self) -> None:
        """SEV2, 6 days ago: found and fixed inside every target."""
        start = self.days_ago(6, 15, 30)
        incident = actions.declare_incident(
            actor=self.dana,
            title="Elevated error rates on the EU Query API",
            severity=self.severities["sev2"],
            message=(
                "Some queries in our EU region are failing with a 503 error; retrying usually works. "
                "We're investigating."
            ),
            components=self._parts({"Query API - EU": DEGRADED}),
            customer_impact_percent=10,
            regions=["EU"],
            at=start,
        )
        actions.acknowledge_incident(incident, actor=self.oncall, at=start + timedelta(minutes=4))
        actions.post_update(
            incident,
            actor=self.oncall,
            public_status=IDENTIFIED,
            body=(
                "One of our EU query servers was running out of memory after this afternoon's release. "
                "We're rolling the release back."
            ),
            at=start + timedelta(minutes=22),
        )
        incident = actions.resolve_incident(
            incident,
            actor=self.oncall,
            message=(
                f"The release was rolled back at {_hhmm(start + timedelta(minutes=31))}, and error rates have been "
                "normal since. We'll fix the memory problem before releasing again."
            ),
            at=start + timedelta(minutes=48),
        )
        self.summary.incidents.append(incident)


class Command(BaseCommand):
    help = "Create a demo status page with a history of incidents (does nothing when data is already there)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force", action="store_true", help="Add the demo even with DEBUG off (it has a published login)."
        )

    def handle(self, *args: Any, force: bool = False, **options: Any) -> None:
        if not settings.DEBUG and not force:
            self.stdout.write(
                "DEBUG is off, so no demo data was added: it includes a superuser with a published password. "
                "Use --force to add it anyway."
            )
            return
        if Incident.objects.filter(title=STORY_TITLE).exists():
            self.stdout.write(f'The demo is already there (incident "{STORY_TITLE}"); nothing changed.')
        elif Component.objects.exists() or Incident.objects.exists():
            self.stdout.write("Not adding demo data: this database already has components or incidents of its own.")
        else:
            summary = Summary()
            with transaction.atomic():
                Demo(timezone.now(), summary).build()
            self._report(summary)
        self._login_hint()

    def _report(self, summary: Summary) -> None:
        write = self.stdout.write
        write(self.style.SUCCESS("Created the demo status page of an analytics vendor:"))
        if summary.users:
            write(f"  users:      {', '.join(summary.users)}")
        groups = Component.objects.filter(is_group=True).count()
        leaves = Component.objects.filter(is_group=False)
        top_level = leaves.filter(group__isnull=True).count()
        write(
            f"  components: {leaves.count()} ({leaves.count() - top_level} in {groups} groups, {top_level} top-level)"
        )
        write(f"  templates:  {summary.templates}")
        if summary.escalation:
            write(f"  paging:     {', '.join(summary.escalation)} (Severity in /admin/)")
        write(f"  incidents:  {len(summary.incidents)}")
        for incident in sorted(summary.incidents, key=lambda i: i.declared_at):
            write(f"    {self._line(incident)}")
        breaches = ClockEvent.objects.filter(kind=ClockEventKind.BREACH).count()
        warnings = ClockEvent.objects.exclude(kind=ClockEventKind.BREACH).count()
        write(f"  clocks:     {breaches} breaches and {warnings} warnings recorded ({summary.swept} by the sweep)")

    def _line(self, incident: Incident) -> str:
        incident.refresh_from_db()
        name = f"{incident.severity.name} {incident.title}"
        declared = f"{incident.declared_at.day} {incident.declared_at:%b}"
        if not incident.is_resolved:
            return f"{name}: open, declared {_duration(timezone.now() - incident.declared_at)} ago"
        assert incident.resolved_at is not None and incident.acknowledged_at is not None
        missed = [Metric(clock.metric).label.lower() for clock in incident.clocks.filter(state=ClockState.BREACHED)]
        return (
            f"{name} ({declared}): acknowledged after {_duration(incident.acknowledged_at - incident.declared_at)}, "
            f"resolved after {_duration(incident.resolved_at - incident.declared_at)}"
            + (f"; missed targets: {', '.join(missed)}" if missed else "; every target met")
        )

    def _login_hint(self) -> None:
        url = f"{settings.SITE_URL}{reverse('incidents:dashboard')}"
        user = User.objects.filter(username=LOGIN_USERNAME).first()
        if user is not None and user.is_active and user.is_staff and user.check_password(LOGIN_PASSWORD):
            self.stdout.write(self.style.SUCCESS(f"Log in at {url} as {LOGIN_USERNAME} / {LOGIN_PASSWORD}"))
        else:
            self.stdout.write(f"Log in at {url} (create a login with `manage.py createsuperuser`).")
