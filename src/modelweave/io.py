"""Writing and reading files: atomic writes, JSON, JSON + safetensors bundles, JSON Lines.

Every file the package writes goes through here, so none is ever seen half-written:

- :func:`atomic_write` / :func:`atomic_path` (:func:`atomic_folder` for a folder): the data goes
  to a temporary file in the same folder (``.NAME.NONCE.PID.tmp``), is flushed to disk
  (``fsync``), renamed over ``NAME`` in one step (``os.replace``) and the folder's entry is
  flushed too where the OS allows. An exception mid-write leaves the old file as it was and
  removes the temporary; a process killed mid-write leaves a temporary whose writer pid
  :func:`remove_stale_temporaries` recognises.
- :func:`write_json` / :func:`read_json`: one JSON document per file (``indent`` and
  ``sort_keys`` as each file has always been written).
- :func:`save_tensors` / :func:`load_tensors`: one safetensors file.
- :func:`save_bundle` / :func:`load_bundle`: a result as ``STEM.json`` (everything but the
  tensors) and ``STEM.safetensors`` (the tensors), the layout every result class uses.
- :func:`read_jsonl` / :func:`append_jsonl` / :func:`write_jsonl`: one JSON value per line.

Read errors are one line naming the file (a :class:`~modelweave.errors.ModelWeaveError`, or the
subclass a caller passes as ``error``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelWeaveError

if TYPE_CHECKING:
    import torch

__all__ = [
    "append_jsonl", "atomic_folder", "atomic_path", "atomic_write", "bundle_paths", "fsync_dir",
    "load_bundle", "load_tensor_metadata", "load_tensors", "pid_alive", "read_json",
    "read_jsonl", "remove_stale_temporaries", "save_bundle", "save_tensors", "temporary_path",
    "write_json", "write_jsonl", "writer_pid",
]

ErrorType = type[Exception]


# -- atomic writes ---------------------------------------------------------------------------
def temporary_path(path: str | Path) -> Path:
    """A fresh temporary name beside ``path``: ``.NAME.NONCE.PID.tmp`` (the writer's pid
    second to last, so a stale one can be traced to its writer)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{os.getpid()}.tmp")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """Flush ``folder``'s entries (a rename inside it) to disk; a no-op where the OS cannot
    open a folder (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to (by any writer: a library's
    ``save_file``, ``open``); on leaving the block it is flushed and renamed over ``path``.

    An exception inside the block removes the temporary and leaves ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a temporary folder to fill with ``folder``'s new content (e.g. by
    ``save_pretrained``); on leaving the block its files are flushed and it replaces ``folder``.

    An exception inside the block removes the temporary and leaves ``folder`` untouched. An
    old ``folder`` is first renamed aside and removed only after the new one is in place, so
    a crash leaves either the old or the new folder under its name (or, between the two
    renames, the old one beside it as a temporary).
    """
    import shutil

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(folder)
    try:
        tmp.mkdir()
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync_file(file)
        old = temporary_path(folder) if folder.exists() else None
        if old is not None:
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write(path: str | Path, data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically (see :func:`atomic_path`);
    returns ``path``."""
    raw = data if isinstance(data, bytes) else data.encode(encoding)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(raw)
    return Path(path)


def writer_pid(tmp: str | Path) -> int | None:
    """The writer pid in a temporary's name (``.NAME[.NONCE].PID.tmp``), or None."""
    pid = Path(tmp).name.rsplit(".", 2)[-2]
    return int(pid) if pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries (``.*.tmp``) in ``folder`` whose writer process is gone (or
    whose name holds no pid); returns them.

    A run killed while writing leaves its temporary behind (the rename never happened);
    the next run clears it so the folder holds whole files only.
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        pid = writer_pid(tmp)
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


