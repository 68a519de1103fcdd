"""Paraphrase generation with BART, following T. Rajapakse, "BART for Paraphrasing with Simple
Transformers" (2020): facebook/bart-large fine-tuned on positive paraphrase pairs for 2 epochs,
batch 8, AdamW lr 5e-5 with linear warmup over 6% of the steps, max_seq_length 128; generation
with top-k 50 / top-p 0.95 sampling, 3 sequences, 128 output tokens, and the config's num_beams 4 and
no_repeat_ngram_size 3 (so it samples within beams).

Offline, `--model minilm` (or any BERT folder) builds a BART warm-started from BERT (Rothe et al.
2020) with BERT's tokenizer; `--denoise-steps N` first trains it on BART's own pre-training task
(text infilling + sentence permutation, Lewis et al. 2020) on unlabeled text, so that its decoder
learns to read the encoder before it sees the pairs.

Data: the official files (`--data-dir`: MSRP and PAWS-QQP give 5,001 pairs after clean-up; 200 of them
are held out for validation and 4,789 trained on, those sharing a sentence with them left out), the Hub
(the default), or your own pairs in CSV, TSV or JSONL (`--train-file`, `--validation-file`, `--test-file`).
During training the loss on the validation pairs (or their iBLEU, `--validation-metric ibleu`) is evaluated
at each epoch end and every `--eval-every` steps; with `--keep-best` the final metrics, on the test pairs,
come from the best of those checkpoints.

    python train_paraphrase.py                                        # the blog, data from the Hub
    python train_paraphrase.py --model minilm --data-dir path/to/paraphrase \\
        --denoise-steps 4000 --denoise-text path/to/squad/train-v2.0.json --output-dir out/paraphrase-minilm
    python train_paraphrase.py --model facebook/bart-base --train-file path/to/train.csv \\
        --test-file path/to/test.jsonl --keep-best --eval-every 200 --output-dir out/paraphrase-own
"""
import argparse
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from data.noising import bart_noise, word_start_table
from data.paraphrase import (Pair, collate, first_non_copy, load_hub, load_local, paraphrase_metrics, read_pairs,
                             split_heldout, to_labels, training_pairs, unlabeled_text)
from data.tokens import encode, truncate
from minibart import BartForConditionalGeneration
from minibart.generation import Settings, check_generation_args, resolve_settings
from minicore.checkpoint import read_config, resolve
from minicore.errors import UserError
from minicore.files import write_text
from minicore.tokenizer import load_tokenizer
from minicore.validation import InvalidValue, check_length, check_vocabulary
from minitasks.batching import evaluating, sorted_batches
from minitasks.paraphrasing import EVAL_GENERATION, paraphrase
from minitrain.batching import batch_indices, to_device
from minitrain.cli import ArgumentParser, check_files, run
from minitrain.distributed import is_main_process
from minitrain.options import TrainConfig, add_training_args
from minitrain.runs import RunLog, finish_run, prepare_run, run_info, start_run
from minitrain.saving import fingerprint, last_checkpoint
from minitrain.training import Task, best_or_last, fit

FLAGS = {"max_length": "--max-target-length"}  # generate()'s arguments whose flag is not their name as a flag


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    add_training_args(p, evaluation=True, model="facebook/bart-large", output_dir="out/paraphrase", epochs=2,
                      batch_size=8, lr=5e-5, warmup_ratio=0.06, weight_decay=0.0)
    for add in (add_data_args, add_denoise_args, add_evaluation_args, add_generation_args):
        add(p)
    args = p.parse_args(argv)
    check_args(p, args)
    args.denoise_lr = args.denoise_lr or args.lr  # the denoising stage's defaults, resolved once
    args.denoise_batch_size = args.denoise_batch_size or args.batch_size
    return args


