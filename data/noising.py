"""BART noising (Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence Pre-training", section 2.2):
text infilling and sentence permutation, the combination BART-large was pre-trained with.

Pure functions on lists of token ids without special tokens (the caller adds [CLS]/[SEP] or
<s>/</s> around the result); randomness comes only from the numpy Generator passed in, so a given
seed always gives the same noise. Details follow fairseq's DenoisingDataset (mask 0.3,
mask-length span-poisson with lambda 3, replace-length 1, permute-sentences 1.0), without its
random-token replacement.
"""
import math

import numpy as np


def span_lengths(num_to_mask: int, rng: np.random.Generator, poisson_lambda: float = 3.0) -> np.ndarray:
    """Span lengths drawn from Poisson(lambda) until they cover num_to_mask words; the last one is
    cut so that they sum to exactly num_to_mask. Zero-length spans are kept (they become
    insertions of a mask token)."""
    lengths = np.zeros(0, dtype=np.int64)
    while lengths.sum() < num_to_mask:
        lengths = np.concatenate([lengths, rng.poisson(poisson_lambda, size=max(1, num_to_mask))])
    cum = np.cumsum(lengths)
    last = int(np.searchsorted(cum, num_to_mask))  # first index where cum >= num_to_mask
    lengths = lengths[: last + 1]
    lengths[last] = num_to_mask - (cum[last - 1] if last > 0 else 0)
    return lengths


def text_infilling(ids: list[int], mask_id: int, rng: np.random.Generator, mask_ratio: float = 0.3,
                   poisson_lambda: float = 3.0, word_start: np.ndarray | None = None) -> list[int]:
    """Text infilling (BART section 2.2): spans of whole words with Poisson(lambda=3) lengths,
    covering ceil(mask_ratio * words) words in all, each replaced by ONE mask token; a 0-length
    span inserts a mask token. Overlapping spans merge into one mask.

    ids: token ids [L]. word_start: bool [V], False for continuation pieces (WordPiece "##x"), so
    a span never cuts a word; None treats every token as a word. Returns the noised ids.
    """
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio: expected a value in [0, 1], got {mask_ratio}")
    n = len(ids)
    starts = np.ones(n, dtype=bool) if word_start is None else np.asarray(word_start)[ids]
    starts[:1] = True
    words = np.flatnonzero(starts)  # token index of each word's first piece
    bounds = np.append(words, n)
    num_to_mask = math.ceil(len(words) * mask_ratio)
    if num_to_mask == 0:
        return list(ids)
    lengths = span_lengths(num_to_mask, rng, poisson_lambda)
    spans = lengths[lengths > 0]
    num_inserts = len(lengths) - len(spans)

    first = rng.choice(len(words), size=len(spans), replace=False)  # first word of each span
    is_start = np.zeros(n, dtype=bool)
    deleted = np.zeros(n, dtype=bool)
    for w, length in zip(first, spans):
        begin, end = bounds[w], bounds[min(w + length, len(words))]
        is_start[begin] = True
        deleted[begin + 1:end] = True
    # 0-length spans: a mask before a word start or at the end, never inside a word
    gaps = rng.choice(bounds, size=num_inserts, replace=num_inserts > len(bounds))
    inserts = np.bincount(gaps, minlength=n + 1)  # [L + 1] masks to insert before token i
    out = []
    for i in range(n):
        out += [mask_id] * inserts[i]
        if not deleted[i]:
            out.append(mask_id if is_start[i] else ids[i])
    return out + [mask_id] * inserts[n]


def split_sentences(ids: list[int], sentence_end_ids) -> list[list[int]]:
    """Split after every id in sentence_end_ids ('.', '!', '?'); a trailing piece without an end
    is a sentence too."""
    ends = set(sentence_end_ids)
    sentences, current = [], []
    for t in ids:
        current.append(t)
        if t in ends:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def permute_sentences(ids: list[int], sentence_end_ids, rng: np.random.Generator) -> list[int]:
    """Sentence permutation (BART section 2.2): split the document into sentences on full stops
    and shuffle them in a random order."""
    sentences = split_sentences(ids, sentence_end_ids)
    return [t for i in rng.permutation(len(sentences)) for t in sentences[i]]


def bart_noise(ids: list[int], mask_id: int, sentence_end_ids, rng: np.random.Generator,
               mask_ratio: float = 0.3, poisson_lambda: float = 3.0,
               word_start: np.ndarray | None = None) -> list[int]:
    """BART-large's noise: sentence permutation, then text infilling (Lewis et al. 2020, 2.2 and
    3.4). The model is trained to reconstruct `ids` from the result."""
    permuted = permute_sentences(ids, sentence_end_ids, rng)
    return text_infilling(permuted, mask_id, rng, mask_ratio, poisson_lambda, word_start)


def word_start_table(vocab: dict[str, int]) -> np.ndarray:
    """bool [V]: which token ids begin a word, for whole-word spans. WordPiece marks continuations
    with a "##" prefix; byte-level BPE (BART, GPT-2) marks word starts with "Ġ" (a space), and
    fairseq's BART treats every token without it as part of the previous word."""
    table = np.ones(max(vocab.values()) + 1, dtype=bool)
    byte_level = any(t.startswith("Ġ") for t in vocab)
    for token, i in vocab.items():
        special = token.startswith(("[", "<")) and token.endswith(("]", ">"))
        table[i] = special or (token.startswith("Ġ") if byte_level else not token.startswith("##"))
    return table
