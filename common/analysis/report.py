"""Analyse saved predictions without rerunning the model: metrics, reliability, nearest-k% means, plots.

    python -m common.analyze checkpoint/predictions/predictions_h36m.npz

Reads the npz that evaluation writes (``--save-predictions`` / ``-s``: keys,
hypotheses (N, H, 17, 3), ground truth (N, 17, 3), metres), scores it with the
evaluation's own accumulator (so the table and numbers are those of
``metrics.json``), and adds the reliability curve, the rank correlation between
spread and error, and the nearest-k% table (``common.analysis.reliability``). Writes
``analysis.json`` and two PNG plots into ``--out`` (default: beside the npz).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.analysis.reliability import ReliabilityAccumulator, nearest_table
from common.core.errors import BadInput, refuse
from common.core.files import DiskFullError, output_folder, write_text
from common.core.reading import read_npz
from common.core.skeleton import NUM_JOINTS
from common.data.samples import H36M_KEY, parse_key

REQUIRED = {"keys": 1, "hypotheses": 4, "ground_truth": 3}


def load_predictions(path):
    """keys (N,), hypotheses (N, H, 17, 3) and ground truth (N, 17, 3) of an evaluation's npz; ValueError if malformed."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise FileNotFoundError(f"predictions file {path} not found: evaluate with --save-predictions FILE.npz (or -s)")
    arrays = read_npz(path, "predictions file", BadInput, "expected the npz evaluation writes with "
                      "--save-predictions (plain arrays, no pickled objects: such files are refused, never unpickled)")
    found = sorted(arrays)
    missing = sorted(set(REQUIRED) - set(arrays))
    if missing:
        raise BadInput(f"{path} lacks {missing}: expected the npz evaluation writes (keys, hypotheses, "
                         f"ground_truth); found {found}")
    for name, ndim in REQUIRED.items():
        if arrays[name].ndim != ndim:
            raise BadInput(f"{path}: '{name}' has shape {arrays[name].shape}, expected {ndim} dimensions")
    _check_values(path, arrays)
    n = len(arrays["keys"])
    if len(arrays["hypotheses"]) != n or arrays["ground_truth"].shape != (n,) + arrays["hypotheses"].shape[2:]:
        raise BadInput(f"{path}: keys {arrays['keys'].shape}, hypotheses {arrays['hypotheses'].shape} and "
                         f"ground_truth {arrays['ground_truth'].shape} do not match")
    return arrays


def _check_values(path, arrays):
    """ValueError for predictions that would score silently wrong: no samples, not floats, NaN or inf."""
    if len(arrays["keys"]) == 0 or arrays["hypotheses"].shape[1] == 0:
        raise BadInput(f"{path} holds no samples or no hypotheses: nothing to analyse")
    for name in ("hypotheses", "ground_truth"):
        array = arrays[name]
        if not np.issubdtype(array.dtype, np.floating) or array.shape[-2:] != (NUM_JOINTS, 3):
            raise BadInput(f"{path}: '{name}' must be floats (..., {NUM_JOINTS}, 3) in metres, got "
                             f"{array.dtype} {array.shape}")
        bad = np.flatnonzero(~np.isfinite(array).all(axis=tuple(range(1, array.ndim))))  # also for 0 rows
        if bad.size:
            raise BadInput(f"{path}: '{name}' holds NaN or infinite values in {bad.size} samples (first "
                             f"keys {[str(k) for k in arrays['keys'][bad[:3]]]}): the metrics would be NaN; "
                             f"re-run the evaluation that wrote it")


def guess_dataset(keys):
    """"h36m" when every key is a Human3.6M key, else "mpi"."""
    return "h36m" if all(H36M_KEY.match(str(k)) for k in keys) else "mpi"


