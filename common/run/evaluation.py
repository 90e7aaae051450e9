"""Evaluation: H hypotheses by a sampler (DDIM by default), flip test, metrics, predictions and figures.

For each test sample the frozen backbone sees the crop and its mirror image in
one batch; the denoiser draws H hypotheses for both views from the same initial
noise with K DDIM steps; the mirrored view's hypotheses are un-flipped
(``skeleton.flip_pose_3d``) and averaged with the original's, hypothesis by
hypothesis; the root joint is set to 0; ``common.analysis.metrics.MetricAccumulator``
scores them. The sampler, the autocast precision and torch.compile are
options (``evaluation.sampler``, ``.precision``, ``.compile``; defaults: the
paper's DDIM in fp32, eager), recorded in ``metrics.json`` (``sampling.precision``: the
one that ran, after "auto" is resolved for the device; ``precision_requested``: as
configured). The initial noise of a sample is seeded by its key, so the
predictions do not depend on the batch size or on the number of processes.
"""
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.analysis.figures import draw_sample, draw_summary
from common.analysis.metrics import AGGREGATIONS, hypothesis_joint_errors
from common.analysis.reliability import ReliabilityAccumulator
from common.core.files import atomic_write, write_text
from common.data.counts import samples_per_pass
from common.data.loader import DEFAULT_SPLITS, build_loader
from common.data.samples import device_images
from common.data.splits import evaluation_shards
from common.pipeline import SnapPosePipeline
from common.pipeline.config import config_to_dict, output_paths
from common.run import distributed
from common.run.context_cache import describe_checkpoint

log = logging.getLogger(__name__)

@torch.no_grad()
def run_evaluation(pipeline, loader, dataset, keep_predictions=False, figures_dir=None, num_figures=0,
                   desc="evaluate"):
    """Score every sample of ``loader`` once across all processes.

    Args:
        pipeline: a ``common.pipeline.SnapPosePipeline`` (its denoiser in eval mode),
            which draws the hypotheses as its ``sampling`` says.
        loader: test batches (``build_loader(..., train=False)``), split over processes.
        dataset: "h36m" or "mpi" (which metrics are reported).
        keep_predictions: also return keys, hypotheses and ground truth of all samples.
        figures_dir, num_figures: draw the first ``num_figures`` samples of the
            main process as PNG files into ``figures_dir``, and ``summary.png``
            (``visualization.draw_summary``) of all samples.
    Returns:
        (accumulator, predictions): a ``ReliabilityAccumulator`` holding every
        process's samples (its ``summary()`` in millimetres and percent, with the
        hypotheses' reliability; its ``table()`` printable), and on the main process,
        if kept, {"keys" (N,), "hypotheses" (N, H, 17, 3), "ground_truth" (N, 17, 3)}
        in metres; else None.
    """
    accumulator = ReliabilityAccumulator(dataset)
    kept = {"keys": [], "hypotheses": [], "ground_truth": []}
    # MPI's PCK curve in the summary figure needs per-joint errors, which the accumulator does not keep.
    curve_errors = {a: [] for a in AGGREGATIONS} if figures_dir is not None and dataset == "mpi" else None
    drawn = 0
    main = distributed.is_main_process()
    progress = tqdm(desc=desc, unit="sample", total=samples_per_pass(loader), disable=not main, dynamic_ncols=True)
    for batch in loader:
        hypotheses = pipeline(batch).cpu()
        target = batch["keypoints_3d"][:, 0].to(hypotheses.dtype)  # (B, 17, 3)
        accumulator.update(hypotheses, target, batch.get("action"), batch.get("subject"))
        if curve_errors is not None:
            for aggregation, errors in curve_errors.items():
                errors.append(hypothesis_joint_errors(hypotheses, target, "mpjpe", aggregation).numpy())
        if keep_predictions:
            kept["keys"].extend(batch["key"])
            kept["hypotheses"].append(hypotheses.numpy().astype(np.float32))
            kept["ground_truth"].append(target.numpy().astype(np.float32))
        if main and figures_dir is not None and drawn < num_figures:
            images = device_images(batch, "cpu", test=True)
            for i in range(min(num_figures - drawn, len(target))):
                draw_sample(Path(figures_dir) / f"{batch['key'][i]}.png", images[i, 0],
                            batch["keypoints_2d_crop"][i, 0], hypotheses[i], target[i],
                            title=str(batch["key"][i]))
                drawn += 1
        progress.update(len(hypotheses))  # after the figures, which take seconds each
    progress.close()
    merged = ReliabilityAccumulator(dataset)
    for arrays in distributed.all_gather_objects(accumulator.arrays()):
        merged.merge(arrays)
    if len(merged) == 0:
        raise RuntimeError("the evaluation saw no samples: check the test shards (-w) and --max-samples")
    if curve_errors is not None:
        curve_errors = distributed.gather_arrays(
            {a: _concat(chunks, (0, 17)) for a, chunks in curve_errors.items()})
    if main and figures_dir is not None:
        draw_summary(Path(figures_dir) / "summary.png", merged.summary(), dataset, curve_errors)
    predictions = None
    if keep_predictions:
        local = {"keys": np.asarray(kept["keys"], dtype=str),
                 "hypotheses": _concat(kept["hypotheses"], (0, pipeline.sampling.hypotheses, 17, 3)),
                 "ground_truth": _concat(kept["ground_truth"], (0, 17, 3))}
        gathered = distributed.gather_arrays(local)
        predictions = gathered if main else None
    return merged, predictions


