"""User-facing errors.

Every error a user can cause by bad input derives from :class:`ModelWeaveError`. Its message is one
line that says what went wrong and what to do; the CLI prints it without a traceback.
"""

from __future__ import annotations


class ModelWeaveError(Exception):
    """Base class of errors caused by user input (bad spec, missing file, unknown site...)."""


class ModelLoadError(ModelWeaveError):
    """A model or tokenizer could not be loaded from the given spec."""


class UnsupportedArchitectureError(ModelLoadError):
    """The model's architecture has no adapter."""


class EmbeddedModelMissingError(ModelLoadError):
    """The package that carries the embedded model is not installed."""


class SiteError(ModelWeaveError, KeyError):
    """A hook site name is malformed, out of range, or absent in this model family."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one plain line.
        return str(self.args[0]) if self.args else ""


class SteeringError(ModelWeaveError):
    """A steering vector, function vector or directional ablation that cannot be applied as
    asked."""


class VectorWidthError(SteeringError):
    """A vector whose width is not the model's ``d_model``."""


class LayerRangeError(SteeringError):
    """A layer outside ``0 .. n_layers - 1``."""


class PairCountError(SteeringError):
    """Contrastive prompt pairs of mismatched (or zero) count."""


class WeightEditError(SteeringError):
    """A weight edit that would not be equivalent to the hook-based intervention (OLMo-2's
    post-norms re-introduce an ablated direction)."""


class TokenizationError(ModelWeaveError, ValueError):
    """Text that cannot be tokenised as asked (no tokenizer, no BOS token, empty text, an
    unknown padding side)."""


class HookError(ModelWeaveError, ValueError):
    """A hook function that returned a tensor of another shape than the activation it
    replaces."""
