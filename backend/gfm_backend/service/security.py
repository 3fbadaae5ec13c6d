"""Who may talk to the service: a bearer token for every endpoint but /health, and a
Host-header check so a web page cannot reach it through DNS rebinding."""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from ..atomic import atomic_path
from .users import ADMIN, Caller

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def write_private(path: Path, text: str) -> None:
    """Write a file only the user can read, atomically (readers never see half of it)."""
    with atomic_path(path, private=True, fsync=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    write_private(path, json.dumps(data, indent=2) + "\n")


def load_or_create_token(path: Path) -> str:
    """The token stays the same across restarts (a remote client keeps working);
    delete the file to get a new one."""
    try:
        token = path.read_text(encoding="utf-8").strip()
        if len(token) >= 32:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token


def token_matches(authorization: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>` with the right token (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))


_BEARER = HTTPBearer(auto_error=False, description="the token from server.json")


async def require_token(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Security(_BEARER)
                        ) -> Caller:
    """A FastAPI dependency: who calls. 401 unless `Authorization: Bearer <token>` carries
    this server's token (`server.json`: the admin) or a user's (`gfm users add`)."""
    given = credentials.credentials if credentials else ""
    service = request.app.state.service
    if given and token_matches(f"Bearer {given}", service.token):
        return Caller(ADMIN, admin=True)
    caller = service.users.who(given) if given else None
    if caller is None:
        raise HTTPException(
            status_code=401, headers={"WWW-Authenticate": "Bearer"},
            detail="missing or wrong token: send 'Authorization: Bearer <token>' with the "
                   "token from server.json in the service's state folder")
    return caller


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """`example:8080` -> `example`, `[::1]:8080` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostGuard:
    """ASGI middleware: the Host header must name this service, not some web site.

    Allowed: loopback names and addresses, the host given to `--host`, `--allow-host`
    names, and when bound to every interface also IP literals and this machine's names
    (a DNS-rebinding page always sends its own domain name).
    """

    def __init__(self, app: ASGIApp, bind_host: str, extra: list[str] | None = None) -> None:
        self.app = app
        self.allowed = {bind_host.lower().strip("[]"), *(h.lower() for h in extra or [])}
        self.any_ip = bind_host in WILDCARD_HOSTS
        if self.any_ip:
            self.allowed |= {socket.gethostname().lower(), socket.getfqdn().lower()}

    def allows(self, name: str) -> bool:
        return (_is_loopback(name) or name in self.allowed or (self.any_ip and _is_ip(name)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            raw = headers.get(b"host", b"").decode("latin-1")
            name = host_name(raw)
            if not name or not self.allows(name):
                body = json.dumps({"detail": f"Host header {raw!r} is not allowed: use "
                                   "127.0.0.1 or localhost (or start the service with "
                                   "--allow-host NAME)"}).encode()
                await send({"type": "http.response.start", "status": 400, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
