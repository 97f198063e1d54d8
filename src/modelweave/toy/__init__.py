"""Toy models with known answers: algorithmic datasets, small transformers trained on a CPU as
ordinary Hugging Face checkpoints, and analyses that need ground truth or a training history
(Fourier basis and progress measures of grokking, composition scores, the induction circuit,
any method over a checkpoint series).

Modules: :mod:`.vocab` (the word-level tokenizer), :mod:`.train` (``train_toy``),
:mod:`.composition`, :mod:`.fourier`, :mod:`.induction`, :mod:`.series`. The datasets (token
tensors and splits) and their clean/corrupt task definitions are prompt families like any other:
:mod:`modelweave.tasks.toy_data` and :mod:`modelweave.tasks.toy`.
"""

from ..tasks.toy_data import DATASETS, ToyError, ToyModelError, make_dataset

__all__ = ["DATASETS", "ToyError", "ToyModelError", "make_dataset"]
