"""Field types shared by the party APIs: ids, asset codes, free text, and amounts as strings.

Amounts travel as decimal strings ("12.34"), never JSON numbers: a JSON number is a float to most
clients, and 0.1 + 0.2 is not money. The pattern here admits only ASCII digits with one optional
dot (no sign, exponent, separator or Unicode digit); the asset's scale is checked by
:func:`parse_amount_field` with :func:`services.money.parse_amount`, once the asset is known.

The party services (:func:`amount_in`) also refuse any amount of :data:`AMOUNT_UNITS_MAX` whole
units or more; the ledger service keeps only the ledger's own bound (``AMOUNT_MAX`` minor units).
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from services.api.problems import FieldError, ProblemError
from services.money import Asset, AssetRegistry, MoneyError, parse_amount

__all__ = [
    "AMOUNT_UNITS_MAX",
    "API_MODEL_CONFIG",
    "AmountText",
    "AssetCode",
    "Identifier",
    "IdentifierRef",
    "Text",
    "amount_in",
    "parse_amount_field",
    "resolve_asset",
]

# Strict: no "1" for true, no "12" for 12; extra fields are an error, not silently dropped.
API_MODEL_CONFIG: Final = ConfigDict(extra="forbid", strict=True)

_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
# Ids the ledger writes itself ("<hold id>#expired") can be looked up, not created.
_ID_REF_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:#-]{0,159}$"
_AMOUNT_PATTERN: Final = r"^[0-9]{1,40}(\.[0-9]{1,18})?$"

# No single amount a party service takes reaches 10^15 whole units of its asset: a quadrillion
# tenge is about 25 times Kazakhstan's broad money, and no crypto asset has such a supply. A larger
# amount is a slip or a probe (2^63, 2^128). Refused as invalid (422, nothing written) rather than
# passed to a domain that would answer it with a decline (200) and record that decline.
AMOUNT_UNITS_MAX: Final = 10**15


def _no_surrogates(text: str) -> str:
    """Lone surrogates cannot be stored as UTF-8 (PostgreSQL would fail): refuse them here."""
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise ValueError("text must not contain lone surrogates")
    return text


Identifier = Annotated[str, StringConstraints(pattern=_ID_PATTERN), Field(
    description="1-128 characters: letters, digits and . _ : - (chosen by the client)",
    examples=["wallet-42"])]
IdentifierRef = Annotated[str, StringConstraints(pattern=_ID_REF_PATTERN)]
AssetCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9]{1,11}$"), Field(examples=["KZT"])]
Text = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$"),
                 AfterValidator(_no_surrogates)]
AmountText = Annotated[str, StringConstraints(pattern=_AMOUNT_PATTERN), Field(
    description="a positive decimal string with at most the asset's number of decimals",
    examples=["1500.00"])]


def resolve_asset(assets: AssetRegistry, code: str, field: str, errors: list[FieldError]) -> Asset | None:
    """The asset named ``code``, or None with an error about ``field`` appended."""
    try:
        return assets.get(code)
    except MoneyError as exc:
        errors.append(FieldError(field=field, reason=str(exc)))
        return None


def parse_amount_field(
    text: str, asset: Asset, field: str, errors: list[FieldError], *, units_max: int | None = None,
) -> int | None:
    """Minor units of a positive amount, or None with an error about ``field`` appended.

    ``units_max``: the amount must also be below this many whole units of ``asset``.
    """
    try:
        minor = parse_amount(text, asset)
    except MoneyError as exc:
        errors.append(FieldError(field=field, reason=str(exc)))
        return None
    if minor <= 0:
        errors.append(FieldError(field=field, reason="amount must be greater than zero"))
        return None
    if units_max is not None and minor >= units_max * asset.unit:
        errors.append(FieldError(field=field, reason=f"amount must be below {units_max} {asset.code}"))
        return None
    return minor


def amount_in(text: str, asset: Asset, field: str) -> int:
    """Minor units of an amount a party service takes: positive, within ``asset``'s scale and below
    :data:`AMOUNT_UNITS_MAX` whole units; otherwise a 422 problem naming ``field``."""
    errors: list[FieldError] = []
    minor = parse_amount_field(text, asset, field, errors, units_max=AMOUNT_UNITS_MAX)
    if minor is None:
        raise ProblemError(422, f"{field} is not a valid {asset.code} amount", errors)
    return minor
