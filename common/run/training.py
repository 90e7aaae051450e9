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
import signal
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from common.data.counts import samples_per_pass
from common.data.loader import build_loader
from common.data.samples import device_images
from common.data.splits import evaluation_shards
from common.model.checkpoints import load_context_weights, load_snappose_weights, require_weight_file, save_checkpoint
from common.model.diffusion import diffusion_loss, make_ddpm_scheduler
from common.pipeline import SnapPosePipeline
from common.pipeline.config import config_to_dict, output_paths, save_config
from common.run import distributed
from common.run.context_cache import (
    CachedContextDenoiser,
    check_config,
    context_diffusion_loss,
    describe_mode,
    prepare_context_cache,
)
from common.run.evaluation import run_evaluation
from common.run.feature_cache import FeatureCache
from common.run.seeding import epoch_generator, rng_state, seed_everything, set_rng_state

log = logging.getLogger(__name__)

# The validation metric that decides ``best_<dataset>.bin`` (millimetres).
BEST_METRIC = "mpjpe_mean_hypothesis"


class TrainingDivergedError(RuntimeError):
    """A non-finite loss or gradient (or weights) stopped training; the checkpoints on disk are untouched."""


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
    run = TrainingRun(cfg, distributed.resolve_device(device), trust_checkpoint)
    if resume is not None and run.restore(resume):
        return run.paths.best if run.paths.best.is_file() else Path(resume)
    run.open(resume)
    return run.fit()


