"""The update that cancels a window says "cancelled" (it said the window's status, "scheduled").

Existing cancellations are relabelled: the update a cancellation posted was written at the window's
`cancelled_at`, with the window's status then ("scheduled").
"""

from typing import Any

from django.db import migrations, models
from django.db.models import F


def label_cancellations(apps: Any, schema_editor: Any) -> None:
    MaintenanceUpdate = apps.get_model("incidents", "MaintenanceUpdate")
    MaintenanceUpdate.objects.filter(
        maintenance__cancelled_at__isnull=False,
        created_at=F("maintenance__cancelled_at"),
        status="scheduled",
    ).update(status="cancelled")


def unlabel_cancellations(apps: Any, schema_editor: Any) -> None:
    MaintenanceUpdate = apps.get_model("incidents", "MaintenanceUpdate")
    MaintenanceUpdate.objects.filter(status="cancelled").update(status="scheduled")


class Migration(migrations.Migration):
    dependencies = [
        ("incidents", "0018_maintenance_public_ids"),
    ]

    operations = [
        migrations.AlterField(
            model_name="maintenanceupdate",
            name="status",
            field=models.CharField(
                choices=[
                    ("scheduled", "Scheduled"),
                    ("in_progress", "In progress"),
                    ("verifying", "Verifying"),
                    ("completed", "Completed"),
                    ("cancelled", "Cancelled"),
                ],
                max_length=16,
            ),
        ),
        migrations.RunPython(label_cancellations, unlabel_cancellations),
    ]
