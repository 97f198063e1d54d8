"""The heuristic-neuron pipeline end to end on a tiny Llama trained here to do + and - on
operands 0..9: every stage's numbers checked against independent computations, results round
trip, knockouts, emergence over saved checkpoints, CLI and experiment files."""

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from arith_zoo import train_arith_model
from modelweave.analysis.heuristics import HeuristicMatch, heuristic_sets
from modelweave.analysis.heuristics.emergence import emergence, find_checkpoints
from modelweave.analysis.heuristics.knockout import (
    accuracy,
    heuristic_knockout,
    holds,
    prompt_knockout,
)
from modelweave.analysis.heuristics.pipeline import find_heuristics
from modelweave.analysis.heuristics.prompts import arithmetic_batch, grid_batch
from modelweave.analysis.heuristics.results import load_results, save_results, summary
from modelweave.cli import app
from modelweave.models import load_model
from modelweave.models.adapters import linear_weight
from modelweave.tasks import TaskError
from test_report_browser import dump_dom

pytestmark = pytest.mark.xdist_group("arith")
SMALL = dict(op_max=10, n_prompts=None, n_discovery=30, n_eval=60, n_reference=100,
             classify_k=10, min_neurons=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("arith")
    model = train_arith_model(out, steps=300, save_every=100)
    model.hf_model.save_pretrained(out / "final")
    model.tokenizer.save_pretrained(out / "final")
    return out, model


@pytest.fixture(scope="module")
def results(trained):
    return find_heuristics(trained[1], "+,-", **SMALL)


@pytest.mark.numeric
def test_every_stage_agrees_with_a_direct_computation(trained, results):
    model = trained[1]
    assert [r.operator for r in results] == ["+", "-"]
    agree = 0
    for r in results:
        assert r.n_discovery == (30 if r.operator == "+" else 27) and r.n_eval > 0  # 55 "-" prompts
        # the heads curve stops at the first count reaching 0.9, which is the chosen one
        assert r.heads.faithfulness[-1] >= 0.9 and r.heads.chosen == r.heads.counts[-1]
        assert r.circuit_faithfulness == pytest.approx(r.heads.faithfulness[-1])
        # every neuron kept = the heads + MLPs circuit
        assert r.neurons.faithfulness[-1] == pytest.approx(r.circuit_faithfulness, abs=1e-6)
        assert 0 <= r.neurons.first_layer < model.cfg.n_layers
        # key maps are the neurons' activations at "=", kv maps key * direct push
        grid = grid_batch(model, r.operator, op_max=10)
        L, n = r.maps.neurons[3]
        _, cache = model.run_with_cache(grid.clean, f"blocks.{L}.mlp.hook_post")
        direct = cache[f"blocks.{L}.mlp.hook_post"][torch.arange(len(grid)), grid.lengths - 1, n]
        assert torch.allclose(r.maps.key[3], direct, atol=1e-5)
        unembed = model.hf_model.get_output_embeddings().weight
        down = linear_weight(model.block(L).mlp.down_proj)[:, n]
        push = (unembed - unembed.mean(0))[grid.answers] @ down
        assert torch.allclose(r.maps.kv[3], direct * push, atol=1e-5)
        assert r.maps.key.shape == (10 * len(range(r.neurons.first_layer, 3)), len(grid))
        # the confirmation re-measures the top attributed neurons exactly
        assert len(r.confirm["exact"]) == 20
        agree += sum((a > 0) == (e > 0) for a, e in zip(r.confirm["attribution"],
                                                        r.confirm["exact"], strict=True))
        assert set(r.seconds) == {"prompts", "localise", "neurons", "maps", "classify",
                                  "nulls", "knockouts"}
    # attribution signs agree with exact patching, pooled over both operators' 20 neurons (one
    # operator's count swings with float rounding: 13..20 over seeds and paths; seed 0's "+"
    # is 19 with 1 thread but 14 with 2). Measured on an AMD EPYC, seeds 0..4, AVX512 kernels /
    # ATEN_CPU_CAPABILITY=default, 1 thread: 37/38, 31/31, 39/38, 36/34, 37/39 of 40; seed 0
    # with 2 threads (AVX512): 32. Worst 31, so >= 28 leaves 3; random signs reach 28 with
    # probability 0.008 (Binomial(40, 1/2)); the rank correlation is worse conditioned (-0.09..0.64)
    assert agree >= 28


def test_holds_agrees_with_the_classifier_sets():
    op1, op2 = torch.meshgrid(torch.arange(30), torch.arange(1, 30), indexing="ij")
    op1, op2 = op1.flatten(), op2.flatten()
    for op in "+-*/":
        legal = op1 >= op2 if op == "-" else torch.ones_like(op1, dtype=torch.bool)
        a, b = op1[legal], op2[legal]
        sets = heuristic_sets(a, b, op)
        assert len(sets) > 100
        for name, hs in sets.items():
            assert torch.equal(holds(name, a, b, op), hs.mask), (op, name)
    assert holds("result_multi_value_2=[3, 7]", torch.tensor([6, 14, 5]),
                 torch.tensor([2, 2, 1]), "/").tolist() == [True, True, False]
    with pytest.raises(TaskError, match="unknown heuristic"):
        holds("op3_range_1_2", op1, op2, "+")


def test_knockouts_ablate_exactly_the_named_neurons(trained):
    model = trained[1]
    batch = arithmetic_batch(model, "+", op_max=10, n=None)
    owners = [(2, 1), (2, 7), (1, 3)]
    k = heuristic_knockout(model, batch, "op1_range_0_5", owners, [(2, i) for i in range(48)]
                           + [(1, i) for i in range(48)], seed=1)
    related = [i for i, ex in enumerate(batch.examples) if ex.meta["op1"] < 5]

    def zeroed(tensor, hook):
        out = tensor.clone()
        out[..., [n for L, n in owners if hook.layer == L]] = 0
        return out

    sites = [("blocks.2.mlp.hook_post", zeroed), ("blocks.1.mlp.hook_post", zeroed)]
    part = batch.select(related)
    logits = model.run_with_hooks(part.clean, sites)
    want = (logits[torch.arange(len(part)), part.lengths - 1].argmax(-1) == part.answers)
    assert k.related == pytest.approx(float(want.float().mean()))
    assert k.n_related == len(related) and k.n_unrelated == len(related)

    # per prompt: neuron (2, 5) goes where op1 < 5, neuron (2, 9) where op2 is even
    matches = {(2, 5): [HeuristicMatch("op1_range_0_5", 0.9, "op_range", 50)],
               (2, 9): [HeuristicMatch("op2_0mod2", 0.7, "op_mod", 50)]}
    pk = prompt_knockout(model, batch, matches, [(2, i) for i in range(48)], per_layer=1)
    masks = torch.ones(len(batch), model.cfg.d_mlp)
    for i, ex in enumerate(batch.examples):
        if ex.meta["op1"] < 5:
            masks[i, 5] = 0  # the better score wins the one slot
        elif ex.meta["op2"] % 2 == 0:
            masks[i, 9] = 0
    assert pk.targeted == pytest.approx(float(accuracy(model, batch, masks={2: masks}).mean()))
    assert pk.neurons == pytest.approx(float((masks == 0).sum()) / len(batch))


def test_results_round_trip(tmp_path, trained, results):
    save_results(results, tmp_path, {"model": "tiny"})
    back = load_results(tmp_path)
    assert back.meta["model"] == "tiny"
    for a, b in zip(results, back.results, strict=True):
        assert summary(a, 48) == summary(b, 48)
        assert torch.equal(a.ranking, b.ranking) and torch.equal(a.maps.kv, b.maps.kv)
        assert a.matches == b.matches and a.knockouts == b.knockouts
    assert back.by_operator("-").operator == "-"
    for a in back.results:  # the nulls travel with the results
        assert set(a.nulls) == {"random", "base", "permuted"} and a.decoding is not None
        assert not a.nulls["base"].computed  # no base model given
    from modelweave.experiments.methods.heuristics import Heuristics

    names = Heuristics().components(tmp_path, {})
    assert names == sorted({f"m{L}.n{n}" for r in results for (L, n), ms in r.matches.items()
                            if ms}, key=lambda x: tuple(int(v) for v in x[1:].split(".n")))
    assert names  # some top neurons match


def test_emergence_over_checkpoints(trained):
    out, _ = trained
    found = find_checkpoints(out)
    assert [s for s, _ in found] == [100, 200, 300]
    result = emergence(found, "+", op_max=10, n_prompts=None, n_discovery=30, n_eval=60,
                       n_reference=100, classify_k=10)
    assert result["steps"] == [100, 200, 300]
    assert result["share_present"][-1] == 1.0  # the final checkpoint has its own matches
    assert result["shared_faithfulness_ratio"][-1] == pytest.approx(1.0)
    assert len(result["final_matches"]) == result["n_matches"][-1]
    # (the share itself, against planted matches: test_heuristics_data's
    # test_emergence_share_is_of_the_final_checkpoints_matches)
    with pytest.raises(TaskError, match="no step-N"):
        find_checkpoints(out / "final")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)


