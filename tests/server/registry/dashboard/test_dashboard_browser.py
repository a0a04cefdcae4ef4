"""The dashboard in a real browser: headless Chromium (Selenium) against ``fedward registry serve`` over TLS.

The registry serves the runs folder of a ``fedward simulate`` that is running (3 hospitals
on a real PneumoniaMNIST subset, many short rounds). Checked: a browser without a session
gets the sign-in page and no run data; signing in with a token shows the running
simulation in the runs list; its page's server curve gains a point when a round lands in
``metrics/server.jsonl``, without a reload; the hospitals table names each hospital;
after ``fedward registry token revoke`` the next poll lands on the sign-in page. The test
saves the screenshots the README shows (``docs/dashboard-runs.png``, ``docs/dashboard-run.png``).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and
selenium; skipped with the reason when they are missing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.cli import ENV, fedward, fedward_cli
from fixtures.deadlines import deadline
from fixtures.deployment import real_subset
from fixtures.processes import stop_group

from fedward.common.flower.processes import free_port
from fedward.server.registry.dashboard.pages import POLL_MS
from fedward.server.registry.tokens import TokenStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(deadline(900))]

REPO = Path(__file__).resolve().parents[4]
DOCS = REPO / "docs"
HOSPITALS = 3
ROUNDS = 40
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
POLL_S = POLL_MS / 1000
"""The pages' polling interval, seconds."""


def _chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver (skips the test when either is missing)."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install '.[test]')")
    binary = next((path for path in CHROMIUM if Path(path).is_file()), None) or shutil.which("chromium")
    driver = CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("headless browser tests need chromium and chromedriver: apt-get install chromium chromium-driver")
    return binary, driver


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + deadline(timeout)
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {deadline(timeout):.0f} s waiting for {what}")


@dataclass
class Live:
    runs: Path
    run_dir: Path
    url: str
    token: str
    browser: Callable[[], Any]


def _status(run_dir: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads((run_dir / "status.json").read_text()))
    return {}


