"""``services.frozen.quick_init``: the faster constructor builds the same records, and refuses the
dataclasses it cannot build the same way."""

from __future__ import annotations

import dataclasses

import pytest

from services.frozen import quick_init
from services.ledger.model import Transfer, TransferFlags


@dataclasses.dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str = "x"
    c: tuple[int, ...] = ()


@quick_init
@dataclasses.dataclass(frozen=True, slots=True)
class Quick:
    a: int
    b: str = "x"
    c: tuple[int, ...] = ()


def test_the_quick_constructor_builds_what_the_dataclass_builds() -> None:
    for args, kwargs in (((1,), {}), ((1, "y"), {}), ((1,), {"c": (2, 3)}), ((), {"a": 4, "b": "z"})):
        slow, quick = Plain(*args, **kwargs), Quick(*args, **kwargs)
        assert (quick.a, quick.b, quick.c) == (slow.a, slow.b, slow.c)
    assert Quick(1) == Quick(1) and hash(Quick(1)) == hash(Quick(1)) and Quick(1) != Quick(2)
    assert dataclasses.replace(Quick(1), b="q") == Quick(1, "q")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Quick(1).a = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Quick()  # a required field is still required
    with pytest.raises(TypeError):
        Quick(1, "y", (), 9)  # no more positional arguments than fields


def test_a_ledger_transfer_gets_its_fields_defaults_and_arguments() -> None:
    t = Transfer("t1", "a", "b", 5, "KZT")
    assert (t.id, t.debit_account_id, t.credit_account_id, t.amount, t.asset) == ("t1", "a", "b", 5, "KZT")
    for f in dataclasses.fields(Transfer)[5:]:
        assert getattr(t, f.name) == f.default, f.name
    assert Transfer("t1", "a", "b", 5, "KZT", code="x", flags=TransferFlags.LINKED) == \
        dataclasses.replace(t, code="x", flags=TransferFlags.LINKED)


@pytest.mark.parametrize("make", [
    lambda: dataclasses.dataclass(type("NotFrozen", (), {"__annotations__": {"a": "int"}})),
    lambda: dataclasses.dataclass(frozen=True)(type("NoSlots", (), {"__annotations__": {"a": "int"}})),
    lambda: dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(
        type("KwOnly", (), {"__annotations__": {"a": "int"}})),
    lambda: dataclasses.dataclass(frozen=True, slots=True)(
        type("Factory", (), {"__annotations__": {"a": "list[int]"}, "a": dataclasses.field(default_factory=list)})),
    lambda: dataclasses.dataclass(frozen=True, slots=True)(
        type("PostInit", (), {"__annotations__": {"a": "int"}, "__post_init__": lambda self: None})),
])
def test_a_dataclass_it_cannot_build_the_same_way_is_refused(make: object) -> None:
    with pytest.raises(TypeError, match="quick_init"):
        quick_init(make())  # type: ignore[operator]
