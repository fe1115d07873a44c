"""SEV1–SEV4 with their response targets (seconds; None means no target)."""

from django.db import migrations

MIN = 60
HOUR = 3600
DAY = 86400

SEVERITIES = [
    ("sev1", "SEV1", "Critical: a core service is down or badly degraded for many customers.", 1,
     5 * MIN, 15 * MIN, 30 * MIN, 4 * HOUR),
    ("sev2", "SEV2", "Major: a significant feature is impaired for some customers.", 2,
     15 * MIN, 30 * MIN, 60 * MIN, 8 * HOUR),
    ("sev3", "SEV3", "Minor: limited impact, a workaround exists.", 3,
     1 * HOUR, 60 * MIN, 240 * MIN, 3 * DAY),
    ("sev4", "SEV4", "Low: cosmetic or internal; no public updates expected.", 4,
     4 * HOUR, None, None, 10 * DAY),
]  # fmt: skip


def seed(apps, schema_editor):
    Severity = apps.get_model("incidents", "Severity")
    for key, name, description, rank, ack, first, cadence, resolve in SEVERITIES:
        Severity.objects.update_or_create(
            key=key,
            defaults={
                "name": name,
                "description": description,
                "rank": rank,
                "acknowledge_target": ack,
                "first_update_target": first,
                "update_cadence_target": cadence,
                "resolve_target": resolve,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("incidents", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
