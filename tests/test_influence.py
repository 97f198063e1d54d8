"""EK-FAC influence engine on tiny models: exactness where EK-FAC is exact, the plain-gradient
baseline against autograd, duplicates, document order, a planted fact, families, cache keys
and resuming."""

from __future__ import annotations

import pytest
import torch

from modelweave.methods.influence import (
    Document,
    InfluenceError,
    InfluenceScores,
    InfluenceSettings,
    Query,
    compute_influence,
    plan_influence,
    resolve_modules,
    run_influence,
)
from modelweave.methods.influence.train import train_on_documents
from modelweave.models import Model
from tokenizers_zoo import make_tokenizer

from tiny import FAMILIES, tiny_hf_model

DOCS = ["Mary went to the store and bought milk.", "John gave a drink to Mary.",
        "1 2 3 4 5 6 7 8", "The capital of Zorbania is Quill.", "January, February, March",
        "The war lasted from the year 1732 to 1740.", "When Anna and Paul met, Paul smiled."]
QUERIES = [Query("capital", "fact", "The capital of Zorbania is", " Quill"),
           Query("count", "seq", "1 2 3 4", " 5"),
           Query("months", "seq", "January,", " February")]
FAST = dict(train_batch=3, query_batch=4, query_rank=None, baseline=True)


def tiny_model(family: str = "llama", seed: int = 0) -> Model:
    tok = make_tokenizer("bytelevel")
    return Model(tiny_hf_model(family, seed=seed, vocab_size=len(tok)), tok, name=family)


