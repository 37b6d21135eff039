"""A cheaper constructor for the frozen, slotted dataclasses built on the hot path.

A frozen dataclass's generated ``__init__`` sets each field with
``__dataclass_builtins_object__.__setattr__(self, name, value)``: a global lookup, an attribute
lookup and a call per field, which makes a ``Transfer`` (eleven fields) cost several times a plain
class. A simulated day builds about a million of them. :func:`quick_init` replaces that ``__init__``
with one that calls each slot's own setter, bound once: same parameters, defaults and result, about
half the cost. Everything else the dataclass generated (``__eq__``, ``__hash__``, ``__repr__``,
``replace()``, the frozen ``__setattr__``) stays as it is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["quick_init"]

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Give ``cls`` (a ``@dataclass(frozen=True, slots=True)`` with plain defaults, no
    ``default_factory``, no ``InitVar`` and no ``__post_init__``) a faster ``__init__``."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: quick_init wants a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: quick_init does not run __post_init__")
    namespace: dict[str, Any] = {}
    args: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init or f.kw_only or f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{f.name}: quick_init wants plain fields")
        if f.default is dataclasses.MISSING:
            args.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__  # the slot's member descriptor
        body.append(f"    _set_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body) + "\n"
    exec(source, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 — mypy keeps the dataclass's own signature
    return cls
