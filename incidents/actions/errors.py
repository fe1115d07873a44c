"""The refusal every action raises for a change it will not make, with a message for the person who
asked (and the field it concerns, for forms and the API)."""

from __future__ import annotations


class ActionRefused(Exception):
    """A refused change, with a message fit to show the person who asked for it."""

    def __init__(self, message: str, *, field: str | None = None, code: str = "refused") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code
