"""The defense registry, declared without torch so ``edgeprune defenses`` lists it fast.

Each defense class registers itself (``@DEFENSES.register``) in its own module; the declarations here name
that module and what the listing shows (tests check them against the classes).
"""

from edgeprune.registry import Registry

DEFENSES: Registry = Registry("defense")

for _name, _module, _default, _meaning, _needs in (
    ("none", "base", 0.0, "unused", ()),
    ("kl", "kl", 4.0, "lambda, weight of the KL term", ()),
    ("advreg", "advreg", 1.0, "lambda, weight of the inference model's gain", ("reference",)),
    ("relaxloss", "relaxloss", None, "alpha, the target loss level (default: the data set's released value)", ()),
    ("dpsgd", "dpsgd", 1.0, "noise multiplier sigma", ()),
    ("dmp", "dmp", 1.0, "share of the reference data used, lowest teacher entropy first", ("reference", "teacher")),
    ("distill-reg", "distill_reg", 0.9, "w, share of the distillation term", ("reference", "teacher")),
):
    DEFENSES.declare(_name, f"edgeprune.defend.{_module}", default_strength=_default, strength=_meaning,
                     needs=list(_needs))
