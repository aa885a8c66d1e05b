"""Per-sample signals computed once from a predict function and cached; attacks are functions of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]  # inputs -> logits


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@dataclass
class Signals:
    """Logits of the audited model on target members and non-members."""

    logits: np.ndarray  # (N, K) float64
    labels: np.ndarray  # (N,)
    is_member: np.ndarray  # (N,) bool

    @classmethod
    def compute(cls, predict: Predict, x_in: np.ndarray, y_in: np.ndarray, x_out: np.ndarray, y_out: np.ndarray) -> Signals:
        logits = np.concatenate([predict(x_in), predict(x_out)]).astype(np.float64)
        labels = np.concatenate([y_in, y_out])
        member = np.concatenate([np.ones(len(y_in), bool), np.zeros(len(y_out), bool)])
        return cls(logits, labels, member)

    @cached_property
    def log_probs(self) -> np.ndarray:
        return _log_softmax(self.logits)

    @cached_property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs)

    @cached_property
    def loss(self) -> np.ndarray:
        return -self.log_probs[np.arange(len(self.labels)), self.labels]

    @cached_property
    def correct(self) -> np.ndarray:
        return self.logits.argmax(1) == self.labels

    def accuracy(self, members: bool) -> float:
        sel = self.is_member if members else ~self.is_member
        return float(self.correct[sel].mean())
