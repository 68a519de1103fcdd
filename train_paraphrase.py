"""Paraphrase generation with BART, following T. Rajapakse, "BART for Paraphrasing with Simple
Transformers" (2020): facebook/bart-large fine-tuned on positive paraphrase pairs for 2 epochs,
batch 8, AdamW lr 5e-5 with linear warmup over 6% of the steps, max_seq_length 128; generation
with top-k 50 / top-p 0.95 sampling, 3 sequences, max_length 128, and the config's num_beams 4 and
no_repeat_ngram_size 3 (so it samples within beams).

Offline, `--model minilm` (or any BERT folder) builds a BART warm-started from BERT (Rothe et al.
2020) with BERT's tokenizer; `--denoise-steps N` first trains it on BART's own pre-training task
(text infilling + sentence permutation, Lewis et al. 2020) on unlabeled text, so that its decoder
learns to read the encoder before it sees the pairs (5,019 from MSRP + PAWS-QQP after clean-up).

    python train_paraphrase.py                                        # the blog, data from the Hub
    python train_paraphrase.py --model minilm --data-dir ../shared/data/paraphrase \\
        --denoise-steps 4000 --denoise-text ../shared/data/squad/train-v2.0.json --output-dir results/paraphrase
"""
import argparse
import dataclasses
import json
import math
import random
import time

import numpy as np
import torch

from data.noising import bart_noise, word_start_table
from data.paraphrase import (Pair, collate, dedupe, drop_near_copies, first_non_copy, load_hub, load_local, normalize,
                             paraphrase, paraphrase_metrics, split_heldout, to_labels, unlabeled_text)
from data.tokens import encode
from minibart import BartForConditionalGeneration
from minibart.generation import check_generation_args
from minibert.checkpoint import load_tokenizer, read_config, resolve
from minibert.cli import ArgumentParser, UserError
from minibert.config import InvalidValue
from minibert.training import (RunLog, TrainConfig, add_training_args, batch_indices, finish_run, fingerprint, fit,
                               is_main_process, last_checkpoint, prepare_run, run_info, start_run, write_text)


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    add_training_args(p, model="facebook/bart-large", output_dir="out/paraphrase", epochs=2, batch_size=8,
                      lr=5e-5, warmup_ratio=0.06, weight_decay=0.0)
    p.add_argument("--data-dir", help="folder with msrp/, paws_*/ and/or quora_duplicate_questions.tsv "
                                      "(default: PAWS, MRPC and Quora from the Hub)")
    p.add_argument("--max-seq-length", type=int, default=128, help="tokens per sentence, special tokens included")
    p.add_argument("--both-directions", action="store_true", help="also train on (target, source)")
    p.add_argument("--max-pair-bleu", type=float,
                   help="drop training pairs whose target scores at least this sentence BLEU against its source "
                        "(near-copies; default: keep all, as the blog)")
    p.add_argument("--denoise-steps", type=int, default=0,
                   help="BART denoising steps on unlabeled text before fine-tuning (0 = none)")
    p.add_argument("--denoise-text", nargs="*", default=[],
                   help="SQuAD JSON files whose contexts join the training sentences as denoising text")
    p.add_argument("--denoise-lr", type=float, help="peak lr of the denoising stage (default: --lr)")
    p.add_argument("--denoise-batch-size", type=int,
                   help="batch of the denoising stage (default: --batch-size; larger batches keep a GPU busy)")
    p.add_argument("--max-eval", type=int, help="evaluate on a seeded sample of this many held-out pairs")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--eval-only", action="store_true",
                   help="no training: evaluate --model (a BART checkpoint) as it is, e.g. with other generation settings")
    g = p.add_argument_group("generation (the blog's)")
    g.add_argument("--num-beams", type=int, default=4)
    g.add_argument("--no-repeat-ngram-size", type=int, default=3)
    g.add_argument("--encoder-no-repeat-ngram-size", type=int, default=0,
                   help="ban every n-gram of the source from the output (against copying; 0 = off, the blog's)")
    g.add_argument("--max-length", type=int, default=128, help="generated tokens, start token included")
    g.add_argument("--top-k", type=int, default=50)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--num-return-sequences", type=int, default=3, help="paraphrases per sample in samples.md")
    args = p.parse_args(argv)
    for flag, ok, want in [("--max-seq-length", args.max_seq_length >= 3, ">= 3"),
                           ("--denoise-steps", args.denoise_steps >= 0, ">= 0"),
                           ("--denoise-lr", args.denoise_lr is None or args.denoise_lr > 0, "> 0"),
                           ("--denoise-batch-size", args.denoise_batch_size is None or args.denoise_batch_size >= 1,
                            ">= 1"),
                           ("--max-eval", args.max_eval is None or args.max_eval >= 1, ">= 1"),
                           ("--eval-batch-size", args.eval_batch_size >= 1, ">= 1"),
                           ("--max-pair-bleu", args.max_pair_bleu is None or 0 < args.max_pair_bleu <= 100,
                            "in (0, 100]")]:
        if not ok:
            p.error(f"argument {flag}: expected a value {want}, got {getattr(args, flag[2:].replace('-', '_'))}")
    if args.eval_only and (args.denoise_steps or args.resume):
        p.error("argument --eval-only: trains nothing, so --denoise-steps and --resume do not apply")
    try:
        check_generation_flags(args)
    except UserError as e:
        p.error(str(e))
    args.denoise_lr = args.denoise_lr or args.lr  # the denoising stage's defaults, resolved once
    args.denoise_batch_size = args.denoise_batch_size or args.batch_size
    return args


