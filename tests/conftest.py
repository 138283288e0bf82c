"""Shared test fixtures: the shared image corpus, interop tool gating, hypothesis profiles."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

from helpers import REPO_ROOT, SharedFixture, load_expected, shared_fixtures_dir  # noqa: E402

settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return shared_fixtures_dir()


@pytest.fixture(scope="session")
def expected() -> list[SharedFixture]:
    return load_expected()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
