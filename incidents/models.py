"""The incident domain. Every write with consequences goes through the incidents.actions package."""

from __future__ import annotations

import hashlib
import secrets
import string
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from django.utils import timezone

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # noqa: F401


class ComponentStatus(models.TextChoices):
    OPERATIONAL = "operational", "Operational"
    DEGRADED_PERFORMANCE = "degraded_performance", "Degraded performance"
    PARTIAL_OUTAGE = "partial_outage", "Partial outage"
    MAJOR_OUTAGE = "major_outage", "Major outage"
    UNDER_MAINTENANCE = "under_maintenance", "Under maintenance"


# Worst first; used for group status and derived impact.
COMPONENT_STATUS_RANK = {
    ComponentStatus.OPERATIONAL: 0,
    ComponentStatus.UNDER_MAINTENANCE: 1,
    ComponentStatus.DEGRADED_PERFORMANCE: 2,
    ComponentStatus.PARTIAL_OUTAGE: 3,
    ComponentStatus.MAJOR_OUTAGE: 4,
}


class Impact(models.TextChoices):
    NONE = "none", "None"
    MINOR = "minor", "Minor"
    MAJOR = "major", "Major"
    CRITICAL = "critical", "Critical"


IMPACT_FOR_COMPONENT_STATUS = {
    ComponentStatus.OPERATIONAL: Impact.NONE,
    ComponentStatus.UNDER_MAINTENANCE: Impact.NONE,
    ComponentStatus.DEGRADED_PERFORMANCE: Impact.MINOR,
    ComponentStatus.PARTIAL_OUTAGE: Impact.MAJOR,
    ComponentStatus.MAJOR_OUTAGE: Impact.CRITICAL,
}
IMPACT_RANK = {Impact.NONE: 0, Impact.MINOR: 1, Impact.MAJOR: 2, Impact.CRITICAL: 3}


class Component(models.Model):
    """A component or, with is_group, a group of components (two levels, as on Statuspage)."""

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    group = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        limit_choices_to={"is_group": True},
    )
    is_group = models.BooleanField(default=False)
    position = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=32, choices=ComponentStatus.choices, default=ComponentStatus.OPERATIONAL)
    showcase = models.BooleanField(default=True, help_text="Show 90-day uptime bars on the public page.")
    only_show_if_degraded = models.BooleanField(default=False)
    start_date = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["group", "name"], name="component_name_unique_in_group"),
            models.UniqueConstraint(
                fields=["name"], condition=Q(group__isnull=True), name="component_name_unique_at_top"
            ),
        ]

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        """'Group - Component', as Statuspage names affected components."""
        if self.group_id is not None and self.group is not None:
            return f"{self.group.name} - {self.name}"
        return self.name


class ComponentStatusChange(models.Model):
    """Every status change of a component; uptime is computed from this history."""

    component = models.ForeignKey(Component, on_delete=models.CASCADE, related_name="status_changes")
    old_status = models.CharField(max_length=32, choices=ComponentStatus.choices)
    new_status = models.CharField(max_length=32, choices=ComponentStatus.choices)
    changed_at = models.DateTimeField(default=timezone.now)
    incident = models.ForeignKey("Incident", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["changed_at", "id"]
        indexes = [models.Index(fields=["component", "changed_at"])]

    def __str__(self) -> str:
        return f"{self.component_id}: {self.old_status} → {self.new_status} at {self.changed_at:%Y-%m-%d %H:%M} UTC"


class Severity(models.Model):
    """A severity level and its response targets (seconds; null means no target)."""

    key = models.SlugField(max_length=16, unique=True)
    name = models.CharField(max_length=50)
    description = models.CharField(max_length=200, blank=True)
    rank = models.PositiveSmallIntegerField(unique=True, help_text="1 is the most severe.")
    acknowledge_target = models.PositiveIntegerField(null=True, blank=True)
    first_update_target = models.PositiveIntegerField(null=True, blank=True)
    update_cadence_target = models.PositiveIntegerField(null=True, blank=True)
    resolve_target = models.PositiveIntegerField(null=True, blank=True)
    postmortem_required = models.BooleanField(
        default=False, help_text="Resolving an incident of this severity opens a post-mortem draft."
    )
    postmortem_target = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds from resolve to a published post-mortem."
    )
    escalation_repeats = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(10)],
        help_text="How many times the escalation steps run again while nobody acknowledges (0: once only).",
    )
    escalation_repeat_minutes = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1)],
        help_text="Minutes from the last step of a run to the first step of the next.",
    )

    class Meta:
        ordering = ["rank"]
        verbose_name_plural = "severities"

    def __str__(self) -> str:
        return self.name

    def target_for(self, metric: str) -> int | None:
        value: int | None = getattr(self, f"{metric}_target")
        return value


