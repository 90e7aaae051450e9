"""The bounded fuzzing run of the test suite: a few seeded examples per reader and command.

Each must hold the property of ``harness`` (success, or a one-line refusal
naming the file or argument, no traceback, no hang, no write outside the
output folder, no partial file, no code run from a file). A failure shows
hypothesis's draws; turn it into a test in ``test_regressions.py``. The long
campaign is ``python tests/fuzz/campaign.py`` (see docs/safety.md).
"""
import pytest
from campaign import TARGETS, fuzz
from command_targets import COMMANDS
from model_fixtures import single_thread  # noqa: F401

# Examples per target in the suite: readers take milliseconds each, commands up to seconds.
CI_EXAMPLES = {"analyze": 8, "convert_validate": 8, "convert_h36m": 8, "synthetic": 4, "h36m_train": 3,
               "h36m_evaluate": 3, "mpi_train": 2, "mpi_evaluate": 2, "infer": 3, "demo": 1}
READER_EXAMPLES = 30


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzzed_inputs_end_in_success_or_a_one_line_refusal(name, single_thread):  # noqa: F811
    stats = fuzz(name, CI_EXAMPLES.get(name, READER_EXAMPLES), seed=0, time_limit=120, fail_fast=True)
    assert stats.examples >= 1
    if name not in COMMANDS:
        assert stats.outcomes["refused"] >= 1, "the mutations should make some inputs bad"
