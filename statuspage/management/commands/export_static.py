"""Write the public site as plain files: `manage.py export_static DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from statuspage.export import write_site
from statuspage.snapshot import reader


class Command(BaseCommand):
    help = "Write the public pages, the v2 API, the feeds and the static assets of the latest snapshot to DIR."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)

    def handle(self, *args: Any, directory: Path, **options: Any) -> None:
        snapshot = reader.current()
        if snapshot is None:
            raise CommandError("There is no snapshot to export and none could be built (is the database up?).")
        if directory.exists() and any(directory.iterdir()):
            raise CommandError(f"{directory} is not empty; export into a new or empty folder.")
        directory.mkdir(parents=True, exist_ok=True)
        files = write_site(directory, snapshot.document)
        self.stdout.write(f"wrote {len(files)} files of snapshot version {snapshot.version} to {directory}")
