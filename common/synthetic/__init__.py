"""The synthetic world: a body model with joint limits (``body_model``), a capsule
renderer (``render``) and the generator of shards in the released layout (``world``).
``python -m common.synthetic`` writes a dataset.

May import ``common.core`` and ``common.data`` (to write shards).
"""
