"""DDPM training of the SnapPose denoiser, with validation, checkpoints, logs and resume.

One epoch: for each batch the frozen backbone (eval mode, no gradients) turns
the crops into feature maps; ``diffusion.diffusion_loss`` draws timesteps and
noise and returns the epsilon MSE; AdamW steps. After the epoch the learning
rate is multiplied by ``lr_decay``. Every ``validate_every`` epochs, and after
the last, the model is evaluated (K = ``val_timesteps`` DDIM steps, H =
``val_proposals``); an improved MPJPE of the mean hypothesis writes
``best_<dataset>.bin``. ``latest_epoch.bin`` is written every
``checkpoint_frequency`` epochs, after the last, and on Ctrl-C / SIGTERM.
With ``train.context_cache`` every epoch trains from contexts computed once
before the first (``common.run.context_cache``) instead of images and the backbone.

Checkpoint files hold the original's keys (epoch, lr, optimizer, model_pos)
plus what resuming needs: the best MPJPE so far, the batches already done in an
interrupted epoch, the random states of every process and the training noise
generator, and the resolved configuration. Resuming restores them and skips
the batches already done, so a resumed run continues as if never stopped.
"""
import logging
import math
import random
import signal
import time
from pathlib import Path
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from common.run import distributed
from common.model.checkpoints import load_context_weights, load_snappose_weights, require_weight_file, save_checkpoint
from common.run.config import config_to_dict, output_paths, save_config
from common.run.context_cache import CachedContextDenoiser, check_config, context_diffusion_loss, prepare_context_cache
from common.data.loader import build_loader
from common.model.diffusion import diffusion_loss, make_ddpm_scheduler
from common.run.evaluation import run_evaluation
from common.data.counts import samples_per_pass
from common.data.splits import evaluation_shards

log = logging.getLogger(__name__)

# The validation metric that decides ``best_<dataset>.bin`` (millimetres).
BEST_METRIC = "mpjpe_mean_hypothesis"


class TrainingDivergedError(RuntimeError):
    """A non-finite loss or gradient (or weights) stopped training; the checkpoints on disk are untouched."""


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


@contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM (e.g. a cluster's pre-emption) into KeyboardInterrupt, like Ctrl-C."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _State:
    """Progress that checkpoints carry: completed epochs, batches of the current one, best MPJPE."""

    def __init__(self):
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best = float("inf")
        self.loss_sum = 0.0
        self.skipped_steps = 0  # non-finite steps skipped in this epoch (with grad_clip)


class FeatureCache:
    """A training set held in memory: per sample, the backbone features of the view it was trained on.

    Filled during the first epoch from the batches the loader gives (and the
    features the backbone computed for them anyway); later epochs draw shuffled
    batches from it without decoding an image or running the backbone. Each
    sample keeps the (possibly flipped) view of its first epoch. Features stay
    on the device they were computed on.
    """

    def __init__(self):
        self._parts = []  # one dict of tensors per cached batch
        self.complete = False
        self._data = None

    def add(self, features, keypoints, ref, pose):
        """Store one batch: features (4 maps (B, C_l, h_l, w_l)), keypoints (B, 1, J, 2), ref (B, J, 2), pose (B, 1, J, 3)."""
        self._parts.append({"features": [f.detach() for f in features], "keypoints": keypoints,
                            "ref": ref, "pose": pose})

    def finish(self):
        """Concatenate what was stored; called at the end of the filling epoch."""
        if not self._parts:
            raise RuntimeError("the feature cache is empty: the first epoch produced no batches")
        parts = self._parts
        self._data = {
            "features": [torch.cat([p["features"][level] for p in parts]) for level in range(len(parts[0]["features"]))],
            **{key: torch.cat([p[key] for p in parts]) for key in ("keypoints", "ref", "pose")},
        }
        self._parts = []
        self.complete = True

    def __len__(self):
        return 0 if self._data is None else len(self._data["pose"])

    def num_batches(self, batch_size):
        return -(-len(self) // batch_size)

    def batches(self, batch_size, generator):
        """Yield dicts (features, keypoints, ref, pose) of ``batch_size`` samples in a random order."""
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size].to(self._data["pose"].device)
            yield {"features": [f[index] for f in self._data["features"]],
                   **{key: self._data[key][index] for key in ("keypoints", "ref", "pose")}}


def _set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr


def _log_line(path, text):
    with open(path, "a") as handle:
        handle.write(text + "\n")


def train(cfg, resume=None, device=None, trust_checkpoint=False):
    """Train the denoiser as configured; returns the path of ``best_<dataset>.bin`` (or latest).

    Args:
        cfg: Config.
        resume: a checkpoint written by this function (``latest_epoch.bin``) to
            continue from; None starts afresh (from the CA-PF context weights).
        device: torch.device; None initialises (distributed) from the environment.
        trust_checkpoint: unpickle the weight files fully, which can run code from
            them (see ``checkpoints.read_checkpoint``); only for trusted files.
    Returns:
        Path of the best checkpoint, or of ``latest_epoch.bin`` if validation is off.
    Raises:
        KeyboardInterrupt: after saving ``latest_epoch.bin`` on Ctrl-C or SIGTERM.
        FileNotFoundError: a weight file is missing.
        TrainingDivergedError: a non-finite loss or gradient without ``train.grad_clip``
            (nothing is saved, so the last good checkpoints stay).
    """
    check_config(cfg)
    device = distributed.resolve_device(device)
    paths = output_paths(cfg)
    main = distributed.is_main_process()
    rank, world = distributed.get_rank(), distributed.get_world_size()
    seed_everything(cfg.seed + rank)
    # Checked first, so that a -w naming a train/ folder fails before anything is loaded.
    val_shards = evaluation_shards(cfg.data.root, cfg.dataset, cfg.data.allow_train_split,
                                   "validation")[0] if cfg.train.validate_every else None

    backbone, denoiser = cfg.networks(device, trust_checkpoint)
    # Also when resuming: loading freezes the CA-PF parts, so the optimizer sees
    # the same parameters as in the run that wrote the checkpoint.
    if cfg.weights.pretrained_context:
        load_context_weights(denoiser, require_weight_file(cfg.context_weights, "context"), trust_checkpoint)
    else:
        log.warning("context weights: none loaded (weights.pretrained_context is false); the context "
                    "blocks start random and are trained")
    trainable = denoiser.trainable_parameters()
    optimizer = torch.optim.AdamW(trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    generator = torch.Generator(device).manual_seed(cfg.seed * 1000 + rank)

    state = _State()
    pending_rng = None
    if resume is not None:
        pending_rng = _restore(resume, denoiser, optimizer, generator, state, rank, world, trust_checkpoint)
        if state.epoch >= cfg.train.epochs:
            log.warning("%s has finished %d epochs and -e (train.epochs) is %d: nothing to train, nothing "
                        "written. To train further, give the total number of epochs, e.g. -e %d",
                        resume, state.epoch, cfg.train.epochs, state.epoch + 10)
            return paths.best if paths.best.is_file() else Path(resume)
    lr = optimizer.param_groups[0]["lr"]
    context_cache = None
    if cfg.train.context_cache != "off":
        context_cache = prepare_context_cache(cfg, backbone, denoiser, device, paths.checkpoint_dir, rank, world,
                                              progress=main)
    network = denoiser if context_cache is None else CachedContextDenoiser(denoiser)
    model = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None) \
        if distributed.is_distributed() else network
    scheduler = make_ddpm_scheduler(cfg.train.num_train_timesteps)
    loader = build_loader(cfg.data.root, cfg.dataset, train=True, batch_size=cfg.data.batch_size,
                          num_workers=cfg.data.num_workers, shuffle_buffer=cfg.data.shuffle_buffer,
                          max_samples=cfg.data.max_train_samples, skip_bad=cfg.data.skip_bad, seed=cfg.seed)
    val_loader = None
    if cfg.train.validate_every:
        val_loader = build_loader(val_shards, cfg.dataset, train=False, batch_size=cfg.data.eval_batch_size,
                                  num_workers=cfg.data.num_workers, max_samples=cfg.data.max_eval_samples,
                                  skip_bad=cfg.data.skip_bad, seed=cfg.seed)

    cache = FeatureCache() if cfg.train.cache_features else None
    writer = None
    if main:
        paths.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, paths.config)
        writer = SummaryWriter(str(paths.tensorboard))
        _log_line(paths.training_log, f"# {time.strftime('%Y-%m-%d %H:%M:%S')} "
                                      f"{'resumed from ' + str(resume) if resume else 'started'}; "
                                      f"{world} process(es), device {device}, "
                                      f"{sum(p.numel() for p in trainable)} trainable parameters")
        log.info("training %s for %d epochs into %s", cfg.dataset, cfg.train.epochs, paths.checkpoint_dir)

    def save(path, **extra):
        rng = distributed.all_gather_objects({"rng": rng_state(), "generator": generator.get_state()})
        if main:
            save_checkpoint(path, denoiser, optimizer, epoch=state.epoch, lr=lr, best_mpjpe=state.best,
                            step_in_epoch=state.step_in_epoch, global_step=state.global_step,
                            loss_sum=state.loss_sum, rng=rng, config=config_to_dict(cfg), **extra)
        distributed.barrier()
        saver.saved()

    saver = _TimedSaver(cfg.train.checkpoint_minutes)
    try:
        with sigterm_as_interrupt():
            while state.epoch < cfg.train.epochs:
                epoch = state.epoch
                backbone.eval()
                model.train()
                cached = cache is not None and cache.complete
                if context_cache is not None:
                    batches = context_cache.batches(cfg.data.batch_size,
                                                    context_cache.epoch_generator(cfg.seed, epoch, rank), device)
                    total = len(context_cache)
                elif cached:
                    order = torch.Generator().manual_seed((cfg.seed * 1000 + rank) * 100003 + epoch)
                    batches = cache.batches(cfg.data.batch_size, order)
                    total = len(cache)
                else:
                    loader.set_epoch(epoch)
                    batches = iter(loader)
                    total = samples_per_pass(loader)  # None (a bar without total) for remote shards
                skip = state.step_in_epoch
                for _ in range(skip):  # the batches an interrupted run already trained on
                    next(batches)
                if pending_rng is not None:
                    set_rng_state(pending_rng)
                    pending_rng = None
                start = time.time()
                done = skip * cfg.data.batch_size
                progress = tqdm(desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="sample", disable=not main,
                                dynamic_ncols=True, initial=done if total is None else min(done, total), total=total)
                join = model.join() if isinstance(model, DistributedDataParallel) else nullcontext()
                with join:
                    for batch in batches:
                        inputs = batch if cached or context_cache is not None else _prepare(batch, backbone, device)
                        if cache is not None and not cached:
                            cache.add(**inputs)
                        step_lr = lr * min(1.0, (state.global_step + 1) / cfg.train.warmup_steps) \
                            if cfg.train.warmup_steps else lr
                        _set_lr(optimizer, step_lr)
                        loss = _train_step(model, inputs, scheduler, optimizer, generator, cfg.train.grad_clip)
                        if loss is None:
                            _skip_nonfinite_step(denoiser, state, cfg.train.grad_clip)
                        else:
                            state.loss_sum += loss
                        state.step_in_epoch += 1
                        state.global_step += 1
                        progress.update(len(inputs["pose"]))
                        if saver.due():
                            save(paths.latest)
                        if loss is None:
                            continue
                        # The epoch's running mean, the quantity the epoch line logs (there averaged over processes).
                        progress.set_postfix(loss=f"{state.loss_sum / state.step_in_epoch:.6f}", lr=f"{lr:.4e}")
                        if writer is not None:
                            writer.add_scalar("train/loss", loss, state.global_step)
                if cache is not None and not cached:
                    cache.finish()
                    if main:
                        log.info("feature cache: %d samples in memory; later epochs skip decoding and the backbone",
                                 len(cache))
                steps = max(state.step_in_epoch, 1)
                epoch_loss = distributed.all_reduce_mean(state.loss_sum / steps)
                progress.set_postfix(loss=f"{epoch_loss:.6f}", lr=f"{lr:.4e}")
                progress.close()
                state.epoch += 1
                state.step_in_epoch = 0
                state.loss_sum = 0.0
                lr *= cfg.train.lr_decay
                _set_lr(optimizer, lr)
                line = (f"epoch {state.epoch:4d} | loss {epoch_loss:.6f} | next lr {lr:.4e} | "
                        f"{time.time() - start:.1f} s")
                skipped = sum(distributed.all_gather_objects(len(loader.skipped)))
                if skipped:
                    line += f" | {skipped} bad samples skipped"
                if state.skipped_steps:
                    line += f" | {state.skipped_steps} non-finite steps skipped"
                    state.skipped_steps = 0

                last = state.epoch == cfg.train.epochs
                every = cfg.train.validate_every
                if every and (state.epoch % every == 0 or last):
                    summary, _ = run_evaluation(
                        backbone, denoiser, val_loader, cfg.dataset, cfg.train.val_proposals,
                        cfg.train.val_timesteps, cfg.evaluation.flip_test, cfg.train.num_train_timesteps,
                        cfg.seed, desc=f"validate {state.epoch}", sampler=cfg.train.val_sampler)
                    summary = summary.summary()
                    value = summary[BEST_METRIC]
                    line += f" | val MPJPE (mean hyp.) {value:.2f} mm, P-MPJPE {summary['p_mpjpe_mean_hypothesis']:.2f} mm"
                    logged = ["mpjpe_mean_hypothesis", "mpjpe_best_pose_hypothesis", "p_mpjpe_mean_hypothesis"]
                    if cfg.dataset == "mpi":  # the dataset's own metrics, on its official 14 joints
                        line += (f", PCK {summary['pck14_mean_hypothesis']:.2f} %, "
                                 f"AUC {summary['auc14_mean_hypothesis']:.2f} %")
                        logged += ["pck14_mean_hypothesis", "auc14_mean_hypothesis"]
                    if writer is not None:
                        for name in logged:
                            writer.add_scalar(f"val/{name}", summary[name], state.epoch)
                    if value < state.best:
                        state.best = value
                        save(paths.best, val_metrics=summary)
                        line += " | best"
                if state.epoch % cfg.train.checkpoint_frequency == 0 or last:
                    save(paths.latest)
                if writer is not None:
                    writer.add_scalar("train/epoch_loss", epoch_loss, state.epoch)
                    writer.add_scalar("train/lr", lr, state.epoch)
                    writer.flush()
                if main:
                    _log_line(paths.training_log, line)
                    log.info(line)
    except KeyboardInterrupt:
        log.warning("interrupted in epoch %d after %d batches; saving %s",
                    state.epoch + 1, state.step_in_epoch, paths.latest)
        save(paths.latest, interrupted=True)
        if main:
            _log_line(paths.training_log, f"# interrupted in epoch {state.epoch + 1} after "
                                          f"{state.step_in_epoch} batches; saved {paths.latest}")
        raise
    finally:
        if writer is not None:
            writer.close()
    return paths.best if paths.best.is_file() else paths.latest


