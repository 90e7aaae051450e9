"""Typed run configuration: dataclasses with the original's defaults, read from YAML.

A configuration file holds some or all of the sections below; whatever it leaves
out keeps its default. An unknown key anywhere is an error that names it and the
valid keys, so a typo never passes silently. Command-line flags override the
file (see ``common.run.cli``), and the resolved configuration is written beside the
checkpoints (``config.yaml``) so that every run can be repeated.

Example (the defaults of the original Human3.6M run)::

    dataset: h36m
    data: {root: webdataset/Human36m, batch_size: 128, num_workers: 4}
    weights: {backbone: null,    # null: search DEFAULT_BACKBONE_WEIGHTS
              context: null}     # null: the dataset's DEFAULT_CONTEXT_WEIGHTS
    train: {epochs: 50, lr: 6.0e-5, lr_decay: 0.993, weight_decay: 0.1}
    evaluation: {num_proposals: 20, timesteps: 20, flip_test: true}
"""
import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from common.core import layout
from common.core.errors import ConfigError
from common.core.reading import read_yaml
from common.core.skeleton import DATASETS
from common.model.acceleration import PRECISION_OPTIONS
from common.model.checkpoints import read_checkpoint
from common.model.networks import ModelConfig, build_networks
from common.model.samplers import SAMPLERS, SamplingConfig
from common.pipeline import original_config

# The released layout (common.core.layout). Searched in this order when weights.backbone is
# null: this project's place, then the one of the original README and code (checkpoint/posehrnet/).
DEFAULT_BACKBONE_WEIGHTS = (layout.BACKBONE_WEIGHTS, layout.ORIGINAL_BACKBONE_WEIGHTS)
DEFAULT_CONTEXT_WEIGHTS = layout.CONTEXT_WEIGHTS
# Used where a config leaves data.root / checkpoint null, so that one file serves both entry scripts.
DEFAULT_DATA_ROOTS = layout.DATA_ROOTS
DEFAULT_CHECKPOINT_DIRS = layout.CHECKPOINT_DIRS


@dataclass
class DataConfig:
    """Where the shards are and how they are read.

    root: dataset root holding ``train/`` and ``validation/`` (Human3.6M) or
        ``train/`` and ``test/`` (MPI-INF-3DHP); anything ``common.data.loader.find_shards``
        accepts. None: the dataset's ``DEFAULT_DATA_ROOTS`` entry.
    batch_size: training batch size per process (the original: 128).
    eval_batch_size: evaluation batch size per process (each sample is two views).
    num_workers: DataLoader worker processes per training/evaluation process.
    shuffle_buffer: WebDataset shuffle buffer (training only).
    max_train_samples / max_eval_samples: cap on samples per epoch / evaluation
        (None: all), for quick runs.
    skip_bad: skip malformed samples (counted and reported) instead of stopping.
    allow_train_split: let evaluation and validation score shards of a ``train``
        folder (refused otherwise, so that a wrong ``-w`` cannot pass training
        samples off as test results).
    """

    root: typing.Optional[str] = None
    batch_size: int = 128
    eval_batch_size: int = 64
    num_workers: int = 4
    shuffle_buffer: int = 1000
    max_train_samples: typing.Optional[int] = None
    max_eval_samples: typing.Optional[int] = None
    skip_bad: bool = False
    allow_train_split: bool = False


@dataclass
class WeightsConfig:
    """Pretrained weight files (the released layouts).

    backbone: PoseHRNet-W32 state dict; used when ``pretrained_backbone``.
        None: the first of ``DEFAULT_BACKBONE_WEIGHTS`` that exists.
    context: Context-Aware PoseFormer file whose context blocks the denoiser
        takes (and freezes); used when ``pretrained_context``. None: the
        dataset's default under ``checkpoint/``.
    pretrained_backbone / pretrained_context: False runs with random weights
        (synthetic data, tests); a warning says so.
    """

    backbone: typing.Optional[str] = None
    context: typing.Optional[str] = None
    pretrained_backbone: bool = True
    pretrained_context: bool = True