def _concat(chunks, empty_shape):
    return np.concatenate(chunks) if chunks else np.zeros(empty_shape, dtype=np.float32)



def write_predictions(path, predictions):
    """Save keys (N,), hypotheses (N, H, 17, 3) and ground truth (N, 17, 3), metres, as npz."""
    path = Path(path)
    with atomic_write(path) as stream:
        np.savez_compressed(stream, **predictions)
    return path


def metrics_file(latest, weights, split, dataset):
    """Where an evaluation's metrics go so that no other checkpoint or split overwrites them.

    ``metrics_<checkpoint name>.json`` beside ``latest`` (``metrics.json``, which
    always holds the latest evaluation), with ``_<split>`` added when the split
    is not the dataset's test split: ``metrics_best_h36m.json``,
    ``metrics_latest_epoch_train.json``.
    """
    suffix = "" if split == DEFAULT_SPLITS[dataset, False] else f"_{split}"
    return Path(latest).parent / f"metrics_{Path(weights).stem}{suffix}.json"


def evaluate(cfg, weights, device=None, trust_checkpoint=False):
    """Evaluate the SnapPose checkpoint ``weights`` on the test split of ``cfg.data.root``.

    Prints the metrics table and, on the main process, writes
    ``metrics_<checkpoint>.json`` (see :func:`metrics_file`) and a copy as
    ``metrics.json`` (the latest evaluation), and, as configured, the
    predictions npz and PNG figures, where ``config.output_paths(cfg)`` says.
    Refuses shards of a training split unless ``data.allow_train_split``.

    Args:
        cfg: Config; uses data, model, weights.backbone, evaluation, seed.
        weights: SnapPose checkpoint file (``best_h36m.bin``, ``latest_epoch.bin``, ...).
        device: torch.device; None initialises (distributed) from the environment.
        trust_checkpoint: unpickle the weight files fully, which can run code from
            them (see ``checkpoints.read_checkpoint``); only for trusted files.
    Returns:
        The metrics summary dict (millimetres; PCK and AUC in percent), with
        "checkpoint", "epoch", the split and its shards, the sampling settings
        and "skipped_samples" (bad samples passed over with ``data.skip_bad``) added.
    """
    urls, split = evaluation_shards(cfg.data.root, cfg.dataset, cfg.data.allow_train_split)
    device = distributed.resolve_device(device)
    paths = output_paths(cfg)
    pipeline, checkpoint = SnapPosePipeline.from_config(cfg, weights, device, trust_checkpoint=trust_checkpoint)
    e, sampling = cfg.evaluation, pipeline.sampling
    loader = build_loader(urls, cfg.dataset, train=False, batch_size=cfg.data.eval_batch_size,
                          num_workers=cfg.data.num_workers, max_samples=cfg.data.max_eval_samples,
                          skip_bad=cfg.data.skip_bad, seed=cfg.seed)
    log.info("evaluating %s: %s", weights, sampling.describe())
    accumulator, predictions = run_evaluation(
        pipeline, loader, cfg.dataset, keep_predictions=paths.predictions is not None,
        figures_dir=paths.figures if e.visualize else None, num_figures=e.visualize)
    summary = accumulator.summary()
    skipped = sum(distributed.all_gather_objects(len(loader.skipped)))
    summary.update(checkpoint=str(weights), epoch=checkpoint.get("epoch"), dataset=cfg.dataset,
                   split=split, num_shards=len(urls), sampling=dataclasses.asdict(sampling),
                   precision_requested=e.precision, skipped_samples=skipped, training_context=describe_checkpoint(checkpoint))
    if distributed.is_main_process():
        print(accumulator.table(), flush=True)
        named = metrics_file(paths.metrics, weights, split, cfg.dataset)
        if named.is_file():
            log.info("%s held an earlier evaluation of %s on split '%s'; replacing it", named, weights, split)
        text = json.dumps({"metrics": summary, "config": config_to_dict(cfg)}, indent=2)
        write_text(named, text)
        write_text(paths.metrics, text)
        log.info("metrics written to %s (and to %s, the latest evaluation)", named, paths.metrics)
        if predictions is not None:
            log.info("predictions written to %s", write_predictions(paths.predictions, predictions))
        if e.visualize:
            log.info("figures written to %s", paths.figures)
    distributed.barrier()
    return summary
