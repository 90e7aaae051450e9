"""Command line shared by ``main_diffusers_h36m.py`` and ``main_diffusers_mpi.py``.

The original flags keep their spellings and meanings, so the original README's
commands run unchanged, e.g.::

    python main_diffusers_h36m.py --config config/human36m_train.yaml -c checkpoint/human36m \\
        -w webdataset/Human36m --evaluate best_h36m.bin -num_proposals 20 -timesteps 20

Precedence: defaults < ``--config`` YAML < flags given on the command line.
"""
import argparse
import logging
from contextlib import contextmanager
from pathlib import Path

from common.core.errors import BadInput, one_line, refuse
from common.core.files import DiskFullError
from common.core.layout import find_released
from common.model.acceleration import PRECISION_OPTIONS
from common.model.samplers import SAMPLERS
from common.pipeline.config import load_config, output_paths
from common.run import distributed
from common.run.runlock import RunLockError, check_output_dir, run_lock

DATASET_TITLES = {"h36m": "Human3.6M", "mpi": "MPI-INF-3DHP"}

# Flag destination -> dotted config key; flags left at None do not override the config.
FLAG_TO_CONFIG = {
    "checkpoint": "checkpoint",
    "checkpoint_frequency": "train.checkpoint_frequency",
    "log": "log",
    "epochs": "train.epochs",
    "learning_rate": "train.lr",
    "lr_decay": "train.lr_decay",
    "num_proposals": "evaluation.num_proposals",
    "timesteps": "evaluation.timesteps",
    "webdataset_path": "data.root",
    "seed": "seed",
    "backbone_weights": "weights.backbone",
    "context_weights": "weights.context",
    "device": "device",
    "batch_size": "data.batch_size",
    "eval_batch_size": "data.eval_batch_size",
    "num_workers": "data.num_workers",
    "validate_every": "train.validate_every",
    "val_timesteps": "train.val_timesteps",
    "val_proposals": "train.val_proposals",
    "save_predictions": "evaluation.save_predictions",
    "visualize": "evaluation.visualize",
    "context_cache": "train.context_cache",
    "context_cache_draws": "train.context_cache_draws",
    "sampler": "evaluation.sampler",
    "precision": "evaluation.precision",
    "val_sampler": "train.val_sampler",
}


