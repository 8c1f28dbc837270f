"""The Zoho access token, shared by every process of an instance through a file.

Zoho Accounts gives a refresh token 10 access-token requests per 10 minutes and keeps at most
10 live access tokens per refresh token (asking for more invalidates the oldest). A token kept
only in memory costs one request per process start: a few worker restarts, or ten `check` runs
while an admin edits the config, lock the instance out. So the token lives in one file per
instance and OAuth client, which every process reads; one process at a time refreshes it (an
``fcntl`` lock on a lock file beside it), and the others wait for that lock, then read the
fresh token instead of asking for their own.

The file holds the access token (it is what is shared), its expiry as wall-clock time, its
scopes and the hosts it belongs to — never the refresh token or the client secret. Its name is
a hash of instance, data centre, client id and refresh token, so no secret appears in a path.
It is created 0600 (only the account escbridge runs as can read it), replaced atomically
(temporary file + rename: a reader never sees half a token), and a file that cannot be read,
is not ours, or is not valid JSON is ignored and replaced: the cache can cost a token request,
never an outage. The token itself is never logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from escbridge.connector.kit import Runtime
    from escbridge_zohodesk.config import ZohoDeskConfig

log = logging.getLogger(__name__)

FORMAT = 1
STATE_SUBDIR = ("escbridge", "zohodesk-tokens")


@dataclass(frozen=True)
class CachedToken:
    """A token as stored: ``expires_at`` and ``obtained_at`` are epoch seconds (wall clock,
    the only clock processes share); ``blocked_until`` remembers Zoho's token block."""

    value: str
    expires_at: float
    scopes: frozenset[str] | None
    api_domain: str | None
    accounts: str
    desk: str
    obtained_at: float

    def __repr__(self) -> str:
        return f"CachedToken(***, expires_at={self.expires_at:.0f}, accounts={self.accounts!r})"


def default_directory(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/escbridge/zohodesk-tokens`` (default ``~/.local/state/…``): per user,
    so every process the same account runs (workers, receiver, `check`, `sync`) shares it."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).joinpath(*STATE_SUBDIR)


def cache_key(instance: str, data_centre: str, client_id: str, refresh_token: str) -> str:
    """The file's name stem: a hash, so the refresh token never appears in a path."""
    material = "\0".join(("escbridge-zoho-token", instance, data_centre, client_id, refresh_token))
    return "zoho-" + hashlib.sha256(material.encode()).hexdigest()[:32]


class TokenCache:
    """One instance's shared access token: a JSON file and a lock file in ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        key: str,
        *,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / f"{key}.json"
        self.lock_path = self.directory / f"{key}.lock"
        self.wallclock = wallclock
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"TokenCache({str(self.path)!r})"

    # -- reading ------------------------------------------------------------------------------

    def read(self) -> CachedToken | None:
        """The stored token, or None when there is none usable (missing, corrupt, not ours)."""
        data = self._read_json()
        if data is None:
            return None
        try:
            scopes = data.get("scopes")
            token = CachedToken(
                value=_text(data["access_token"]),
                expires_at=float(data["expires_at"]),
                scopes=frozenset(str(s) for s in scopes) if isinstance(scopes, list) else None,
                api_domain=data["api_domain"] if isinstance(data.get("api_domain"), str) else None,
                accounts=_text(data["accounts"]),
                desk=_text(data["desk"]),
                obtained_at=float(data.get("obtained_at") or 0.0),
            )
        except (KeyError, TypeError, ValueError):
            self._warn("corrupt", "zohodesk: ignoring an unusable token cache %s", self.path)
            return None
        return token

    def seconds_left(self, token: CachedToken) -> float:
        return token.expires_at - self.wallclock()

    def _read_json(self) -> dict[str, Any] | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._warn("open", "zohodesk: cannot read the token cache %s (%s)", self.path, exc)
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                self._warn("owner", "zohodesk: ignoring token cache %s (not ours)", self.path)
                return None
            if stat.S_IMODE(info.st_mode) != 0o600:
                os.fchmod(fd, 0o600)  # someone loosened it: the token is readable only by us
            with os.fdopen(fd, "rb", closefd=False) as handle:
                raw = handle.read(65536)
        except OSError as exc:
            self._warn("read", "zohodesk: cannot read the token cache %s (%s)", self.path, exc)
            return None
        finally:
            os.close(fd)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            self._warn("corrupt", "zohodesk: ignoring an unusable token cache %s", self.path)
            return None
        return data

    # -- writing ------------------------------------------------------------------------------

    def write(self, token: CachedToken) -> bool:
        """Store ``token`` atomically with mode 0600; False (logged, not raised) on failure."""
        body = json.dumps(
            {
                "format": FORMAT,
                "access_token": token.value,
                "expires_at": token.expires_at,
                "obtained_at": token.obtained_at,
                "scopes": sorted(token.scopes) if token.scopes is not None else None,
                "api_domain": token.api_domain,
                "accounts": token.accounts,
                "desk": token.desk,
            }
        ).encode()
        tmp = self.directory / f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            self._ensure_directory()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # left by a crashed process that had this pid
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            try:
                os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self._warn("write", "zohodesk: cannot write the token cache %s (%s)", self.path, exc)
            return False
        return True

    @contextlib.contextmanager
    def refreshing(self) -> Iterator[bool]:
        """Hold the instance's refresh lock (waiting for another process that holds it).

        Yields False when no lock could be taken (unwritable directory): the caller then
        refreshes on its own, as without a cache, instead of failing.
        """
        try:
            self._ensure_directory()
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._warn("lock", "zohodesk: cannot lock the token cache %s (%s)", self.path, exc)
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield True
        finally:
            os.close(fd)  # releases the lock (and a killed process's lock is released too)

    def _ensure_directory(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        """Warn once per kind: a broken cache should be visible, not flood the log."""
        if kind in self._warned:
            log.debug(message, *args)
            return
        self._warned.add(kind)
        log.warning(message, *args)


def token_cache_for(
    config: ZohoDeskConfig, instance: str, runtime: Runtime | None = None
) -> TokenCache | None:
    """The shared token cache an instance's connector uses, or None for a per-process token.

    ``token_cache`` in the config names the directory. Unset, the default directory is used,
    except on a simulated runtime (tests, the demo's simulated time: its wall clock is not the
    one other processes read expiries by) and for ``sandbox: true`` (an emulator's tokens die
    with it); ``token_cache: ""`` keeps the token in memory.
    """
    wallclock = runtime.wallclock if runtime is not None else time.time
    directory = config.token_cache
    if directory is None:
        if wallclock is not time.time or config.sandbox:
            return None
        path = default_directory()
    elif not directory.strip():
        return None
    else:
        path = Path(directory).expanduser()
    key = cache_key(
        instance,
        config.data_centre,
        config.client_id,
        config.refresh_token.get_secret_value(),
    )
    return TokenCache(path, key, wallclock=wallclock)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value
