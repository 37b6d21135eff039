"""ccsim's exceptions: one tree under :class:`CcsimError`.

Results are values (ledger results, sale reasons, decline codes, clearing codes): an operating
outcome such as a declined payment or a refused transfer is never an exception. Exceptions are for
faults — bad configuration, a broken promise of the books, a service that cannot start::

    CcsimError
    ├── ConfigError            a configuration the chain refuses (also a ValueError)
    ├── OpeningError           a party could not book its opening state
    ├── FlowError              a flow step broke a promise (a port answered what it must not)
    ├── MoneyError             an amount or price that is not one (services.money; a ValueError)
    ├── SchemaError            a database schema this build cannot use (services.migrations)
    ├── live services (services.api)
    │   ├── AuthError                  a credentials file or signature that cannot be used (auth)
    │   ├── JsonRejectedError          a request body that is not strict JSON (strict_json)
    │   ├── StartupError               a party service cannot start (parties.base)
    │   ├── DurabilityError            a command log that does not rebuild the books (parties.durable)
    │   └── IntegrityUnavailableError  a party's integrity read could not be taken (parties.integrity)
    │       └── IntegritySlowError     … because the party answered late
    └── the simulation and its tools (sim)
        ├── ScenarioError, ReportError, RunDirError, BundleError, SweepError, CalibrationError
        └── SupervisorError, DataDirInUseError, RunLimitError, TooManyRunsError,
            UnknownScenarioError, RunCancelledError (sim.live)

Each also derives from the built-in it always was (``ValueError``, ``RuntimeError``), so callers that
catch those still do.

HTTP problems (``services.api.problems``) are the live
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
