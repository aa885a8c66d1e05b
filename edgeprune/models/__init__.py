"""Model zoo and user-model loading.

A model spec is a zoo name (``resnet18``) or ``pkg.module:factory``. Factories receive ``in_shape`` and
``num_classes`` when their signature accepts them.

Importing this package does not import torch (``edgeprune models`` lists the zoo from its declarations);
the functions below load ``edgeprune.models.loading`` on first use.
"""

from edgeprune.models.registry import MODELS

__all__ = ["MODELS", "Builder", "build_model", "load_state_dict", "load_weights", "count_params", "count_macs", "check_fits"]


def __getattr__(name: str):
    if name in __all__:
        from edgeprune.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'edgeprune.models' has no attribute {name!r}")