# -- JSON ------------------------------------------------------------------------------------
def write_json(path: str | Path, data: Any, *, indent: int | None = None,
               sort_keys: bool = False) -> Path:
    """Write ``data`` as one JSON document (``json.dumps`` with ``indent``/``sort_keys``, no
    trailing newline), atomically; returns ``path``."""
    return atomic_write(path, json.dumps(data, indent=indent, sort_keys=sort_keys))


def read_json(path: str | Path, *, error: ErrorType = ModelWeaveError) -> Any:
    """The JSON document in ``path``.

    Raises:
        ``error`` with ``PATH: no such file`` or ``PATH: invalid JSON: ...``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise error(f"{path}: invalid JSON: not UTF-8 text") from None
    except OSError as err:
        raise error(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise error(f"{path}: invalid JSON: {err}") from None


# -- safetensors -----------------------------------------------------------------------------
def _contiguous(tensors: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    import torch

    out = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise ModelWeaveError(f"{path}: tensors must map names to torch tensors, got "
                                  f"{name!r}: {type(value).__name__}")
        out[name] = value.contiguous()
    return out


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], *,
                 metadata: dict[str, str] | None = None) -> Path:
    """Write ``tensors`` (name -> tensor of any shape and dtype, bf16 included; may be empty)
    and string ``metadata`` to the safetensors file ``path``, atomically; returns ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = _contiguous(tensors, path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _unreadable(path: Path, error: ErrorType):
    def fail(err: BaseException):
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        return error(f"{path}: not a readable safetensors file: {detail}")
    return fail


def load_tensors(path: str | Path, *, error: ErrorType = ModelWeaveError
                 ) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path`` (on the CPU).

    Raises:
        ``error`` with ``PATH: no such file`` or ``PATH: not a readable safetensors file``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, error)(err) from None


def load_tensor_metadata(path: str | Path, *, error: ErrorType = ModelWeaveError
                         ) -> dict[str, str]:
    """The string metadata stored in the safetensors file ``path`` (empty if none)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise _unreadable(path, error)(err) from None


# -- bundles ---------------------------------------------------------------------------------
def bundle_paths(stem: str | Path) -> tuple[Path, Path]:
    """``(STEM.json, STEM.safetensors)`` (``stem``'s own suffix, if any, is replaced)."""
    stem = Path(stem)
    return stem.with_suffix(".json"), stem.with_suffix(".safetensors")


def save_bundle(stem: str | Path, meta: Any, tensors: Mapping[str, torch.Tensor], *,
                indent: int | None = 1, sort_keys: bool = False) -> Path:
    """Write a result as ``STEM.safetensors`` (``tensors``) and then ``STEM.json`` (``meta``,
    JSON-serialisable), each atomically; returns the JSON path."""
    json_path, tensor_path = bundle_paths(stem)
    save_tensors(tensor_path, tensors)
    return write_json(json_path, meta, indent=indent, sort_keys=sort_keys)


def load_bundle(stem: str | Path, *, error: ErrorType = ModelWeaveError
                ) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(meta, tensors)`` of a bundle written by :func:`save_bundle`.

    Raises:
        ``error`` naming the missing file, or the file that does not parse.
    """
    json_path, tensor_path = bundle_paths(stem)
    missing = [p.name for p in (json_path, tensor_path) if not p.is_file()]
    if missing:
        raise error(f"{json_path.with_suffix('')}: no saved result here ({json_path.name} + "
                    f"{tensor_path.name}); missing {' and '.join(missing)}")
    return read_json(json_path, error=error), load_tensors(tensor_path, error=error)


# -- JSON Lines ------------------------------------------------------------------------------
def read_jsonl(path: str | Path, error: ErrorType = ModelWeaveError
               ) -> Iterator[tuple[str, Any]]:
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


def _lines(rows: Iterable[Any]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Append one line per value of ``rows`` to ``path`` (created if missing) in one write,
    flushed to disk; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _lines(rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return path


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write ``path`` as one line per value of ``rows``, atomically; returns ``path``."""
    return atomic_write(path, _lines(rows))