class TrainingRun:
    """The parts of one training run and its steps, in the order ``train`` calls them.

    Built: the networks (context weights loaded and frozen), AdamW and the training
    noise generator. ``restore`` loads a checkpoint; ``open`` builds the context cache,
    the loaders and the outputs; then per epoch ``train_epoch``, ``end_epoch``,
    ``validate`` and ``save_epoch``.
    """

    def __init__(self, cfg, device, trust_checkpoint=False):
        self.cfg, self.device, self.trust = cfg, device, trust_checkpoint
        self.paths = output_paths(cfg)
        self.main = distributed.is_main_process()
        self.rank, self.world = distributed.get_rank(), distributed.get_world_size()
        seed_everything(cfg.seed + self.rank)
        # Checked first, so that a -w naming a train/ folder fails before anything is loaded.
        self.val_shards = evaluation_shards(cfg.data.root, cfg.dataset, cfg.data.allow_train_split,
                                            "validation")[0] if cfg.train.validate_every else None
        self.backbone, self.denoiser = cfg.networks(device, trust_checkpoint)
        # Also when resuming: loading freezes the CA-PF parts, so the optimizer sees
        # the same parameters as in the run that wrote the checkpoint.
        if cfg.weights.pretrained_context:
            load_context_weights(self.denoiser, require_weight_file(cfg.context_weights, "context"),
                                 trust_checkpoint)
        else:
            log.warning("context weights: none loaded (weights.pretrained_context is false); the context "
                        "blocks start random and are trained")
        self.trainable = self.denoiser.trainable_parameters()
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.generator = torch.Generator(device).manual_seed(cfg.seed * 1000 + self.rank)
        self.state = _State()
        self.pending_rng = None
        self.writer = None
        self.saver = _TimedSaver(cfg.train.checkpoint_minutes)

    def fit(self):
        """Train the remaining epochs (validating and saving as configured); returns the best or latest path."""
        try:
            with sigterm_as_interrupt():
                while self.state.epoch < self.cfg.train.epochs:
                    epoch_loss, seconds = self.train_epoch()
                    line = self.end_epoch(epoch_loss, seconds)
                    if self.validation_due():
                        line += self.validate()
                    self.save_epoch(line, epoch_loss)
        except KeyboardInterrupt:
            self.save_interrupted()
            raise
        finally:
            self.close()
        return self.paths.best if self.paths.best.is_file() else self.paths.latest

    def restore(self, path):
        """Continue from a checkpoint; True when it has already trained every epoch (nothing to do)."""
        self.pending_rng = _restore(path, self.denoiser, self.optimizer, self.generator, self.state, self.rank,
                                    self.world, self.trust)
        if self.state.epoch < self.cfg.train.epochs:
            return False
        log.warning("%s has finished %d epochs and -e (train.epochs) is %d: nothing to train, nothing "
                    "written. To train further, give the total number of epochs, e.g. -e %d",
                    path, self.state.epoch, self.cfg.train.epochs, self.state.epoch + 10)
        return True

    def open(self, resume=None):
        """Build the context cache, the training model, the loaders and the outputs (main process)."""
        cfg, data = self.cfg, self.cfg.data
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.context_cache = None
        if cfg.train.context_cache != "off":
            self.context_cache = prepare_context_cache(cfg, self.backbone, self.denoiser, self.device,
                                                       self.paths.checkpoint_dir, self.rank, self.world,
                                                       progress=self.main)
        network = self.denoiser if self.context_cache is None else CachedContextDenoiser(self.denoiser)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = DistributedDataParallel(network, device_ids=device_ids) \
            if distributed.is_distributed() else network
        self.scheduler = make_ddpm_scheduler(cfg.train.num_train_timesteps)
        self.loader = build_loader(data.root, cfg.dataset, train=True, batch_size=data.batch_size,
                                   num_workers=data.num_workers, shuffle_buffer=data.shuffle_buffer,
                                   max_samples=data.max_train_samples, skip_bad=data.skip_bad, seed=cfg.seed)
        self.val_loader = None
        if cfg.train.validate_every:
            self.val_loader = build_loader(self.val_shards, cfg.dataset, train=False,
                                           batch_size=data.eval_batch_size, num_workers=data.num_workers,
                                           max_samples=data.max_eval_samples, skip_bad=data.skip_bad,
                                           seed=cfg.seed)
        self.cache = FeatureCache() if cfg.train.cache_features else None
        if self.main:
            self._open_outputs(resume)

    def _open_outputs(self, resume):
        paths = self.paths
        paths.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, paths.config)
        self.writer = SummaryWriter(str(paths.tensorboard))
        _log_line(paths.training_log, f"# {time.strftime('%Y-%m-%d %H:%M:%S')} "
                                      f"{'resumed from ' + str(resume) if resume else 'started'}; "
                                      f"{self.world} process(es), device {self.device}, "
                                      f"{sum(p.numel() for p in self.trainable)} trainable parameters; "
                                      f"{describe_mode(self.cfg.train.context_cache, self.cfg.train.context_cache_draws)}")
        log.info("training %s for %d epochs into %s", self.cfg.dataset, self.cfg.train.epochs, paths.checkpoint_dir)

    def _from_memory(self):
        """Whether this epoch's batches come from memory (a context cache or a filled feature cache)."""
        return self.context_cache is not None or (self.cache is not None and self.cache.complete)

    def _epoch_batches(self, epoch):
        """(iterator of this epoch's batches, number of samples or None)."""
        batch_size = self.cfg.data.batch_size
        order = epoch_generator(self.cfg.seed, epoch, self.rank)
        if self.context_cache is not None:
            return self.context_cache.batches(batch_size, order, self.device, epoch), len(self.context_cache)
        if self.cache is not None and self.cache.complete:
            return self.cache.batches(batch_size, order), len(self.cache)
        self.loader.set_epoch(epoch)
        return iter(self.loader), samples_per_pass(self.loader)  # None (a bar without total) for remote shards

    def _progress(self, epoch, total):
        done = self.state.step_in_epoch * self.cfg.data.batch_size
        return tqdm(desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}", unit="sample", disable=not self.main,
                    dynamic_ncols=True, initial=done if total is None else min(done, total), total=total)

    def train_epoch(self):
        """Train one epoch (the rest of it, when resumed mid-epoch); returns (mean loss over processes, seconds)."""
        epoch = self.state.epoch
        self.backbone.eval()
        self.model.train()
        from_memory = self._from_memory()
        batches, total = self._epoch_batches(epoch)
        for _ in range(self.state.step_in_epoch):  # the batches an interrupted run already trained on
            next(batches)
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None
        start = time.time()
        progress = self._progress(epoch, total)
        join = self.model.join() if isinstance(self.model, DistributedDataParallel) else nullcontext()
        with join:
            for batch in batches:
                inputs = batch if from_memory else _prepare(batch, self.backbone, self.device)
                if self.cache is not None and not from_memory:
                    self.cache.add(**inputs)
                self._step(inputs, progress)
        if self.cache is not None and not from_memory:
            self.cache.finish()
            if self.main:
                log.info("feature cache: %d samples in memory; later epochs skip decoding and the backbone",
                         len(self.cache))
        epoch_loss = distributed.all_reduce_mean(self.state.loss_sum / max(self.state.step_in_epoch, 1))
        progress.set_postfix(loss=f"{epoch_loss:.6f}", lr=f"{self.lr:.4e}")
        progress.close()
        return epoch_loss, time.time() - start

    def _step(self, inputs, progress):
        """One batch: warm-up learning rate, the optimisation step, counters, timed save, progress and logs."""
        state, train = self.state, self.cfg.train
        step_lr = self.lr * min(1.0, (state.global_step + 1) / train.warmup_steps) if train.warmup_steps else self.lr
        _set_lr(self.optimizer, step_lr)
        loss = _train_step(self.model, inputs, self.scheduler, self.optimizer, self.generator, train.grad_clip)
        if loss is None:
            _skip_nonfinite_step(self.denoiser, state, train.grad_clip)
        else:
            state.loss_sum += loss
        state.step_in_epoch += 1
        state.global_step += 1
        progress.update(len(inputs["pose"]))
        if self.saver.due():
            self.save(self.paths.latest)
        if loss is None:
            return
        # The epoch's running mean, the quantity the epoch line logs (there averaged over processes).
        progress.set_postfix(loss=f"{state.loss_sum / state.step_in_epoch:.6f}", lr=f"{self.lr:.4e}")
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, state.global_step)

    def end_epoch(self, epoch_loss, seconds):
        """Count the epoch, decay the learning rate; returns the start of the epoch's log line."""
        state = self.state
        state.epoch += 1
        state.step_in_epoch = 0
        state.loss_sum = 0.0
        self.lr *= self.cfg.train.lr_decay
        _set_lr(self.optimizer, self.lr)
        line = f"epoch {state.epoch:4d} | loss {epoch_loss:.6f} | next lr {self.lr:.4e} | {seconds:.1f} s"
        skipped = sum(distributed.all_gather_objects(len(self.loader.skipped)))
        if skipped:
            line += f" | {skipped} bad samples skipped"
        if state.skipped_steps:
            line += f" | {state.skipped_steps} non-finite steps skipped"
            state.skipped_steps = 0
        return line

    def validation_due(self):
        every = self.cfg.train.validate_every
        return bool(every) and (self.state.epoch % every == 0 or self.state.epoch == self.cfg.train.epochs)

    def validate(self):
        """Evaluate on the validation split, save ``best_<dataset>.bin`` if better; returns the log line's part."""
        cfg, state = self.cfg, self.state
        self.denoiser.eval()  # train_epoch puts it back in train mode
        pipeline = SnapPosePipeline(self.backbone, self.denoiser, cfg.validation_sampling(), self.device, cfg)
        summary, _ = run_evaluation(pipeline, self.val_loader, cfg.dataset, desc=f"validate {state.epoch}")
        summary = summary.summary()
        value = summary[BEST_METRIC]
        line = f" | val MPJPE (mean hyp.) {value:.2f} mm, P-MPJPE {summary['p_mpjpe_mean_hypothesis']:.2f} mm"
        logged = ["mpjpe_mean_hypothesis", "mpjpe_best_pose_hypothesis", "p_mpjpe_mean_hypothesis"]
        if cfg.dataset == "mpi":  # the dataset's own metrics, on its official 14 joints
            line += f", PCK {summary['pck14_mean_hypothesis']:.2f} %, AUC {summary['auc14_mean_hypothesis']:.2f} %"
            logged += ["pck14_mean_hypothesis", "auc14_mean_hypothesis"]
        if self.writer is not None:
            for name in logged:
                self.writer.add_scalar(f"val/{name}", summary[name], state.epoch)
        if value < state.best:
            state.best = value
            self.save(self.paths.best, val_metrics=summary)
            line += " | best"
        return line

    def save_epoch(self, line, epoch_loss):
        """Write ``latest_epoch.bin`` when due, the epoch's scalars and its log line."""
        epoch = self.state.epoch
        if epoch % self.cfg.train.checkpoint_frequency == 0 or epoch == self.cfg.train.epochs:
            self.save(self.paths.latest)
        if self.writer is not None:
            self.writer.add_scalar("train/epoch_loss", epoch_loss, epoch)
            self.writer.add_scalar("train/lr", self.lr, epoch)
            self.writer.flush()
        if self.main:
            _log_line(self.paths.training_log, line)
            log.info(line)

    def save(self, path, **extra):
        """Write a checkpoint with everything resuming needs (every process takes part)."""
        state = self.state
        rng = distributed.all_gather_objects({"rng": rng_state(), "generator": self.generator.get_state()})
        if self.main:
            save_checkpoint(path, self.denoiser, self.optimizer, epoch=state.epoch, lr=self.lr,
                            best_mpjpe=state.best, step_in_epoch=state.step_in_epoch,
                            global_step=state.global_step, loss_sum=state.loss_sum, rng=rng,
                            config=config_to_dict(self.cfg), **extra)
        distributed.barrier()
        self.saver.saved()

    def save_interrupted(self):
        state, latest = self.state, self.paths.latest
        log.warning("interrupted in epoch %d after %d batches; saving %s", state.epoch + 1, state.step_in_epoch,
                    latest)
        self.save(latest, interrupted=True)
        if self.main:
            _log_line(self.paths.training_log, f"# interrupted in epoch {state.epoch + 1} after "
                                               f"{state.step_in_epoch} batches; saved {latest}")

    def close(self):
        if self.writer is not None:
            self.writer.close()


def _prepare(batch, backbone, device):
    """A loader batch -> the denoiser's training inputs, with the frozen backbone's features."""
    images = device_images(batch, device, test=False)
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
