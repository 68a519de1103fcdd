"""minibart against transformers (the oracle): logits, and checkpoints in both directions."""
import json

import pytest
import torch
from safetensors.torch import load_file

from minibart import BartConfig, BartForConditionalGeneration, BartModel, seq2seq_loss
from minibart.checkpoint import bart_from_hf, bart_to_hf
from minibart.config import GENERATION_DEFAULTS, GENERATION_TOKENS

transformers = pytest.importorskip("transformers")

CONFIGS = [  # three shapes; the last one moves the special tokens and unties the embeddings
    dict(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
         decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32),
    dict(vocab_size=50, d_model=24, encoder_layers=1, decoder_layers=3, encoder_attention_heads=3,
         decoder_attention_heads=4, encoder_ffn_dim=40, decoder_ffn_dim=20, max_position_embeddings=20,
         scale_embedding=True),
    dict(vocab_size=80, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
         decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=48, max_position_embeddings=24,
         pad_token_id=0, bos_token_id=1, eos_token_id=3, decoder_start_token_id=3, forced_eos_token_id=3,
         tie_word_embeddings=False),
]


def perturb_(model: torch.nn.Module, seed: int) -> None:
    """Move every parameter and buffer off its initial value, so a mis-mapped weight shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.add_(torch.randn(t.shape, generator=g) * 0.3)


def hf_model(cfg: dict, seed: int):
    torch.manual_seed(seed)
    model = transformers.BartForConditionalGeneration(transformers.BartConfig(**cfg, dropout=0.0)).eval()
    perturb_(model, seed)
    return model


def padded_batch(vocab: int, pad: int, lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, pad), mask


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_logits_match_transformers(tmp_path, i):
    """Our logits equal HF's within 1e-5 on a padded batch, with decoder inputs and with shifted labels."""
    cfg = CONFIGS[i]
    hf = hf_model(cfg, seed=i)
    hf.save_pretrained(tmp_path)
    ids, mask = padded_batch(cfg["vocab_size"], hf.config.pad_token_id, [9, 6, 2], seed=i)
    labels, _ = padded_batch(cfg["vocab_size"], -100, [5, 3, 1], seed=i + 10)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, labels=labels)
        for impl in ("sdpa", "math"):
            ours = BartForConditionalGeneration.from_pretrained(tmp_path, attn_implementation=impl).eval()
            logits = ours(ids, mask, labels=labels)
            assert (logits - want.logits).abs().max() < 1e-5
            assert torch.allclose(seq2seq_loss(logits, labels), want.loss, atol=1e-6)
            dec = labels.clamp(min=0)
            assert (ours(ids, mask, dec) - hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
                    ).abs().max() < 1e-5


