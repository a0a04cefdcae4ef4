"""What watching a live run costs it: a simulation's wall time alone and with 20 dashboard sessions polling.

Runs the same small ``fedward simulate`` twice, back to back, into one runs folder that a
``fedward registry serve`` process (TLS, certificates from ``fedward certs init``) serves
the whole time: first with nobody watching, then with ``--sessions`` dashboard sessions
watching it. Prints both wall times (start of ``fedward simulate`` to its exit) and their
ratio, and how many dashboard requests were answered and how fast.

A session is a lightweight HTTP client standing in for a browser tab (20 headless
Chromiums would need more memory and CPU than the 2-core machines this runs on have, and
would measure the browsers, not the registry): it signs in with a token (POST
``/ui/signin``, session cookie), loads what the run page loads (the page, its script and
style sheet) and then fetches exactly what the page's script fetches at the page's interval
(``/ui/api/runs/{run}`` every ``POLL_MS``; the runs list until the run exists; the model
card once, when it appears). The sessions start polling as soon as the simulation is
launched and stop when it exits (so they poll at least ``--min-seconds``, 2 minutes by
default, if the run lasts that long; a warning says when it does not).

Usage::

    python benchmarks/dashboard_load.py --data-dir ../shared/data [--hospitals 3] [--rounds 12] [--sessions 20]

Wall times depend on the machine and whatever else runs on it: the ratio within one run is
the figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from fedward.common.flower.processes import free_port
from fedward.server.registry.dashboard.pages import POLL_MS
from fedward.server.registry.tokens import TokenStore

ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def fedward(*args: str) -> list[str]:
    """The command line of the installed ``fedward`` script."""
    found = shutil.which("fedward")
    if found is None:
        sys.exit("the fedward console script is not on PATH (activate the virtual environment)")
    return [found, *args]


class Session(threading.Thread):
    """One dashboard tab: sign in, load the run page, poll its API until told to stop."""

    def __init__(self, url: str, token: str, context: ssl.SSLContext, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=url, verify=context, timeout=30, follow_redirects=False)
        self.token, self.stop = token, stop
        self.latencies: list[float] = []
        self.errors = 0

    def get(self, path: str) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            response = self.client.get(path)
        except httpx.HTTPError:
            self.errors += 1
            return None
        self.latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            self.errors += 1
        return response

    def run(self) -> None:
        origin = {"Origin": str(self.client.base_url).rstrip("/")}
        self.client.post("/ui/signin", data={"token": self.token}, headers=origin)
        for path in ("/ui/runs", "/ui/static/dashboard.js", "/ui/static/dashboard.css"):
            self.get(path)
        run, card = None, False
        while not self.stop.wait(POLL_MS / 1000):
            if run is None:
                listed = self.get("/ui/api/runs")
                running = [r["run-id"] for r in (listed.json()["runs"] if listed else []) if r["status"] == "running"]
                if running:
                    run = running[0]
                    self.get(f"/ui/runs/{run}")
                continue
            answer = self.get(f"/ui/api/runs/{run}")
            if answer is not None and not card and answer.json()["downloads"]["card-json"]:
                card = self.get(f"/ui/api/runs/{run}/card") is not None
        self.client.close()


def simulate(args: argparse.Namespace, runs: Path, name: str) -> subprocess.Popen[bytes]:
    command = fedward(
        "simulate", "--data-dir", str(args.data_dir), "--dataset", args.dataset, "--hospitals", str(args.hospitals),
        "--rounds", str(args.rounds), "--local-epochs", str(args.local_epochs), "--seed", "0", "--name", name,
        "--output-dir", str(runs),
    )  # fmt: skip
    return subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed_run(args: argparse.Namespace, runs: Path, name: str, sessions: list[Session]) -> float:
    """Wall seconds of one simulation, with ``sessions`` polling while it runs."""
    start = time.monotonic()
    process = simulate(args, runs, name)
    for session in sessions:
        session.start()
    code = process.wait()
    wall = time.monotonic() - start
    for session in sessions:
        session.stop.set()
    for session in sessions:
        session.join(timeout=60)
    if code != 0:
        sys.exit(f"fedward simulate ({name}) exited with {code}")
    if sessions and wall < args.min_seconds:
        print(f"warning: the watched run lasted {wall:.0f} s < {args.min_seconds:.0f} s; raise --rounds")
    return wall


def wait_ready(url: str, context: ssl.SSLContext, process: subprocess.Popen[bytes]) -> None:
    for _ in range(120):
        if process.poll() is not None:
            sys.exit("fedward registry serve exited")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/v1/health", verify=context, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    sys.exit("fedward registry serve did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=120.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fedward-dashboard-load-") as folder:
        tmp = Path(folder)
        runs, certs = tmp / "runs", tmp / "certs"
        runs.mkdir()
        subprocess.run(fedward("certs", "init", "--out", str(certs)), env=ENV, check=True, capture_output=True)
        token = TokenStore.for_store(runs).create("load")
        port = free_port()
        url = f"https://127.0.0.1:{port}"
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        registry = subprocess.Popen(
            fedward("registry", "serve", "--store", str(runs), "--certs", str(certs), "--host", "127.0.0.1",
                    "--port", str(port)),
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait_ready(url, context, registry)
            alone = timed_run(args, runs, "alone", [])
            stop = threading.Event()
            sessions = [Session(url, token, context, stop) for _ in range(args.sessions)]
            watched = timed_run(args, runs, "watched", sessions)
        finally:
            os.killpg(registry.pid, signal.SIGTERM)
            registry.wait(timeout=30)
    report(args, alone, watched, sessions)


def report(args: argparse.Namespace, alone: float, watched: float, sessions: list[Session]) -> None:
    latencies = sorted(x for s in sessions for x in s.latencies)
    errors = sum(s.errors for s in sessions)
    print(json.dumps({"hospitals": args.hospitals, "rounds": args.rounds, "dataset": args.dataset}))
    print(f"wall time alone:                          {alone:8.1f} s")
    print(f"wall time with {args.sessions:2d} dashboard sessions:      {watched:8.1f} s")
    if latencies:
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(
            f"dashboard requests answered: {len(latencies)} ({errors} errors), every {POLL_MS} ms per session; "
            f"median {1000 * statistics.median(latencies):.1f} ms, p95 {1000 * p95:.1f} ms"
        )
    print(f"ratio watched / alone: {watched / alone:.3f} (overhead {100 * (watched / alone - 1):+.1f} %)")


if __name__ == "__main__":
    main()
