from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from edgeprune.data.datasets import Dataset
from edgeprune.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """Disjoint index sets over a pooled data set.

    members: the target's training set. nonmembers: held out from the target; they are also the test
    set for accuracy. pool: the attacker's data for shadow / reference models, disjoint from both.
    """

    members: np.ndarray
    nonmembers: np.ndarray
    pool: np.ndarray
    seed: int
    data_fingerprint: str

    def hash(self) -> str:
        h = hashlib.sha256(self.data_fingerprint.encode())
        for part in (self.members, self.nonmembers, self.pool):
            h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        return {
            "members": int(self.members.size),
            "nonmembers": int(self.nonmembers.size),
            "pool": int(self.pool.size),
            "seed": self.seed,
            "hash": self.hash(),
        }


def make_split(ds: Dataset, seed: int, member_fraction: float = 0.25, max_members: int | None = None) -> Split:
    """Shuffle with ``seed``; members and non-members get ``member_fraction`` each, the pool the rest."""
    if not 0.0 < member_fraction <= 0.5:
        raise ConfigError(f"member_fraction must be in (0, 0.5], got {member_fraction}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ds))
    n = int(len(ds) * member_fraction)
    if max_members is not None:
        n = min(n, max_members)
    members, nonmembers, pool = order[:n], order[n : 2 * n], order[2 * n :]
    return Split(np.sort(members), np.sort(nonmembers), np.sort(pool), seed, ds.fingerprint())


def split_train_test(ds: Dataset, seed: int) -> Split:
    """Membership as the data file says: its train rows are members; its test rows are split in two,
    half non-member candidates and half attacker pool (for shadow / reference models)."""
    if ds.is_train is None:
        raise ConfigError(f"data {ds.name!r} has no train / test parts; use --membership split")
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(ds.is_train)
    test = rng.permutation(np.flatnonzero(~ds.is_train))
    half = test.size // 2
    if members.size < 2 or half < 2:
        raise ConfigError(f"data {ds.name!r} needs at least 2 train rows and 4 test rows for a train/test audit")
    return Split(members, np.sort(test[:half]), np.sort(test[half:]), seed, ds.fingerprint())
