"""``Server-Timing`` (W3C): each service's own time per request, and the times of the services it called.

Every party service answers every request with a ``Server-Timing`` header. Its first entry is the
service's own: its name is the service's party name, ``dur`` the milliseconds from the moment the
request reached the service's middleware to the moment the answer started, ``desc`` the route. The
entries that follow are those the services it called *while serving this request* sent back, each
forwarded once, renamed as a **hop path** below this service::

    Server-Timing: network;dur=38.514;desc="POST /v1/payments",
        network.issuer;dur=31.020;desc="POST /v1/authorizations",
        network.issuer.exchange;dur=17.880;desc="POST /v1/sells",
        network.issuer.exchange.bank;dur=6.402;desc="POST /v1/inbox/{receiver}",
        network.issuer.exchange.bank.issuer;dur=2.115;desc="POST /v1/inbox/{receiver}"

- A name is the path of services from the answering one down to the hop, joined by ``.``; the
  parent of ``a.b.c`` is ``a.b``. Each hop's ``dur`` is *inclusive*: the time that service spent
  on its request, waiting for its own callees included.
- **Repeated calls are distinguished, not summed**: the second call from one hop to the same
  service (a second sale, a retry that reached the service, a second bank message) is ``#2``,
  the third ``#3`` — ``network.issuer.exchange#2``. The service of a hop is its last segment
  without the ``#n``.
- A service's **own** (exclusive) time on a hop is its ``dur`` less the ``dur`` of its direct
  children (:func:`self_times_ms`): what it spent itself, the HTTP round trips to its callees
  included. Summed per service over a payment's hops, these are the per-leg times ``ccsim load``
  records; they add up to the answering service's ``dur`` exactly when the calls were sequential,
  as the payment path's are.

How the entries travel: :class:`services.api.middleware.RequestMiddleware` opens a
:class:`TimingCollector` in a context variable for the request (:func:`start_request`); the
outbound transport (:mod:`services.api.transport_http`) hands every answer's header to
:func:`record_response`, which renames its entries into the collector; the middleware writes the
header when the answer starts, and closes the collector, so a background task the request left
running (an advice retry) adds nothing to an answer already sent. Worker threads (FastAPI's sync
endpoints) and the event-loop calls they make see the same collector: anyio copies the context
into both. Calls made outside any request (the outbox relay) record nothing. At most
:data:`ENTRIES_MAX` forwarded entries are listed; the service's own ``desc`` says how many more
there were.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ENTRIES_MAX",
    "SERVER_TIMING",
    "TimingCollector",
    "TimingEntry",
    "end_request",
    "format_server_timing",
    "parse_server_timing",
    "record_response",
    "self_times_ms",
    "service_of",
    "start_request",
]

SERVER_TIMING: Final = "Server-Timing"
ENTRIES_MAX: Final = 64  # forwarded entries per answer: a limit on the header, not on the work
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


@dataclass(frozen=True, slots=True)
class TimingEntry:
    """One ``name;dur=…;desc=…`` entry; ``dur_ms`` is finite and not negative."""

    name: str
    dur_ms: float
    desc: str = ""

    @property
    def service(self) -> str:
        return service_of(self.name)

    @property
    def parent(self) -> str:
        """The hop this one was called from (``""`` for a root)."""
        return self.name.rpartition(".")[0]


def service_of(name: str) -> str:
    """``"network.issuer.exchange#2"`` → ``"exchange"``."""
    return name.rpartition(".")[2].partition("#")[0]


# -- the header's text -----------------------------------------------------------------------------


def _quote(text: str) -> str:
    """A quoted-string of printable ASCII: anything else (a control character could end the header)
    becomes ``?``."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_server_timing(entries: Iterable[TimingEntry]) -> str:
    """``name;dur=1.234;desc="…"`` entries joined by ``", "`` (``dur`` to the microsecond)."""
    parts = []
    for e in entries:
        text = f"{e.name};dur={e.dur_ms:.3f}"
        if e.desc:
            text += ";desc=" + _quote(e.desc)
        parts.append(text)
    return ", ".join(parts)


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quoted strings (a quoted ``desc`` may hold commas and semicolons)."""
    out: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append("".join(current))
            current = []
            continue
        current.append(ch)
    out.append("".join(current))
    return out


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_server_timing(values: str | Iterable[str]) -> list[TimingEntry]:
    """The entries of one or more ``Server-Timing`` header values, in order, duplicates kept.

    An entry whose name is not a token, or without a finite non-negative ``dur``, is skipped (the
    header is advisory: a malformed entry must not fail the request that carried it). Parameter
    names are case-insensitive; the first ``dur`` and ``desc`` count, as the W3C spec says.
    """
    texts = [values] if isinstance(values, str) else list(values)
    out: list[TimingEntry] = []
    for text in texts:
        for raw in _split(text, ","):
            name, *params = (p.strip() for p in _split(raw, ";"))
            if not _TOKEN_RE.fullmatch(name):
                continue
            dur: float | None = None
            desc: str | None = None
            for param in params:
                key, _, value = param.partition("=")
                key = key.strip().lower()
                if key == "dur" and dur is None:
                    try:
                        dur = float(_unquote(value))
                    except ValueError:
                        dur = math.nan
                elif key == "desc" and desc is None:
                    desc = _unquote(value)
            if dur is not None and math.isfinite(dur) and dur >= 0:
                out.append(TimingEntry(name, dur, desc or ""))
    return out


def self_times_ms(entries: Iterable[TimingEntry]) -> dict[str, float]:
    """Per service, the time it spent itself: each hop's ``dur`` less its direct children's,
    summed over the service's hops (a negative difference, possible only for concurrent calls,
    counts as 0). A hop whose parent is not listed counts as a root."""
    durations: dict[str, float] = {}
    for e in entries:
        durations[e.name] = durations.get(e.name, 0.0) + e.dur_ms
    children: dict[str, float] = {}
    for name, dur in durations.items():
        parent = name.rpartition(".")[0]
        if parent in durations:
            children[parent] = children.get(parent, 0.0) + dur
    out: dict[str, float] = {}
    for name, dur in durations.items():
        service = service_of(name)
        out[service] = out.get(service, 0.0) + max(0.0, dur - children.get(name, 0.0))
    return out


# -- collecting during a request -------------------------------------------------------------------


class TimingCollector:
    """The hops one request of ``service`` caused, renamed below it (see the module docstring)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.entries: list[TimingEntry] = []
        self.not_listed = 0
        self.closed = False
        self._calls: Counter[str] = Counter()

    def add(self, entries: Iterable[TimingEntry]) -> None:
        """The entries of one answer from a callee: each of its root names (normally one, the
        callee's own) becomes ``<service>.<root>``, or ``<service>.<root>#n`` for the n-th call."""
        if self.closed:
            return
        renamed: dict[str, str] = {}
        for e in entries:
            root, dot, rest = e.name.partition(".")
            if root not in renamed:
                self._calls[root] += 1
                n = self._calls[root]
                renamed[root] = root if n == 1 else f"{root}#{n}"
            if len(self.entries) >= ENTRIES_MAX:
                self.not_listed += 1
                continue
            self.entries.append(TimingEntry(f"{self.service}.{renamed[root]}{dot}{rest}", e.dur_ms, e.desc))

    def header(self, dur_ms: float, desc: str = "") -> str:
        """The answer's header value: this service's own entry, then the forwarded ones."""
        if self.not_listed:
            desc = f"{desc} (+{self.not_listed} hops not listed)".strip()
        return format_server_timing([TimingEntry(self.service, max(0.0, dur_ms), desc), *self.entries])

    def close(self) -> None:
        self.closed = True


_current: ContextVar[TimingCollector | None] = ContextVar("ccsim_server_timing", default=None)


def start_request(service: str) -> tuple[TimingCollector, Token[TimingCollector | None]]:
    """Open the collector of a request; pass the token to :func:`end_request` when it is answered.
    A request nested in another in the same context (in-process test transports) gets its own
    collector and gives the outer one back at its end."""
    collector = TimingCollector(service)
    return collector, _current.set(collector)


def end_request(token: Token[TimingCollector | None]) -> None:
    _current.reset(token)


def record_response(header_values: Iterable[str]) -> None:
    """Forward the ``Server-Timing`` values of a callee's answer into the current request's
    collector; nothing happens outside a request or after its answer started."""
    collector = _current.get()
    if collector is None or collector.closed:
        return
    values = list(header_values)
    if values:
        collector.add(parse_server_timing(values))
