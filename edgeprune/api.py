"""The thin public Python API that the CLI calls (and edgeprune.tune, the tests and benchmarks import).

The pipeline lives in edgeprune.stages: one module per stage (train, prune, finetune, export, quantize, audit,
bench, report), each a registered ``stage(ctx, run) -> StageResult(artifacts, results)``, run in ``STAGES``
order by edgeprune.stages.runner, which owns the run directory and resume (``compress``, ``prune_run``).
The operations on a finished run, and on models ``compress`` did not make, live in edgeprune.ops: audit
(``audit_run``, ``audit_model``), export (``export_run``), bundle (``bundle_run``), bench (``bench``),
inversion (``inversion_audit``) and split (``export_split_run``, ``bundle_split_run``).

Every heavy import (torch, onnxruntime, ...) stays inside the functions, so importing this module is cheap
and ``edgeprune --help`` stays fast.
"""

from __future__ import annotations

from edgeprune.bench.machine import machine
from edgeprune.ops.audit import audit_model, audit_run
from edgeprune.ops.bench import bench
from edgeprune.ops.bundle import bundle_run
from edgeprune.ops.export import VerificationFailed, export_run
from edgeprune.ops.inversion import inversion_audit
from edgeprune.ops.split import bundle_split_run, export_split_run
from edgeprune.stages import STAGES
from edgeprune.stages.common import (
    DENSE_ONNX,
    DENSE_WEIGHTS,
    INT8_ONNX,
    INVERSION,
    MIXED_ONNX,
    ONNX,
    PLAN,
    PRUNED_WEIGHTS,
    REWIND_WEIGHTS,
    SPLIT_DIR,
    TEACHER_WEIGHTS,
    WEIGHTS,
    Context,
    load_dense,
    load_pruned,
    load_teacher,
    trust_code,
)
from edgeprune.stages.report import load_report
from edgeprune.stages.runner import PRUNE_STAGES, compress, prune_run

__all__ = [
    # the pipeline (edgeprune.stages)
    "STAGES", "PRUNE_STAGES", "compress", "prune_run", "load_report",
    # operations on a finished run or a model (edgeprune.ops)
    "audit_run", "audit_model", "export_run", "VerificationFailed", "bundle_run", "bench", "inversion_audit",
    "export_split_run", "bundle_split_run", "machine",
    # a run's models and files, for scripts and tests
    "Context", "load_dense", "load_pruned", "load_teacher", "trust_code",
    "DENSE_WEIGHTS", "DENSE_ONNX", "PRUNED_WEIGHTS", "TEACHER_WEIGHTS", "REWIND_WEIGHTS", "PLAN", "WEIGHTS", "ONNX",
    "INT8_ONNX", "MIXED_ONNX", "INVERSION", "SPLIT_DIR",
]
