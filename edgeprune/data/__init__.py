"""Data sets (no downloads) and the deterministic member / non-member / attacker-pool split.

A data spec is ``name`` or ``name:ARG``: ``digits``, ``purchase-synth[:N]``, ``cifar10:DIR``, ``npz:FILE``.
"""

from edgeprune.data.datasets import DATASETS, Dataset, load_dataset
from edgeprune.data.split import Split, make_split, split_train_test

__all__ = ["DATASETS", "Dataset", "load_dataset", "Split", "make_split", "split_train_test"]