class IncidentStatus(models.TextChoices):
    """Internal lifecycle; each step stamps its milestone once."""

    DECLARED = "declared", "Declared"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    IDENTIFIED = "identified", "Identified"
    MITIGATED = "mitigated", "Mitigated"
    RESOLVED = "resolved", "Resolved"


class PublicStatus(models.TextChoices):
    INVESTIGATING = "investigating", "Investigating"
    IDENTIFIED = "identified", "Identified"
    MONITORING = "monitoring", "Monitoring"
    RESOLVED = "resolved", "Resolved"


class IncidentQuerySet(models.QuerySet["Incident"]):
    def open(self) -> IncidentQuerySet:
        return self.exclude(status=IncidentStatus.RESOLVED)

    def resolved(self) -> IncidentQuerySet:
        return self.filter(status=IncidentStatus.RESOLVED)

    def locked(self, pk: int) -> Incident:
        """The incident re-read under a row lock, with nothing joined. With a join (to its severity, say),
        PostgreSQL re-checks the join against the row another transaction committed while this one waited,
        and a changed severity makes the row vanish: DoesNotExist, a 500, for a perfectly good incident."""
        return self.select_for_update().get(pk=pk)


# Limits on Incident.regions, refused by the actions (never cut) and stated in the API schema.
MAX_REGIONS = 20
MAX_REGION_LENGTH = 100
# What one update, announcement or closing message may hold (Markdown), a workaround, and a reason given
# for an action (kept on the timeline): longer is refused, never cut.
MAX_MESSAGE_LENGTH = 20_000
MAX_WORKAROUND_LENGTH = 2_000
MAX_REASON_LENGTH = 500
# A stopped page step keeps who stopped it with the reason ("stopped by alice: …"): room for a full reason
# and a username (150) with the words around it.
MAX_STOP_REASON_LENGTH = MAX_REASON_LENGTH + 200
# A component's description (shown on the status page), in the admin and the API alike.
MAX_COMPONENT_DESCRIPTION_LENGTH = 2_000


