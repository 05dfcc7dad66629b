"""Where the benchmark scripts write their tables: stdout, and a Markdown file when asked."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def emitter(path: str | None):
    """Yield ``emit(line)``: print it, and append it to ``path`` (flushed at once, so a run cut
    short by its time limit keeps every row it finished)."""
    out = open(path, "a") if path else None  # noqa: SIM115 - closed below
    try:
        def emit(line: str) -> None:
            print(line, flush=True)
            if out:
                out.write(line + "\n")
                out.flush()

        yield emit
    finally:
        if out:
            out.close()
