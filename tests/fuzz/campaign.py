"""Run the fuzzer over the readers and commands, and print what it found.

The test suite runs a few examples per target (``test_fuzz.py``); a long
campaign runs many, with a seed, and groups the violations by cause::

    python tests/fuzz/campaign.py --seed 1 --examples 1000
    python tests/fuzz/campaign.py --seed 2 --examples 200 --targets config,analyze --report found.json

Each violation's cause is its kind and where it happened (see ``harness``);
every cause it finds becomes a named test in ``test_regressions.py``.
"""
import argparse
import json
import logging
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent, HERE.parents[1]):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from command_targets import COMMANDS, COST  # noqa: E402
from harness import Sandbox, check_run  # noqa: E402
from hypothesis import HealthCheck, Phase, Verbosity, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import FlakyStrategyDefinition  # noqa: E402
from targets import READERS  # noqa: E402

TARGETS = {**READERS, **COMMANDS}


class Violation(AssertionError):
    """A run broke the property (raised only when failing fast, so hypothesis shows the input)."""


@dataclass
class Stats:
    target: str
    examples: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    causes: Counter = field(default_factory=Counter)
    samples: dict = field(default_factory=dict)

    def add(self, result):
        self.examples += 1
        self.seconds += result.seconds
        self.outcomes["violation" if result.violations else
                      "success" if result.status in (0, None, "read") else "refused"] += 1
        for cause in result.violations:
            self.causes[cause] += 1
            self.samples.setdefault(cause, result.message[:300])

    def summary(self):
        return {"target": self.target, "examples": self.examples,
                "ms_per_example": round(1000 * self.seconds / max(self.examples, 1), 1),
                "outcomes": dict(self.outcomes), "causes": dict(self.causes)}


def fuzz(name, examples, seed=0, time_limit=60.0, fail_fast=False, seconds=None):
    """Run target ``name`` on ``examples`` generated inputs, or fewer if ``seconds`` run out first.

    Returns Stats; raises Violation at the first violation if ``fail_fast``.
    """
    target, stats = TARGETS[name], Stats(name)
    stop = None if seconds is None else time.time() + seconds

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink] if fail_fast else [Phase.generate], print_blob=False,
              verbosity=Verbosity.normal if fail_fast else Verbosity.quiet)
    @given(st.data())
    def one(data):
        if stop is not None and time.time() > stop:
            return  # time is up: the remaining examples draw nothing and run nothing
        sandbox = Sandbox()
        try:
            result = check_run(target(data, sandbox), sandbox, time_limit)
        finally:
            sandbox.close()
        stats.add(result)
        if fail_fast and result.violations:
            raise Violation(f"{name}: {result.violations} (message: {result.message[:300]!r})")

    try:
        one()
    except FlakyStrategyDefinition:
        # Examples skipped after the budget draw nothing, which hypothesis reports as inconsistent generation.
        if stop is None or time.time() <= stop:
            raise
    return stats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default: 0)")
    parser.add_argument("--examples", type=int, default=500, help="generated inputs per reader; a command gets this divided by its COST "
                        "(command_targets.py) (default: 500)")
    parser.add_argument("--targets", help=f"comma-separated subset of: {', '.join(TARGETS)}")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds one run may take (default: 60)")
    parser.add_argument("--minutes", type=float,
                        help="stop each target after its share of this many minutes (default: no limit)")
    parser.add_argument("--report", help="also write the summary as JSON to this file")
    parser.add_argument("--memory-gb", type=float, default=16,
                        help="address-space limit of the campaign, so that an input asking for a huge "
                             "allocation fails in this process instead of starving the machine (default: 16)")
    args = parser.parse_args(argv)
    names = args.targets.split(",") if args.targets else list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"--targets: unknown {unknown}; choose from {', '.join(TARGETS)}")
    limit = int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.getLogger().addHandler(logging.NullHandler())  # the commands' basicConfig must not print each run
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)
    summaries, start = [], time.time()
    for name in names:
        share = None if args.minutes is None else 60 * args.minutes / len(names)
        stats = fuzz(name, max(1, args.examples // COST.get(name, 1)), args.seed, args.time_limit, seconds=share)
        summaries.append(stats.summary())
        print(f"{name:>16}: {stats.examples} inputs, {summaries[-1]['ms_per_example']} ms each, "
              f"{dict(stats.outcomes)}", flush=True)
        for cause, count in stats.causes.most_common():
            print(f"{'':>18}{count:>5} x {cause}\n{'':>26}e.g. {stats.samples[cause][:160]!r}", flush=True)
    total = sum(s["examples"] for s in summaries)
    violations = sum(sum(s["causes"].values()) for s in summaries)
    print(f"total: {total} inputs in {time.time() - start:.0f} s, {violations} violations", flush=True)
    if args.report:
        Path(args.report).write_text(json.dumps({"seed": args.seed, "targets": summaries}, indent=2))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
