"""The report in a real browser: headless Chromium (Debian's package) driven by Playwright.

The page is loaded from disk with every non-file request aborted, as on a machine with no network.
It must log no console error, ask for nothing on the network, and draw every chart with a non-zero
size. A full-page screenshot is saved under tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Route, sync_playwright

from sim.report import build_report
from sim.report.build import SECTION_IDS

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def _browser_unavailable() -> str | None:
    """Why the browser test cannot run (None when it can)."""
    if not CHROMIUM.exists():
        return (f"{CHROMIUM} is missing: install Debian's package with "
                "`apt-get install -y chromium`")
    return None


pytestmark = pytest.mark.slow

_SKIP = _browser_unavailable()
if _SKIP:
    print(f"test_report_browser skipped: {_SKIP}", file=sys.stderr)


@pytest.fixture(scope="module")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if _SKIP:
        pytest.skip(_SKIP)
    out = tmp_path_factory.mktemp("browser") / "run"
    scenario = ROOT / "scenarios" / "cryptocity_day.yaml"
    if not scenario.is_file():
        scenario = sorted((ROOT / "scenarios").glob("*.yaml"))[0]
    done = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(scenario), "--out",
                           str(out), "--quiet", "--set", "duration_s=1200",
                           "--set", "warmup_s=300"],  # the scenario warms up for 1800 s
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert (out / "summary.json").is_file(), \
        f"run failed ({done.returncode}): {done.stderr[-3000:]}"
    return build_report(out)


def _load(report: Path, screenshot: Path) -> dict[str, Any]:
    console_errors: list[str] = []
    blocked: list[str] = []

    def only_files(route: Route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900},
                                          offline=True)
            page = context.new_page()
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error"
                    else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.route("**/*", only_files)
            page.goto(report.as_uri(), wait_until="load")
            page.wait_for_function(
                "Array.from(document.querySelectorAll('div.chart'))"
                ".every(d => d.querySelector('svg.main-svg'))", timeout=30_000)
            charts = page.evaluate(
                """Array.from(document.querySelectorAll('div.chart')).map(d => {
                    const r = d.getBoundingClientRect();
                    return {id: d.id, width: r.width, height: r.height,
                            traces: d.querySelectorAll('.trace, .barlayer .point').length};
                })""")
            sections = page.evaluate(
                "Array.from(document.querySelectorAll('section')).map(s => s.id)")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"errors": console_errors, "blocked": blocked, "charts": charts,
            "sections": sections}


def test_report_renders_offline_without_errors(report_path: Path) -> None:
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    seen = _load(report_path, screenshot)
    assert seen["errors"] == []
    assert seen["blocked"] == [], "the report asked for something on the network"
    assert len(seen["sections"]) == len(SECTION_IDS)
    assert len(seen["charts"]) >= 6
    for chart in seen["charts"]:
        assert chart["width"] > 100 and chart["height"] > 100, chart
        assert chart["traces"] > 0, chart
    assert screenshot.stat().st_size > 10_000
    shutil.copy(report_path, ARTIFACTS / "report.html")
