"""Memory sizes as people write them: ``80GB``, ``24GiB``, ``512MB``, ``1.5G``, ``4096`` (bytes).

Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) and the
bare letters (K, M, G, T) powers of 1024, as GPU makers and ``free -h`` respectively use them.
"""

from __future__ import annotations

import re

from .errors import ModelWeaveError

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int | float, what: str = "size") -> int:
    """Bytes in ``text`` (``"80GB"`` -> 80_000_000_000, ``"24GiB"`` -> 25_769_803_776).

    Raises:
        ModelWeaveError: naming ``what`` and the accepted forms.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text > 0:
        return int(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match and _UNITS.get(match.group(2).lower())
    if not match or unit is None or float(match.group(1)) <= 0:
        raise ModelWeaveError(f"{what}: cannot read {text!r} as a memory size; write e.g. "
                              "80GB, 24GiB or 512MB")
    return int(float(match.group(1)) * unit)


def format_size(n: float) -> str:
    """``n`` bytes as a short decimal figure (``"93.1 GB"``, ``"512 MB"``)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}" if n / scale < 100 else f"{n / scale:.0f} {unit}"
    return f"{int(n)} B"
