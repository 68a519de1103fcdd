"""Paraphrase texts with a sequence-to-sequence model: generated, decoded and cleaned, in input order."""
import torch

from data.paraphrase import clean_spaces
from data.tokens import encode, pad_batch
from minitasks.batching import evaluating, sorted_batches

# The generation of train_paraphrase.py (the blog's: Rajapakse 2020, facebook/bart-large's config for the beams):
# its flags' defaults, with which its evaluation scores the best beam and its samples add beam sampling
# (do_sample with top_k / top_p). predict.py decodes with them too when a checkpoint sets no generation settings.
EVAL_GENERATION = dict(num_beams=4, no_repeat_ngram_size=3, encoder_no_repeat_ngram_size=0, max_length=128,
                       top_k=50, top_p=0.95, num_return_sequences=3)


def paraphrase(model, tokenizer, texts: list[str], *, max_seq_length: int, batch_size: int,
               amp_dtype: torch.dtype | None = None, progress: bool = False, **generation) -> list[list[str]]:
    """Paraphrases of each text, in input order: num_return_sequences strings each (generation's
    keywords go to model.generate, which defaults to the model config's), decoded without special tokens and
    cleaned by `clean_spaces`. Texts are cut to max_seq_length tokens and batched by length on the model's device."""
    ids = encode(tokenizer, texts, max_seq_length)
    out = [None] * len(ids)
    with evaluating(model, amp_dtype) as device:
        for idx in sorted_batches([len(x) for x in ids], batch_size, "Generating" if progress else None):
            input_ids, mask = pad_batch([ids[i] for i in idx], model.config.pad_token_id)
            gen = model.generate(input_ids.to(device), None if mask is None else mask.to(device), **generation)
            decoded = [clean_spaces(t) for t in tokenizer.decode_batch(gen.tolist(), skip_special_tokens=True)]
            n = len(decoded) // len(idx)  # num_return_sequences, also when the model config sets it
            for j, i in enumerate(idx):
                out[i] = decoded[j * n:(j + 1) * n]
    return out
