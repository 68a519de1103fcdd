"""The shared core of minibert and minibart: attention, fused ops, shared layers, value checks, errors, atomic writes,
checkpoint and tokenizer I/O. It imports no model."""
