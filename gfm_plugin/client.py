"""HTTP client for the `gfm serve` backend: standard library only, no Qt, so it is testable
anywhere and usable from QgsTask threads."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tls import opener

TERMINAL_STATES = ("succeeded", "failed", "cancelled", "interrupted")


class BackendError(Exception):
    """The backend is unreachable or refused a request; the message says what to do."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Connection:
    url: str
    token: str = ""
    fingerprint: str = ""  # a pinned HTTPS certificate's SHA-256 ('' : the usual checks)

    @classmethod
    def from_server_json(cls, path: str | Path) -> Connection:
        """The connection a local `gfm serve` wrote to its state folder."""
        try:
            info = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot read backend connection file {path}: {exc}") from exc
        return cls(url=str(info["url"]).rstrip("/"), token=str(info.get("token", "")),
                   fingerprint=str(info.get("fingerprint") or ""))


class BackendClient:
    def __init__(self, connection: Connection, timeout: float = 10.0) -> None:
        self.connection = connection
        self.timeout = timeout

    # -- plumbing ---------------------------------------------------------------
    def _open(self, method: str, path: str, data: bytes | None = None, auth: bool = True,
              headers: dict[str, str] | None = None):
        """The response of one request (the caller closes it); errors as BackendError."""
        url = self.connection.url.rstrip("/") + path
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        if auth and self.connection.token:
            req.add_header("Authorization", f"Bearer {self.connection.token}")
        try:
            return opener(self.connection.fingerprint).open(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise BackendError(self._http_message(exc), exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(
                f"GFM backend not reachable at {self.connection.url} ({reason}). Start it from "
                "the GFM settings or run `gfm serve`."
            ) from exc

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        with self._open(method, path, data, auth, headers) as resp:
            raw = resp.read()
            ctype = resp.headers.get("Content-Type", "")
        if "json" in ctype:
            return json.loads(raw.decode("utf-8") or "null")
        return raw.decode("utf-8", errors="replace")

    def request_raw(self, method: str, path: str, data: bytes | None = None,
                    headers: dict[str, str] | None = None) -> Any:
        """A request with a raw body (an upload's bytes) and its JSON answer."""
        with self._open(method, path, data, True, {"Accept": "application/json", **(headers or {})}) as resp:
            return json.loads(resp.read().decode("utf-8") or "null")

    @staticmethod
    def _http_message(exc: urllib.error.HTTPError) -> str:
        try:
            detail = json.loads(exc.read().decode("utf-8")).get("detail")
        except Exception:  # not JSON: use the status line
            detail = None
        if exc.code == 401:
            return "the GFM backend refused the token: check the connection settings"
        if isinstance(detail, list):  # FastAPI validation errors
            detail = "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail
            )
        return str(detail or f"backend answered {exc.code} {exc.reason}")

    # -- API --------------------------------------------------------------------
    def health(self) -> dict:
        return self._request("GET", "/health", auth=False)

    def models(self) -> list[dict]:
        """Model packages: `name`, `path`, `model` (its model.json), `has_onnx`..."""
        return self._request("GET", "/models")["models"]

    def weights(self) -> dict:
        """`installed` weights (name, what, role, size, sha256, path) and the `catalog`."""
        return self._request("GET", "/weights")

    def remove_weights(self, name: str) -> dict:
        return self._request("DELETE", f"/weights/{urllib.parse.quote(name, safe='')}")

    def submit(self, job_type: str, params: dict) -> str:
        return self._request("POST", "/jobs", {"type": job_type, "params": params})["id"]

    def job(self, job_id: str) -> dict:
        return self._request("GET", f"/jobs/{job_id}")

    def jobs(self) -> list[dict]:
        return self._request("GET", "/jobs")["jobs"]

    def cancel(self, job_id: str) -> dict:
        return self._request("POST", f"/jobs/{job_id}/cancel")

    def resume(self, job_id: str) -> dict:
        return self._request("POST", f"/jobs/{job_id}/resume")

    def log(self, job_id: str) -> str:
        return self._request("GET", f"/jobs/{job_id}/log")

    def job_files(self, job_id: str) -> list[dict]:
        """What a succeeded job wrote: `name`, `size`, `sha256` of each file."""
        return self._request("GET", f"/jobs/{job_id}/files")["files"]

    def file_bytes(self, job_id: str, name: str) -> bytes:
        """A small file of a job (its report, a plot) through the API, local or remote."""
        with self._open("GET", self._file_path(job_id, name)) as resp:
            return resp.read()

    def download(self, job_id: str, entry: dict, dest: str | Path, on_bytes=None) -> Path:
        """Fetch one listed file to `dest`: staged as `dest.partial`, resumed from there with
        a Range request after a broken transfer, checked against the listed SHA-256 and
        renamed into place only when complete. `on_bytes(done, total)` may raise to stop."""
        from .transfer import fetch_resumable

        return fetch_resumable(lambda start: self._open(
            "GET", self._file_path(job_id, entry["name"]),
            headers={"Range": f"bytes={start}-"} if start else {}),
            Path(dest), int(entry["size"]), str(entry["sha256"]), on_bytes)

    @staticmethod
    def _file_path(job_id: str, name: str) -> str:
        return f"/jobs/{job_id}/files/{urllib.parse.quote(name)}"

    def wait(self, job_id: str, poll_s: float = 0.5, timeout_s: float | None = None,
             on_progress=None, should_cancel=None) -> dict:
        """Follow a job to its end; `should_cancel()` true cancels it on the backend."""
        start = time.monotonic()
        cancelled = False
        while True:
            info = self.job(job_id)
            if on_progress is not None:
                on_progress(info)
            if info.get("state") in TERMINAL_STATES:
                return info
            if should_cancel is not None and should_cancel() and not cancelled:
                self.cancel(job_id)
                cancelled = True
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise BackendError(f"job {job_id} did not finish within {timeout_s:.0f} s")
            time.sleep(poll_s)
