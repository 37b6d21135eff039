"""services.money: minor units, the one decimal constructor, strict parsing, house-favour rounding.

The last part of this file is the "no float reaches an amount" proof: a static walk of services/
plus the run-time refusals at every door an amount can come through.
"""

from __future__ import annotations

import ast
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.ledger import Account, InMemoryLedger, Transfer
from services.money import (
    AMOUNT_MAX,
    DEFAULT_ASSETS,
    Asset,
    AssetRegistry,
    D,
    MoneyError,
    convert_ceil,
    convert_floor,
    format_amount,
    parse_amount,
    to_major,
)

ASSETS = {a.code: a for a in DEFAULT_ASSETS}
KZT = ASSETS["KZT"]
SERVICES = Path(__file__).resolve().parent.parent / "services"


# --- assets and scales ----------------------------------------------------------------------


def test_default_assets_and_scales() -> None:
    scales = {code: a.scale for code, a in ASSETS.items()}
    assert scales == {"KZT": 2, "BTC": 8, "ETH": 18, "USDT": 6, "KZTE": 2}
    assert ASSETS["BTC"].unit == 100_000_000


@pytest.mark.parametrize(
    ("code", "text", "minor"),
    [
        ("KZT", "12.34", 1234),
        ("KZT", "0.01", 1),
        ("KZT", "1000000", 100_000_000),
        ("BTC", "0.00000001", 1),
        ("BTC", "21000000.00000000", 21_000_000 * 10**8),
        ("ETH", "1.000000000000000001", 10**18 + 1),
        ("ETH", "0.000000000000000001", 1),
        ("USDT", "250.5", 250_500_000),
        ("USDT", "0.000001", 1),
        ("KZTE", "99.99", 9999),
        ("KZTE", "0", 0),
    ],
)
def test_parse_examples(code: str, text: str, minor: int) -> None:
    assert parse_amount(text, ASSETS[code]) == minor


@pytest.mark.parametrize(
    ("code", "minor", "text"),
    [
        ("KZT", 1234, "12.34"),
        ("KZT", 5, "0.05"),
        ("KZT", -1, "-0.01"),
        ("BTC", 1, "0.00000001"),
        ("ETH", 10**18, "1.000000000000000000"),
        ("USDT", 1_500_000, "1.500000"),
        ("KZTE", 100, "1.00"),
    ],
)
def test_format_examples(code: str, minor: int, text: str) -> None:
    assert format_amount(minor, ASSETS[code]) == text


def test_kzt_text_with_code_both_ways() -> None:
    registry = AssetRegistry()
    assert registry.parse("12.34", "KZT") == 1234
    assert registry.format(1234, "KZT", with_code=True) == "12.34 KZT"
    assert format_amount(1234, KZT, with_code=True) == "12.34 KZT"


def test_fewer_decimals_than_the_scale_are_padded() -> None:
    assert parse_amount("12.3", KZT) == 1230
    assert parse_amount("12", KZT) == 1200
    assert parse_amount("0012.30", KZT) == 1230


@pytest.mark.parametrize("code", sorted(ASSETS))
@given(minor=st.integers(min_value=0, max_value=AMOUNT_MAX))
def test_format_then_parse_round_trips(code: str, minor: int) -> None:
    asset = ASSETS[code]
    text = format_amount(minor, asset)
    assert parse_amount(text, asset) == minor
    assert format_amount(parse_amount(text, asset), asset) == text  # the format is canonical


@pytest.mark.parametrize("code", sorted(ASSETS))
@given(minor=st.integers(min_value=-AMOUNT_MAX, max_value=AMOUNT_MAX))
def test_negative_round_trip_when_allowed(code: str, minor: int) -> None:
    asset = ASSETS[code]
    assert parse_amount(format_amount(minor, asset), asset, allow_negative=True) == minor


def test_to_major_is_exact() -> None:
    assert to_major(1234, KZT) == Decimal("12.34")
    assert to_major(1, ASSETS["ETH"]) == Decimal("1E-18")


def test_amount_limit() -> None:
    assert parse_amount(format_amount(AMOUNT_MAX, KZT), KZT) == AMOUNT_MAX
    with pytest.raises(MoneyError, match="exceeds the maximum"):
        parse_amount(format_amount(AMOUNT_MAX + 1, KZT), KZT)
    with pytest.raises(MoneyError, match="exceeds the maximum"):
        parse_amount("9" * 40, KZT)
    # Python refuses int() of > 4300 digits with a bare ValueError; the parser must answer first.
    with pytest.raises(MoneyError, match="exceeds the maximum"):
        parse_amount("1" * 5000, KZT)
    assert parse_amount("0" * 5000 + "1.5", KZT) == 150  # leading zeros are not magnitude


