"""Shared fixtures: real GeoTIFF / GeoPackage files made on the fly, and a real tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def compiled_network_cache(tmp_path_factory):
    """`--runtime torch-compiled` caches its compiled networks in a test folder, not the
    user's cache (child processes inherit it)."""
    before = os.environ.get("GFM_CACHE_DIR")
    os.environ["GFM_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["GFM_CACHE_DIR"])
    if before is None:
        os.environ.pop("GFM_CACHE_DIR", None)
    else:
        os.environ["GFM_CACHE_DIR"] = before


def real_data_dir() -> Path | None:
    """The shared real sample folder, when GFM_REAL_DATA points at it."""
    value = os.environ.get("GFM_REAL_DATA")
    if value and Path(value).is_dir():
        return Path(value)
    return None


@pytest.fixture
def real_data() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip("real sample data not available (set GFM_REAL_DATA)")
    return path
