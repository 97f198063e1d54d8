"""Toy models with known answers: algorithmic datasets, small transformers trained on a CPU as
ordinary Hugging Face checkpoints, and analyses that need ground truth or a training history
(Fourier basis and progress measures of grokking, composition scores, the induction circuit,
any method over a checkpoint series).

Modules: :mod:`.datasets` (token tensors and splits), :mod:`.vocab` (the word-level tokenizer),
:mod:`.tasks` (clean/corrupt task definitions, registered with :mod:`modelweave.tasks`),
:mod:`.train` (``train_toy``), :mod:`.composition`, :mod:`.fourier`, :mod:`.induction`,
:mod:`.series`.
"""

from .datasets import DATASETS, ToyError, make_dataset

__all__ = ["DATASETS", "ToyError", "make_dataset"]
