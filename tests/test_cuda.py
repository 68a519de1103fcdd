"""The same parity checks on a GPU: fp32 and bf16 autocast against transformers on CUDA.

Skipped without CUDA (CI has none); run on a GPU machine with
`python -m pytest tests/test_cuda.py`.
"""
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

from minibart import BartForConditionalGeneration  # noqa: E402
from minibert import BertForQuestionAnswering  # noqa: E402
from minitrain.optim import make_optimizer  # noqa: E402

DEV = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_matmuls():
    """fp32 comparisons need true fp32 matmuls (no TF32) on both sides."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def bert_pair(tmp_path):
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=96, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.BertForQuestionAnswering(cfg).eval()
    hf.save_pretrained(tmp_path)
    return BertForQuestionAnswering.from_pretrained(tmp_path).to(DEV), hf.to(DEV)


def batch(vocab: int, padded: bool):
    torch.manual_seed(1)
    ids = torch.randint(5, vocab, (4, 24), device=DEV)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 17:] = 0
        mask[3, 5:] = 0
    return ids, mask


@pytest.mark.parametrize("padded", [False, True])
def test_bert_qa_fp32_and_bf16_match_hf(tmp_path, padded):
    """Span logits equal HF's on CUDA: within 1e-5 in fp32, within 1e-2 relative under bf16 autocast."""
    ours, hf = bert_pair(tmp_path)
    ids, mask = batch(120, padded)
    am = mask if padded else None  # unpadded: no mask at all, so SDPA may take the flash kernel
    keep = mask.bool()
    with torch.no_grad():
        s, e = ours(ids, am)
        ref = hf(ids, attention_mask=am)
        assert (s - ref.start_logits)[keep].abs().max() < 1e-5
        assert (e - ref.end_logits)[keep].abs().max() < 1e-5
        with torch.autocast("cuda", dtype=torch.bfloat16):
            s16, _ = ours(ids, am)
            ref16 = hf(ids, attention_mask=am)
    assert rel_err(s16[keep], ref16.start_logits[keep]) < 1e-2
    assert rel_err(s16[keep], ref.start_logits[keep]) < 3e-2


def test_bert_bf16_training_step_is_finite_and_learns(tmp_path):
    """Fused CUDA AdamW under bf16 autocast on fp32 parameters lowers the loss on a fixed batch."""
    ours, _ = bert_pair(tmp_path)
    ours.train()
    opt = make_optimizer(ours, 1e-3, 0.01, DEV)
    ids, mask = batch(120, True)
    target = torch.tensor([1, 2, 3, 4], device=DEV)
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            s, e = ours(ids, mask)
            loss = F.cross_entropy(s, target) + F.cross_entropy(e, target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] * 0.5
    assert next(ours.parameters()).dtype == torch.float32


def bart_pair(tmp_path):
    cfg = transformers.BartConfig(vocab_size=96, d_model=64, encoder_layers=2, decoder_layers=2,
                                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=80,
                                  decoder_ffn_dim=80, max_position_embeddings=64, pad_token_id=1,
                                  bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                                  forced_eos_token_id=2)
    torch.manual_seed(0)
    hf = transformers.BartForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        hf.final_logits_bias[0, 2] = 2.0  # make EOS likely enough that beams finish
    hf.save_pretrained(tmp_path)
    return BartForConditionalGeneration.from_pretrained(tmp_path).to(DEV).eval(), hf.to(DEV)


def test_bart_logits_fp32_and_bf16_match_hf(tmp_path):
    """Seq2seq logits equal HF's on CUDA: within 1e-5 in fp32, within 1e-2 relative under bf16 autocast."""
    ours, hf = bart_pair(tmp_path)
    ids, mask = batch(96, True)
    dec = ids[:, :10]
    with torch.no_grad():
        a = ours(ids, mask, decoder_input_ids=dec)
        b = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        assert (a - b).abs().max() < 1e-5
        with torch.autocast("cuda", dtype=torch.bfloat16):
            a16 = ours(ids, mask, decoder_input_ids=dec)
            b16 = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert rel_err(a16, b16) < 1e-2


@pytest.mark.parametrize("kw", [dict(num_beams=1), dict(num_beams=4, num_return_sequences=2, length_penalty=0.6),
                                dict(num_beams=3, no_repeat_ngram_size=2, min_length=6)])
def test_bart_generate_fp32_is_token_identical_on_cuda(tmp_path, kw):
    """Greedy and beam search on CUDA return exactly HF's tokens for a padded batch."""
    ours, hf = bart_pair(tmp_path)
    ids, mask = batch(96, True)
    args = dict(max_length=20, do_sample=False, **kw)
    with torch.no_grad():
        a = ours.generate(ids, mask, **args)
        b = hf.generate(input_ids=ids, attention_mask=mask, **args)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kw", [dict(num_beams=4, no_repeat_ngram_size=3), dict(num_beams=1)])
def test_bart_cuda_graph_step_equals_eager_under_bf16(tmp_path, kw):
    """The CUDA-graph decode step that generate() uses on CUDA returns the eager step's tokens under
    bf16 autocast (the autocast weight casts happen in the warm-up, before capture)."""
    ours, _ = bart_pair(tmp_path)
    ids, mask = batch(96, True)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        graphed = ours.generate(ids, mask, max_length=20, **kw)
        eager = ours.generate(ids, mask, max_length=20, cuda_graph=False, **kw)
        again = ours.generate(ids, mask, max_length=20, **kw)  # a second call captures its own graph
    assert torch.equal(graphed, eager)
    assert torch.equal(again, eager)