def _prepare(batch, backbone, device):
    """A loader batch -> the denoiser's training inputs, with the frozen backbone's features."""
    images = batch["image"].to(device, non_blocking=True)
    with torch.no_grad():
        features = backbone(images)
    return {"features": features,
            "keypoints": batch["keypoints_2d"].to(device)[:, None],  # (B, 1, 17, 2)
            "ref": batch["ref"].to(device),
            "pose": batch["keypoints_3d"].to(device)}


def _train_step(model, inputs, scheduler, optimizer, generator, grad_clip=None):
    """One optimisation step on prepared inputs (see ``_prepare``) or cached contexts.

    Returns:
        the loss as a float; None when the loss or the gradient is not finite,
        in which case the step is not taken (the gradients are dropped).
    """
    if "context" in inputs:
        loss = context_diffusion_loss(model, inputs["pose"], inputs["context"], scheduler, generator=generator)
    else:
        loss = diffusion_loss(model, inputs["pose"], inputs["keypoints"], inputs["ref"], inputs["features"],
                              scheduler, generator=generator)
    value = loss.item()
    # Checked before backward, which can crash the process outright on non-finite sampling offsets;
    # a NaN on any process makes the mean NaN, so all processes skip the backward pass together.
    if not math.isfinite(distributed.all_reduce_mean(value)):
        return None
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parameters = [p for p in model.parameters() if p.grad is not None]
    # The norm is of the gradients after DDP's all-reduce, so every process takes the same decision.
    if grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    return value


