"""The ``direct`` section of a scenario is validated like the rest: a bad key, asset shares that do
not sum to 1, a policy for an unknown segment or a threshold policy without its threshold exit 2
naming the field, and write nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim.cli import main

BASE = """\
name: tiny
duration_s: 600
warmup_s: 60
population:
  cardholders: {count: 50}
  merchants: {count: 10}
"""

BAD = [
    pytest.param("direct:\n  share: 0.5\n  sharee: 1\n", r"s\.yaml:9: direct\.sharee: .*(not permitted|Extra)",
                 id="unknown-key"),
    pytest.param("direct:\n  share: 0.5\n  assets: {crypto: 0.5, stablecoin: 0.3}\n",
                 r"direct\.assets: .*sum to 1", id="shares-not-summing-to-1"),
    pytest.param("direct:\n  share: 0.5\n  segments:\n    bakery: {policy: hold}\n",
                 r"direct\.segments: unknown segment 'bakery'", id="unknown-segment"),
    pytest.param("direct:\n  share: 0.5\n  conversion: {policy: threshold}\n",
                 r"direct\.conversion: .*threshold_kzt", id="threshold-without-threshold"),
    pytest.param("direct:\n  share: 1.5\n", r"direct\.share: Input should be less than or equal to 1", id="share"),
    pytest.param("direct:\n  fallback: bank\n", r"direct\.fallback: Input should be 'fail' or 'card'",
                 id="fallback"),
    pytest.param("direct:\n  conversion: {policy: weekly}\n", r"direct\.conversion\.policy: Input should be",
                 id="policy"),
]


@pytest.mark.parametrize(("text", "pattern"), BAD)
def test_a_bad_direct_section_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       text: str, pattern: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(BASE + text, encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    assert re.search(pattern, capsys.readouterr().err), pattern
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()


def test_a_good_direct_section_validates(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(BASE + "direct:\n  share: 0.5\n  assets: {crypto: 0.7, stablecoin: 0.3}\n"
                    "  segments:\n    food: {policy: threshold, threshold_kzt: '50000'}\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 0
