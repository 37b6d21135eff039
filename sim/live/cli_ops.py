"""``ccsim load`` and ``ccsim calibrate``: the live measurement commands.

    ccsim load SCENARIO --target URL [--duration-s N] [--rate-scale X] [--from-s S] [--seed N]
               [--set KEY=VALUE ...] [--out DIR] [--max-in-flight N] [--timeout-s S] [--gateway URL]
    ccsim calibrate LIVE_RUN_DIR [--out overlay.yaml]

``load`` exits 0 when every payment was answered, 1 when the gateway's cross-party checks failed,
2 on bad input, 3 when an SLO was breached, 4 when some payments got no answer (timeouts, refused
connections): a load test whose requests vanished has not measured what it claims.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

import aiohttp

from services.api.auth import AuthError
from sim.live.calibrate import CalibrationError, write_overlay
from sim.live.load import LATE_THRESHOLD_MS, plan_payments, pos_signer, run_open_loop
from sim.live.load_direct import DIRECT, DirectTarget
from sim.live.load_results import write_live_run
from sim.runner import EXIT_BAD_INPUT, EXIT_INTEGRITY, EXIT_OK, EXIT_SLO
from sim.scenario_load import ScenarioError, load_scenario

__all__ = ["EXIT_UNANSWERED", "add_live_ops_commands", "calibrate_command", "fetch_integrity", "load_command"]

EXIT_UNANSWERED: Final = 4
Command = Callable[[argparse.Namespace], int]


def _err(message: str) -> None:
    print(f"ccsim: {message}", file=sys.stderr)


def add_live_ops_commands(sub: Any, commands: MutableMapping[str, Command] | None = None) -> None:
    """Add ``load`` and ``calibrate`` to the ``ccsim`` parser (and their handlers to ``commands``)."""
    ld = sub.add_parser("load", help="open-loop load against ccsim serve; writes summary.json, results.db, report")
    ld.add_argument("scenario", type=Path)
    ld.add_argument("--target", required=True, help="base URL of the acquirer/network service")
    ld.add_argument("--path", default="/v1/payments", help="the POS endpoint under --target")
    ld.add_argument("--duration-s", type=float, default=60.0, help="seconds of the schedule to send")
    ld.add_argument("--from-s", type=float, default=0.0, help="start this far into the scenario's day")
    ld.add_argument("--rate-scale", type=float, default=None, help="multiply the scenario's arrival rate")
    ld.add_argument("--seed", type=int, default=1, help="the seed ccsim serve built the population with")
    ld.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ld.add_argument("--out", type=Path, default=None, help="run directory (default runs/live-<scenario>-<seed>/)")
    ld.add_argument("--max-in-flight", type=int, default=256, help="requests on the wire at once")
    ld.add_argument("--timeout-s", type=float, default=30.0, help="a request unanswered this long is a timeout")
    ld.add_argument("--late-ms", type=float, default=LATE_THRESHOLD_MS, help="a send this late is a late send")
    ld.add_argument("--gateway", default=None, help="gateway URL: read the cross-party checks after the load")
    ld.add_argument("--credentials", type=Path, default=None,
                    help="the keys ccsim serve wrote (<data dir>/credentials.json): payments are signed as the POS "
                         "(default: $CCSIM_CREDENTIALS_FILE, else data/live/credentials.json)")
    ld.add_argument("--direct-share", type=float, default=None, metavar="SHARE",
                    help="share of the payments to CryptoCity zone merchants sent to the exchange's direct rail "
                         "(default: the scenario's direct.share)")
    ld.add_argument("--exchange", default=None,
                    help="base URL of the exchange service: where direct payments go (ccsim serve: --port + 3)")
    ld.add_argument("--no-report", action="store_true", help="skip report.html")
    cal = sub.add_parser("calibrate", help="fit service times from a live run; write a scenario overlay")
    cal.add_argument("run_dir", type=Path)
    cal.add_argument("--out", type=Path, default=None, help="overlay path (default RUN_DIR/overlay.yaml)")
    ld.set_defaults(handler=load_command)
    cal.set_defaults(handler=calibrate_command)
    if commands is not None:
        commands["load"] = load_command
        commands["calibrate"] = calibrate_command


_SLOW_ATTEMPTS: Final = 3  # a check a party answers late is asked again, this many times in all


def _slow(status: int, body: Any) -> bool:
    """The gateway's answer says a party was slow (not failed): worth asking again."""
    if status == 503 and isinstance(body, dict):
        return str(body.get("type", "")).endswith(":slow")
    return status == 200 and isinstance(body, dict) and body.get("ok", False) is None


