"""Every cause the fuzzer found, as a named test (docs/safety.md lists them with their counts).

Each builds the smallest input of its cause by hand and checks the property
through ``harness.check_run``, so it fails again if that cause comes back.
"""
import pickle

import pytest
import seeds
from harness import Run, Sandbox, check_run, evil_pickle

from common.core.errors import BadInput, refuse


@pytest.fixture
def sandbox():
    box = Sandbox()
    yield box
    box.close()


def assert_holds(run, sandbox):
    result = check_run(run, sandbox, time_limit=120)
    assert result.violations == [], (result.violations, result.message)
    return result


def _config_run(path):
    from common.pipeline.config import ConfigError, load_config
    return Run(lambda: load_config(path, dataset="h36m"), names=(str(path),), expected=(ConfigError,))


@pytest.mark.parametrize("content", [
    "data:\n  root: caf\xe9\n".encode("latin-1"),  # not UTF-8: was a UnicodeDecodeError traceback
    "dataset: h36m\n".encode("utf-16"),
])
def test_a_config_that_is_not_utf8_is_refused_naming_the_file(sandbox, content):
    path = sandbox.inputs / "run.yaml"
    path.write_bytes(content)
    result = assert_holds(_config_run(path), sandbox)
    assert "not UTF-8" in result.message


@pytest.mark.parametrize("content", [b"[" * 100_000, b"a: " + b"[" * 100_000, b"- " * 100_000])
def test_a_config_nested_past_the_parser_is_refused_quickly(sandbox, content):
    # Was a RecursionError traceback, and PyYAML's Python scanner took minutes on deep flow nesting.
    path = sandbox.inputs / "run.yaml"
    path.write_bytes(content)
    result = assert_holds(_config_run(path), sandbox)
    assert result.seconds < 30


def test_a_yaml_syntax_error_is_one_line_with_its_position(sandbox):
    path = sandbox.inputs / "run.yaml"
    path.write_text("data:\n  root: [a, b\ntrain: {")
    result = assert_holds(_config_run(path), sandbox)
    assert "line" in result.message and "\n" not in result.message


def _annotations_run(path):
    from common.infer.inputs import InputError, read_annotations
    return Run(lambda: read_annotations(path), names=(str(path),), expected=(InputError,))


@pytest.mark.parametrize("cut", [0, 10, 100])
def test_a_truncated_keypoint_npz_is_refused(sandbox, cut):
    # Was an EOFError (empty file) or BadZipFile traceback.
    path = sandbox.inputs / "keypoints.npz"
    path.write_bytes(seeds.npz_bytes(seeds.keypoint_npz())[:cut])
    assert_holds(_annotations_run(path), sandbox)


def test_deeply_nested_annotation_json_is_refused(sandbox):
    path = sandbox.inputs / "keypoints.json"
    path.write_text("[" * 100_000)
    result = assert_holds(_annotations_run(path), sandbox)
    assert "nested too deeply" in result.message


def test_a_damaged_png_chunk_is_an_input_error(sandbox):
    # Pillow raises SyntaxError for a broken PNG chunk: it was a traceback.
    from common.infer.inputs import InputError, read_image
    data = bytearray(seeds.person_image("png"))
    data[37:41] = b"\x0c\x92\x1e_"  # the first IDAT chunk's type
    path = sandbox.inputs / "person.png"
    path.write_bytes(bytes(data))
    assert_holds(Run(lambda: read_image(path), names=(str(path),), expected=(InputError,)), sandbox)


@pytest.mark.parametrize("kind", ["folder", "under_a_file"])
def test_a_label_path_that_is_a_folder_or_under_a_file_is_refused(sandbox, kind):
    # Was IsADirectoryError / NotADirectoryError from open().
    from common.data.convert import ConversionError, _load_labels
    labels = sandbox.inputs / "h36m_train.pkl"
    labels.write_bytes(pickle.dumps(seeds.labels()))
    path = sandbox.inputs / "labels.pkl" if kind == "folder" else labels / "inner.pkl"
    if kind == "folder":
        path.mkdir()
    assert_holds(Run(lambda: _load_labels(path), names=(str(path),), expected=(ConversionError,)), sandbox)