def generation_settings(args) -> dict[str, dict]:
    """generate()'s arguments for the samples: by beam search (every beam returned) and by the blog's sampling."""
    common = dict(num_beams=args.num_beams, no_repeat_ngram_size=args.no_repeat_ngram_size,
                  encoder_no_repeat_ngram_size=args.encoder_no_repeat_ngram_size, max_length=args.max_length)
    return {"beam": {**common, "num_return_sequences": args.num_beams},
            "sampled": {**common, "do_sample": True, "top_k": args.top_k, "top_p": args.top_p,
                        "num_return_sequences": args.num_return_sequences}}


def check_generation_flags(args, config=None) -> None:
    """The generation flags as generate() will check them (with the model's config: also against its positions);
    a bad one is a UserError naming the flag."""
    for kw in generation_settings(args).values():
        try:
            check_generation_args(config, **kw)
        except InvalidValue as e:
            raise UserError(f"argument --{e.name.replace('_', '-')}: expected {e.valid}, got {e.value}") from None


def load_model(name: str) -> BartForConditionalGeneration:
    """A BART checkpoint, or a BART warm-started from a BERT checkpoint (model_type "bert")."""
    if read_config(resolve(name)).get("model_type") == "bert":
        return BartForConditionalGeneration.from_bert(name)
    return BartForConditionalGeneration.from_pretrained(name)


def load_pairs(args) -> tuple[list[Pair], list[Pair], str]:
    """(train pairs, held-out pairs, where they came from)."""
    if args.data_dir:
        train, held = load_local(args.data_dir, "train"), load_local(args.data_dir, "test")
        source = f"{args.data_dir} (train files; held out: msrp test Quality=1)"
    else:
        train = load_hub("paws", "train") + load_hub("mrpc", "train") + load_hub("quora", "train")
        held = load_hub("mrpc", "dev")
        source = "hub: paws labeled_final + glue mrpc + sentence-transformers/quora-duplicates (held out: mrpc dev)"
    if args.both_directions:
        train = train + [Pair(p.target, p.source) for p in train]
    seen = {normalize(s) for p in held for s in p}  # no held-out sentence is trained on
    train = [p for p in dedupe(train) if normalize(p.source) not in seen and normalize(p.target) not in seen]
    if args.max_pair_bleu is not None:
        train = drop_near_copies(train, args.max_pair_bleu)
    if args.max_eval is not None and args.max_eval < len(held):
        held = split_heldout(held, args.max_eval, args.seed)[1]
    return train, held, source