def test_cli_json_files_and_errors(trained, tmp_path):
    out, _ = trained
    res = invoke("heuristics", "--model", out / "final", "--operators", "+", "--max-op", 10,
                 "--n-prompts", 1000, "--n-discovery", 30, "--n-eval", 60, "--top-k", 10,
                 "--min-neurons", 2, "--json", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout.strip().splitlines()[-1])
    (row,) = data["operators"]
    assert row["operator"] == "+" and row["classified"] == row["neurons_per_layer"] * 0 + len(
        load_results(tmp_path).results[0].matches)
    for name in ("heuristics.json", "add.safetensors", "add_maps.html", "add_curves.html",
                 "add_families.html", "add_knockouts.html"):
        assert (tmp_path / name).exists(), name
    bad = subprocess.run([sys.executable, "-c", "from modelweave.cli import main; main()",
                          "heuristics", "--model", str(out / "final"), "--operators", "+,^"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "error: unknown arithmetic operator '^'; operators are +, -, *, / (integer division), "
        "e.g. '+,-'"]
    res = invoke("heuristics-emergence", out, "--max-op", 10, "--n-prompts", 1000,
                 "--top-k", 10, "--json", "--out", tmp_path / "em")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["steps"] == [100, 200, 300]
    assert (tmp_path / "em" / "emergence.html").exists()


def test_experiment_unit_loads_and_reports(trained, tmp_path):
    import yaml

    from modelweave.experiments import (
        ConfigError,
        RunStore,
        build_report,
        load_experiment,
        run_experiment,
    )

    out, _ = trained
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"name": "h", "model": str(out / "final"), "tasks": ["arith"],
                                    "methods": [{"heuristics": {
                                        "operators": "+", "max_op": 10, "n_prompts": 1000,
                                        "n_discovery": 30, "top_k": 10, "min_neurons": 2,
                                        "checkpoints": str(out)}}]}))
    run_experiment(load_experiment(path), tmp_path / "run")
    store = RunStore(tmp_path / "run")
    (uid,) = store.records()
    loaded = store.load(uid)
    assert loaded.results[0].operator == "+"
    assert loaded.meta["emergence"][0]["steps"] == [100, 200, 300]
    assert store.records()[uid]["summary"]["emergence_share_present"]["+"][-1] == 1.0
    assert "+ neurons_per_layer" in store.to_dataframe().columns
    report = build_report(tmp_path / "run")
    html = report.read_text()
    assert "Arithmetic heuristic neurons" in html and "heuristics-0-0-maps" in html
    assert "heuristics-0-0-emergence" in html
    dom = dump_dom(report)  # drawn in headless Chromium without JavaScript errors
    start = dom.index('id="mw-errors"')
    assert dom[start: dom.index("</div>", start)].endswith('hidden="">'), "JavaScript errors"
    section = dom[dom.index('<section id="heuristics"'):]
    assert section[: section.index("</section>")].count("js-plotly-plot") == 5
    bad = yaml.safe_load(path.read_text())
    bad["methods"][0]["heuristics"]["operators"] = "+,%"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"methods\[0\]\.heuristics\.operators: unknown"):
        load_experiment(path)
    assert load_model(str(out / "final")).cfg.n_layers == 3


