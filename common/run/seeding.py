"""Seeds and random states of a training run: set, saved in checkpoints, restored, and drawn per epoch."""
import random

import numpy as np
import torch


def seed_everything(seed):
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state():
    """This process's random states (Python, NumPy, torch CPU and CUDA).

    Held as tensors, ints and tuples only, so that checkpoints load with
    ``torch.load(weights_only=True)``.
    """
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state):
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])




def epoch_generator(seed, epoch, rank=0):
    """The generator of an epoch's sample order (and views): a function of seed, rank and epoch only.

    Both in-memory caches draw their epochs from it, so that a resumed run draws the same orders.
    """
    return torch.Generator().manual_seed((seed * 1000 + rank) * 100003 + epoch)
