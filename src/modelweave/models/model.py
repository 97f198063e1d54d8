"""``Model``: a thin, hookable view of an unmodified HF causal LM."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from transformers import PreTrainedModel

from ..errors import TokenizationError
from .adapters import Adapter, get_adapter
from .cache import ActivationCache
from .config import ModelConfig
from .device_map import compact, execution_device, is_offloaded
from .hooks import HookFn, installed, normalize_requests
from .sites import all_sites, parse_site
from .tokenization import TokenizationPolicy, encode, pad_batch, policy_for
from .weights import WeightAccessors

Inputs = str | Sequence[str] | torch.Tensor
NamesFilter = str | Sequence[str] | Callable[[str], bool] | None


class Model(WeightAccessors):
    """A Hugging Face causal LM with TransformerLens-named hook sites.

    The HF model is kept as it is (``.hf_model``); hooks exist only during ``run_with_hooks``,
    ``run_with_cache`` or the ``hooks(...)`` context. Weights read per layer as
    TransformerLens names them (``W_Q[L]`` ... ``W_U``, :mod:`modelweave.models.weights`).

    Attributes:
        hf_model: the ``PreTrainedModel``, in eval mode.
        tokenizer: its tokenizer (or ``None``; then only token tensors are accepted).
        cfg: :class:`ModelConfig` (n_layers, n_heads, n_kv_heads, d_model, d_head, ...).
        adapter: where the sites live in this architecture.
        tokenization: the BOS rule for this tokenizer (:mod:`modelweave.models.tokenization`).
        name: how the model was specified.
    """

    def __init__(self, hf_model: PreTrainedModel, tokenizer=None, *, name: str | None = None,
                 prepend_bos: bool | None = None):
        self.hf_model = hf_model.eval()
        self.tokenizer = tokenizer
        self.adapter: Adapter = get_adapter(hf_model.config)
        self.cfg: ModelConfig = self.adapter.make_config(hf_model.config)
        self.name = name or getattr(hf_model, "name_or_path", "") or self.cfg.architecture
        self.tokenization: TokenizationPolicy | None = (
            policy_for(tokenizer, prepend_bos) if tokenizer is not None else None
        )
        self._blocks = hf_model.get_submodule(self.adapter.blocks)

    def __repr__(self) -> str:
        c = self.cfg
        return (f"Model({self.name!r}, {c.architecture}, layers={c.n_layers}, "
                f"heads={c.n_heads}/{c.n_kv_heads}kv, d_model={c.d_model}, dtype={self.dtype}, "
                f"device={self.device})")

    @property
    def device(self) -> torch.device:
        """Device of the input embedding (where token ids go; its execution device when
        accelerate offloads it)."""
        embed = self.hf_model.get_input_embeddings()
        return execution_device(embed, embed.weight.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.hf_model.get_input_embeddings().weight.dtype

    # split models (see modelweave.models.device_map and docs/large_models.md) -----------
    @property
    def device_map(self) -> dict[str, int | str] | None:
        """Where accelerate placed each part (HF's ``hf_device_map``: module prefix ->
        device), or ``None`` for a model on one device."""
        return getattr(self.hf_model, "hf_device_map", None)

    def layer_device(self, layer: int) -> torch.device:
        """The device block ``layer`` computes on (its activations live there)."""
        return execution_device(self.block(layer), self.device)

    def site_device(self, site: str) -> torch.device:
        """The device a site's activations are computed on: the block's for per-layer sites,
        the input device for embeddings, the final norm's or unembedding's for
        ``ln_final.hook_normalized`` and ``logits``."""
        parsed = parse_site(site, self.cfg)
        if parsed.layer is not None:
            return self.layer_device(parsed.layer)
        if parsed.name == "logits":
            return execution_device(self.hf_model.get_output_embeddings(), self.device)
        if parsed.name.startswith("ln_final"):
            return execution_device(self.hf_model.get_submodule(self.adapter.final_norm),
                                    self.device)
        return self.device

    def run_info(self) -> dict:
        """JSON-ready facts that decide a run's numerics: ``attn_implementation`` (HF's
        ``config._attn_implementation``: eager, sdpa, flash_attention_2, ...), ``dtype``,
        ``device`` (the input device), ``device_map`` (compact ``{module prefix: device}``, runs
        of blocks merged as ``"model.layers.0-15"``; ``None`` on one device) and ``offloaded``
        (whether some weights live off their execution device between passes)."""
        config = self.hf_model.config
        return {
            "model": self.name,
            "architecture": self.cfg.architecture,
            "attn_implementation": getattr(config, "_attn_implementation", None),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "device_map": compact(self.device_map),
            "offloaded": is_offloaded(self.hf_model),
        }

    def block(self, layer: int) -> torch.nn.Module:
        """The HF decoder block of ``layer``."""
        return self._blocks[layer]

    @property
    def logit_scale(self) -> float:
        """The factor the model multiplies its logits by after the unembedding (Cohere,
        Cohere2: ``config.logit_scale``); 1.0 for families without one. Every read-out of the
        vocabulary (:meth:`unembed`, DLA, OV logits) applies it."""
        scale = getattr(self.hf_model, "logit_scale", None)
        return 1.0 if scale is None else float(scale)

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Logits [..., d_vocab] of a final residual stream [..., d_model]: the final norm,
        the unembedding and any logit scale (Cohere) or final soft-capping, as the model
        applies them."""
        normed = self.hf_model.get_submodule(self.adapter.final_norm)(resid)
        logits = self.hf_model.get_output_embeddings()(normed)
        if self.logit_scale != 1.0:
            logits = logits * self.logit_scale
        cap = getattr(self.hf_model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def sites(self) -> list[str]:
        """Every hook site name of this model, in forward order."""
        return all_sites(self.cfg)

    # tokenisation ---------------------------------------------------------------------
    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise TokenizationError("this model has no tokenizer: pass token ids, or "
                                    "load_model(..., tokenizer=...)")
        return self.tokenizer

    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool | None = None,
                  padding_side: str = "right") -> torch.Tensor:
        """Token ids under the BOS rule: [batch, pos] on the model's device (batch 1 for a
        single string); shorter texts are padded with the pad id on ``padding_side``."""
        return self.encode(text, prepend_bos, padding_side)[0]

    def encode(self, text: str | Sequence[str], prepend_bos: bool | None = None,
               padding_side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`to_tokens` but also returns the attention mask [batch, pos]."""
        tok = self._need_tokenizer()
        texts = [text] if isinstance(text, str) else list(text)
        ids = encode(tok, self.tokenization, texts, prepend_bos)
        tokens, mask = pad_batch(ids, self.tokenization.pad_token_id, padding_side)
        return tokens.to(self.device), mask.to(self.device)

    def to_str_tokens(self, inputs: str | Sequence[str] | torch.Tensor,
                      prepend_bos: bool | None = None) -> list[str] | list[list[str]]:
        """Each token as text (``" Mary"``); a list per row for a batch. Padding is not shown
        for text input."""
        tok = self._need_tokenizer()
        if isinstance(inputs, torch.Tensor):
            rows = [inputs.tolist()] if inputs.dim() == 1 else inputs.tolist()
            single = inputs.dim() == 1
        else:
            single = isinstance(inputs, str)
            texts = [inputs] if single else list(inputs)
            rows = encode(tok, self.tokenization, texts, prepend_bos)
        out = [[tok.decode([i]) for i in row] for row in rows]
        return out[0] if single else out

    def to_string(self, tokens: torch.Tensor | Sequence[int]) -> str | list[str]:
        """Decode [pos] ids to a string, or [batch, pos] to a list of strings."""
        tok = self._need_tokenizer()
        if isinstance(tokens, torch.Tensor) and tokens.dim() == 2:
            return [tok.decode(row) for row in tokens.tolist()]
        return tok.decode(list(tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens))

    def _prepare(self, inputs: Inputs, attention_mask: torch.Tensor | None):
        if isinstance(inputs, torch.Tensor):
            tokens = inputs.unsqueeze(0) if inputs.dim() == 1 else inputs
            tokens = tokens.to(self.device)
        else:
            tokens, mask = self.encode(inputs)
            if attention_mask is None and not bool(mask.all()):
                attention_mask = mask
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        return tokens, attention_mask

    # running --------------------------------------------------------------------------
    def forward(self, inputs: Inputs, *, attention_mask: torch.Tensor | None = None,
                grad: bool = False) -> torch.Tensor:
        """Logits [batch, pos, d_vocab] of the unhooked model.

        ``grad=False`` (default) runs under ``torch.no_grad()``."""
        tokens, mask = self._prepare(inputs, attention_mask)
        with nullcontext() if grad else torch.no_grad():
            return self.hf_model(input_ids=tokens, attention_mask=mask, use_cache=False).logits

    __call__ = forward

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]]
              ) -> Iterator[Model]:
        """Context in which every forward pass runs with ``fwd_hooks``; removed on exit.

        ``fwd_hooks``: ``[(site name or filter(name) -> bool, fn(tensor, hook) -> tensor|None)]``.
        """
        with installed(self, normalize_requests(self, list(fwd_hooks))):
            yield self

    def run_with_hooks(self, inputs: Inputs,
                       fwd_hooks: Sequence[tuple[str | Callable[[str], bool], HookFn]] = (),
                       *, attention_mask: torch.Tensor | None = None,
                       grad: bool = False) -> torch.Tensor:
        """Logits [batch, pos, d_vocab] of a run with ``fwd_hooks`` (see :meth:`hooks`)."""
        with self.hooks(fwd_hooks):
            return self.forward(inputs, attention_mask=attention_mask, grad=grad)

    def run_with_cache(self, inputs: Inputs, names_filter: NamesFilter = None, *,
                       attention_mask: torch.Tensor | None = None, device: str | None = None,
                       grad: bool = False) -> tuple[torch.Tensor, ActivationCache]:
        """Run once and keep activations.

        Args:
            names_filter: ``None`` (every site), one name, a list of names, or a predicate.
            device: where cached tensors are stored (default: where they were computed).
            grad: keep the autograd graph (cached tensors are then not detached).

        Returns:
            logits [batch, pos, d_vocab] and an :class:`ActivationCache`.
        """
        if names_filter is None:
            names: list = self.sites()
        elif isinstance(names_filter, str):
            names = [names_filter]
        elif callable(names_filter):
            names = [n for n in self.sites() if names_filter(n)]
        else:
            names = list(names_filter)
        cache = ActivationCache()

        def store(tensor: torch.Tensor, hook) -> None:
            # clone: some families modify projections in place after the hook (OLMo's clip).
            kept = tensor.clone() if grad else tensor.detach().clone()
            cache[hook.name] = kept.to(device or kept.device)

        logits = self.run_with_hooks(inputs, [(n, store) for n in names],
                                     attention_mask=attention_mask, grad=grad)
        return logits, ActivationCache({n: cache[n] for n in names if n in cache})

    def test_prompt(self, prompt: str, answer: str, *, top_k: int = 10,
                    prepend_space: bool = True, print_details: bool = True):
        """TransformerLens's ``test_prompt``: the rank, probability and logit of each answer
        token after ``prompt``, with the top-k alternatives; prints them unless
        ``print_details=False``, returns a ``PromptTest`` (a table in notebooks). See
        :func:`modelweave.models.prompt_check.test_prompt`."""
        from .prompt_check import test_prompt

        result = test_prompt(self, prompt, answer, top_k=top_k, prepend_space=prepend_space)
        if print_details:
            print(result)
        return result

    # steering and generation (logic in .steering and .generation) ----------------------
    def steer(self, vector: torch.Tensor, *, layer: int, scale: float = 1.0, positions=None,
              site: str = "hook_resid_post"):
        """Context adding ``scale * vector`` [d_model] at ``blocks.{layer}.{site}`` on the
        absolute ``positions`` in every forward pass and generation step inside it (see
        :func:`modelweave.models.steering.steer`)."""
        from .steering import steer

        return steer(self, vector, layer=layer, scale=scale, positions=positions, site=site)

    def generate(self, inputs: Inputs, max_new_tokens: int = 20, **kwargs):
        """Continue prompts with a KV cache under the active hooks; a ``Generation`` (see
        :func:`modelweave.models.generation.generate`)."""
        from .generation import generate

        return generate(self, inputs, max_new_tokens, **kwargs)
