"""Several processes: set-up from the launcher's environment and small collectives.

``torchrun`` and ``accelerate launch`` both export RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; :func:`init_distributed` reads them and joins the
process group (NCCL on CUDA, Gloo on the CPU). Without them everything here
works as a single process: rank 0 of 1, and the collectives return their input.
"""
import os

import numpy as np
import torch
import torch.distributed as dist


def launched_distributed():
    """True when a launcher started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device="auto"):
    """Join the process group if launched with several processes; pick this process's device.

    Args:
        device: "auto" (CUDA if available), "cpu", "cuda" or "cuda:N". Under a
            launcher, "auto"/"cuda" mean ``cuda:LOCAL_RANK``.
    Returns:
        torch.device for this process.
    Raises:
        RuntimeError: WORLD_SIZE > 1 but MASTER_ADDR/RANK missing (not started
            by torchrun / accelerate launch).
    """
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' was requested but CUDA is not available; "
                           f"use --device cpu")
    if not launched_distributed():
        return torch.device(("cuda" if use_cuda else "cpu") if device == "auto" else device)
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; "
                           f"start several processes with 'torchrun --nproc_per_node N' or "
                           f"'accelerate launch'")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return target


def resolve_device(device=None):
    """``device`` as a torch.device; None: this process's device (``init_distributed("auto")``)."""
    return torch.device(device) if device is not None else init_distributed("auto")


def cleanup_distributed():
    """Leave the process group (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed():
    """True when a process group of more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank():
    return dist.get_rank() if is_distributed() else 0


def get_world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main_process():
    """True on rank 0: the one process that writes checkpoints, logs and figures."""
    return get_rank() == 0


def barrier():
    if is_distributed():
        dist.barrier()


def all_gather_objects(obj):
    """Every process's picklable ``obj`` as a list indexed by rank (``[obj]`` for one process)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_arrays(arrays):
    """Concatenate per-sample arrays over processes along axis 0.

    Args:
        arrays: dict name -> numpy array (N_rank, ...) or list (N_rank items);
            the same names on every process.
    Returns:
        dict name -> the rank-ordered concatenation (sum of N_rank, ...), on every process.
    """
    parts = all_gather_objects(arrays)
    out = {}
    for name in arrays:
        values = [p[name] for p in parts]
        if isinstance(values[0], np.ndarray):
            out[name] = np.concatenate(values, axis=0)
        else:
            out[name] = [v for part in values for v in part]
    return out


def all_reduce_mean(value):
    """Mean of a Python float over processes (the float itself for one process)."""
    if not is_distributed():
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64,
                          device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return tensor.item() / get_world_size()
