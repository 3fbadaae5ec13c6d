"""The people a shared service knows: a token each, stored only as its SHA-256 (a token is
32 random bytes, so a fast hash suffices, as for API tokens elsewhere). Each user sees and
cancels only their own jobs, uploads and outputs; an admin sees all. The token in
`server.json` (the one the local plugin uses) is the admin's.

`STATE/users.json` is re-read when it changes, so `gfm users add` and `remove` take effect
on a running server."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

ADMIN = "admin"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool = False

    def may_see(self, owner: str | None) -> bool:
        """Admins see everything; a user their own (and nothing owned by nobody)."""
        return self.admin or (owner is not None and owner == self.name)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class UserBook:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, Caller] = {}

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8")).get("users", {})
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise InputError(self.path, f"cannot be read ({exc}); fix or delete it") from exc

    def _write(self, users: dict[str, Any]) -> None:
        from .security import write_private_json

        write_private_json(self.path, {"users": users})

    def add(self, name: str, admin: bool = False) -> str:
        """A new user; returns their token (shown once: only its hash is kept)."""
        if not _NAME.match(name) or name == ADMIN:
            raise InputError(name, "a user name is letters, digits, '.', '_' or '-' (up to 64), "
                             f"and not {ADMIN!r}")
        users = self._read()
        if name in users:
            raise InputError(name, "is a user already; remove them first to give a new token")
        token = secrets.token_urlsafe(32)
        users[name] = {"sha256": token_hash(token), "admin": admin, "created": time.time()}
        self._write(users)
        return token

    def remove(self, name: str) -> None:
        users = self._read()
        if name not in users:
            raise InputError(name, f"no such user (known: {', '.join(sorted(users)) or 'none'})")
        del users[name]
        self._write(users)

    def names(self) -> list[dict[str, Any]]:
        return [{"name": n, "admin": bool(u.get("admin"))} for n, u in sorted(self._read().items())]

    def who(self, token: str) -> Caller | None:
        """The user a token belongs to (compared in constant time), or None."""
        given = token_hash(token)
        for known, caller in self._callers().items():
            if hmac.compare_digest(given, known):
                return caller
        return None

    def _callers(self) -> dict[str, Caller]:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._by_hash = {str(u["sha256"]): Caller(n, bool(u.get("admin")))
                                 for n, u in self._read().items() if "sha256" in u}
                self._stamp = stamp
            return self._by_hash