@dataclass
class TrainConfig:
    """DDPM training (defaults are the original's).

    epochs: number of epochs.
    lr: AdamW learning rate at epoch 0; multiplied by ``lr_decay`` after each epoch.
    weight_decay: AdamW weight decay.
    num_train_timesteps: diffusion steps T of the DDPM/DDIM schedulers.
    checkpoint_frequency: write ``latest_epoch.bin`` every this many epochs
        (and always after the last).
    validate_every: validate every this many epochs (and always after the
        last); 0 disables validation.
    val_timesteps: DDIM steps K during validation.
    val_proposals: hypotheses H during validation.
    val_sampler: sampler of validation (``common.model.samplers.SAMPLERS``; "ddim"
        is the original's); e.g. "dpm++" with val_timesteps 5 validates
        better at the same cost.
    warmup_steps: linear learning-rate warm-up over this many optimizer steps
        (0, the original: none).
    grad_clip: clip the gradient norm to this value (None, the original: no clipping).
        A step whose loss or gradient is not finite stops training with an
        error; with ``grad_clip`` set, such a step is skipped and counted instead.
    checkpoint_minutes: also write ``latest_epoch.bin`` within an epoch once
        this many minutes have passed since the last write, so that a killed
        run loses at most that much (resuming continues exactly); 0: only at
        epoch ends.
    cache_features: keep each training sample's backbone features, keypoints
        and target in memory after the first epoch and train later epochs from
        there (shuffled), skipping image decoding and the backbone. For small
        data sets (the synthetic demo); later epochs reuse each sample's
        first-epoch flip. Memory: 4 * sum(C_l h_l w_l) bytes per sample
        (0.74 MB at W32).
    context_cache: "off" (the original), "memory" or "disk": compute the
        frozen context (pose token and context blocks) of every training sample
        and both its views once, before the first epoch, and train every epoch
        from it without images or the backbone (see ``common.run.context_cache``;
        needs the CA-PF weights). "disk" also keeps it in ``<checkpoint>/context_cache/``
        (one part per shard) for resumed, interrupted and repeated runs.
    context_cache_draws: R, the contexts kept per sample and view. R >= 1 (default
        1): R draws of the frozen context blocks' stochastic depth, one read per
        epoch, so each epoch's context has the recipe's law; R times the size.
        0: the eval-mode context, without that stochastic depth (the same size as 1).
    context_cache_dtype: "float32" (the loss of the uncached path) or
        "bfloat16" (half the size, rounded).
    """

    epochs: int = 50
    lr: float = 6e-5
    lr_decay: float = 0.993
    weight_decay: float = 0.1
    num_train_timesteps: int = 100
    checkpoint_frequency: int = 1
    validate_every: int = 5
    val_timesteps: int = 5
    val_proposals: int = 20
    val_sampler: str = "ddim"
    warmup_steps: int = 0
    grad_clip: typing.Optional[float] = None
    checkpoint_minutes: float = 15.0
    cache_features: bool = False
    context_cache: str = "off"
    context_cache_draws: int = 1
    context_cache_dtype: str = "float32"


@dataclass
class EvalConfig:
    """Sampling and scoring at test time.

    num_proposals: hypotheses H drawn per sample.
    timesteps: sampling steps K (denoiser calls).
    flip_test: also run the horizontally flipped view and average per hypothesis.
    sampler: "ddim" (the paper's), "ddim-trailing", "dpm++" or "unipc"
        (``common.model.samplers``); the others reach DDIM's K = 20 quality in fewer steps.
    precision: "fp32" (the paper's), "bf16" or "fp16": autocast of backbone and
        denoiser (``common.model.acceleration``); "auto": bf16 where the device
        computes it natively, else fp32 (``acceleration.resolve_precision``).
    compile: run the denoising step through ``torch.compile``.
    save_predictions: npz path for keys, all hypotheses and ground truth (None: off).
    visualize: number of samples drawn as PNG figures (0: off).
    """

    num_proposals: int = 20
    timesteps: int = 20
    flip_test: bool = True
    sampler: str = "ddim"
    precision: str = "fp32"
    compile: bool = False
    save_predictions: typing.Optional[str] = None
    visualize: int = 0


@dataclass
class Config:
    """A whole run.

    dataset: "h36m" or "mpi".
    checkpoint: output directory (checkpoints, config.yaml, logs, metrics, figures);
        None: the dataset's ``DEFAULT_CHECKPOINT_DIRS`` entry.
    log: TensorBoard directory (None: ``<checkpoint>/logs``).
    device: "auto" (CUDA if present), "cpu", "cuda" or "cuda:N".
    seed: seeds Python, NumPy and torch (and the data order).
    """

    dataset: str = "h36m"
    checkpoint: typing.Optional[str] = None
    log: typing.Optional[str] = None
    device: str = "auto"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        validate(self)
        if self.data.root is None:
            self.data.root = DEFAULT_DATA_ROOTS[self.dataset]
        if self.checkpoint is None:
            self.checkpoint = DEFAULT_CHECKPOINT_DIRS[self.dataset]

    @property
    def context_weights(self):
        """The CA-PF weight file: the configured one or the dataset's default."""
        return self.weights.context or DEFAULT_CONTEXT_WEIGHTS[self.dataset]

    def sampling(self):
        """How evaluation samples (``evaluation.*``), as a ``SamplingConfig``."""
        e = self.evaluation
        return SamplingConfig(sampler=e.sampler, steps=e.timesteps, hypotheses=e.num_proposals,
                              precision=e.precision, compile=e.compile, flip=e.flip_test, seed=self.seed,
                              num_train_timesteps=self.train.num_train_timesteps)

    def validation_sampling(self):
        """How validation during training samples (``train.val_*``; fp32, eager, the evaluation's flip test)."""
        t = self.train
        return SamplingConfig(sampler=t.val_sampler, steps=t.val_timesteps, hypotheses=t.val_proposals,
                              flip=self.evaluation.flip_test, seed=self.seed,
                              num_train_timesteps=t.num_train_timesteps)

    def networks(self, device, trust_checkpoint=False, heatmap_joints=0):
        """The run's (backbone, denoiser) on ``device`` (``common.model.networks.build_networks``)."""
        weights = self.backbone_weights if self.weights.pretrained_backbone else None
        return build_networks(self.model, device, self.seed, weights, trust_checkpoint, heatmap_joints)

    @property
    def backbone_weights(self):
        """Where the PoseHRNet file may be, in search order: the configured one, else the defaults."""
        return (self.weights.backbone,) if self.weights.backbone else DEFAULT_BACKBONE_WEIGHTS


