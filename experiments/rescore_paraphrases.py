"""Score a generations.jsonl of train_paraphrase.py again (e.g. after a change to the clean-up or the metrics):
`python experiments/rescore_paraphrases.py RUN/generations.jsonl [--field paraphrase_sampled] [--lowercase]`."""
import argparse
import json

from data.paraphrase import rescore


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Score a generations.jsonl of train_paraphrase.py again "
                                            "(e.g. after a change to the clean-up or the metrics).")
    p.add_argument("generations", help="a generations.jsonl")
    p.add_argument("--field", default="paraphrase", help="the generated text to score")
    p.add_argument("--lowercase", action="store_true", help="case-insensitive BLEU (an uncased model)")
    args = p.parse_args(argv)
    result = rescore(args.generations, args.field, args.lowercase)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