# --- what parsing refuses, and why ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (12.34, "must be a decimal string, not float"),
        (True, "must be a decimal string, not bool"),
        (1234, "must be a decimal string, not int"),
        (Decimal("12.34"), "must be a decimal string, not Decimal"),
        (None, "must be a decimal string, not NoneType"),
        (b"12.34", "must be a decimal string, not bytes"),
        ("1e3", "not a plain decimal number"),
        ("1E3", "not a plain decimal number"),
        ("NaN", "not a plain decimal number"),
        ("Infinity", "not a plain decimal number"),
        ("-Infinity", "not a plain decimal number"),
        ("-0.01", "must not be negative"),
        ("-5", "must not be negative"),
        ("1,000", "not a plain decimal number"),
        ("1_000", "not a plain decimal number"),
        ("1 000", "not a plain decimal number"),
        ("1'000", "not a plain decimal number"),
        ("12,34", "not a plain decimal number"),
        (" 12.34", "not a plain decimal number"),
        ("12.34 ", "not a plain decimal number"),
        ("12.34\n", "not a plain decimal number"),
        ("\t12", "not a plain decimal number"),
        ("١٠", "not a plain decimal number"),  # Arabic-Indic digits
        ("１０", "not a plain decimal number"),  # full-width digits
        ("๑", "not a plain decimal number"),  # Thai digit one
        ("", "not a plain decimal number"),
        (".5", "not a plain decimal number"),
        ("5.", "not a plain decimal number"),
        ("+5", "not a plain decimal number"),
        ("1.2.3", "not a plain decimal number"),
        ("0x10", "not a plain decimal number"),
        ("12.34 KZT", "not a plain decimal number"),
        ("0.001", "has 3 decimals; KZT allows at most 2"),
        ("12.340", "has 3 decimals; KZT allows at most 2"),
    ],
)
def test_parse_refuses_with_reason(value: object, reason: str) -> None:
    with pytest.raises(MoneyError, match=re.escape(reason)):
        parse_amount(value, KZT)  # type: ignore[arg-type]


@pytest.mark.parametrize(("code", "text"), [("BTC", "0.000000001"), ("USDT", "1.0000001"),
                                            ("ETH", "0." + "0" * 18 + "1"), ("KZTE", "1.005")])
def test_more_decimals_than_scale_refused_for_every_asset(code: str, text: str) -> None:
    with pytest.raises(MoneyError, match=f"allows at most {ASSETS[code].scale}"):
        parse_amount(text, ASSETS[code])


def test_negative_zero_is_zero() -> None:
    assert parse_amount("-0", KZT) == 0
    assert parse_amount("-0.00", KZT) == 0


def test_negative_allowed_only_when_asked() -> None:
    assert parse_amount("-0.01", KZT, allow_negative=True) == -1


@pytest.mark.parametrize("value", [12.34, 12.0, True, Decimal("1234"), "1234", None])
def test_format_refuses_anything_but_int(value: object) -> None:
    with pytest.raises(MoneyError, match="must be int minor units"):
        format_amount(value, KZT)  # type: ignore[arg-type]


# --- D(): the one constructor for prices and rates ------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.5", Decimal("1.5")), (" 30000000.37 ", Decimal("30000000.37")), (7, Decimal(7)),
     (Decimal("0.001"), Decimal("0.001")), ("1e3", Decimal(1000)), ("-2.5", Decimal("-2.5"))],
)
def test_D_accepts_text_int_decimal(value: str | int | Decimal, expected: Decimal) -> None:
    result = D(value)
    assert isinstance(result, Decimal)
    assert result == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0.1, "not float"),
        (1.0, "not float"),
        (True, "not bool"),
        (None, "not NoneType"),
        ("NaN", "must be finite"),
        ("sNaN", "must be finite"),
        ("Infinity", "must be finite"),
        ("-inf", "must be finite"),
        (Decimal("NaN"), "must be finite"),
        (Decimal("-Infinity"), "must be finite"),
        ("abc", "not a decimal number"),
        ("1,5", "not a decimal number"),
        ("", "not a decimal number"),
        ("1e9999999", "not a decimal number in range"),
        ("1" * 81, "exact within 80 significant digits"),
        ("1e-9999999", "exact within 80 significant digits"),
    ],
)
def test_D_refuses(value: object, reason: str) -> None:
    with pytest.raises(MoneyError, match=re.escape(reason)):
        D(value)  # type: ignore[arg-type]


# --- the registry ---------------------------------------------------------------------------


