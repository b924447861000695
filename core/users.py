"""The user table: who may log in, rebuilt from the replicated log (docs/security.md).

Users live in ``$user-NAME`` streams (as Event Store keeps them), so every node learns them
by replication: at start a node scans the log for ``$User`` events, then applies each
committed one. ``authenticate`` verifies a password with scrypt; since scrypt costs ~50 ms
and 16 MiB by design, a verified (user, password) pair is remembered for a short time so
that HTTP Basic (credentials on every request) keeps its throughput. The remembered pair is
keyed by the stored hash too, so a password change or a disabled user takes effect at once.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from esnode.core.acl import (
    ADMINS,
    USER_EVENT_TYPE,
    USER_STREAM_PREFIX,
    Principal,
    User,
    hash_password,
    verify_password,
)
from esnode.core.types import (
    NO_STREAM,
    AllSlice,
    AppendRequest,
    BadRequest,
    EventData,
    NotAuthenticated,
    RecordedEvent,
)

log = logging.getLogger("esnode.users")

ADMIN = "admin"
ADMIN_PASSWORD_ENV = "ESNODE_ADMIN_PASSWORD"
VERIFIED_TTL_S = 60.0
"""How long a verified password is trusted without running scrypt again."""
SCAN_PAGE = 4096
MAX_FAILED_LOGINS, FAILED_LOGIN_WINDOW_S = 5, 10.0
"""Failed logins one address may make within the window before its logins are refused
unchecked (no scrypt) until the oldest of them is that old."""


class AdminPasswordMissing(ValueError):
    """Authentication was asked for but no admin password was given: never a fixed default."""


def admin_password(password_file: str | Path | None, env: Mapping[str, str]) -> str:
    """The first admin password: ``ESNODE_ADMIN_PASSWORD``, else the topology's
    ``[security] admin_password_file`` (first line). Refuses to guess one."""
    password = env.get(ADMIN_PASSWORD_ENV, "")
    if not password and password_file:
        lines = Path(password_file).read_text().splitlines()
        password = lines[0] if lines else ""
    if not password:
        raise AdminPasswordMissing(
            f"authentication is enabled but the admin password is not set: set "
            f"{ADMIN_PASSWORD_ENV} or [security] admin_password_file (there is no default)")
    return password


def user_append(user: User, expected_version: int) -> AppendRequest:
    """The write that records ``user`` (a new ``$User`` event in its ``$user-NAME`` stream)."""
    event = EventData(str(uuid.uuid4()), USER_EVENT_TYPE, user.to_event_data(), b"", True)
    return AppendRequest(user.stream, expected_version, (event,))


class UserTable:
    """name -> ``User``, the last ``$User`` event of each ``$user-*`` stream (a user whose
    last record says ``deleted`` is absent: unknown, as if never added)."""

    def __init__(self, ttl_s: float = VERIFIED_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._users: dict[str, User] = {}
        self._deleted: set[str] = set()
        """Names whose stream ends with a deletion: never bootstrapped again."""
        self._ttl = ttl_s
        self._clock = clock
        self._verified: dict[tuple[str, str, bytes], float] = {}

    # --- keeping the table current ---------------------------------------------------------
    def apply(self, event: RecordedEvent) -> None:
        """Take a committed event into account (any event: the others are ignored). A
        malformed record is logged and ignored; the user keeps its previous record."""
        if event.event_type != USER_EVENT_TYPE or not event.stream.startswith(USER_STREAM_PREFIX):
            return
        try:
            user = User.from_event_data(event.data)
        except BadRequest as exc:
            log.warning("ignored user record at %d in %s: %s", event.position, event.stream, exc)
            return
        if user.stream != event.stream:
            log.warning("ignored user record at %d: %s names user %r", event.position,
                        event.stream, user.name)
            return
        if user.deleted:
            self._users.pop(user.name, None)
            self._deleted.add(user.name)
        else:
            self._users[user.name] = user
            self._deleted.discard(user.name)

    def load(self, read_all: Callable[[int, int], AllSlice]) -> UserTable:
        """Scan the whole log with ``read_all(position, count)`` (a store's ``read_all``
        bound to the commit position) and apply every event."""
        self.catch_up(read_all, 0)
        return self

    def catch_up(self, read_all: Callable[[int, int], AllSlice], position: int) -> int:
        """Apply every event from ``position`` on; returns where to continue next time."""
        while True:
            page = read_all(position, SCAN_PAGE)
            for event in page.events:
                self.apply(event)
            if page.is_end or not page.events:
                return page.next_position if page.events else position
            position = page.next_position

    # --- questions -----------------------------------------------------------------------
    def get(self, name: str) -> User | None:
        return self._users.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._users

    def users(self) -> list[User]:
        return sorted(self._users.values(), key=lambda u: u.name)

    def bootstrap(self, password: str) -> AppendRequest | None:
        """The write creating ``admin`` (group ``$admins``) when the log has no such user yet:
        at first start of a secured cluster. ``NO_STREAM`` makes it happen once even if two
        nodes try; an ``admin`` an administrator deleted stays deleted."""
        if ADMIN in self._users or ADMIN in self._deleted:
            return None
        return user_append(User(ADMIN, hash_password(password), (ADMINS,), "Administrator"),
                           NO_STREAM)

    def authenticate(self, name: str, password: str) -> Principal:
        """The principal of ``name`` when ``password`` is its password; ``NotAuthenticated``
        otherwise, with one message for an unknown user and a wrong password (the node's log
        says which) and its own for a disabled user, given only after the password matched."""
        user = self._users.get(name)
        if user is None or not self._verify(user, password):
            log.info("authentication failed for %r: %s", name,
                     "no such user" if user is None else "wrong password")
            raise NotAuthenticated("not authenticated: unknown user or wrong password")
        if user.disabled:
            log.info("authentication refused for %r: the user is disabled", name)
            raise NotAuthenticated(f"not authenticated: user {name!r} is disabled")
        return Principal.of(user)

    def _verify(self, user: User, password: str) -> bool:
        now = self._clock()
        key = (user.name, user.password_hash, hashlib.sha256(password.encode()).digest())
        expiry = self._verified.get(key)
        if expiry is not None and expiry > now:
            return True
        if not verify_password(password, user.password_hash):
            return False
        if len(self._verified) > 10_000:  # bound the memory: expired entries go first
            self._verified = {k: t for k, t in self._verified.items() if t > now}
        self._verified[key] = now + self._ttl
        return True



class LoginThrottled(NotAuthenticated):
    """Too many failed logins from one address: refused before any password is checked."""

    def __init__(self, host: str, retry_in_s: int) -> None:
        super().__init__(f"not authenticated: too many failed logins from {host}, retry in "
                         f"{retry_in_s} s")
        self.retry_in_s = retry_in_s


class LoginThrottle:
    """Failed logins per peer address: after ``max_failures`` within ``window_s``, further
    logins from that address are refused before any password is checked (right or wrong:
    a remembered password must not become a free oracle), until the oldest of them is
    ``window_s`` old. The check happens where scrypt would run, on a bounded pool of threads,
    so a burst gets at most as many extra checks as that pool has threads. A success does not
    reset the count (one valid account must not launder guesses). One per node, shared by the
    ZeroMQ and HTTP faces; thread-safe."""

    def __init__(self, max_failures: int = MAX_FAILED_LOGINS,
                 window_s: float = FAILED_LOGIN_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window_s, self._clock = max_failures, window_s, clock
        self._failures: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, host: str) -> None:
        """``LoginThrottled`` when ``host`` has used up its failures in the window."""
        with self._lock:
            now = self._clock()
            failures = self._failures.get(host)
            while failures and failures[0] <= now - self.window_s:
                failures.popleft()
            if failures and len(failures) >= self.max_failures:
                wait = failures[-self.max_failures] + self.window_s - now
                raise LoginThrottled(host, max(1, math.ceil(wait)))

    def failed(self, host: str) -> None:
        with self._lock:
            now = self._clock()
            if len(self._failures) > 10_000:  # bound the memory: quiet addresses go first
                self._failures = {h: q for h, q in self._failures.items()
                                  if q and q[-1] > now - self.window_s}
            self._failures.setdefault(host, collections.deque()).append(now)

    def authenticate(self, authenticate: Callable[[str, str], Principal], host: str,
                     name: str, password: str) -> Principal:
        """``authenticate(name, password)`` behind the throttle of ``host``; runs on the
        caller's thread (call it off any event loop or poller: it may run scrypt)."""
        self.check(host)
        try:
            return authenticate(name, password)
        except NotAuthenticated:
            self.failed(host)
            raise


class LiveUsers:
    """A ``UserTable`` kept current from the committed log: before each authentication it
    applies what was committed since the last one (a user added, disabled or given a new
    password on any node counts on every node as soon as it is committed there)."""

    def __init__(self, read_all: Callable[..., AllSlice], committed: Callable[[], int],
                 table: UserTable | None = None, throttle: LoginThrottle | None = None) -> None:
        self.table = table or UserTable()
        self._read_all = read_all
        self._committed = committed
        self._position = 0
        self._lock = threading.Lock()
        self.throttle = throttle or LoginThrottle()
        """Failed logins per address, for every face of the node."""

    def refresh(self) -> UserTable:
        """The table with everything committed so far applied."""
        with self._lock:
            up_to = self._committed()
            self._position = self.table.catch_up(
                lambda pos, n: self._read_all(pos, n, up_to_position=up_to), self._position)
        return self.table

    def authenticate(self, name: str, password: str) -> Principal:
        return self.refresh().authenticate(name, password)
