#!/usr/bin/env python3
"""Turns a run's output into a dated results page of the handbook.

    scripts/results.py drill [LOG] [PAGE]

reads the DRILL ledger lines that `make drill` leaves in target/drill.log and
writes docs/src/results/drill.md: the table, the machine, the commit and the
date. scripts/drill.sh calls it after every run, so the page is always the
latest run and nothing else (earlier runs are in git history).
"""
import datetime
import os
import pathlib
import platform
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

LEDGER = re.compile(
    r"DRILL (?P<drill>.+?)\s+produced\s+(?P<produced>\d+)\s+delivered\s+(?P<delivered>\d+)\s+"
    r"duplicates\s+(?P<duplicates>\d+)\s+dead (?P<dead>\S+)\s+pending (?P<pending>\d+)\s+lost (?P<lost>\d+)"
)
NOT_RUN = re.compile(r"DRILL (?P<drill>.+?)\s+not run: (?P<why>.*)")
# Any other DRILL line: a drill's own figures (the hostile drill's p99, say).
FIGURES = re.compile(r"(DRILL .*\S)")


def parse(text):
    """The ledgers (dicts), the drills that did not run ((name, why)) and the
    other DRILL lines (figures), in log order."""
    ledgers, not_run, figures = [], [], []
    for line in text.splitlines():
        if m := LEDGER.search(line):
            ledgers.append(m.groupdict())
        elif m := NOT_RUN.search(line):
            not_run.append((m["drill"], m["why"].strip()))
        elif m := FIGURES.search(line):
            figures.append(re.sub(r"\s+", " ", m[1]))
    return ledgers, not_run, figures


def failed_tests(text):
    """The tests the runner lists under `failures:` at the end (the drills whose assertion failed)."""
    listed = text.split("\nfailures:\n")[-1] if "\nfailures:\n" in text else ""
    return re.findall(r"^    (\S+::\S+)$", listed, re.M)


def number(text):
    return f"{int(text):,}"


def dead_cell(dead):
    if dead == "0":
        return "0"
    return ", ".join(f"{reason} {number(n)}" for reason, n in (part.split("=") for part in dead.split(",")))


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit():
    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{sha} (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else sha


def machine():
    cpu = ""
    try:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), ""
        )
    except OSError:
        pass
    memory = ""
    try:
        kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load {os.getloadavg()[0]:.1f} at the end"
    return f"{os.cpu_count()} cores{memory}{', ' + cpu if cpu else ''}, {platform.system()} {platform.release()}{load}"


def drill_page(ledgers, not_run, failed, now, figures=(), failures=()):
    lost = sum(int(l["lost"]) for l in ledgers)
    verdict = "every drill lost 0" if ledgers and lost == 0 else f"**{lost} lost**" if ledgers else "no drill ran"
    if failed:
        verdict += "; **the run failed** (a drill's assertion or a test error: see target/drill.log)"
    broker = "a broker started by the script" if os.environ.get("DRILL_OWN_BROKER") else "the broker at KAFKA_BOOTSTRAP"
    lines = [
        "# Drill results",
        "",
        "Written by `make drill` (`scripts/results.py` from `target/drill.log`): the",
        "latest run, nothing else. What each drill does is in [Drills](../development/drills.md).",
        "",
        f"- date: {now:%Y-%m-%d %H:%M} UTC",
        f"- commit: {commit()}",
        f"- machine: {machine()}",
        f"- build: release; against {broker}",
        f"- result: {verdict}",
        "",
        "| drill | produced | delivered | duplicates | dead | pending | lost |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for l in ledgers:
        cells = [f"`{l['drill']}`", number(l["produced"]), number(l["delivered"]), number(l["duplicates"]),
                 dead_cell(l["dead"]), number(l["pending"]), f"**{number(l['lost'])}**"]
        lines.append("| " + " | ".join(cells) + " |")
    if not_run:
        lines.append("")
        lines.extend(f"Not run: `{name}` ({why})." for name, why in not_run)
    if figures:
        lines += ["", "The drills' own figures, as they printed them:", "", "```"] + list(figures) + ["```"]
    if failures:
        lines += ["", "Failed: " + ", ".join(f"`{name}`" for name in failures) + "."]
    lines += [
        "",
        "Duplicates are further 2xx requests for an event already delivered (same",
        "`webhook-id`): after a kill or an outage, what was delivered since the last",
        "commit is delivered again.",
        "",
    ]
    return "\n".join(lines)


def main(argv):
    if len(argv) < 2 or argv[1] != "drill":
        sys.exit(__doc__)
    log = pathlib.Path(argv[2]) if len(argv) > 2 else ROOT / "target" / "drill.log"
    page = pathlib.Path(argv[3]) if len(argv) > 3 else ROOT / "docs" / "src" / "results" / "drill.md"
    text = log.read_text(encoding="utf-8", errors="replace")
    ledgers, not_run, figures = parse(text)
    failed = "test result: FAILED" in text
    if not ledgers and not not_run:
        sys.exit(f"results: no DRILL ledger line in {log}; {page} left as it was")
    now = datetime.datetime.now(datetime.timezone.utc)
    page.write_text(drill_page(ledgers, not_run, failed, now, figures, failed_tests(text)), encoding="utf-8")
    print(f"results: {page.relative_to(ROOT) if page.is_relative_to(ROOT) else page} written ({len(ledgers)} drills)")


if __name__ == "__main__":
    main(sys.argv)
