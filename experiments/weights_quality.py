"""Quality and speed of reduced-precision weights for CPU inference (minicore.quantize.inference_weights: fp32, bf16,
int8) on trained checkpoints, each task scored as its training script scores it:

    python -m experiments.weights_quality --cola out/cola-recipe/checkpoint --squad out/squad-recipe/checkpoint \
        --paraphrase out/paraphrase-recipe/checkpoint --data ../shared/data --output out/weights-quality

CoLA: MCC on the 516 out-of-domain sentences; SQuAD 2.0: official EM/F1 on the first --squad-questions dev questions
(null threshold 0); paraphrase: BLEU against the reference and iBLEU on the first --paraphrase-pairs MSRP test pairs,
best of 4 beams (train_paraphrase.py's evaluation). Time: CPU seconds of the whole evaluation on one thread.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from data.classification import matthews_corrcoef
from data.cola import read_tsv
from data.paraphrase import paraphrase_metrics, read_msrp
from data.squad import read_squad_file
from data.squad_metrics import squad_evaluate
from minibart import BartForConditionalGeneration
from minibert import BertForQuestionAnswering, BertForSequenceClassification, load_tokenizer
from minicore.quantize import WEIGHTS, inference_weights
from minitasks import answer, classify, paraphrase
from minitasks.paraphrasing import EVAL_GENERATION


def cola(model, tok, data: Path) -> dict:
    examples = read_tsv(data / "cola" / "raw" / "out_of_domain_dev.tsv")
    probs = classify(model, tok, [e.sentence for e in examples], max_seq_length=64, batch_size=32)
    return {"mcc": matthews_corrcoef([e.label for e in examples], probs.argmax(-1).tolist()), "n": len(examples)}


def squad(model, tok, data: Path, n: int) -> dict:
    examples = read_squad_file(data / "squad" / "dev-v2.0.json")[:n]
    answers = answer(model, tok, examples, batch_size=32, version_2=True, null_threshold=0.0)
    gold, predicted = {e.id: e.answer_texts for e in examples}, {e.id: a.text for e, a in zip(examples, answers)}
    metrics = squad_evaluate(gold, predicted)
    return {"exact": metrics["exact"], "f1": metrics["f1"], "n": len(examples)}


def paraphrases(model, tok, data: Path, n: int) -> dict:
    pairs = read_msrp(data / "paraphrase" / "msrp" / "msr_paraphrase_test.txt")[:n]
    generation = {**EVAL_GENERATION, "num_return_sequences": 1}
    outputs = [o[0] for o in paraphrase(model, tok, [p.source for p in pairs], max_seq_length=128, batch_size=8,
                                        **generation)]
    m = paraphrase_metrics([p.source for p in pairs], [p.target for p in pairs], outputs, lowercase=True)
    return {k: m[k] for k in ("bleu", "self_bleu", "ibleu", "copy_rate", "n")} | {"outputs": outputs}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cola"), p.add_argument("--squad"), p.add_argument("--paraphrase")
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--squad-questions", type=int, default=300)
    p.add_argument("--paraphrase-pairs", type=int, default=200)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tasks = {"cola": (BertForSequenceClassification, lambda m, t: cola(m, t, args.data)),
             "squad": (BertForQuestionAnswering, lambda m, t: squad(m, t, args.data, args.squad_questions)),
             "paraphrase": (BartForConditionalGeneration,
                            lambda m, t: paraphrases(m, t, args.data, args.paraphrase_pairs))}
    results = {}
    for task, (cls, evaluate) in tasks.items():
        folder = getattr(args, task)
        if folder is None:
            continue
        model, tok = cls.from_pretrained(folder), load_tokenizer(folder)
        for weights in WEIGHTS:
            t = time.process_time()
            scores = evaluate(model if weights == "fp32" else inference_weights(model, weights), tok)
            results.setdefault(task, {})[weights] = {**scores, "cpu_s": round(time.process_time() - t, 2)}
            print(task, weights, {k: v for k, v in results[task][weights].items() if k != "outputs"}, flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "weights_quality.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
