"""Users and stream access control, the pure part (docs/security.md, "Users and ACLs").

No I/O, no clock: the decisions Event Store makes, as functions a gateway (or the HTTP face)
can call with what it has read. A user is a ``$user-NAME`` stream whose last ``$User`` event
holds the record below, its password hashed with scrypt (memory-hard, in ``hashlib``).
Stream ACLs are the ``$acl`` map of stream metadata (``$r``, ``$w``, ``$d``, ``$mr``,
``$mw``: a user or group name, or a list of them); defaults come from ``$settings``
(``$userStreamAcl``, ``$systemStreamAcl``). ``$admins`` may do everything; ``$all`` in an
ACL means every authenticated user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field

from esnode.core.types import BadRequest

ADMINS, OPS, ALL = "$admins", "$ops", "$all"
USER_STREAM_PREFIX = "$user-"
USER_EVENT_TYPE = "$User"
SETTINGS_STREAM = "$settings"
OPERATIONS = ("$r", "$w", "$d", "$mr", "$mw")
"""Read, write, delete, metadata read, metadata write."""

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
"""16 MiB and ~50 ms per hash: what OWASP suggests for scrypt; costly to guess offline."""


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64) of ``password`` with a fresh 16-byte salt."""
    if not password:
        raise BadRequest("a password must not be empty")
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32,
                            maxmem=4 * 128 * r * n)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (from ``hash_password``); constant time in
    the comparison; a malformed ``stored`` never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        n, r, p = int(n), int(r), int(p)
        if scheme != "scrypt" or not (2 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt, validate=True),
                             n=n, r=r, p=p, dklen=len(expected), maxmem=4 * 128 * r * n)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


@dataclass(frozen=True, slots=True)
class User:
    """What ``$user-NAME`` records (the data of its last ``$User`` event)."""

    name: str
    password_hash: str
    groups: tuple[str, ...] = ()
    full_name: str = ""
    disabled: bool = False
    deleted: bool = False
    """A deleted user cannot log in and is not listed; its stream keeps the history (and a
    later ``user add`` of the same name continues it)."""

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith("$") or any(c in self.name for c in " \t\n:"):
            raise BadRequest(f"bad user name {self.name!r}")
        if not all(isinstance(g, str) and g for g in self.groups):
            raise BadRequest("groups must be non-empty strings")

    @property
    def stream(self) -> str:
        return USER_STREAM_PREFIX + self.name

    def to_event_data(self) -> bytes:
        return json.dumps({"loginName": self.name, "fullName": self.full_name,
                           "groups": list(self.groups), "disabled": self.disabled,
                           "passwordHash": self.password_hash,
                           **({"deleted": True} if self.deleted else {})},
                          separators=(",", ":")).encode()

    @classmethod
    def from_event_data(cls, data: bytes) -> User:
        try:
            raw = json.loads(data)
            return cls(raw["loginName"], raw["passwordHash"], tuple(raw.get("groups", ())),
                       raw.get("fullName", ""), bool(raw.get("disabled", False)),
                       bool(raw.get("deleted", False)))
        except (ValueError, KeyError, TypeError) as exc:
            raise BadRequest(f"not a user record ({exc})") from None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: a user name and its groups (``None`` name: anonymous)."""

    name: str | None
    groups: frozenset[str] = frozenset()

    @classmethod
    def of(cls, user: User) -> Principal:
        return cls(user.name, frozenset(user.groups))

    @property
    def is_admin(self) -> bool:
        return ADMINS in self.groups


ANONYMOUS = Principal(None)


def _names(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise BadRequest(f"{where}: expected a user or group name, or a list of them")


@dataclass(frozen=True, slots=True)
class StreamAcl:
    """Who may do each operation; an operation absent here falls back to the default ACL."""

    entries: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: object, where: str = "$acl") -> StreamAcl:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise BadRequest(f"{where}: must be a map of {', '.join(OPERATIONS)}")
        unknown = set(raw) - set(OPERATIONS)
        if unknown:
            raise BadRequest(f"{where}: unknown operation {sorted(unknown)[0]!r} (known: "
                             f"{', '.join(OPERATIONS)})")
        return cls({op: _names(v, f"{where}.{op}") for op, v in raw.items()})


SYSTEM_DEFAULT = StreamAcl({op: (ADMINS,) for op in OPERATIONS})
USER_DEFAULT = StreamAcl({op: (ALL,) for op in OPERATIONS})


@dataclass(frozen=True, slots=True)
class DefaultAcls:
    """The defaults of ``$settings`` (Event Store's ``$userStreamAcl``/``$systemStreamAcl``)."""

    user: StreamAcl = USER_DEFAULT
    system: StreamAcl = SYSTEM_DEFAULT

    @classmethod
    def parse(cls, settings: dict | None) -> DefaultAcls:
        settings = settings or {}
        return cls(StreamAcl.parse(settings.get("$userStreamAcl"), "$userStreamAcl")
                   if "$userStreamAcl" in settings else USER_DEFAULT,
                   StreamAcl.parse(settings.get("$systemStreamAcl"), "$systemStreamAcl")
                   if "$systemStreamAcl" in settings else SYSTEM_DEFAULT)


def is_system_stream(stream: str) -> bool:
    return stream.startswith("$")


def allowed(principal: Principal, operation: str, stream: str, acl: StreamAcl | None,
            defaults: DefaultAcls = DefaultAcls()) -> bool:
    """May ``principal`` do ``operation`` (one of OPERATIONS) on ``stream``, whose metadata
    holds ``acl``? Admins always; otherwise the stream's ACL entry for the operation, else the
    default for user or system (``$``-prefixed) streams; ``$all`` there means every
    authenticated user. The anonymous principal never (Event Store 5.0.2+ requires a user)."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}")
    if principal.name is None:
        return False
    if principal.is_admin:
        return True
    default = defaults.system if is_system_stream(stream) else defaults.user
    names = (acl.entries.get(operation) if acl is not None else None) \
        or default.entries.get(operation, ())
    return (ALL in names or principal.name in names
            or any(group in names for group in principal.groups))
