"""HTTPS to the backend: the system's certificate authorities, or a self-signed certificate
pinned by its SHA-256 fingerprint (Settings > Certificate SHA-256; `gfm serve` logs it and
writes it to server.json). Standard library only."""

from __future__ import annotations

import functools
import hashlib
import http.client
import ssl
import urllib.request


def normalise(fingerprint: str) -> str:
    """'ab:cd…' or 'ABCD…' -> 'ABCD…' (64 hex digits), '' when none is given."""
    return fingerprint.replace(":", "").replace(" ", "").strip().upper()


def fingerprint_of(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


class FingerprintMismatch(ssl.SSLError):
    """The server's certificate is not the pinned one."""


class _PinnedConnection(http.client.HTTPSConnection):
    def __init__(self, *args, pinned: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pinned = pinned

    def connect(self) -> None:
        super().connect()
        der = self.sock.getpeercert(binary_form=True) or b""
        if normalise(fingerprint_of(der)) != self.pinned:
            self.sock.close()
            raise FingerprintMismatch(
                f"the server's certificate (SHA-256 {fingerprint_of(der)}) is not the one pinned "
                "in the GFM settings: someone may be in between, or the server has a new "
                "certificate (ask its administrator for the fingerprint)")


class _PinnedHandler(urllib.request.HTTPSHandler):
    def __init__(self, pinned: str) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False  # the pin is the identity; a self-signed cert has none
        context.verify_mode = ssl.CERT_NONE
        super().__init__(context=context)
        self._pinned = pinned
        self._tls_context = context

    def https_open(self, req):
        connection = functools.partial(_PinnedConnection, pinned=self._pinned)
        return self.do_open(connection, req, context=self._tls_context)


def opener(fingerprint: str = "") -> urllib.request.OpenerDirector:
    """An opener that checks certificates the usual way, or against the pinned fingerprint."""
    pinned = normalise(fingerprint)
    if not pinned:
        return urllib.request.build_opener()
    return urllib.request.build_opener(_PinnedHandler(pinned))
