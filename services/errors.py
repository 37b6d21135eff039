"""ccsim's exceptions: one tree under :class:`CcsimError`.

Results are values (ledger results, sale reasons, decline codes, clearing codes): an operating
outcome such as a declined payment or a refused transfer is never an exception. Exceptions are for
faults — bad configuration, a broken promise of the books, a service that cannot start::

    CcsimError
    ├── ConfigError            a configuration the chain refuses (also a ValueError)
    ├── OpeningError           a party could not book its opening state
    ├── MoneyError             an amount or price that is not one (services.money; also a ValueError)
    ├── FlowError              a flow step broke a promise (a port answered what it must not)
    ├── DurabilityError        a party's command log does not rebuild its books (services.api.parties.durable)
    ├── StartupError           a party service cannot start (services.api.parties.base)
    ├── SchemaError            a database schema this build cannot use (services.migrations)
    └── IntegrityUnavailableError  a party's integrity read could not be taken (services.api.parties.integrity)

The simulation's own errors (scenario, report, sweep, calibration, supervisor) derive from
:class:`CcsimError` too, in their modules. HTTP problems (``services.api.problems``) are the live
adapters' answers and are never raised inside a domain command or a flow.
"""

from __future__ import annotations

__all__ = ["CcsimError", "ConfigError", "FlowError", "OpeningError"]


class CcsimError(Exception):
    """The root of every error ccsim raises on purpose."""


class ConfigError(CcsimError, ValueError):
    """A configuration the chain refuses; the message names the field and the reason."""


class OpeningError(CcsimError):
    """A party could not book its opening state (a seed or population the books refuse)."""


class FlowError(CcsimError):
    """A flow step got an answer its port promised never to give (a programmer's or a party's fault)."""
