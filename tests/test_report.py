"""The HTML report, the comparison and the exports, checked against a real short simulation run.

The report is parsed (html.parser) and every figure is traced back to its source: numbers in the
summary sentence to summary.json, chart data to SQL counts over results.db. "Self-contained" is
checked structurally: no src/href/link to anything, one copy of plotly.js byte-identical to the
bundle shipped with plotly, and no URL anywhere outside that bundle.
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from plotly.offline import get_plotlyjs

from sim.report import (
    ReportError,
    build_report,
    compare_runs,
    export_run,
    format_compare_table,
)
from sim.report.build import SECTION_IDS
from sim.report.docs_figures import BEGIN, END, figures_block, rewrite_page
from sim.report.headline import HEADLINE

pytestmark = pytest.mark.slow  # two real simulation runs of a few seconds each

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
SHORT_RUN = ["duration_s=1200", "warmup_s=300"]  # the scenarios warm up for 1800 s

CHART_IDS = (
    "chart-rails-cost", "chart-latency-histogram", "chart-latency-cdf", "chart-latency-over-time",
    "chart-legs-breakdown", "chart-legs-utilization", "chart-legs-queue",
    "chart-throughput", "chart-outcomes",
    "chart-market-price", "chart-market-slippage", "chart-market-fees",
    "chart-settlement-latency", "chart-settlement-positions", "chart-settlement-funding",
    "chart-tax-residency", "chart-tax-collection",
)


# --- running the real simulation ---------------------------------------------------------------


def _scenario(preferred: str) -> Path:
    path = SCENARIOS / preferred
    if path.is_file():
        return path
    found = sorted(SCENARIOS.glob("*.yaml"))
    assert found, f"no scenario files in {SCENARIOS}"
    return found[0]


def real_run(out: Path, scenario: Path, overrides: list[str], seed: int = 1) -> Path:
    """Run the simulation through the CLI as a user would; return the run directory."""
    command = [sys.executable, "-m", "sim.cli", "run", str(scenario), "--out", str(out),
               "--seed", str(seed), "--quiet"]
    for item in overrides:
        command += ["--set", item]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    assert (out / "summary.json").is_file(), \
        f"run failed ({done.returncode}): {done.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return real_run(tmp_path_factory.mktemp("report") / "run",
                    _scenario("cryptocity_day.yaml"), SHORT_RUN)


@pytest.fixture(scope="module")
def report(run_dir: Path) -> tuple[Path, str]:
    path = build_report(run_dir)
    return path, path.read_text(encoding="utf-8")


def _summary(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "summary.json").read_text()))


def _sql(run_dir: Path, query: str) -> Any:
    with sqlite3.connect(run_dir / "results.db") as conn:
        return conn.execute(query).fetchone()[0]


# --- a small HTML model of the page ------------------------------------------------------------


class Page(HTMLParser):
    """Sections, chart elements, figure JSON, tagged figures, and every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, str] = {}
        self.charts: dict[str, str] = {}  # id -> "div" | "empty"
        self.figures: dict[str, dict[str, Any]] = {}
        self.figs: list[tuple[str, str, list[str]]] = []  # (data-key, data-value, text parts)
        self.url_attrs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.scripts: list[str] = []
        self._section: str | None = None
        self._in_h2 = False
        self._script: dict[str, str] | None = None
        self._script_text: list[str] = []
        self._fig_stack: list[tuple[str, str, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        for name in ("src", "href", "action", "data", "poster", "srcset"):
            if name in a:
                self.url_attrs.append((tag, name, a[name]))
        if tag == "section":
            self._section = a.get("id", "")
        elif tag == "h2" and self._section is not None:
            self._in_h2 = True
            self.sections[self._section] = ""
        elif tag == "div" and "chart" in a.get("class", "").split():
            self.charts[a["id"]] = "div"
        elif tag == "p" and a.get("data-empty") == "1":
            self.charts[a["id"]] = "empty"
        elif tag == "script":
            self._script, self._script_text = a, []
        if tag == "span" and "data-key" in a and "data-value" in a:
            self._fig_stack.append((a["data-key"], a["data-value"], []))
            self.figs.append(self._fig_stack[-1])

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False
        elif tag == "script" and self._script is not None:
            text = "".join(self._script_text)
            if "figure-data" in self._script.get("class", ""):
                self.figures[self._script["data-target"]] = json.loads(text)
            else:
                self.scripts.append(text)
            self._script = None
        elif tag == "span" and self._fig_stack:
            self._fig_stack.pop()

    def handle_data(self, data: str) -> None:
        if self._in_h2 and self._section is not None:
            self.sections[self._section] += data
        if self._script is not None:
            self._script_text.append(data)
        for _, _, parts in self._fig_stack:
            parts.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def _lookup(summary: dict[str, Any], key: str) -> Any:
    node: Any = summary
    for part in key.split("."):
        node = node[part]
    return node


# --- the report --------------------------------------------------------------------------------


def test_every_section_has_a_heading(report: tuple[Path, str]) -> None:
    page = parse(report[1])
    assert list(page.sections) == list(SECTION_IDS)
    assert all(title.strip() for title in page.sections.values())


def test_every_chart_is_present_and_drawn_from_the_run(run_dir: Path,
                                                       report: tuple[Path, str]) -> None:
    page = parse(report[1])
    assert set(page.charts) == set(CHART_IDS)
    drawn = [c for c, kind in page.charts.items() if kind == "div"]
    assert set(drawn) == set(page.figures), "each chart div has exactly one figure JSON"
    for chart_id in drawn:
        data = page.figures[chart_id]["data"]
        assert data and all(len(trace.get("x") or trace.get("y") or []) for trace in data), chart_id
    # The core charts must be drawn for a run that processed payments.
    for chart_id in ("chart-latency-histogram", "chart-latency-cdf", "chart-latency-over-time",
                     "chart-legs-breakdown", "chart-throughput", "chart-outcomes"):
        assert page.charts[chart_id] == "div", chart_id

    n_payments = _sql(run_dir, "SELECT COUNT(*) FROM payments")
    assert n_payments > 0
    histogram = page.figures["chart-latency-histogram"]["data"]
    assert sum(sum(trace["y"]) for trace in histogram) == n_payments
    cdf = page.figures["chart-latency-cdf"]["data"][0]
    assert cdf["x"][-1] == pytest.approx(_sql(run_dir, "SELECT MAX(latency_ms) FROM payments"))
    assert cdf["y"][-1] == 1.0
    arrivals = page.figures["chart-throughput"]["data"][0]
    width = arrivals["x"][1] - arrivals["x"][0] if len(arrivals["x"]) > 1 else None
    if width:
        assert sum(arrivals["y"]) * width == pytest.approx(n_payments)
    legs = page.figures["chart-legs-breakdown"]["data"]
    summary = _summary(run_dir)
    assert legs[0]["x"] == list(summary["legs"])
    assert legs[0]["y"] == [pytest.approx(v["mean_wait_ms"]) for v in summary["legs"].values()]


def _shown_number(text: str) -> Decimal:
    match = re.search(r"-?[0-9][0-9,]*(?:\.[0-9]+)?", text)
    assert match, text
    return Decimal(match.group().replace(",", ""))


def test_summary_figures_equal_summary_json(run_dir: Path, report: tuple[Path, str]) -> None:
    summary = _summary(run_dir)
    page = parse(report[1])
    checked = set()
    for key, value, parts in page.figs:
        shown = "".join(parts)
        if key == "approval_share":
            expected = summary["payments"]["approved"]
            whole = summary["payments"].get("measured", summary["payments"]["attempted"])
            share = Decimal(expected) * 100 / Decimal(whole)
            assert Decimal(0) <= share - _shown_number(shown) < Decimal("0.1"), shown
        elif key == "declined_total":
            expected = sum(summary["payments"]["declined"].values())
            assert _shown_number(shown) == expected
        elif key == "violations":
            expected = len(summary["ledger"]["violations"])
            assert int(shown) == expected
        elif key in ("slo.met", "slo.total"):
            slos = summary["slo"].values()
            expected = sum(1 for s in slos if s["pass"]) if key == "slo.met" else len(slos)
            assert int(shown) == expected
        else:
            expected = _lookup(summary, key)
            number = _shown_number(shown) if expected is not None else None
            if key.endswith("_kzt"):
                exact = Decimal(expected)
                scale = {"billion": Decimal(10) ** 9, "million": Decimal(10) ** 6}
                unit = next((scale[w] for w in scale if w in shown), Decimal(1))
                assert abs(number * unit - exact) <= unit / 20, (key, shown, expected)
            elif key.startswith("auth_latency_ms") or key == "deadline_ms":
                shown_ms = number * (1000 if shown.endswith(" s") else 1)
                step = 100 if shown.endswith(" s") else 1
                assert 0 <= shown_ms - Decimal(repr(float(expected))) < step, (key, shown)
            elif key == "deadline_miss_rate":
                assert abs(number - Decimal(repr(expected * 100))) <= Decimal("0.005"), shown
            elif isinstance(expected, int) and not isinstance(expected, bool):
                assert number == expected, (key, shown)
        assert value == str(expected), (key, value, expected)
        checked.add(key)
    assert {"approval_share", "payments.attempted", "auth_latency_ms.p99",
            "tax.realized_gain_kzt", "tax.pit_due_kzt"} <= checked


def test_slo_verdicts_are_coloured_by_the_summary(run_dir: Path, report: tuple[Path, str]) -> None:
    summary = _summary(run_dir)
    for name, slo in summary.get("slo", {}).items():
        css = "pass" if slo["pass"] else "fail"
        attr = html.escape(name, quote=True)
        assert f'class="badge {css}" data-slo="{attr}" data-pass="{slo["pass"]}"' in report[1]


def test_integrity_lists_every_check_of_the_run(run_dir: Path, report: tuple[Path, str]) -> None:
    with sqlite3.connect(run_dir / "results.db") as conn:
        checks = conn.execute('SELECT "check", ok FROM integrity').fetchall()
    assert checks
    for check, ok in checks:
        assert f'data-check="{check}" data-ok="{bool(ok)}"' in report[1]


def test_scenario_section_shows_the_run_identity(run_dir: Path, report: tuple[Path, str]) -> None:
    summary = _summary(run_dir)
    for key in ("scenario_sha256", "ccsim_version"):
        assert str(summary[key]) in report[1]
    yaml_text = _sql(run_dir, "SELECT scenario_yaml FROM runs")
    first_line = next(line for line in yaml_text.splitlines() if line.strip())
    assert html.escape(first_line, quote=True) in report[1]


def test_report_references_no_external_url(report: tuple[Path, str]) -> None:
    text = report[1]
    page = parse(text)
    assert "link" not in page.tags and "iframe" not in page.tags and "img" not in page.tags
    assert all(attr == "href" and value.startswith("#") for _, attr, value in page.url_attrs), \
        page.url_attrs
    bundle = get_plotlyjs()
    assert text.count(bundle) == 1, "plotly.js must be inlined exactly once"
    assert page.scripts[0] == bundle, "the first script is plotly.js, byte for byte"
    rest = text.replace(bundle, "")
    assert not re.search(r"(?i)https?://|//[a-z0-9.-]+\.[a-z]{2,}/|url\(|@import|@font-face", rest)


def test_report_stays_small(report: tuple[Path, str]) -> None:
    size = report[0].stat().st_size
    bundle = len(get_plotlyjs().encode())
    # Everything but plotly.js is aggregates: well under a megabyte whatever the run length.
    assert size - bundle < 1_000_000, size - bundle


def test_rebuilding_replaces_the_report_atomically(run_dir: Path) -> None:
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# --- bad inputs --------------------------------------------------------------------------------


def test_missing_directory_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        build_report(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_missing_summary_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"summary\.json is missing"):
        build_report(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_corrupt_results_db_is_a_report_error(run_dir: Path, tmp_path: Path,
                                              damage: str) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(run_dir / "summary.json", broken / "summary.json")
    db = (run_dir / "results.db").read_bytes()
    if damage == "garbage":
        (broken / "results.db").write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        (broken / "results.db").write_bytes(db[: len(db) // 3])
    with pytest.raises(ReportError, match=r"results\.db"):
        build_report(broken)
    assert sorted(p.name for p in broken.iterdir()) == sorted(
        ["summary.json"] + ([] if damage == "missing" else ["results.db"]))


def test_cli_reports_bad_input_with_a_message_and_nonzero_exit(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "sim.cli", "report", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode != 0
    assert "does not exist" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


# --- compare -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Pre-funded vs JIT when both scenarios exist; else the same scenario with another seed."""
    base = tmp_path_factory.mktemp("compare")
    prefunded = sorted(SCENARIOS.glob("*prefund*.yaml"))
    jit = sorted(SCENARIOS.glob("*jit*.yaml"))
    if prefunded and jit:
        return [real_run(base / "prefunded", prefunded[0], SHORT_RUN),
                real_run(base / "jit", jit[0], SHORT_RUN)]
    return [run_dir, real_run(base / "other", _scenario("cryptocity_day.yaml"), SHORT_RUN,
                              seed=7)]


def test_compare_difference_columns_equal_the_summaries(two_runs: list[Path],
                                                        tmp_path: Path) -> None:
    path = compare_runs(two_runs, tmp_path / "cmp")
    text = path.read_text(encoding="utf-8")
    first, second = (_summary(d) for d in two_runs)
    rows = dict(re.findall(r'<tr data-metric="([^"]+)">(.*?)</tr>', text))
    assert set(rows) == {m.key for m in HEADLINE}
    checked = 0
    for metric in HEADLINE:
        match = re.search(r'data-delta="([^"]*)"', rows[metric.key])
        assert match
        a, b = metric.value(first), metric.value(second)
        if a is None or b is None:
            continue
        if metric.kind.value == "kzt":
            assert Decimal(match.group(1)) == Decimal(str(b)) - Decimal(str(a))
        elif metric.kind.value == "bool":
            assert match.group(1) == str(a == b)
        else:  # the difference of the figures as shown, not of the unrounded ones
            assert Decimal(match.group(1)) == metric.rounded(b) - metric.rounded(a)  # type: ignore[operator]
        checked += 1
    assert checked >= 10
    page = parse(text)
    cdf = page.figures["chart-compare-cdf"]["data"]
    assert len(cdf) == 2 and all(trace["y"][-1] == 1.0 for trace in cdf)
    assert {"chart-compare-throughput", "chart-compare-declines", "chart-compare-fees",
            "chart-compare-slippage", "chart-compare-tax"} <= set(page.figures)
    assert not re.search(r"https?://", text.replace(get_plotlyjs(), ""))


def test_compare_table_for_the_terminal(two_runs: list[Path]) -> None:
    table = format_compare_table(two_runs)
    first, second = (_summary(d) for d in two_runs)
    line = next(row for row in table.splitlines() if row.startswith("payments attempted"))
    a, b = first["payments"]["attempted"], second["payments"]["attempted"]
    assert f"{a:,}" in line and f"{b:,}" in line and f"{b - a:+,}" in line


def test_compare_refuses_different_versions_and_missing_runs(run_dir: Path,
                                                             tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    summary = _summary(other)
    summary["ccsim_version"] = "0.0.0-other"
    (other / "summary.json").write_text(json.dumps(summary))
    with sqlite3.connect(other / "results.db") as conn:  # one run, as another version wrote it
        conn.execute("UPDATE runs SET summary_json = ?", (json.dumps(summary),))
    out = tmp_path / "out"
    with pytest.raises(ReportError, match="different ccsim versions"):
        compare_runs([run_dir, other], out)
    with pytest.raises(ReportError, match="different ccsim versions"):
        format_compare_table([run_dir, other])
    with pytest.raises(ReportError, match="does not exist"):
        compare_runs([run_dir, tmp_path / "missing"], out)
    with pytest.raises(ReportError, match="at least two"):
        compare_runs([run_dir], out)
    assert not out.exists()


# --- export ------------------------------------------------------------------------------------


def test_export_csv_has_every_row(run_dir: Path, tmp_path: Path) -> None:
    paths = export_run(run_dir, "csv", tmp_path / "csv")
    assert [p.name for p in paths] == ["payments.csv", "legs.csv", "timeseries.csv"]
    for path in paths:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        assert len(rows) - 1 == _sql(run_dir, f"SELECT COUNT(*) FROM {path.stem}")
    with paths[0].open(newline="") as handle:
        first = next(csv.DictReader(handle))
    assert int(first["amount_kzt_minor"]) >= 0


def test_export_parquet_keeps_money_exact(run_dir: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    paths = export_run(run_dir, "parquet", tmp_path / "pq")
    payments = pq.read_table(paths[0])
    assert payments.num_rows == _sql(run_dir, "SELECT COUNT(*) FROM payments")
    assert str(payments.schema.field("crypto_minor").type) == "decimal128(38, 0)"
    assert str(payments.schema.field("amount_kzt_minor").type) == "int64"
    total = sum(v for v in payments.column("fee_kzt_minor").to_pylist())
    assert total == _sql(run_dir, "SELECT COALESCE(SUM(fee_kzt_minor), 0) FROM payments")
    sold = [v for v in payments.column("crypto_minor").to_pylist() if v is not None]
    expected = _sql(run_dir, "SELECT COUNT(*) FROM payments WHERE crypto_minor IS NOT NULL")
    assert len(sold) == expected


def test_export_refuses_unknown_format_and_bad_run(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="format"):
        export_run(run_dir, "xlsx", tmp_path / "x")
    with pytest.raises(ReportError, match="does not exist"):
        export_run(tmp_path / "missing", "csv", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# --- the docs generator ------------------------------------------------------------------------


def test_docs_block_is_generated_from_the_report(run_dir: Path, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nintro\n\n{BEGIN}\nstale figures\n{END}\n\noutro\n")
    block = figures_block(run_dir, "make report-docs")
    rewrite_page(page, block)
    text = page.read_text()
    assert text.startswith("# Title\n\nintro\n\n") and text.endswith(f"{END}\n\noutro\n")
    assert "stale figures" not in text
    summary = _summary(run_dir)
    assert f"{summary['payments']['attempted']:,}" in text
    assert "| payments attempted |" in text
    unmarked = tmp_path / "unmarked.md"
    unmarked.write_text("# no markers here\n")
    with pytest.raises(ReportError, match="markers"):
        rewrite_page(unmarked, block)
    assert unmarked.read_text() == "# no markers here\n"


def test_compare_names_the_scenario_fields_that_differ_and_draws_each_run_s_deadline(
        run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = real_run(tmp_path_factory.mktemp("deadline") / "deadline", _scenario("cryptocity_day.yaml"),
                     [*SHORT_RUN, "network.deadline_ms=1500"])
    table = format_compare_table([run_dir, other])
    assert "scenario fields that differ:\n  network.deadline_ms: 1: " in table
    assert "| 2: 1500.0" in table
    assert "seed" not in table.split("\n\n")[0]  # same seed: not listed
    text = compare_runs([run_dir, other], tmp_path_factory.mktemp("cmp") / "out").read_text(encoding="utf-8")
    assert '<table id="scenario-diff">' in text and "network.deadline_ms" in text
    cdf = parse(text).figures["chart-compare-cdf"]["layout"]
    assert {a["text"] for a in cdf["annotations"] if a["text"].startswith("deadline")} == {
        f"deadline {_summary(run_dir)['deadline_ms']:,.0f} ms (run 1)", "deadline 1,500 ms (run 2)"}


def test_compare_deltas_are_the_differences_of_the_rounded_figures_shown() -> None:
    metric = next(m for m in HEADLINE if m.key == "auth_latency_ms.p99")
    a, b = 100.4, 100.6  # shown as 100 ms and 101 ms
    assert metric.fmt(a) == "100 ms" and metric.fmt(b) == "101 ms"
    assert metric.fmt_delta(metric.delta(a, b)) == "+1 ms"
    rate = next(m for m in HEADLINE if m.key == "approval_rate")
    assert rate.fmt_delta(rate.delta(0.93214, 0.93226)) == "+0.02 pp"  # 93.21 % → 93.23 %, not +0.01
