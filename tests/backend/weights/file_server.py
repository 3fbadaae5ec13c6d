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
            start = self._range_start(etag)
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            for key, value in served.headers.get(name, {}).items():
                self.send_header(key, value)
            self.end_headers()
            end = served.cut_after.pop(name, len(data))
            self.wfile.write(data[start:max(start, end)])
            self.wfile.flush()
            self.close_connection = True

        def _range_start(self, etag: str) -> int:
            wanted = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
            if_range = self.headers.get("If-Range")
            if not wanted or (if_range and if_range != etag):
                return 0
            return int(wanted.group(1))

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
