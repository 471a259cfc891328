"""Fixtures of the attack tests: an attacker's host that records whoever connects to it."""

import pytest

from tests.security.collector import Collector


@pytest.fixture
def collector():
    listener = Collector()
    yield listener
    listener.close()
