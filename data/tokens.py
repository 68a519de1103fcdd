"""Token ids for the three tasks: `encode` texts with the tokenizer's special tokens and `pad_batch`
sequences into a rectangle, with one rule for the attention mask: None when nothing is padded
(the attention then runs without a mask, which lets CUDA pick its fastest kernels)."""
from collections.abc import Sequence

import torch
from torch import Tensor


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids with the tokenizer's special tokens ([CLS] x [SEP] or <s> x </s>), cut to
    max_length keeping the final end token."""
    if max_length < 3:
        raise ValueError(f"max_length: expected at least 3 (start, a token, end), got {max_length}")
    return [truncate(e.ids, max_length) for e in tokenizer.encode_batch(texts)]


def count_cut(tokenizer, texts: list[str], max_length: int) -> int:
    """How many of the texts have more than max_length tokens, special tokens included: those `encode` cuts."""
    return sum(len(e.ids) > max_length for e in tokenizer.encode_batch(texts))


def truncate(ids: list[int], max_length: int) -> list[int]:
    """Token ids cut to max_length, keeping the final (end) token."""
    return ids if len(ids) <= max_length else ids[:max_length - 1] + ids[-1:]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, pad_to: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Sequences of token ids -> (ids [B, L] int64 padded with pad_id, mask [B, L] int64 with 1 at real
    tokens, or None when nothing is padded). L is the longest sequence, or `pad_to` when given."""
    lengths = torch.tensor([len(s) for s in seqs])
    width = pad_to or int(lengths.max())
    if int(lengths.max()) > width:
        raise ValueError(f"pad_batch: a sequence of {int(lengths.max())} tokens does not fit pad_to={width}")
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    mask = None if bool((lengths == width).all()) else (torch.arange(width) < lengths[:, None]).long()
    return ids, mask
