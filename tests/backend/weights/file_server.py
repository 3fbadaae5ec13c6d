"""A real HTTP file server on loopback for the download tests: Range and If-Range as
GitHub's and the Hugging Face Hub's servers answer them, and faults on request (a
connection cut after N bytes, extra headers such as the Hub's X-Linked-Etag)."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Served:
    root: Path
    cut_after: dict[str, int] = field(default_factory=dict)  # name -> bytes, once
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (name, Range)


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet tests
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            name = self.path.lstrip("/")
            path = served.root / name
            served.requests.append((name, self.headers.get("Range")))
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            etag = '"' + hashlib.sha1(data).hexdigest() + '"'
            start, last = self._range(etag, len(data))
            partial = start > 0 or last < len(data) - 1
            self.send_response(206 if partial else 200)
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{last}/{len(data)}")
            self.send_header("Content-Length", str(last + 1 - start))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            for key, value in served.headers.get(name, {}).items():
                self.send_header(key, value)
            self.end_headers()
            end = min(served.cut_after.pop(name, len(data)), last + 1)
            self.wfile.write(data[start:max(start, end)])
            self.wfile.flush()
            self.close_connection = True

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's name); GDAL's /vsicurl/ asks first
            path = served.root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def _range(self, etag: str, size: int) -> tuple[int, int]:
            """(first, last) byte asked for: `bytes=N-` (a resumed download) or `bytes=N-M`
            (GDAL reading a window)."""
            wanted = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
            if_range = self.headers.get("If-Range")
            if not wanted or (if_range and if_range != etag):
                return 0, size - 1
            last = int(wanted.group(2)) if wanted.group(2) else size - 1
            return int(wanted.group(1)), min(last, size - 1)

    return Handler


class FileServer:
    """`with FileServer(folder) as server: server.url("gfm.pth")`."""

    def __init__(self, root: Path) -> None:
        self.served = Served(root)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.served))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{name}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
