"""Wall time of a real deployment on loopback, from ``certs init`` to a finished run.

Every component is a separate process started through the installed ``fedward`` command,
TLS on: ``certs init`` and ``certs node`` per hospital -> ``server start`` (a coordinator
on 127.0.0.1) -> ``server register`` per hospital -> ``client start`` per hospital on DICOM
folders -> all hospitals online -> ``run start`` -> the run's Flower status is
``finished``. This is the chain ``tests/integration/test_deployment.py`` checks for
correctness; the wall times it once asserted belong here.

Setup, not timed in the chain: the first ``--subset train,val,test`` images of each split
of the real PneumoniaMNIST are written to a temporary folder (``--subset all``: the whole
file) and ``fedward data export`` makes ``--hospitals`` DICOM folders of them (iid, seed 0).
The coordinator also scores every round on that data's test split (``server start
--data-dir``), as in the test.

Prints the seconds of each stage (certs, coordinator ready, registration, hospitals online,
run start -> finished, the whole chain) and, from the run directory's metrics, each
round's wall time (difference of ``elapsed-s`` in ``metrics/server.jsonl``), the hospitals'
mean ``train-seconds`` in that round (``metrics/hospitals.jsonl``) and the rest: the
per-round overhead of the deployment (communication, serialisation, aggregation,
evaluation, process start-up), also as a share of the round. ``--json`` prints the same
figures as JSON. Wall times depend on the machine and on whatever else runs on it: the
figures are only comparable as ratios within one run on one machine.

Usage::

    python benchmarks/deployment_chain.py --data-dir ../shared/data \\
        [--subset 960,160,200] [--hospitals 3] [--rounds 2] [--local-epochs 1] [--keep DIR]

Every background process runs in its own process group, which is sent SIGTERM and then
SIGKILL when the benchmark ends, pass or fail; the working folder (certificates, state,
DICOM folders, logs) is removed unless ``--keep DIR`` names where to keep it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import numpy as np
from rich.console import Console
from rich.table import Table

DATASET = "pneumoniamnist"
ENV = {
    **os.environ,
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "COLUMNS": "200",
}
T = TypeVar("T")


class ChainError(RuntimeError):
    """A step of the chain failed or hung; the message says which and shows its log."""


@dataclass
class Deadline:
    """The hang guard: every wait and command of one benchmark shares ``seconds``."""

    seconds: float
    ends: float = 0.0

    def __post_init__(self) -> None:
        self.ends = time.monotonic() + self.seconds

    def left(self) -> float:
        """Seconds left (at least one, so a last attempt is always made)."""
        return max(1.0, self.ends - time.monotonic())

    def passed(self) -> bool:
        """Whether the guard has run out."""
        return time.monotonic() >= self.ends


@dataclass
class Layout:
    """Where one benchmark keeps everything: a folder outside the repository."""

    root: Path

    @property
    def data(self) -> Path:
        """The (subset) ``.npz`` folder."""
        return self.root / "data"

    @property
    def certs(self) -> Path:
        """``certs init`` output."""
        return self.root / "certs"

    @property
    def keys(self) -> Path:
        """The hospitals' key pairs."""
        return self.root / "keys"

    @property
    def state(self) -> Path:
        """The coordinator's state folder."""
        return self.root / "state"

    @property
    def hospitals(self) -> Path:
        """The exported DICOM folders, one per hospital."""
        return self.root / "hospitals"

    @property
    def logs(self) -> Path:
        """One log per background process."""
        return self.root / "logs"


