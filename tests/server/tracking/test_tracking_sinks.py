"""Tracking sinks: TensorBoard event files read back, MLflow file store and dead server, the delivery thread."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
from fixtures.tracking import check_mlflow, expected_metrics, free_port, record_run, rows, tracked

from fedward.server.tracking.delivery import Delivery, Job
from fedward.server.tracking.names import hospital_metrics, metric_key, server_metrics


def test_names_keep_hospital_names_and_drop_node_ids() -> None:
    train = {"round": 1, "hospital": "h a", "phase": "train", "node-id": 99, "num-examples": 5.0, "train-loss": 0.1}
    assert hospital_metrics(train) == {"hospital/h a/train-examples": 5.0, "hospital/h a/train-loss": 0.1}
    evaluate = {"hospital": "x", "phase": "evaluate", "num-examples": 2.0, "val-auc": float("nan")}
    assert hospital_metrics(evaluate) == {"hospital/x/val-examples": 2.0}
    assert hospital_metrics({"hospital": "x", "phase": "failed", "reason": "timeout"}) == {"hospital/x/failed": 1.0}
    row = {"round": 2, "time": "2026-01-01T00:00:00+00:00", "val-auc": 0.7, "hospitals-trained": 3, "note": "x"}
    assert server_metrics(row) == {"val-auc": 0.7, "hospitals-trained": 3.0}
    assert metric_key("hospital/St. Mary's (ICU)/val-auc") == "hospital/St. Mary_s _ICU_/val-auc"


def test_tensorboard_event_files_give_back_every_round(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = record_run(tmp_path / "run", tracked(tensorboard=True))
    server, hospitals = rows(run_dir)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    found = {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
    expected = expected_metrics(server, hospitals)
    assert set(found) == set(expected)
    assert all(found[k] == pytest.approx(v, rel=1e-6) for k, v in expected.items())  # float32 in event files
    assert [found[("val-auc", int(r["round"]))] for r in server] == pytest.approx([r["val-auc"] for r in server])
    for row in hospitals:
        if row["phase"] == "evaluate":
            assert found[(f"hospital/{row['hospital']}/val-auc", row["round"])] == pytest.approx(row["val-auc"])
    assert not any("node" in tag for tag in events.Tags()["scalars"])
    assert json.loads((run_dir / "tracking.json").read_text())["tensorboard"]["dir"] == "tensorboard"


def test_mlflow_file_store_receives_the_run(tmp_path: Path) -> None:
    uri = str(tmp_path / "mlruns")
    run_dir = record_run(tmp_path / "runs" / "run-a", tracked(uri))
    record = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    assert record["undelivered"] == [] and "round 3" in record["delivered"]
    assert "tracking" not in json.loads((run_dir / "status.json").read_text())
    run_id = check_mlflow(uri, run_dir)
    from fedward.server.tracking.mlflow_sink import MlflowSink

    resumed = MlflowSink(uri, "fedward", run_dir)  # a resumed run continues the same MLflow run
    assert resumed.close("completed") == ""
    assert resumed.run_id == run_id


def test_a_dead_tracking_server_costs_the_run_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from fedward.server.tracking import mlflow_sink

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr(mlflow_sink, "CLOSE_WAIT", 1.0)
        patch.setattr(mlflow_sink, "BACKOFF", (0.2, 0.5))
        run_dir = record_run(tmp_path / "runs" / "run-b", tracked(uri))
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed"
    assert "round 0" in status["tracking"] and "artifact model_card.json" in status["tracking"]
    record = json.loads((run_dir / "tracking.json").read_text())["mlflow"]
    assert record["delivered"] == [] and record["run-id"] is None
    assert {"run", "params", "round 0", "round 3", "artifact model_card.md"} <= set(record["undelivered"])
    outages = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outages) == 1, "one warning per outage, not per attempt"
    assert any("not delivered to MLflow" in r.getMessage() for r in caplog.records)


def test_delivery_never_blocks_the_caller_and_keeps_order() -> None:
    release, done = threading.Event(), []
    attempts = {"n": 0}

    def flaky() -> None:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ConnectionError("down")
        done.append("a")

    delivery = Delivery("test", backoff=(0.01, 0.02))
    delivery.put(Job("blocked", lambda: (release.wait(), done.append("blocked"))[-1]))  # type: ignore[func-returns-value]
    for label in ("a", "b"):  # return although the first job is stuck
        delivery.put(Job(label, flaky if label == "a" else lambda: done.append("b")))
    assert delivery.outcome().pending == ["blocked", "a", "b"]
    release.set()
    outcome = delivery.close(wait=60)
    assert done == ["blocked", "a", "b"] and outcome.delivered == ["blocked", "a", "b"] and outcome.pending == []
    assert attempts["n"] == 3


def test_delivery_gives_up_after_the_wait_and_says_what() -> None:
    delivery = Delivery("test", backoff=(0.01, 0.05))
    delivery.put(Job("ok", lambda: None))
    delivery.put(Job("never", lambda: (_ for _ in ()).throw(ConnectionError("down"))))
    delivery.put(Job("after", lambda: None))
    outcome = delivery.close(wait=0.5)
    assert outcome.delivered == ["ok"] and outcome.pending == ["never", "after"]


def test_a_permanent_refusal_is_dropped_not_retried() -> None:
    delivery = Delivery("test", permanent=lambda err: isinstance(err, ValueError))
    delivery.put(Job("bad", lambda: (_ for _ in ()).throw(ValueError("changed param"))))
    delivery.put(Job("good", lambda: None))
    outcome = delivery.close(wait=60)
    assert outcome.dropped == ["bad"] and outcome.delivered == ["good"]


def test_untracked_runs_never_load_the_sinks(tmp_path: Path) -> None:
    """Without [tracking] no sink module loads (MONAI itself imports mlflow and torch's tensorboard writer)."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from fixtures.tracking import record_run; "
        "from fedward.server.tracking.tracker import open_tracker; "
        f"record_run(Path({str(tmp_path / 'r')!r}), lambda spec: open_tracker(spec, spec.run_dir)); "
        "print(sorted(m for m in sys.modules if m.startswith('fedward.server.tracking.')))"
    )
    tests = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tests, check=True, timeout=300
    )
    loaded = out.stdout.strip().splitlines()[-1]
    assert loaded == "['fedward.server.tracking.names', 'fedward.server.tracking.tracker']"