def denoise_stage(model, tok, texts: list[str], args, cfg: TrainConfig, log: RunLog) -> dict:
    """BART pre-training (Lewis et al. 2020, 2.2): reconstruct each passage from its noised copy."""
    c = model.config
    body = args.max_seq_length - 2  # room for the start and end tokens
    chunks = [e.ids[i:i + body] for e in tok.encode_batch(texts, add_special_tokens=False)
              for i in range(0, len(e.ids), body)]  # long passages become several chunks
    mask_id = tok.token_to_id("[MASK]") if tok.token_to_id("[MASK]") is not None else tok.token_to_id("<mask>")
    if mask_id is None:
        raise ValueError(f"the tokenizer of {args.model} has neither [MASK] nor <mask>: denoising needs one")
    ends = {i for i in (tok.token_to_id(t) for t in (".", "!", "?")) if i is not None}
    word_start = word_start_table(tok.get_vocab())
    bos, eos = [c.bos_token_id], [c.eos_token_id]
    batch_size = args.denoise_batch_size
    log.print(f"denoising: {len(texts)} passages -> {len(chunks)} chunks of <= {body} tokens, "
              f"{args.denoise_steps} steps x batch {batch_size}"
              + (f", stopping after {cfg.max_steps} (--max-steps)" if (cfg.max_steps or math.inf) < args.denoise_steps
                 else ""))

    # one "epoch" of exactly denoise_steps batches, cycling over the chunks: position p of the stream is chunk
    # order[p], noised with its own random stream, so a batch's noise does not depend on how it is split
    order = np.concatenate([np.random.default_rng([args.seed, 1, k]).permutation(len(chunks))
                            for k in range(-(-args.denoise_steps * batch_size // len(chunks)))])

    def batches(epoch):
        return [list(range(s * batch_size, (s + 1) * batch_size)) for s in range(args.denoise_steps)]

    def collate_noised(positions):
        noised = [bos + bart_noise(chunks[order[p]], mask_id, ends, np.random.default_rng([args.seed, 2, p]),
                                   word_start=word_start)[:body] + eos for p in positions]
        labels = [to_labels(bos + chunks[order[p]] + eos, c.decoder_start_token_id) for p in positions]
        return collate(noised, labels, c.pad_token_id)

    out = f"{cfg.output_dir}/denoise"
    stage = dataclasses.replace(cfg, output_dir=out, epochs=1, lr=args.denoise_lr, batch_size=batch_size,
                                resume=cfg.resume and last_checkpoint(out) is not None)
    log.event("stage", name="denoise", steps=args.denoise_steps, chunks=len(chunks))
    return fit(model, stage, batches, collate_noised, loss_fn, fingerprint=fingerprint(chunks), log=log,
               tokenizer_from=args.model)


def loss_fn(m, b):
    """-> (mean over the label tokens, their number): fit weights each micro-batch by its token count."""
    return (m(b["input_ids"], b["attention_mask"], labels=b["labels"], return_loss=True),
            (b["labels"] != -100).sum())


def samples_md(args, pairs: list[Pair], beams: list[list[str]], sampled: list[list[str]]) -> str:
    lines = ["# Paraphrase samples (held-out pairs)\n",
             f"Model: `{args.model}` trained by train_paraphrase.py. Beam search: num_beams {args.num_beams}, "
             f"no_repeat_ngram_size {args.no_repeat_ngram_size}, encoder_no_repeat_ngram_size "
             f"{args.encoder_no_repeat_ngram_size}, the best {args.num_return_sequences} beams. "
             f"Sampling (the blog's settings): do_sample, top_k {args.top_k}, top_p {args.top_p}, "
             f"num_beams {args.num_beams}, {args.num_return_sequences} sequences.\n"]
    for k, (p, b, s) in enumerate(zip(pairs, beams, sampled), 1):
        lines += [f"## Sample {k}\n", f"- **source:** {p.source}", f"- **reference:** {p.target}",
                  "- **beam search:**", *[f"  {i}. {t}" for i, t in enumerate(b, 1)],
                  "- **top-k/top-p sampling:**", *[f"  {i}. {t}" for i, t in enumerate(s, 1)], ""]
    return "\n".join(lines)


def train_model(model, tok, train: list[Pair], args, cfg: TrainConfig, device,
                log: RunLog) -> tuple[dict | None, dict]:
    """The denoising stage (if asked for) and fine-tuning on the pairs: (denoising result, fine-tuning result)."""
    c = model.config
    denoise, finetuning = None, last_checkpoint(args.output_dir) is not None
    if args.denoise_steps and not (args.resume and finetuning):  # resuming fine-tuning skips denoising
        texts = list(unlabeled_text(train, args.denoise_text))
        denoise = denoise_stage(model, tok, texts, args, cfg, log)
    cfg = dataclasses.replace(cfg, resume=args.resume and finetuning)

    src = encode(tok, [p.source for p in train], args.max_seq_length)
    tgt = [to_labels(t, c.decoder_start_token_id) for t in encode(tok, [p.target for p in train], args.max_seq_length)]
    steps_per_epoch = -(-len(train) // args.batch_size)

    def batches(epoch):
        return batch_indices(len(train), args.batch_size, args.seed, epoch)

    def collate_pairs(idx):
        return collate([src[i] for i in idx], [tgt[i] for i in idx], c.pad_token_id)

    log.event("stage", name="fine-tune", pairs=len(train), steps_per_epoch=steps_per_epoch)
    log.print(f"fine-tuning {args.model} | {args.epochs} epochs x {steps_per_epoch} steps | batch {args.batch_size} "
              f"| lr {args.lr} | warmup {args.warmup_ratio} | {cfg.precision} | device {device}")
    return denoise, fit(model, cfg, batches, collate_pairs, loss_fn, fingerprint=fingerprint(src, tgt), log=log,
                        tokenizer_from=args.model)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg, device, t0 = prepare_run(args, subruns=["denoise"])

    train, held, data_source = load_pairs(args)
    tok = load_tokenizer(args.model)
    model = load_model(args.model)
    check_generation_flags(args, model.config)  # before any training: --max-length within the model's positions
    log = start_run(cfg, subruns=["denoise"])
    log.print(f"paraphrase: {len(train)} training pairs (deduplicated, copies dropped), {len(held)} held out "
              f"| {data_source}")

    if args.eval_only:
        denoise, result = None, {"history": [], "step": 0, "train_time_s": 0.0, "checkpoint": None}
        model.to(device)
    else:
        denoise, result = train_model(model, tok, train, args, cfg, device, log)
    if not is_main_process():  # rank 0 alone evaluates and writes
        return result

    t_eval = time.perf_counter()
    sources, refs = [p.source for p in held], [p.target for p in held]
    settings = generation_settings(args)
    run = dict(max_seq_length=args.max_seq_length, batch_size=args.eval_batch_size, progress=True,
               amp_dtype=torch.bfloat16 if device.type == "cuda" else None)
    beams = paraphrase(model, tok, sources, **run, **settings["beam"])
    torch.manual_seed(args.seed)
    sampled = paraphrase(model, tok, sources, **run, **settings["sampled"])
    lowercase = tok.decode(tok.encode("A").ids, skip_special_tokens=True) == "a"  # an uncased model
    outputs = {"paraphrase": [b[0] for b in beams],  # the best beam
               "paraphrase_no_copy": [first_non_copy(s, b) for s, b in zip(sources, beams)],
               "paraphrase_sampled": [x[0] for x in sampled]}  # the blog's beam-sample, its first sequence

    def score(out: list[str]) -> dict:
        return {k: round(v, 4) for k, v in paraphrase_metrics(sources, refs, out, lowercase).items()}

    scores, copy = {name: score(out) for name, out in outputs.items()}, score(sources)
    log.event("eval", **scores["paraphrase"], no_copy=scores["paraphrase_no_copy"],
              sampled=scores["paraphrase_sampled"], copy_baseline=copy)
    for name, what in [("paraphrase", "best beam"), ("paraphrase_no_copy", "best non-copy beam"),
                       ("paraphrase_sampled", "beam-sample")]:
        m = scores[name]
        log.print(f"held-out ({len(held)} pairs), {what}: BLEU {m['bleu']:.2f} | BLEU vs source {m['self_bleu']:.2f} "
                  f"| iBLEU {m['ibleu']:.2f} (copy baseline {copy['ibleu']:.2f}) | copy rate {m['copy_rate']:.3f} "
                  f"| length ratio {m['length_ratio']:.3f}")
    write_text(f"{args.output_dir}/generations.jsonl", "".join(
        json.dumps({"source": s, "reference": r, **{name: out[i] for name, out in outputs.items()}},
                   ensure_ascii=False) + "\n" for i, (s, r) in enumerate(zip(sources, refs))))

    picks = sorted(random.Random(args.seed).sample(range(len(held)), min(5, len(held))))
    write_text(f"{args.output_dir}/samples.md", samples_md(args, [held[i] for i in picks],
                                                          [beams[i][:args.num_return_sequences] for i in picks],
                                                          [sampled[i] for i in picks]))

    metrics = {"task": "paraphrase", "model": args.model, "data": data_source,
               "sizes": {"train_pairs": len(train), "eval_pairs": len(held)},
               "eval": scores["paraphrase"], "eval_no_copy": scores["paraphrase_no_copy"],
               "eval_sampled": scores["paraphrase_sampled"], "copy_baseline": copy,
               "bleu_lowercase": lowercase,
               "denoise": denoise and {"steps": denoise["step"], "history": denoise["history"],
                                       "train_time_s": denoise["train_time_s"], "texts": args.denoise_text},
               "epochs": result["history"], "steps": result["step"], "train_time_s": result["train_time_s"],
               "eval_time_s": round(time.perf_counter() - t_eval, 2),
               "protocol": {"max_seq_length": args.max_seq_length, "batch_size": args.batch_size, "lr": args.lr,
                            "denoise_lr": args.denoise_lr, "denoise_batch_size": args.denoise_batch_size,
                            "warmup_ratio": args.warmup_ratio,
                            "weight_decay": args.weight_decay, "epochs": args.epochs, "seed": args.seed,
                            "both_directions": args.both_directions, "max_pair_bleu": args.max_pair_bleu,
                            "max_steps": args.max_steps, "precision": cfg.precision,
                            "grad_accum_steps": args.grad_accum_steps,
                            "eval_only": args.eval_only,
                            "generation": {"num_beams": args.num_beams, "no_repeat_ngram_size": args.no_repeat_ngram_size,
                                           "encoder_no_repeat_ngram_size": args.encoder_no_repeat_ngram_size,
                                           "max_length": args.max_length, "top_k": args.top_k, "top_p": args.top_p}},
               "checkpoint": result["checkpoint"], **run_info(args, device)}
    return finish_run(log, metrics, t0, "generations.jsonl and samples.md")


if __name__ == "__main__":
    main()
