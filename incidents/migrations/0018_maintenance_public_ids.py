"""Maintenance windows and their updates get public ids that cannot collide with incidents'.

Until now the public side used primary keys for both, so window 2 and incident 2 were both "2" in
the v2 API and in webhooks (and their updates' ids collided the same way). Each window and update now
has a Statuspage-style opaque id (12 lowercase letters and digits, starting with a letter, so never
equal to an incident's decimal id). Existing rows get one here; webhook bodies already frozen for
delivery are rewritten to carry the new ids, so every POST after the upgrade speaks of a window by
the same id. The old public URLs (/maintenance/<number>) redirect permanently (statuspage/views.py).
"""

import json
import secrets
import string

from django.db import migrations, models

import incidents.models

LENGTH = 12
FIRST = string.ascii_lowercase
REST = string.ascii_lowercase + string.digits


def _new_id(taken: set[str]) -> str:
    while True:
        candidate = secrets.choice(FIRST) + "".join(secrets.choice(REST) for _ in range(LENGTH - 1))
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def assign_public_ids(apps, schema_editor):
    Maintenance = apps.get_model("incidents", "Maintenance")
    MaintenanceUpdate = apps.get_model("incidents", "MaintenanceUpdate")
    Message = apps.get_model("incidents", "Message")
    windows: dict[int, str] = {}
    updates: dict[int, str] = {}
    for model, ids in ((Maintenance, windows), (MaintenanceUpdate, updates)):
        taken = set(model.objects.exclude(public_id=None).values_list("public_id", flat=True))
        rows = list(model.objects.filter(public_id=None).only("pk"))
        for row in rows:
            row.public_id = _new_id(taken)
            ids[row.pk] = row.public_id
        model.objects.bulk_update(rows, ["public_id"], batch_size=500)
    changed = []
    for message in Message.objects.filter(maintenance__isnull=False).exclude(webhook_body="").only(
        "pk", "maintenance_id", "webhook_body"
    ):
        body = json.loads(message.webhook_body)
        window = body.get("incident")
        if not isinstance(window, dict) or window.get("id") != str(message.maintenance_id):
            continue
        public_id = windows.get(message.maintenance_id) or Maintenance.objects.get(pk=message.maintenance_id).public_id
        window["id"] = public_id
        shortlink = window.get("shortlink") or ""
        suffix = f"/maintenance/{message.maintenance_id}"
        if shortlink.endswith(suffix):
            window["shortlink"] = shortlink.removesuffix(suffix) + f"/maintenance/{public_id}"
        for update in window.get("incident_updates") or []:
            update["incident_id"] = public_id
            if str(update.get("id", "")).isdigit() and int(update["id"]) in updates:
                update["id"] = updates[int(update["id"])]
        message.webhook_body = json.dumps(body, separators=(",", ":"))
        changed.append(message)
    Message.objects.bulk_update(changed, ["webhook_body"], batch_size=500)


class Migration(migrations.Migration):
    dependencies = [
        ("incidents", "0017_paging_truth"),
    ]

    operations = [
        migrations.AddField(
            model_name="maintenance",
            name="public_id",
            field=models.CharField(max_length=12, null=True),
        ),
        migrations.AddField(
            model_name="maintenanceupdate",
            name="public_id",
            field=models.CharField(max_length=12, null=True),
        ),
        migrations.RunPython(assign_public_ids, migrations.RunPython.noop, elidable=False),
        migrations.AlterField(
            model_name="maintenance",
            name="public_id",
            field=models.CharField(
                default=incidents.models.new_public_id,
                editable=False,
                help_text="Its id on the status page, in the v2 API, webhooks, feeds and the calendar; never changes.",
                max_length=12,
                unique=True,
            ),
        ),
        migrations.AlterField(
            model_name="maintenanceupdate",
            name="public_id",
            field=models.CharField(
                default=incidents.models.new_public_id,
                editable=False,
                help_text="Its id in the v2 API, webhooks and feeds; never changes.",
                max_length=12,
                unique=True,
            ),
        ),
    ]
