"""What a student sees: JupyterLab in a real (headless) Chromium, running the student copy of notebook 01.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when missing, as root);
elsewhere the test is skipped with that message. The screenshot goes to ``build/browser/``.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import headless_chromium, wait_for
from galmeta import course

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (BROWSER and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")
SHOTS = course.repository_root() / "build" / "browser"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on localhost over a folder holding the student copies, as `make lab` opens them."""
    import nbformat

    folder = tmp_path / "lab"
    course.make_student_copies(folder, ["01"])
    bar = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from galmeta.config import progress_bar\nimport time\nfor _ in progress_bar(range(20), desc='demo'):\n    time.sleep(0.05)")])
    bar.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(bar, folder / "progress.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tmp_path / "jupyterlab.log", "w")
    env = {**os.environ, "GALMETA_MODE": "ci"}
    env.pop("GALMETA_PROGRESS", None)  # JupyterLab is interactive: progress widgets are allowed
    env.pop("MPLBACKEND", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
         "--LabApp.news_url=", "--ServerApp.port_retries=0",
         # a workspace and settings of its own: JupyterLab restores open tabs from ~/.jupyter otherwise,
         # and "Run All" would run whichever notebook an earlier session left in front
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()[-2000:])
            time.sleep(0.5)
    yield url, token
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture
def browser(tmp_path):
    driver = headless_chromium(tmp_path / "profile")
    yield driver
    driver.quit()


_wait = wait_for


def _started(browser):
    from selenium.webdriver.common.by import By

    return any(p.text.strip() not in ("[ ]:", "") for p in browser.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt"))


def _open_and_run_all(browser, url):
    """Open a notebook as a student does, wait for its kernel, then Run > Run All Cells (again if nothing starts)."""
    from selenium.webdriver.common.by import By

    browser.get(url)
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell"), 120, "the notebook to open")
    _wait(lambda: any("Idle" in e.text for e in browser.find_elements(By.CSS_SELECTOR, ".jp-StatusBar-Widget, .jp-StatusBar-TextItem")),
          120, "the kernel to be idle")
    for attempt in range(2):
        _wait(lambda: [e for e in browser.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text == "Run"],
              30, "the Run menu")[0].click()
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "li[data-command='runmenu:run-all']"), 30,
              "Run > Run All Cells")[0].click()
        deadline = time.time() + 20
        while time.time() < deadline and not _started(browser):
            time.sleep(0.5)
        if _started(browser):
            return
    pytest.fail("Run All Cells started no cell")


def test_a_student_runs_notebook_01_in_jupyterlab_and_sees_its_figures(jupyterlab, browser):
    from selenium.webdriver.common.by import By

    url, token = jupyterlab
    _open_and_run_all(browser, f"{url}/lab/tree/01_fetch_sdss.ipynb?reset&token={token}")
    cells = browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell")

    def errors():
        return [e.text[:300] for e in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
                if e.get_attribute("data-mime-type") == "application/vnd.jupyter.stderr"
                and ("Traceback" in e.text or "Error" in e.text)]

    def all_ran():
        found = errors()
        assert not found, f"a cell failed in JupyterLab: {found}"  # fail at once, not after the time-out
        prompts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]
        return len(prompts) == len(cells) and all(p.strip().startswith("[") and p.strip()[1:-2].isdigit()
                                                  for p in prompts)

    _wait(all_ran, 300, "every cell to run")
    SHOTS.mkdir(parents=True, exist_ok=True)
    figures = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")
    browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")[0].location_once_scrolled_into_view
    browser.save_screenshot(str(SHOTS / "jupyterlab_01_fetch_sdss.png"))
    assert not errors(), errors()
    assert "exercise 1: not answered yet" in browser.page_source, "a fresh student copy reminds, it does not fail"
    assert len(figures) >= 3, f"only {len(figures)} rendered figures in JupyterLab"
    assert all(f.size["width"] > 100 for f in figures)


def test_a_progress_bar_is_a_widget_in_jupyterlab(jupyterlab, browser):
    from selenium.webdriver.common.by import By

    url, token = jupyterlab
    _open_and_run_all(browser, f"{url}/lab/tree/progress.ipynb?reset&token={token}")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".widget-hprogress, .jupyter-widgets progress, .widget-progress"),
          60, "a progress widget")
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "jupyterlab_progress_widget.png"))
    assert "IProgress not found" not in browser.page_source
