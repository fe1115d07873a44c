"""Create a staff API token: printed once on stdout, stored only as its SHA-256."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from incidents.models import ApiToken

TOKEN_PREFIX = "sp_"  # noqa: S105 (not a secret: the marker every token starts with)
# "sp_" and 8 characters: enough to tell tokens apart in a list, useless for guessing the rest.
PREFIX_LENGTH = len(TOKEN_PREFIX) + 8


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Command(BaseCommand):
    help = "Create an API token for an active staff user. The token is shown once; only its hash is kept."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for, e.g. 'pagerduty bridge'.")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not (user.is_active and user.is_staff):
            raise CommandError(f"{username!r} must be an active staff user to hold an API token.")
        token = new_token()
        ApiToken.objects.create(
            user=user, name=name.strip()[:100], prefix=token[:PREFIX_LENGTH], token_hash=ApiToken.hash(token)
        )
        # The token alone on stdout, so `TOKEN=$(manage.py create_api_token alice)` works; the note to stderr.
        self.stdout.write(token)
        self.stderr.write(f"API token {token[:PREFIX_LENGTH]}… for {username}. Store it now: it cannot be shown again.")
