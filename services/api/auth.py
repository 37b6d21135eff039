"""Who is calling: per-principal keys, signed requests, and their verification.

Every caller of a party service is a *principal* with a *role* and a secret key, kept in one
credentials file (JSON, mode 0600) that ``ccsim serve`` creates in its data directory::

    {"version": 1, "principals": {"network": {"role": "network", "secret": "<64 hex>"}, ...}}

The principals are the four party services (``exchange``, ``issuer``, ``network``, ``bank``) and
the callers outside them: ``pos`` (the POS terminals, played by ``ccsim load``), ``gateway`` (the
cross-party checks), ``operator`` (card blocks, settlements, retries) and ``market`` (the market-
data feed that sets prices and halts). Which role may call which route is
:mod:`services.api.auth_routes`; where it is checked is :mod:`services.api.auth_middleware`.

A request is signed with HMAC-SHA256 over its method, Host, path and query, a timestamp, a nonce,
its ``Idempotency-Key`` and the SHA-256 of its body bytes (docs/adr/0006)::

    Authorization: CCSIM-HMAC-SHA256 Credential=network, Timestamp=1765000000, Nonce=<32 hex>,
                   Signature=<64 hex>

so a signed money message cannot be changed (amount, payee, key) or sent to another service or
route without the signature failing, and cannot be replayed: a timestamp outside the window, or a
nonce already seen inside it, is refused. The signature covers the raw bytes sent, so there is no
canonical-JSON ambiguity: the bytes verified are the bytes parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from services.errors import CcsimError

__all__ = [
    "AUTH_SCHEME",
    "CALLER_ROLES",
    "PARTY_ROLES",
    "ROLES",
    "AuthError",
    "Credentials",
    "NonceCache",
    "Principal",
    "SignedRequest",
    "SigningAuth",
    "body_digest",
    "create_credentials",
    "load_credentials",
    "parse_authorization",
    "sign_headers",
]

AUTH_SCHEME: Final = "CCSIM-HMAC-SHA256"
PARTY_ROLES: Final = ("exchange", "issuer", "network", "bank")
CALLER_ROLES: Final = ("pos", "gateway", "operator", "market")
ROLES: Final = PARTY_ROLES + CALLER_ROLES
CREDENTIALS_VERSION: Final = 1
_SECRET_BYTES: Final = 32
_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_HEX_RE: Final = re.compile(r"[0-9a-f]{32,128}")
_AUTH_RE: Final = re.compile(
    AUTH_SCHEME + r" Credential=(?P<credential>[a-z][a-z0-9_-]{0,31}), Timestamp=(?P<ts>[0-9]{1,12}), "
    r"Nonce=(?P<nonce>[0-9a-f]{16,64}), Signature=(?P<sig>[0-9a-f]{64})")
_EMPTY_DIGEST: Final = hashlib.sha256(b"").hexdigest()


class AuthError(CcsimError, ValueError):
    """Credentials that cannot be used (a file missing, unreadable, too open or malformed)."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    secret: bytes

    def __repr__(self) -> str:  # never the secret, in a log line or a traceback
        return f"Principal(name={self.name!r}, role={self.role!r})"


@dataclass(frozen=True)
class Credentials:
    """The principals of one deployment, by name."""

    principals: Mapping[str, Principal]
    path: Path | None = None

    def get(self, name: str) -> Principal | None:
        return self.principals.get(name)

    def principal(self, name: str) -> Principal:
        found = self.principals.get(name)
        if found is None:
            where = f" in {self.path}" if self.path else ""
            raise AuthError(f"no principal {name!r}{where}; known: {', '.join(sorted(self.principals))}")
        return found

    def for_role(self, role: str) -> Principal | None:
        return next((p for p in self.principals.values() if p.role == role), None)


def create_credentials(path: Path, roles: Iterable[str] = ROLES, *, replace: bool = False) -> Credentials:
    """Write a credentials file with a fresh random key per role (the principal is named after
    its role), readable by its owner only; an existing file is kept unless ``replace``."""
    if path.exists() and not replace:
        return load_credentials(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": CREDENTIALS_VERSION,
            "principals": {r: {"role": r, "secret": secrets.token_hex(_SECRET_BYTES)} for r in roles}}
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(body, indent=1) + "\n")
    os.chmod(tmp, 0o600)  # the umask cannot have widened it, but say so
    tmp.replace(path)
    return load_credentials(path)


def load_credentials(path: Path) -> Credentials:
    """Read a credentials file; refuse one that others can read (:class:`AuthError`)."""
    try:
        mode = path.stat().st_mode & 0o777
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuthError(f"no credentials file {path}: ccsim serve creates it (or pass another one)") from None
    except (OSError, ValueError) as exc:
        raise AuthError(f"credentials file {path} cannot be read: {exc}") from None
    if mode & 0o077:
        raise AuthError(f"credentials file {path} has mode {mode:o}; it must be readable by its owner only "
                        f"(chmod 600 {path})")
    if not isinstance(raw, dict) or raw.get("version") != CREDENTIALS_VERSION:
        raise AuthError(f"credentials file {path}: version must be {CREDENTIALS_VERSION}")
    entries = raw.get("principals")
    if not isinstance(entries, dict) or not entries:
        raise AuthError(f"credentials file {path}: 'principals' must be a non-empty object")
    principals: dict[str, Principal] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not _NAME_RE.fullmatch(str(name)):
            raise AuthError(f"credentials file {path}: principal {name!r} is not a name with a role and a secret")
        role, secret = entry.get("role"), entry.get("secret")
        if role not in ROLES:
            raise AuthError(f"credentials file {path}: principal {name!r} has role {role!r}; one of {ROLES}")
        if not isinstance(secret, str) or not _HEX_RE.fullmatch(secret):
            raise AuthError(f"credentials file {path}: principal {name!r} needs a secret of 32-128 hex digits")
        principals[str(name)] = Principal(str(name), str(role), bytes.fromhex(secret))
    return Credentials(principals, path)


