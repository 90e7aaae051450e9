"""The released WebDataset shards: decoding samples (``samples``, with the JPEG
decoder in ``decode``), the loader of batches (``loader``), which shards a run reads
(``splits``), how many samples they hold (``counts``), and the converter from the
original label pickles (``convert``).

May import ``common.core`` only: data knows nothing of the model or of runs.
"""
