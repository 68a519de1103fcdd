"""Each setting resolved once: the training settings (device, precision, its autocast dtype) in one frozen
TrainConfig, --precision auto's rule, and generate() taking an already-built Settings instead of keywords."""
import argparse
import dataclasses

import pytest
import torch

import minicore.runtime as runtime
from minibart import BartConfig, BartForConditionalGeneration
from minibart.generation import resolve_settings
from minicore.errors import UserError
from minicore.validation import check_length
from minitrain.options import TrainConfig, add_training_args

BART = dict(vocab_size=60, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=40,
            init_std=0.3, eos_token_id=46, forced_eos_token_id=None, dropout=0.0)


def test_the_config_holds_the_resolved_device_and_precision_and_is_frozen():
    """TrainConfig resolves --device and --precision once, on creation; no reader can change them later."""
    args = add_training_args(argparse.ArgumentParser()).parse_args(["--device", "cpu", "--precision", "bf16"])
    cfg = TrainConfig.from_args(args)
    assert cfg.device == torch.device("cpu") and cfg.precision == "bf16" and cfg.amp_dtype == torch.bfloat16
    assert TrainConfig(output_dir="o", device="cpu").precision == "fp32"  # the default on a CPU
    assert TrainConfig(output_dir="o", device="cpu").amp_dtype is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    assert dataclasses.replace(cfg, lr=1.0).device == cfg.device  # a stage's copy keeps the resolved values
    assert cfg.settings()["precision"] == "bf16"  # what --resume compares: the resolved precision


@pytest.mark.parametrize("capability,flags,want", [
    ("AVX512", "fpu avx512f avx512_bf16", "bf16"),  # Cooper Lake, Zen 4
    ("AVX512", "fpu avx512f amx_bf16", "bf16"),  # Sapphire Rapids
    ("AVX512", "fpu avx512f", "fp32"),  # Skylake-X: AVX512 without bf16, emulated (slower than fp32)
    ("AVX2", "fpu avx2 avx512_bf16", "fp32"),  # PyTorch's kernels for AVX2 emulate bf16
    ("DEFAULT", "fpu", "fp32"),
])
def test_precision_auto_is_bf16_where_the_cpu_computes_it(monkeypatch, tmp_path, capability, flags, want):
    """--precision auto on a CPU: bf16 when PyTorch's kernel level is AVX512 (or AMX) and the CPU lists native
    bf16 instructions, else fp32; the default (not given) stays fp32 on a CPU."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_open = open
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    assert runtime.resolve_precision("auto", torch.device("cpu")) == want
    assert runtime.resolve_precision(None, torch.device("cpu")) == "fp32"
    assert TrainConfig(output_dir="o", device="cpu", precision="auto").precision == want


def test_one_wording_for_a_length_past_the_positions():
    """check_length: the flag, the limit, the value, in one wording for every script."""
    check_length("--max-seq-length", 512, 512)
    with pytest.raises(UserError, match=r"^argument --max-seq-length: expected at most 512 \(the model's "
                                        r"max_position_embeddings\), got 513$"):
        check_length("--max-seq-length", 513, 512)


@pytest.fixture(scope="module")
def bart():
    torch.manual_seed(0)
    return BartForConditionalGeneration(BartConfig(**BART)).eval()


@pytest.mark.parametrize("kw", [dict(num_beams=3, max_length=9, no_repeat_ngram_size=2),
                                dict(do_sample=True, top_k=5, num_return_sequences=2, max_length=7)])
def test_generate_with_settings_equals_generate_with_keywords(bart, kw):
    """generate(settings=resolve_settings(config, **kw)) returns what generate(**kw) returns."""
    ids = torch.tensor([[0, 5, 7, 9, 2], [0, 11, 12, 2, 1]])
    mask = (ids != 1).long()
    torch.manual_seed(1)
    by_keywords = bart.generate(ids, mask, **kw)
    torch.manual_seed(1)
    by_settings = bart.generate(ids, mask, settings=resolve_settings(bart.config, **kw))
    assert torch.equal(by_keywords, by_settings)


def test_generate_takes_settings_or_keywords_not_both(bart):
    """A Settings and keywords together would leave one of them unused: refused, naming the keywords."""
    with pytest.raises(UserError, match=r"settings or generation arguments, not both \(max_length, num_beams\)"):
        bart.generate(torch.tensor([[0, 5, 2]]), settings=resolve_settings(bart.config), num_beams=2, max_length=5)
