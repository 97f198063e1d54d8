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
from ...tasks import TaskBatch


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


def neuron_maps(model: Model, grid: TaskBatch, neurons: list[tuple[int, int]], *,
                batch_size: int = 128,
                progress: Progress = None) -> NeuronMaps:
    """Key and key-value maps of ``neurons`` over ``grid`` (one operator's prompts).
    ``progress`` phase ``"maps"``: prompts done of ``len(grid)``."""
    layers = sorted({L for L, _ in neurons})
    sites = [f"blocks.{L}.mlp.hook_post" for L in layers]
    scales = [f"blocks.{L}.mlp.hook_scale" for L in layers] if model.cfg.post_norm else []
    index = {L: torch.tensor([n for L2, n in neurons if L2 == L]) for L in layers}
    rows_of = {L: [i for i, (L2, _) in enumerate(neurons) if L2 == L] for L in layers}
    key = torch.zeros(len(neurons), len(grid))
    scale = torch.ones(len(neurons), len(grid))  # post-norm scale of each prompt (OLMo-2)
    steps = Steps(progress, "maps", len(grid))
    for start, part in grid.chunks(batch_size):
        _, cache = model.run_with_cache(part.clean, sites + scales, attention_mask=part.mask)
        at = torch.arange(len(part)), part.lengths - 1
        for L, site in zip(layers, sites, strict=True):
            values = cache[site][at[0], at[1].to(cache[site].device)][:, index[L]]
            key[rows_of[L], start:start + len(part)] = values.float().T.cpu()
            if scales:
                s = cache[f"blocks.{L}.mlp.hook_scale"][at[0], at[1].to(cache[site].device)]
                scale[rows_of[L], start:start + len(part)] = s.float().T.cpu()
        steps.advance(len(part))
    kv = key * scale * unit_values(model, neurons, grid.answers)
    meta = [ex.meta for ex in grid.examples]
    return NeuronMaps(list(neurons), key, kv, torch.tensor([m["op1"] for m in meta]),
                      torch.tensor([m["op2"] for m in meta]), meta[0]["op"])