def test_registry_refuses_unknown_codes_clearly() -> None:
    registry = AssetRegistry()
    with pytest.raises(MoneyError, match=r"unknown asset 'DOGE'; known: BTC, ETH, KZT, KZTE, USDT"):
        registry.get("DOGE")
    with pytest.raises(MoneyError, match="unknown asset 'kzt'"):
        registry.parse("1", "kzt")
    assert "DOGE" not in registry


def test_registry_adds_an_asset() -> None:
    registry = AssetRegistry()
    registry.add(Asset("SOL", 9, "Solana"))
    assert "SOL" in registry
    assert registry.codes() == ["BTC", "ETH", "KZT", "KZTE", "SOL", "USDT"]
    assert registry.parse("1.000000001", "SOL") == 1_000_000_001
    registry.add(Asset("SOL", 9, "Solana"))  # the same definition again is harmless
    with pytest.raises(MoneyError, match="already registered with scale 9"):
        registry.add(Asset("SOL", 8))
    assert registry.get("SOL").scale == 9


def test_registries_are_independent() -> None:
    one, two = AssetRegistry(), AssetRegistry()
    one.add(Asset("SOL", 9))
    assert "SOL" not in two


@pytest.mark.parametrize(
    ("code", "scale", "reason"),
    [("kzt", 2, "upper-case"), ("K", 2, "upper-case"), ("1KZT", 2, "upper-case"),
     ("KZT", -1, "scale must be between 0 and 18"), ("KZT", 19, "scale must be between 0 and 18")],
)
def test_asset_definition_is_validated(code: str, scale: int, reason: str) -> None:
    with pytest.raises(MoneyError, match=reason):
        Asset(code, scale)


# --- conversion rounds in the house's favour, by less than one minor unit --------------------

scales = st.integers(min_value=0, max_value=18)
prices = st.builds(
    lambda mantissa, exponent: D(mantissa).scaleb(-exponent),
    st.integers(min_value=1, max_value=10**24),
    st.integers(min_value=0, max_value=30),
)


def _exact(amount_minor: int, src: Asset, price: Decimal, dst: Asset) -> Fraction:
    """The true value in dst minor units, computed independently of services.money."""
    return Fraction(amount_minor) * Fraction(price) * Fraction(dst.unit, src.unit)


@given(
    amount_minor=st.integers(min_value=0, max_value=AMOUNT_MAX),
    price=prices,
    src_scale=scales,
    dst_scale=scales,
)
@example(amount_minor=AMOUNT_MAX - 1, price=D("9" * 60 + "." + "0" * 19 + "1"), src_scale=2,
         dst_scale=2)  # an 80-digit price: a precision-limited Decimal product would round
@example(amount_minor=1, price=D("0.5"), src_scale=0, dst_scale=0)
def test_convert_floor_and_ceil_bracket_the_exact_value(
    amount_minor: int, price: Decimal, src_scale: int, dst_scale: int
) -> None:
    src, dst = Asset("SRC", src_scale), Asset("DST", dst_scale)
    floor = convert_floor(amount_minor, src, price, dst)
    ceil = convert_ceil(amount_minor, src, price, dst)
    exact = _exact(amount_minor, src, price, dst)
    assert isinstance(floor, int)
    assert isinstance(ceil, int)
    assert floor <= exact <= ceil
    assert ceil - floor <= 1
    assert (ceil == floor) == (exact.denominator == 1)
    assert exact - floor < 1  # the house keeps less than one minor unit when it pays out
    assert ceil - exact < 1  # and charges less than one minor unit extra when it takes in


def test_convert_example_btc_to_kzt() -> None:
    # 0.01 BTC at 30 000 000.37 KZT/BTC = 300 000.0037 KZT = 30 000 000.37 tiyn.
    btc = ASSETS["BTC"]
    price = D("30000000.37")
    assert convert_floor(1_000_000, btc, price, KZT) == 30_000_000  # house pays 300 000.00
    assert convert_ceil(1_000_000, btc, price, KZT) == 30_000_001  # house charges 300 000.01


def test_convert_example_kzt_to_eth_keeps_18_decimals() -> None:
    # 1 KZT at 1/1 500 000 ETH per KZT: 6.666…e-7 ETH = 666 666 666 666.67 wei.
    eth = ASSETS["ETH"]
    price = D(1) / D(1_500_000)
    floor = convert_floor(100, KZT, price, eth)
    assert floor == convert_ceil(100, KZT, price, eth) - 1
    assert 666_666_666_666 <= floor <= 666_666_666_667


# --- no float reaches an amount ---------------------------------------------------------------

_AMOUNT_TOKENS = frozenset({
    "amount", "amounts", "minor", "balance", "balances", "price", "prices", "rate", "rates",
    "fee", "fees", "debit", "debits", "credit", "credits", "kzt", "kzte", "usdt", "btc", "eth",
    "cost", "costs", "proceeds", "money", "notional", "gain", "gains", "tax", "payout", "refund",
})


