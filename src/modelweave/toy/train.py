"""Train a small transformer on a toy task on the CPU, as an ordinary HF checkpoint series.

``train_toy(ToyConfig(...), OUT)`` builds an HF config of the GPT-2 or Llama family, trains with
AdamW (decoupled weight decay, linear warm-up; the steps of :mod:`modelweave.models.training`,
evaluation and checkpoints being its hooks), evaluates train and test loss and accuracy every
``eval_every`` steps and saves ``OUT/checkpoints/step-N/`` every ``save_every`` steps (and the
last step): ``config.json`` + ``model.safetensors`` + the word-level tokenizer, which
``load_model`` reads like any HF directory. ``OUT/final/`` is the last step's model;
``OUT/train.json`` holds the settings, the history and the timing. Each evaluation also
records the accuracy on the dataset's named test subsets (modular addition:
``test_swap_free_acc``, and ``test_swap_trained_acc`` on an ordered split).

**Dense checkpoints through a transition.** With ``dense_every = N`` (default 25; 0: off),
whenever the latest evaluation shows the training set fitted but the test set not
(``train_acc >= 0.99 > test_acc``: memorised, not yet generalised -- grokking's plateau and
jump), the run also evaluates and saves a checkpoint every ``N`` steps, until an evaluation
shows ``test_acc >= 0.99`` (or the fit lost; that step is saved too). The phase is decided
by evaluations only, so a resumed run makes the same checkpoints.

**Resume.** The latest checkpoint also holds ``trainer_state.pt`` (optimiser and schedule
state; removed from older checkpoints). Training batches depend only on ``(seed, step)`` and
the initial weights only on ``seed``, so a run resumed from step ``s`` follows the
uninterrupted run exactly. A non-empty ``OUT`` without ``resume=True`` is refused.

**Attention-only models** keep their MLP modules (so every site and every method works the
same) but with width 1 and every MLP weight and bias zero and frozen, together with the norm
that feeds the MLP: the MLP adds exactly 0 to the residual stream (``hook_mlp_out`` reads 0)
and the config records ``modelweave_toy.attn_only = true``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..io import atomic_folder, load_tensors, read_json, write_json
from ..models.training import Batch, adamw, train_steps
from ..progress import Progress
from ..tasks.toy_data import ToyDataset, ToyError, checkpoint_params, make_dataset
from .vocab import build_tokenizer

FAMILIES = ("gpt2", "llama")
# settings a resumed run may change (they do not change the trajectory)
_FREE = ("steps", "save_every", "eval_every", "dense_every")
#: the transition's bounds for dense checkpoints: train fitted, test not yet
FIT, GENERALISED = 0.99, 0.99


@dataclass
class ToyConfig:
    """Everything that determines a toy run.

    Attributes:
        task, task_params: the dataset (:data:`modelweave.tasks.toy_data.DATASETS`).
        family: ``"gpt2"`` (learned positions, LayerNorm) or ``"llama"`` (rotary, RMSNorm,
            gated MLP).
        layers, heads, d_model: shape; ``d_mlp`` defaults to ``4 * d_model``.
        attn_only: MLPs zeroed and frozen (see the module docstring).
        act: MLP activation (GPT-2: ``relu`` as Nanda et al., ``gelu_new`` ...; Llama: ``silu``).
        steps, lr, weight_decay, betas, warmup: AdamW with a linear warm-up of ``warmup`` steps.
        batch_size: sequences per step (modular addition is always full-batch).
        seed: initial weights and batch order.
        save_every, eval_every: checkpoint and evaluation intervals (steps).
        dense_every: evaluation and checkpoint interval through a memorised-not-generalised
            phase (see the module docstring; 0: off).
    """

    task: str = "modular_addition"
    task_params: dict = field(default_factory=dict)
    family: str = "gpt2"
    layers: int = 1
    heads: int = 4
    d_model: int = 128
    d_mlp: int | None = None
    attn_only: bool = False
    act: str = "relu"
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup: int = 10
    batch_size: int = 64
    seed: int = 0
    save_every: int = 500
    eval_every: int = 100
    dense_every: int = 25

    def to_dict(self) -> dict:
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ToyConfig:
        data = dict(data)
        data["betas"] = tuple(data.get("betas", (0.9, 0.98)))
        return cls(**data)

    def validate(self) -> ToyDataset:
        """Raise :class:`ToyError` for an impossible config; return the dataset."""
        if self.family not in FAMILIES:
            raise ToyError(f"unknown family {self.family!r}; use one of {', '.join(FAMILIES)}")
        for name in ("layers", "heads", "d_model", "steps", "save_every", "eval_every",
                     "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ToyError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ToyError(f"heads ({self.heads}) must divide d_model ({self.d_model}); "
                           f"e.g. --heads {math.gcd(self.d_model, 4) or 1}")
        if self.family == "llama" and (self.d_model // self.heads) % 2:
            raise ToyError(f"llama's rotary embedding needs an even head size; d_model/heads = "
                           f"{self.d_model // self.heads}")
        if int(self.dense_every) < 0:
            raise ToyError(f"dense_every must be 0 (off) or positive, got {self.dense_every}")
        if self.d_mlp is not None and self.d_mlp < 1:
            raise ToyError(f"d_mlp must be at least 1, got {self.d_mlp}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ToyError(f"lr must be positive and weight_decay non-negative, got lr={self.lr}, "
                           f"weight_decay={self.weight_decay}")
        from transformers.activations import ACT2CLS

        if self.act not in ACT2CLS:
            raise ToyError(f"unknown activation {self.act!r}; use one of "
                           f"{', '.join(sorted(ACT2CLS))}")
        return make_dataset(self.task, **self.task_params)


def build_model(cfg: ToyConfig, data: ToyDataset):
    """A freshly initialised HF ``*ForCausalLM`` for ``cfg`` (seeded by ``cfg.seed``)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    d_mlp = 1 if cfg.attn_only else (cfg.d_mlp or 4 * cfg.d_model)
    meta = {"task": cfg.task, "task_params": data.params, "attn_only": cfg.attn_only}
    common = dict(vocab_size=data.d_vocab, bos_token_id=data.bos_id, eos_token_id=data.bos_id,
                  pad_token_id=data.bos_id - 1, tie_word_embeddings=False)
    if cfg.family == "gpt2":
        hf_cfg = GPT2Config(n_positions=data.n_ctx, n_embd=cfg.d_model, n_layer=cfg.layers,
                            n_head=cfg.heads, n_inner=d_mlp, activation_function=cfg.act,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    else:
        hf_cfg = LlamaConfig(hidden_size=cfg.d_model, intermediate_size=d_mlp,
                             num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                             num_key_value_heads=cfg.heads, max_position_embeddings=data.n_ctx,
                             hidden_act=cfg.act if cfg.act != "relu" else "relu", **common)
    hf_cfg.modelweave_toy = meta
    torch.manual_seed(cfg.seed)
    model = (GPT2LMHeadModel if cfg.family == "gpt2" else LlamaForCausalLM)(hf_cfg)
    if cfg.attn_only:
        for name, param in model.named_parameters():
            if _mlp_param(name):
                with torch.no_grad():
                    param.zero_() if ".mlp." in name else None
                param.requires_grad_(False)
    return model.float()


def _mlp_param(name: str) -> bool:
    """Parameters of the MLPs and of the norms that feed them."""
    return any(k in name for k in (".mlp.", ".ln_2.", ".post_attention_layernorm."))


def tokenizer_for(data: ToyDataset):
    """The checkpoint's tokenizer for a dataset (see :mod:`.vocab`)."""
    return build_tokenizer(data.words, add_bos=data.add_bos)


@torch.no_grad()
def evaluate(model, inputs: torch.Tensor, targets: torch.Tensor, chunk: int = 4096
             ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the target positions of ``inputs`` [B, T]."""
    total, correct, count = 0.0, 0, 0
    for i in range(0, len(inputs), chunk):
        logits = model(input_ids=inputs[i:i + chunk]).logits.float()
        tgt = targets[i:i + chunk]
        keep = tgt != -100
        total += float(torch.nn.functional.cross_entropy(logits[keep], tgt[keep], reduction="sum"))
        correct += int((logits[keep].argmax(-1) == tgt[keep]).sum())
        count += int(keep.sum())
    return total / count, correct / count


@dataclass
class ToyRun:
    """A finished (or resumed and finished) run."""

    out: Path
    config: ToyConfig
    history: list[dict]
    seconds: float
    resumed_from: int | None = None
    model: object = field(default=None, repr=False, compare=False)  # the trained HF model

    @property
    def final(self) -> Path:
        return self.out / "final"

    @property
    def checkpoints(self) -> list[Path]:
        return list_checkpoints(self.out)

    def to_dict(self) -> dict:
        last = self.history[-1] if self.history else {}
        return {"out": str(self.out), "final": str(self.final), "config": self.config.to_dict(),
                "seconds": self.seconds, "resumed_from": self.resumed_from,
                "checkpoints": [str(c) for c in self.checkpoints], "last": last,
                "history": self.history}


def list_checkpoints(out: str | Path) -> list[Path]:
    """``OUT/checkpoints/step-N`` folders, in step order."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step-") and (p / "config.json")
             .is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _save(model, tokenizer, folder: Path, trainer_state: dict | None) -> None:
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer_state.pt")


def _resume_point(out: Path, cfg: ToyConfig) -> tuple[Path | None, list[dict], float]:
    meta = out / "train.json"
    if not meta.is_file():
        raise ToyError(f"{out} is not empty and holds no toy run (no train.json); choose an "
                       "empty folder")
    saved = read_json(meta, error=ToyError)
    old, new = saved["config"], cfg.to_dict()
    recorded = checkpoint_params(cfg.task, saved.get("task_params", {}))
    now = cfg.validate().params
    if recorded and recorded != now:
        key = next(k for k in now if recorded.get(k) != now[k])
        raise ToyError(f"cannot resume {out}: its data has {key}={recorded.get(key)!r}, this "
                       f"run {now[key]!r} (pass -p {key}={recorded.get(key)!r})")
    diff = [k for k in new if k not in _FREE and old.get(k) != new[k]]
    if diff:
        raise ToyError(f"cannot resume {out}: its run has {diff[0]}={old.get(diff[0])!r}, "
                       f"this one {new[diff[0]]!r}")
    ckpts = [c for c in list_checkpoints(out) if (c / "trainer_state.pt").is_file()]
    if not ckpts:
        return None, [], 0.0
    step = int(ckpts[-1].name.split("-")[1])
    history = [h for h in saved.get("history", []) if h["step"] <= step]
    return ckpts[-1], history, float(saved.get("seconds", 0.0))


def check_output(out: str | Path, resume: bool) -> bool:
    """Whether ``out`` holds a run to resume; :class:`ToyError` if it is a file, or a non-empty
    folder without ``resume``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ToyError(f"{out} is a file; --out must be a folder")
    if out.is_dir() and any(out.iterdir()):
        if not resume:
            raise ToyError(f"output folder {out} is not empty; pass --resume to continue the run "
                           "in it, or choose an empty folder")
        return True
    return False


def train_toy(cfg: ToyConfig, out: str | Path, *, resume: bool = False,
              progress: Progress = None,
              on_step: Callable[[int, dict | None], None] | None = None,
              threads: int | None = None) -> ToyRun:
    """Train (or resume) a toy run into ``out``.

    Args:
        resume: continue from the latest checkpoint in ``out`` (its settings must match, but
            ``steps``, ``save_every`` and ``eval_every``); without it ``out`` must be empty.
        progress: phase ``"train"``: steps done of ``cfg.steps`` (from the resumed step).
        on_step: called after every step as ``on_step(step, record)``; ``record`` is the
            evaluation dict (``step, train_loss, train_acc, test_loss, test_acc``) on
            evaluation steps, else ``None``.
        threads: ``torch.set_num_threads`` for the run (default: leave as is).

    Raises:
        ToyError: impossible config, non-empty ``out`` without ``resume``, mismatched resume.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    data = cfg.validate()
    out = Path(out)
    start_ckpt, history, seconds_before = None, [], 0.0
    if check_output(out, resume):
        start_ckpt, history, seconds_before = _resume_point(out, cfg)
    if threads:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_for(data)
    model = build_model(cfg, data)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt, sched = adamw(trainable, lr=cfg.lr, steps=cfg.steps, weight_decay=cfg.weight_decay,
                       betas=tuple(cfg.betas), warmup=cfg.warmup)
    start = 0
    if start_ckpt is not None:
        weights = load_tensors(start_ckpt / "model.safetensors", error=ToyError)
        model.load_state_dict(weights, strict=False)
        state = torch.load(start_ckpt / "trainer_state.pt", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
    train_eval, test_eval, subsets = data.train_set(), data.test_set(), data.eval_subsets()
    dense = _dense_phase(history[-1] if history else None)
    began = time.perf_counter()

    def write_meta(seconds: float) -> None:
        write_json(out / "train.json", {
            "config": cfg.to_dict(), "task_params": data.params, "history": history,
            "seconds": seconds, "resumed_from": start or None,
            "threads": torch.get_num_threads()}, indent=1)

    if start == 0:
        write_meta(0.0)

    def batch(step: int) -> Batch:
        return (*data.batch(step, cfg.seed, cfg.batch_size), None)

    def on_dense(done: int) -> bool:
        return bool(cfg.dense_every) and dense and done % cfg.dense_every == 0

    dense_due: set[int] = set()  # dense steps (decided by the evaluation before them)

    def evaluation(done: int) -> dict | None:
        nonlocal dense
        if on_dense(done):
            dense_due.add(done)
        if not (done == 1 or done == cfg.steps or done % cfg.eval_every == 0
                or done in dense_due):
            return None
        tr_loss, tr_acc = evaluate(model, *train_eval)
        te_loss, te_acc = evaluate(model, *test_eval)
        record = {"step": done, "train_loss": tr_loss, "train_acc": tr_acc,
                  "test_loss": te_loss, "test_acc": te_acc}
        for name, subset in subsets.items():
            record[f"test_{name}_acc"] = evaluate(model, *subset)[1]
        record["seconds"] = seconds_before + time.perf_counter() - began
        history.append(record)
        dense = _dense_phase(record)
        return record

    def save(done: int) -> None:
        if not (done == cfg.steps or done % cfg.save_every == 0 or done in dense_due):
            return
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": done}
        for old in list_checkpoints(out):  # only the latest keeps optimiser state
            (old / "trainer_state.pt").unlink(missing_ok=True)
        _save(model, tokenizer, out / "checkpoints" / f"step-{done}", state)
        write_meta(seconds_before + time.perf_counter() - began)

    def report(done: int, _loss: float, record: dict | None) -> None:
        on_step(done, record)

    every = math.gcd(cfg.eval_every, cfg.save_every, cfg.dense_every or cfg.eval_every)
    train_steps(model, batch, opt, sched, steps=cfg.steps, start=start, evaluate=evaluation,
                eval_every=every, save=save, save_every=every,
                on_step=report if on_step else None, progress=progress)
    seconds = seconds_before + time.perf_counter() - began
    _save(model, tokenizer, out / "final", None)
    write_meta(seconds)
    return ToyRun(out, cfg, history, seconds, resumed_from=start or None, model=model)


def _dense_phase(record: dict | None) -> bool:
    """Whether an evaluation ``record`` is inside a transition: train fitted, test not."""
    return bool(record) and record["train_acc"] >= FIT and record["test_acc"] < GENERALISED


def load_run(out: str | Path) -> ToyRun:
    """A run's settings and history from ``OUT/train.json`` (no weights loaded)."""
    meta = Path(out) / "train.json"
    if not meta.is_file():
        raise ToyError(f"{out} holds no toy run (no train.json)")
    saved = read_json(meta, error=ToyError)
    return ToyRun(Path(out), ToyConfig.from_dict(saved["config"]), saved["history"],
                  saved["seconds"], saved.get("resumed_from"))
