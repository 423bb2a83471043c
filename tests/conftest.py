"""Test-wide settings."""

import pytest

import ptq.config


@pytest.fixture(autouse=True, scope="session")
def _latency_search_off_by_default():
    """The latency search (on by default) places regions by timings, which may differ between runs
    on a busy machine and take seconds; tests of other features want byte-identical outputs fast,
    so it is off for the whole session (module fixtures included) unless a test is marked
    ``latency_search`` or sets it in its Config."""
    saved = ptq.config.DEFAULT_LATENCY_SEARCH
    ptq.config.DEFAULT_LATENCY_SEARCH = False
    yield
    ptq.config.DEFAULT_LATENCY_SEARCH = saved


@pytest.fixture(autouse=True)
def _latency_search_on_when_marked(request, monkeypatch):
    if request.node.get_closest_marker("latency_search") is not None:
        monkeypatch.setattr(ptq.config, "DEFAULT_LATENCY_SEARCH", True)
