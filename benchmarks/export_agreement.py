"""Does the ONNX export decide as fedward does? Every image of a split, decision by decision, in one run.

Loads a run (or model) directory with its operating point (temperature and threshold from
the model card), exports it to ONNX (:func:`fedward.client.evaluator.model_export.export_model`),
and scores every image of one split of a MedMNIST-layout ``.npz`` twice: with fedward's own
:class:`~fedward.client.evaluator.loaded_model.LoadedModel` and with onnxruntime on the
exported graph, deciding at the threshold the export's metadata carries. Prints how many
decisions agree and the largest probability difference.

Usage::

    python benchmarks/export_agreement.py runs/<run> --data ../shared/data/pneumoniamnist.npz --split test
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from fedward.client.evaluator.export_formats import ExportFormat
from fedward.client.evaluator.loaded_model import load_model
from fedward.client.evaluator.model_export import export_model


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("model_dir", type=Path)
    cli.add_argument("--data", type=Path, required=True, help="MedMNIST-layout .npz")
    cli.add_argument("--split", default="test")
    args = cli.parse_args()
    import onnx
    import onnxruntime

    loaded = load_model(args.model_dir)
    point = loaded.model_dir.operating_point
    with np.load(args.data) as archive:
        images = torch.from_numpy(np.asarray(archive[f"{args.split}_images"]))
    if images.ndim == 3:
        images = images[:, None]
    ours = loaded.probabilities(images)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        export_model(loaded, ExportFormat.ONNX, out)
        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        scaled = loaded.model_dir.preprocessing.scale(images).numpy().astype(np.float32)
        theirs = session.run(None, {session.get_inputs()[0].name: scaled})[0]
    threshold = float(json.loads(meta["fedward.thresholds"])[0])
    task = loaded.model_dir.task
    decided = point.decide(ours, task)
    exported = (theirs[:, 1] >= threshold).astype(np.int64)
    agree = int((decided == exported).sum())
    console = Console()
    console.print(
        f"operating point: threshold {point.threshold():.4f} (export metadata {threshold:.4f}), temperature "
        f"{point.temperature:.4g} (export metadata {meta['fedward.temperature']})"
    )
    console.print(
        f"{args.split}: {agree} of {len(decided)} decisions agree; max |p_onnx - p_fedward| "
        f"{float(np.abs(theirs - ours).max()):.2e}; positives {int(decided.sum())}"
    )


if __name__ == "__main__":
    main()
