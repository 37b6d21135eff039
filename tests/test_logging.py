"""services.logging: JSON off a terminal, key-value on one, bound context and sim_time on events."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars, merge_contextvars
from structlog.testing import capture_logs

from services.clock import FixedClock
from services.logging import configure_logging, get_logger, sim_time_processor


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Logging config and context are process-global: a clean slate per test, then put back."""
    saved = structlog.get_config()
    clear_contextvars()
    yield
    clear_contextvars()
    structlog.configure(**saved)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_output_parses_and_carries_bound_context_and_sim_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FixedClock(start_s=12.5)
    configure_logging(json=True, clock=clock)
    bind_contextvars(run_id="run-7", transfer_id="t-42", request_id="req-1")
    log = get_logger("ledger")
    log.info("transfer_posted", amount_minor=1234, asset="KZT")
    clock.advance(2.5)
    log.warning("hold_expired", pending_id="h-1")

    first, second = _json_lines(capsys.readouterr().err)
    assert first["event"] == "transfer_posted"
    assert first["amount_minor"] == 1234
    assert first["level"] == "info"
    assert first["logger_name"] == "ledger"
    bound = (first["run_id"], first["transfer_id"], first["request_id"])
    assert bound == ("run-7", "t-42", "req-1")
    assert first["sim_time"] == 12.5
    assert first["timestamp"].endswith("Z")
    assert second["sim_time"] == 15.0  # read from the clock per event, not frozen at configure time
    assert second["level"] == "warning"


def test_logs_go_to_stderr_not_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    get_logger("x").info("somewhere")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert _json_lines(captured.err)[0]["event"] == "somewhere"


def test_level_filters_lower_events(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True, level="warning")
    log = get_logger("x")
    log.info("dropped")
    log.debug("dropped too")
    log.error("kept")
    assert [e["event"] for e in _json_lines(capsys.readouterr().err)] == ["kept"]


def test_unknown_level_is_a_programmer_error() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging(level="loud")


def test_console_renderer_writes_key_value_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=False)
    bind_contextvars(run_id="run-9")
    get_logger("sim").info("window_closed", net_minor=-5)
    err = capsys.readouterr().err
    assert "window_closed" in err
    assert "net_minor=-5" in err
    assert "run_id=run-9" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_auto_detect_picks_json_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stderr.isatty()  # capsys's stream is not a terminal
    configure_logging()
    get_logger("x").info("piped")
    assert _json_lines(capsys.readouterr().err)[0]["event"] == "piped"


def test_auto_detect_picks_key_value_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    configure_logging()
    get_logger("x").info("interactive", a=1)
    err = capsys.readouterr().err
    assert "\x1b[" in err  # a terminal gets colours
    plain = re.sub(r"\x1b\[[0-9;]*m", "", err)
    assert "interactive" in plain
    assert "a=1" in plain
    assert not plain.lstrip().startswith("{")


def test_configure_is_idempotent_and_replaced_by_other_arguments() -> None:
    configure_logging(json=True, level="info")
    installed = structlog.get_config()["processors"]
    configure_logging(json=True, level="info")
    assert structlog.get_config()["processors"] is installed  # same arguments: nothing redone
    configure_logging(json=False, level="info")
    assert structlog.get_config()["processors"] is not installed


def test_configure_again_after_someone_else_reconfigured() -> None:
    configure_logging(json=True)
    structlog.reset_defaults()
    configure_logging(json=True)  # same arguments, but structlog no longer holds our setup
    renderers = [type(p).__name__ for p in structlog.get_config()["processors"]]
    assert renderers[-1] == "JSONRenderer"


def test_capture_logs_sees_bound_context_and_sim_time() -> None:
    clock = FixedClock(start_s=3.0)
    bind_contextvars(run_id="run-1", transfer_id="t-1")
    with capture_logs(processors=[merge_contextvars, sim_time_processor(clock)]) as logs:
        get_logger("issuer").info("authorized", amount_minor=500)
        clock.advance(1.0)
        get_logger("issuer").info("captured", sim_time=99.0)  # an explicit sim_time wins
    assert logs[0]["run_id"] == "run-1"
    assert logs[0]["transfer_id"] == "t-1"
    assert logs[0]["sim_time"] == 3.0
    assert logs[0]["log_level"] == "info"
    assert logs[1]["sim_time"] == 99.0


def test_unbound_context_leaves_later_events() -> None:
    with capture_logs(processors=[merge_contextvars]) as logs:
        bind_contextvars(transfer_id="t-1")
        get_logger("x").info("with")
        structlog.contextvars.unbind_contextvars("transfer_id")
        get_logger("x").info("without")
    assert logs[0]["transfer_id"] == "t-1"
    assert "transfer_id" not in logs[1]


def test_exceptions_render_as_data_without_locals(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    card_number = "4000123412341234"
    try:
        raise RuntimeError("issuer timeout")
    except RuntimeError:
        get_logger("x").exception("authorization_failed")
    err = capsys.readouterr().err
    (event,) = _json_lines(err)
    assert event["exception"][0]["exc_type"] == "RuntimeError"
    assert card_number not in err
