"""Which shards an evaluation scores, said out loud, and a guard against scoring the training split.

``-w`` may name a dataset root (its ``validation/`` or ``test/`` folder is
used) or any shard folder or pattern. Pointing it at ``.../train`` once made
``--evaluate`` score training samples without a word; here the folder is
logged with its shard count, and a training split is refused for evaluation
and validation unless ``data.allow_train_split`` (``--allow-train-split``) says
it is meant.
"""
import logging
import posixpath

from common.core.errors import ConfigError
from common.data.loader import DEFAULT_SPLITS, find_shards

log = logging.getLogger(__name__)

TRAIN_SPLIT = "train"


def shard_folders(urls):
    """The distinct folders of shard URLs, in first-seen order."""
    return list(dict.fromkeys(posixpath.dirname(str(url)) or "." for url in urls))


def split_name(folders):
    """The split a list of shard folders is (their last path parts joined with '+'), e.g. 'test'."""
    return "+".join(dict.fromkeys(posixpath.basename(folder.rstrip("/")) or folder for folder in folders))


def evaluation_shards(source, dataset, allow_train_split=False, purpose="evaluation"):
    """The shard URLs an evaluation or validation of ``dataset`` reads from ``source``, checked and logged.

    Args:
        source: ``data.root`` (anything ``common.data.loader.find_shards`` takes); a
            directory's ``validation/`` (h36m) or ``test/`` (mpi) folder is used when present.
        allow_train_split: score shards from a ``train`` folder anyway.
        purpose: "evaluation" or "validation", for the messages.
    Returns:
        (urls, split): the shard URLs and the split's name ("validation", "test", ...).
    Raises:
        ConfigError: the shards lie in a ``train`` folder and ``allow_train_split`` is off.
        FileNotFoundError: no shards (``find_shards``).
    """
    expected = DEFAULT_SPLITS[dataset, False]
    urls = find_shards(source, expected)
    folders = shard_folders(urls)
    split = split_name(folders)
    training = [f for f in folders if posixpath.basename(f.rstrip("/")) == TRAIN_SPLIT]
    if training and not allow_train_split:
        raise ConfigError(
            f"the {purpose} would score the training split: -w {source} gives {len(urls)} shard(s) in "
            f"{', '.join(training)}. Expected the dataset root (holding {expected}/) or its {expected}/ folder; "
            f"pass --allow-train-split (data.allow_train_split: true) to score training samples on purpose")
    log.info("%s reads %d shard(s) of split '%s' from %s%s", purpose, len(urls), split, ", ".join(folders),
             " (a training split, allowed by data.allow_train_split)" if training else "")
    return urls, split
