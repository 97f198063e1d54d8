"""Key and key-value maps of neurons over an operand grid (Nikankin et al. 2024, §4).

For neuron n of layer L and the grid prompts i (every legal ``op1 op op2`` of one operator,
:func:`~modelweave.analysis.heuristics.prompts.grid_batch`):

- key map ``K[i]``: the neuron's activation (``mlp.hook_post``) at the last position;
- key-value map ``KV[i] = K[i] * (W_out[:, n] · W_U_c[t_i])``: the key times the neuron's
  output direction read through the *centred* unembedding (``W_U`` minus its mean over the
  vocabulary; no final norm) at the answer's unit token ``t_i``: how much the neuron pushes
  the right answer directly.

On OLMo-2 the MLP output passes a post-norm before joining the residual; the value is read
through it at its frozen scale (``w * W_out[:, n] * s_i``, ``s_i`` the prompt's
``mlp.hook_scale``), as for ``hook_mlp_out``'s neuron shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...models import Model
from ...models.parts import out_norm
from ...progress import Progress, Steps
from ...tasks import TaskBatch, TaskError


@dataclass
class NeuronMaps:
    """Maps of ``neurons`` over one grid.

    Attributes:
        neurons: ``(layer, neuron)`` pairs, one per row.
        key, kv: [n_neurons, N] key and key-value maps.
        op1, op2: [N] operands; operator: the grid's operator; result: [N].
    """

    neurons: list[tuple[int, int]]
    key: torch.Tensor
    kv: torch.Tensor
    op1: torch.Tensor
    op2: torch.Tensor
    operator: str

    @property
    def result(self) -> torch.Tensor:
        from ...tasks.arith import OPS

        return OPS[self.operator](self.op1, self.op2)

    def grid(self, row: int, which: str = "key") -> torch.Tensor:
        """[op1 range, op2 range] the map of one neuron on the operand grid (NaN where the
        prompt is not in the grid)."""
        values = (self.key if which == "key" else self.kv)[row]
        lo1, lo2 = int(self.op1.min()), int(self.op2.min())
        out = torch.full((int(self.op1.max()) - lo1 + 1, int(self.op2.max()) - lo2 + 1),
                         float("nan"))
        out[self.op1 - lo1, self.op2 - lo2] = values.float()
        return out


@torch.no_grad()
def unit_values(model: Model, neurons: list[tuple[int, int]],
                tokens: torch.Tensor) -> torch.Tensor:
    """[n_neurons, N] each neuron's output direction read through the centred unembedding at
    ``tokens`` [N] (through a post-norm's gain, not its per-prompt scale)."""
    unembed = model.W_U.T.float()  # [d_vocab, d_model]
    centred = unembed - unembed.mean(0, keepdim=True)
    rows = centred[tokens.to(centred.device)]  # [N, d_model]
    out = []
    for L, n in neurons:
        column = model.W_out[L][n].float()  # [d_model]
        if model.cfg.post_norm:  # the post-norm's gain (its scale is per prompt)
            column = column * out_norm(model, L, "mlp").weight.float()
        out.append(rows @ column)
    return torch.stack(out).cpu() if out else torch.zeros(0, len(tokens))


@dataclass
class GridActivations:
    """Every neuron's activation at the last position over one grid, for some layers: what
    key maps are sliced from (one forward pass serves the top neurons and any null's).

    Attributes:
        acts: layer -> [N, d_mlp] activations (``mlp.hook_post``, float32, CPU).
        scales: layer -> [N] post-norm scales (OLMo-2; empty otherwise).
        answers: [N] answer tokens; op1, op2: [N] operands; operator: the grid's.
    """

    acts: dict[int, torch.Tensor]
    scales: dict[int, torch.Tensor]
    answers: torch.Tensor
    op1: torch.Tensor
    op2: torch.Tensor
    operator: str

    def maps(self, model: Model, neurons: list[tuple[int, int]]) -> NeuronMaps:
        """:class:`NeuronMaps` of ``neurons`` (their layers must be in ``acts``)."""
        missing = sorted({L for L, _ in neurons} - set(self.acts))
        if missing:
            raise TaskError(f"no activations of layer {missing[0]} on this grid; it holds layers "
                            f"{', '.join(map(str, sorted(self.acts))) or 'none'}")
        n = len(self.answers)
        key = torch.zeros(len(neurons), n)
        scale = torch.ones(len(neurons), n)
        for L in sorted({L for L, _ in neurons}):
            rows = [i for i, (L2, _) in enumerate(neurons) if L2 == L]
            cols = torch.tensor([neurons[i][1] for i in rows])
            key[rows] = self.acts[L][:, cols].T
            if L in self.scales:
                scale[rows] = self.scales[L][None]
        kv = key * scale * unit_values(model, neurons, self.answers)
        return NeuronMaps(list(neurons), key, kv, self.op1, self.op2, self.operator)


@torch.no_grad()
def grid_activations(model: Model, grid: TaskBatch, layers, *, batch_size: int = 128,
                     progress: Progress = None) -> GridActivations:
    """:class:`GridActivations` of ``layers`` over ``grid`` (one operator's prompts).
    ``progress`` phase ``"maps"``: prompts done of ``len(grid)``."""
    layers = sorted(set(layers))
    sites = {L: f"blocks.{L}.mlp.hook_post" for L in layers}
    scales = {L: f"blocks.{L}.mlp.hook_scale" for L in layers} if model.cfg.post_norm else {}
    acts = {L: torch.zeros(len(grid), model.cfg.d_mlp) for L in layers}
    scale = {L: torch.ones(len(grid)) for L in scales}
    steps = Steps(progress, "maps", len(grid))
    for start, part in grid.chunks(batch_size):
        _, cache = model.run_with_cache(part.clean, [*sites.values(), *scales.values()],
                                        attention_mask=part.mask)
        rows = torch.arange(len(part))
        for L, site in sites.items():
            at = part.lengths.to(cache[site].device) - 1
            acts[L][start:start + len(part)] = cache[site][rows, at].float().cpu()
            if L in scales:
                s = cache[scales[L]][rows, at].float().cpu()
                scale[L][start:start + len(part)] = s.reshape(len(part), -1)[:, 0]
        steps.advance(len(part))
    meta = [ex.meta for ex in grid.examples]
    return GridActivations(acts, scale, grid.answers.cpu(), torch.tensor([m["op1"] for m in meta]),
                           torch.tensor([m["op2"] for m in meta]), meta[0]["op"])


def neuron_maps(model: Model, grid: TaskBatch, neurons: list[tuple[int, int]], *,
                batch_size: int = 128,
                progress: Progress = None) -> NeuronMaps:
    """Key and key-value maps of ``neurons`` over ``grid`` (one operator's prompts).
    ``progress`` phase ``"maps"``: prompts done of ``len(grid)``."""
    acts = grid_activations(model, grid, {L for L, _ in neurons}, batch_size=batch_size,
                            progress=progress)
    return acts.maps(model, neurons)