def analyze(predictions, dataset=None, batch_size=256):
    """The evaluation's ReliabilityAccumulator over saved predictions (batched as evaluation scores them)."""
    keys = [str(k) for k in predictions["keys"]]
    dataset = dataset or guess_dataset(keys)
    accumulator = ReliabilityAccumulator(dataset)
    hypotheses = torch.from_numpy(predictions["hypotheses"])
    target = torch.from_numpy(predictions["ground_truth"])
    for start in range(0, len(keys), batch_size):
        part = slice(start, start + batch_size)
        parsed = [parse_key(k) for k in keys[part]]
        accumulator.update(hypotheses[part], target[part], [p["action"] for p in parsed],
                           [p["subject"] for p in parsed])
    return accumulator


def reliability_table(reliability):
    lines = [f"reliability: rank correlation (Spearman) between spread and MPJPE: "
             f"{reliability['rank_correlation_spread_error']:.3f}; mean spread {reliability['mean_spread_mm']:.2f} mm",
             f"{'share kept':>12}{'samples':>10}{'spread <= (mm)':>16}{'MPJPE (mm)':>12}"]
    lines += [f"{p['share_kept']:>12.0%}{p['samples_kept']:>10d}{p['spread_threshold_mm']:>16.2f}{p['mpjpe_mm']:>12.2f}"
              for p in reliability["curve"]]
    return "\n".join(lines)


def nearest_lines(rows):
    lines = ["mean of the k % hypotheses nearest the mean pose",
             f"{'k (%)':>8}{'MPJPE (mm)':>14}{'P-MPJPE (mm)':>14}"]
    lines += [f"{k:>8d}{a:>14.2f}{b:>14.2f}" for k, a, b in rows]
    return "\n".join(lines)


def plot_reliability(path, reliability):
    figure = Figure(figsize=(5, 3.6), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    curve = reliability["curve"]
    ax.plot([100 * p["share_kept"] for p in curve], [p["mpjpe_mm"] for p in curve], marker="o", color="tab:blue")
    ax.set_xlabel("samples kept, lowest spread first (%)")
    ax.set_ylabel("MPJPE of the mean hypothesis (mm)")
    ax.set_title(f"reliability (Spearman {reliability['rank_correlation_spread_error']:.2f})", fontsize=10)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_spread_error(path, spread_mm, error_mm):
    figure = Figure(figsize=(5, 3.6), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    ax.scatter(spread_mm, error_mm, s=4, alpha=0.4, color="tab:orange")
    ax.set_xlabel("spread of the hypotheses (mm)")
    ax.set_ylabel("MPJPE of the mean hypothesis (mm)")
    ax.set_title("per sample", fontsize=10)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m common.analyze", description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", help="npz written by evaluation (--save-predictions)")
    parser.add_argument("--dataset", choices=("h36m", "mpi"), help="default: h36m if every key is a Human3.6M key")
    parser.add_argument("--out", help="folder for analysis.json and the plots (default: beside the npz)")
    args = parser.parse_args(argv)
    try:
        return _report(args)
    except (FileNotFoundError, BadInput, DiskFullError) as error:
        return refuse(error)


def _report(args):
    """Analyse, print and write what ``main``'s parsed ``args`` ask for; returns the exit status."""
    predictions = load_predictions(args.predictions)
    source = Path(args.predictions)
    out = output_folder(args.out if args.out else source.parent / f"{source.stem}_analysis", "--out folder")
    accumulator = analyze(predictions, args.dataset)
    summary = accumulator.summary()
    rows = nearest_table(predictions["hypotheses"], predictions["ground_truth"])
    print(accumulator.table())
    print()
    print(reliability_table(summary["reliability"]))
    print()
    print(nearest_lines(rows))

    arrays = accumulator.arrays()
    plots = [plot_reliability(out / "reliability.png", summary["reliability"]),
             plot_spread_error(out / "spread_vs_error.png", 1000 * arrays[ReliabilityAccumulator.SPREAD],
                               1000 * arrays["mpjpe_mean_hypothesis"])]
    summary["nearest_mean"] = [{"percent": k, "mpjpe_mm": a, "p_mpjpe_mm": b} for k, a, b in rows]
    write_text(out / "analysis.json", json.dumps({"predictions": str(args.predictions), "metrics": summary}, indent=2))
    print()
    print(f"analysis: {out / 'analysis.json'}")
    print(f"plots:    {', '.join(str(p) for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
