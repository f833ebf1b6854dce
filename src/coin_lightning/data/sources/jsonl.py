"""Line-numbered JSONL reading, so a malformed row is reported by file and line."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from coin_lightning.data.records import DataError


def read_jsonl(path: str | Path, on_error: str = "raise") -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-empty line of a JSONL file (1-based lines).

    Args:
        path: the file.
        on_error: ``"raise"`` (default) or ``"skip"``; skipped lines are counted in
            ``read_jsonl.skipped[path]``.

    Raises:
        DataError: the file is missing, or a line is not UTF-8 text or not a JSON object (names
            file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                if on_error == "skip":
                    read_jsonl.skipped[str(path)] = read_jsonl.skipped.get(str(path), 0) + 1
                    continue
                if isinstance(exc, UnicodeDecodeError):
                    raise DataError(f"{path}:{lineno}: not UTF-8 text ({exc.reason} at byte {exc.start} of the line)") from None
                raise DataError(f"{path}:{lineno}: malformed JSONL row ({exc})") from None
            yield lineno, obj


read_jsonl.skipped = {}  # type: ignore[attr-defined]
