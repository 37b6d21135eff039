"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against the gateway
under uvicorn on 127.0.0.1.

It picks a scenario, turns three knobs, starts the run, sees the live KPIs change while the run goes
on, and sees the report link appear when it ends. Every request that does not go to the gateway is
aborted, as on a machine with no network: the dashboard must work offline. Screenshots of the run
in progress and of the finished run are kept under tests/artifacts/.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from faults.ports import free_port
from playwright.sync_api import Route, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

pytestmark = pytest.mark.slow

_SKIP = None if CHROMIUM.exists() else f"{CHROMIUM} is missing: install Debian's package (apt-get install chromium)"
if _SKIP:
    print(f"test_live_dashboard_browser skipped: {_SKIP}", file=sys.stderr)

_LAUNCH = """
import sys, uvicorn
from pathlib import Path
from sim.live.gateway import GatewaySettings, create_gateway_app
settings = GatewaySettings(scenarios_dir=Path(sys.argv[1]), runs_dir=Path(sys.argv[2]), data_dir=Path(sys.argv[3]))
uvicorn.run(create_gateway_app(settings), host="127.0.0.1", port=int(sys.argv[4]), log_level="warning")
"""


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _SKIP:
        pytest.skip(_SKIP)
    tmp = tmp_path_factory.mktemp("gateway")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, str(ROOT / "scenarios"), str(tmp / "runs"),
                             str(tmp / "data"), str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):  # a failure detector: a busy machine imports the gateway slowly
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"the gateway exited with {proc.returncode}: {out[-2000:]}")
            time.sleep(0.1)
        else:
            raise AssertionError("the gateway did not answer /healthz within 120 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_start_a_scenario_watch_the_kpis_move_and_open_the_report(gateway_url: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    console_errors: list[str] = []
    outside: list[str] = []

    def only_the_gateway(route: Route) -> None:
        if route.request.url.startswith(gateway_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.route("**/*", only_the_gateway)
            page.goto(gateway_url + "/")
            page.wait_for_selector("#scenario option[value=exchange_outage]", state="attached")
            page.select_option("#scenario", "exchange_outage")
            assert page.input_value("#deadline-ms") == "3000"  # the scenario's own value, filled in
            page.fill("#duration", "3600")
            page.fill("#rate-scale", "25")
            page.fill("#outage-start", "1200")
            page.fill("#outage-duration", "600")
            page.click("#start")

            # The KPIs move: the payment count is shown, then shown larger, while the run is running.
            page.wait_for_function("document.getElementById('kpi-payments').textContent.trim() !== '–'",
                                   timeout=60_000)
            first = int(page.text_content("#kpi-payments").replace(",", ""))  # type: ignore[union-attr]
            page.wait_for_function(
                f"Number(document.getElementById('kpi-payments').textContent.replace(/,/g, '')) > {first}",
                timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "dashboard_running.png"), full_page=True)

            page.wait_for_selector("#report-link", timeout=180_000)
            assert page.get_attribute("#run-status", "data-status") == "done"
            assert page.text_content("#kpi-invariants") == "all hold, reconciled"
            approval = page.text_content("#kpi-approval-rate") or ""
            assert approval.endswith("%") and float(approval.split()[0]) > 50.0
            assert int((page.text_content("#kpi-stand-in") or "0").replace(",", "")) > 0  # the outage
            page.wait_for_selector("#chart .main-svg", state="attached")  # plotly drew the chart offline
            page.screenshot(path=str(ARTIFACTS / "dashboard_done.png"), full_page=True)

            href = page.get_attribute("#report-link", "href")
            assert href is not None
            report = page.request.get(gateway_url + href)
            assert report.status == 200 and "exchange_outage" in report.text()
            assert page.locator("#runs-body tr").count() == 1
        finally:
            browser.close()
    assert outside == [], f"the dashboard asked for something outside the gateway: {outside}"
    assert console_errors == []


def test_a_long_run_is_cancelled_from_the_page_and_its_slot_freed(gateway_url: str) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(gateway_url)
                       else route.abort())
            page.goto(gateway_url + "/")
            page.wait_for_selector("#scenario option[value=jit]", state="attached")
            assert page.is_hidden("#cancel")
            page.select_option("#scenario", "jit")
            page.fill("#duration", "604800")  # a week at 5 × the rate, about a million payments: minutes of work
            page.fill("#rate-scale", "5")
            page.click("#start")
            page.wait_for_function("document.getElementById('run-status').dataset.status === 'running'",
                                   timeout=60_000)
            assert page.text_content("#form-error") == ""
            assert page.is_visible("#cancel")
            page.click("#cancel")
            page.wait_for_function("document.getElementById('run-status').dataset.status === 'cancelled'",
                                   timeout=60_000)
            assert "cancelled on request" in (page.text_content("#run-status") or "")
            assert page.is_hidden("#cancel") and page.is_enabled("#start")
            assert page.locator("#report-link").count() == 0
            runs = page.request.get(gateway_url + "/v1/runs").json()
            assert runs[0]["status"] == "cancelled"  # the newest run; its slot is free again
            assert all(r["status"] not in {"running", "cancelling"} for r in runs)
        finally:
            browser.close()
