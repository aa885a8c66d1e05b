"""Data sets (no downloads) and the deterministic member / non-member / attacker-pool split.

A data spec is ``name`` or ``name:ARG``: ``digits``, ``purchase-synth[:N]``, ``cifar10:DIR``, ``npz:FILE``,
and the published formats of the literature's data sets (``mnist[:PATH]``, ``fashion-mnist[:DIR]``,
``cifar10-jpeg:PATH[:N]``, ``cifar100:DIR``, ``location:FILE``, ``purchase100:FILE``, ``texas100:PATH``,
``adult[:DIR]``); ``edgeprune datasets`` lists them.
"""

from edgeprune.data import images, imagetree, tabular  # noqa: F401  (they register their readers in DATASETS)
from edgeprune.data.datasets import DATASETS, Dataset, load_dataset
from edgeprune.data.split import Split, make_split, split_train_test

__all__ = ["DATASETS", "Dataset", "load_dataset", "Split", "make_split", "split_train_test"]
