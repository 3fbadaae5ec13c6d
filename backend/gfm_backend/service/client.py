"""A small stdlib HTTP client for the service (used by `gfm jobs`): finds the running
server through server.json and sends the token."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import GfmError


class ServiceUnavailable(GfmError):
    """No server answers for this state folder."""


class ServiceClient:
    def __init__(self, url: str, token: str, timeout: float = 10.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    @classmethod
    def from_state_dir(cls, state_dir: Path) -> ServiceClient:
        path = Path(state_dir) / "server.json"
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            return cls(info["url"], info["token"])
        except (OSError, ValueError, KeyError) as exc:
            raise ServiceUnavailable(f"no running service found ({path}: {exc})") from exc

    def _tls(self) -> ssl.SSLContext | None:
        """Our own server, found through its private server.json on this machine: its
        (possibly self-signed) certificate is not checked against authorities."""
        if not self.url.startswith("https://"):
            return None
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._tls()) as resp:
                raw = resp.read()
                kind = resp.headers.get("content-type", "")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read())["detail"]
            except (ValueError, KeyError, TypeError):
                detail = exc.reason
            raise GfmError(f"{method} {path}: {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceUnavailable(f"the service at {self.url} does not answer ({exc})") from exc
        return json.loads(raw) if kind.startswith("application/json") else raw.decode()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {})