def add_data_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument("--data-dir", help="folder with msrp/, paws_*/ and/or quora_duplicate_questions.tsv, whose test "
                                      "files are the test pairs; when not given: PAWS, MRPC and Quora from the Hub")
    d.add_argument("--train-file", help="your own training pairs, a CSV, TSV or JSONL file with --source-column and "
                                        "--target-column (instead of --data-dir's or the Hub's)")
    d.add_argument("--validation-file", help="pairs to evaluate on during training, in the same format; when not "
                                             "given, --validation-pairs are held out of the training pairs")
    d.add_argument("--test-file", help="pairs for the final evaluation, in the same format; when not given: the test "
                                       "files of --data-dir, or MRPC validation from the Hub")
    d.add_argument("--source-column", default="source", help="the column of the sentence to paraphrase")
    d.add_argument("--target-column", default="target", help="the column of its paraphrase")
    d.add_argument("--validation-pairs", type=int,
                   help="hold out this many training pairs (seeded) for validation when no --validation-file is "
                        "given; 0: no evaluation during training (when not given: 5%% of the pairs, at most 200)")
    d.add_argument("--max-seq-length", type=int, default=128,
                   help="input tokens per sentence, special tokens included; longer ones are cut (the log counts "
                        "them)")
    d.add_argument("--both-directions", action="store_true", help="also train on (target, source)")
    d.add_argument("--max-pair-bleu", type=float,
                   help="drop training pairs whose target scores at least this sentence BLEU against its source: "
                        "near-copies (a word changed, words reordered) teach a model to copy its input; dropping "
                        "them trades some BLEU against the reference for fewer copies (when not given: keep all, as "
                        "the blog)")


def add_denoise_args(p: argparse.ArgumentParser) -> None:
    n = p.add_argument_group("denoising stage (before fine-tuning)")
    n.add_argument("--denoise-steps", type=int, default=0,
                   help="BART denoising steps on unlabeled text before fine-tuning (0 = none)")
    n.add_argument("--denoise-text", nargs="*", default=[],
                   help="SQuAD JSON files whose contexts join the training sentences as denoising text")
    n.add_argument("--denoise-lr", type=float, help="peak lr of the denoising stage; when not given: --lr")
    n.add_argument("--denoise-batch-size", type=int,
                   help="batch of the denoising stage (larger batches keep a GPU busy); when not given: "
                        "--batch-size")


def add_evaluation_args(p: argparse.ArgumentParser) -> None:
    e = p.add_argument_group("evaluation")
    e.add_argument("--validation-metric", choices=["loss", "ibleu"], default="loss",
                   help="what --keep-best and --early-stopping-patience follow: the loss per token on the validation "
                        "pairs (cheap), or the iBLEU of their best beam with the generation flags (a beam search "
                        "over them at each evaluation)")
    e.add_argument("--max-eval", type=int, help="evaluate on a seeded sample of this many test pairs")
    e.add_argument("--eval-batch-size", type=int, default=32, help="sentences per batch in evaluation")
    e.add_argument("--eval-only", action="store_true",
                   help="no training: score --model (a BART checkpoint: one this script trained, or another) on the "
                        "test pairs as it is, e.g. to compare generation settings on a trained model without "
                        "training it again")


