"""The support table of docs/scheduler.md, made from the conformance suite's catalogue.

``python tests/tiny_pipelines/support_table.py`` prints it; ``tests/test_conformance.py`` checks that the docs hold
exactly this table, so the docs cannot claim more (or less) than the suite tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tiny_pipelines`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tiny_pipelines.cases import all_cases  # noqa: E402

# Pipelines FlowTurboScheduler refuses, by case id: (a regex of the error it raises before sampling, the reason).
REFUSED: dict[str, tuple[str, str]] = {}


def support_table() -> str:
    """The Markdown table: pipeline class (with the variant tested), family, status, and what the case shows."""
    lines = [
        "| pipeline | family | status | notes |",
        "| --- | --- | --- | --- |",
    ]
    for case in all_cases():
        name = f"`{case.pipeline}`" + (f" ({case.variant})" if case.variant else "")
        status = f"refused: {REFUSED[case.id][1]}" if case.id in REFUSED else "supported"
        notes = " ".join(case.notes.split()).replace("|", "\\|")
        lines.append(f"| {name} | {case.family} | {status} | {notes} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(support_table())