def _skip_nonfinite_step(denoiser, state, grad_clip):
    """Count a skipped step, or raise TrainingDivergedError when skipping cannot help (or is not enabled)."""
    where = f"epoch {state.epoch + 1}, batch {state.step_in_epoch + 1}"
    bad = [name for name, p in denoiser.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingDivergedError(
            f"training diverged in {where}: {len(bad)} weight tensors hold NaN or infinity (e.g. {bad[0]}); "
            "nothing was saved, the checkpoints on disk are from before. Lower the learning rate (-lr) and "
            "resume from latest_epoch.bin or start again")
    if grad_clip is None:
        raise TrainingDivergedError(
            f"training diverged in {where}: the loss or its gradient is NaN or infinite; the step was not "
            "taken and nothing was saved, the checkpoints on disk are from before. Lower the learning rate "
            "(-lr), or set train.grad_clip to skip such steps (they are counted in the log)")
    state.skipped_steps += 1
    log.warning("%s: non-finite loss or gradient, step skipped (train.grad_clip is set)", where)


class _TimedSaver:
    """Says when ``checkpoint_minutes`` have passed since the last save (on any process: all save together)."""

    def __init__(self, minutes):
        self.seconds = minutes * 60
        self.last = time.monotonic()

    def due(self):
        if not self.seconds:
            return False
        return distributed.all_reduce_mean(time.monotonic() - self.last >= self.seconds) > 0

    def saved(self):
        self.last = time.monotonic()


def _restore(path, denoiser, optimizer, generator, state, rank, world, trust_checkpoint=False):
    """Load a training checkpoint into the model, optimizer and state; returns the RNG state to set.

    The random states are set once the data iterator has been rebuilt (and, in
    an interrupted epoch, fast-forwarded), so that the run continues with
    exactly the draws it would have made.
    """
    checkpoint = load_snappose_weights(denoiser, path, trust_checkpoint)
    if checkpoint.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (ValueError, KeyError) as error:
            log.warning("the optimizer state in %s does not fit this model's trainable parameters (%s); "
                        "AdamW starts afresh, the weights, epoch and learning rate are restored", path, error)
    lr = checkpoint.get("lr")
    if lr is not None:
        _set_lr(optimizer, lr)
    state.epoch = int(checkpoint.get("epoch", 0))
    state.step_in_epoch = int(checkpoint.get("step_in_epoch", 0))
    state.global_step = int(checkpoint.get("global_step", 0))
    state.best = float(checkpoint.get("best_mpjpe", float("inf")))
    state.loss_sum = float(checkpoint.get("loss_sum", 0.0))
    log.info("resumed from %s: %d epochs done%s, lr %s, %s", path, state.epoch,
             f" (+{state.step_in_epoch} batches)" if state.step_in_epoch else "",
             "unknown" if lr is None else f"{lr:.4e}",
             f"best MPJPE {state.best:.2f} mm" if np.isfinite(state.best) else "no validation yet")
    saved = checkpoint.get("rng")
    if not saved:
        return None
    if len(saved) != world:
        log.warning("checkpoint %s was written by %d process(es), this run has %d: random states are not "
                    "restored, so the run will not repeat the original exactly", path, len(saved), world)
        return None
    generator.set_state(saved[rank]["generator"])
    return saved[rank]["rng"]
