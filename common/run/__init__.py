"""A training or evaluation run: its configuration (``config``, ``original_config``),
the command line of the entry scripts (``cli``), training (``training``) with the
context cache (``context_cache``), evaluation (``evaluation``), processes under
torchrun (``distributed``) and the lock on an output folder (``runlock``).

May import ``common.core``, ``common.data``, ``common.model`` and ``common.analysis``.
"""
