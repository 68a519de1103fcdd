"""lm_head_loss, the chunked LM-head cross-entropy, against the reference loss on materialized logits and against
transformers; and the LM head as decoding reads it (decoding_head)."""
import pytest
import torch
import torch.nn.functional as F
import transformers

from minibart import BartConfig, BartForConditionalGeneration, lm_head_loss, seq2seq_loss

CONFIG = dict(vocab_size=53, d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
              decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32)


def head_inputs(dtype=torch.float64, N=37, D=12, V=29, seed=0):
    """Hidden states [N, D], weight [V, D], bias [V] (all requiring gradients) and labels [N] with ignored rows."""
    g = torch.Generator().manual_seed(seed)
    hidden, weight, bias = (torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()
                            for shape in ((N, D), (V, D), (V,)))
    labels = torch.randint(0, V, (N,), generator=g)
    labels[torch.rand(N, generator=g) < 0.3] = -100
    return hidden, weight, bias, labels


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("rows", [1, 5, 16, 37, 64])
def test_chunked_loss_and_gradients_equal_the_reference(rows):
    """Any chunking gives the loss and the gradients of cross_entropy on the full logits (float64, to rounding)."""
    hidden, weight, bias, labels = head_inputs()
    want = F.cross_entropy(hidden @ weight.T + bias, labels, ignore_index=-100)
    got = lm_head_loss(hidden, weight, bias, labels, chunk_rows=rows)
    assert got.dtype == torch.float64 and torch.allclose(got, want, rtol=1e-12, atol=0)
    for a, b in zip(grads(got, hidden, weight, bias), grads(want, hidden, weight, bias)):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)


def test_upstream_gradient_scales_and_frozen_inputs_get_none():
    """backward(k) scales every gradient by k; an input that needs no gradient gets none (its GEMM is skipped)."""
    hidden, weight, bias, labels = head_inputs()
    bias.requires_grad_(False)
    want = grads(3 * F.cross_entropy(hidden @ weight.T + bias, labels), hidden, weight)
    loss = lm_head_loss(hidden, weight, bias, labels, chunk_rows=8)
    (3 * loss).backward()
    assert bias.grad is None
    for a, b in zip((hidden.grad, weight.grad), want):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)


def test_every_label_ignored_gives_nan_and_zero_gradients_as_cross_entropy():
    hidden, weight, bias, labels = head_inputs()
    labels[:] = -100
    loss = lm_head_loss(hidden, weight, bias, labels, chunk_rows=8)
    assert torch.isnan(loss) and torch.isnan(F.cross_entropy(hidden @ weight.T + bias, labels))
    assert all(not g.any() for g in grads(loss, hidden, weight, bias))


def test_second_backward_is_refused():
    hidden, weight, bias, labels = head_inputs()
    loss = lm_head_loss(hidden, weight, bias, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


def test_without_gradients_only_the_loss_is_computed():
    hidden, weight, bias, labels = head_inputs()
    with torch.no_grad():
        loss = lm_head_loss(hidden, weight, bias, labels, chunk_rows=8)
    assert loss.grad_fn is None
    assert torch.allclose(loss, F.cross_entropy(hidden @ weight.T + bias, labels), rtol=1e-12, atol=0)


def test_bf16_autocast_matches_the_reference_under_autocast():
    """Under bf16 autocast the GEMMs run in bf16 and the softmax in float32, as the reference's F.linear and
    .float(); the results agree to bf16 rounding and the loss is float32."""
    hidden, weight, bias, labels = head_inputs(torch.float32, N=70, D=32, V=101)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = seq2seq_loss((F.linear(hidden, weight) + bias)[None], labels[None])
        got = lm_head_loss(hidden, weight, bias, labels, chunk_rows=16)
    assert got.dtype == torch.float32 and torch.allclose(got, want, rtol=1e-4, atol=0)
    for a, b in zip(grads(got, hidden, weight, bias), grads(want, hidden, weight, bias)):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).abs().max() <= 2e-2 * b.abs().max()


@pytest.fixture(scope="module")
def bart_pair(tmp_path_factory):
    """A random transformers BART saved and loaded as ours (dropout 0), and a batch with padded labels."""
    torch.manual_seed(0)
    hf = transformers.BartForConditionalGeneration(transformers.BartConfig(**CONFIG, dropout=0.0))
    with torch.no_grad():
        hf.final_logits_bias.normal_()  # a bias that matters
    folder = tmp_path_factory.mktemp("bart")
    hf.save_pretrained(folder)
    ours = BartForConditionalGeneration.from_pretrained(folder)
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, CONFIG["vocab_size"], (3, 9), generator=g)
    labels = torch.randint(3, CONFIG["vocab_size"], (3, 7), generator=g)
    labels[1, 4:] = labels[2, 2:] = -100
    return ours.train(), hf.train(), src, labels


