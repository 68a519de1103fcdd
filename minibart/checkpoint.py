"""BART checkpoints: HF key maps, from_pretrained / save_pretrained, and the warm start from BERT.

Weight conversion is a pure function between state dicts, driven by an explicit key map (HF name ->
ours, "{}" standing for a layer index). HF's separate q/k/v projections are fused into our `qkv`
(self-attention) and `kv` (cross-attention, keys and values of the encoder output) on the way in and
split again on the way out. The generic pieces (finding, reading, writing a checkpoint, the load
report) are minicore.checkpoint's.
"""
import json
import re
from pathlib import Path

import torch
from torch import Tensor

from minibert.checkpoint import bert_from_hf
from minibert.config import BertConfig
from minicore.checkpoint import PretrainedMixin, fuse, read_config, read_state_dict, rename, unfuse
from minicore.files import atomic_write
from minicore.tokenizer import load_tokenizer

from .config import BartConfig

LAYER_KEY_MAP = {  # HF module of a layer -> ours (minicore.layers.Block, minibart.model.DecoderBlock)
    "self_attn.q_proj": "attn.q",  # q, k, v are fused into attn.qkv (_fuse_attention)
    "self_attn.k_proj": "attn.k",
    "self_attn.v_proj": "attn.v",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_norm",
    "encoder_attn.q_proj": "cross_attn.q",  # decoder layers only; k, v are fused into cross_attn.kv
    "encoder_attn.k_proj": "cross_attn.k",
    "encoder_attn.v_proj": "cross_attn.v",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_norm",
    "fc1": "ffn.up",
    "fc2": "ffn.down",
    "final_layer_norm": "ffn_norm",
}
BART_KEY_MAP = {  # HF name (without "model.") -> ours (the same prefix) where they differ; "{}" = layer index.
    # Every other name (embeddings, their LayerNorm) is the same on both sides.
    f"{side}.layers.{{}}.{hf}.{p}": f"{side}.layers.{{}}.{ours}.{p}"
    for side in ("encoder", "decoder") for hf, ours in LAYER_KEY_MAP.items() for p in ("weight", "bias")
    if side == "decoder" or not hf.startswith("encoder_attn")
}
EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
BART_IGNORED = re.compile(r"^((encoder|decoder)\.version|.*position_ids)$")  # fairseq / HF leftovers


def _fuse_attention(state: dict) -> dict:
    self_attn = {k: v for k, v in state.items() if ".attn." in k}
    cross = {k: v for k, v in state.items() if ".cross_attn." in k}
    rest = {k: v for k, v in state.items() if k not in self_attn and k not in cross}
    return {**rest, **fuse(self_attn, ("q", "k", "v"), "qkv"), **fuse(cross, ("k", "v"), "kv")}


def bart_from_hf(state_dict: dict[str, Tensor], tie_word_embeddings: bool = True) -> dict[str, Tensor]:
    """HF BART state dict ("model."-prefixed or bare) -> ours, keeping the prefix style.

    Token embeddings: tied, every embedding (shared, encoder, decoder, lm_head) takes the first of
    them the checkpoint holds; untied, each takes its own and falls back to that one. A missing
    final_logits_bias is zeros (HF ignores it too). Unknown keys pass through for the load report.
    """
    out, prefix = {}, ""
    for key, value in state_dict.items():
        bare = key.removeprefix("model.")
        if bare != key:
            prefix = "model."
        if BART_IGNORED.match(bare):
            continue
        new = rename(bare, BART_KEY_MAP)
        out[key if new is None else key[: len(key) - len(bare)] + new] = value
    names = [prefix + k for k in EMBEDDINGS] + ["lm_head.weight"]
    present = [n for n in names if n in out]
    if present:
        for n in names:
            out[n] = out[present[0]] if tie_word_embeddings else out.get(n, out[present[0]])
        out.setdefault("final_logits_bias", out[present[0]].new_zeros(1, out[present[0]].size(0)))
    return _fuse_attention(out)


def bart_to_hf(state_dict: dict[str, Tensor], tie_word_embeddings: bool = True) -> dict[str, Tensor]:
    """Ours -> HF names. Tied, only `shared` is written, as HF does (safetensors refuses shared tensors)."""
    inverse = {v: k for k, v in BART_KEY_MAP.items()}
    state = unfuse(unfuse(state_dict, "qkv", ("q", "k", "v")), "kv", ("k", "v"))
    out = {}
    for key, value in state.items():
        bare = key.removeprefix("model.")
        new = rename(bare, inverse)
        out[key if new is None else key[: len(key) - len(bare)] + new] = value
    if tie_word_embeddings:
        prefix = "model." if any(k.startswith("model.") for k in out) else ""
        for k in (prefix + "encoder.embed_tokens.weight", prefix + "decoder.embed_tokens.weight", "lm_head.weight"):
            out.pop(k, None)
    return out


