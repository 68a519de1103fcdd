"""Fine-tune BERT on CoLA, following C. McCormick & N. Ryan, "BERT Fine-Tuning Tutorial with
PyTorch" (2019, revised 2020): bert-base-uncased, max length 64, batch 32, AdamW lr 2e-5 eps 1e-8,
linear decay without warmup, gradient clipping 1.0, 4 epochs, seed 42, a seeded 90/10 split of
in_domain_train for validation, and the Matthews correlation on the 516 out-of-domain sentences
(the tutorial's test set) and the 527 in-domain dev sentences.

    python train_cola.py                                            # the tutorial, data from the Hub
    python train_cola.py --model minilm --data-dir ../shared/data/cola/raw --output-dir results/cola
"""
import argparse
import random
import time

import torch
import torch.nn.functional as F

from data.classification import classify, matthews_corrcoef
from data.cola import Example, collate, load_hub, load_raw, train_val_split
from data.tokens import encode
from minibert import BertForSequenceClassification, load_tokenizer
from minibert.cli import ArgumentParser
from minibert.training import (add_training_args, batch_indices, best_or_last, finish_run, fingerprint, fit,
                               is_main_process, prepare_run, run_info, start_run, write_text)


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__)
    add_training_args(p, evaluation=True, model="bert-base-uncased", output_dir="out/cola", epochs=4, batch_size=32,
                      lr=2e-5, weight_decay=0.0, warmup_ratio=0.0, max_grad_norm=1.0, seed=42, log_every=50)
    p.add_argument("--data-dir", help="folder with the raw CoLA tsv files (default: GLUE cola from the Hub)")
    p.add_argument("--max-length", type=int, default=64, help="tokens per sentence, [CLS] and [SEP] included")
    p.add_argument("--pad-to-max", action="store_true", help="pad every batch to --max-length (the tutorial)")
    p.add_argument("--bucket", action="store_true", help="batch sentences of similar length (faster)")
    args = p.parse_args(argv)
    if args.max_length < 3:
        p.error(f"argument --max-length: expected at least 3 ([CLS] token [SEP]), got {args.max_length}")
    return args


