"""Shared test set-up: offline SkyServer replay and the network marker."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("GALMETA_NETWORK_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="live SkyServer test; set GALMETA_NETWORK_TESTS=1 to run it")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """An empty data home for one test."""
    home = tmp_path / "galmeta_data"
    monkeypatch.setenv("GALMETA_DATA", str(home))
    return home


class SkyServerReplay:
    """Replaces ``SDSS._request`` (astroquery's own test pattern) with recorded responses.

    ``responder(sql) -> bytes | Exception`` decides the answer; every SQL text seen
    is kept in ``calls``.
    """

    def __init__(self, responder):
        self.responder = responder
        self.calls: list[str] = []

    def __call__(self, method, url, **kwargs):
        from astroquery.utils.mocks import MockResponse

        sql = kwargs["params"]["cmd"]
        self.calls.append(sql)
        answer = self.responder(sql)
        if isinstance(answer, BaseException):
            raise answer
        return MockResponse(content=answer, url=url)


@pytest.fixture
def replay(monkeypatch):
    """``replay(responder)`` installs a :class:`SkyServerReplay` and returns it."""
    from astroquery.sdss import SDSS

    def install(responder):
        fake = SkyServerReplay(responder)
        monkeypatch.setattr(SDSS, "_request", fake)
        return fake

    return install


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def headless_chromium(profile, window="1400,1000", extra_arguments=(), log_network=False):
    """A selenium driver for Debian's headless chromium (``BROWSER`` and ``DRIVER`` found on the PATH)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={window}", f"--user-data-dir={profile}", *extra_arguments):
        options.add_argument(argument)
    if log_network:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def wait_for(condition, seconds, what, poll=0.25):
    """The first truthy value of ``condition()`` within ``seconds``, else the test fails naming ``what``."""
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {seconds} s waiting for {what}")
