"""Rich progress bars on stderr, silent when stderr is not a terminal (CI, tests)."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    disable = not sys.stderr.isatty() or os.environ.get("EDGEPRUNE_NO_PROGRESS") == "1"
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=disable, transient=True,
    ) as bar:
        yield bar