def test_model_loss_equals_the_loss_on_its_logits_and_transformers(bart_pair):
    """model(..., labels, return_loss=True) gives seq2seq_loss(model(..., labels), labels) and the same gradients
    for every parameter; and transformers' loss for the same weights."""
    ours, hf, src, labels = bart_pair
    loss = ours(src, labels=labels, return_loss=True)
    reference = seq2seq_loss(ours(src, labels=labels), labels)
    assert torch.allclose(loss, reference, rtol=1e-6, atol=0)
    assert torch.allclose(loss, hf(input_ids=src, labels=labels).loss, rtol=1e-6, atol=0)
    params = [p for p in ours.parameters() if p.requires_grad]
    for p, a, b in zip(params, grads(loss, *params), grads(reference, *params)):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-9, p.shape


def test_return_loss_needs_labels(bart_pair):
    ours, _, src, _ = bart_pair
    with pytest.raises(ValueError, match="needs labels"):
        ours(src, decoder_input_ids=src, return_loss=True)


def test_decoding_head_is_made_once_per_weight_version():
    """The decoding head is a copy (on CPU in oneDNN's layout, for fp32 and bf16), reused while the weight is
    unchanged and made again after an in-place update, whose logits are the LM head's in its dtype; in a dtype
    oneDNN does not pack (float64) on CPU it is the weight itself."""
    model = BartForConditionalGeneration(BartConfig(**CONFIG))
    hidden = torch.randn(3, 2, CONFIG["d_model"])
    for dtype in (torch.float32, torch.bfloat16):
        first = model.decoding_head(dtype)
        assert model.decoding_head(dtype) is first
        with torch.no_grad():
            model.lm_head.weight.add_(1.0)
        second = model.decoding_head(dtype)
        assert second is not first
        want = F.linear(hidden.to(dtype), model.lm_head.weight.to(dtype)) + model.final_logits_bias
        torch.testing.assert_close(model.logits(hidden, second), want)
    model.double()
    assert model.decoding_head(torch.float64) is model.lm_head.weight


def test_the_tied_embedding_gradient_is_summed_without_weight_sized_temporaries():
    """With return_loss the tied weight's gradient is the LM head's, with the token lookups' rows added into it in
    place: the backward pass allocates no other tensor of the weight's size, and the gradient (dense, as the
    optimizer needs it) equals the reference path's."""
    model = BartForConditionalGeneration(BartConfig(**{**CONFIG, "vocab_size": 5003, "dropout": 0.0})).train()
    weight = model.model.shared.weight
    g = torch.Generator().manual_seed(0)
    src, labels = torch.randint(3, 5003, (3, 9), generator=g), torch.randint(3, 5003, (3, 7), generator=g)
    want = grads(seq2seq_loss(model(src, labels=labels), labels), weight)[0]
    loss = model(src, labels=labels, return_loss=True)
    with torch.profiler.profile(profile_memory=True) as prof:
        loss.backward()
    allocated = [e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.nbytes() > 0]
    assert allocated and weight.numel() * weight.element_size() not in allocated
    assert weight.grad.layout == torch.strided and (weight.grad - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_loss_matches_the_reference_in_fp32_and_bf16_and_decoding_pads_the_head():
    """On CUDA: lm_head_loss within float rounding of the reference in fp32 (no TF32) and within bf16 rounding
    under bf16 autocast, one chunk or several; decoding reads a head of 64-row multiples whose extra rows are 0."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        hidden, weight, bias, labels = (t.detach().cuda().requires_grad_(t.requires_grad)
                                        for t in head_inputs(torch.float32, N=300, D=64, V=1001))
        for rows, autocast, tol in [(None, False, 1e-5), (64, False, 1e-5), (None, True, 2e-2), (64, True, 2e-2)]:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                want = seq2seq_loss((F.linear(hidden, weight) + bias)[None], labels[None])
                got = lm_head_loss(hidden, weight, bias, labels, chunk_rows=rows)
            assert torch.allclose(got, want, rtol=tol / 10, atol=0), (rows, autocast)
            for a, b in zip(grads(got, hidden, weight, bias), grads(want, hidden, weight, bias)):
                assert (a - b).abs().max() <= tol * b.abs().max(), (rows, autocast)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    model = BartForConditionalGeneration(BartConfig(**CONFIG)).cuda()
    head = model.decoding_head(torch.bfloat16)
    assert head.shape == (64, CONFIG["d_model"]) and not head[CONFIG["vocab_size"]:].any()
    assert model.decoding_head(torch.bfloat16) is head


def test_no_gradients_are_computed_under_no_grad(monkeypatch):
    """Evaluation (no_grad) gets the same loss without the gradient work (the softmax-minus-onehot step)."""
    calls = []
    scatter_add_ = torch.Tensor.scatter_add_
    monkeypatch.setattr(torch.Tensor, "scatter_add_", lambda t, *a: calls.append(1) or scatter_add_(t, *a))
    torch.manual_seed(0)
    hidden, weight = torch.randn(6, 8, requires_grad=True), torch.randn(11, 8, requires_grad=True)
    labels = torch.tensor([1, 2, -100, 4, 5, 6])
    with torch.no_grad():
        loss = lm_head_loss(hidden, weight, None, labels, chunk_rows=4)
    assert calls == [] and not loss.requires_grad
    torch.testing.assert_close(loss, seq2seq_loss((hidden @ weight.t())[None], labels[None]))
    lm_head_loss(hidden, weight, None, labels, chunk_rows=4)
    assert len(calls) == 2  # with gradients: once per chunk
