"""Answer SQuAD questions with a span-extraction model: windows in (data.squad.featurize), logits out, the best span
over the windows (data.squad.select_answers)."""
import numpy as np
import torch

from data.squad import Answer, SquadExample, SquadFeature, collate, featurize, select_answers
from minitasks.batching import evaluating, sorted_batches


def answer(model, tokenizer, examples: list[SquadExample], *, batch_size: int, version_2: bool, null_threshold: float,
           max_seq_length: int = 384, doc_stride: int = 128, max_query_length: int = 64, n_best_size: int = 20,
           max_answer_length: int = 30, amp_dtype: torch.dtype | None = None, progress: bool = False) -> list[Answer]:
    """One Answer per example, in order: the context cut into windows (`featurize`), the start and
    end logits of every window (`span_logits`), and the best span over the windows (`select_answers`).
    The examples' gold answers are not used: new questions are SquadExample(id, question, context,
    [], [], True)."""
    features = featurize(examples, tokenizer, max_seq_length, doc_stride, max_query_length)
    starts, ends = span_logits(model, features, batch_size=batch_size, amp_dtype=amp_dtype, progress=progress)
    return select_answers(examples, features, starts, ends, version_2=version_2, n_best_size=n_best_size,
                          max_answer_length=max_answer_length, null_threshold=null_threshold)


def span_logits(model, features: list[SquadFeature], *, batch_size: int, amp_dtype: torch.dtype | None = None,
                progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits (float32 arrays [L]) of every feature, in order, from batches of similar
    length run on the model's device."""
    starts, ends = [None] * len(features), [None] * len(features)
    with evaluating(model, amp_dtype) as device:
        for idx in sorted_batches([len(f.input_ids) for f in features], batch_size, "Answering" if progress else None):
            b = collate([features[i] for i in idx], model.config.pad_token_id)
            mask = None if b["attention_mask"] is None else b["attention_mask"].to(device)
            s, e = model(b["input_ids"].to(device), mask, b["token_type_ids"].to(device))  # [B, L] each
            s, e = s.float().cpu().numpy(), e.float().cpu().numpy()
            for row, i in enumerate(idx):
                starts[i], ends[i] = s[row], e[row]
    return starts, ends
