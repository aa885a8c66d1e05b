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
