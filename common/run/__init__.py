"""A training or evaluation run: the command line of the entry scripts (``cli``),
training (``training``) with the context cache (``context_cache``) and the feature
cache (``feature_cache``), evaluation (``evaluation``), seeding every random
generator of a run (``seeding``), processes under torchrun (``distributed``) and
the lock on an output folder (``runlock``). The model is applied through
``common.pipeline``; the run's configuration lives there too (``common.pipeline.config``).

May import ``common.core``, ``common.data``, ``common.model``, ``common.analysis`` and ``common.pipeline``.
"""
