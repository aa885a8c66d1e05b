"""`edgeprune predict RUN_OR_BUNDLE IMAGE...`: classify image files with a run's deployed ONNX model or a
bundle's, preprocessed by the same code (edgeprune.data.preprocess) with the preprocessing recorded for it."""

from __future__ import annotations

import json
from pathlib import Path

from edgeprune.errors import ConfigError, DataError, RunDirError


def _bundle_model(root: Path, manifest: dict) -> tuple[Path, dict]:
    """A bundle's first onnxruntime model and its preprocessing, both checked against its manifest."""
    from edgeprune.run import sha256_file

    entry = next((m for m in manifest.get("models", []) if m.get("precision") != "bsr"), None)
    if entry is None:
        raise RunDirError(f"bundle {root} holds no model onnxruntime runs")
    if not (root / "preprocessing.json").is_file():
        raise ConfigError(f"{root}: the bundle's model was not trained on image files (no preprocessing.json)")
    for rel in (entry["file"], "preprocessing.json"):
        want = manifest.get("files", {}).get(rel)
        if want is None or Path(rel).name != rel or not (root / rel).is_file() or sha256_file(root / rel) != want:
            raise RunDirError(f"{root / rel} differs from the sha256 in the bundle's manifest (or is not listed)")
    return root / entry["file"], json.loads((root / "preprocessing.json").read_text())


def predict_images(target: str | Path, images: list[str | Path], top: int = 3) -> dict:
    """{"model": path, "images": [{"file", "logits", "top": [{"class", "p"}]}]} for each image file."""
    import onnxruntime as ort

    from edgeprune.data.preprocess import ImageRefused, classify, preprocess_files
    from edgeprune.run import read_manifest, verify_artifact

    root = Path(target).expanduser()
    manifest = read_manifest(root)
    if (root / "run_onnx.py").is_file() and "files" in manifest:
        model, prep = _bundle_model(root, manifest)
    else:
        verify_artifact(root, manifest, "model.onnx")
        model, prep = root / "model.onnx", manifest.get("data", {}).get("preprocessing", {})
    if not isinstance(prep, dict) or not prep.get("size"):
        raise ConfigError(f"{root}: the model was not trained on image files (no image preprocessing recorded)")
    try:
        x = preprocess_files([Path(p).expanduser() for p in images], prep)
    except ImageRefused as e:
        raise DataError(f"cannot read image {e}") from None
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
    rows = classify(lambda b: sess.run(None, {inp.name: b})[0], x, batch, prep.get("classes"), images, top)
    return {"model": str(model), "images": rows}
