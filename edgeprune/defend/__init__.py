"""Privacy defenses as plug-ins of the training loop: ``--defense NAME[:STRENGTH]``.

One file per defense, each registered in ``DEFENSES``; ``build`` makes one from the recipe's
``defense`` section, ``parse`` reads the CLI form.
"""

from __future__ import annotations

from edgeprune.errors import ConfigError


def _load():
    from edgeprune.defend import advreg, distill_reg, dmp, dpsgd, kl, relaxloss  # noqa: F401  (registration)
    from edgeprune.defend.base import DEFENSES

    return DEFENSES


def names() -> list[str]:
    return _load().names()


def parse(spec: str) -> tuple[str, float | None]:
    """'kl:4' -> ('kl', 4.0); 'relaxloss' -> ('relaxloss', None)."""
    name, _, strength = spec.partition(":")
    if not strength:
        return name.strip(), None
    try:
        return name.strip(), float(strength)
    except ValueError:
        raise ConfigError(f"defense strength must be a number: {spec[:40]!r} (e.g. kl:4)") from None


def check_config(cfg) -> None:
    cls = _load().get(cfg.name)
    cls.check(cfg.strength)
    if cfg.reference_samples < 0 or cfg.max_grad_norm <= 0 or cfg.temperature <= 0:
        raise ConfigError("defense reference_samples must be >= 0, max_grad_norm and temperature > 0")
    if cfg.upper is not None and not 0 < cfg.upper <= 1:
        raise ConfigError(f"defense upper (relaxloss confidence clamp) must be in (0, 1], got {cfg.upper}")
    if not 0.0 <= cfg.hard_labels <= 1.0:
        raise ConfigError(f"defense hard_labels (dmp: weight of the reference labels) must be in [0, 1], got {cfg.hard_labels}")
    if cfg.delta is not None and not 0 < cfg.delta < 1:
        raise ConfigError(f"defense delta must be in (0, 1), got {cfg.delta}")


def build(cfg, reference=None, teacher=None, seed: int = 0, data: str | None = None):
    """The recipe's defense, ready for ``edgeprune.train.train(defense=...)``; ``data``: the recipe's data
    spec, for defenses with per-data-set defaults (relaxloss)."""
    cls = _load().get(cfg.name)
    return cls(cfg.strength, cfg, reference=reference, teacher=teacher, seed=seed, data=data)


def needs(name: str) -> tuple[str, ...]:
    return tuple(_load().get(name).needs)


def describe() -> list[dict]:
    """Name, strength meaning, default and needs of every defense, without importing torch."""
    from edgeprune.defend.registry import DEFENSES

    return [{"name": n, **DEFENSES.meta(n)} for n in DEFENSES.names()]