async def fetch_integrity(gateway: str, timeout_s: float = 120.0) -> list[tuple[str, bool, str]]:
    """(check, ok, detail) rows from the gateway's ``/v1/ledger/invariants`` and ``/v1/reconciliation``.

    A party that answers late is *slow*, not failed: its check is asked again (``_SLOW_ATTEMPTS``
    in all); if it is still slow, its row says so (not verified) rather than naming a violation.
    ``timeout_s`` is longer than the gateway's own check timeout, so the gateway answers first.
    """
    rows: list[tuple[str, bool, str]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for path, label in (("/v1/ledger/invariants", "invariants"), ("/v1/reconciliation", "reconciliation")):
            try:
                for _ in range(_SLOW_ATTEMPTS):
                    async with session.get(gateway.rstrip("/") + path) as resp:
                        status, body = resp.status, await resp.json(content_type=None)
                    if not _slow(status, body):
                        break
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                rows.append((label, False, f"not reachable: {exc}"))
                continue
            if status != 200:
                rows.append((label, False, f"HTTP {status}: {str(body)[:300]}"))
                continue
            rows += _integrity_rows(label, body)
    return rows


def _integrity_rows(label: str, body: Any) -> list[tuple[str, bool, str]]:
    """Read the integrity module's answer whatever its nesting: a verdict per party where given."""
    if isinstance(body, dict) and isinstance(body.get("parties"), dict):
        body = body["parties"]
    if isinstance(body, dict) and "ok" in body and not any(isinstance(v, dict) for v in body.values()):
        return [(label, bool(body["ok"]), json.dumps(body)[:2000])]
    if isinstance(body, dict):
        rows = []
        for party, value in sorted(body.items()):
            if isinstance(value, dict) and value.get("state") == "slow":
                rows.append((f"{label}:{party}", False, f"not verified (slow, no violation found): "
                                                        f"{value.get('detail', '')}"))
                continue
            if isinstance(value, dict):
                ok = bool(value.get("ok", not value.get("violations") and not value.get("breaks")))
            elif isinstance(value, list):
                ok = not value
            else:
                ok = bool(value)
            rows.append((f"{label}:{party}", ok, json.dumps(value)[:2000]))
        return rows
    if isinstance(body, list):
        return [(label, not body, json.dumps(body)[:2000])]
    return [(label, False, f"unreadable answer: {str(body)[:300]}")]


def load_command(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.rate_scale is not None:
        if args.rate_scale <= 0:
            _err("--rate-scale must be greater than 0")
            return EXIT_BAD_INPUT
        overrides.append(f"arrivals.rate_scale={args.rate_scale}")
    if args.duration_s <= 0 or args.from_s < 0 or args.max_in_flight < 1 or args.timeout_s <= 0 or args.seed < 0:
        _err("--duration-s and --timeout-s must be > 0, --from-s and --seed >= 0, --max-in-flight >= 1")
        return EXIT_BAD_INPUT
    try:
        scenario, text = load_scenario(args.scenario, overrides)
    except ScenarioError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if not args.target.startswith(("http://", "https://")):
        _err(f"--target must be an http(s) URL, got {args.target!r}")
        return EXIT_BAD_INPUT
    if args.direct_share is not None and not 0.0 <= args.direct_share <= 1.0:
        _err(f"--direct-share must be from 0 to 1, got {args.direct_share:g}")
        return EXIT_BAD_INPUT
    try:
        plan = plan_payments(scenario, args.seed, args.duration_s, args.from_s, args.direct_share)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    direct_count = sum(1 for p in plan if p.rail == DIRECT)
    if direct_count and not (args.exchange or "").startswith(("http://", "https://")):
        _err(f"{direct_count:,} payments go to the direct rail: give the exchange's URL (--exchange http://...)")
        return EXIT_BAD_INPUT
    try:
        sign = pos_signer(args.credentials)
    except AuthError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if sign is None:
        _err("no credentials file: the payments go unsigned and the network will refuse them (pass --credentials)")
    url = args.target.rstrip("/") + args.path
    direct = DirectTarget(args.exchange, url, scenario.direct.fallback) if direct_count else None
    print(f"ccsim load: {len(plan):,} payments over {args.duration_s:g} s to {url}"
          + (f" ({direct_count:,} direct to {args.exchange})" if direct_count else ""), file=sys.stderr)
    outcome = asyncio.run(run_open_loop(url, plan, max_in_flight=args.max_in_flight, timeout_s=args.timeout_s,
                                        late_threshold_ms=args.late_ms, sign=sign, direct=direct))
    rows = asyncio.run(fetch_integrity(args.gateway)) if args.gateway else []
    run_dir = args.out or Path("runs") / f"live-{args.scenario.stem}-{args.seed}"
    summary = write_live_run(run_dir, scenario, text, args.seed, outcome, target=url, from_s=args.from_s,
                             duration_s=args.duration_s, integrity_rows=rows)
    if not args.no_report:
        from sim.report import ReportError, build_report  # noqa: PLC0415 — plotly is only needed here

        try:
            print(build_report(run_dir))
        except ReportError as exc:
            _err(f"the load finished but its report could not be built: {exc}")
    _print_headline(summary, run_dir)
    load = summary["load"]
    if summary["ledger"]["invariants_ok"] is False:
        for violation in summary["ledger"]["violations"]:
            _err(violation)
        return EXIT_INTEGRITY
    if load["answered"] < load["scheduled"] or load["errors"]:
        _err(f"{load['scheduled'] - load['answered']} payments unanswered; errors {load['errors']}")
        return EXIT_UNANSWERED
    if any(not v["pass"] for v in summary["slo"].values()):
        return EXIT_SLO
    return EXIT_OK


def _print_headline(summary: dict[str, Any], run_dir: Path) -> None:
    p, lat, load = summary["payments"], summary["auth_latency_ms"], summary["load"]
    print(f"payments {p['attempted']:,} (offered {load['offered_per_s']:.1f}/s), approved {p['approved']:,} "
          f"({p['approval_rate']:.2%}), stand-in {p['stand_in']:,}\n"
          f"latency from scheduled send: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms\n"
          f"late sends (> {load['late_threshold_ms']:g} ms): {load['late_sends']:,}; send lag p99 "
          f"{load['send_lag_ms']['p99']:.1f} ms; peak in flight {load['in_flight_peak']}\n"
          + _direct_headline(load["direct"]) + f"run directory {run_dir}")


def _direct_headline(direct: dict[str, Any]) -> str:
    if not direct["payments"]:
        return ""
    return (f"direct rail: {direct['payments']:,} payments, paid {direct['paid']:,}, fell back to the card "
            f"{direct['fell_back_to_card']:,} (approved {direct['card_approved']:,}), declined "
            f"{sum(direct['declined'].values()):,}; latency p99 {direct['latency_ms']['p99']:.1f} ms\n")


def calibrate_command(args: argparse.Namespace) -> int:
    try:
        path, fits, method, notes = write_overlay(args.run_dir, args.out)
    except CalibrationError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    print(f"{method} fit from {args.run_dir}:")
    for f in fits:
        print(f"  {f.service:<9} n={f.n:<7,} mean {f.mean_ms:9.3f} ms  cv {f.cv:6.3f}   "
              f"(measured p50 {f.p50_ms:.3f} ms, p99 {f.p99_ms:.3f} ms)")
    for note in notes:
        print(f"  note: {note}")
    print(path)
    print(f"simulate it: ccsim run SCENARIO $(cat {path.with_suffix('.set')})")
    return EXIT_OK
