"""The training loop's old home: ``train`` is ``edgeprune.engine.fit`` (kept for benchmarks and callers outside
the pipeline); the helpers are the engine's."""

from edgeprune.engine import (  # noqa: F401  (re-exported)
    LossTerm,
    _EarlyStopping,
    accuracy,
    apply_masks,
    crop_flip,
    make_optimizer,
    predict_logits,
)
from edgeprune.engine import fit as train  # noqa: F401
