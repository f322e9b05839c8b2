"""Shared fixtures: the real data beside the repo (../shared/data), skipped cleanly when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STAINSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data {path} is absent (clone with ../shared beside the repo to run this test)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder; tests using it are skipped when it is absent."""
    return _need("")


@pytest.fixture(scope="session")
def bbbc039() -> Path:
    return _need("bbbc039")


@pytest.fixture(scope="session")
def bbbc022() -> Path:
    return _need("bbbc022")


@pytest.fixture(scope="session")
def sephace() -> Path:
    return _need("sephace/Set1")


@pytest.fixture(scope="session")
def cellprofiler_human() -> Path:
    return _need("cellprofiler-human")
