"""The planted-bug list (tests/mutants/*.toml) stays applicable, and the runner's bookkeeping."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutation", ROOT / "scripts" / "mutation.py")
mutation = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("mutation", mutation)  # dataclasses look their module up there
_spec.loader.exec_module(mutation)


def test_every_planted_bug_still_applies_to_the_code_and_names_existing_tests():
    mutants = mutation.load_specs()
    assert len(mutants) >= 3
    for m in mutants:
        mutation.check_spec(m)  # raises SpecError naming the mutant when the code moved on
        assert m.apply((ROOT / m.file).read_text()) != (ROOT / m.file).read_text()


def _mutant(find, nth=0):
    return mutation.Mutant(id="m", group="g", file="f.py", find=find, replace="Y", kind="sign",
                           why="w", tests=("tests/x.py",), nth=nth)


def test_a_mutant_replaces_exactly_the_occurrence_it_names():
    assert _mutant("b").apply("abc") == "aYc"
    assert _mutant("a", nth=1).apply("a-a-a") == "a-Y-a"
    with pytest.raises(mutation.SpecError, match="not in f.py"):
        _mutant("z").apply("abc")
    with pytest.raises(mutation.SpecError, match="occurs 3 times"):
        _mutant("a").apply("a-a-a")
    with pytest.raises(mutation.SpecError, match="nth=3"):
        _mutant("a", nth=3).apply("a-a-a")


def test_a_spec_file_with_a_missing_key_or_unknown_kind_is_refused(tmp_path):
    (tmp_path / "g.toml").write_text('[[mutant]]\nid = "x"\nfile = "a"\nfind = "b"\n')
    with pytest.raises(mutation.SpecError, match="g.toml: mutant x: missing kind, replace"):
        mutation.load_specs(tmp_path)
    (tmp_path / "g.toml").write_text(
        '[[mutant]]\nid = "x"\nfile = "a"\nfind = "b"\nreplace = "c"\nwhy = "w"\n'
        'tests = ["t"]\nkind = "typo"\n')
    with pytest.raises(mutation.SpecError, match="kind 'typo'"):
        mutation.load_specs(tmp_path)


def test_kill_rate_counts_crashes_and_timeouts_as_kills_and_leaves_equivalents_out():
    def out(status, group="g"):
        return mutation.Outcome("i", group, "sign", status, 0.0, "w")

    table = mutation.summarise([out("killed"), out("error"), out("timeout"), out("survived"),
                                out("equivalent"), out("baseline-fails"), out("killed", "h")])
    assert table["g"] == {"mutants": 6, "killed": 3, "crashed": 2, "survived": 1, "equivalent": 1,
                          "baseline_fails": 1, "kill_rate": 0.75}
    assert table["all"]["killed"] == 4 and table["all"]["kill_rate"] == 0.8
    assert table["h"]["kill_rate"] == 1.0
