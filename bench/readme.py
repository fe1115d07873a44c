"""bench/README.md holds each benchmark's latest result between two markers; this rewrites one of them."""

from __future__ import annotations

from pathlib import Path


def rewrite_section(readme: Path, start: str, end: str, report: str) -> None:
    """Put `report` between the `start` and `end` markers of `readme`, keeping the rest as it is."""
    text = readme.read_text()
    before, found, rest = text.partition(start)
    if not found:
        raise SystemExit(f"{readme} has no {start} marker")
    _, _, after = rest.partition(end)
    readme.write_text(f"{before}{start}\n{report}\n{end}{after}")