def _amount_like(name: str) -> bool:
    return any(tok in _AMOUNT_TOKENS for tok in name.lower().strip("_").split("_"))


def _names_in(node: ast.AST) -> list[str]:
    out: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.append(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.append(sub.attr)
        elif isinstance(sub, ast.arg):
            out.append(sub.arg)
    return out


def _mentions_float(annotation: ast.AST | None) -> bool:
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return re.search(r"\bfloat\b", annotation.value) is not None
    return "float" in _names_in(annotation)


def _is_float_call(node: ast.AST) -> bool:
    func = node.func if isinstance(node, ast.Call) else None
    return isinstance(func, ast.Name) and func.id == "float"


def _is_float_literal(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, float)


def float_money_findings(source: str, filename: str) -> list[str]:
    """Places where a float meets an amount-like name in one module's source."""
    findings: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call) and _is_float_call(node):
            hits = [n for arg in node.args for n in _names_in(arg) if _amount_like(n)]
            if hits:
                findings.append(f"{where}: float() applied to {hits}")
        elif isinstance(node, ast.AnnAssign):
            names = [n for n in _names_in(node.target) if _amount_like(n)]
            if names and _mentions_float(node.annotation):
                findings.append(f"{where}: {names} annotated float")
            if names and _is_float_literal(node.value):
                findings.append(f"{where}: {names} = float literal")
        elif isinstance(node, ast.arg):
            if _amount_like(node.arg) and _mentions_float(node.annotation):
                findings.append(f"{where}: parameter {node.arg} annotated float")
        elif isinstance(node, ast.Assign) and _is_float_literal(node.value):
            names = [n for t in node.targets for n in _names_in(t) if _amount_like(n)]
            if names:
                findings.append(f"{where}: {names} = float literal")
        elif isinstance(node, ast.keyword) and _is_float_literal(node.value) and _amount_like(
            node.arg or ""
        ):
            findings.append(f"{where}: {node.arg}= float literal")
    return findings


@pytest.mark.parametrize(
    "bad",
    [
        "x = float(amount_minor)",
        "x = float(t.amount)",
        "x = float(price) * 2",
        "def f(fee_kzt: float) -> None: ...",
        "def f(amount: 'int | float') -> None: ...",
        "class A:\n    balance: float = 0.0",
        "amount_minor = 0.5",
        "Transfer(amount=1.5)",
    ],
)
def test_the_float_checker_catches_what_it_claims(bad: str) -> None:
    assert float_money_findings(bad, "<bad>") != []


@pytest.mark.parametrize(
    "fine",
    ["x = float(self._fn())", "timeout_s: float = 0.0", "def f(now: float) -> None: ...",
     "amount_minor: int = 0", "ratio = 0.5"],
)
def test_the_float_checker_allows_time_and_plain_numbers(fine: str) -> None:
    assert float_money_findings(fine, "<fine>") == []


def test_no_float_meets_an_amount_anywhere_in_services() -> None:
    files = sorted(SERVICES.rglob("*.py"))
    assert len(files) >= 5, "the walk must actually see the services package"
    findings = [f for path in files for f in float_money_findings(path.read_text(), str(path))]
    assert findings == []


def test_money_module_has_no_float_at_all() -> None:
    tree = ast.parse((SERVICES / "money.py").read_text())
    float_literals = [n.lineno for n in ast.walk(tree) if _is_float_literal(n)]
    float_calls = [n.lineno for n in ast.walk(tree) if _is_float_call(n)]
    assert float_literals == []
    assert float_calls == []


@pytest.mark.parametrize("amount", [12.5, 1e3, Decimal("12"), True])
def test_the_ledger_refuses_a_non_int_amount_as_a_programmer_error(amount: object) -> None:
    ledger = InMemoryLedger()
    ledger.create_accounts([Account("a", "KZT"), Account("b", "KZT")])
    with pytest.raises(TypeError, match="must be int minor units"):
        ledger.create_transfers([Transfer("t", "a", "b", amount, "KZT")])  # type: ignore[arg-type]
    assert list(ledger.journal()) == []


def test_every_door_refuses_a_float() -> None:
    """parse_amount, format_amount, D and the registry: a float is refused, never rounded."""
    registry = AssetRegistry()
    with pytest.raises(MoneyError):
        parse_amount(0.1, KZT)  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        registry.parse(0.1, "KZT")  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        format_amount(0.1, KZT)  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        registry.format(10.0, "KZT")  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        D(0.1)  # type: ignore[arg-type]
