"""THE write path. Every change with consequences is one function in this package.

Each action is one transaction, locks the rows it changes, refuses impossible moves with an
ActionRefused that says why, and writes one timeline event. Actions never send anything: side
effects are rows, and tasks enqueued with delay_on_commit. `at=` records a change that happened
earlier (imports, demo data); it defaults to now.

The actions are grouped by what they act on (incidents.actions.incidents, .maintenance, …); import them
from here: `from incidents import actions; actions.declare_incident(...)`.
"""

from incidents.actions.components import (
    create_component,
    set_component_status,
    worst_status,
)
from incidents.actions.errors import ActionRefused
from incidents.actions.impact import ComponentChange
from incidents.actions.incidents import (
    acknowledge_incident,
    assign_commander,
    change_severity,
    declare_incident,
    post_update,
    reopen_incident,
    resolve_incident,
    stop_paging,
    update_impact_scope,
)
from incidents.actions.maintenance import (
    cancel_maintenance,
    complete_maintenance,
    post_maintenance_update,
    reschedule_maintenance,
    run_due_maintenance,
    schedule_maintenance,
    start_maintenance,
)
from incidents.actions.notify import notify_after_commit
from incidents.actions.paging import acknowledge_by_link
from incidents.actions.postmortems import (
    add_action_item,
    add_postmortem_entry,
    customer_impact_text,
    edit_postmortem,
    mark_postmortem_entry,
    publish_postmortem,
    refresh_postmortem_timeline,
    return_postmortem_to_draft,
    set_action_item_status,
    start_postmortem,
    submit_postmortem,
)
from incidents.actions.subscriptions import (
    CONFIRMATION_RESEND_INTERVAL,
    MAINTENANCE_REMINDER_BEFORE,
    add_webhook,
    confirm_subscription,
    remind_of_maintenance,
    subscribe,
    unsubscribe,
    update_subscription,
)
from incidents.actions.timeline import Actor
from incidents.actions.timing import (
    REPORTED_METRICS,
    record_clock_thresholds,
)

__all__ = [
    "CONFIRMATION_RESEND_INTERVAL",
    "MAINTENANCE_REMINDER_BEFORE",
    "REPORTED_METRICS",
    "ActionRefused",
    "Actor",
    "ComponentChange",
    "acknowledge_by_link",
    "acknowledge_incident",
    "add_action_item",
    "add_postmortem_entry",
    "add_webhook",
    "assign_commander",
    "cancel_maintenance",
    "change_severity",
    "complete_maintenance",
    "confirm_subscription",
    "create_component",
    "customer_impact_text",
    "declare_incident",
    "edit_postmortem",
    "mark_postmortem_entry",
    "notify_after_commit",
    "post_maintenance_update",
    "post_update",
    "publish_postmortem",
    "record_clock_thresholds",
    "refresh_postmortem_timeline",
    "remind_of_maintenance",
    "reopen_incident",
    "reschedule_maintenance",
    "resolve_incident",
    "return_postmortem_to_draft",
    "run_due_maintenance",
    "schedule_maintenance",
    "set_action_item_status",
    "set_component_status",
    "start_maintenance",
    "start_postmortem",
    "stop_paging",
    "submit_postmortem",
    "subscribe",
    "unsubscribe",
    "update_impact_scope",
    "update_subscription",
    "worst_status",
]