# -- signing -------------------------------------------------------------------------------------


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest() if body else _EMPTY_DIGEST


def _string_to_sign(  # noqa: PLR0917 — the signed parts, in their order
    method: str, host: str, target: str, timestamp: int, nonce: str, key: str, digest: str,
) -> bytes:
    return "\n".join(("v1", method.upper(), host.lower(), target, str(timestamp), nonce, key, digest)).encode()


def _signature(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_headers(
    principal: Principal, method: str, host: str, target: str, body: bytes, *, idempotency_key: str = "",
    now_s: float | None = None,
) -> dict[str, str]:
    """The ``Authorization`` header for one request (``target``: the path with its query)."""
    timestamp = int(time.time() if now_s is None else now_s)
    nonce = secrets.token_hex(16)
    sig = _signature(principal.secret, _string_to_sign(method, host, target, timestamp, nonce, idempotency_key,
                                                       body_digest(body)))
    return {"Authorization": f"{AUTH_SCHEME} Credential={principal.name}, Timestamp={timestamp}, "
                             f"Nonce={nonce}, Signature={sig}"}


class SigningAuth(httpx.Auth):
    """Signs every request of an httpx client (sync or async) as one principal."""

    requires_request_body = True

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sign_request(request, self.principal)
        yield request


def sign_request(request: httpx.Request, principal: Principal) -> None:
    """Add the signature of ``principal`` to an httpx request (its body already read)."""
    target = request.url.raw_path.decode("ascii")
    raw = {k.lower(): v.decode("latin-1") for k, v in request.headers.raw}  # as the server reads them
    request.headers.update(sign_headers(principal, request.method, raw.get(b"host", ""), target, request.content,
                                        idempotency_key=raw.get(b"idempotency-key", "")))


# -- verification --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A parsed ``Authorization`` header: who claims to call, when, and the signature."""

    credential: str
    timestamp: int
    nonce: str
    signature: str

    def verify(
        self, principal: Principal, *, method: str, host: str, target: str, idempotency_key: str, body: bytes,
    ) -> bool:
        expected = _signature(principal.secret, _string_to_sign(method, host, target, self.timestamp, self.nonce,
                                                                idempotency_key, body_digest(body)))
        return hmac.compare_digest(expected, self.signature)


def parse_authorization(value: str) -> SignedRequest | None:
    """The header's parts, or ``None`` when it is not a well-formed signature of this scheme."""
    match = _AUTH_RE.fullmatch(value.strip())
    if match is None:
        return None
    return SignedRequest(match["credential"], int(match["ts"]), match["nonce"], match["sig"])


class NonceCache:
    """The nonces of the signatures still inside the window, so a captured request cannot be sent again.

    A nonce is remembered under its signature's timestamp until that timestamp leaves the window
    (``timestamp + window_s`` on this service's clock): after that the signature is refused as
    stale anyway. Bounded: whole seconds are dropped as they age out; when ``size_max`` nonces
    are all still inside the window, :meth:`add` says so and the request is refused (a flood of
    signed requests is a caller's fault, never a reason to forget a nonce early). About 70 bytes a
    nonce: at 150 signed requests a second and a 900 s window, some 10 MB. It lives in the process:
    after a restart a request captured inside the window could be sent again, and it then meets
    the idempotency key it was sent with (docs/threat-model.md).
    """

    def __init__(self, window_s: float, size_max: int = 1_000_000) -> None:
        self.window_s = window_s
        self.size_max = size_max
        self._by_second: dict[int, set[bytes]] = {}
        self._size = 0
        self._pruned_at_s = float("-inf")
        self._lock = threading.Lock()

    def add(self, credential: str, nonce: str, timestamp: int, now_s: float) -> bool | None:
        """``True`` when new (now remembered), ``False`` when seen before, ``None`` when full."""
        key = credential.encode() + b":" + bytes.fromhex(nonce)
        with self._lock:
            if now_s - self._pruned_at_s >= 1.0:  # at most once a second: a scan of at most 2 × window_s keys
                self._pruned_at_s = now_s
                for second in [t for t in self._by_second if t + self.window_s < now_s]:
                    self._size -= len(self._by_second.pop(second))
            seen = self._by_second.get(timestamp)
            if seen is not None and key in seen:
                return False
            if self._size >= self.size_max:
                return None
            self._by_second.setdefault(timestamp, set()).add(key)
            self._size += 1
            return True

    def __len__(self) -> int:
        return self._size
