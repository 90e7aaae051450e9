"""Scoring and looking at predictions: the metrics (``metrics``), how well the
spread of the hypotheses predicts their error (``reliability``), figures
(``figures``) and the report on a saved predictions file (``report``, run as
``python -m common.analyze``).

May import ``common.core`` and ``common.data`` (to read sample keys).
"""
