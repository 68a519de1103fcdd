import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from data.noising import (bart_noise, permute_sentences, span_lengths, split_sentences, text_infilling,
                          word_start_table)

MASK, END = 1, 0


def segments(noised: list[int]) -> list[list[int]]:
    """The runs of kept tokens between masks."""
    out, cur = [], []
    for t in noised:
        if t == MASK:
            out.append(cur)
            cur = []
        else:
            cur.append(t)
    return out + [cur]


def is_infilling_of(noised: list[int], original: list[int]) -> bool:
    """original == seg0 + gap0 + seg1 + gap1 + ...: every kept run appears in order, contiguous,
    and only gaps at mask positions were removed (the first and last runs are anchored)."""
    segs = segments(noised)
    if len(segs) == 1:
        return segs[0] == original
    if original[:len(segs[0])] != segs[0] or original[len(original) - len(segs[-1]):] != segs[-1]:
        return False
    pos = len(segs[0])
    for seg in segs[1:-1]:
        while pos <= len(original) - len(seg) and original[pos:pos + len(seg)] != seg:
            pos += 1
        if pos > len(original) - len(seg):
            return False
        pos += len(seg)
    return pos <= len(original) - len(segs[-1])


def test_span_lengths_follow_poisson_3():
    lengths = span_lengths(60000, np.random.default_rng(0))[:-1]  # the last one is cut to fit
    assert lengths.sum() < 60000
    assert lengths.mean() == pytest.approx(3.0, abs=0.05)
    assert lengths.var() == pytest.approx(3.0, abs=0.1)
    freq = np.bincount(lengths, minlength=12)[:12] / len(lengths)
    pmf = np.array([math.exp(-3) * 3 ** k / math.factorial(k) for k in range(12)])
    assert np.abs(freq - pmf).max() < 0.01


@given(st.integers(1, 500), st.integers(0, 2**32 - 1))
def test_span_lengths_sum_exactly_to_budget(num, seed):
    lengths = span_lengths(num, np.random.default_rng(seed))
    assert lengths.sum() == num and (lengths >= 0).all() and lengths[-1] >= 1


def test_mask_ratio_near_30_percent():
    rng = np.random.default_rng(1)
    ids = list(range(100, 400))
    ratios = []
    for _ in range(200):
        noised = text_infilling(ids, MASK, rng)
        ratios.append(1 - sum(t != MASK for t in noised) / len(ids))
    # ceil(0.3 n) words are drawn; overlapping spans and the end of text make it slightly less
    assert max(ratios) <= math.ceil(0.3 * len(ids)) / len(ids)
    assert 0.25 < np.mean(ratios) <= 0.3
    assert np.mean([len(segments(text_infilling(ids, MASK, rng))) - 1 for _ in range(50)]) > 10


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(2, 50), max_size=80), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_nothing_lost_but_masked_spans(ids, ratio, seed):
    noised = text_infilling(ids, MASK, np.random.default_rng(seed), mask_ratio=ratio)
    assert is_infilling_of(noised, ids)
    kept = [t for t in noised if t != MASK]
    assert len(ids) - len(kept) <= math.ceil(len(ids) * ratio)
    if ratio == 0:
        assert noised == ids


def test_zero_length_spans_insert_masks():
    # lambda 0.1: ~10 draws per word of the 30-word budget, mostly 0 (inserts) and 1 (one word)
    ids = list(range(10, 110))
    noised = text_infilling(ids, MASK, np.random.default_rng(0), poisson_lambda=0.1)
    assert noised.count(MASK) > 150 and 66 <= sum(t != MASK for t in noised) <= 74
    assert is_infilling_of(noised, ids)


def test_whole_word_spans_never_cut_a_word():
    vocab = 60
    word_start = np.ones(vocab, dtype=bool)
    word_start[40:] = False  # ids 40.. are "##" continuation pieces
    ids = [t for w in range(2, 32) for t in (w, 40 + w % 20, 41 + w % 19)]  # 30 words of 3 pieces
    for seed in range(20):
        noised = text_infilling(ids, MASK, np.random.default_rng(seed), word_start=word_start)
        assert is_infilling_of(noised, ids)
        for seg in segments(noised):
            assert not seg or word_start[seg[0]]  # each kept run starts at a word start
        assert (len(ids) - sum(t != MASK for t in noised)) % 3 == 0


def test_sentence_permutation_is_a_permutation_of_sentences():
    ids = [5, 6, END, 7, END, 8, 9, 10, END, 11, 12]  # the last sentence has no full stop
    sentences = split_sentences(ids, {END})
    assert sentences == [[5, 6, END], [7, END], [8, 9, 10, END], [11, 12]]
    outs = {tuple(permute_sentences(ids, {END}, np.random.default_rng(s))) for s in range(40)}
    assert len(outs) > 10
    for out in outs:
        # cut the output where the sentence changes (ids are unique apart from END)
        owner = {t: i for i, s in enumerate(sentences) for t in s if t != END}
        pieces, i = [], 0
        while i < len(out):
            s = sentences[owner[out[i]]]
            assert list(out[i:i + len(s)]) == s  # each sentence whole and in order
            pieces.append(s)
            i += len(s)
        assert sorted(pieces) == sorted(sentences)


@given(st.lists(st.integers(0, 30), max_size=60), st.integers(0, 2**32 - 1))
def test_noise_is_deterministic_for_a_seed(ids, seed):
    a = bart_noise(ids, MASK, {END}, np.random.default_rng(seed))
    b = bart_noise(ids, MASK, {END}, np.random.default_rng(seed))
    assert a == b
    assert len([t for t in a if t != MASK]) <= len(ids)


def test_bart_noise_changes_text_and_different_seeds_differ():
    ids = [t for s in range(6) for t in (10 + s, 20 + s, 30 + s, END)]
    outs = [bart_noise(ids, MASK, {END}, np.random.default_rng(s)) for s in range(5)]
    assert all(o != ids and MASK in o for o in outs) and len({tuple(o) for o in outs}) == 5


def test_bad_arguments():
    with pytest.raises(ValueError, match="mask_ratio"):
        text_infilling([1, 2], MASK, np.random.default_rng(0), mask_ratio=1.5)


def test_word_start_table_wordpiece_and_byte_level():
    wp = word_start_table({"[PAD]": 0, "[MASK]": 1, "play": 2, "##ing": 3, ".": 4})
    assert wp.tolist() == [True, True, True, False, True]
    bpe = word_start_table({"<s>": 0, "<mask>": 1, "Ġplay": 2, "ing": 3, "Hello": 4})
    assert bpe.tolist() == [True, True, True, False, False]