def build_parser(dataset):
    """The argument parser of the entry script for ``dataset`` ("h36m" or "mpi")."""
    title = DATASET_TITLES[dataset]
    parser = argparse.ArgumentParser(
        prog=f"main_diffusers_{dataset}.py", allow_abbrev=False,
        description=f"Train SnapPose on {title}, or evaluate a checkpoint with --evaluate.")
    original = parser.add_argument_group("flags of the original implementation")
    original.add_argument("--config", help="YAML run configuration (see config/)")
    original.add_argument("-c", "--checkpoint", metavar="DIR",
                          help="directory for checkpoints, config, logs, metrics and figures (with --evaluate: "
                               "default the evaluated checkpoint's folder)")
    original.add_argument("-cf", "--checkpoint-frequency", type=int, metavar="N",
                          help="write latest_epoch.bin every N epochs")
    original.add_argument("-l", "--log", metavar="DIR", help="TensorBoard directory (default: <checkpoint>/logs)")
    original.add_argument("-r", "--resume", metavar="FILE",
                          help="resume training from FILE (a path, or a name inside the -c directory)")
    original.add_argument("--evaluate", metavar="FILE",
                          help="evaluate FILE (a path, or a name inside the -c directory) instead of training")
    original.add_argument("--visualize", type=int, nargs="?", const=8, metavar="N",
                          help="draw PNG figures of the first N evaluated samples (default N: 8)")
    original.add_argument("-e", "--epochs", type=int, metavar="N", help="number of training epochs")
    original.add_argument("-lr", "--learning-rate", type=float, metavar="LR", help="initial learning rate")
    original.add_argument("-lrd", "--lr-decay", type=float, metavar="F", help="learning-rate factor per epoch")
    original.add_argument("-num_proposals", "--num-proposals", dest="num_proposals", type=int, metavar="H",
                          help="hypotheses per sample at evaluation")
    original.add_argument("-timesteps", "--timesteps", dest="timesteps", type=int, metavar="K",
                          help="DDIM steps at evaluation")
    original.add_argument("-s", "--save", action="store_true",
                          help="save predictions to <checkpoint>/predictions/ (created if missing)")
    original.add_argument("-w", "--webdataset_path", "--webdataset-path", dest="webdataset_path", metavar="DIR",
                          help="dataset root with train/ and "
                               + ("validation/" if dataset == "h36m" else "test/") + " shards")
    original.add_argument("-seed", "--seed", dest="seed", type=int, help="random seed")

    new = parser.add_argument_group("further options")
    new.add_argument("--backbone-weights", metavar="FILE",
                     help="PoseHRNet-W32 weights (default: checkpoint/pose_hrnet_w32_256x192.pth, else "
                          "checkpoint/posehrnet/pose_hrnet_w32_256x192.pth as in the original)")
    new.add_argument("--context-weights", metavar="FILE",
                     help="Context-Aware PoseFormer weights (default: checkpoint/"
                          + ("human36m_nips_retrain.bin" if dataset == "h36m" else "mpi-inf_nips_retrain.bin") + ")")
    new.add_argument("--device", help="'auto' (default), 'cpu', 'cuda' or 'cuda:N'")
    new.add_argument("-b", "--batch-size", type=int, metavar="N", help="training batch size per process")
    new.add_argument("--eval-batch-size", type=int, metavar="N", help="evaluation batch size per process")
    new.add_argument("-j", "--num-workers", type=int, metavar="N", help="data-loading workers per process")
    new.add_argument("--max-samples", type=int, metavar="N",
                     help="use at most N samples per epoch and per evaluation (quick runs)")
    new.add_argument("--validate-every", type=int, metavar="N", help="validate every N epochs (0: never)")
    new.add_argument("--val-timesteps", type=int, metavar="K", help="DDIM steps during validation")
    new.add_argument("--val-proposals", type=int, metavar="H", help="hypotheses during validation")
    new.add_argument("--sampler", choices=SAMPLERS,
                     help="sampler at evaluation (default: ddim, the paper's; dpm++ or unipc at -timesteps 5 "
                          "match it in a quarter of the steps, see docs/evaluation.md, 'Faster evaluation')")
    new.add_argument("--precision", choices=PRECISION_OPTIONS,
                     help="autocast precision of backbone and denoiser at evaluation (default: fp32, the paper's; "
                          "auto: bf16 where the device computes it natively, else fp32)")
    new.add_argument("--compile", action="store_true", default=None,
                     help="compile the denoising step with torch.compile at evaluation")
    new.add_argument("--val-sampler", choices=SAMPLERS, help="sampler during validation (default: ddim)")
    new.add_argument("--save-predictions", metavar="FILE.npz",
                     help="write keys, all hypotheses and ground truth to FILE.npz")
    new.add_argument("--no-flip-test", action="store_true", help="evaluate the original view only")
    new.add_argument("--context-cache", choices=("off", "memory", "disk"),
                     help="train from the frozen context computed once per sample and view, without images "
                          "or the backbone (needs the CA-PF weights; 'disk' keeps it in the -c directory)")
    new.add_argument("--context-cache-draws", type=int, metavar="R",
                     help="contexts kept per sample and view: 0 the eval-mode context (no stochastic depth of "
                          "the frozen blocks), R >= 1 draws of it, one read per epoch (docs/training.md)")
    new.add_argument("--skip-bad", action="store_true",
                     help="skip malformed samples (counted and reported) instead of stopping")
    new.add_argument("--allow-train-split", action="store_true",
                     help="let --evaluate and validation score shards of a train/ folder (refused otherwise)")
    new.add_argument("--trust-checkpoint", action="store_true",
                     help="unpickle weight files fully, which lets them run code: only for files from a source "
                          "you trust that are refused otherwise")
    return parser


def overrides_from_args(args):
    """Dotted config overrides for the flags that were given."""
    overrides = {key: getattr(args, dest) for dest, key in FLAG_TO_CONFIG.items()
                 if getattr(args, dest) is not None}
    if args.max_samples is not None:
        overrides["data.max_train_samples"] = args.max_samples
        overrides["data.max_eval_samples"] = args.max_samples
    if args.no_flip_test:
        overrides["evaluation.flip_test"] = False
    if args.skip_bad:
        overrides["data.skip_bad"] = True
    if args.allow_train_split:
        overrides["data.allow_train_split"] = True
    if args.compile:
        overrides["evaluation.compile"] = True
    return overrides