@pytest.mark.parametrize("tied", [True, False])
def test_transformers_loads_what_we_save(tmp_path, tied):
    """HF loads our checkpoint with no missing/unexpected keys and gives the same logits."""
    torch.manual_seed(0)
    ours = BartForConditionalGeneration(BartConfig(**CONFIGS[0], tie_word_embeddings=tied, num_beams=3)).eval()
    perturb_(ours, 0)
    ours.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert ("lm_head.weight" in keys) != tied and ("model.encoder.embed_tokens.weight" in keys) != tied
    assert not any(".qkv." in k or ".kv." in k for k in keys)
    assert json.loads((tmp_path / "generation_config.json").read_text())["num_beams"] == 3
    assert "num_beams" not in json.loads((tmp_path / "config.json").read_text())
    hf, info = transformers.BartForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.generation_config.num_beams == 3
    ids, mask = padded_batch(64, 1, [7, 4], seed=1)
    dec, _ = padded_batch(64, 1, [5, 5], seed=2)
    with torch.no_grad():
        assert (hf.eval()(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
                - ours(ids, mask, dec)).abs().max() < 1e-5


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("bare", [False, True])
def test_we_load_what_transformers_saves(tmp_path, tied, bare):
    """We load HF's BartForConditionalGeneration ("model." keys) and BartModel (bare keys), tied or untied."""
    cfg = {**CONFIGS[0], "tie_word_embeddings": tied}
    hf = hf_model(cfg, seed=3)
    if bare:
        hf = hf.model
    hf.save_pretrained(tmp_path)
    assert any(k.startswith("model.") for k in load_file(tmp_path / "model.safetensors")) != bare
    ids, mask = padded_batch(64, 1, [8, 3], seed=4)
    dec, _ = padded_batch(64, 1, [4, 4], seed=5)
    with torch.no_grad():
        if bare:
            ours = BartModel.from_pretrained(tmp_path).eval()
            want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).last_hidden_state
        else:
            ours = BartForConditionalGeneration.from_pretrained(tmp_path).eval()
            want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        assert (ours(ids, mask, dec) - want).abs().max() < 1e-5
    assert ours.config.tie_word_embeddings == tied


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("bare", [False, True])
def test_transformers_to_ours_to_transformers_is_lossless(tmp_path, tied, bare):
    """What transformers saved, loaded and saved again by us, is the same file content (key for key, tensor for
    tensor, generation settings included) and loads into transformers with nothing missing or unexpected."""
    hf = hf_model({**CONFIGS[0], "tie_word_embeddings": tied}, seed=10)
    hf.generation_config.num_beams, hf.generation_config.no_repeat_ngram_size = 3, 2
    hf = hf.model if bare else hf  # transformers' BartModel has no generation settings
    hf.save_pretrained(tmp_path / "hf")
    (BartModel if bare else BartForConditionalGeneration).from_pretrained(tmp_path / "hf").save_pretrained(
        tmp_path / "ours")
    want, got = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "ours" / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], v) for k, v in want.items())
    back, info = type(hf).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert back.state_dict().keys() == hf.state_dict().keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in hf.state_dict().items())
    if not bare:
        settings = [(k, getattr(transformers.GenerationConfig.from_pretrained(tmp_path / f), k))
                    for f in ("hf", "ours") for k in (*GENERATION_DEFAULTS, *GENERATION_TOKENS)]
        assert settings[:len(settings) // 2] == settings[len(settings) // 2:] and ("num_beams", 3) in settings


def test_old_style_checkpoint_with_duplicates_and_extras(tmp_path):
    """A pytorch_model.bin holding every tied copy plus fairseq's version keys loads, and HF's logits hold."""
    hf = hf_model(CONFIGS[1], seed=6)
    hf.config.save_pretrained(tmp_path)
    state = {k: v.clone() for k, v in hf.state_dict().items()}  # includes lm_head and embed_tokens copies
    state["model.encoder.version"] = torch.tensor([2.0])
    torch.save(state, tmp_path / "pytorch_model.bin")
    ours = BartForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids, mask = padded_batch(50, 1, [5, 2], seed=7)
    with torch.no_grad():
        assert (ours(ids, mask) - hf(input_ids=ids, attention_mask=mask).logits).abs().max() < 1e-5


def test_key_maps_round_trip():
    """bart_to_hf(bart_from_hf(sd)) gives back HF's tensors under HF's names; q/k/v are fused on the way."""
    hf = hf_model(CONFIGS[2], seed=8)  # untied: every key is kept
    sd = hf.state_dict()
    ours = bart_from_hf(sd, tie_word_embeddings=False)
    assert {"model.decoder.layers.0.attn.qkv.weight", "model.decoder.layers.0.cross_attn.kv.bias"} <= ours.keys()
    assert ours["model.decoder.layers.0.cross_attn.kv.weight"].shape == (64, 32)
    back = bart_to_hf(ours, tie_word_embeddings=False)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_load_report_names_bad_keys(tmp_path):
    """A missing or mis-shaped weight is an error naming it."""
    hf = hf_model(CONFIGS[0], seed=9)
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"shape mismatch: .*encoder.layers.0.ffn.up.weight: checkpoint \(32, 16\) vs"):
        BartForConditionalGeneration.from_pretrained(tmp_path, encoder_ffn_dim=31)
    with pytest.raises(ValueError, match="missing keys: model.encoder.layers.2"):
        BartForConditionalGeneration.from_pretrained(tmp_path, encoder_layers=3)
    with pytest.raises(ValueError, match="unknown config override"):
        BartForConditionalGeneration.from_pretrained(tmp_path, n_layers=3)


def test_config_round_trip_reads_generation_config():
    """config.json + generation_config.json -> BartConfig -> the same dicts; generation_config.json wins."""
    d = {**transformers.BartConfig(**CONFIGS[1]).to_dict(), "num_beams": 2, "task_specific_params": {"x": 1}}
    c = BartConfig.from_hf_dict(d, {"num_beams": 4, "no_repeat_ngram_size": 3, "forced_bos_token_id": 0})
    assert (c.num_beams, c.no_repeat_ngram_size, c.forced_bos_token_id, c.scale_embedding) == (4, 3, 0, True)
    assert BartConfig.from_hf_dict(c.to_hf_dict(), c.to_generation_dict()) == c
    assert c.to_hf_dict()["task_specific_params"] == {"x": 1} and "num_beams" not in c.to_hf_dict()
    with pytest.raises(ValueError, match="model_type"):
        BartConfig.from_hf_dict({"model_type": "bert"})
    with pytest.raises(ValueError, match="activation_function"):
        BartConfig(activation_function="relu")


@pytest.mark.parametrize("files", ["vocab.json+merges.txt", "tokenizer.json"])
def test_bart_tokenizer_matches_transformers(tmp_path, files):
    """load_tokenizer reads a byte-level BPE (vocab.json + merges.txt, or tokenizer.json) as HF's
    BartTokenizer does: the same ids for single texts and pairs, special tokens skipped by decode."""
    from tokenizers import ByteLevelBPETokenizer

    from minibert import load_tokenizer

    bpe = ByteLevelBPETokenizer()
    texts = ["The quick brown fox jumps over the lazy dog.", "Hello world! déjà vu, naïve café."]
    bpe.train_from_iterator(texts * 5, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp_path))
    hf = transformers.BartTokenizer.from_pretrained(tmp_path)
    if files == "tokenizer.json":
        hf.save_pretrained(tmp_path)
        (tmp_path / "vocab.json").unlink()
        (tmp_path / "merges.txt").unlink()
    ours = load_tokenizer(tmp_path)
    for text in ["The lazy fox, please.", " Hello  world!", "déjà vu café", "x"]:
        assert ours.encode(text).ids == hf(text).input_ids
        assert ours.encode(text, "Hello fox").ids == hf(text, "Hello fox").input_ids
        assert ours.decode(ours.encode(text).ids) == hf.decode(hf(text).input_ids, skip_special_tokens=True)