def add_generation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation (the blog's)")
    gen = EVAL_GENERATION  # the defaults predict.py also decodes with
    g.add_argument("--num-beams", type=int, default=gen["num_beams"],
                   help="beams of the beam search (and of the sampling)")
    g.add_argument("--no-repeat-ngram-size", type=int, default=gen["no_repeat_ngram_size"],
                   help="no n-gram twice in an output (0 = off)")
    g.add_argument("--encoder-no-repeat-ngram-size", type=int, default=gen["encoder_no_repeat_ngram_size"],
                   help="ban every n-gram of the source from the output (against copying; 0 = off, the blog's)")
    g.add_argument("--max-target-length", type=int, default=gen["max_length"],
                   help="output tokens generated per paraphrase, the decoder start token included")
    g.add_argument("--top-k", type=int, default=gen["top_k"], help="sampling: from the k most likely tokens")
    g.add_argument("--top-p", type=float, default=gen["top_p"],
                   help="sampling: from the most likely tokens that make up this probability")
    g.add_argument("--num-return-sequences", type=int, default=gen["num_return_sequences"],
                   help="paraphrases per sample in samples.md")


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks of the flags' values and combinations that argparse's types cannot make; an error exits as
    argparse's do (status 2)."""
    for flag, ok, want in [("--max-seq-length", args.max_seq_length >= 3, ">= 3"),
                           ("--validation-pairs", args.validation_pairs is None or args.validation_pairs >= 0, ">= 0"),
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
    training_only = [("--denoise-steps", args.denoise_steps), ("--resume", args.resume),
                     ("--train-file", args.train_file), ("--validation-file", args.validation_file),
                     ("--keep-best", args.keep_best), ("--early-stopping-patience", args.early_stopping_patience),
                     ("--eval-every", args.eval_every)]
    given = [flag for flag, value in training_only if value]
    if args.eval_only and given:
        p.error(f"argument --eval-only: trains nothing, so {', '.join(given)} do{'es' * (len(given) == 1)} not apply")
    if args.data_dir and args.test_file and (args.train_file or args.eval_only):
        p.error("argument --data-dir: not used, since --test-file and "
                + ("--eval-only" if args.eval_only else "--train-file") + " give all the pairs")
    try:
        check_generation_flags(args)
    except UserError as e:
        p.error(str(e))


def generation_arguments(args) -> dict[str, dict]:
    """generate()'s arguments from the flags: by beam search (every beam returned) and by the blog's sampling."""
    common = dict(num_beams=args.num_beams, no_repeat_ngram_size=args.no_repeat_ngram_size,
                  encoder_no_repeat_ngram_size=args.encoder_no_repeat_ngram_size, max_length=args.max_target_length)
    return {"beam": {**common, "num_return_sequences": args.num_beams},
            "sampled": {**common, "do_sample": True, "top_k": args.top_k, "top_p": args.top_p,
                        "num_return_sequences": args.num_return_sequences}}


def check_generation_flags(args) -> None:
    """The generation flags' values, before any model is loaded (the checks that need the model wait for
    `generation_settings`); a bad one is a UserError naming the flag."""
    for kw in generation_arguments(args).values():
        try:
            check_generation_args(None, **kw)
        except InvalidValue as e:
            raise e.as_flag(flags=FLAGS) from None


@dataclass(frozen=True)
class Generation:
    """The run's generation settings, resolved once against the model: for the samples and metrics by beam
    search and by sampling, and the best beam alone for --validation-metric ibleu."""
    beam: Settings
    sampled: Settings
    best_beam: Settings


def generation_settings(args, config) -> Generation:
    """The generation flags resolved and checked against the model's config (its positions and vocabulary)."""
    try:
        beam, sampled = (resolve_settings(config, **kw) for kw in generation_arguments(args).values())
    except InvalidValue as e:
        raise e.as_flag(flags=FLAGS) from None
    return Generation(beam, sampled, dataclasses.replace(beam, num_return_sequences=1))


# ----------------------------------------------------------------------------- data

@dataclass
class Pairs:
    train: list[Pair]
    validation: list[Pair]
    test: list[Pair]
    source: str  # where they came from, in words
    counts: str  # how the training pairs were filtered, in words



def read_test(args) -> tuple[list[Pair], str]:
    """The test pairs: --test-file, else the test files of --data-dir, else MRPC validation from the Hub."""
    if args.test_file:
        return read_pairs(args.test_file, args.source_column, args.target_column), args.test_file
    if args.data_dir:
        test, source = load_local(args.data_dir, "test"), f"the test files of {args.data_dir}"
    else:
        test, source = load_hub("mrpc", "dev"), "hub: glue mrpc validation"
    if not test:
        raise UserError("no positive test pairs", source,
                        fix="give test data with paraphrase pairs (--test-file, or --data-dir with "
                            "msrp/msr_paraphrase_test.txt)")
    return test, source


def read_train(args) -> tuple[list[Pair], str]:
    """The training pairs: --train-file, else the training files of --data-dir, else PAWS, MRPC and Quora."""
    if args.train_file:
        return read_pairs(args.train_file, args.source_column, args.target_column), args.train_file
    if args.data_dir:
        return load_local(args.data_dir, "train"), f"the training files of {args.data_dir}"
    return (load_hub("paws", "train") + load_hub("mrpc", "train") + load_hub("quora", "train"),
            "hub: paws labeled_final + glue mrpc + sentence-transformers/quora-duplicates")


def load_pairs(args) -> Pairs:
    """The training, validation and test pairs (data.paraphrase.training_pairs filters the training pairs: the
    test sentences it clears them of are all the test pairs', as --max-eval only samples those evaluated).
    --eval-only reads the test pairs alone."""
    test, test_from = read_test(args)
    evaluated = test
    if args.max_eval is not None and args.max_eval < len(test):
        evaluated = split_heldout(test, args.max_eval, args.seed)[1]
    if args.eval_only:
        return Pairs([], [], evaluated, f"test: {test_from}", "")
    raw, train_from = read_train(args)
    validation = args.validation_pairs  # how many to hold out (None: the default share)
    if args.validation_file:
        validation = read_pairs(args.validation_file, args.source_column, args.target_column)
    train, validation, counts = training_pairs(raw, test, validation, args.seed, args.max_pair_bleu,
                                               args.both_directions)
    validation_from = args.validation_file or (f"{len(validation)} training pairs held out (seed {args.seed})"
                                               if validation else "none")
    if not train:
        raise UserError(f"no training pairs left ({counts})", train_from,
                        fix="give training data with positive paraphrase pairs that are not copies")
    return Pairs(train, validation, evaluated, f"train: {train_from}; validation: {validation_from}; test: {test_from}",
                 counts)


def encode_pairs(tok, pairs: list[Pair], max_length: int, decoder_start_token_id: int):
    """-> (source ids, label ids, how many sentences were longer than max_length and cut)."""
    ids = encode(tok, [s for p in pairs for s in p], max_length + 1)  # a sentence that fills max_length + 1 was cut
    cut = sum(len(x) > max_length for x in ids)
    ids = [truncate(x, max_length) for x in ids]
    return ids[0::2], [to_labels(t, decoder_start_token_id) for t in ids[1::2]], cut


# ----------------------------------------------------------------------------- model

def load_bart(name: str, eval_only: bool = False) -> BartForConditionalGeneration:
    """A BART checkpoint, or (to train) a BART warm-started from a BERT checkpoint (model_type "bert")."""
    if read_config(resolve(name)).get("model_type") != "bert":
        return BartForConditionalGeneration.from_pretrained(name)
    if eval_only:
        raise UserError("--eval-only evaluates a trained BART, and this is a BERT checkpoint", "--model", name,
                        "give a BART checkpoint (e.g. the checkpoint/ folder of a train_paraphrase.py run), or leave "
                        "out --eval-only to train a BART warm-started from this BERT")
    return BartForConditionalGeneration.from_bert(name)


def load_model(args) -> tuple[BartForConditionalGeneration, object, Generation]:
    """-> (the model, its tokenizer, the generation settings), after the checks that the model, its tokenizer,
    --max-seq-length and the generation flags fit together."""
    tok = load_tokenizer(args.model)
    model = load_bart(args.model, args.eval_only)
    check_length("--max-seq-length", args.max_seq_length, model.config.max_position_embeddings)
    check_vocabulary(tok.get_vocab_size(), model.config.vocab_size, args.model)
    return model, tok, generation_settings(args, model.config)


def loss_fn(m, b):
    """-> (mean over the label tokens, their number): fit weights each micro-batch by its token count."""
    return (m(b["input_ids"], b["attention_mask"], labels=b["labels"], return_loss=True),
            (b["labels"] != -100).sum())


# ----------------------------------------------------------------------------- the denoising stage

@dataclass
class Denoising:
    """The denoising stage's data: token chunks of unlabeled text and what the noise needs to know."""
    passages: int
    chunks: list[list[int]]
    mask_id: int
    sentence_ends: set[int]
    word_start: np.ndarray


def denoising_data(tok, train: list[Pair], args) -> Denoising:
    """Both sides of the training pairs and the contexts of the --denoise-text files, in chunks of at most
    --max-seq-length tokens with the start and end tokens (a long passage becomes several chunks)."""
    mask_id = next((i for i in map(tok.token_to_id, ("[MASK]", "<mask>")) if i is not None), None)
    if mask_id is None:
        raise UserError("the tokenizer has neither [MASK] nor <mask>, which denoising needs", "--model", args.model,
                        "train without --denoise-steps, or from a model whose tokenizer has one")
    texts = list(unlabeled_text(train, args.denoise_text))
    body = args.max_seq_length - 2  # room for the start and end tokens
    chunks = [e.ids[i:i + body] for e in tok.encode_batch(texts, add_special_tokens=False)
              for i in range(0, len(e.ids), body)]
    ends = {i for i in map(tok.token_to_id, (".", "!", "?")) if i is not None}
    return Denoising(len(texts), chunks, mask_id, ends, word_start_table(tok.get_vocab()))


def denoise_stage(model, data: Denoising, args, cfg: TrainConfig, log: RunLog) -> dict:
    """BART pre-training (Lewis et al. 2020, 2.2): reconstruct each passage from its noised copy."""
    c, chunks = model.config, data.chunks
    bos, eos = [c.bos_token_id], [c.eos_token_id]
    body, batch_size = args.max_seq_length - 2, args.denoise_batch_size
    log.print(f"denoising: {data.passages} passages -> {len(chunks)} chunks of <= {body} tokens, "
              f"{args.denoise_steps} steps x batch {batch_size}"
              + (f", stopping after {cfg.max_steps} (--max-steps)" if (cfg.max_steps or math.inf) < args.denoise_steps
                 else ""))

    # one "epoch" of exactly denoise_steps batches, cycling over the chunks: position p of the stream is chunk
    # order[p], noised with its own random stream, so a batch's noise does not depend on how it is split
    order = np.concatenate([np.random.default_rng([args.seed, 1, k]).permutation(len(chunks))
                            for k in range(math.ceil(args.denoise_steps * batch_size / len(chunks)))])

    def batches(epoch):
        return [list(range(s * batch_size, (s + 1) * batch_size)) for s in range(args.denoise_steps)]

    def collate_noised(positions):
        noised = [bos + bart_noise(chunks[order[p]], data.mask_id, data.sentence_ends,
                                   np.random.default_rng([args.seed, 2, p]), word_start=data.word_start)[:body] + eos
                  for p in positions]
        labels = [to_labels(bos + chunks[order[p]] + eos, c.decoder_start_token_id) for p in positions]
        return collate(noised, labels, c.pad_token_id)

    out = f"{cfg.output_dir}/denoise"
    stage = dataclasses.replace(cfg, output_dir=out, epochs=1, lr=args.denoise_lr, batch_size=batch_size,
                                resume=cfg.resume and last_checkpoint(out) is not None, eval_every=0, keep_best=False,
                                early_stopping_patience=None)
    log.event("stage", name="denoise", steps=args.denoise_steps, chunks=len(chunks))
    task = Task(batches, collate_noised, loss_fn, fingerprint=fingerprint(chunks), tokenizer_from=args.model)
    return fit(model, stage, task, log)


# ----------------------------------------------------------------------------- fine-tuning and evaluation

def validation_loss(model, sources: list[list[int]], labels: list[list[int]], batch_size: int,
                    amp: torch.dtype | None) -> float:
    """The mean loss per label token over the pairs (batched by length, dropout off)."""
    total = tokens = 0
    with evaluating(model, amp) as device:
        for idx in sorted_batches([len(x) for x in sources], batch_size):
            batch = collate([sources[i] for i in idx], [labels[i] for i in idx], model.config.pad_token_id)
            loss, n = loss_fn(model, to_device(batch, device))
            total, tokens = total + loss.float() * n, tokens + n
    return float(total / tokens)


def is_uncased(tok) -> bool:
    """An uncased model (it lowercases its input): BLEU is then computed lowercased."""
    return tok.decode(tok.encode("A").ids, skip_special_tokens=True) == "a"


def validator(tok, pairs: list[Pair], ids: tuple[list, list], args, cfg: TrainConfig, generation: Generation):
    """fit's `evaluate` on the validation pairs (their token ids `ids`: sources, labels): the loss, and with
    --validation-metric ibleu also BLEU, BLEU against the source and iBLEU of the best beam."""
    sources, references = [p.source for p in pairs], [p.target for p in pairs]

    def validate(model) -> dict:
        metrics = {"val_loss": round(validation_loss(model, *ids, args.eval_batch_size, cfg.amp_dtype), 6)}
        if args.validation_metric == "ibleu":
            out = paraphrase(model, tok, sources, max_seq_length=args.max_seq_length, batch_size=args.eval_batch_size,
                             amp_dtype=cfg.amp_dtype, settings=generation.best_beam)
            scores = paraphrase_metrics(sources, references, [x[0] for x in out], is_uncased(tok))
            metrics.update({f"val_{k}": round(scores[k], 4) for k in ("bleu", "self_bleu", "ibleu")})
        return metrics
    return validate


def fine_tune(model, ids: tuple[list, list], validate, args, cfg: TrainConfig, log: RunLog) -> dict:
    """Fine-tuning on the training pairs (their token ids `ids`: sources, labels), evaluated by `validate`
    (None without validation pairs)."""
    sources, labels = ids

    def batches(epoch):
        return batch_indices(len(sources), cfg.batch_size, cfg.seed, epoch)

    def collate_pairs(idx):
        return collate([sources[i] for i in idx], [labels[i] for i in idx], model.config.pad_token_id)

    metric = f"val_{args.validation_metric}"
    steps_per_epoch = len(batches(0))
    stop = cfg.epochs * steps_per_epoch > (cfg.max_steps or math.inf)
    log.event("stage", name="fine-tune", pairs=len(sources), steps_per_epoch=steps_per_epoch)
    log.print(f"fine-tuning {args.model} | {cfg.epochs} epoch{'s' * (cfg.epochs != 1)} x {steps_per_epoch} steps"
              + (f", stopping after {cfg.max_steps} (--max-steps)" if stop else "")
              + f" | batch {cfg.batch_size} | lr {cfg.lr} | warmup {cfg.warmup_ratio} | {cfg.precision} "
              f"| device {cfg.device} | " + (f"validation {metric}" if validate else "no validation"))
    task = Task(batches, collate_pairs, loss_fn, evaluate=validate, metric=validate and metric,
                higher_is_better=metric == "val_ibleu", fingerprint=fingerprint(sources, labels),
                tokenizer_from=args.model)
    return fit(model, cfg, task, log)


def test_outputs(model, tok, sources: list[str], args, cfg: TrainConfig, generation: Generation) -> dict:
    """The paraphrases of the test sources: every beam, the blog's beam-sample, and the outputs scored."""
    run_with = dict(max_seq_length=args.max_seq_length, batch_size=args.eval_batch_size, progress=True,
                    amp_dtype=cfg.amp_dtype)
    beams = paraphrase(model, tok, sources, **run_with, settings=generation.beam)
    torch.manual_seed(cfg.seed)
    sampled = paraphrase(model, tok, sources, **run_with, settings=generation.sampled)
    return {"beams": beams, "sampled": sampled,
            "paraphrase": [b[0] for b in beams],  # the best beam
            "paraphrase_no_copy": [first_non_copy(s, b) for s, b in zip(sources, beams)],
            "paraphrase_sampled": [x[0] for x in sampled]}  # the blog's beam-sample, its first sequence


SCORED = {"paraphrase": "best beam", "paraphrase_no_copy": "best non-copy beam", "paraphrase_sampled": "beam-sample"}


def score(test: list[Pair], outputs: dict, lowercase: bool, log: RunLog) -> tuple[dict, dict]:
    """-> (the metrics of each scored output, those of copying the source), logged."""
    sources, refs = [p.source for p in test], [p.target for p in test]

    def metrics(out: list[str]) -> dict:
        return {k: round(v, 4) for k, v in paraphrase_metrics(sources, refs, out, lowercase).items()}
    scores, copy = {name: metrics(outputs[name]) for name in SCORED}, metrics(sources)
    log.event("eval", **scores["paraphrase"], no_copy=scores["paraphrase_no_copy"],
              sampled=scores["paraphrase_sampled"], copy_baseline=copy)
    for name, what in SCORED.items():
        m = scores[name]
        log.print(f"test ({len(test)} pairs), {what}: BLEU {m['bleu']:.2f} | BLEU vs source {m['self_bleu']:.2f} "
                  f"| iBLEU {m['ibleu']:.2f} (copy baseline {copy['ibleu']:.2f}) | copy rate {m['copy_rate']:.3f} "
                  f"| length ratio {m['length_ratio']:.3f}")
    return scores, copy


def write_generations(args, test: list[Pair], outputs: dict) -> None:
    """generations.jsonl (every test pair and its outputs) and samples.md (5 seeded pairs)."""
    write_text(f"{args.output_dir}/generations.jsonl", "".join(
        json.dumps({"source": p.source, "reference": p.target, **{name: outputs[name][i] for name in SCORED}},
                   ensure_ascii=False) + "\n" for i, p in enumerate(test)))
    picks = sorted(random.Random(args.seed).sample(range(len(test)), min(5, len(test))))
    write_text(f"{args.output_dir}/samples.md", samples_md(args, [test[i] for i in picks],
                                                          [outputs["beams"][i][:args.num_return_sequences]
                                                           for i in picks],
                                                          [outputs["sampled"][i] for i in picks]))


def samples_md(args, pairs: list[Pair], beams: list[list[str]], sampled: list[list[str]]) -> str:
    lines = ["# Paraphrase samples (test pairs)\n",
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


def check_validation_pairs(args, pairs: Pairs) -> None:
    """--keep-best, --eval-every and --early-stopping-patience need validation pairs."""
    needs_validation = [flag for flag, value in [("--keep-best", args.keep_best), ("--eval-every", args.eval_every),
                                                 ("--early-stopping-patience", args.early_stopping_patience)] if value]
    if needs_validation and not pairs.validation:
        raise UserError(f"{needs_validation[0]} needs validation pairs, and none are held out", "--validation-pairs",
                        0, f"pass --validation-pairs N with N >= 1 (there are {len(pairs.train)} training pairs) "
                           "or a --validation-file")


def log_data(log: RunLog, pairs: Pairs, cut: tuple[int, int], args) -> None:
    """How many pairs of each kind, from where, and how many sentences were cut."""
    if args.eval_only:
        log.print(f"paraphrase: {len(pairs.test)} test pairs | {pairs.source}")
    else:
        log.print(f"paraphrase: {pairs.counts}; {len(pairs.validation)} validation pairs, {len(pairs.test)} test pairs "
                  f"| {pairs.source}")
    if any(cut):
        log.print(f"cut to --max-seq-length {args.max_seq_length} tokens: {cut[0]} of the {2 * len(pairs.train)} "
                  f"training sentences, {cut[1]} of the {2 * len(pairs.validation)} validation sentences")


NOT_TRAINED = {"history": [], "evals": [], "best": None, "step": 0, "train_time_s": 0.0, "checkpoint": None}


def main(argv=None) -> dict:
    """Optionally a denoising stage, then fine-tuning on the training pairs (validated on the validation pairs);
    then the test pairs paraphrased by beam search and by sampling, scored, and metrics.json."""
    args = parse_args(argv)
    cfg, t0 = prepare_run(args, subruns=["denoise"])
    check_files([("--train-file", args.train_file), ("--validation-file", args.validation_file),
                 ("--test-file", args.test_file), *(("--denoise-text", f) for f in args.denoise_text)])
    pairs = load_pairs(args)
    check_validation_pairs(args, pairs)
    model, tok, generation = load_model(args)
    resume_fine_tuning = cfg.resume and last_checkpoint(cfg.output_dir) is not None  # then denoising is done
    denoising = denoising_data(tok, pairs.train, args) if args.denoise_steps and not resume_fine_tuning else None
    start_id = model.config.decoder_start_token_id
    *train_ids, train_cut = encode_pairs(tok, pairs.train, args.max_seq_length, start_id)
    *validation_ids, validation_cut = encode_pairs(tok, pairs.validation, args.max_seq_length, start_id)
    fingerprints = ({".": fingerprint(*train_ids)} | ({"denoise": fingerprint(denoising.chunks)} if denoising else {})
                    if cfg.resume else None)
    log = start_run(cfg, subruns=["denoise"], fingerprints=fingerprints)
    log_data(log, pairs, (train_cut, validation_cut), args)

    denoise, result = None, dict(NOT_TRAINED)
    if args.eval_only:
        model.to(cfg.device)
    else:
        if denoising:
            denoise = denoise_stage(model, denoising, args, cfg, log)
        validate = validator(tok, pairs.validation, validation_ids, args, cfg, generation) if pairs.validation else None
        result = fine_tune(model, train_ids, validate, args, dataclasses.replace(cfg, resume=resume_fine_tuning), log)
    if not is_main_process():  # rank 0 alone evaluates and writes
        return result

    evaluated = f"model {args.model} as given (--eval-only)" if args.eval_only else best_or_last(result)
    log.print(f"test metrics of the {evaluated}")
    t_eval = time.perf_counter()
    outputs = test_outputs(model, tok, [p.source for p in pairs.test], args, cfg, generation)
    scores, copy = score(pairs.test, outputs, is_uncased(tok), log)
    write_generations(args, pairs.test, outputs)
    metrics = {"task": "paraphrase", "model": args.model, "data": pairs.source,
               "sizes": {"train_pairs": len(pairs.train), "validation_pairs": len(pairs.validation),
                         "eval_pairs": len(pairs.test), "cut_sentences": train_cut + validation_cut},
               "evaluated_model": evaluated, "eval": scores["paraphrase"], "eval_no_copy": scores["paraphrase_no_copy"],
               "eval_sampled": scores["paraphrase_sampled"], "copy_baseline": copy, "bleu_lowercase": is_uncased(tok),
               "denoise": denoise and {"steps": denoise["step"], "history": denoise["history"],
                                       "train_time_s": denoise["train_time_s"]},
               "epochs": result["history"], "validations": result["evals"], "best_validation": result["best"],
               "steps": result["step"], "train_time_s": result["train_time_s"],
               "eval_time_s": round(time.perf_counter() - t_eval, 2), "precision": cfg.precision,
               "checkpoint": result["checkpoint"],
               **run_info(args, cfg.device, None if argv is None else ["train_paraphrase.py", *argv])}
    return finish_run(log, metrics, t0, "generations.jsonl and samples.md")


if __name__ == "__main__":
    run(main)
