"""BERT's key map: Hugging Face's names <-> ours, a pure function each way, and the checkpoint plug-in of BERT's models.

BERT's separate query/key/value weights are fused into one `qkv` projection on the way in and split again on the
way out.
"""
import re

from torch import Tensor

from minicore.checkpoint import PretrainedMixin, fuse, rename, unfuse

BERT_KEY_MAP = {  # HF name (without "bert.") -> ours (with the same prefix); "{}" = layer index
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.position_embeddings.weight": "embeddings.position.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    "encoder.layer.{}.attention.self.query.weight": "layers.{}.attn.q.weight",  # fused into attn.qkv
    "encoder.layer.{}.attention.self.query.bias": "layers.{}.attn.q.bias",
    "encoder.layer.{}.attention.self.key.weight": "layers.{}.attn.k.weight",
    "encoder.layer.{}.attention.self.key.bias": "layers.{}.attn.k.bias",
    "encoder.layer.{}.attention.self.value.weight": "layers.{}.attn.v.weight",
    "encoder.layer.{}.attention.self.value.bias": "layers.{}.attn.v.bias",
    "encoder.layer.{}.attention.output.dense.weight": "layers.{}.attn.out.weight",
    "encoder.layer.{}.attention.output.dense.bias": "layers.{}.attn.out.bias",
    "encoder.layer.{}.attention.output.LayerNorm.weight": "layers.{}.attn_norm.weight",
    "encoder.layer.{}.attention.output.LayerNorm.bias": "layers.{}.attn_norm.bias",
    "encoder.layer.{}.intermediate.dense.weight": "layers.{}.ffn.up.weight",
    "encoder.layer.{}.intermediate.dense.bias": "layers.{}.ffn.up.bias",
    "encoder.layer.{}.output.dense.weight": "layers.{}.ffn.down.weight",
    "encoder.layer.{}.output.dense.bias": "layers.{}.ffn.down.bias",
    "encoder.layer.{}.output.LayerNorm.weight": "layers.{}.ffn_norm.weight",
    "encoder.layer.{}.output.LayerNorm.bias": "layers.{}.ffn_norm.bias",
    "pooler.dense.weight": "pooler.weight",  # optional (BertModel's add_pooling_layer)
    "pooler.dense.bias": "pooler.bias",
}  # the task heads (qa_outputs, classifier) have the same names on both sides


BERT_IGNORED = re.compile(r"^(cls\.|.*position_ids$)")  # pre-training heads, buffers


def bert_from_hf(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """HF BERT state dict (bare or "bert."-prefixed, old gamma/beta names) -> ours.

    The "bert." prefix is kept on encoder keys when present; unknown keys pass through unchanged so
    the loader can report them.
    """
    out = {}
    for key, value in state_dict.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        bare = key.removeprefix("bert.")
        if BERT_IGNORED.match(bare):
            continue
        new = rename(bare, BERT_KEY_MAP)
        out[key if new is None else key[: len(key) - len(bare)] + new] = value
    return fuse(out, ("q", "k", "v"), "qkv")


def bert_to_hf(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Ours -> HF names. A bare encoder (BertModel) gives bare keys; a model with a head gives "bert." ones."""
    inverse = {v: k for k, v in BERT_KEY_MAP.items()}
    out = {}
    for key, value in unfuse(state_dict, "qkv", ("q", "k", "v")).items():
        bare = key.removeprefix("bert.")
        new = rename(bare, inverse)
        out[key if new is None else key[: len(key) - len(bare)] + new] = value
    return out


class BertPretrainedMixin(PretrainedMixin):
    """from_pretrained / save_pretrained for BERT's models: BERT's key map; a head's model keeps the encoder as
    `bert`."""

    base_prefix = "bert."
    other_heads = ("pooler.", "qa_outputs.", "classifier.")

    def from_hf(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return bert_from_hf(state_dict)

    def to_hf(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return bert_to_hf(state_dict)
