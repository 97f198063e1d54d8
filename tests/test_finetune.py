"""LoRA fine-tuning: only the adapter changes the weights; the merged model round-trips."""

import torch

from modelweave import Model, load_model
from modelweave.models.finetune import finetune
from tokenizers_zoo import make_tokenizer

from tiny import random_tokens, tiny_hf_model


def test_lora_finetune_learns_and_round_trips(tmp_path):
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok, name="tiny")
    before = {k: v.clone() for k, v in model.hf_model.state_dict().items()}
    result = finetune(model, "ioi", tmp_path, steps=25, lora_r=4, lr=1e-2, batch_size=4, n=8)
    assert len(result.losses) == 25 and result.losses[-1] < 0.5 * result.losses[0]
    for k, v in model.hf_model.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k]), k
    merged = result.model.hf_model.state_dict()
    changed = {k for k, v in merged.items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith("proj.weight") and ".layers." in k for k in changed)
    assert (result.adapter / "adapter_model.safetensors").exists()
    assert (tmp_path / "finetune.json").exists()
    loaded = load_model(result.merged)
    tokens = random_tokens(2, 6)
    assert torch.allclose(loaded(tokens), result.model(tokens), atol=1e-5)
    assert not torch.allclose(loaded(tokens), model(tokens), atol=1e-3)
