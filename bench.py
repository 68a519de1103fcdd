"""Side-by-side speed of minibert/minibart and Hugging Face transformers.

Both models get the same config and weights (HF's random model, or the MiniLM-L6 checkpoint and the 6+6-layer
BART warm-started from it, saved by one side and loaded by the other), the same batches, dtype and device, in one
process. Each repeat runs ours and HF back to back, the order alternating, after a warm-up; the table shows the
median throughput, the ratio ours/HF (> 1: we are faster), the spread of the repeats, the peak tensor memory
of one extra call of each (for training also with gradient checkpointing), and a check that both computed the
same thing (max |ours - HF| of the eval outputs, or whether beam search returned the same tokens). On CPU, rows
of ours with bf16 or int8 weights against HF in fp32 follow for beam search and inference (--ours-weights).

    python bench.py                         # every workload; CUDA + bf16 when present, else CPU + fp32
    python bench.py --device cpu --threads 1 --dtype bf16    # bf16 autocast on CPU, both models
    python bench.py --quick --threads 1     # tiny shapes, seconds: the CI smoke test
    python bench.py --workloads bert_qa_train,bert_infer --repeats 7 --json path/to/bench.json

Shapes (`SIZES`, --sizes): on CUDA base width at full-size batches; on CPU the MiniLM-L6 weights at the shapes
the CPU recipes run, then base width with 2 layers; tiny with --quick. The table names the shape each row ran.
"""
import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from data.cola import collate
from minibart import BartForConditionalGeneration
from minibert import BertConfig, BertForQuestionAnswering, BertForSequenceClassification, qa_loss
from minicore.checkpoint import resolve
from minicore.files import atomic_write
from minicore.quantize import inference_weights
from minitrain import distributed
from minitrain.batching import batch_indices, to_device
from minitrain.optim import make_optimizer

# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------

@dataclass
class Sizes:
    name: str
    bert: dict         # BertConfig fields (random weights), or overrides of the checkpoint's
    bart: dict         # BartConfig fields (random weights), or overrides of the warm-started BART's
    qa: tuple          # batch, length
    cola: tuple        # batch, batches per call
    infer: tuple       # batch, padded length
    bart_train: tuple  # batch, source length, target length
    beam: tuple        # batch, beams, source length, new tokens
    weights: str | None = None  # a BERT checkpoint (e.g. "minilm") both models load; None: HF's random weights
    cola_pad: int | None = None  # both models' batches padded to this; None: ours to each batch's longest, HF to 64


BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
BART_BASE = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072)
SIZES = {
    "cuda": Sizes("base", BERT_BASE, BART_BASE, qa=(32, 384), cola=(32, 16), infer=(128, 128),
                  bart_train=(32, 64, 64), beam=(64, 4, 64, 64)),
    "cpu": Sizes("base-width 2-layer", {**BERT_BASE, "num_hidden_layers": 2},
                 {**BART_BASE, "encoder_layers": 2, "decoder_layers": 2},
                 qa=(8, 128), cola=(32, 2), infer=(16, 128), bart_train=(8, 64, 64), beam=(4, 4, 32, 16)),
    "quick": Sizes("tiny", dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=128),
                   dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                        max_position_embeddings=128),
                   qa=(2, 32), cola=(4, 2), infer=(4, 32), bart_train=(2, 16, 16), beam=(2, 2, 8, 8)),
    # the CPU recipes' shapes: SQuAD 8 x 384, the CoLA tutorial's 32 x 64, paraphrase 16 x 64 -> 64
    "minilm": Sizes("MiniLM-L6", {}, {}, qa=(8, 384), cola=(32, 2), infer=(16, 128), bart_train=(16, 64, 64),
                    beam=(4, 4, 32, 32), weights="minilm", cola_pad=64),
}
DEFAULT_SIZES = {"cuda": ["cuda"], "cpu": ["minilm", "cpu"]}


# ---------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------

