"""Command targets: each command's ``main(argv)`` with hostile files, paths and option values.

Every command gets a tiny but real workload (``seeds.TINY``: a 32-wide model,
two samples, one epoch, one DDIM step), so a run the fuzzer lets through
finishes in seconds, and its output folder is drawn by ``hostile_folder``.
``COST`` says how many times slower than a reader a command's example is;
the campaign runs ``examples // COST`` of it.
"""
import shutil

import seeds
import yaml
from data_helpers import write_shard
from harness import Run
from hypothesis import strategies as st
from mutate import mutated_bytes
from targets import _npz, _torch, _write, _yaml, hostile_folder, hostile_path

# A count of work (epochs, samples, steps, processes) may be any valid number, and a huge one is a valid
# request for a long run, not a hang: those options get WORK, the others INTEGERS.
WORK = st.sampled_from(["-5", "-1", "0", "1", "2", "3", "x", "1.5", "nan", ""])
INTEGERS = st.one_of(WORK, st.just("9" * 30))
FLOATS = st.sampled_from(["-1", "0", "0.5", "1", "2", "nan", "inf", "-inf", "1e308", "x", ""])


def _tiny_config(data, sandbox, dataset, root):
    """A tiny run config naming ``root``; hostile (tree edits, damaged bytes, bad path) when drawn."""
    tree = {**seeds.TINY, "dataset": dataset, "data": {**seeds.TINY["data"], "root": str(root)}}
    if data.draw(st.booleans(), label="hostile config"):
        return hostile_path(data, sandbox, _write(data, sandbox, "run.yaml", tree, _yaml, text=True, evil=False))
    path = sandbox.inputs / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def _options(data, choices):
    """A few of ``choices`` ({flag: strategy of its value}) with hostile values."""
    flags = data.draw(st.lists(st.sampled_from(sorted(choices)), max_size=2, unique=True), label="options")
    argv = []
    for flag in flags:
        argv += [flag, data.draw(choices[flag], label=flag)]
    return argv


def _main_script(dataset, evaluate):
    def target(data, sandbox):
        import main_diffusers_h36m
        import main_diffusers_mpi

        main = main_diffusers_h36m.main if dataset == "h36m" else main_diffusers_mpi.main
        root = seeds.templates()[f"root_{dataset}"]
        config = _tiny_config(data, sandbox, dataset, root)
        out, disk_full = hostile_folder(data, sandbox, "checkpoint")
        argv = ["--config", config, "-c", out, "-e", "1", "--max-samples", "2", "-timesteps", "1",
                "-num_proposals", "2", "--validate-every", "0"]
        names = [config, out, "--config", "-c"]
        if evaluate:
            path = hostile_path(data, sandbox, _write(data, sandbox, "best.bin", seeds.checkpoint_tree(), _torch))
            argv += ["--evaluate", path]
            names += [path, "--evaluate"]
        argv += _options(data, {"-w": st.sampled_from([str(root), str(sandbox.inputs / "none"), str(sandbox.inputs)]),
                                "-e": WORK, "-b": WORK, "-lr": FLOATS, "--max-samples": WORK,
                                "-timesteps": WORK, "-num_proposals": WORK})
        names += ["-w", str(sandbox.inputs), "-e", "-b", "-lr", "--max-samples", "-timesteps", "-num_proposals",
                  "argument", "train.", "data.", "evaluation.", "epochs", "batch_size", "lr"]
        return Run(lambda: main(argv), names=tuple(names), disk_full=disk_full)
    return target


def command_infer(data, sandbox):
    from common.infer.cli import main

    kind = data.draw(st.sampled_from(["image", "gif", "folder"]), label="input")
    if kind == "folder":
        folder = sandbox.inputs / "photos"
        folder.mkdir()
        (folder / "person.png").write_bytes(seeds.person_image())
        source = str(folder)
    else:
        name, valid = ("person.png", seeds.person_image()) if kind == "image" else ("clip.gif", seeds.gif_bytes())
        path = sandbox.inputs / name
        path.write_bytes(data.draw(st.one_of(st.just(valid), mutated_bytes(valid)), label="input bytes"))
        source = hostile_path(data, sandbox, path)
    checkpoint = sandbox.inputs / "model" / "best_h36m.bin"
    checkpoint.parent.mkdir()
    shutil.copy(seeds.templates()["config"], checkpoint.parent / "config.yaml")
    if data.draw(st.booleans(), label="hostile checkpoint"):
        checkpoint = hostile_path(data, sandbox, _write(data, sandbox, "model/best_h36m.bin",
                                                        seeds.checkpoint_tree(), _torch))
    else:
        shutil.copy(seeds.templates()["checkpoint"], checkpoint)
    out, disk_full = hostile_folder(data, sandbox, "lifted")
    argv = [source, "--checkpoint", str(checkpoint), "--out", out, "-num_proposals", "2", "-timesteps", "1",
            "--device", "cpu", "--batch-size", "2"]
    names = [source, str(checkpoint), out, "input", "--checkpoint", "--out", "--keypoints", "--boxes", "--every",
             "--max-frames", "--batch-size", "--bbox"]
    if data.draw(st.booleans(), label="keypoint file"):
        from targets import _json
        fmt = data.draw(st.sampled_from(["ours", "coco_results", "mmpose"]), label="format")
        keypoints = hostile_path(data, sandbox, _write(data, sandbox, "keypoints.json",
                                                       seeds.annotation_files()[fmt], _json, text=True, evil=False))
        argv += ["--keypoints", keypoints]
        names.append(keypoints)
    argv += _options(data, {"--every": INTEGERS, "--max-frames": INTEGERS, "--batch-size": WORK,
                            "--visualize": st.just("--animate")})
    return Run(lambda: main(argv), names=tuple(names), disk_full=disk_full)


