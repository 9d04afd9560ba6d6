import pytest
import torch
from _lm_util import SENTENCES, make_tokenizer
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from unified_lm.config import to_dict
from unified_lm.errors import ConfigError
from unified_lm.models import ModelConfig, build_model, count_parameters, load_checkpoint, save_checkpoint
from unified_lm.recipes.configs import LMConfig
from unified_lm.tokenizer_meta import TokenizerMeta
from unified_lm.vocab import UnifiedVocab


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    # About the size of a CPU experiment's vocabulary: ~1000 text + specials + 500 units.
    meta = TokenizerMeta(name="km500", hash="a" * 16, kind="kmeans", num_units=500, frame_rate=100.0)
    words = [f"w{i}x{j}" for i in range(60) for j in range(12)]
    return UnifiedVocab.train([" ".join(words)] * 2, [meta], text_vocab_size=1000)


@pytest.mark.parametrize("preset, low, high", [("tiny", 0.7e6, 1.5e6), ("small", 4.5e6, 8e6), ("base", 20e6, 32e6)])
def test_preset_sizes(vocab, preset, low, high):
    model = build_model(ModelConfig(preset=preset), vocab)
    assert low <= count_parameters(model) <= high
    assert model.get_input_embeddings().num_embeddings == len(vocab)


def test_gpt2_medium_shape(vocab):
    with torch.device("meta"):  # no memory for 300M parameters
        model = build_model(ModelConfig(preset="gpt2-medium"), vocab)
    cfg = model.config
    assert (cfg.model_type, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions) == ("gpt2", 24, 1024, 16, 1024)
    assert 290e6 <= count_parameters(model) <= 320e6


def test_overrides_and_unknown_preset(vocab):
    model = build_model(ModelConfig(preset="tiny", num_layers=1, hidden_size=64, num_heads=2), vocab)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (1, 64)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        build_model(ModelConfig(preset="huge"), vocab)
    with pytest.raises(ConfigError, match="not divisible"):
        build_model(ModelConfig(preset="tiny", num_heads=3), vocab)


def test_the_attention_kernel_is_chosen_in_the_config_and_a_missing_one_is_a_config_error(vocab, tmp_path):
    assert build_model(ModelConfig(preset="tiny"), vocab).config._attn_implementation == "sdpa"
    eager = build_model(ModelConfig(preset="tiny", attn_implementation="eager"), vocab)
    assert eager.config._attn_implementation == "eager"
    eager.save_pretrained(tmp_path / "lm")
    grown = build_model(ModelConfig(init_from=str(tmp_path / "lm"), attn_implementation="eager"), vocab)
    assert grown.config._attn_implementation == "eager"
    with pytest.raises(ConfigError, match="model.attn_implementation=flash_attention_2: .*flash_attn"):
        build_model(ModelConfig(preset="tiny", attn_implementation="flash_attention_2"), vocab)


def test_checkpoint_round_trip_through_auto_model(vocab, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset="tiny"), vocab).eval()
    cfg = LMConfig(out_dir="somewhere")
    save_checkpoint(tmp_path / "ckpt", model, vocab, cfg)
    ids = torch.randint(0, len(vocab), (2, 17))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
    model2, vocab2, cfg2 = load_checkpoint(tmp_path / "ckpt")
    torch.testing.assert_close(model2(ids).logits, model(ids).logits)
    assert len(vocab2) == len(vocab) and vocab2.speech_ranges() == vocab.speech_ranges()
    assert cfg2 == to_dict(cfg)
    assert not list(tmp_path.glob(".ckpt*")), "temporary directory left behind"


@pytest.mark.fault
def test_load_checkpoint_rejects_another_vocabulary(vocab, tmp_path):
    save_checkpoint(tmp_path / "ckpt", build_model(ModelConfig(preset="tiny", num_layers=1), vocab), vocab, LMConfig())
    bigger = TokenizerMeta(name="km500", hash="a" * 16, kind="kmeans", num_units=600, frame_rate=100.0)
    UnifiedVocab(vocab.text_tokenizer, [bigger]).save(tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="embedding rows but the vocabulary saved with it has"):
        load_checkpoint(tmp_path / "ckpt")


def test_load_checkpoint_names_missing_files(vocab, tmp_path):
    save_checkpoint(tmp_path / "ckpt", build_model(ModelConfig(preset="tiny", num_layers=1), vocab), vocab, LMConfig())
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="missing model.safetensors"):
        load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nowhere")


def _pretrained_gpt2() -> torch.nn.Module:
    model = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=1, n_head=2, n_positions=64))
    with torch.no_grad():  # a distinctive embedding distribution, unlike any default init
        model.transformer.wte.weight.normal_(0.5, 0.3)
    return model


def _pretrained_llama_untied() -> torch.nn.Module:
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, tie_word_embeddings=False)
    )
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.5, 0.3)
        model.lm_head.weight.normal_(-1.0, 0.2)
    return model


@pytest.mark.parametrize("make_pretrained", [_pretrained_gpt2, _pretrained_llama_untied])
def test_init_from_resizes_with_mean_and_std_of_old_rows(tmp_path, make_pretrained):
    meta = make_tokenizer(tmp_path / "tok")
    text_vocab = UnifiedVocab.train(SENTENCES, [meta], text_vocab_size=300)
    assert text_vocab.text_size <= 300
    torch.manual_seed(0)
    pretrained = make_pretrained()
    pretrained.save_pretrained(tmp_path / "lm")
    text_vocab.text_tokenizer.save(str(tmp_path / "lm" / "tokenizer.json"))
    big = TokenizerMeta(name="km2000", hash="b" * 16, kind="kmeans", num_units=2000, frame_rate=50.0)
    vocab = UnifiedVocab.from_text_tokenizer(tmp_path / "lm", [big])

    model = build_model(ModelConfig(init_from=str(tmp_path / "lm")), vocab)
    assert model.get_input_embeddings().num_embeddings == len(vocab)
    assert model.config.vocab_size == len(vocab)
    layers = [(pretrained.get_input_embeddings(), model.get_input_embeddings())]
    if not pretrained.config.tie_word_embeddings:
        layers.append((pretrained.get_output_embeddings(), model.get_output_embeddings()))
    for old_layer, new_layer in layers:
        old, new = old_layer.weight.detach(), new_layer.weight.detach()
        torch.testing.assert_close(new[:300], old)  # pretrained rows untouched
        added = new[300:]
        torch.testing.assert_close(added.mean(0), old.mean(0), atol=0.03, rtol=0)
        torch.testing.assert_close(added.std(0), old.std(0), atol=0.03, rtol=0)


def test_init_from_requires_a_checkpoint(vocab, tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        build_model(ModelConfig(init_from=str(tmp_path)), vocab)