@dataclass
class Background:
    """Long-lived processes, each in its own process group, stopped together at the end."""

    started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)

    def start(self, log: Path, *args: str) -> subprocess.Popen[bytes]:
        """``fedward <args>`` in the background, output to ``log``."""
        handle = open(log, "wb")  # noqa: SIM115 - closed in stop_all
        process = subprocess.Popen(
            [fedward_cli(), *args], stdout=handle, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
        )
        self.started.append((process, handle))
        self.logs[process.pid] = log
        return process

    def check(self, *more_logs: Path) -> None:
        """:class:`ChainError` with the logs when a process has exited (none should before the end)."""
        for process, _ in self.started:
            if process.poll() is not None:
                log = self.logs[process.pid]
                shown = "\n".join(tail(path) for path in (log, *more_logs))
                raise ChainError(
                    f"{log.stem} (fedward, pid {process.pid}) exited with code {process.returncode}\n{shown}"
                )

    def stop_all(self, grace_s: float = 20.0) -> None:
        """SIGTERM every process group, wait up to ``grace_s``, then SIGKILL what is left."""
        for process, _ in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        ends = time.monotonic() + grace_s
        for process, _ in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, ends - time.monotonic()))
        for process, handle in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            handle.close()


def fedward_cli() -> str:
    """Path of the installed ``fedward`` script (beside this Python, else on ``PATH``)."""
    beside = Path(sys.executable).parent / "fedward"
    found = str(beside) if beside.is_file() else shutil.which("fedward")
    if found is None:
        raise ChainError("the fedward console script is not installed (pip install -e . in the repository)")
    return found