def _check_type(value, annotation, where):
    """Coerce ``value`` to ``annotation`` (int, float, str, bool, Optional, dataclass) or raise."""
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _check_type(value, args[0], where)
    if dataclasses.is_dataclass(annotation):
        return _from_dict(annotation, value, where)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        # YAML 1.1 reads "6e-5" (no dot) as a string; accept it as the number it means.
        try:
            return float(value)
        except ValueError:
            pass
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation in (str, bool) and isinstance(value, annotation):
        return value
    if annotation is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    raise ConfigError(f"config key '{where}': expected {getattr(annotation, '__name__', annotation)}, "
                      f"got {value!r} ({type(value).__name__})")


def _from_dict(cls, values, where=""):
    """Build dataclass ``cls`` from a (possibly partial) mapping, rejecting unknown keys."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{where or cls.__name__}': expected a mapping, "
                          f"got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{path}'; valid keys here: {', '.join(names)}")
        kwargs[key] = _check_type(value, hints[key], path)
    return cls(**kwargs)


def config_from_dict(values):
    """Build a :class:`Config` from a nested mapping (missing keys keep their defaults)."""
    return _from_dict(Config, values or {})


def load_config(path=None, overrides=None, dataset=None):
    """Read a YAML file (None: defaults only) and apply dotted ``overrides``.

    Args:
        path: YAML file.
        overrides: {"train.epochs": 2, "data.root": "...", ...}; applied after
            the file, each key validated like a file key.
        dataset: the dataset the caller (an entry script) works on; used where
            the file names none, and a file naming another one is an error.
    Returns:
        Config.
    Raises:
        ConfigError: missing file, bad YAML, unknown key, wrong type or value,
            or a dataset other than ``dataset``.

    A file in the original repository's format is read through
    ``common.pipeline.original_config`` (its meaningful keys mapped, the rest ignored
    with a warning); a file in this project's format is strict.
    """
    values = {}
    if path is not None:
        values = read_yaml(path, "config file", ConfigError,
                           "pass an existing YAML file to --config (examples are in config/)") or {}
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level, "
                              f"got {type(values).__name__}")
        if original_config.is_original_format(values):
            values = original_config.translate(values, str(path))
    if dataset is not None:
        named = values.setdefault("dataset", dataset)
        if named != dataset:
            raise ConfigError(f"config file {path} is for dataset '{named}' but this script trains "
                              f"and evaluates '{dataset}'; use the other entry script or another config")
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = values
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{name}' must be a section to set '{dotted}'")
        node[leaf] = value
    try:
        return config_from_dict(values)
    except ConfigError as error:
        if path is not None:
            raise ConfigError(f"{path}: {error}") from error
        raise


def resolve_config(checkpoint, config=None, trust_checkpoint=False):
    """The configuration a checkpoint was trained with.

    ``config`` (a Config or a YAML path) wins; else the one training stored in
    the checkpoint; else ``config.yaml`` beside it; else the defaults (the
    released model, which the released ``best_*.bin`` files need).
    """
    if isinstance(config, Config):
        return config
    if config is not None:
        return load_config(config)
    stored = read_checkpoint(checkpoint, trust_checkpoint).get("config")
    if isinstance(stored, dict):
        return config_from_dict(stored)
    beside = Path(checkpoint).with_name("config.yaml")
    if beside.is_file():
        return load_config(beside)
    return Config()


def config_to_dict(cfg):
    """Nested plain dict of a :class:`Config` (tuples as lists), ready for YAML or JSON."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value
    return plain(dataclasses.asdict(cfg))


