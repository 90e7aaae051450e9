"""One run per output folder: a second run fails at once naming the holder; a dead holder's lock is taken over."""
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import main_diffusers_h36m
from common.run import runlock
from common.run.runlock import RunLockError, check_output_dir, run_lock

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def holder(tmp_path):
    """Start another process that takes the training lock of ``folder`` and waits; yields it once it holds it."""
    processes = []

    def start(folder):
        code = textwrap.dedent(f"""
            import sys, time
            from common.run.runlock import run_lock
            with run_lock({str(folder)!r}, "training"):
                print("held", flush=True)
                time.sleep(60)
        """)
        process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_second_run_fails_at_once_naming_the_holder(tmp_path, holder):
    other = holder(tmp_path)
    with pytest.raises(RunLockError) as error:
        with run_lock(tmp_path, "training"):
            pass
    assert f"process {other.pid}" in str(error.value) and "started 20" in str(error.value)
    assert "choose another -c folder" in str(error.value)
    with run_lock(tmp_path, "evaluation"):  # evaluating beside a training is allowed
        pass


def test_the_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, holder, caplog):
    other = holder(tmp_path)
    os.kill(other.pid, signal.SIGKILL)
    other.wait()
    assert (tmp_path / "training.lock").exists()  # left behind, as after kill -9
    with caplog.at_level(logging.WARNING):
        with run_lock(tmp_path, "training") as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"process {other.pid}" in caplog.text and "ended without releasing it" in caplog.text
    assert not (tmp_path / "training.lock").exists()  # released on exit


def test_a_lock_is_released_after_an_error(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with run_lock(tmp_path, "training"):
            1 / 0
    with run_lock(tmp_path, "training"):
        pass


def test_the_cli_refuses_a_second_training_into_the_same_folder(tmp_path, holder, caplog):
    other = holder(tmp_path / "ck")
    with caplog.at_level(logging.ERROR):
        status = main_diffusers_h36m.main(["-c", str(tmp_path / "ck"), "-w", str(tmp_path), "--device", "cpu"])
    assert status == 2 and f"process {other.pid}" in caplog.text
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["training.lock"]  # nothing else written


def test_output_folders_are_checked(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunLockError, match="is a file, expected a folder"):
        check_output_dir(tmp_path / "file", "output folder (-c)")
    monkeypatch.setattr(runlock.os, "access", lambda path, mode: False)  # as for a user without write permission
    with pytest.raises(RunLockError, match="not writable"):
        check_output_dir(tmp_path, "output folder (-c)")