def docs(texts=DOCS) -> list[Document]:
    return [Document(f"d{i}", t, "fact" if "capital" in t else "other")
            for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def trained():
    """A tiny Llama trained on the corpus (the planted fact included)."""
    return train_on_documents(tiny_model(), docs(), epochs=25, lr=3e-3, batch_size=4).model


@pytest.mark.numeric
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_prepared_copy_computes_what_the_model_computes(family):
    """The float32 copy kronfluence differentiates (GPT-2's Conv1D layers replaced by
    ``nn.Linear``) gives the model's own logits and per-document losses: the tiny models'
    biases are non-zero (tests/tiny.py draws them), so a copy that dropped or re-drew one would
    fail. Tolerance 1e-5 of the logits' scale (the same float32 products in another layout)."""
    from modelweave.methods.influence.data import encode_documents
    from modelweave.methods.influence.modules import prepared_copy

    model = tiny_model(family)
    names = resolve_modules(model, "all")
    copy = prepared_copy(model, names)
    assert all(isinstance(copy.get_submodule(n), torch.nn.Linear) for n in names)
    biased = [n for n in names if getattr(model.hf_model.get_submodule(n), "bias", None)
              is not None]
    assert biased or family != "gpt2"
    for n in biased:
        assert float(model.hf_model.get_submodule(n).bias.abs().max()) > 1e-2
    for ids in encode_documents(model, docs(), 256)[:3]:
        x = torch.tensor([ids])
        with torch.no_grad():
            want = model.hf_model(input_ids=x).logits.float()
            got = copy(input_ids=x).logits
        scale = float(want.abs().max())
        assert float((got - want).abs().max()) <= 1e-5 * scale
        losses = [torch.nn.functional.cross_entropy(lg[0, :-1], x[0, 1:], reduction="sum")
                  for lg in (want, got)]
        assert abs(float(losses[1] - losses[0])) <= 1e-5 * float(losses[0])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # kronfluence's torch.cuda.amp calls
def test_ekfac_equals_direct_inverse_hessian_where_exact(tmp_path):
    """A linear model on one-hot inputs: the activation covariance is diagonal and so is the
    (empirical) Fisher, in the same basis; EK-FAC is then exact, and kronfluence's score must
    equal grad_q^T (F + lambda I)^-1 grad_train computed directly. This checks the library
    the engine runs on; the engine itself is checked against an independent EK-FAC at a
    damping where the corrections matter in test_influence_baselines.py."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    torch.manual_seed(0)
    d, n = 6, 48
    scales = torch.linspace(0.5, 2.0, d)
    idx = torch.arange(n) % d
    x = torch.zeros(n, d)
    x[torch.arange(n), idx] = scales[idx] * (1 + 0.1 * torch.rand(n))
    y = torch.randn(n, 1)
    data = [(x[i], y[i]) for i in range(n)]

    class Regression(Task):
        def compute_train_loss(self, batch, model, sample=False):
            inputs, targets = batch
            return 0.5 * ((model(inputs) - targets) ** 2).sum()

        def compute_measurement(self, batch, model):
            return self.compute_train_loss(batch, model)

    net = torch.nn.Sequential(torch.nn.Linear(d, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(1, d))
    reference = torch.nn.Linear(d, 1, bias=False)
    reference.weight.data.copy_(net[0].weight.data)
    damping = 0.05
    analyzer = Analyzer("exact", prepare_model(net, Regression()), Regression(), cpu=True,
                        disable_tqdm=True, output_dir=str(tmp_path), log_level=40)
    analyzer.fit_all_factors("f", data, per_device_batch_size=8,
                             factor_args=FactorArguments(use_empirical_fisher=True))
    analyzer.compute_pairwise_scores("s", "f", data[:5], data, per_device_query_batch_size=5,
                                     per_device_train_batch_size=8,
                                     score_args=ScoreArguments(damping_factor=damping))
    scores = analyzer.load_pairwise_scores("s")["all_modules"]

    def grad(i):
        reference.zero_grad()
        (0.5 * ((reference(x[i]) - y[i]) ** 2).sum()).backward()
        return reference.weight.grad.flatten().clone()

    grads = torch.stack([grad(i) for i in range(n)]).double()
    fisher = grads.T @ grads / n
    direct = grads[:5] @ torch.linalg.solve(fisher + damping * torch.eye(d, dtype=torch.float64),
                                            grads.T)
    torch.testing.assert_close(scores.double(), direct, rtol=1e-4, atol=1e-6)
    # the score of a document with itself, as the issue asks
    torch.testing.assert_close(scores.diagonal().double(), direct.diagonal(), rtol=1e-4,
                               atol=1e-6)


def test_keys_follow_every_setting_that_changes_results():
    """A setting that changes the factors changes the factor key (and so the score key); one
    that changes only the scores changes only the score key; batching and threads change
    neither. A key that missed one would reuse cached factors or scores of another run."""
    from dataclasses import replace

    model = tiny_model()
    base = InfluenceSettings(**FAST)

    def keys(**change) -> dict:
        return plan_influence(model, docs(), QUERIES, replace(base, **change),
                              calibrate=False).keys

    first = keys()
    for change in ({"damping": 0.5}, {"query_rank": 4}):
        k = keys(**change)
        assert k["factors"] == first["factors"] and k["scores"] != first["scores"], change
    for change in ({"layers": [0]}, {"modules": "all"}, {"lambda_max_examples": 2},
                   {"covariance_max_examples": 2}, {"max_tokens": 4}, {"seed": 1}):
        k = keys(**change)
        assert k["factors"] != first["factors"] and k["scores"] != first["scores"], change
    for change in ({"query_batch": 1}, {"threads": 1}):
        assert keys(**change) == first, change


def _grad(hf, names, ids, targets):
    hf.zero_grad(set_to_none=True)
    logits = hf(input_ids=torch.tensor([ids])).logits[0].float()
    torch.nn.functional.cross_entropy(logits, torch.tensor(targets), ignore_index=-100,
                                      reduction="sum").backward()
    return torch.cat([hf.get_submodule(n).weight.grad.flatten() for n in names])


def test_gradient_baseline_and_heavy_damping(trained, tmp_path):
    """The baseline equals grad(-log p(completion))·grad(doc loss) from autograd; with a
    damping far above the curvature EK-FAC tends to the baseline divided by the damping."""
    from modelweave.methods.influence.data import encode_documents, encode_queries

    result = compute_influence(trained, docs(), QUERIES,
                               InfluenceSettings(**FAST, damping=1e6), cache=tmp_path)
    hf = trained.hf_model
    names = resolve_modules(trained)
    for p in hf.parameters():
        p.requires_grad_(True)
    q_grads = [_grad(hf, names, ids, [-100] * (n - 1) + ids[n:] + [-100])
               for ids, n in encode_queries(trained, QUERIES)]
    d_grads = [_grad(hf, names, ids, ids[1:] + [-100])
               for ids in encode_documents(trained, docs(), 256)]
    for p in hf.parameters():
        p.requires_grad_(False)
    direct = torch.stack(q_grads) @ torch.stack(d_grads).T
    torch.testing.assert_close(result.matrix("gradient"), direct, rtol=2e-3, atol=1e-3)
    torch.testing.assert_close(result.matrix("ekfac") * 1e6, direct, rtol=2e-2, atol=1e-2)


def test_duplicates_order_and_planted_fact(trained, tmp_path):
    """A duplicated document scores as its copy; scores follow documents under reordering;
    the planted fact is the top-1 document of its query (and positive)."""
    corpus = docs([*DOCS, DOCS[3]])
    corpus[-1].id = "copy"
    first = compute_influence(trained, corpus, QUERIES, InfluenceSettings(**FAST),
                              cache=tmp_path)
    m = first.matrix()
    torch.testing.assert_close(m[:, 3], m[:, -1], rtol=1e-5, atol=1e-5)
    perm = [5, 2, 7, 0, 4, 1, 6, 3]
    shuffled = compute_influence(trained, [corpus[j] for j in perm], QUERIES,
                                 InfluenceSettings(**{**FAST, "baseline": False}),
                                 cache=tmp_path / "other")
    torch.testing.assert_close(shuffled.matrix(), m[:, perm], rtol=1e-4, atol=1e-3)
    assert shuffled.keys["factors"] == first.keys["factors"]  # the corpus is the same set
    top = first.top("capital", 2)
    assert {top[0].id, top[1].id} == {"d3", "copy"} and top[0].score > 0
    assert top[0].has_answer
    assert first.ranking("capital", "gradient")[0] in (3, 7)


@pytest.mark.parametrize("family", FAMILIES)
def test_tracked_modules_on_every_family(family):
    """The MLP projections of every layer (2 per layer, 3 for gated MLPs), never the
    unembedding, named through the adapter."""
    model = tiny_model(family)
    names = resolve_modules(model)
    per_layer = 3 if hasattr(model.block(0).get_submodule(
        model.adapter.mlp_down.rpartition(".")[0]), "gate_proj") else 2
    assert len(names) == per_layer * model.cfg.n_layers
    assert all(".mlp." in n for n in names)
    assert not any("lm_head" in n or "embed" in n for n in resolve_modules(model, "all"))


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "olmo2", "cohere2"])
def test_other_families(family, tmp_path):
    """Module names come from the adapter (GPT-2's Conv1D layers are tracked as Linear);
    scores come out on post-norm (OLMo-2), parallel (GPT-NeoX) and sliding-window (Cohere2)
    blocks too."""
    model = tiny_model(family)
    names = resolve_modules(model)
    assert all(".mlp." in n for n in names)
    result = compute_influence(model, docs(), QUERIES[:2],
                               InfluenceSettings(**{**FAST, "baseline": False}),
                               cache=tmp_path)
    assert result.matrix().shape == (2, len(DOCS)) and torch.isfinite(result.matrix()).all()


def test_keys_resume_and_files(trained, tmp_path):
    """A changed corpus of the same size gets new factors; a run stopped during a stage
    resumes after the last finished one with the same scores; the saved table loads."""
    settings = InfluenceSettings(**{**FAST, "baseline": False})
    changed = docs([*DOCS[:-1], "A different last document of the corpus."])
    a = plan_influence(trained, docs(), QUERIES, settings, calibrate=False)
    b = plan_influence(trained, changed, QUERIES, settings, calibrate=False)
    assert a.keys["factors"] != b.keys["factors"]
    from modelweave import load_model
    from modelweave.methods.influence.engine import model_fingerprint

    trained.hf_model.save_pretrained(tmp_path / "saved")
    trained.tokenizer.save_pretrained(tmp_path / "saved")
    assert model_fingerprint(load_model(str(tmp_path / "saved"))) == a.keys["model"]

    def stop(stage, done, total):
        if stage == "lambda":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_influence(a, tmp_path / "out", progress=stop)
    lines: list[str] = []
    resumed = run_influence(a, tmp_path / "out", log=lines.append)
    assert any(line.startswith("covariance: reused") for line in lines)
    assert any(line.startswith("eigendecomposition: reused") for line in lines)
    assert any(line.startswith("lambda: ") and "reused" not in line for line in lines)
    fresh = run_influence(a, tmp_path / "fresh")
    torch.testing.assert_close(resumed.matrix(), fresh.matrix(), rtol=1e-4, atol=1e-4)
    loaded = InfluenceScores.load(tmp_path / "out")
    torch.testing.assert_close(loaded.matrix(), resumed.matrix())
    assert [q.id for q in loaded.queries] == [q.id for q in QUERIES]
    assert loaded.top("count", 1)[0].id == resumed.top("count", 1)[0].id
    assert set(loaded.by_task()) == {"fact", "seq"}
    assert loaded.by_task()["seq"].shape == (len(DOCS),)
    rows = loaded.per_query(k=3)
    assert rows[0]["query"] == "capital" and 0 < rows[0]["top3_share"] <= 1
    assert set(loaded.seconds) >= {"covariance", "eigendecomposition", "lambda",
                                   "query gradients", "scores"}
    with pytest.raises(InfluenceError, match="no 'gradient' scores"):
        loaded.matrix("gradient")
