"""Shared test fixtures.

The original implementation's outputs on seeded weights live outside the
repository, in ``../shared/parity`` (override with SNAPPOSE_PARITY_DIR); the
released checkpoint key lists in ``../shared/spec`` (SNAPPOSE_SPEC_DIR). Tests
that need them skip with the reason when they are absent, except under CI
(environment variable CI set to true, 1 or yes, as CI services do): there the
folders are always provided, so a missing one is an error, not 23 quiet skips.

Tests marked ``gpu`` skip where CUDA is not available.
"""
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(os.environ.get("SNAPPOSE_PARITY_DIR", REPO_ROOT.parent / "shared" / "parity"))
SPEC_DIR = Path(os.environ.get("SNAPPOSE_SPEC_DIR", REPO_ROOT.parent / "shared" / "spec"))


def running_in_ci():
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _absent(message):
    """Skip a test whose outside data is missing; under CI fail it, since CI always provides the data."""
    if running_in_ci():
        pytest.fail(f"{message}; CI (CI={os.environ['CI']}) must provide it", pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    no_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(no_cuda)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def parity_dir():
    if not (PARITY_DIR / "README.md").exists():
        _absent(f"parity data of the original implementation not found at {PARITY_DIR}")
    return PARITY_DIR


@pytest.fixture(scope="session")
def seeded(parity_dir):
    """The parity folder's ``seeded.py`` module (seeded weights and inputs)."""
    spec = importlib.util.spec_from_file_location("parity_seeded", parity_dir / "seeded.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def spec_keys():
    """Loader of the released checkpoints' key lists: spec_keys('denoiser') -> [(name, shape)]."""
    if not SPEC_DIR.is_dir():
        _absent(f"released checkpoint key lists not found at {SPEC_DIR}")

    def load(name):
        return [(k, tuple(s)) for k, s in json.loads((SPEC_DIR / f"{name}_keys.json").read_text())]

    return load


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """Dataset roots with tiny released-layout shards: {"h36m": root, "mpi": root}.

    Human3.6M: train/ 2 shards x 2 samples, validation/ 1 shard x 3 (three actions);
    MPI-INF-3DHP: train/ 1 x 4, test/ 1 x 3.
    """
    from data_helpers import write_split

    roots = {}
    for dataset, train, test in (("h36m", [2, 2], "validation"), ("mpi", [4], "test")):
        root = tmp_path_factory.mktemp(f"shards_{dataset}")
        write_split(root / "train", dataset, train, seed=1)
        write_split(root / test, dataset, [3], seed=2)
        roots[dataset] = root
    return roots


@pytest.fixture(scope="session")
def tiny_config(tiny_shards):
    """Factory of a run Config with a tiny model on ``tiny_shards``.

    ``tiny_config(checkpoint_dir, dataset="h36m", **overrides)``: overrides are
    dotted config keys written with "__" for ".", e.g. ``train__epochs=3``.
    """
    from common.pipeline.config import load_config

    def make(checkpoint, dataset="h36m", **overrides):
        values = {
            "dataset": dataset, "device": "cpu", "checkpoint": str(checkpoint),
            "data.root": str(tiny_shards[dataset]), "data.batch_size": 2, "data.eval_batch_size": 3,
            "data.num_workers": 0, "data.shuffle_buffer": 4,
            "model.backbone_width": 8, "model.res_depth": 1, "model.joint_depth": 1, "model.embed_dim": 32,
            "weights.pretrained_backbone": False, "weights.pretrained_context": False,
            "train.epochs": 2, "train.validate_every": 2, "train.val_proposals": 2, "train.val_timesteps": 1,
            "evaluation.num_proposals": 2, "evaluation.timesteps": 1,
        }
        values.update({key.replace("__", "."): value for key, value in overrides.items()})
        return load_config(None, values)

    return make
