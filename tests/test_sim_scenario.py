"""The scenario schema: defaults, overrides, and bad input that exits 2 naming the file and field."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from sim.cli import main
from sim.domain import chain_config
from sim.scenario import Scenario, Slo, kzt_minor
from sim.scenario_load import ScenarioError, apply_overrides, load_scenario, parse_scenario

GOOD = """\
name: tiny
duration_s: 600
warmup_s: 60
population:
  cardholders: {count: 50}
  merchants: {count: 10}
services:
  issuer: {capacity: 4, service_time: {dist: exponential, mean_ms: 20}}
"""


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_form_a_valid_scenario() -> None:
    sc = Scenario()
    assert sc.services.issuer.capacity == 32
    assert sc.network.deadline_ms == 3000
    assert set(sc.market.assets) == {"BTC", "ETH", "USDT"}
    cfg = chain_config(sc)
    assert cfg.stand_in_limit_kzt == 50_000_00
    assert cfg.exchange.books["BTC"].depth_per_level_kzt == 50_000_000_00


def test_file_values_override_defaults_and_name_defaults_to_stem(tmp_path: Path) -> None:
    sc, text = load_scenario(_write(tmp_path, GOOD.replace("name: tiny\n", ""), "my_day.yaml"))
    assert sc.name == "my_day"
    assert sc.services.issuer.capacity == 4
    assert sc.services.issuer.service_time.dist == "exponential"
    assert sc.services.network.capacity == 128  # untouched default
    assert "duration_s: 600" in text


def test_overrides_are_yaml_parsed_and_validated(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    sc, text = load_scenario(path, ["services.issuer.capacity=8", "services.bank.capacity=unlimited",
                                    "network.stand_in.limit_kzt=1234.56", "arrivals.bursts=[]"])
    assert sc.services.issuer.capacity == 8
    assert sc.services.bank.capacity == "unlimited"
    assert sc.network.stand_in.limit_kzt == Decimal("1234.56")
    assert kzt_minor(sc.network.stand_in.limit_kzt) == 123456
    assert "capacity: 8" in text  # the text as run carries the override
    with pytest.raises(ScenarioError, match=r"services\.issuer\.capacity"):
        load_scenario(path, ["services.issuer.capacity=0"])
    with pytest.raises(ScenarioError, match=r"dotted\.key=value"):
        load_scenario(path, ["services.issuer.capacity"])


def test_apply_overrides_copies_and_indexes_lists() -> None:
    raw = {"market": {"assets": {"BTC": {"start_price_kzt": "1", "moves": [{"at_s": 5, "change_pct": -10}]}}}}
    out = apply_overrides(raw, ["market.assets.BTC.moves.0.change_pct=-40"])
    assert out["market"]["assets"]["BTC"]["moves"][0]["change_pct"] == -40
    assert raw["market"]["assets"]["BTC"]["moves"][0]["change_pct"] == -10
    with pytest.raises(ScenarioError, match="list index"):
        apply_overrides(raw, ["market.assets.BTC.moves.7.change_pct=1"])


def test_slo_parsing() -> None:
    slo = Slo.parse("auth_latency_ms.p99<2000")
    assert (slo.metric, slo.op, slo.threshold) == ("auth_latency_ms.p99", "<", 2000.0)
    assert slo.holds(1999.9) and not slo.holds(2000.0)
    assert Slo.parse("legs.exchange.utilization <= 0.8").holds(0.8)
    with pytest.raises(ValueError, match="unknown metric"):
        Slo.parse("auth_latency_ms.p98 < 10")
    with pytest.raises(ValueError, match=r"not 'metric\.path OP number'"):
        Slo.parse("auth_latency_ms.p99 about 10")


def test_money_in_scenarios_is_exact() -> None:
    sc = parse_scenario({"network": {"stand_in": {"limit_kzt": "0.01"}}})
    assert kzt_minor(sc.network.stand_in.limit_kzt) == 1
    with pytest.raises(ScenarioError, match="decimals"):
        parse_scenario({"network": {"stand_in": {"limit_kzt": "1.001"}}})
    with pytest.raises(ScenarioError, match="negative"):
        parse_scenario({"network": {"stand_in": {"limit_kzt": "-5"}}})


BAD_INPUTS = [
    pytest.param("duration_s: 600\nservices:\n  issuer: {capacity: [1,\n", r"s\.yaml:\d+:\d+: YAML syntax error",
                 id="yaml-syntax"),
    pytest.param("duration_s: 600\nservicez: {}\n", r"s\.yaml:2: servicez: Extra inputs are not permitted",
                 id="unknown-key"),
    pytest.param("services:\n  issuer:\n    capacty: 3\n", r"s\.yaml:3: services\.issuer\.capacty: Extra inputs",
                 id="unknown-nested-key"),
    pytest.param("arrivals:\n  rate_per_s: -2\n", r"s\.yaml:2: arrivals\.rate_per_s: Input should be greater than 0",
                 id="negative-rate"),
    pytest.param("services:\n  exchange:\n    capacity: 0\n",
                 r"s\.yaml:3: services\.exchange\.capacity: capacity must be",
                 id="capacity-zero"),
    pytest.param("population:\n  cardholders:\n    holdings:\n      DOGE: {share: 0.5}\n",
                 r"s\.yaml:3: population\.cardholders\.holdings: unknown asset 'DOGE'", id="unknown-asset"),
    pytest.param("market:\n  assets:\n    XRP: {start_price_kzt: '250'}\n",
                 r"market\.assets: unknown asset 'XRP'", id="unknown-market-asset"),
    pytest.param("slos:\n  - 'auth_latency_ms.p97 < 2000'\n",
                 r"s\.yaml:2: slos\.0: .*unknown metric 'auth_latency_ms\.p97'",
                 id="slo-unknown-metric"),
    pytest.param("services:\n  issuer:\n    service_time: {dist: weibull, mean_ms: 3}\n",
                 r"services\.issuer\.service_time", id="unknown-distribution"),
    pytest.param("services:\n  bank:\n    service_time: {dist: lognormal, mean_ms: -3}\n",
                 r"s\.yaml:3: services\.bank\.service_time\.mean_ms: Input should be greater than 0",
                 id="negative-mean"),
    pytest.param("- just\n- a list\n", r"s\.yaml: a scenario must be a YAML mapping", id="not-a-mapping"),
    pytest.param("duration_s: .inf\n", r"s\.yaml:1: duration_s: Input should be a finite number",
                 id="infinite-duration"),
    pytest.param("arrivals:\n  rate_per_s: .nan\n", r"s\.yaml:2: arrivals\.rate_per_s: Input should be a finite",
                 id="nan-rate"),
]


@pytest.mark.parametrize(("text", "pattern"), BAD_INPUTS)
def test_bad_scenario_exits_2_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, pattern: str
) -> None:
    path = _write(tmp_path, text)
    assert main(["validate", str(path)]) == 2
    assert re.search(pattern, capsys.readouterr().err), pattern
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()


def test_bad_override_on_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, GOOD)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--set", "arrivals.rate_per_s=-1"]) == 2
    assert "arrivals.rate_per_s" in capsys.readouterr().err
    assert not out.exists()


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(_write(tmp_path, GOOD))]) == 0
    assert "ok" in capsys.readouterr().out