def predict(model, tok, examples: list[Example], args, device) -> tuple[torch.Tensor, float]:
    """-> (probabilities [N, 2] on the CPU, mean cross-entropy against the examples' labels)."""
    probs = classify(model, tok, [e.sentence for e in examples], max_length=args.max_length,
                     batch_size=args.batch_size, pad_to=args.max_length if args.pad_to_max else None,
                     amp_dtype=torch.bfloat16 if device.type == "cuda" else None)
    gold = torch.tensor([e.label for e in examples])
    return probs, F.nll_loss(probs.clamp_min(torch.finfo(probs.dtype).tiny).log(), gold).item()


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg, device, t0 = prepare_run(args)

    splits = load_raw(args.data_dir) if args.data_dir else load_hub()
    train, val = train_val_split(splits["train"], 0.1, args.seed)
    tok = load_tokenizer(args.model)
    pad_id = tok.token_to_id("[PAD]")
    if pad_id is None:
        raise ValueError(f"the tokenizer of {args.model} has no [PAD] token")
    pad_to = args.max_length if args.pad_to_max else None
    train_ids, train_labels = encode(tok, [e.sentence for e in train], args.max_length), [e.label for e in train]
    model = BertForSequenceClassification.from_pretrained(args.model, num_labels=2).to(device)
    log = start_run(cfg)

    lengths = [len(x) for x in train_ids] if args.bucket else None
    steps_per_epoch = -(-len(train_ids) // args.batch_size)

    def batches(epoch):
        return batch_indices(len(train_ids), args.batch_size, args.seed, epoch, lengths=lengths)

    def collate_examples(idx):
        return collate([train_ids[i] for i in idx], [train_labels[i] for i in idx], pad_id, pad_to)

    def loss_fn(m, b):
        return F.cross_entropy(m(b["input_ids"], b["attention_mask"]), b["labels"]), len(b["labels"])

    def validate(model):
        t = time.perf_counter()
        probs, loss = predict(model, tok, val, args, device)
        pred, gold = probs.argmax(-1), [e.label for e in val]
        return {"val_loss": round(loss, 6),
                "val_accuracy": round((pred == torch.tensor(gold)).float().mean().item(), 6),
                "val_mcc": round(matthews_corrcoef(gold, pred.tolist()), 6),
                "val_time_s": round(time.perf_counter() - t, 2)}

    log.print(f"CoLA: {len(train)} train / {len(val)} validation sentences (seeded 90/10 split), "
              f"{len(splits['in_domain_dev'])} in-domain dev, {len(splits['out_of_domain_dev'])} out-of-domain")
    log.print(f"model {args.model} | {args.epochs} epochs x {steps_per_epoch} steps | batch {args.batch_size} | "
              f"lr {args.lr} | {cfg.precision} | device {device} | "
              f"padding {'fixed ' + str(pad_to) if pad_to else 'dynamic'}")
    result = fit(model, cfg, batches, collate_examples, loss_fn, evaluate=validate, metric="val_mcc",
                 fingerprint=fingerprint(train_ids, train_labels), log=log, tokenizer_from=args.model)
    if not is_main_process():  # rank 0 alone evaluates and writes
        return result

    log.print("\n| epoch | training loss | valid. loss | valid. accur. | training time | validation time |")
    log.print("|---|---|---|---|---|---|")
    for h in result["history"]:
        log.print(f"| {h['epoch']}{' (partial)' if h['partial'] else ''} | {h['train_loss']:.4f} | "
                  f"{h['val_loss']:.4f} | {h['val_accuracy']:.4f} | {h['epoch_time_s']:.1f} s | {h['val_time_s']:.1f} s |")

    log.print(f"test metrics of the {best_or_last(result)}")
    scores, out_probs = {}, None
    for name in ("out_of_domain_dev", "in_domain_dev"):
        gold = [e.label for e in splits[name]]
        probs, loss = predict(model, tok, splits[name], args, device)
        pred = probs.argmax(-1).tolist()
        scores[name] = {"mcc": round(matthews_corrcoef(gold, pred), 6), "loss": round(loss, 6),
                        "accuracy": round(sum(g == p for g, p in zip(gold, pred)) / len(gold), 6), "n": len(gold)}
        log.event("test", split=name, **scores[name])
        log.print(f"{name}: MCC {scores[name]['mcc']:.3f} | accuracy {scores[name]['accuracy']:.3f} "
                  f"| {len(gold)} sentences")
        if name == "out_of_domain_dev":
            out_probs, out_pred = probs, pred

    ood = splits["out_of_domain_dev"]
    gold = [e.label for e in ood]
    write_text(f"{args.output_dir}/predictions_out_of_domain.tsv", "index\tlabel\tprediction\n" + "".join(
        f"{i}\t{g}\t{p}\n" for i, (g, p) in enumerate(zip(gold, out_pred))))
    picks = sorted(random.Random(args.seed).sample(range(len(ood)), min(5, len(ood))))
    rows = [f"| {i} | {ood[i].sentence.replace('|', '/')} | {ood[i].label} | {out_pred[i]} | "
            f"{out_probs[i, out_pred[i]].item():.3f} |" for i in picks]
    write_text(f"{args.output_dir}/samples.md", "# CoLA samples (out-of-domain dev)\n\n"
               f"Model: `{args.model}` fine-tuned by train_cola.py. Label 1 = acceptable, 0 = unacceptable; "
               "probability = the model's probability of its prediction.\n\n"
               "| row | sentence | gold | predicted | probability |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")

    train_s = sum(h["epoch_time_s"] for h in result["history"])  # without validation
    metrics = {"task": "cola", "model": args.model, "data": args.data_dir or "hub:nyu-mll/glue cola",
               "sizes": {"train": len(train), "validation": len(val), "in_domain_dev": len(splits["in_domain_dev"]),
                         "out_of_domain_dev": len(ood)},
               "mcc_out_of_domain": scores["out_of_domain_dev"]["mcc"], "mcc_in_domain": scores["in_domain_dev"]["mcc"],
               "test": scores, "epochs": result["history"],
               "protocol": {"max_length": args.max_length, "batch_size": args.batch_size, "lr": args.lr,
                            "adam_eps": 1e-8, "weight_decay": args.weight_decay, "warmup_ratio": args.warmup_ratio,
                            "max_grad_norm": args.max_grad_norm, "epochs": args.epochs, "seed": args.seed,
                            "padding": f"fixed {pad_to}" if pad_to else "dynamic", "bucket": args.bucket,
                            "max_steps": args.max_steps, "compile": args.compile, "precision": cfg.precision,
                            "grad_accum_steps": args.grad_accum_steps},
               "steps": result["step"], "train_time_s": round(train_s, 2),
               "seconds_per_step": round(train_s / max(1, result["step"]), 4),
               "checkpoint": result["checkpoint"], "validations": result["evals"], "best_validation": result["best"],
               "evaluated_model": best_or_last(result),
               **run_info(args, device, None if argv is None else ["train_cola.py", *argv])}
    return finish_run(log, metrics, t0, "predictions_out_of_domain.tsv and samples.md")


if __name__ == "__main__":
    main()
