"""Byte sizes as people write them: ``"80GB"``, ``"24GiB"``, ``"512MB"``, ``"1.5 TB"``.

Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) powers of
1024, as GPU vendors and operating systems use them respectively. A bare number is bytes.
"""

from __future__ import annotations

import re

from ..errors import ModelWeaveError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


class SizeError(ModelWeaveError):
    """A memory size that cannot be read."""


def parse_size(text: str | int | float) -> int:
    """Bytes in ``text`` (``"80GB"`` -> 80_000_000_000, ``"24GiB"`` -> 25_769_803_776).

    Raises:
        SizeError: for anything but a positive number with an optional unit.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text <= 0:
            raise SizeError(f"a memory size must be positive, got {text}")
        return int(text)
    match = _PATTERN.match(str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise SizeError(f"cannot read memory size {text!r}; write e.g. 80GB, 24GiB or 512MB")
    value = float(match.group(1)) * _UNITS[unit]
    if value <= 0:
        raise SizeError(f"a memory size must be positive, got {text!r}")
    return int(value)


def format_size(n_bytes: float) -> str:
    """``93.1 GB``-style text, decimal units (as GPU memory is usually quoted)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{int(n_bytes)} B"
