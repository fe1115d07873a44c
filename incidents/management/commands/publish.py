"""Rebuild the public snapshot now (break-glass): `manage.py publish [--force]`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from incidents.publishing import publish, snapshot_path


class Command(BaseCommand):
    help = "Build the public snapshot from the database and store it (database, Redis, file)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="Store a new version even if nothing changed.")

    def handle(self, *args: Any, force: bool, **options: Any) -> None:
        snapshot = publish(force=force)
        self.stdout.write(f"published snapshot version {snapshot.version} (file: {snapshot_path()})")