@dataclass
class Env:
    device: torch.device
    dtype: str       # "fp32" or "bf16" (autocast; parameters stay fp32)
    compile: bool    # torch.compile our model (HF stays eager, its default)
    cuda_graph: bool  # our generate replays its decoder step as a CUDA graph (its default on CUDA)
    sizes: Sizes
    ddp: bool = False  # training workloads call both models through DistributedDataParallel (a process group exists)
    ours_weights: str = "fp32"  # inference workloads: ours with "bf16" or "int8" weights (see reduced_weights)

    def autocast(self):
        if self.dtype == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


@dataclass
class Case:
    """One workload: two callables doing the same work on `n` samples."""
    workload: str
    shape: str
    unit: str
    n: int
    ours: Callable[[], object]
    hf: Callable[[], object]
    check: str   # how closely ours and HF agree, measured before timing
    note: str
    models: tuple = ()  # (ours, HF)
    training: bool = False  # a training step: its peak memory is measured with gradient checkpointing too


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float | None]:
    """Seconds for one call: (wall, CPU time of the process). Wall: CUDA events on GPU, perf_counter
    on CPU. The CPU time (CPU only) barely moves when other jobs share the cores, so its ratio is the
    steadier comparison on a busy machine (with --threads > 1 it also counts threads spinning)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, None
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float:
    """Peak tensor memory of one call above what was allocated before it (weights, optimizer state, inputs).

    CUDA: torch.cuda.max_memory_allocated. CPU: the profiler's record of every tensor allocation and free
    during the call (profile_memory), the largest sum of live bytes: the same quantity, without the allocator's
    caching, which the resident set size would count (and torch keeps no CPU allocator statistics).
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return max_live_bytes(allocations(fn, device)) / 2**20


def allocations(fn: Callable[[], object], device: torch.device) -> list[tuple[int, int, int]]:
    """Run fn once under the profiler -> [(time ns, bytes (+ allocated, - freed), address)] on `device`, in time
    order."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with quiet_stderr():  # the profiler logs its start and stop there
        prof.start()
    try:
        fn()
    finally:
        with quiet_stderr():
            prof.stop()
    events, todo = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while todo:
        e = todo.pop()
        if e.typed[0] == _EventType.Allocation and e.typed[1].device.type == device.type:
            events.append((e.start_time_ns, e.typed[1].alloc_size, e.typed[1].ptr))
        todo.extend(e.children)
    return sorted(events)


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 to /dev/null for the block (C++ code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def max_live_bytes(events: list[tuple[int, int, int]]) -> int:
    """The largest sum of live bytes of the tensors allocated during the events (frees of older ones are skipped)."""
    live, total, best = set(), 0, 0
    for _, size, ptr in events:
        if size > 0:
            live.add(ptr)
        elif ptr in live:
            live.remove(ptr)
        else:
            continue
        total += size
        best = max(best, total)
    return best


def checkpointing_peaks(case: Case, device: torch.device) -> dict:
    """Peak memory of one more call of each training step with gradient checkpointing on (ours:
    gradient_checkpointing_enable where the model has it, else None; transformers: activation_checkpointing_enable,
    gradient_checkpointing_enable before 5.x). Last: it stays on."""
    peaks = {}
    for who, model in zip(("ours", "hf"), case.models):
        names = ["gradient_checkpointing_enable"] if who == "ours" else ["activation_checkpointing_enable",
                                                                          "gradient_checkpointing_enable"]
        enable = next((getattr(model, n) for n in names if hasattr(model, n)), None)
        if enable is None:
            peaks[who] = None
            continue
        enable()
        peaks[who] = peak_memory_mib(getattr(case, who), device)
    return peaks


def measure(case: Case, env: Env, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        case.ours()
        case.hf()
    wall, cpu = {"ours": [], "hf": []}, {"ours": [], "hf": []}
    for r in range(repeats):
        for who in ("ours", "hf") if r % 2 == 0 else ("hf", "ours"):
            w, c = timed(getattr(case, who), env.device)
            wall[who].append(w)
            cpu[who].append(c)
    mem = {who: peak_memory_mib(getattr(case, who), env.device) for who in ("ours", "hf")}
    ckpt = checkpointing_peaks(case, env.device) if case.training and not env.compile else {"ours": None, "hf": None}
    rate = {who: case.n / statistics.median(t) for who, t in wall.items()}
    spread = max((max(t) - min(t)) / statistics.median(t) for t in wall.values())
    cpu_ratio = None if env.device.type == "cuda" else statistics.median(cpu["hf"]) / statistics.median(cpu["ours"])
    return dict(workload=case.workload, shape=case.shape, unit=case.unit, ours=rate["ours"], hf=rate["hf"],
                ratio=rate["ours"] / rate["hf"], spread=spread, cpu_time_ratio=cpu_ratio, ours_mem_mib=mem["ours"],
                hf_mem_mib=mem["hf"], training=case.training, ours_ckpt_mem_mib=ckpt["ours"],
                hf_ckpt_mem_mib=ckpt["hf"], ours_weights=env.ours_weights, check=case.check, note=case.note,
                ours_s=wall["ours"], hf_s=wall["hf"], ours_cpu_s=cpu["ours"], hf_cpu_s=cpu["hf"])


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------

def train_step(model: torch.nn.Module, env: Env, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """One optimizer step as minitrain.training.fit takes it: loss under autocast, backward, clip to
    norm 1, the trainer's AdamW (fused; no decay on biases and LayerNorms: also HF Trainer's
    default, adamw_torch_fused), zero the gradients. The same for both models."""
    opt = make_optimizer(model, lr=1e-5, weight_decay=0.01, device=env.device)

    def step():
        with env.autocast():
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def no_grad(env: Env, fn: Callable[[], object]) -> Callable[[], object]:
    def call():
        with torch.inference_mode(), env.autocast():
            return fn()
    return call


def reduced_weights(model: nn.Module, kind: str) -> nn.Module:
    """Ours for inference with "bf16" or "int8" weights (minicore.quantize.inference_weights: packed bf16 weights,
    or dynamic int8 quantization of every nn.Linear); "fp32": unchanged."""
    if kind == "fp32":
        return model
    with warnings.catch_warnings():  # torch.ao's deprecation notices: still the way to quantize nn.Linear
        warnings.simplefilter("ignore")
        return inference_weights(model, kind)


def hf_twin(ours_cls, hf_model, env: Env):
    """-> (ours, HF) on the device: ours is `ours_cls` loaded from HF's saved random `hf_model`."""
    with tempfile.TemporaryDirectory() as folder:
        hf_model.save_pretrained(folder)
        ours = ours_cls.from_pretrained(folder)
    return ours.to(env.device), hf_model.to(env.device)


