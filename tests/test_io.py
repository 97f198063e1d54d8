"""The io module: atomic writes, JSON, JSON + safetensors bundles, JSON Lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from modelweave.errors import ModelWeaveError
from modelweave.io import (
    append_jsonl,
    atomic_path,
    atomic_write,
    bundle_paths,
    load_bundle,
    load_tensor_metadata,
    load_tensors,
    read_json,
    read_jsonl,
    remove_stale_temporaries,
    save_bundle,
    save_tensors,
    temporary_path,
    write_json,
    write_jsonl,
    writer_pid,
)
from modelweave.methods.lens import LensResult
from modelweave.methods.result import PatchingResult

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
          torch.int8, torch.uint8, torch.bool]


def _tensor(dtype: torch.dtype, shape=(3, 4)) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 10
    return (x > 0) if dtype == torch.bool else x.to(dtype)


def test_atomic_write_text_and_bytes(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    assert atomic_write(path, "héllo\n") == path
    assert path.read_text(encoding="utf-8") == "héllo\n"
    atomic_write(path, b"\x00\xffbytes")
    assert path.read_bytes() == b"\x00\xffbytes"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_an_exception_mid_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    write_json(path, {"old": 1})
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(path) as tmp:
        tmp.write_text('{"new": ')  # half of the new content
        raise RuntimeError("disk on fire")
    assert read_json(path) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
    # a writer that fails inside a library call (safetensors: not a tensor) leaves nothing either
    with pytest.raises(ModelWeaveError, match="must map names to torch tensors"):
        save_tensors(tmp_path / "t.safetensors", {"x": [1, 2]})
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_temporaries_name_their_writer_and_stale_ones_are_cleared(tmp_path):
    tmp = temporary_path(tmp_path / "manifest.json")
    assert tmp.parent == tmp_path and tmp.name.startswith(".manifest.json.")
    assert tmp.name.endswith(".tmp") and writer_pid(tmp) == os.getpid()
    assert writer_pid(tmp_path / ".manifest.json.1234.tmp") == 1234  # the older form
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".done.json.0a1b2c3d.{dead.pid}.tmp"
    old_form = tmp_path / f".done.json.{dead.pid}.tmp"
    live = tmp_path / f".done.json.0a1b2c3d.{os.getppid()}.tmp"
    for p in (stale, old_form, live):
        p.write_text("{")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, old_form])
    assert live.exists() and not stale.exists() and not old_form.exists()


def test_json_round_trip_keeps_each_callers_formatting(tmp_path):
    data = {"b": [1, 2.5, None, True], "a": {"nested": {"deep": ["x", {"y": -1}]}}, "ü": "ß"}
    plain = write_json(tmp_path / "plain.json", data)
    assert plain.read_text() == json.dumps(data)
    pretty = write_json(tmp_path / "pretty.json", data, indent=1, sort_keys=True)
    assert pretty.read_text() == json.dumps(data, indent=1, sort_keys=True)
    assert read_json(plain) == read_json(pretty) == data


def test_json_read_errors_are_one_line(tmp_path):
    with pytest.raises(ModelWeaveError, match=r"missing\.json: no such file"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(ModelWeaveError, match=r"bad\.json: invalid JSON") as err:
        read_json(tmp_path / "bad.json")
    assert "\n" not in str(err.value)

    class MyError(ModelWeaveError):
        pass

    with pytest.raises(MyError):
        read_json(tmp_path / "bad.json", error=MyError)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bundle_round_trip_every_dtype(tmp_path, dtype):
    tensors = {"x": _tensor(dtype), "scalar": _tensor(dtype, ()), "empty": _tensor(dtype, (0, 5)),
               "strided": _tensor(dtype, (4, 6))[:, ::2]}
    meta = {"name": "t", "nested": {"list": [1, [2, 3]], "none": None}}
    json_path = save_bundle(tmp_path / "result", meta, tensors)
    assert json_path == tmp_path / "result.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json", "result.safetensors"]
    got_meta, got = load_bundle(tmp_path / "result")
    assert got_meta == meta and set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == dtype and torch.equal(got[k], v), k


def test_bundle_with_no_tensors_and_metadata_files(tmp_path):
    save_bundle(tmp_path / "empty", [1, 2], {})
    assert load_bundle(tmp_path / "empty") == ([1, 2], {})
    path = save_tensors(tmp_path / "m.safetensors", {"a": torch.ones(2)}, metadata={"k": "v"})
    assert load_tensor_metadata(path) == {"k": "v"} and torch.equal(load_tensors(path)["a"],
                                                                     torch.ones(2))
    assert bundle_paths(tmp_path / "r.old") == (tmp_path / "r.json", tmp_path / "r.safetensors")


def test_a_missing_or_corrupt_bundle_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelWeaveError, match=r"no saved result here .*missing result\.json "
                                              r"and result\.safetensors"):
        load_bundle(tmp_path / "result")
    save_bundle(tmp_path / "result", {"a": 1}, {"x": torch.ones(3)})
    (tmp_path / "result.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelWeaveError, match=r"result\.safetensors: not a readable "
                                              r"safetensors file") as err:
        load_bundle(tmp_path / "result")
    assert "\n" not in str(err.value)
    (tmp_path / "result.safetensors").unlink()
    with pytest.raises(ModelWeaveError, match=r"missing result\.safetensors$"):
        load_bundle(tmp_path / "result")
    save_bundle(tmp_path / "result", {"a": 1}, {"x": torch.ones(3)})
    (tmp_path / "result.json").write_text("{")
    with pytest.raises(ModelWeaveError, match=r"result\.json: invalid JSON"):
        load_bundle(tmp_path / "result")


def test_results_saved_the_old_way_still_load(tmp_path):
    """The files a PatchingResult and a LensResult wrote before the io module (plain
    ``write_text`` + ``save_file``) load unchanged, and saving again writes the same bytes."""
    values, raw = torch.rand(2, 3), torch.rand(2, 3)
    meta = {"grid": "heads", "direction": "denoising", "method": "exact", "metric": "logit_diff",
            "axes": ["layer", "head"], "labels": {"layer": ["0", "1"], "head": ["0", "1", "2"]},
            "clean_metric": 2.0, "corrupt_metric": -1.0, "model": "m", "task": "ioi",
            "positions": {"END": 5}}
    old = tmp_path / "old" / "result"
    old.parent.mkdir()
    old.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    save_file({"values": values, "raw": raw}, str(old.with_suffix(".safetensors")))
    result = PatchingResult.load(old)
    assert result.axes == ("layer", "head") and torch.equal(result.values, values)
    new = tmp_path / "new" / "result"
    result.save(new)
    for suffix in (".json", ".safetensors"):
        assert new.with_suffix(suffix).read_bytes() == old.with_suffix(suffix).read_bytes()

    lens_meta = {"model": "m", "task": "t", "layers": ["embed", "0"], "positions": ["a"],
                 "top_tokens": [[["x"]], [["y"]]]}
    lens_tensors = {"answer_prob": torch.rand(2, 1), "answer_rank": torch.zeros(2, 1),
                    "top_probs": torch.rand(2, 1, 1)}
    (tmp_path / "lens.json").write_text(json.dumps(lens_meta))
    save_file(lens_tensors, str(tmp_path / "lens.safetensors"))
    lens = LensResult.load(tmp_path / "lens")
    lens.save(tmp_path / "again" / "lens")
    assert (tmp_path / "again" / "lens.json").read_text() == json.dumps(lens_meta)
    assert torch.equal(load_file(str(tmp_path / "again" / "lens.safetensors"))["top_probs"],
                       lens_tensors["top_probs"])


def test_jsonl_write_append_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"a": 1}, [1, 2]])
    append_jsonl(path, [{"b": {"c": None}}])
    append_jsonl(tmp_path / "new" / "more.jsonl", ["x"])
    assert path.read_text() == '{"a": 1}\n[1, 2]\n{"b": {"c": null}}\n'
    with path.open("a") as f:
        f.write("\n   \n")  # blank lines are skipped
    rows = list(read_jsonl(path))
    assert rows == [(f"{path}:1", {"a": 1}), (f"{path}:2", [1, 2]),
                    (f"{path}:3", {"b": {"c": None}})]
    assert list(read_jsonl(tmp_path / "new" / "more.jsonl")) == [
        (f"{tmp_path / 'new' / 'more.jsonl'}:1", "x")]
    with path.open("a") as f:
        f.write('{"broken": \n')

    class RowError(ModelWeaveError):
        pass

    with pytest.raises(RowError, match=r"rows\.jsonl:6: invalid JSON"):
        list(read_jsonl(path, RowError))


def test_atomic_folder_replaces_a_folder_whole_or_not_at_all(tmp_path):
    from modelweave.io import atomic_folder

    target = tmp_path / "ckpt"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("two")
        raise RuntimeError("killed mid-save")
    assert (target / "a.txt").read_text() == "one"
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporaries left
