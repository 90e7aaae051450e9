"""What the command lines print: help texts, --validate on a dataset root, skipped synthetic shards,
the demo's verdict and timing, the resume line, and MPI's validation metrics."""
import logging
import re

import pytest
import torch
from data_helpers import write_split
from model_fixtures import single_thread  # noqa: F401

import main_diffusers_h36m
from benchmarks import sampling
from common import demo
from common.data import convert
from common.synthetic import world as synthetic


def _help(main, prefix=()):
    with pytest.raises(SystemExit) as exit_info:
        main([*prefix, "--help"])
    assert exit_info.value.code == 0


def _options_without_help(text):
    """Option entries of an argparse help text that carry no description."""
    entries = []
    for line in text.splitlines():
        if re.match(r"^  -", line):
            entries.append([line.strip()])
        elif entries and entries[-1] is not None and line.startswith("      "):
            entries[-1].append(line.strip())
        elif not line.strip() or not line.startswith(" "):
            entries.append(None)  # a section boundary ends the entry
    return [e[0] for e in entries if e is not None and len(e) == 1 and not re.search(r"\S {2,}\S", e[0])]


@pytest.mark.parametrize("main,usage", [
    (demo.main, "usage: python -m common.demo"),
    (synthetic.main, "usage: python -m common.synthetic"),
    (convert.main, "usage: python -m common.convert"),
    (sampling.main, "usage: python -m benchmarks.sampling"),
    (main_diffusers_h36m.main, "usage: main_diffusers_h36m.py"),
])
def test_help_names_the_command_and_documents_every_option(main, usage, capsys):
    _help(main)
    text = capsys.readouterr().out
    assert text.startswith(usage)
    assert "(default: None)" not in text and "(default: the config's) (default" not in text
    assert _options_without_help(text) == []


def test_convert_help_shows_the_h36m_options(capsys):
    _help(convert.main)
    text = capsys.readouterr().out
    assert "--labels LABELS" in text and "--shard-size SHARD_SIZE" in text and "(default: 10000)" in text


def test_validate_a_dataset_root_checks_every_split(tmp_path, capsys):
    write_split(tmp_path / "train", "mpi", [2, 1])
    write_split(tmp_path / "test", "mpi", [2])
    assert convert.main(["--validate", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"{tmp_path / 'train'}: 3 samples in 2 shards, 0 failures" in printed
    assert f"{tmp_path / 'test'}: 2 samples in 1 shards, 0 failures" in printed
    # An empty folder is still an error, and it says what it found.
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert convert.main(["--validate", str(tmp_path / "empty")]) == 2
    assert "name one of them" in capsys.readouterr().err


def test_synthetic_generator_says_it_skipped_existing_shards(tmp_path, caplog):
    settings = dict(dataset="mpi", num_train=1, num_test=1, samples_per_shard=1, workers=1, progress=False)
    synthetic.generate_dataset(tmp_path, **settings)
    with caplog.at_level(logging.INFO, logger="common.synthetic.world"):
        synthetic.generate_dataset(tmp_path, **settings)
    assert "skipped, the shards in" in caplog.text and "--force" in caplog.text


def test_demo_verdict_says_worse_plainly_and_times_each_stage():
    assert "WORSE than the baseline" in demo.verdict(1.89)
    assert "better than the baseline" in demo.verdict(0.7) and "WORSE" not in demo.verdict(0.7)
    assert "learned to lift" in demo.verdict(0.43)
    assert demo.timing_line([("data", 3.2), ("training", 40.4), ("evaluation", 5.6)]) == \
        "time: data 3 s, training 40 s, evaluation 6 s; in all 49 s"


def test_resume_line_and_mpi_validation_metrics(tiny_config, tmp_path, caplog, single_thread):
    from common.run.training import train

    ck = tmp_path / "mpi"
    train(tiny_config(ck, dataset="mpi", train__epochs=1, train__validate_every=0), device=torch.device("cpu"))
    cfg = tiny_config(ck, dataset="mpi", train__epochs=2, train__validate_every=1)
    with caplog.at_level(logging.INFO, logger="common.run.training"):
        train(cfg, resume=ck / "latest_epoch.bin", device=torch.device("cpu"))
    resumed = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("resumed"))
    assert re.search(r"1 epochs done, lr \d\.\d{4}e-\d\d, no validation yet$", resumed), resumed
    line = (ck / "training_log.txt").read_text().splitlines()[-1]
    assert re.search(r"val MPJPE .* mm, P-MPJPE .* mm, PCK \d+\.\d\d %, AUC \d+\.\d\d %", line), line