def resolve_checkpoint_file(name, checkpoint_dir, flag):
    """A file given to --evaluate / --resume: an existing path, else a name inside ``checkpoint_dir``.

    A released file missing from a released folder is also looked for where older
    instructions put it (``common.core.layout.find_released``), with a note.
    """
    path = Path(name)
    if path.is_file():
        return path
    inside = find_released(Path(checkpoint_dir) / name)
    if inside.is_file():
        return inside
    folder = next((p for p in (path, inside) if p.is_dir()), None)
    if folder is not None:
        raise FileNotFoundError(f"{flag} {name}: {folder} is a folder, expected a checkpoint file "
                                f"(e.g. {folder / 'best_h36m.bin'})")
    raise FileNotFoundError(f"{flag} {name}: no such file, neither as given nor as {inside}; "
                            f"pass an existing SnapPose checkpoint (e.g. best_h36m.bin, latest_epoch.bin) "
                            f"or the -c directory that holds it")


@contextmanager
def _output_lock(cfg, purpose):
    """Lock ``-c`` for ``purpose`` and check the other output folders (main process only), before any work."""
    if not distributed.is_main_process():
        yield
        return
    paths = output_paths(cfg)
    with run_lock(paths.checkpoint_dir, purpose):
        if purpose == "training":
            check_output_dir(paths.tensorboard, "TensorBoard folder (-l)")
        elif paths.predictions is not None:
            if paths.predictions.is_dir():
                raise RunLockError(f"--save-predictions {paths.predictions} is a folder, expected a file name "
                                   f"(e.g. {paths.predictions / 'predictions.npz'})")
            check_output_dir(paths.predictions.parent, "predictions folder (-s / --save-predictions)")
        yield


def main(dataset, argv=None):
    """Parse ``argv`` and train or evaluate on ``dataset`` ("h36m" or "mpi").

    Returns:
        Process exit status: 0 on success, 1 when training diverged (non-finite
        loss or gradient), 2 for bad configuration, missing or refused files,
        bad shards (see --skip-bad) or an output folder in use or not writable,
        130 after an interruption (latest_epoch.bin saved).
    """
    parser = build_parser(dataset)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("snappose")
    try:
        cfg = load_config(args.config, overrides_from_args(args), dataset=dataset)
        evaluate_file = resolve_checkpoint_file(args.evaluate, cfg.checkpoint, "--evaluate") if args.evaluate else None
        resume_file = resolve_checkpoint_file(args.resume, cfg.checkpoint, "--resume") if args.resume else None
    except (BadInput, FileNotFoundError) as error:
        parser.error(one_line(error))
    if evaluate_file is not None and args.checkpoint is None:
        # Metrics, figures and predictions belong beside the checkpoint they describe, not in
        # a folder that the config's (often relative) checkpoint path makes in the current directory.
        cfg.checkpoint = str(evaluate_file.parent)
    save_ignored = None
    if args.save:
        saved = Path(cfg.checkpoint) / "predictions" / f"predictions_{dataset}.npz"
        if cfg.evaluation.save_predictions is None:
            cfg.evaluation.save_predictions = str(saved)
        else:
            save_ignored = (f"-s: predictions go to {cfg.evaluation.save_predictions}, the file that "
                            f"--save-predictions (or the config) names, and not also to {saved}")

    # Imported here so that --help and configuration errors answer without loading the model code.
    from common.run.evaluation import evaluate
    from common.run.training import TrainingDivergedError, train

    device = distributed.init_distributed(cfg.device)
    if not distributed.is_main_process():
        # Rank 0 speaks for all; the others report errors only, library warnings included.
        logging.captureWarnings(True)
        logging.getLogger().setLevel(logging.ERROR)
    if save_ignored:
        log.warning("%s", save_ignored)
    trust = args.trust_checkpoint
    try:
        with _output_lock(cfg, "evaluation" if evaluate_file is not None else "training"):
            if evaluate_file is not None:
                evaluate(cfg, evaluate_file, device=device, trust_checkpoint=trust)
            else:
                train(cfg, resume=resume_file, device=device, trust_checkpoint=trust)
    except KeyboardInterrupt:
        log.warning("interrupted; resume with -r latest_epoch.bin -c %s", cfg.checkpoint)
        return 130
    except (BadInput, FileNotFoundError, RunLockError, DiskFullError) as error:
        return refuse(error, log)
    except TrainingDivergedError as error:
        log.error("%s", error)
        return 1
    finally:
        distributed.cleanup_distributed()
    return 0


def h36m(argv=None):
    """``snappose-train-h36m``: the command line of ``main_diffusers_h36m.py``."""
    return main("h36m", argv)


def mpi(argv=None):
    """``snappose-train-mpi``: the command line of ``main_diffusers_mpi.py``."""
    return main("mpi", argv)