def test_position_effects_equal_plain_patched_runs(trained):
    """Eq. 1 of a few (component, position) patches, re-computed with plain hooks."""
    from modelweave.analysis.heuristics.localize import position_effects, uniform_rows
    from modelweave.metrics.scores import prob_change_effect

    model = trained[1]
    batch = arithmetic_batch(model, "+,-", op_max=10, n=None)
    effects = position_effects(model, batch)
    part = uniform_rows(batch)
    assert effects.n == len(part) and effects.positions == ("OP1", "OPERATOR", "OP2", "EQ")
    base = model(part.clean)[:, -1]
    for kind, layer, index, name in (("attn.hook_z", 1, 2, "OP2"), ("attn.hook_z", 0, 0, "OP1"),
                                     ("mlp.hook_post", 2, None, "EQ"),
                                     ("mlp.hook_post", 0, None, "OPERATOR")):
        site = f"blocks.{layer}.{kind}"
        _, source = model.run_with_cache(part.corrupt, site)
        pos = int(part.positions[name][0])

        def patch(tensor, _hook, site=site, index=index, pos=pos, source=source):
            out = tensor.clone()
            if index is None:
                out[:, pos] = source[site][:, pos]
            else:
                out[:, pos, index] = source[site][:, pos, index]
            return out

        patched = model.run_with_hooks(part.clean, [(site, patch)])[:, -1]
        want = prob_change_effect(base, patched, part.answers, part.wrong_ids[:, 0]).mean()
        col = effects.positions.index(name)
        got = effects.heads[layer, index, col] if index is not None else effects.mlps[layer, col]
        assert float(got) == pytest.approx(float(want), rel=1e-4, abs=1e-6), (site, name)
    assert effects.head_ranking()[0] == divmod(int(effects.heads.mean(-1).argmax()), 4)