def test_a_damaged_pickle_is_one_error_whatever_the_unpickler_trips_over():
    from common.core import safe_pickle
    for data in (b"\x80\x04K", b"\x80\x04]\x94(K\x01" + b"t" * 5, b"(" * 50 + b"l" * 49, b"\x80\x02c"):
        with pytest.raises(pickle.UnpicklingError):
            safe_pickle.loads(data)


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(sandbox):
    from common.data.convert import ConversionError, _load_labels
    path = sandbox.inputs / "h36m_train.pkl"
    path.write_bytes(evil_pickle(sandbox))
    assert_holds(Run(lambda: _load_labels(path), names=(str(path),), expected=(ConversionError,)), sandbox)


def test_convert_out_that_is_a_file_is_refused(sandbox):
    # Was a FileExistsError traceback from os.makedirs.
    from common.data.convert import main
    labels = sandbox.inputs / "h36m_train.pkl"
    labels.write_bytes(pickle.dumps(seeds.labels()))
    (sandbox.inputs / "images").mkdir()
    sandbox.out.mkdir()
    out = sandbox.out / "train"
    out.write_text("a file")
    argv = ["h36m", "--labels", str(labels), "--images", str(sandbox.inputs / "images"), "--out", str(out),
            "--workers", "0"]
    assert_holds(Run(lambda: main(argv), names=(str(out),)), sandbox)


def test_convert_names_the_shard_size_option_it_refuses(sandbox):
    from common.data.convert import main
    labels = sandbox.inputs / "h36m_train.pkl"
    labels.write_bytes(pickle.dumps(seeds.labels()))
    (sandbox.inputs / "images").mkdir()
    argv = ["h36m", "--labels", str(labels), "--images", str(sandbox.inputs / "images"), "--out",
            str(sandbox.out / "train"), "--shard-size", "0"]
    result = assert_holds(Run(lambda: main(argv), names=("--shard-size",)), sandbox)
    assert result.status == 2


@pytest.mark.parametrize("option", [["--workers", "0"], ["--samples-per-shard", "0"], ["--train", "-1"],
                                    ["--jpeg-quality", "0"], ["--noise-px", "nan"], ["--swap-rate", "2"]])
def test_synthetic_refuses_bad_numbers_in_one_line(sandbox, option):
    # Was a ValueError traceback from generate_dataset (or NaN noise written into the shards).
    from common.synthetic.world import main
    argv = ["--out", str(sandbox.out / "data"), "--train", "1", "--test", "1", "--workers", "1", *option]
    result = assert_holds(Run(lambda: main(argv), names=(option[0], option[0].lstrip("-").replace("-", "_"),
                                                        "NoiseOptions")), sandbox)
    assert result.status == 2


def test_synthetic_on_a_full_disk_says_so_and_leaves_no_part(sandbox):
    # Was a DiskFullError traceback.
    from common.synthetic.world import main
    out = str(sandbox.out / "data")
    argv = ["--out", out, "--train", "1", "--test", "1", "--workers", "1", "--samples-per-shard", "1"]
    result = assert_holds(Run(lambda: main(argv), names=(out,), disk_full=True), sandbox)
    assert result.status == 2 and "disk is full" in result.message


def test_analyze_out_that_is_a_file_is_refused(sandbox):
    from common.analysis.report import main
    path = sandbox.inputs / "predictions.npz"
    path.write_bytes(seeds.npz_bytes(seeds.predictions()))
    sandbox.out.mkdir()
    out = sandbox.out / "analysis"
    out.write_text("a file")
    result = assert_holds(Run(lambda: main([str(path), "--out", str(out)]), names=(str(out),)), sandbox)
    assert result.status == 2


def test_demo_with_a_config_it_refuses_exits_2_in_one_line(sandbox):
    # Was a ConfigError traceback: the demo caught nothing.
    from common.demo import main
    config = sandbox.inputs / "run.yaml"
    config.write_text("data:\n  MAX_TRAIN_SAMPLES: 2\n")
    argv = ["--config", str(config), "--data", str(sandbox.out / "data"), "--out", str(sandbox.out / "demo"),
            "--train-samples", "1", "--test-samples", "1", "--lift-images", "0"]
    result = assert_holds(Run(lambda: main(argv), names=(str(config),)), sandbox)
    assert result.status == 2