def eval_check(ours, hf, env: Env, diff: Callable[[], float]) -> str:
    """How far apart the two models' eval-mode outputs are on the same input."""
    ours.eval(), hf.eval()
    with torch.no_grad(), env.autocast():
        d = diff()
    ours.train(), hf.train()
    return f"max diff {d:.1e}"


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def random_ids(gen: torch.Generator, shape, vocab_size: int) -> torch.Tensor:
    """Token ids from 5 up: no padding or special tokens in either vocabulary."""
    return torch.randint(5, vocab_size, shape, generator=gen)


def wrapped(model, env: Env, ours: bool = True):
    """The model as a training step calls it: in DistributedDataParallel with env.ddp (as fit wraps it under
    torchrun), then torch.compile'd with env.compile (ours only: HF stays eager, its default)."""
    if env.ddp:
        model = distributed.wrap(model, env.device)
    return torch.compile(model) if env.compile and ours else model


# ---------------------------------------------------------------------------------------------
# BERT workloads
# ---------------------------------------------------------------------------------------------

def bert_pair(ours_cls, env: Env, **overrides):
    """-> (ours, HF): `ours_cls` and its transformers twin, with HF's random weights or the checkpoint's (the task
    head random: both get HF's)."""
    import transformers
    hf_cls = getattr(transformers, ours_cls.__name__)
    if env.sizes.weights:
        hf = hf_cls.from_pretrained(resolve(env.sizes.weights), attn_implementation="sdpa", dtype=torch.float32,
                                    **{**env.sizes.bert, **overrides})
        return hf_twin(ours_cls, hf, env)
    cfg = BertConfig(**{**env.sizes.bert, **overrides})
    hf_cfg = transformers.BertConfig(**cfg.to_hf_dict(), attn_implementation="sdpa")
    return hf_twin(ours_cls, hf_cls(hf_cfg), env)


