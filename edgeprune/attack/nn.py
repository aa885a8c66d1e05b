"""Shadow-model neural-network attacks (Shokri et al. '17, ML-Leaks '19).

A small scikit-learn MLP learns member / non-member from the shadows' outputs (shadows went through the
same pruning / quantization as the target) and scores the target's outputs.
"""

from __future__ import annotations

import numpy as np

from edgeprune.attack.base import AttackInputs, register
from edgeprune.attack.signals import Signals


def _sorted_probs(s: Signals) -> np.ndarray:
    return -np.sort(-s.probs, axis=1)


def _top3(s: Signals) -> np.ndarray:
    return _sorted_probs(s)[:, :3]


def onehot(s: Signals) -> np.ndarray:
    out = np.zeros_like(s.probs)
    out[np.arange(len(s.labels)), s.labels] = 1.0
    return out


def _features_log(f: np.ndarray) -> np.ndarray:
    return np.log(np.clip(f, 1e-12, 1.0))


def fit_and_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int,
                  max_train: int = 20000) -> np.ndarray:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    if len(x_train) > max_train:
        keep = rng.choice(len(x_train), max_train, replace=False)
        x_train, y_train = x_train[keep], y_train[keep]
    clf = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=200, early_stopping=True, random_state=seed),
    )
    clf.fit(x_train, y_train.astype(int))
    return clf.predict_proba(x_test)[:, 1]


def _nn_attack(featurize):
    def attack(inp: AttackInputs) -> np.ndarray:
        xs = np.concatenate([featurize(s.target) for s in inp.shadows])
        ys = np.concatenate([s.is_in for s in inp.shadows])
        return fit_and_score(xs, ys, featurize(inp.target), inp.seed)

    return attack


register("nn", needs=("shadows",), threshold=0.5, doc="MLP on the sorted softmax (log) trained on shadows")(
    _nn_attack(lambda s: _features_log(_sorted_probs(s)))
)
register("nn-top3", needs=("shadows",), threshold=0.5, doc="MLP on the top-3 probabilities (ML-Leaks)")(
    _nn_attack(lambda s: _features_log(_top3(s)))
)
register("nncls", needs=("shadows",), threshold=0.5, doc="MLP on the softmax (log) and the one-hot label")(
    _nn_attack(lambda s: np.concatenate([_features_log(s.probs), onehot(s)], 1))
)
