"""Shared test fixtures.

The original implementation's outputs on seeded weights live outside the
repository, in ``../shared/parity`` (override with SNAPPOSE_PARITY_DIR); the
released checkpoint key lists in ``../shared/spec`` (SNAPPOSE_SPEC_DIR). Tests
that need them skip with the reason when they are absent.
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


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def parity_dir():
    if not (PARITY_DIR / "README.md").exists():
        pytest.skip(f"parity data of the original implementation not found at {PARITY_DIR}")
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
        pytest.skip(f"released checkpoint key lists not found at {SPEC_DIR}")

    def load(name):
        return [(k, tuple(s)) for k, s in json.loads((SPEC_DIR / f"{name}_keys.json").read_text())]

    return load