def save_config(cfg, path):
    """Write the resolved configuration as YAML (loadable with :func:`load_config`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path


def validate(cfg):
    """Check value ranges; raise ConfigError naming the key, the value and what is allowed."""
    def need(condition, key, value, allowed):
        if not condition:
            raise ConfigError(f"config key '{key}' = {value!r} is invalid; expected {allowed}")

    need(cfg.dataset in DATASETS, "dataset", cfg.dataset, f"one of {', '.join(DATASETS)}")
    need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device) is not None,
         "device", cfg.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
    for key in ("batch_size", "eval_batch_size", "shuffle_buffer"):
        value = getattr(cfg.data, key)
        need(value >= 1, f"data.{key}", value, "an integer >= 1")
    need(cfg.data.num_workers >= 0, "data.num_workers", cfg.data.num_workers, "an integer >= 0")
    for key in ("max_train_samples", "max_eval_samples"):
        value = getattr(cfg.data, key)
        need(value is None or value >= 1, f"data.{key}", value, "null or an integer >= 1")
    t = cfg.train
    need(t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
    need(math.isfinite(t.lr) and t.lr > 0, "train.lr", t.lr, "a positive finite number")
    need(0 < t.lr_decay <= 1, "train.lr_decay", t.lr_decay, "a number in (0, 1]")
    need(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "a number >= 0")
    need(t.num_train_timesteps >= 1, "train.num_train_timesteps", t.num_train_timesteps, "an integer >= 1")
    need(t.checkpoint_frequency >= 1, "train.checkpoint_frequency", t.checkpoint_frequency, "an integer >= 1")
    need(t.validate_every >= 0, "train.validate_every", t.validate_every, "an integer >= 0")
    need(1 <= t.val_timesteps <= t.num_train_timesteps, "train.val_timesteps", t.val_timesteps,
         f"an integer in [1, num_train_timesteps={t.num_train_timesteps}]")
    need(t.val_proposals >= 1, "train.val_proposals", t.val_proposals, "an integer >= 1")
    need(t.val_sampler in SAMPLERS, "train.val_sampler", t.val_sampler, f"one of {', '.join(SAMPLERS)}")
    need(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, "an integer >= 0")
    need(t.grad_clip is None or (math.isfinite(t.grad_clip) and t.grad_clip > 0), "train.grad_clip", t.grad_clip,
         "null or a positive finite number")
    need(t.checkpoint_minutes >= 0, "train.checkpoint_minutes", t.checkpoint_minutes, "a number >= 0")
    need(t.context_cache in ("off", "memory", "disk"), "train.context_cache", t.context_cache,
         "'off', 'memory' or 'disk'")
    need(t.context_cache_dtype in ("float32", "bfloat16"), "train.context_cache_dtype", t.context_cache_dtype,
         "'float32' or 'bfloat16'")
    need(0 <= t.context_cache_draws <= 64, "train.context_cache_draws", t.context_cache_draws,
         "an integer in [0, 64] (0: the eval-mode context)")
    e = cfg.evaluation
    need(e.num_proposals >= 1, "evaluation.num_proposals", e.num_proposals, "an integer >= 1")
    need(1 <= e.timesteps <= t.num_train_timesteps, "evaluation.timesteps", e.timesteps,
         f"an integer in [1, num_train_timesteps={t.num_train_timesteps}]")
    need(e.sampler in SAMPLERS, "evaluation.sampler", e.sampler, f"one of {', '.join(SAMPLERS)}")
    need(e.precision in PRECISION_OPTIONS, "evaluation.precision", e.precision,
         f"one of {', '.join(PRECISION_OPTIONS)}")
    need(e.visualize >= 0, "evaluation.visualize", e.visualize, "an integer >= 0")


@dataclass(frozen=True)
class OutputPaths:
    """Where a run writes its files (under ``Config.checkpoint`` unless configured elsewhere).

    ``predictions`` is None when predictions are not saved.
    """

    checkpoint_dir: Path
    latest: Path
    best: Path
    config: Path
    training_log: Path
    tensorboard: Path
    metrics: Path
    predictions: typing.Optional[Path]
    figures: Path


def output_paths(cfg):
    """The files and folders a run with ``cfg`` writes: checkpoints, logs, metrics and figures."""
    root = Path(cfg.checkpoint)
    return OutputPaths(
        checkpoint_dir=root,
        latest=root / "latest_epoch.bin",
        best=root / f"best_{cfg.dataset}.bin",
        config=root / "config.yaml",
        training_log=root / "training_log.txt",
        tensorboard=Path(cfg.log) if cfg.log else root / "logs",
        metrics=root / "metrics.json",
        predictions=Path(cfg.evaluation.save_predictions) if cfg.evaluation.save_predictions else None,
        figures=root / "figures",
    )
