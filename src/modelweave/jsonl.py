"""Reading JSON Lines files with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def read_jsonl(path: Path, error: type[Exception]) -> Iterator[tuple[str, object]]:
    """Yield ``("path:line", value)`` for every non-blank line of ``path``.

    Raises:
        ``error`` with ``path:line: invalid JSON: ...`` for a line that does not parse.
    """
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as err:
            raise error(f"{path}:{number}: invalid JSON: {err}") from None
        yield f"{path}:{number}", value
