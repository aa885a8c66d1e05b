"""Stage ``report``: report.json and report.md from the manifest and the other stages' files."""

from __future__ import annotations

from pathlib import Path

from edgeprune.errors import RunDirError
from edgeprune.stages import STAGE, StageResult
from edgeprune.stages.common import Context


@STAGE.register("report")
def stage(ctx: Context, run) -> StageResult:
    from edgeprune.report.tables import build_report, to_markdown

    report = build_report(run.manifest, run.dir, run.path)
    run.write_json("report.json", report)
    run.write_text("report.md", to_markdown(report))
    return StageResult(["report.json", "report.md"], {})


def load_report(run_dir: str | Path) -> dict:
    """A run's report.json, checked against the manifest's sha256 like every file read from a run."""
    from edgeprune.run import read_manifest, read_verified_json

    if not (Path(run_dir) / "report.json").is_file():
        raise RunDirError(f"{run_dir} has no report.json")
    return read_verified_json(run_dir, read_manifest(run_dir), "report.json")
