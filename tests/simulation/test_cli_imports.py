"""The CLI plans a simulation without loading MONAI: it opens the data set and partitions it, nothing more."""

from __future__ import annotations

import subprocess
import sys


def test_planning_a_simulation_and_checking_its_network_do_not_load_monai() -> None:
    code = (
        "import sys\n"
        "import fedward.simulation.driver\n"
        "from fedward.common.choices import ModelName\n"
        "from fedward.common.ml.networks import NETWORKS, check_dpsgd_network\n"
        "check_dpsgd_network(ModelName.UNET)\n"
        "print(NETWORKS[ModelName.SMALL_CNN].summary)\n"
        "print('monai' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert result.stdout.splitlines()[-1] == "False", "MONAI loads when a network is built, not before"


def test_every_network_still_builds_through_its_lazy_import() -> None:
    import torch

    from fedward.common.ml.networks import NETWORKS, build_network

    for name, spec in NETWORKS.items():
        model = build_network(name, 1, 2, spatial_dims=3 if 3 in spec.dims else 2)
        assert isinstance(model, torch.nn.Module) and sum(p.numel() for p in model.parameters()) > 0, name
