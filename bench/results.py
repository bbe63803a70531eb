"""``bench/RESULTS.md``: ``run_all.py`` writes its head; longer runs own a ``## `` section each.

A writer replaces its own section and keeps every other one, whichever order they were written in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().with_name("RESULTS.md")
#: The sections written by runs of their own (minutes each), which ``run_all.py`` keeps.
SOAK_HEADING = "## Soak of the embedded stack"
PRODUCTION_HEADING = "## Production shape"
#: Written by hand from ``bench/request_roundtrip.py --broker apache`` runs on an idle machine.
IDLE_MACHINE_HEADING = "## Apache Kafka round trip on an idle machine"
UNIT_UPDATES_HEADING = "## Production-unit updates"
SERIAL_DAY_REPORT_HEADING = "## Day report at the gateway's pace"
#: ``bench/plant_scale.py``'s sections: without echo (the original gateway), and with echo
PLANT_SCALE_HEADINGS = {False: "## Plant scale, no echo", True: "## Plant scale, with echo"}
KEPT_HEADINGS = (
    IDLE_MACHINE_HEADING,
    SOAK_HEADING,
    PRODUCTION_HEADING,
    UNIT_UPDATES_HEADING,
    SERIAL_DAY_REPORT_HEADING,
    *PLANT_SCALE_HEADINGS.values(),
)


def section(text: str, heading: str) -> str:
    """The section of *text* that starts with the line *heading*, up to the next ``## `` line;
    empty when there is none."""
    lines = text.splitlines(keepends=True)
    for start, line in enumerate(lines):
        if line.startswith(heading):
            end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
            return "".join(lines[start:end]).rstrip("\n") + "\n"
    return ""


def without_section(text: str, heading: str) -> str:
    """*text* without the section that starts with the line *heading*."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        return text
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[:start] + lines[end:])


def write_section(heading: str, body: str) -> None:
    """Replace (or append) the section *heading* of RESULTS.md with *body*, which starts with it."""
    previous = RESULTS.read_text() if RESULTS.exists() else ""
    rest = without_section(previous, heading).rstrip("\n")
    RESULTS.write_text((rest + "\n\n" if rest else "") + body.rstrip("\n") + "\n")


def write_head(text: str) -> None:
    """Write ``run_all.py``'s figures, keeping the sections of :data:`KEPT_HEADINGS`."""
    previous = RESULTS.read_text() if RESULTS.exists() else ""
    kept = [found for heading in KEPT_HEADINGS if (found := section(previous, heading))]
    RESULTS.write_text("\n".join([text.rstrip("\n") + "\n", *kept]))


def write_run(heading: str, script: str, load: str, minutes: float, text: str) -> None:
    """Write *text*, the figures of one run of *script*, as the section *heading*, stamped with
    the time, the load average at the end and how long the run took."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    write_section(
        heading,
        f"{heading} (`{script}`, {stamp}, load average {load} at the end, whole run {minutes:.1f} minutes)"
        f"\n\n{text}\n",
    )
