"""Benchmarks run only when asked for (``pytest benchmarks/bench_read.py``); the normal test run
collects tests/ alone (pyproject testpaths).

pytest-benchmark provides the ``benchmark`` fixture and marker. When it is not installed (or is
disabled with ``-p no:benchmark``), the marker is registered here (the project runs with
--strict-markers) and a stand-in fixture calls each benchmarked function once, so the file still
works as a smoke run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


class _OneShot:
    """The subset of pytest-benchmark's fixture used here: run once, return the result."""

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    def pedantic(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                 setup: Callable[[], Any] | None = None, rounds: int = 1, iterations: int = 1,
                 warmup_rounds: int = 0) -> Any:
        if setup is not None:
            got = setup()
            if got is not None:
                args, kwargs = got
        return fn(*args, **(kwargs or {}))


class _FallbackPlugin:
    @pytest.fixture
    def benchmark(self) -> _OneShot:
        return _OneShot()


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.hasplugin("benchmark"):
        config.addinivalue_line("markers", "benchmark: a pytest-benchmark micro-benchmark")
        config.pluginmanager.register(_FallbackPlugin(), "vhdx-benchmark-fallback")
