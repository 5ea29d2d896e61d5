"""Regenerate docs/report-screenshot.png from a real game-day report (`make screenshot`).

Runs ``blackstart gameday --only <experiment>`` on a fresh local cluster (or
takes the output folder of a game day that already ran, ``--from-run``),
opens the experiment's report in Debian's Chromium, headless, saves the top
of the page as ``docs/report-screenshot.png`` and rewrites the caption in
README.md (between the ``screenshot-run`` markers) to say which run the
picture shows. Nothing else writes the picture: the tests render their
screenshots into temporary folders.

    python docs/make_screenshot.py [--experiment coredns-outage] [--from-run gameday-.../]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PICTURE = REPO / "docs" / "report-screenshot.png"
README = REPO / "README.md"
CHROMIUM = "/usr/bin/chromium"
MARKERS = re.compile(r"(<!-- screenshot-run -->).*?(<!-- /screenshot-run -->)", re.S)
CLIP = {"x": 0, "y": 0, "width": 1280, "height": 1950}


def run_gameday(experiment: str, out: Path) -> None:
    blackstart = Path(sys.executable).with_name("blackstart")
    argv = [str(blackstart), "gameday", "--only", experiment, "--name", "screenshot"]
    print("$", " ".join([*argv, "--out", str(out)]), flush=True)
    done = subprocess.run([*argv, "--out", str(out)], cwd=REPO, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"the game day exited {done.returncode}; no screenshot taken from a run that did "
            f"not go as expected (see {out}/index.html)"
        )


def take_screenshot(report: Path) -> None:
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: install Debian's chromium (.ci/bootstrap does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(report.as_uri(), wait_until="load")
        page.screenshot(path=str(PICTURE), full_page=True, clip=CLIP)
        browser.close()


def describe_run(run: Path, experiment: str) -> str:
    journal: dict[str, Any] = json.loads((run / experiment / "journal.json").read_text())
    start = str(journal.get("start", ""))[:16].replace("T", " ")
    environment: dict[str, Any] = {}
    for entry in journal.get("extensions", []):
        if entry.get("name") == "blackstart":
            environment = dict(entry.get("environment") or {})
    provider = environment.get("provider") or "local"
    nodes = environment.get("nodes")
    kubernetes = (environment.get("versions") or {}).get("kubernetes", "")
    on = f"{provider} cluster" + (f" of {nodes} nodes" if nodes else "")
    on += f", Kubernetes {kubernetes}" if kubernetes else ""
    return (
        f"The picture is the `{experiment}` report of a real game day "
        f"(`blackstart gameday --only {experiment}`) run on {start} UTC on a {on}; "
        f"its status was `{journal.get('status')}`. `make screenshot` regenerates it."
    )


def update_readme(caption: str) -> None:
    text = README.read_text()
    if not MARKERS.search(text):
        raise SystemExit("README.md has no <!-- screenshot-run --> markers to put the caption in")
    README.write_text(MARKERS.sub(lambda m: f"{m.group(1)}{caption}{m.group(2)}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="coredns-outage")
    parser.add_argument("--from-run", type=Path, help="a game day's output folder to take it from")
    args = parser.parse_args()
    if args.from_run:
        run = args.from_run.resolve()
    else:
        run = Path(tempfile.mkdtemp(prefix="blackstart-screenshot-"))
        run_gameday(args.experiment, run)
    report = run / args.experiment / "report.html"
    if not report.exists():
        raise SystemExit(f"{report} does not exist: did the game day run {args.experiment}?")
    take_screenshot(report)
    caption = describe_run(run, args.experiment)
    update_readme(caption)
    print(f"wrote {PICTURE.relative_to(REPO)} from {report}\n{caption}")


if __name__ == "__main__":
    main()
