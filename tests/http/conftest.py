"""Fixtures of the raw-HTTP suite (standard library only): one shared phiserve started by the
e2e harness."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from harness import Server  # noqa: E402


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.check_clean_exit()