def test_refuse_prints_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    error = BadInput("config file x.yaml is not valid YAML\n  in line 3")
    assert refuse(error) == 2
    assert capsys.readouterr().err == "error: config file x.yaml is not valid YAML in line 3\n"
    monkeypatch.setenv("SNAPPOSE_DEBUG", "1")
    with pytest.raises(BadInput):
        refuse(error)


def test_the_commands_print_no_traceback_end_to_end(tmp_path):
    """A few real processes: what a user sees for malformed files is one line and exit status 2."""
    import subprocess
    import sys

    bad_yaml = tmp_path / "bad run.yaml"
    bad_yaml.write_bytes(b"[" * 100_000)
    bad_npz = tmp_path / "-predictions.npz"
    bad_npz.write_bytes(b"PK\x03\x04garbage")
    commands = [
        [sys.executable, "main_diffusers_h36m.py", "--config", str(bad_yaml), "-c", str(tmp_path / "out")],
        [sys.executable, "-m", "common.analyze", str(bad_npz), "--out", str(tmp_path / "analysis")],
        [sys.executable, "-m", "common.synthetic", "--out", str(tmp_path / "synthetic"), "--workers", "0"],
    ]
    for command in commands:
        done = subprocess.run(command, cwd=seeds.REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, (command, done.stderr[-500:])
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1].count("error") >= 1


def test_analyze_on_a_full_disk_says_so_and_leaves_no_part(sandbox):
    # Was a DiskFullError traceback: the command caught only FileNotFoundError and ValueError.
    from common.analysis.report import main
    path = sandbox.inputs / "predictions.npz"
    path.write_bytes(seeds.npz_bytes(seeds.predictions()))
    out = str(sandbox.out / "analysis")
    result = assert_holds(Run(lambda: main([str(path), "--out", out]), names=(out,), disk_full=True), sandbox)
    assert result.status == 2 and "disk is full" in result.message


def test_predictions_with_empty_ground_truth_are_refused_naming_the_file(sandbox):
    # Was numpy's "cannot reshape array of size 0" with no file name.
    from common.analysis.report import load_predictions
    arrays = seeds.predictions()
    arrays["ground_truth"] = arrays["ground_truth"][:0]
    path = sandbox.inputs / "predictions.npz"
    path.write_bytes(seeds.npz_bytes(arrays))
    assert_holds(Run(lambda: load_predictions(path), names=(str(path),), expected=(BadInput,)), sandbox)


def test_a_checkpoint_with_a_tensor_name_that_is_not_a_string_is_refused(sandbox):
    # Was an AttributeError traceback ('int' object has no attribute 'startswith').
    import torch

    from common.model.checkpoints import CheckpointError, load_snappose_weights
    path = sandbox.inputs / "best_h36m.bin"
    torch.save({"epoch": 1, "model_pos": {7: torch.zeros(2)}}, path)
    run = Run(lambda: load_snappose_weights(seeds.tiny_denoiser(), path), names=(str(path),),
              expected=(CheckpointError,))
    assert_holds(run, sandbox)


def test_a_shard_error_quoting_an_array_is_one_line():
    from common.data.samples import bad_sample
    error = bad_sample("shard-000.tar", "key", "pyd field 'center' is not numeric ([[1\n 2]])")
    assert "\n" not in str(error) and "shard-000.tar" in str(error)


@pytest.mark.parametrize("cut", range(20, 400, 7))
def test_a_gif_cut_at_any_byte_is_an_input_error(sandbox, cut):
    # Was an IndexError or struct.error traceback from Pillow's GIF reader.
    from common.infer.inputs import InputError, video_frames
    path = sandbox.inputs / "clip.gif"
    path.write_bytes(seeds.gif_bytes()[:cut])
    assert_holds(Run(lambda: list(video_frames(path)), names=(str(path),), expected=(InputError,)), sandbox)


def test_a_label_with_a_huge_integer_is_a_bad_label():
    # Was an OverflowError traceback (float() of 10**400).
    from common.data.convert import check_label
    label = seeds.labels()[0]
    label["subject"] = 10**400
    assert check_label(label)[0] == "bad_value"


def test_a_label_array_with_a_huge_integer_is_a_bad_label():
    # Was an OverflowError traceback (np.asarray of [10**400, ...] as float64), found by the seed-27 campaign.
    from common.data.convert import check_label
    label = seeds.labels()[0]
    label["center"] = [10**400, 1.0]
    assert check_label(label) == ("bad_value", "center is not numeric")