def _rounds_recorded(run_dir: Path) -> int:
    with contextlib.suppress(OSError):
        return sum(1 for line in (run_dir / "metrics" / "server.jsonl").read_text().splitlines() if '"val-auc"' in line)
    return 0


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> Iterator[Live]:
    """A running simulation, the registry serving its runs folder over TLS, and a browser factory."""
    binary, driver = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("dashboard")
    runs, certs = tmp / "runs", tmp / "certs"
    runs.mkdir()
    real_subset(real_data_dir / "pneumoniamnist.npz", tmp / "data", {"train": 900, "val": 150, "test": 150})
    assert fedward("certs", "init", "--out", str(certs), timeout=60).returncode == 0
    token = TokenStore.for_store(runs).create("alice")
    port = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    browsers: list[Any] = []
    with open(tmp / "simulate.log", "wb") as sim_log, open(tmp / "registry.log", "wb") as reg_log:
        processes.append(subprocess.Popen(
            [fedward_cli(), "simulate", "--dataset", "pneumoniamnist", "--data-dir", str(tmp / "data"),
             "--hospitals", str(HOSPITALS), "--rounds", str(ROUNDS), "--local-epochs", "1", "--seed", "0",
             "--name", "watched", "--output-dir", str(runs)],
            stdout=sim_log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
        ))  # fmt: skip
        processes.append(subprocess.Popen(
            [fedward_cli(), "registry", "serve", "--store", str(runs), "--certs", str(certs),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=reg_log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
        ))  # fmt: skip

    def browser() -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--ignore-certificate-errors", "--window-size=1280,1500"):  # fmt: skip
            options.add_argument(argument)
        chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        browsers.append(chrome)
        return chrome

    try:
        run_dir = wait_for(
            lambda: next((p for p in runs.iterdir() if p.is_dir() and _status(p).get("state") == "running"), None),
            240,
            f"the simulation's run directory (log: {tmp / 'simulate.log'})",
        )
        yield Live(runs, run_dir, f"https://127.0.0.1:{port}", token, browser)
    finally:
        for chrome in browsers:
            with contextlib.suppress(Exception):
                chrome.quit()
        for process in processes:
            stop_group(process, 20.0)


def _sign_in(chrome: Any, live: Live) -> None:
    from selenium.webdriver.common.by import By

    chrome.get(live.url + "/ui/signin")
    chrome.find_element(By.ID, "token").send_keys(live.token)
    chrome.find_element(By.ID, "signin").click()
    wait_for(lambda: chrome.current_url.endswith("/ui/runs"), 30, "the runs list after sign-in")


def _points(chrome: Any, series: str) -> int:
    from selenium.webdriver.common.by import By

    return len(chrome.find_elements(By.CSS_SELECTOR, f'#curve-server circle[data-series="{series}"]'))


def test_a_browser_without_a_session_gets_no_run_data(live: Live) -> None:
    chrome = live.browser()
    for path in ("/ui/runs", f"/ui/runs/{live.run_dir.name}"):
        chrome.get(live.url + path)
        assert chrome.current_url.endswith("/ui/signin")
        assert live.run_dir.name not in chrome.page_source
    chrome.get(live.url + "/ui/api/runs")
    assert live.run_dir.name not in chrome.page_source
    assert "sign-in is required" in chrome.page_source


def test_sign_in_watch_the_running_simulation_then_revoke(live: Live) -> None:
    from selenium.webdriver.common.by import By

    chrome = live.browser()
    _sign_in(chrome, live)
    run_id = live.run_dir.name
    row = wait_for(
        lambda: chrome.find_element(By.CSS_SELECTOR, f'#runs tr[data-run="{run_id}"][data-status="running"]'),
        30,
        "the running simulation in the runs list",
    )
    assert "running" in row.text
    row.find_element(By.TAG_NAME, "a").click()
    wait_for(lambda: chrome.current_url.endswith(f"/ui/runs/{run_id}"), 30, "the run page")
    wait_for(lambda: _rounds_recorded(live.run_dir) >= 1 and _points(chrome, "val-auc") >= 1, 240, "a first point")
    chrome.execute_script("window.__notReloaded = true;")
    before = _points(chrome, "val-auc")
    assert _status(live.run_dir).get("state") == "running", "the simulation ended before a round could be watched"
    wait_for(lambda: _points(chrome, "val-auc") > before, 240, "the curve to gain a point")
    assert chrome.execute_script("return window.__notReloaded === true;"), "the page was reloaded"

    names = {r.get_attribute("data-hospital") for r in chrome.find_elements(By.CSS_SELECTOR, "#hospitals tbody tr")}
    assert names == {f"hospital-{k}" for k in range(HOSPITALS)}
    table = chrome.find_element(By.ID, "hospitals").text
    assert all(f"hospital-{k}" in table for k in range(HOSPITALS))
    wait_for(lambda: _rounds_recorded(live.run_dir) >= 8 or _status(live.run_dir).get("state") != "running", 120,
             "a few more rounds for the screenshot")  # fmt: skip
    time.sleep(2 * POLL_S)  # the page has polled them
    DOCS.mkdir(exist_ok=True)
    chrome.set_window_size(1280, 1100)
    chrome.save_screenshot(str(DOCS / "dashboard-run.png"))
    chrome.find_element(By.LINK_TEXT, "All runs").click()
    wait_for(lambda: chrome.find_element(By.CSS_SELECTOR, f'#runs tr[data-run="{run_id}"]'), 30, "the runs list")
    chrome.set_window_size(1280, 400)
    chrome.save_screenshot(str(DOCS / "dashboard-runs.png"))

    result = fedward("registry", "token", "revoke", "alice", "--store", str(live.runs), timeout=60)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: chrome.current_url.endswith("/ui/signin"), 30, "the sign-in page after revocation")
    assert run_id not in chrome.page_source
    chrome.get(live.url + f"/ui/runs/{run_id}")
    assert chrome.current_url.endswith("/ui/signin")