def fedward(deadline: Deadline, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``fedward <args>`` to completion; :class:`ChainError` on the hang guard or (``check``) a failure."""
    try:
        result = subprocess.run(
            [fedward_cli(), *args], capture_output=True, text=True, timeout=deadline.left(), check=False, env=ENV
        )
    except subprocess.TimeoutExpired:
        raise ChainError(f"fedward {' '.join(args)}: still running when the --timeout ran out") from None
    if check and result.returncode != 0:
        raise ChainError(f"fedward {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log, headed by its path (or a note that it is missing)."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"--- {path}: not written"
    return "\n".join([f"--- {path} (last {lines} lines)", *text])


def wait_for(predicate: Callable[[], T | None], deadline: Deadline, what: str, interval: float = 1.0) -> T:
    """Poll ``predicate`` until it returns something truthy; :class:`ChainError` when the guard runs out."""
    while True:
        value = predicate()
        if value:
            return value
        if deadline.passed():
            raise ChainError(f"timed out waiting for {what} (--timeout {deadline.seconds:.0f} s)")
        time.sleep(interval)


def parse_subset(text: str) -> dict[str, int] | None:
    """``train,val,test`` counts (``all``: ``None``, the whole file)."""
    if text.strip().lower() == "all":
        return None
    counts = [int(part) for part in text.split(",")]
    if len(counts) != 3 or min(counts) < 1:
        raise argparse.ArgumentTypeError("--subset takes three positive counts: train,val,test (or 'all')")
    return dict(zip(("train", "val", "test"), counts, strict=True))


def prepare_data(source_dir: Path, layout: Layout, keep: dict[str, int] | None) -> Path:
    """The folder with the ``.npz`` to export: the real one, or a copy of its first ``keep`` images."""
    source = source_dir / f"{DATASET}.npz"
    if not source.is_file():
        raise ChainError(f"{source}: no such file (pass --data-dir, the folder holding {DATASET}.npz)")
    if keep is None:
        return source_dir.resolve()
    layout.data.mkdir(parents=True)
    with np.load(source) as full:
        arrays = {
            f"{split}_{kind}": full[f"{split}_{kind}"][:count]
            for split, count in keep.items()
            for kind in ("images", "labels")
        }
    np.savez(layout.data / source.name, **arrays)
    return layout.data


def export_hospitals(deadline: Deadline, data_dir: Path, layout: Layout, hospitals: int) -> None:
    """``fedward data export``: one DICOM folder per hospital, iid, seed 0 (setup, not the chain)."""
    fedward(
        deadline, "data", "export", "--out", str(layout.hospitals), "--data-dir", str(data_dir),
        "--dataset", DATASET, "--hospitals", str(hospitals), "--partition", "iid", "--seed", "0",
    )  # fmt: skip


def make_certs(deadline: Deadline, layout: Layout, names: list[str]) -> None:
    """The federation's CA and server certificate, and one key pair per hospital."""
    fedward(deadline, "certs", "init", "--out", str(layout.certs))
    for name in names:
        fedward(deadline, "certs", "node", name, "--out", str(layout.keys))


def start_coordinator(deadline: Deadline, layout: Layout, data_dir: Path, port: int, background: Background) -> None:
    """``fedward server start`` with TLS on 127.0.0.1, returned once ``coordinator.json`` exists."""
    log = layout.logs / "server.log"
    background.start(
        log, "server", "start", "--certs", str(layout.certs), "--state", str(layout.state),
        "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
    )  # fmt: skip

    def ready() -> bool:
        background.check(layout.state / "logs" / "superlink.log")
        return (layout.state / "coordinator.json").is_file()

    wait_for(ready, deadline, "the coordinator's coordinator.json", interval=0.2)


def register(deadline: Deadline, layout: Layout, names: list[str]) -> None:
    """``fedward server register`` every hospital's public key."""
    for name in names:
        fedward(deadline, "server", "register", name, str(layout.keys / f"{name}.pub"), "--state", str(layout.state))


def start_agents(
    layout: Layout, superlink: str, names: list[str], background: Background, *, warm_worker: bool = True
) -> None:
    """``fedward client start`` per hospital: its own port, one training thread, a cache in the work folder;
    ``warm_worker=False`` adds ``--no-warm-worker`` (a fresh ``flwr-clientapp`` process serves each message)."""
    for index, name in enumerate(names):
        background.start(
            layout.logs / f"{name}.log", "client", "start", "--superlink", superlink,
            "--ca", str(layout.certs / "ca.crt"), "--key", str(layout.keys / f"{name}.key"),
            "--data", str(layout.hospitals / f"hospital-{index}"), "--dataset", DATASET,
            "--port", str(free_port()), "--threads", "1", "--cache-dir", str(layout.root / "cache" / name),
            *([] if warm_worker else ["--no-warm-worker"]),
        )  # fmt: skip


def wait_online(deadline: Deadline, layout: Layout, names: list[str], background: Background) -> None:
    """Poll ``fedward server hospitals --json`` until every hospital is ``online``."""

    def online() -> bool:
        background.check(layout.logs / "server.log")
        result = fedward(deadline, "server", "hospitals", "--state", str(layout.state), "--json", check=False)
        if result.returncode != 0:
            return False
        status = {row["name"]: row.get("status") for row in json.loads(result.stdout)}
        return all(status.get(name) == "online" for name in names)

    wait_for(online, deadline, "every hospital to be online", interval=0.5)


def start_run(deadline: Deadline, layout: Layout, hospitals: int, rounds: int, local_epochs: int) -> int:
    """``fedward run start``; the Flower run id it prints."""
    result = fedward(
        deadline, "run", "start", "--state", str(layout.state), "--dataset", DATASET,
        "--hospitals", str(hospitals), "--rounds", str(rounds), "--seed", "0", "--local-epochs", str(local_epochs),
    )  # fmt: skip
    found = re.search(r"run id:\s*(\d+)", result.stdout)
    if found is None:
        raise ChainError(f"fedward run start printed no run id:\n{result.stdout}")
    return int(found.group(1))


def wait_finished(
    deadline: Deadline, layout: Layout, run_id: int, background: Background
) -> tuple[dict[str, Any], list[float]]:
    """Wait until the run directory's ``status.json`` leaves ``running``, then poll ``fedward run
    list --json`` until the run's Flower status is ``finished...``.

    Reading a file while the run goes keeps the benchmark off the 2 cores it measures (one
    ``run list`` call is a whole CLI start-up, seconds of CPU); ``run list`` confirms the end.

    Returns:
        The run's row and the seconds each ``run list`` call took (the poll's resolution).
    """
    polls: list[float] = []

    def ended() -> bool:
        background.check(layout.state / "logs" / "superlink.log")
        for status in layout.state.glob(f"runs/*-{run_id}/status.json"):
            with contextlib.suppress(OSError, ValueError):
                if json.loads(status.read_text()).get("state") not in (None, "running"):
                    return True
        return False

    wait_for(ended, deadline, f"run {run_id}'s status.json to leave 'running'", interval=0.5)

    def finished() -> dict[str, Any] | None:
        background.check(layout.state / "logs" / "superlink.log")
        started = time.perf_counter()
        result = fedward(deadline, "run", "list", "--state", str(layout.state), "--json", check=False)
        polls.append(time.perf_counter() - started)
        if result.returncode != 0:
            return None
        for row in json.loads(result.stdout):
            if row.get("flower-run-id") == run_id and str(row.get("flower-status") or "").startswith("finished"):
                return dict(row)
        return None

    row = wait_for(finished, deadline, f"run {run_id} to finish", interval=1.0)
    if row["flower-status"] != "finished:completed" or row.get("path") is None:
        logs = tail(layout.state / "logs" / "superlink.log", 80)
        raise ChainError(f"run {run_id} ended {row['flower-status']} (run store: {row.get('status')})\n{logs}")
    return row, polls


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def round_figures(run_dir: Path) -> list[dict[str, Any]]:
    """Per round: wall time, the hospitals' mean training time, overhead and overhead / wall.

    Round 0 (the initial model's evaluation) has no training: its wall time is from the
    ServerApp's start to its first record.
    """
    server = sorted(read_jsonl(run_dir / "metrics" / "server.jsonl"), key=lambda r: int(r["round"]))
    hospitals = read_jsonl(run_dir / "metrics" / "hospitals.jsonl")
    figures: list[dict[str, Any]] = []
    previous = 0.0
    for row in server:
        number, elapsed = int(row["round"]), float(row["elapsed-s"])
        wall = elapsed - previous
        previous = elapsed
        trained = [float(h["train-seconds"]) for h in hospitals if h["round"] == number and h["phase"] == "train"]
        train = statistics.fmean(trained) if trained else None
        overhead = wall - train if train is not None else None
        figures.append(
            {
                "round": number,
                "wall-s": wall,
                "train-s": train,
                "overhead-s": overhead,
                "overhead-share": overhead / wall if overhead is not None and wall > 0 else None,
                "hospitals-trained": len(trained),
            }
        )
    return figures


def run_chain(args: argparse.Namespace, layout: Layout, background: Background) -> dict[str, Any]:
    """Set up the data, then time the chain from ``certs init`` to the finished run."""
    deadline = Deadline(args.timeout)
    names = [f"h{i}" for i in range(args.hospitals)]
    layout.logs.mkdir(parents=True)
    clock = time.perf_counter()
    data_dir = prepare_data(args.data_dir, layout, args.subset)
    export_hospitals(deadline, data_dir, layout, args.hospitals)
    marks = {"setup": time.perf_counter() - clock}
    port = free_port()
    chain_start = clock = time.perf_counter()

    def mark(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        marks[stage], clock = now - clock, now

    make_certs(deadline, layout, names)
    mark("certs")
    start_coordinator(deadline, layout, data_dir, port, background)
    mark("coordinator")
    register(deadline, layout, names)
    mark("register")
    start_agents(layout, f"127.0.0.1:{port}", names, background, warm_worker=args.warm_worker)
    wait_online(deadline, layout, names, background)
    mark("online")
    run_id = start_run(deadline, layout, args.hospitals, args.rounds, args.local_epochs)
    row, polls = wait_finished(deadline, layout, run_id, background)
    mark("run")
    marks["chain"] = time.perf_counter() - chain_start
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu-count": os.cpu_count(),
        "settings": {
            "subset": args.subset,
            "hospitals": args.hospitals,
            "rounds": args.rounds,
            "local-epochs": args.local_epochs,
            "warm-worker": args.warm_worker,
        },
        "stages-s": marks,
        "run-list-poll-s": statistics.fmean(polls),
        "run-id": run_id,
        "rounds": round_figures(Path(row["path"])),
    }


STAGES = {
    "setup": "setup: subset + data export (not in the chain)",
    "certs": "certs init + certs node per hospital",
    "coordinator": "server start -> coordinator.json",
    "register": "server register per hospital",
    "online": "client start -> all hospitals online",
    "run": "run start -> Flower status finished",
    "chain": "whole chain (certs init -> finished)",
}


def seconds(value: float | None) -> str:
    """``value`` with two decimals, or a dash."""
    return "-" if value is None else f"{value:.2f}"


def report(figures: dict[str, Any]) -> None:
    """Print the stage and round tables."""
    console = Console()
    settings = figures["settings"]
    subset = "all" if settings["subset"] is None else ",".join(str(v) for v in settings["subset"].values())
    console.print(
        f"{figures['date']}: a machine with {figures['cpu-count']} cores (os.cpu_count()); {DATASET} subset "
        f"{subset} (train,val,test), {settings['hospitals']} hospitals, {settings['rounds']} rounds, "
        f"{settings['local-epochs']} local epoch(s), warm worker {'on' if settings['warm-worker'] else 'off'}; "
        "TLS on 127.0.0.1, every component its own process. "
        "Compare figures only as ratios within one run on one machine."
    )
    stages = Table(title="deployment chain, wall time")
    stages.add_column("stage")
    stages.add_column("seconds", justify="right")
    for key, label in STAGES.items():
        stages.add_row(label, seconds(figures["stages-s"][key]))
    console.print(stages)
    rounds = Table(
        title=f"run {figures['run-id']}: rounds (metrics/server.jsonl, metrics/hospitals.jsonl)",
        caption="overhead = round wall time - the hospitals' mean training time; round 0: ServerApp start -> "
        f"initial model evaluated; one `fedward run list` poll took {figures['run-list-poll-s']:.2f} s on average",
    )
    for column in ("round", "wall (s)", "mean train (s)", "overhead (s)", "overhead/wall"):
        rounds.add_column(column, justify="right")
    for row in figures["rounds"]:
        share = row["overhead-share"]
        label = "0 (initial eval)" if row["round"] == 0 else str(row["round"])
        rounds.add_row(
            label,
            seconds(row["wall-s"]),
            seconds(row["train-s"]),
            seconds(row["overhead-s"]),
            "-" if share is None else f"{share:.0%}",
        )
    console.print(rounds)


def parse_args() -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help=f"folder with {DATASET}.npz")
    parser.add_argument(
        "--subset", type=parse_subset, default="960,160,200", help="train,val,test images to keep, or 'all'"
    )
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800.0, help="hang guard for the whole benchmark (s)")
    parser.add_argument("--keep", type=Path, help="work in this (new or empty) folder and keep it")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--no-warm-worker",
        dest="warm_worker",
        action="store_false",
        help="agents serve each message in a fresh flwr-clientapp process (Flower's default), not a warm worker",
    )
    return parser.parse_args()


def work_folder(keep: Path | None) -> Path:
    """``--keep DIR`` (new or empty), else a new temporary folder."""
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="fedward-deployment-chain-"))
    keep.mkdir(parents=True, exist_ok=True)
    if any(keep.iterdir()):
        raise SystemExit(f"--keep {keep}: the folder is not empty")
    return keep.resolve()


def terminate(signum: int, frame: object) -> NoReturn:
    """SIGTERM ends the benchmark like Ctrl+C does: through the ``finally`` that stops everything."""
    raise SystemExit(128 + signum)


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, terminate)
    root = work_folder(args.keep)
    background = Background()
    try:
        figures = run_chain(args, Layout(root), background)
    except ChainError as err:
        kept = f"(kept in {root})" if args.keep else "(pass --keep DIR to keep the logs)"
        raise SystemExit(f"deployment chain failed {kept}:\n{err}") from None
    finally:
        background.stop_all()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        Console().print_json(json.dumps(figures))  # as the CLI prints --json
    else:
        report(figures)


if __name__ == "__main__":
    main()
