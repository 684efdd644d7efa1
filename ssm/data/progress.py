"""Progress display for long data preparation (generators, readers)."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool, description: str) -> Iterator[Callable[[int], object]]:
    """Yield ``advance(n)`` of a bar on stderr: rich, else tqdm, else a line per 10%.

    A no-op when not ``enabled``; works without a terminal.
    """
    if not enabled:
        yield lambda n: None
    elif importlib.util.find_spec("rich") is not None:
        from rich.console import Console
        from rich.progress import MofNCompleteColumn, Progress

        columns = (*Progress.get_default_columns(), MofNCompleteColumn())
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
    elif importlib.util.find_spec("tqdm") is not None:
        from tqdm import tqdm

        with tqdm(total=total, desc=description, file=sys.stderr) as bar:
            yield bar.update
    else:
        done = [0]

        def advance(n: int) -> None:
            tenths_before, done[0] = 10 * done[0] // total, done[0] + n
            if 10 * done[0] // total > tenths_before:
                print(f"{description}: {done[0]}/{total}", file=sys.stderr)

        yield advance
