"""The names and defaults of the patching and discovery calls, as plain strings.

One definition, read by the library (:mod:`modelweave.methods.grids`,
:mod:`modelweave.methods.patching`, :mod:`modelweave.circuits.discovery`,
:mod:`modelweave.circuits.objective`, :mod:`modelweave.circuits.evaluation`, which re-export
them), by the method kinds and by the command line's help text. It imports nothing, so
``modelweave --help`` stays free of torch.
"""

from __future__ import annotations

#: node grids of :func:`modelweave.methods.patch` -> the site each one patches in a layer
SITES = {"resid": "hook_resid_pre", "attn": "hook_attn_out", "mlp": "hook_mlp_out",
         "heads": "attn.hook_z", "heads-by-pos": "attn.hook_z", "neurons": "mlp.hook_post"}
GRIDS = tuple(SITES)
#: ``denoising``: clean activations into the corrupted run; ``noising``: the other way round
DIRECTIONS = ("denoising", "noising")
#: the patching methods, in order of cost (exact is the default and the reference)
PATCH_METHODS = ("exact", "attribution", "atp*", "locate")
#: other accepted names -> the method they mean (``atp``: plain attribution patching)
PATCH_ALIASES = {"atp": "attribution"}
#: defaults of :func:`modelweave.methods.patch`
PATCH_GRID, PATCH_METHOD, PATCH_DIRECTION, PATCH_K = "heads", "exact", "denoising", 20

#: edge-scoring methods of :func:`modelweave.circuits.edge_attribution`
EAP_METHODS = ("eap", "eap-ig")
#: discovery methods that rank every edge, then take the smallest circuit reaching the target
SCORING = (*EAP_METHODS, "exact")
#: discovery methods that choose their edges themselves
SELECTING = ("acdc", "prune", "path")
DISCOVERY_METHODS = SCORING + SELECTING
#: the default of :func:`modelweave.circuits.discover`
DEFAULT_METHOD = "eap-ig"
#: the task metrics discovery scores with (a subset of
#: :data:`modelweave.circuits.objective.NAMES`)
GRADIENT_METRICS = ("logit_diff", "prob_diff", "logprob", "kl")
#: how a circuit's missing edges are filled: the corrupted run's value or the sender's mean
INTERVENTIONS = ("patching", "mean")