def command_analyze(data, sandbox):
    from common.analysis.report import main

    path = hostile_path(data, sandbox, _write(data, sandbox, "predictions.npz", seeds.predictions(), _npz))
    out, disk_full = hostile_folder(data, sandbox, "analysis")
    argv = [path, "--out", out] + _options(data, {"--dataset": st.sampled_from(["h36m", "mpi", "coco", ""])})
    return Run(lambda: main(argv), names=(path, out, "predictions", "--out", "--dataset"), disk_full=disk_full)


def command_convert_validate(data, sandbox):
    from common.data.convert import main

    root = sandbox.inputs / "dataset"
    shutil.copytree(seeds.templates()["root_h36m"], root)
    shard = root / "validation" / "data-000000.tar"
    damage = data.draw(st.sampled_from(["none", "bytes", "sample"]), label="shard damage")
    if damage == "bytes":
        shard.write_bytes(data.draw(mutated_bytes(shard.read_bytes()), label="shard bytes"))
    elif damage == "sample":
        sample = seeds.h36m_sample()
        pyd = _write(data, sandbox, "sample.pyd", sample["pyd"], seeds.pickle_bytes).read_bytes()
        write_shard(shard, [{**sample, "pyd": pyd}])
    target = data.draw(st.sampled_from([root, root / "validation", shard]), label="folder")
    path = hostile_path(data, sandbox, target) if data.draw(st.booleans(), label="hostile path") else str(target)
    return Run(lambda: main(["--validate", path]), names=(path, "--validate"), codes=(1,))


def command_convert_h36m(data, sandbox):
    from common.data.convert import frame_path, main, sample_key

    images = sandbox.inputs / "images"
    for label in seeds.labels():
        frame = frame_path(str(images), sample_key(label))
        seeds.Path(frame).parent.mkdir(parents=True, exist_ok=True)
        seeds.Path(frame).write_bytes(seeds.h36m_sample()["jpg"])
    labels = hostile_path(data, sandbox, _write(data, sandbox, "h36m_train.pkl", seeds.labels(), seeds.pickle_bytes))
    out, disk_full = hostile_folder(data, sandbox, "train")
    argv = ["h36m", "--labels", labels, "--images", str(images), "--out", out, "--workers", "0", "--split", "train"]
    argv += _options(data, {"--shard-size": INTEGERS, "--shard-bytes": INTEGERS, "--subjects": INTEGERS,
                            "--strict": st.just("--strict")})
    return Run(lambda: main(argv), names=(labels, out, "--labels", "--out", "--shard-size", "--shard-bytes",
                                          "--subjects", str(images)), disk_full=disk_full)


def command_synthetic(data, sandbox):
    from common.synthetic.world import main

    out, disk_full = hostile_folder(data, sandbox, "synthetic")
    argv = ["--out", out, "--train", "2", "--test", "1", "--workers", "1", "--samples-per-shard", "2"]
    argv += _options(data, {"--train": WORK, "--test": WORK, "--workers": WORK,
                            "--samples-per-shard": INTEGERS, "--noise-px": FLOATS, "--outlier-rate": FLOATS,
                            "--outlier-px": FLOATS, "--swap-rate": FLOATS, "--jpeg-quality": INTEGERS,
                            "--dataset": st.sampled_from(["h36m", "mpi", "coco"]),
                            "--visualize": st.sampled_from([f"{out}/sheet.png", f"{out}", f"{out}/a b/é.png"])})
    names = (out, "--out", "--train", "--test", "--workers", "--samples-per-shard", "--noise-px", "--outlier-rate",
             "--outlier-px", "--swap-rate", "--jpeg-quality", "--dataset", "--visualize")
    return Run(lambda: main(argv), names=names, disk_full=disk_full)


def command_demo(data, sandbox):
    from common.demo import main

    config = _tiny_config(data, sandbox, "h36m", sandbox.out / "data")
    out, disk_full = hostile_folder(data, sandbox, "demo")
    argv = ["--config", config, "--data", str(sandbox.out / "data"), "--out", out, "--train-samples", "2",
            "--test-samples", "2", "--epochs", "1", "--device", "cpu", "--lift-images", "0"]
    argv += _options(data, {"--train-samples": WORK, "--test-samples": WORK, "--epochs": WORK,
                            "--lift-images": st.sampled_from(["-1", "0", "1", "x"]), "--device": st.sampled_from(
                                ["cpu", "cuda:9", "tpu", ""]), "--data": st.sampled_from([config, out, ""])})
    names = (config, out, "--config", "--data", "--out", "--train-samples", "--test-samples", "--epochs",
             "--lift-images", "--device", "device", "data.", "train.", "evaluation.")
    return Run(lambda: main(argv), names=names, disk_full=disk_full)


COMMANDS = {
    "analyze": command_analyze, "convert_validate": command_convert_validate, "convert_h36m": command_convert_h36m,
    "synthetic": command_synthetic, "h36m_train": _main_script("h36m", False),
    "h36m_evaluate": _main_script("h36m", True), "mpi_train": _main_script("mpi", False),
    "mpi_evaluate": _main_script("mpi", True), "infer": command_infer, "demo": command_demo,
}
COST = {"analyze": 10, "convert_validate": 10, "convert_h36m": 10, "synthetic": 20, "h36m_train": 40,
        "h36m_evaluate": 40, "mpi_train": 40, "mpi_evaluate": 40, "infer": 40, "demo": 80}
