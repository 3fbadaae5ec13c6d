"""Plugin settings (QgsSettings): how to reach the backend."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsSettings

PREFIX = "gfm/"
MODES = ("local", "remote")


def default_state_dir() -> str:
    """The folder `gfm serve` uses by default, so a backend started by hand is found too."""
    if os.environ.get("GFM_STATE_DIR"):
        return os.environ["GFM_STATE_DIR"]
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA", Path.home()))
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return str(base / "gfm-qgis" / "service")


def default_python() -> str:
    """A Python with the backend installed: `gfm` on PATH tells us where it lives."""
    gfm = shutil.which("gfm")
    if gfm:
        candidate = Path(gfm).resolve().parent / "python"
        if candidate.exists():
            return str(candidate)
    return ""


PLAIN_KEYS = ("mode", "python", "state_dir", "url", "models_dir", "results_dir", "authcfg",
              "fingerprint")


@dataclass
class BackendSettings:
    mode: str = "local"  # "local": start/find a backend with `python`; "remote": url + token
    python: str = ""
    state_dir: str = ""
    url: str = ""
    token: str = ""  # in memory only: stored in QGIS's authentication manager (`authcfg`)
    models_dir: str = ""
    results_dir: str = ""  # the outputs folder of unsaved projects (default: ~/GFM)
    authcfg: str = ""
    fingerprint: str = ""  # SHA-256 of a remote backend's self-signed certificate, pinned

    @classmethod
    def load(cls) -> BackendSettings:
        from . import token_store

        s = QgsSettings()
        settings = cls(
            mode=s.value(PREFIX + "mode", "local"),
            python=s.value(PREFIX + "python", "") or default_python(),
            state_dir=s.value(PREFIX + "state_dir", "") or default_state_dir(),
            url=s.value(PREFIX + "url", ""),
            models_dir=s.value(PREFIX + "models_dir", ""),
            results_dir=s.value(PREFIX + "results_dir", ""),
            authcfg=s.value(PREFIX + "authcfg", ""),
            fingerprint=s.value(PREFIX + "fingerprint", ""),
        )
        legacy = s.value(PREFIX + "token", "")
        if legacy:  # a token older versions kept in plain text: moved into the manager
            settings.token = legacy
            settings.save()
        else:
            settings.token = token_store.load(settings.authcfg)
        return settings

    def save(self) -> bool:
        """Write the settings; False when the token could not go into the authentication
        manager (no master password): it is then kept for this session only, never in
        plain text."""
        from . import token_store

        saved = True
        if self.token:
            authcfg = token_store.store(self.token, self.authcfg)
            saved = authcfg is not None
            self.authcfg = authcfg or self.authcfg
        elif self.authcfg:
            token_store.remove(self.authcfg)
            self.authcfg = ""
        s = QgsSettings()
        for key in PLAIN_KEYS:
            s.setValue(PREFIX + key, getattr(self, key))
        if saved:
            s.remove(PREFIX + "token")
        return saved
