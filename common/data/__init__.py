"""The released WebDataset shards: reading and decoding samples (``shards``), which
shards a run reads (``splits``), how many samples they hold (``counts``), and the
converter from the original label pickles (``convert``).

May import ``common.core`` only: data knows nothing of the model or of runs.
"""
