"""Fixtures of the e2e suite: one shared phiserve on a free loopback port with the demo model,
and official openai clients (sync and async) pointed at it with retries off."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API_KEY, Server  # noqa: E402


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.check_clean_exit()


@pytest.fixture(scope="session")
def client(server):
    import openai
    return openai.OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture
def aclient(server):
    import openai
    return openai.AsyncOpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
