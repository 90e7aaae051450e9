"""The property every fuzzed run must hold, checked around one call.

A run is a reader call or a command's ``main(argv)`` inside a sandbox folder
(``Sandbox``: ``in/`` for inputs, ``out/`` the output folder, ``cwd/`` the
working directory). ``check_run`` runs it and returns the violations:

- ``traceback``: an exception other than the input errors the target expects
  escaped (or a command printed "Traceback");
- ``exit``: a command ended with a status other than 0 or 2 (or its own
  documented ones);
- ``message``: exit 2 (or an expected input error) whose message is not one
  line or does not name the file or argument the target says it must;
- ``hang``: it ran past the time bound;
- ``outside``: a file outside the output folders appeared or changed;
- ``partial``: a temporary of ``atomic_write`` was left behind;
- ``code``: a file's content ran code (the marker of ``evil_pickle`` appeared).

A violation is a string starting with its kind, then where it happened (for
exceptions the innermost frame of the project), so a campaign groups them by cause.
"""
import contextlib
import errno
import io
import logging
import os
import pickle
import shutil
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = "CODE_RAN"


class Hang(BaseException):
    """Raised by the alarm when a run passes its time bound (BaseException: no ``except Exception`` eats it)."""


class _Evil:
    """Pickles to a call of ``os.mkdir(marker)``: if a reader unpickles it, the marker folder appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def evil_pickle(sandbox, payload=None):
    """Pickle bytes that would create the sandbox's marker when unpickled (``payload`` holds it)."""
    evil = _Evil(sandbox.root / MARKER)
    return pickle.dumps(evil if payload is None else {**payload, "evil": evil})


class Sandbox:
    """A fresh temporary folder for one run; removed by ``close``."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="fuzz "))  # a space in every path, always
        self.inputs = self.root / "in"
        self.out = self.root / "out"
        self.cwd = self.root / "cwd"
        for folder in (self.inputs, self.cwd):
            folder.mkdir()

    def close(self):
        for folder, _, files in os.walk(self.root):
            os.chmod(folder, 0o755)
            for name in files:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o644)
        shutil.rmtree(self.root, ignore_errors=True)


def _snapshot(root, skip):
    state = {}
    for folder, folders, files in os.walk(root):
        folders[:] = [f for f in folders if Path(folder, f) not in skip]
        for name in files + folders:
            path = Path(folder, name)
            with contextlib.suppress(OSError):
                stat = path.lstat()
                state[path] = (stat.st_size, stat.st_mtime_ns) if not path.is_dir() else "dir"
    return state


def _project_frame(error):
    """'file:line' of the innermost frame of the project in ``error``'s traceback (else the innermost)."""
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if f.filename.startswith(str(REPO)) and "/tests/" not in f.filename]
    frame = (mine or frames or [None])[-1]
    if frame is None:
        return "?"
    return f"{os.path.relpath(frame.filename, REPO)}:{frame.lineno}"


def _on_alarm(signum, frame):
    raise Hang()


@contextlib.contextmanager
def full_disk():
    """Every fsync fails with ENOSPC, as on a full disk (the same failure the test suite's writers meet)."""
    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    original = os.fsync
    os.fsync = fail
    try:
        yield
    finally:
        os.fsync = original


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.errors = []

    def emit(self, record):
        if record.levelno >= logging.ERROR:
            self.errors.append(record.getMessage())


@dataclass
class Run:
    """What a target asks ``check_run`` to do.

    call: no arguments; a command returns (or exits with) its status, a reader returns anything.
    names: strings of which an error message must contain one (the file, the argument).
    expected: exception types a reader may raise for bad input (commands: empty).
    outputs: folders the run may write into (besides the sandbox's out/).
    codes: exit statuses allowed besides 0 and 2.
    disk_full: run with every fsync failing with ENOSPC.
    """
    call: object
    names: tuple = ()
    expected: tuple = ()
    outputs: tuple = ()
    codes: tuple = ()
    disk_full: bool = False
    label: str = ""


@dataclass
class Result:
    violations: list = field(default_factory=list)
    status: object = None
    message: str = ""
    seconds: float = 0.0


def _message_problem(message, names):
    """Why an error message breaks the property (None if it does not): it must be one line naming a name."""
    lines = [line for line in message.replace("\r", "\n").splitlines() if line.strip()]
    if not lines:
        return "message: exit 2 with no message"
    if names and not any(str(name) in lines[-1] for name in names):
        return "message: names neither the file nor the argument"
    return None


def check_run(run, sandbox, time_limit=30.0):
    """Run ``run`` in ``sandbox`` and return a Result with every violation of the property."""
    allowed = {sandbox.out.resolve(), *(Path(p).resolve() for p in run.outputs)}
    skip = {sandbox.out, *map(Path, run.outputs)}
    before = _snapshot(sandbox.root, skip)
    result, stdout, stderr, records = Result(), io.StringIO(), io.StringIO(), _Records()
    root_logger = logging.getLogger()
    root_logger.addHandler(records)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    cwd = os.getcwd()
    start = time.perf_counter()
    try:
        os.chdir(sandbox.cwd)
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                (full_disk() if run.disk_full else contextlib.nullcontext()):
            try:
                status = run.call()
                result.status = "read" if run.expected else status
            except SystemExit as exit_:
                result.status = 0 if exit_.code is None else exit_.code
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except Hang:
        result.violations.append(f"hang: over {time_limit:g} s")
    except run.expected as error:
        result.status = "error"
        result.message = str(error)
        problem = ("message: more than one line" if "\n" in result.message.strip()
                   else _message_problem(result.message, run.names))
        if problem:
            result.violations.append(f"{problem} ({type(error).__name__} at {_project_frame(error)})")
    except BaseException as error:  # noqa: B902 - anything else is what the fuzzer looks for
        result.violations.append(f"traceback: {type(error).__name__} at {_project_frame(error)}")
        result.message = f"{type(error).__name__}: {error}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(cwd)
        root_logger.removeHandler(records)
        result.seconds = time.perf_counter() - start
    printed = stderr.getvalue()
    if "Traceback (most recent call last)" in printed:
        result.violations.append("traceback: printed on stderr")
    if not run.expected and not result.violations:
        status = result.status or 0
        if status not in (0, 2, *run.codes):
            result.violations.append(f"exit: status {status}")
        if status == 2:
            result.message = records.errors[-1] if records.errors else printed
            if records.errors and "\n" in records.errors[-1].strip():
                result.violations.append("message: more than one line")
            problem = _message_problem(result.message, run.names)
            if problem:
                result.violations.append(problem)
    after = _snapshot(sandbox.root, skip)
    for path, state in after.items():
        if path.name == MARKER:
            result.violations.append("code: a file's content ran code")
        elif before.get(path) != state and not any(a in path.resolve().parents for a in allowed):
            result.violations.append(f"outside: wrote {os.path.relpath(path, sandbox.root)}")
    for folder, _, files in os.walk(sandbox.root):
        result.violations += [f"partial: {name} left" for name in files if ".tmp-" in name]
    return result