class Incident(models.Model):
    title = models.CharField(max_length=200)
    severity = models.ForeignKey(Severity, on_delete=models.PROTECT, related_name="incidents")
    status = models.CharField(max_length=16, choices=IncidentStatus.choices, default=IncidentStatus.DECLARED)
    public_status = models.CharField(max_length=16, choices=PublicStatus.choices, default=PublicStatus.INVESTIGATING)
    impact = models.CharField(max_length=16, choices=Impact.choices, default=Impact.NONE)
    impact_override = models.CharField(max_length=16, choices=Impact.choices, blank=True)
    customer_impact_percent = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)
    regions = models.JSONField(default=list, blank=True)
    workaround = models.TextField(blank=True)
    components = models.ManyToManyField(Component, blank=True, related_name="incidents")
    commander = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="commanded"
    )
    declared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="declared"
    )
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="acknowledged"
    )

    impact_started_at = models.DateTimeField(null=True, blank=True)
    detected_at = models.DateTimeField(null=True, blank=True)
    declared_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    identified_at = models.DateTimeField(null=True, blank=True)
    mitigated_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True, help_text="First public update.")
    reopened_count = models.PositiveSmallIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)
    # The targets its acknowledge, first-update and resolve clocks run against (seconds; null: none),
    # copied here whenever a clock is created or retargeted, so reports read one table.
    acknowledge_target = models.PositiveIntegerField(null=True, blank=True, editable=False)
    first_update_target = models.PositiveIntegerField(null=True, blank=True, editable=False)
    resolve_target = models.PositiveIntegerField(null=True, blank=True, editable=False)

    objects = IncidentQuerySet.as_manager()

    # Not a column: declare_incident sets it on the incident it returns for a repeated Idempotency-Key.
    replayed: bool = False

    class Meta:
        ordering = ["-declared_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-declared_at"]),
            models.Index(fields=["-resolved_at"], condition=Q(status="resolved"), name="incident_resolved_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    @property
    def is_resolved(self) -> bool:
        return self.status == IncidentStatus.RESOLVED

    @property
    def is_acknowledged(self) -> bool:
        return self.acknowledged_at is not None

    @property
    def regions_display(self) -> str:
        return ", ".join(self.regions)

    def duration(self, now: datetime | None = None) -> timedelta:
        end = self.resolved_at or now or timezone.now()
        return end - self.declared_at


class IdempotencyKey(models.Model):
    """An API client's Idempotency-Key for a declaration: the same key returns the same incident."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=200)
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")]

    def __str__(self) -> str:
        return f"{self.key} → incident {self.incident_id}"


class IncidentUpdate(models.Model):
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="updates")
    status = models.CharField(max_length=16, choices=PublicStatus.choices)
    body = models.TextField(help_text="Markdown.")
    body_html = models.TextField(help_text="Rendered and sanitised from body.")
    is_public = models.BooleanField(default=True)
    component_changes = models.JSONField(default=list, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["incident", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.status} update on incident {self.incident_id}"


class EventKind(models.TextChoices):
    DECLARED = "declared", "Declared"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    UPDATE_POSTED = "update_posted", "Update posted"
    STATUS_CHANGED = "status_changed", "Status changed"
    SEVERITY_CHANGED = "severity_changed", "Severity changed"
    SCOPE_CHANGED = "scope_changed", "Impact scope changed"
    COMMANDER_CHANGED = "commander_changed", "Commander changed"
    COMPONENT_CHANGED = "component_changed", "Component status changed"
    RESOLVED = "resolved", "Resolved"
    REOPENED = "reopened", "Reopened"
    CLOCK_WARNING = "clock_warning", "Clock warning"
    CLOCK_BREACHED = "clock_breached", "Clock breached"
    CLOCK_MET = "clock_met", "Clock met"
    PAGED = "paged", "Paged"
    PAGING_STOPPED = "paging_stopped", "Paging stopped"
    POSTMORTEM_STARTED = "postmortem_started", "Post-mortem started"
    POSTMORTEM_EDITED = "postmortem_edited", "Post-mortem edited"
    POSTMORTEM_REVIEW = "postmortem_review", "Post-mortem sent for review"
    POSTMORTEM_PUBLISHED = "postmortem_published", "Post-mortem published"
    MAINTENANCE_SCHEDULED = "maintenance_scheduled", "Maintenance scheduled"
    MAINTENANCE_RESCHEDULED = "maintenance_rescheduled", "Maintenance rescheduled"
    MAINTENANCE_UPDATE = "maintenance_update", "Maintenance update posted"
    MAINTENANCE_STARTED = "maintenance_started", "Maintenance started"
    MAINTENANCE_COMPLETED = "maintenance_completed", "Maintenance completed"
    MAINTENANCE_CANCELLED = "maintenance_cancelled", "Maintenance cancelled"


class TimelineEvent(models.Model):
    """Append-only record of every action on an incident: who, when, what changed."""

    incident = models.ForeignKey(Incident, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    maintenance = models.ForeignKey(
        "Maintenance", null=True, blank=True, on_delete=models.CASCADE, related_name="events"
    )
    kind = models.CharField(max_length=32, choices=EventKind.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    message = models.CharField(max_length=500)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["incident", "created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(incident__isnull=False) | Q(maintenance__isnull=False), name="event_has_a_subject"
            )
        ]

    def __str__(self) -> str:
        return self.message


class Metric(models.TextChoices):
    ACKNOWLEDGE = "acknowledge", "Acknowledge"
    FIRST_UPDATE = "first_update", "First public update"
    UPDATE_CADENCE = "update_cadence", "Update cadence"
    RESOLVE = "resolve", "Resolve"
    POSTMORTEM = "postmortem", "Post-mortem"


class ClockState(models.TextChoices):
    RUNNING = "running", "Running"
    MET = "met", "Met"
    BREACHED = "breached", "Breached"
    STOPPED = "stopped", "Stopped"
    PAUSED = "paused", "Paused"


class Clock(models.Model):
    """One response clock of one incident; the arithmetic lives in incidents/clocks.py.

    A clock accumulates `elapsed_seconds` across running spans (reopen resumes the resolve clock);
    `running_since` is set while it runs. `next_check_at` is the next warning/breach threshold still
    to record: the sweep claims rows whose `next_check_at` is due. `cycle` counts update-cadence
    restarts so each cycle's warnings are recorded once.
    """

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="clocks")
    metric = models.CharField(max_length=16, choices=Metric.choices)
    target_seconds = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    running_since = models.DateTimeField(null=True, blank=True)
    elapsed_seconds = models.FloatField(default=0, help_text="Accumulated before running_since.")
    stopped_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=ClockState.choices, default=ClockState.RUNNING)
    cycle = models.PositiveIntegerField(default=1)
    thresholds_done = models.PositiveSmallIntegerField(default=0, help_text="Thresholds recorded this cycle.")
    breached_at = models.DateTimeField(null=True, blank=True)
    next_check_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["incident", "metric"], name="clock_unique_per_metric")]
        indexes = [
            models.Index(fields=["next_check_at"], condition=Q(next_check_at__isnull=False), name="clock_due_idx"),
            # The report joins each incident to its clock per metric for the target: an index-only scan.
            models.Index(fields=["metric", "incident"], include=["target_seconds"], name="clock_metric_target_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.metric} clock of incident {self.incident_id}"

    # The arithmetic lives here, on the model (incidents/clocks.py reads it through these): models are
    # the bottom layer and import no other module of the app (import-linter checks it).
    def elapsed_at(self, now: datetime) -> float:
        """Seconds the clock has run, up to `now`."""
        if self.running_since is None:
            return self.elapsed_seconds
        return self.elapsed_seconds + max(0.0, (now - self.running_since).total_seconds())

    @property
    def due_at(self) -> datetime | None:
        """When the target is (or, for a stopped clock, would have been) reached."""
        base = self.running_since or self.stopped_at
        if base is None:
            return None
        return base + timedelta(seconds=self.target_seconds - self.elapsed_seconds)

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "target_seconds": self.target_seconds,
            "started_at": self.started_at,
            "due_at": self.due_at,
            "stopped_at": self.stopped_at,
            "elapsed_seconds": round(self.elapsed_at(now), 3),
            "state": self.state,
        }


class ClockEventKind(models.TextChoices):
    WARNING_75 = "warning_75", "75% warning"
    WARNING_90 = "warning_90", "90% warning"
    BREACH = "breach", "Breach"


class ClockEvent(models.Model):
    """A warning or breach, recorded exactly once per clock, kind and cycle (the unique key)."""

    clock = models.ForeignKey(Clock, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=ClockEventKind.choices)
    cycle = models.PositiveIntegerField(default=1)
    due_at = models.DateTimeField(help_text="When the threshold fell due.")
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["due_at", "id"]
        constraints = [models.UniqueConstraint(fields=["clock", "kind", "cycle"], name="clock_event_once_per_cycle")]

    def __str__(self) -> str:
        return f"{self.kind} of clock {self.clock_id} (cycle {self.cycle})"


class IncidentTemplate(models.Model):
    """A prefilled declaration for a common incident."""

    name = models.CharField(max_length=100, unique=True)
    title = models.CharField(max_length=200)
    severity = models.ForeignKey(Severity, null=True, blank=True, on_delete=models.SET_NULL)
    message = models.TextField(blank=True)
    components = models.ManyToManyField(Component, blank=True)
    component_status = models.CharField(
        max_length=32, choices=ComponentStatus.choices, default=ComponentStatus.DEGRADED_PERFORMANCE
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiToken(models.Model):
    """A staff API token; only its SHA-256 is stored, the token itself is printed once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()


# Public ids of maintenance windows and their updates: Statuspage-style opaque strings, 12 lowercase
# letters and digits. The first is always a letter, so one can never equal an incident's or an incident
# update's id (their primary keys, decimal digits only): clients that key on ids see two objects.
PUBLIC_ID_LENGTH = 12
PUBLIC_ID_FIRST = string.ascii_lowercase
PUBLIC_ID_REST = string.ascii_lowercase + string.digits


def new_public_id() -> str:
    return secrets.choice(PUBLIC_ID_FIRST) + "".join(
        secrets.choice(PUBLIC_ID_REST) for _ in range(PUBLIC_ID_LENGTH - 1)
    )


def is_public_id(value: str) -> bool:
    return (
        len(value) == PUBLIC_ID_LENGTH
        and value[0] in PUBLIC_ID_FIRST
        and all(character in PUBLIC_ID_REST for character in value)
    )


class MaintenanceStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    IN_PROGRESS = "in_progress", "In progress"
    VERIFYING = "verifying", "Verifying"
    COMPLETED = "completed", "Completed"


class MaintenanceUpdateStatus(models.TextChoices):
    """What an update says of its window: a window's statuses, and "cancelled" for the update that
    cancels one (the window itself keeps the status it had, and its `cancelled_at`)."""

    SCHEDULED = "scheduled", "Scheduled"
    IN_PROGRESS = "in_progress", "In progress"
    VERIFYING = "verifying", "Verifying"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class Maintenance(models.Model):
    """A maintenance window. `next_action_at` is the next automatic step (start or completion) that
    the sweep claims; the affected components' statuses before the start are kept to restore them."""

    public_id = models.CharField(
        max_length=PUBLIC_ID_LENGTH,
        unique=True,
        default=new_public_id,
        editable=False,
        help_text="Its id on the status page, in the v2 API, webhooks, feeds and the calendar; never changes.",
    )
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=MaintenanceStatus.choices, default=MaintenanceStatus.SCHEDULED)
    scheduled_for = models.DateTimeField()
    scheduled_until = models.DateTimeField()
    components = models.ManyToManyField(Component, blank=True, related_name="maintenances")
    auto_start = models.BooleanField(default=True)
    auto_complete = models.BooleanField(default=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    restore_statuses = models.JSONField(default=dict, blank=True, help_text="Component id → status before the start.")
    next_action_at = models.DateTimeField(null=True, blank=True)
    sequence = models.PositiveIntegerField(default=0, help_text="iCalendar SEQUENCE: bumped on every reschedule.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-scheduled_for", "-id"]
        indexes = [
            models.Index(
                fields=["next_action_at"], condition=Q(next_action_at__isnull=False), name="maintenance_due_idx"
            )
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_cancelled(self) -> bool:
        return self.cancelled_at is not None

    @property
    def is_finished(self) -> bool:
        return self.status == MaintenanceStatus.COMPLETED or self.is_cancelled


class MaintenanceUpdate(models.Model):
    public_id = models.CharField(
        max_length=PUBLIC_ID_LENGTH,
        unique=True,
        default=new_public_id,
        editable=False,
        help_text="Its id in the v2 API, webhooks and feeds; never changes.",
    )
    maintenance = models.ForeignKey(Maintenance, on_delete=models.CASCADE, related_name="updates")
    status = models.CharField(max_length=16, choices=MaintenanceUpdateStatus.choices)
    body = models.TextField()
    body_html = models.TextField()
    component_changes = models.JSONField(default=list, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.status} update on maintenance {self.maintenance_id}"


class Snapshot(models.Model):
    """A published version of everything public (incidents/public.py builds the document)."""

    version = models.PositiveBigIntegerField(unique=True)
    document = models.JSONField()
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-version"]
        get_latest_by = "version"

    def __str__(self) -> str:
        return f"snapshot v{self.version}"


class PublishRequest(models.Model):
    """A public-facing change not yet published. Written in the change's own transaction (so it commits
    with it) and deleted by the publish that includes it: the Celery message that asks for the publish
    can be lost with the broker, this row cannot. The sweep publishes while one is waiting, and the
    dashboard warns when one has waited longer than a minute."""

    requested_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"publish requested at {self.requested_at:%Y-%m-%d %H:%M:%S}"


# --- subscriptions and delivery -----------------------------------------------------------------


class SubscriberKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"


class Subscriber(models.Model):
    """Someone (an address, or a webhook added by staff) who receives public updates.

    No account: the links in every email carry tokens signed with `secret` (rotating it revokes
    them). Email subscribers receive nothing but the confirmation until they confirm.
    """

    kind = models.CharField(max_length=16, choices=SubscriberKind.choices, default=SubscriberKind.EMAIL)
    email = models.EmailField(blank=True)
    webhook_url = models.URLField(blank=True, max_length=500)
    webhook_secret = models.CharField(max_length=64, blank=True)
    secret = models.CharField(max_length=32, help_text="Signs this subscriber's links.")
    all_components = models.BooleanField(default=True)
    components = models.ManyToManyField(Component, blank=True, related_name="subscribers")
    notify_incidents = models.BooleanField(default=True)
    notify_maintenance = models.BooleanField(default=True)
    notify_postmortems = models.BooleanField(default=True)
    minimum_impact = models.CharField(max_length=16, choices=Impact.choices, default=Impact.NONE)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    # Set with unsubscribed_at when the mail server refused the address as nonexistent (a hard bounce).
    bounced_at = models.DateTimeField(null=True, blank=True)
    bounce_reason = models.CharField(max_length=500, blank=True)
    confirmation_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                Lower("email"),
                condition=Q(kind="email"),
                name="subscriber_email_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.email or self.webhook_url

    @property
    def is_active(self) -> bool:
        return self.unsubscribed_at is None and (self.confirmed_at is not None or self.kind == SubscriberKind.WEBHOOK)


class MessageKind(models.TextChoices):
    CONFIRMATION = "confirmation", "Subscription confirmation"
    INCIDENT_UPDATE = "incident_update", "Incident update"
    MAINTENANCE = "maintenance", "Maintenance"
    MAINTENANCE_REMINDER = "maintenance_reminder", "Maintenance reminder"
    POSTMORTEM = "postmortem", "Post-mortem"
    COMPONENT_UPDATE = "component_update", "Component status change (webhooks only)"


class Message(models.Model):
    """One thing to tell subscribers. Its deliveries are created by a re-runnable fan-out."""

    kind = models.CharField(max_length=24, choices=MessageKind.choices)
    key = models.CharField(max_length=100, unique=True, help_text="What it is about, once: e.g. update:42.")
    incident = models.ForeignKey(Incident, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    incident_update = models.ForeignKey(
        IncidentUpdate, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    maintenance = models.ForeignKey(Maintenance, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    maintenance_update = models.ForeignKey(
        MaintenanceUpdate, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    subscriber = models.ForeignKey(
        Subscriber, null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="Confirmations."
    )
    component_change = models.ForeignKey(
        ComponentStatusChange, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    postmortem = models.ForeignKey("Postmortem", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    impact = models.CharField(max_length=16, choices=Impact.choices, default=Impact.NONE)
    component_ids = models.JSONField(default=list, blank=True)
    # The webhook body but its per-subscriber "meta", as JSON text, written when the change commits: a
    # webhook sent later (a backlog, a retry) still tells the state of that moment, not of its sending.
    webhook_body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    fanned_out_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["created_at"], condition=Q(fanned_out_at__isnull=True), name="message_fan_out_idx")
        ]

    def __str__(self) -> str:
        return self.key


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class Delivery(models.Model):
    """One message to one subscriber: the outbox row. Unique, so nobody is sent a message twice."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries")
    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="deliveries")
    # The subscriber's kind, copied at fan-out so that claiming due rows reads this table alone (an
    # index on transport, due time and id), however many subscribers there are and whatever the
    # planner's statistics say about them.
    transport = models.CharField(max_length=16, choices=SubscriberKind.choices, default=SubscriberKind.EMAIL)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim = models.CharField(max_length=32, blank=True, help_text="Fence: the batch that holds the row.")
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["message", "subscriber"], name="delivery_once")]
        indexes = [
            models.Index(
                fields=["transport", "next_attempt_at", "id"], condition=Q(status="pending"), name="delivery_due_idx"
            ),
            models.Index(fields=["claimed_at"], condition=Q(status="sending"), name="delivery_claimed_idx"),
            # A subscriber's unsent rows, so a claim can pass over a row while an earlier message to the
            # same subscriber is still unsent: updates arrive in the order they were posted.
            models.Index(
                fields=["subscriber", "message"],
                condition=Q(status__in=["pending", "sending"]),
                name="delivery_unsent_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} → {self.subscriber_id}: {self.status}"


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Half open (probing)"


class CircuitBreaker(models.Model):
    """Per destination: opens after consecutive failures, probes after a cool-down, closes on success.

    `transport` names the destination: "email" (the one SMTP server) or "webhook <host>" (each
    webhook host has its own, so one broken endpoint never pauses the others).
    """

    transport = models.CharField(max_length=255, unique=True)
    state = models.CharField(max_length=16, choices=BreakerState.choices, default=BreakerState.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return f"{self.transport}: {self.state}"

    @property
    def label(self) -> str:
        """What staff read: "Email notifications" or "Webhooks to hooks.example.com"."""
        kind, _, host = self.transport.partition(" ")
        if kind == "webhook":
            return f"Webhooks to {host}" if host else "Webhooks"
        return f"{kind.capitalize()} notifications"


# --- post-mortems -------------------------------------------------------------------------------


class PostmortemState(models.TextChoices):
    DRAFT = "draft", "Draft"
    IN_REVIEW = "in_review", "In review"
    PUBLISHED = "published", "Published"


class Postmortem(models.Model):
    """What happened, why, and what we change: one per incident, draft → in review → published."""

    incident = models.OneToOneField(Incident, on_delete=models.CASCADE, related_name="postmortem")
    state = models.CharField(max_length=16, choices=PostmortemState.choices, default=PostmortemState.DRAFT)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="postmortems"
    )
    due_at = models.DateTimeField(null=True, blank=True, help_text="From the severity's post-mortem target.")
    created_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Post-mortem of {self.incident}"

    @property
    def is_published(self) -> bool:
        return self.state == PostmortemState.PUBLISHED


class SectionKey(models.TextChoices):
    SUMMARY = "summary", "Summary"
    CUSTOMER_IMPACT = "customer_impact", "Customer impact"
    ROOT_CAUSE = "root_cause", "Root cause"
    TRIGGER = "trigger", "Trigger"
    CONTRIBUTING_FACTORS = "contributing_factors", "Contributing factors"
    DETECTION = "detection", "Detection"
    RESOLUTION = "resolution", "Resolution"
    WENT_WELL = "went_well", "What went well"
    WENT_WRONG = "went_wrong", "What went wrong"
    LESSONS = "lessons", "Lessons"


# Which sections customers see unless staff say otherwise.
PUBLIC_BY_DEFAULT = frozenset(
    {SectionKey.SUMMARY, SectionKey.CUSTOMER_IMPACT, SectionKey.ROOT_CAUSE, SectionKey.RESOLUTION, SectionKey.LESSONS}
)


class PostmortemSection(models.Model):
    """One section, in Markdown (sanitised when shown), internal or public."""

    postmortem = models.ForeignKey(Postmortem, on_delete=models.CASCADE, related_name="sections")
    key = models.CharField(max_length=32, choices=SectionKey.choices)
    position = models.PositiveSmallIntegerField()
    body = models.TextField(blank=True)
    is_public = models.BooleanField(default=False)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["postmortem", "key"], name="postmortem_section_once")]

    def __str__(self) -> str:
        return f"{self.get_key_display()} of {self.postmortem}"


class PostmortemEntry(models.Model):
    """A line of the post-mortem's timeline: copied from the incident's events and public updates, or
    added by hand. Starred entries are the key moments; hidden ones are left out; public ones (those
    from public updates, or marked so) appear on the public page."""

    postmortem = models.ForeignKey(Postmortem, on_delete=models.CASCADE, related_name="entries")
    at = models.DateTimeField()
    text = models.CharField(max_length=500)
    source = models.CharField(max_length=32, blank=True, help_text="event:<id>, update:<id> or empty (by hand).")
    is_starred = models.BooleanField(default=False)
    is_hidden = models.BooleanField(default=False)
    is_public = models.BooleanField(default=False)

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["postmortem", "source"], condition=~Q(source=""), name="postmortem_entry_once"
            )
        ]
        verbose_name_plural = "post-mortem entries"

    def __str__(self) -> str:
        return self.text


class ActionKind(models.TextChoices):
    DETECT = "detect", "Detect"
    MITIGATE = "mitigate", "Mitigate"
    PREVENT = "prevent", "Prevent"
    PROCESS = "process", "Process"


class ActionPriority(models.TextChoices):
    P1 = "p1", "P1 (this week)"
    P2 = "p2", "P2 (this month)"
    P3 = "p3", "P3 (this quarter)"


class ActionStatus(models.TextChoices):
    OPEN = "open", "Open"
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"
    WONT_DO = "wont_do", "Won't do"


class ActionItem(models.Model):
    postmortem = models.ForeignKey(Postmortem, on_delete=models.CASCADE, related_name="action_items")
    title = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="action_items"
    )
    kind = models.CharField(max_length=16, choices=ActionKind.choices, default=ActionKind.PREVENT)
    priority = models.CharField(max_length=4, choices=ActionPriority.choices, default=ActionPriority.P2)
    due_date = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=ActionStatus.choices, default=ActionStatus.OPEN)
    link = models.URLField(blank=True, help_text="The ticket or pull request that does it.")
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["priority", "due_date", "id"]
        indexes = [
            models.Index(fields=["due_date"], condition=Q(status__in=["open", "in_progress"]), name="action_open_idx")
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_open(self) -> bool:
        return self.status in (ActionStatus.OPEN, ActionStatus.IN_PROGRESS)


# --- response benchmarks ------------------------------------------------------------------------


class Benchmark(models.Model):
    """A published figure to read our own against, with where it comes from and what it measures.

    A benchmark is compared only with the same metric and statistic of ours (a mean with a mean); a
    band (DORA's "less than one day") says where our median falls. `definition` says what the
    source measured, which is rarely exactly what we do: the report shows it next to the comparison.
    """

    class Statistic(models.TextChoices):
        MEAN = "mean", "Mean"
        MEDIAN = "median", "Median"
        BAND = "band", "Band"

    metric = models.CharField(max_length=16, choices=[(m, m) for m in ("acknowledge", "first_update", "resolve")])
    statistic = models.CharField(max_length=8, choices=Statistic.choices)
    label = models.CharField(max_length=100, help_text='"Industry average", "DORA elite".')
    value_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="The figure, or a band's lower end.")
    upper_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="A band's upper end (exclusive).")
    source = models.CharField(max_length=300)
    url = models.URLField(blank=True)
    definition = models.TextField(help_text="What the source measured, in its words.")
    verified = models.BooleanField(default=False, help_text="Checked against the primary source.")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["metric", "position", "id"]

    def __str__(self) -> str:
        return f"{self.label} ({self.metric}, {self.statistic})"


# --- escalation: paging staff until someone acknowledges --------------------------------------------


class EscalationStep(models.Model):
    """One step of a severity's escalation policy: once an incident of this severity has gone
    `after_minutes` unacknowledged since it was declared, page these people.

    The steps (and the severity's repeats) are copied onto each incident when it is declared, as
    PageStep rows: editing the policy never changes an incident already running.
    """

    severity = models.ForeignKey(Severity, on_delete=models.CASCADE, related_name="escalation_steps")
    position = models.PositiveSmallIntegerField(default=1)
    after_minutes = models.PositiveIntegerField(
        default=0, help_text="Minutes unacknowledged since declaration (0: at once)."
    )
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+", help_text="Staff to page.")
    addresses = models.TextField(
        blank=True,
        help_text="Other addresses to page (plain addresses like oncall@example.com), one per line or comma-separated.",
    )

    class Meta:
        ordering = ["severity", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["severity", "position"], name="escalation_step_position")]

    def __str__(self) -> str:
        return f"{self.severity}: step {self.position} after {self.after_minutes} min"

    def address_list(self) -> list[str]:
        return [part.strip() for part in self.addresses.replace(",", "\n").splitlines() if part.strip()]


class PageStep(models.Model):
    """One step of one incident's escalation, copied from its severity's policy.

    It fires once when `due_at` passes while the incident is unacknowledged (the sweep claims it; a
    conditional update on `fired_at` decides who fires it), or is stopped by an acknowledgment,
    a resolve, a severity change or a person who stops the paging.
    """

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="page_steps")
    number = models.PositiveSmallIntegerField(help_text="1, 2, … across every run of the policy.")
    run = models.PositiveSmallIntegerField(default=1)
    runs = models.PositiveSmallIntegerField(default=1)
    position = models.PositiveSmallIntegerField()
    positions = models.PositiveSmallIntegerField(help_text="Steps in one run.")
    severity_key = models.SlugField(max_length=16)
    due_at = models.DateTimeField()
    recipients = models.JSONField(default=list, help_text='[{"user_id": 3, "name": "alice"}, {"email": "…"}]')
    fired_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=MAX_STOP_REASON_LENGTH, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["incident", "due_at", "number"]
        constraints = [models.UniqueConstraint(fields=["incident", "number"], name="page_step_once")]
        indexes = [
            models.Index(
                fields=["due_at", "id"],
                condition=Q(fired_at__isnull=True, stopped_at__isnull=True),
                name="page_step_due_idx",
            )
        ]

    def __str__(self) -> str:
        return f"page step {self.number} of incident {self.incident_id}"

    @property
    def is_pending(self) -> bool:
        return self.fired_at is None and self.stopped_at is None

    @property
    def names(self) -> list[str]:
        return [r.get("name") or r.get("email", "") for r in self.recipients]

    @property
    def paged_names(self) -> list[str]:
        """Who the step pages: before it fires, everyone in it; once fired, only those it reached."""
        if self.fired_at is None:
            return self.names
        return [r.get("name") or r.get("email", "") for r in self.recipients if r.get("address")]

    @property
    def problems(self) -> list[str]:
        """Why someone in a fired step could not be paged: 'could not page nomail: no email address'."""
        return [
            f"could not page {r.get('name') or r.get('email') or 'a recipient'}: {r['problem']}"
            for r in self.recipients
            if r.get("problem")
        ]

    @property
    def not_paged(self) -> list[str]:
        """Who a fired step left out on purpose: 'did not page alice: declared the incident'."""
        return [
            f"did not page {r.get('name') or r.get('email')}: {r['skipped']}"
            for r in self.recipients
            if r.get("skipped")
        ]

    @property
    def label(self) -> str:
        text = f"step {self.position} of {self.positions}"
        return f"{text}, run {self.run} of {self.runs}" if self.runs > 1 else text


class NoticeKind(models.TextChoices):
    PAGE = "page", "Page"
    NUDGE = "nudge", "Nudge"


class NudgeReason(models.TextChoices):
    UPDATE_DUE = "update_due", "Next public update due soon"
    UPDATE_OVERDUE = "update_overdue", "Public update overdue"
    FIRST_UPDATE_LATE = "first_update_late", "First public update late"


class NoticeStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Not needed any more"


class StaffNotice(models.Model):
    """An email to a member of staff (a page, or a nudge to the commander): the staff outbox.

    Separate from subscriber deliveries so that a page never waits behind thousands of customer
    emails. Unique per page step (or clock event) and address: a sweep run twice pages nobody twice.
    """

    kind = models.CharField(max_length=8, choices=NoticeKind.choices)
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="staff_notices")
    step = models.ForeignKey(PageStep, null=True, blank=True, on_delete=models.CASCADE, related_name="notices")
    clock_event = models.ForeignKey(ClockEvent, null=True, blank=True, on_delete=models.CASCADE, related_name="notices")
    reason = models.CharField(max_length=24, choices=NudgeReason.choices, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    email = models.EmailField()
    status = models.CharField(max_length=16, choices=NoticeStatus.choices, default=NoticeStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claim = models.CharField(max_length=32, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="When the failures it is retrying after began (empty once sent)."
    )
    used_at = models.DateTimeField(null=True, blank=True, help_text="When its acknowledgment link was used.")
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["step", "email"], condition=Q(step__isnull=False), name="staff_notice_once_per_step"
            ),
            models.UniqueConstraint(
                fields=["clock_event", "email"],
                condition=Q(clock_event__isnull=False),
                name="staff_notice_once_per_clock_event",
            ),
            models.CheckConstraint(
                condition=Q(step__isnull=False) | Q(clock_event__isnull=False), name="staff_notice_has_a_cause"
            ),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at", "id"], condition=Q(status="pending"), name="staff_notice_due_idx"),
            models.Index(fields=["claimed_at"], condition=Q(status="sending"), name="staff_notice_claimed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.email} about incident {self.incident_id}: {self.status}"


class SweepHeartbeat(models.Model):
    """When a sweep last completed, so the web process (which does not sweep) can tell when the timers stop.

    A row, not a cache key: the dashboard is served by another process than the sweeper (gunicorn vs
    beat and its worker, or `run_timers --loop`), and without Redis each process has its own cache.
    """

    name = models.SlugField(max_length=32, unique=True)
    swept_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} swept at {self.swept_at:%Y-%m-%d %H:%M:%S}"
