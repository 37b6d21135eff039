"""Field types shared by the party APIs: ids, asset codes, free text, and amounts as strings.

Amounts travel as decimal strings ("12.34"), never JSON numbers: a JSON number is a float to most
clients, and 0.1 + 0.2 is not money. The pattern here admits only ASCII digits with one optional
dot (no sign, exponent, separator or Unicode digit); the asset's scale is checked by
:func:`parse_amount_field` with :func:`services.money.parse_amount`, once the asset is known.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from services.api.problems import FieldError
from services.money import Asset, AssetRegistry, MoneyError, parse_amount

__all__ = [
    "API_MODEL_CONFIG",
    "AmountText",
    "AssetCode",
    "Identifier",
    "IdentifierRef",
    "Text",
    "parse_amount_field",
    "resolve_asset",
]

# Strict: no "1" for true, no "12" for 12; extra fields are an error, not silently dropped.
API_MODEL_CONFIG: Final = ConfigDict(extra="forbid", strict=True)

_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
# Ids the ledger writes itself ("<hold id>#expired") can be looked up, not created.
_ID_REF_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:#-]{0,159}$"
_AMOUNT_PATTERN: Final = r"^[0-9]{1,40}(\.[0-9]{1,18})?$"


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


def parse_amount_field(text: str, asset: Asset, field: str, errors: list[FieldError]) -> int | None:
    """Minor units of a positive amount, or None with an error about ``field`` appended."""
    try:
        minor = parse_amount(text, asset)
    except MoneyError as exc:
        errors.append(FieldError(field=field, reason=str(exc)))
        return None
    if minor <= 0:
        errors.append(FieldError(field=field, reason="amount must be greater than zero"))
        return None
    return minor