def bert_shape(env: Env, model) -> str:
    c = model.config
    return f"BERT {env.sizes.name} ({c.num_hidden_layers}L {c.hidden_size}H)"


def bert_qa_train(env: Env) -> Case:
    B, L = env.sizes.qa
    ours, hf = bert_pair(BertForQuestionAnswering, env)
    gen = torch.Generator().manual_seed(0)
    ids = random_ids(gen, (B, L), ours.config.vocab_size)
    types = (torch.arange(L) >= L // 4).long().expand(B, L).contiguous()  # question | context
    start = torch.randint(L // 4, L - 10, (B,), generator=gen)
    end = start + torch.randint(0, 10, (B,), generator=gen)
    ones = torch.ones(B, L, dtype=torch.long)
    ids, types, start, end, ones = to_device([ids, types, start, end, ones], env.device)

    def diff():
        s, e = ours(ids, None, types)
        out = hf(input_ids=ids, attention_mask=ones, token_type_ids=types)
        return max(max_abs_diff(s, out.start_logits), max_abs_diff(e, out.end_logits))

    check = eval_check(ours, hf, env, diff)
    ours_c, hf_c = wrapped(ours, env), wrapped(hf, env, ours=False)
    return Case("bert_qa_train", f"{bert_shape(env, ours)}, {B}x{L}", "samples/s", B,
                train_step(ours, env, lambda: qa_loss(*ours_c(ids, None, types), start, end)),
                train_step(hf, env, lambda: hf_c(input_ids=ids, attention_mask=ones, token_type_ids=types,
                                                 start_positions=start, end_positions=end).loss),
                check, "fwd+bwd+clip+AdamW on full-length features: ours gets attention_mask=None (as "
                       "data/squad.py collates an unpadded batch), HF a mask of ones", (ours, hf), training=True)


def cola_lengths(gen: torch.Generator, n: int) -> list[int]:
    """CoLA-like token counts, [CLS] and [SEP] included: log-normal, median 10.5, clipped to 5..40.

    Fitted to CoLA train (cola_public 1.1) with the uncased WordPiece tokenizer: mean 11.3,
    95th percentile 20, max 47.
    """
    z = torch.randn(n, generator=gen)
    return (math.log(10.5) + 0.39 * z).exp().round().clamp(5, 40).long().tolist()


def cola_train(env: Env) -> Case:
    """Ours: the batches train_cola.py builds by default (random order, padded to each batch's
    longest by data.cola.collate). HF: McCormick's tutorial, the same batches padded to 64.
    With sizes.cola_pad both get the tutorial's batches (the same work)."""
    B, n_batches = env.sizes.cola
    ours, hf = bert_pair(BertForSequenceClassification, env, num_labels=2)
    gen = torch.Generator().manual_seed(0)
    n = B * n_batches
    sents = [[1, *random_ids(gen, (k - 2,), ours.config.vocab_size).tolist(), 2]  # 1, 2: [CLS], [SEP] stand-ins
             for k in cola_lengths(gen, n)]
    labels = torch.randint(0, 2, (n,), generator=gen).tolist()
    order = batch_indices(n, B, seed=0, epoch=0)

    def batches(pad_to):
        return [to_device(collate([sents[i] for i in idx], [labels[i] for i in idx], 0, pad_to), env.device)
                for idx in order]

    ours_batches, hf_batches = batches(env.sizes.cola_pad), batches(env.sizes.cola_pad or 64)
    ids, mask = hf_batches[0]["input_ids"], hf_batches[0]["attention_mask"]
    check = eval_check(ours, hf, env, lambda: max_abs_diff(ours(ids, mask),
                                                           hf(input_ids=ids, attention_mask=mask).logits))
    ours_c, hf_c = wrapped(ours, env), wrapped(hf, env, ours=False)

    def epoch(model, batches, loss):
        steps = [train_step(model, env, lambda b=b: loss(b)) for b in batches]
        return lambda: [step() for step in steps]

    width = statistics.mean(b["input_ids"].size(1) for b in ours_batches)
    padding = (f"both pad to {env.sizes.cola_pad}" if env.sizes.cola_pad else
               f"ours pads each batch to its longest (mean width {width:.1f}), HF pads to 64")
    return Case("cola_train", f"{bert_shape(env, ours)}, {n_batches} batches of {B}x{width:.0f}", "samples/s", n,
                epoch(ours, ours_batches, lambda b: F.cross_entropy(ours_c(b["input_ids"], b["attention_mask"]),
                                                                    b["labels"])),
                epoch(hf, hf_batches, lambda b: hf_c(**b).loss), check,
                f"{sum(map(len, sents)) / n:.1f} tokens per sentence; {padding}", (ours, hf), training=True)


def bert_infer(env: Env) -> Case:
    B, L = env.sizes.infer
    ours, hf = bert_pair(BertForSequenceClassification, env, num_labels=2)
    gen = torch.Generator().manual_seed(0)
    lengths = [L, *torch.randint(L // 4, L + 1, (B - 1,), generator=gen).tolist()]
    b = to_device(collate([random_ids(gen, (k,), ours.config.vocab_size).tolist() for k in lengths], [0] * B, 0, L),
                  env.device)
    ids, mask = b["input_ids"], b["attention_mask"]
    ours.eval(), hf.eval()
    ours = reduced_weights(ours, env.ours_weights)
    check = eval_check(ours, hf, env, lambda: max_abs_diff(ours(ids, mask),
                                                           hf(input_ids=ids, attention_mask=mask).logits))
    ours.eval(), hf.eval()
    ours_c = torch.compile(ours) if env.compile else ours
    return Case("bert_infer", f"{bert_shape(env, ours)}, {B}x{L} padded", "samples/s", B,
                no_grad(env, lambda: ours_c(ids, mask)), no_grad(env, lambda: hf(input_ids=ids, attention_mask=mask)),
                check, f"classification logits in inference mode; real lengths uniform in {L // 4}..{L}")


# ---------------------------------------------------------------------------------------------
# BART workloads
# ---------------------------------------------------------------------------------------------

def bart_pair(env: Env):
    """-> (ours, HF): BART with HF's random weights, or warm-started from the checkpoint (ours, then saved and
    loaded by HF)."""
    import transformers
    hf_cls = transformers.BartForConditionalGeneration
    if env.sizes.weights:
        ours = BartForConditionalGeneration.from_bert(env.sizes.weights)
        with tempfile.TemporaryDirectory() as folder:
            ours.save_pretrained(folder)
            hf = hf_cls.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32, **env.sizes.bart)
        return ours.to(env.device), hf.to(env.device)
    hf_cfg = transformers.BartConfig(**env.sizes.bart, attn_implementation="sdpa")
    return hf_twin(BartForConditionalGeneration, hf_cls(hf_cfg), env)


WARM_START_EPS = ("; the BART warm-started from BERT has BERT's LayerNorm eps 1e-12, which transformers' BART cannot "
                  "take (it has 1e-5 fixed): hence the max diff")


def bart_shape(env: Env, model) -> str:
    c = model.config
    return f"BART {env.sizes.name} ({c.encoder_layers}+{c.decoder_layers}L {c.d_model}H)"


def bart_train(env: Env) -> Case:
    B, S, T = env.sizes.bart_train
    ours, hf = bart_pair(env)
    gen = torch.Generator().manual_seed(0)
    src = random_ids(gen, (B, S), ours.config.vocab_size)
    labels = random_ids(gen, (B, T), ours.config.vocab_size)
    ones = torch.ones(B, S, dtype=torch.long)
    src, labels, ones = to_device([src, labels, ones], env.device)
    check = eval_check(ours, hf, env, lambda: max_abs_diff(
        ours(src, labels=labels), hf(input_ids=src, attention_mask=ones, labels=labels).logits))
    ours_c, hf_c = wrapped(ours, env), wrapped(hf, env, ours=False)
    return Case("bart_train", f"{bart_shape(env, ours)}, {B}x{S}->{T}", "samples/s", B,
                train_step(ours, env, lambda: ours_c(src, labels=labels, return_loss=True)),
                train_step(hf, env, lambda: hf_c(input_ids=src, attention_mask=ones, labels=labels).loss),
                check, "fwd+bwd+clip+AdamW, teacher forcing; nothing padded: ours gets no mask, HF a mask of ones"
                + WARM_START_EPS * bool(env.sizes.weights), (ours, hf), training=True)


def bart_beam(env: Env) -> Case:
    B, beams, S, new = env.sizes.beam
    ours, hf = bart_pair(env)
    ours.eval(), hf.eval()
    ours = reduced_weights(ours, env.ours_weights)
    gen = torch.Generator().manual_seed(0)
    src = random_ids(gen, (B, S), ours.config.vocab_size)
    ones = torch.ones(B, S, dtype=torch.long)
    src, ones = to_device([src, ones], env.device)
    args = dict(num_beams=beams, max_length=new + 1, min_length=new + 1, length_penalty=1.0, early_stopping=True,
                no_repeat_ngram_size=0, do_sample=False)
    run_ours = no_grad(env, lambda: ours.generate(src, cuda_graph=env.cuda_graph, **args))
    run_hf = no_grad(env, lambda: hf.generate(input_ids=src, attention_mask=ones, **args))
    a, b = run_ours(), run_hf()
    if a.shape != b.shape:
        check = f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    else:
        check = "same tokens" if bool((a == b).all()) else f"{(a != b).float().mean().item():.0%} tokens differ"
    return Case("bart_beam", f"{bart_shape(env, ours)}, {B}x{S}, {beams} beams, {new} new", "sequences/s", B,
                run_ours, run_hf, check, f"min_length = max_length forces all {new} new tokens; both use a KV cache",
                (ours, hf))


WORKLOADS = {"bert_qa_train": bert_qa_train, "cola_train": cola_train, "bart_train": bart_train,
             "bart_beam": bart_beam, "bert_infer": bert_infer}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return (f"CPU {model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
            f"load average {os.getloadavg()[0]:.1f} at start")


def table(rows: list[dict], skipped: list[str]) -> str:
    def mib(x):
        return "n/a" if x is None else f"{x:.0f}" if x >= 10 else f"{x:.1f}"

    def ckpt(r, who):
        return mib(r[f"{who}_ckpt_mem_mib"]) if r["training"] else "-"
    cpu = any(r["cpu_time_ratio"] is not None for r in rows)
    head = ["workload", "shape", "unit", "ours weights", "ours", "HF", "ours/HF", "spread",
            *(["by CPU time"] if cpu else []), "ours MiB", "HF MiB", "ours ckpt MiB", "HF ckpt MiB", "check"]
    body = [[r["workload"], r["shape"], r["unit"], r["ours_weights"], f"{r['ours']:.2f}", f"{r['hf']:.2f}",
             f"{r['ratio']:.2f}x", f"{r['spread']:.0%}", *([f"{r['cpu_time_ratio']:.2f}x"] if cpu else []),
             mib(r["ours_mem_mib"]), mib(r["hf_mem_mib"]), ckpt(r, "ours"), ckpt(r, "hf"), r["check"]] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"- {r['workload']}: {r['note']}" for r in rows if r["ours_weights"] == "fp32"]
    lines += [f"- not measured: {s}" for s in skipped]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda, cuda:N (default: %(default)s)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="bf16 = autocast, both models; default bf16 on CUDA, "
                                                            "fp32 on CPU")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, from {', '.join(WORKLOADS)}")
    p.add_argument("--sizes", help="comma-separated, from cuda (base width), cpu (base width, 2 layers), minilm "
                                   "(the MiniLM-L6 weights), quick (tiny) (default: "
                                   f"{'; '.join(f'{d}: ' + ','.join(v) for d, v in DEFAULT_SIZES.items())}; "
                                   "quick with --quick)")
    p.add_argument("--ours-weights", help="comma-separated, from bf16, int8: extra rows of bart_beam and bert_infer "
                                          "with ours' weights so, against HF in fp32 (default: bf16,int8 on CPU, "
                                          "none on CUDA; 'none' for none)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls of each model; the median is reported "
                                                          "(default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each model first (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny shapes (a CPU smoke test)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="torch.compile our models (HF stays eager, its default)")
    p.add_argument("--eager-decode", action="store_true",
                   help="our generate without its CUDA-graph decode step (to measure what the graph gives)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)

    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device: expected cpu, cuda or cuda:N, got {args.device!r}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    args.workloads = comma_list(p, "--workloads", args.workloads, WORKLOADS)
    cpu = args.device.type == "cpu"
    args.sizes = comma_list(p, "--sizes", args.sizes, SIZES) if args.sizes else (
        ["quick"] if args.quick else DEFAULT_SIZES[args.device.type])
    weights = args.ours_weights or ("bf16,int8" if cpu else "none")
    args.ours_weights = [] if weights == "none" else comma_list(p, "--ours-weights", weights, ["bf16", "int8"])
    if args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        p.error("--repeats and --threads must be >= 1, --warmup >= 0")
    return args


def comma_list(p: argparse.ArgumentParser, flag: str, value: str, valid) -> list[str]:
    names = [w.strip() for w in value.split(",") if w.strip()]
    if unknown := [w for w in names if w not in valid]:
        p.error(f"{flag}: unknown {', '.join(unknown)}; expected some of {', '.join(valid)}")
    return names


def run_rows(env: Env, names: list[str], ours_weights: list[str], repeats: int, warmup: int,
             skipped: list[str]) -> list[dict]:
    """Each workload at env's sizes, then the inference workloads with ours' reduced-precision weights against HF
    in fp32 (no autocast). A reduced-weight row that cannot run is named in `skipped` instead."""
    runs = [(name, env) for name in names]
    runs += [(name, replace(env, dtype="fp32", ours_weights=w)) for w in ours_weights
             for name in names if name in ("bart_beam", "bert_infer")]
    rows = []
    for name, e in runs:
        torch.manual_seed(0)
        try:
            case = WORKLOADS[name](e)
        except (RuntimeError, TypeError, NotImplementedError, AttributeError) as err:
            if e.ours_weights == "fp32":
                raise
            skipped.append(f"{name} ({e.sizes.name}) with ours' {e.ours_weights} weights: "
                           f"{type(err).__name__}: {str(err).splitlines()[0][:150]}")
            continue
        rows.append(measure(case, e, repeats, warmup))
        r = rows[-1]
        print(f"  {name} ({e.sizes.name}, ours {e.ours_weights}): ours {r['ours']:.2f}, HF {r['hf']:.2f} {r['unit']} "
              f"({r['ratio']:.2f}x)", file=sys.stderr, flush=True)
        del case
        gc.collect()
        if env.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as minitrain.training.fit; matters for fp32 only
        torch.backends.cudnn.allow_tf32 = True

    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    command = shlex.join(["python", "bench.py", *(sys.argv[1:] if argv is None else argv)])
    machine = device_name(device)
    header = "; ".join([
        machine, dtype + "; ours compiled" * args.compile + "; ours eager decode" * args.eager_decode,
        f"torch {torch.__version__}, transformers {transformers.__version__}",
        f"median of {args.repeats} after {args.warmup} warm-up, ours and HF interleaved",
        "spread = (max - min) / median of the noisier side",
        "MiB = peak of the tensors allocated during one call (ckpt: with gradient checkpointing; n/a: not available)",
        *(["by CPU time = ratio of the process CPU times, steadier on a busy machine"] * (device.type == "cpu"))])
    print(f"# {command}\n# {header}\n", flush=True)

    rows, skipped = [], []
    for size in args.sizes:
        env = Env(device, dtype, args.compile, device.type == "cuda" and not args.eager_decode, SIZES[size])
        rows += run_rows(env, args.workloads, args.ours_weights, args.repeats, args.warmup, skipped)
    print(table(rows, skipped), flush=True)
    result = dict(command=command, setup=header, device=machine, dtype=dtype, compile=args.compile,
                  cuda_graph=device.type == "cuda" and not args.eager_decode, torch=torch.__version__,
                  transformers=transformers.__version__, repeats=args.repeats, warmup=args.warmup, sizes=args.sizes,
                  results=rows, skipped=skipped)
    if args.json:
        atomic_write(Path(args.json), lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    return result


if __name__ == "__main__":
    main()
