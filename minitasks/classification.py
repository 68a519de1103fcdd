"""Classify sentences with a sequence classifier: probabilities per label, in input order."""
import torch

from data.tokens import encode, pad_batch
from minitasks.batching import evaluating, sorted_batches


def classify(model, tokenizer, sentences: list[str], *, max_seq_length: int, batch_size: int, pad_to: int | None = None,
             amp_dtype: torch.dtype | None = None, progress: bool = False) -> torch.Tensor:
    """Probabilities [N, num_labels] (float32, on the CPU) of each sentence, in input order:
    [CLS] sentence [SEP] cut to max_seq_length tokens, batches of similar length padded to their longest
    (or to `pad_to`), run on the model's device."""
    ids = encode(tokenizer, sentences, max_seq_length)
    probs = torch.empty(len(ids), model.config.num_labels)
    with evaluating(model, amp_dtype) as device:
        for idx in sorted_batches([len(x) for x in ids], batch_size, "Classifying" if progress else None):
            input_ids, mask = pad_batch([ids[i] for i in idx], model.config.pad_token_id, pad_to)
            logits = model(input_ids.to(device), None if mask is None else mask.to(device))  # [B, num_labels]
            probs[idx] = logits.float().softmax(-1).cpu()
    return probs
