"""Adding vectors to a model's activations at *absolute* token positions.

``with steer(model, vector, layer=6, scale=4.0, positions=slice(5, None)):`` adds
``scale * vector`` to ``blocks.6.hook_resid_post`` (the decoder block's output) at every token
whose index in its own sequence is 5 or more, in every forward pass inside the context:
plain forwards, :func:`~modelweave.models.generation.generate` with a KV cache, and
the engine's suffix runs.

Positions are resolved per forward pass from what the HF model is called with (a forward
pre-hook on the ``*ForCausalLM`` module): the key/value cache's length gives the offset of the
tokens of this pass, and the attention mask (when given, covering cache + new tokens) gives
each row's own index (``cumsum(mask) - 1``: left padding does not count). So a KV-cached
generation step that feeds one token at index 17 is steered exactly as position 17 of an
uncached pass over the whole sequence (CAA's masks, local to each forward, missed this).

``positions`` (:func:`position_mask`):

- ``None`` / ``"all"``: every token;
- ``"last"``: the last real token of each row *in each pass*: an uncached pass steers the
  prompt's last token; cached generation steers the prompt's last token and then every new
  token (the function-vector convention);
- an ``int`` or a sequence of ints: those absolute indices;
- a ``slice`` (or ``"5:"``, ``"5:9"``): indices in that range (``slice(5, None)`` includes every
  generated token from index 5 on).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import torch

from ..errors import LayerRangeError, SteeringError, VectorWidthError
from .sites import act_name, parse_site

if TYPE_CHECKING:
    from .model import Model

Positions = None | str | int | Sequence[int] | slice


class PositionTracker:
    """Records, for the forward pass under way, each token's index in its own sequence.

    ``index`` [batch, seq] (long) and ``last`` [batch, seq] (bool: the row's last real token of
    this pass) are set by a forward pre-hook on the HF model (:meth:`installed`)."""

    def __init__(self, model: Model):
        self.model = model
        self.index: torch.Tensor | None = None
        self.last: torch.Tensor | None = None

    def _pre(self, _module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        batch, seq = (ids.shape if ids is not None else embeds.shape[:2])
        device = (ids if ids is not None else embeds).device
        cache = kwargs.get("past_key_values")
        offset = int(cache.get_seq_length()) if cache is not None else 0
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2 and mask.shape[1] == offset + seq:
            mask = mask.to(device).long()
            index = (mask.cumsum(-1) - 1)[:, offset:]
            chunk = mask[:, offset:]
        else:
            index = torch.arange(offset, offset + seq, device=device).expand(batch, seq)
            chunk = torch.ones(batch, seq, dtype=torch.long, device=device)
        cols = torch.arange(seq, device=device)
        last_col = (chunk * (cols + 1)).argmax(-1)  # the last column holding a real token
        self.index = index
        self.last = cols[None] == last_col[:, None]

    @contextmanager
    def installed(self) -> Iterator[PositionTracker]:
        handle = self.model.hf_model.register_forward_pre_hook(self._pre, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()
            self.index = self.last = None


def parse_positions(positions: Positions) -> Positions:
    """Validate a positions spec; ``"5:"`` / ``"5:9"`` become slices, ``"7"`` an int."""
    if isinstance(positions, slice):
        if positions.step not in (None, 1):
            raise SteeringError(f"positions {positions!r}: slices take no step; use "
                                "slice(N, M) or 'N:M'")
        return positions
    if positions is None or isinstance(positions, int):
        return positions
    if isinstance(positions, str):
        if positions in ("all", "last"):
            return None if positions == "all" else "last"
        try:
            if ":" in positions:
                start, _, stop = positions.partition(":")
                return slice(int(start) if start else None, int(stop) if stop else None)
            return int(positions)
        except ValueError:
            raise SteeringError(f"positions {positions!r}: use all, last, N, N: or N:M (no "
                                "step)") from None
    items = list(positions)
    if not all(isinstance(p, int) for p in items):
        raise SteeringError(f"positions {positions!r}: a list of token indices must hold ints")
    return tuple(items)


def position_mask(positions: Positions, index: torch.Tensor, last: torch.Tensor
                  ) -> torch.Tensor:
    """[batch, seq] bool: which tokens of this pass a spec selects (see the module
    docstring); ``index``/``last`` from :class:`PositionTracker`."""
    positions = parse_positions(positions)
    if positions is None:
        return torch.ones_like(last)
    if positions == "last":
        return last
    if isinstance(positions, slice):
        keep = torch.ones_like(last)
        if positions.start is not None:
            keep &= index >= positions.start
        if positions.stop is not None:
            keep &= index < positions.stop
        return keep
    wanted = torch.tensor([positions] if isinstance(positions, int) else list(positions),
                          device=index.device)
    return (index[..., None] == wanted).any(-1)


def check_vector(model: Model, vector: torch.Tensor) -> torch.Tensor:
    """The vector as a float tensor [d_model]; :class:`VectorWidthError` otherwise."""
    try:
        vector = torch.as_tensor(vector)
    except (TypeError, ValueError, RuntimeError):
        raise SteeringError(f"steering vector of type {type(vector).__name__}: expected a "
                            f"tensor of numbers of shape [{model.cfg.d_model}]") from None
    if vector.dim() != 1 or vector.shape[0] != model.cfg.d_model:
        raise VectorWidthError(f"steering vector of shape {tuple(vector.shape)}: expected "
                               f"[{model.cfg.d_model}] (the model's d_model)")
    return vector


def check_layer(model: Model, layer: int) -> int:
    """``layer`` if it lies in ``0 .. n_layers - 1`` (negative counts from the end)."""
    n = model.cfg.n_layers
    if not isinstance(layer, int) or not -n <= layer < n:
        raise LayerRangeError(f"layer {layer} out of range: the model has {n} layers "
                              f"(0..{n - 1})")
    return layer % n


def site_name(model: Model, site: str, layer: int) -> str:
    """The full name of a residual-width site at ``layer`` (short or full kind)."""
    kind = site.split(".", 2)[-1] if site.startswith("blocks.") else site
    name = act_name(kind, layer)
    parse_site(name, model.cfg)
    return name


@contextmanager
def steer(model: Model, vector: torch.Tensor, *, layer: int, scale: float = 1.0,
          positions: Positions = None, site: str = "hook_resid_post") -> Iterator[Model]:
    """Context in which every forward pass adds ``scale * vector`` at ``site`` of ``layer``.

    Args:
        vector: [d_model].
        layer: decoder block (negative counts from the end).
        scale: the multiplier.
        positions: which tokens (module docstring); absolute, so cached generation matches
            an uncached pass.
        site: a residual-width site kind (``hook_resid_post``: the block's output, the
            default; ``hook_resid_pre``, ``hook_attn_out``, ``hook_mlp_out`` ...).

    Raises:
        VectorWidthError, LayerRangeError, SteeringError: bad vector, layer or positions.
    """
    vector = check_vector(model, vector)
    layer = check_layer(model, layer)
    if not bool(torch.isfinite(vector).all()):
        raise SteeringError("steering vector has NaN or infinite entries; it needs finite "
                            "values")
    name = site_name(model, site, layer)
    positions = parse_positions(positions)
    tracker = PositionTracker(model)

    def add(x: torch.Tensor, _hook) -> torch.Tensor:
        if tracker.index is None or tracker.index.shape != x.shape[:2]:
            raise SteeringError(f"steering at {name}: no position information for a tensor "
                                f"of shape {tuple(x.shape)}")
        keep = position_mask(positions, tracker.index, tracker.last).to(x.device, x.dtype)
        delta = scale * vector.to(x.device, torch.float32)
        return (x.float() + keep[..., None] * delta).to(x.dtype)

    with ExitStack() as stack:
        stack.enter_context(tracker.installed())
        stack.enter_context(model.hooks([(name, add)]))
        yield model
