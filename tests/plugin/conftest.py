"""Plugin tests run in QGIS's own Python (/usr/bin/python3) with a headless QgsApplication."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

qgis_core = pytest.importorskip("qgis.core")


@pytest.fixture(scope="session")
def qgis_app():
    from qgis.testing import start_app

    return start_app(cleanup=False)


@pytest.fixture
def iface(qgis_app):
    from qgis.testing.mocked import get_iface

    return get_iface()