class BartPretrainedMixin(PretrainedMixin):
    """from_pretrained / save_pretrained for BART's models: BART's key map, tied embeddings, and
    generation_config.json next to config.json."""

    base_prefix = "model."
    other_heads = ("lm_head.", "final_logits_bias", "classification_head.", "qa_outputs.")

    def from_hf(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return bart_from_hf(state_dict, self.config.tie_word_embeddings)

    def to_hf(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return bart_to_hf(state_dict, self.config.tie_word_embeddings)

    @classmethod
    def read_hf_config(cls, folder: Path) -> BartConfig:
        return BartConfig.from_hf_dict(read_config(folder), read_config(folder, "generation_config.json", False),
                                       source=str(Path(folder) / "config.json"))

    def save_pretrained(self, folder) -> None:
        """config.json and model.safetensors (HF names), then generation_config.json, each atomic."""
        super().save_pretrained(folder)
        text = json.dumps(self.config.to_generation_dict(), indent=2) + "\n"
        atomic_write(Path(folder) / "generation_config.json", lambda p: Path(p).write_text(text))


# ---------------------------------------------------------------------------------------------
# Warm start from BERT (Rothe et al. 2020, "Leveraging Pre-trained Checkpoints for Sequence
# Generation Tasks"): BERT's weights in both the encoder and the decoder.
# ---------------------------------------------------------------------------------------------

def bart_config_from_bert(bert: BertConfig, cls_id: int, sep_id: int, pad_id: int) -> BartConfig:
    """BERT's sizes, vocabulary, dropout and LayerNorm eps; [CLS] / [SEP] / [PAD] as bos / eos / pad.

    The decoder starts from [CLS]: it then reads "[CLS] w1 w2 ..." exactly as BERT read its inputs,
    and learns to end with [SEP]. Targets (labels) are therefore the BERT token ids without their
    leading [CLS] ("w1 w2 ... [SEP]").
    """
    return BartConfig(
        vocab_size=bert.vocab_size, max_position_embeddings=bert.max_position_embeddings, d_model=bert.hidden_size,
        encoder_layers=bert.num_hidden_layers, decoder_layers=bert.num_hidden_layers,
        encoder_attention_heads=bert.num_attention_heads, decoder_attention_heads=bert.num_attention_heads,
        encoder_ffn_dim=bert.intermediate_size, decoder_ffn_dim=bert.intermediate_size,
        dropout=bert.hidden_dropout_prob, attention_dropout=bert.attention_probs_dropout_prob,
        init_std=bert.initializer_range, layer_norm_eps=bert.layer_norm_eps,
        pad_token_id=pad_id, bos_token_id=cls_id, eos_token_id=sep_id,
        decoder_start_token_id=cls_id, forced_eos_token_id=sep_id, attn_implementation=bert.attn_implementation)


def bert_to_bart_state(bert: dict[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """Our BERT state dict (minibert names, bare or "bert."-prefixed) -> our BART state dict.

    Both sides: word embeddings (shared, tied to the LM head), positions with BERT's token-type-0
    embedding folded in (BART has no token types) placed after BART's 2 offset rows, the embedding
    LayerNorm, and every layer as it is (BERT's layers and BART's are the same block under the same names).
    Decoder cross-attention starts as a copy of the same layer's self-attention (query from q, keys/values
    from k, v) with its LayerNorm. final_logits_bias starts at zero.
    """
    b = {k.removeprefix("bert."): v for k, v in bert.items()}
    word = b["embeddings.word.weight"]
    pos = b["embeddings.position.weight"] + b["embeddings.token_type.weight"][0]  # [P, D]
    positions = torch.cat([pos.new_zeros(2, pos.size(1)), pos])  # rows 0, 1: BART's offset, never read
    out = {f"model.{k}": word for k in EMBEDDINGS} | {"lm_head.weight": word,
                                                     "final_logits_bias": word.new_zeros(1, word.size(0))}
    for side in ("encoder", "decoder"):
        out[f"model.{side}.embed_positions.weight"] = positions
        out[f"model.{side}.layernorm_embedding.weight"] = b["embeddings.norm.weight"]
        out[f"model.{side}.layernorm_embedding.bias"] = b["embeddings.norm.bias"]
        out |= {f"model.{side}.{k}": v for k, v in b.items() if k.startswith("layers.")}
    for i in range(n_layers):  # what differs: cross-attention, a copy of self-attention
        self_attn, cross = f"layers.{i}.attn", f"model.decoder.layers.{i}.cross_attn"
        for p in ("weight", "bias"):
            out[f"{cross}.q.{p}"], out[f"{cross}.kv.{p}"] = b[f"{self_attn}.qkv.{p}"].tensor_split([word.size(1)])
            out[f"{cross}.out.{p}"] = b[f"{self_attn}.out.{p}"]
            out[f"{cross}_norm.{p}"] = b[f"{self_attn}_norm.{p}"]
    return out


def bart_from_bert(folder: Path) -> tuple[BartConfig, dict[str, Tensor]]:
    """A BERT checkpoint folder -> (BartConfig, our BART state dict) for the warm start."""
    bert_config = BertConfig.from_hf_dict(read_config(folder), source=str(Path(folder) / "config.json"))
    tok = load_tokenizer(folder)
    ids = {t: tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
    if None in ids.values():
        raise ValueError(f"the tokenizer of {folder} lacks {[t for t, i in ids.items() if i is None]}: "
                         f"a BERT warm start needs [CLS], [SEP] and [PAD]")
    state = bert_to_bart_state(bert_from_hf(read_state_dict(folder)), bert_config.num_hidden_layers)
    return bart_config_from_bert(bert_config, ids["[CLS]"], ids["[SEP]"], ids["[PAD]"]), state
