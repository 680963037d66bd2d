"""The CLI's one JSON printer: ``--json`` on every command writes through :func:`print_json`.

Standard JSON only (NaN and infinities become ``null``, so ``jq`` and ``json.loads`` of any
language read it), NumPy scalars and arrays and paths converted, two-space indentation, keys in
the order the library built them, one trailing newline, straight to stdout (no rich markup or
highlighting, no line wrapping, so the output can be piped).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, TextIO


def _plain(obj: Any) -> Any:
    """``obj`` with NumPy values, paths, tuples and non-finite floats made plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None:
        if isinstance(obj, np.ndarray):
            return _plain(obj.tolist())
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return _plain(float(obj))
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """The text :func:`print_json` writes (without the trailing newline)."""
    return json.dumps(_plain(obj), indent=2, ensure_ascii=False, allow_nan=False)


def print_json(obj: Any, file: TextIO | None = None) -> None:
    """Write ``obj`` as standard JSON and a newline to stdout (or ``file``)."""
    out = file or sys.stdout
    out.write(dumps(obj) + "\n")
    out.flush()
