"""Add a webhook subscriber: `manage.py add_webhook URL --by USERNAME [--component ID …]`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from incidents import actions
from incidents.models import Component


class Command(BaseCommand):
    help = "Add a webhook that receives Statuspage-format JSON for incidents, maintenance and component changes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("url")
        parser.add_argument("--by", required=True, help="The staff user adding it (recorded).")
        parser.add_argument("--component", type=int, action="append", default=[], help="Only these component ids.")

    def handle(self, *args: Any, url: str, by: str, component: list[int], **options: Any) -> None:
        user = get_user_model().objects.filter(username=by, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user {by!r}.")
        components = list(Component.objects.filter(pk__in=component))
        if len(components) != len(set(component)):
            raise CommandError("Unknown component id.")
        try:
            subscriber, secret = actions.add_webhook(actor=user, url=url, components=components)
        except actions.ActionRefused as refused:
            raise CommandError(refused.message) from None
        self.stdout.write(secret)
        self.stderr.write(
            f"Webhook {subscriber.pk} added. Verify requests with the secret above (printed once): see README."
        )
