"""BART (Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence Pre-training"): a post-LN
Transformer encoder-decoder (Vaswani et al. 2017) with learned positions and a tied LM head.

Every sub-layer is x = LayerNorm(x + Dropout(Sublayer(x))). The decoder adds cross-attention to the
encoder output between its self-attention and its FFN, and keeps a key/value cache for generation.
"""
import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minicore.attention import CrossAttention, padding_mask
from minicore.checkpoint import resolve
from minicore.fused import Dropout
from minicore.layers import Block, GradientCheckpointing, init_weights
from minicore.quantize import linear_packed, onednn_packs, pack

from .checkpoint import BartPretrainedMixin, bart_from_bert
from .config import BartConfig
from .loss import lm_head_loss, seq2seq_loss

POSITION_OFFSET = 2  # BART's position table has 2 extra leading rows; position p uses row p + 2


def shift_tokens_right(labels: Tensor, pad_token_id: int, decoder_start_token_id: int) -> Tensor:
    """Teacher forcing inputs: [start, y_0, ..., y_{T-2}], with the loss's -100 replaced by padding (as HF)."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


def handed_last(x: Tensor) -> Tensor:
    """x itself, through an autograd node made now: when backward reaches it, autograd runs it after the nodes made
    later that are ready at the same time (it runs the most recent first), so x's gradient through here is handed
    on after theirs."""
    return _Identity.apply(x)


class _Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


def plus_bias(logits: Tensor, bias: Tensor) -> Tensor:
    """logits + bias, in place (logits: a product's fresh output) where that keeps the sum's dtype: a bf16 product
    (autocast) plus the fp32 bias is an fp32 sum."""
    return logits.add_(bias) if logits.dtype == torch.result_type(logits, bias) else logits + bias


def decoding_rows(vocab_size: int, device: torch.device) -> int:
    """Rows of the LM head as decoding reads it: on CUDA the vocabulary rounded up to a multiple of 64."""
    return vocab_size + (-vocab_size % 64 if device.type == "cuda" else 0)


@dataclass
class KVCache:
    """The decoder's keys and values during generation, for N = B x `copies` sequences of B sources.

    Self-attention: one preallocated buffer `kv` [layers, 2, N, H, max_len, Dh] holding every
    layer's keys (index 0) and values (1). `pos`, a long tensor on the buffer's device, is the next
    position to write: a step of T tokens writes slots pos .. pos+T-1 and each of its queries
    attends over all max_len slots with the mask "slot <= my position" (later slots are stale or
    empty). Cross-attention: the encoder output's keys and values per layer, [B, H, S, Dh],
    computed once per source and shared by its copies (beams), and its padding mask.
    Nothing changes shape, nothing is read back to the host and, with reorder(in_place=True), nothing
    changes address, so one decode step can be captured as a CUDA graph and replayed
    (minibart.generation.DecodeStep).
    """
    kv: Tensor
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    memory_mask: Tensor | None  # bool [B, 1, 1, S], or None when the source has no padding
    pos: Tensor  # long [], on kv's device
    spare: Tensor | None = None  # kv's shape: see reorder

    @property
    def max_len(self) -> int:
        return self.kv.size(4)

    def positions(self, T: int) -> Tensor:
        """The positions of the next T tokens, long [T]."""
        return self.pos + torch.arange(T, device=self.pos.device)

    def write(self, layer: int, k: Tensor, v: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v [N, H, T, Dh] at `positions` [T]; return all max_len keys and values [N, H, max_len, Dh]."""
        keys, values = self.kv[layer]
        keys.index_copy_(2, positions, k)
        values.index_copy_(2, positions, v)
        return keys, values

    def mask(self, positions: Tensor) -> Tensor:
        """bool [T, max_len]: the query at position p sees slots 0 .. p (causal, and nothing stale)."""
        return torch.arange(self.max_len, device=positions.device) <= positions[:, None]

    def reorder(self, index: Tensor, in_place: bool = False) -> None:
        """Beam search: sequence i takes the self-attention history of sequence index[i].

        One gather of the whole buffer into a spare one, which becomes `kv` (the old one the next spare): the cache
        is read and written once. in_place (a captured CUDA graph, which must keep kv's address): a gather and a copy
        back, one layer at a time, so the temporary is a layer's, not the whole cache's. `index` only permutes
        sequences among the copies of one source, so the cross-attention keys, values and mask, shared by those
        copies, stay as they are.
        """
        if not in_place:
            self.spare = torch.empty_like(self.kv) if self.spare is None else self.spare
            torch.index_select(self.kv, 2, index, out=self.spare)
            self.kv, self.spare = self.spare, self.kv
            return
        for layer in self.kv:  # [2, N, H, max_len, Dh]
            if layer.size(-1) * layer.element_size() % 8 == 0:
                layer = layer.view(torch.int64)  # a bitwise view: a gather moves 4x fewer, wider bf16 elements
            layer.copy_(layer.index_select(1, index))


def encoder_block(c: BartConfig) -> Block:
    """One of the encoder's layers: the shared post-LN block at BART's encoder sizes."""
    return Block(c.d_model, c.encoder_attention_heads, c.encoder_ffn_dim, c.layer_norm_eps, c.dropout,
                 c.attention_dropout, c.activation_dropout, c.attn_implementation)


class DecoderBlock(Block):
    """The encoder's block with cross-attention to the encoder output (the "memory") between its self-attention
    and its FFN, each sub-layer post-LN; the self-attention is causal and can read and extend a KVCache."""

    def __init__(self, c: BartConfig):
        super().__init__(c.d_model, c.decoder_attention_heads, c.decoder_ffn_dim, c.layer_norm_eps, c.dropout,
                         c.attention_dropout, c.activation_dropout, c.attn_implementation)
        self.cross_attn = CrossAttention(c.d_model, c.decoder_attention_heads, c.attention_dropout,
                                         c.attn_implementation)
        self.cross_attn_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        for name in ("ffn", "ffn_norm", "drop"):  # after the cross-attention, in the order of the forward pass (and
            self.register_module(name, self._modules.pop(name))  # of the optimizer states earlier versions saved)

    def forward(self, x: Tensor, memory_k: Tensor, memory_v: Tensor, memory_mask: Tensor | None,
                cache: KVCache | None = None, index: int = 0, positions: Tensor | None = None,
                cache_mask: Tensor | None = None) -> Tensor:
        """x [N, T, D], N a multiple of B; memory_k/v [B, H, S, Dh]; with a cache, x holds the tokens at
        `positions` [T], this is layer `index` and cache_mask is cache.mask(positions)."""
        q, k, v = self.attn.project(x)
        if cache is None:
            h = self.attn.attend(q, k, v, is_causal=True)
        else:
            k, v = cache.write(index, k, v, positions)
            h = self.attn.attend(q, k, v, mask=cache_mask)
        x = self.attn_norm(x + self.drop(h))
        # the copies (beams) of a source share its memory: fold them into the query length, [N, T, D] -> [B, N/B*T, D]
        h = self.cross_attn(x.reshape(memory_k.size(0), -1, x.size(-1)), memory_k, memory_v, memory_mask)
        x = self.cross_attn_norm(x + self.drop(h.view_as(x)))
        return self.feed_forward(x)


class _Stack(GradientCheckpointing, nn.Module):
    """What the encoder and decoder share: token embedding, learned positions, embedding LayerNorm."""

    def __init__(self, c: BartConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embedding else 1.0
        self.embed_positions = nn.Embedding(c.max_position_embeddings + POSITION_OFFSET, c.d_model)
        self.layernorm_embedding = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.drop = Dropout(c.dropout)

    @property
    def max_positions(self) -> int:
        return self.embed_positions.num_embeddings - POSITION_OFFSET

    def embed(self, input_ids: Tensor, positions: Tensor | None = None, sparse_grad: bool = False) -> Tensor:
        """ids [B, T] at positions 0 .. T-1, or at `positions` [T] (a tensor: decoding) -> [B, T, D].
        sparse_grad: the token embedding's gradient as sparse rows (see BartForConditionalGeneration.forward)."""
        t = self.embed_tokens
        x = F.embedding(input_ids, t.weight, t.padding_idx, sparse=sparse_grad) * self.embed_scale
        if positions is None:
            if input_ids.size(1) > self.max_positions:
                raise ValueError(f"input of length {input_ids.size(1)} is longer than max_position_embeddings "
                                 f"{self.max_positions}")
            x = x + self.embed_positions.weight[POSITION_OFFSET:input_ids.size(1) + POSITION_OFFSET]
        else:
            x = x + self.embed_positions(positions + POSITION_OFFSET)
        return self.drop(self.layernorm_embedding(x))


class BartEncoder(_Stack):
    """ids [B, S], attention_mask [B, S] (1 = token, 0 = padding) -> hidden states [B, S, D]."""

    def __init__(self, c: BartConfig, embed_tokens: nn.Embedding):
        super().__init__(c, embed_tokens)
        self.layers = nn.ModuleList(encoder_block(c) for _ in range(c.encoder_layers))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, sparse_grad: bool = False) -> Tensor:
        mask = padding_mask(attention_mask)  # [B, 1, 1, S] or None
        x = self.embed(input_ids, sparse_grad=sparse_grad)
        for layer in self.layers:
            x = self.run_block(layer, x, mask)
        return x


class BartDecoder(_Stack):
    """Causal decoder with cross-attention; ids [B, T] -> hidden states [B, T, D].

    Without a cache it reads the encoder output `memory` [B, S, D] and its attention_mask [B, S];
    with one (see `new_cache`), everything about the source comes from the cache and the ids are the
    positions after cache.pos.
    """

    def __init__(self, c: BartConfig, embed_tokens: nn.Embedding):
        super().__init__(c, embed_tokens)
        self.layers = nn.ModuleList(DecoderBlock(c) for _ in range(c.decoder_layers))

    def new_cache(self, memory: Tensor, attention_mask: Tensor | None, max_len: int, copies: int = 1) -> KVCache:
        """Cross-attention keys/values of `memory` [B, S, D] and empty self-attention buffers of max_len
        for `copies` sequences per source (rows b * copies .. b * copies + copies - 1 decode source b)."""
        if max_len > self.max_positions:
            raise ValueError(f"a cache of {max_len} positions is longer than max_position_embeddings "
                             f"{self.max_positions}")
        H = self.layers[0].attn.n_heads
        shape = (len(self.layers), 2, memory.size(0) * copies, H, max_len, memory.size(-1) // H)
        cross = [layer.cross_attn.project_memory(memory) for layer in self.layers]
        # the projections' dtype, not memory's: under bf16 autocast memory leaves a LayerNorm in fp32
        kv = memory.new_zeros(shape, dtype=cross[0][0].dtype)
        pos = torch.zeros((), dtype=torch.long, device=memory.device)
        return KVCache(kv=kv, cross_k=[k for k, _ in cross], cross_v=[v for _, v in cross],
                       memory_mask=padding_mask(attention_mask), pos=pos)

    def forward(self, input_ids: Tensor, memory: Tensor | None = None, attention_mask: Tensor | None = None,
                cache: KVCache | None = None, sparse_grad: bool = False) -> Tensor:
        if cache is None:
            if memory is None:
                raise ValueError("BartDecoder needs the encoder output `memory` or a `cache`")
            cross = [layer.cross_attn.project_memory(memory) for layer in self.layers]
            memory_mask = padding_mask(attention_mask)
        else:
            cross, memory_mask = list(zip(cache.cross_k, cache.cross_v, strict=True)), cache.memory_mask
        positions = cache.positions(input_ids.size(1)) if cache is not None else None
        cache_mask = cache.mask(positions) if cache is not None else None  # the same for every layer
        x = self.embed(input_ids, positions, sparse_grad)
        for i, (layer, (k, v)) in enumerate(zip(self.layers, cross, strict=True)):
            if cache is None:
                x = self.run_block(layer, x, k, v, memory_mask)
            else:
                x = layer(x, k, v, memory_mask, cache, i, positions, cache_mask)
        if cache is not None:
            cache.pos += input_ids.size(1)  # in place: a captured step advances it on replay
        return x


class BartPreTrainedModel(BartPretrainedMixin, GradientCheckpointing, nn.Module):
    config_class = BartConfig

    def init_weights(self) -> None:
        init_weights(self, self.config.init_std)


class BartModel(BartPreTrainedModel):
    """Encoder + decoder -> decoder hidden states [B, T, D].

    One token embedding `shared` serves both sides; with tie_word_embeddings=False (transformers 5
    semantics) the encoder and decoder get their own.
    """

    hf_architecture = "BartModel"

    def __init__(self, config: BartConfig):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        tied = config.tie_word_embeddings
        self.encoder = BartEncoder(config, self.shared if tied else copy.deepcopy(self.shared))
        self.decoder = BartDecoder(config, self.shared if tied else copy.deepcopy(self.shared))
        self.init_weights()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None, sparse_grad: bool = False) -> Tensor:
        """sparse_grad: the token embeddings' gradients as sparse rows (see BartForConditionalGeneration.forward)."""
        if decoder_input_ids is None:  # BART's denoising default, as HF: the decoder reads the input shifted
            decoder_input_ids = shift_tokens_right(input_ids, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        memory = self.encoder(input_ids, attention_mask, sparse_grad)
        return self.decoder(decoder_input_ids, memory, attention_mask, sparse_grad=sparse_grad)


class DerivedWeight:
    """A copy of a weight in another layout, kept beside a module with the `key` of the weight it was made from. Not
    copied with the module (copy.deepcopy, pickle): it is remade on use, and a oneDNN tensor cannot be copied."""

    def __init__(self):
        self.key, self.value = None, None

    def set(self, key, value: Tensor) -> None:
        self.key, self.value = key, value

    def __deepcopy__(self, memo) -> "DerivedWeight":
        return DerivedWeight()

    def __reduce__(self):
        return DerivedWeight, ()


class BartForConditionalGeneration(BartPreTrainedModel):
    """BART with its LM head: logits = h W_emb^T + final_logits_bias, W_emb tied to the token embedding."""

    hf_architecture = "BartForConditionalGeneration"

    def __init__(self, config: BartConfig):
        super().__init__()
        self.config = config
        self.model = BartModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        self.init_weights()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.shared.weight
        self._decoding_head = DerivedWeight()  # see decoding_head

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None, labels: Tensor | None = None,
                return_loss: bool = False) -> Tensor:
        """-> logits [B, T, V]. With labels and no decoder_input_ids, the decoder reads the labels shifted
        right (teacher forcing). return_loss=True returns the loss against the labels instead of the logits:
        the value of seq2seq_loss(logits, labels), computed without them (minibart.loss.lm_head_loss)."""
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        if return_loss and labels is None:
            raise ValueError("return_loss=True needs labels")
        if type(self.lm_head) is not nn.Linear:  # a wrapped head (LoRA, int8) runs as its module: no fused path
            logits = self.lm_head(self.model(input_ids, attention_mask, decoder_input_ids)) + self.final_logits_bias
            return seq2seq_loss(logits, labels) if return_loss else logits
        if not return_loss:
            return self.logits(self.model(input_ids, attention_mask, decoder_input_ids))
        # The tied weight gets three gradients: the LM head's, dense [V, D], and the encoder's and decoder's token
        # lookups', also dense [V, D] by default, each one a temporary as large as the weight. As sparse rows they
        # cost nothing, if they are summed before the head's arrives (a dense gradient arriving first is copied
        # once per sparse one): handed_last creates the head's gradient node before the lookups', which makes
        # autograd run it after theirs. Not under torch.compile, which sums the gradients in its own graph.
        weight = self.lm_head.weight
        sparse = weight is self.model.shared.weight and torch.is_grad_enabled() and weight.requires_grad \
            and not torch.compiler.is_compiling()
        head = handed_last(weight) if sparse else weight  # before the lookups
        hidden = self.model(input_ids, attention_mask, decoder_input_ids, sparse_grad=sparse)
        return lm_head_loss(hidden, head, self.final_logits_bias[0], labels)

    def logits(self, hidden: Tensor, weight: Tensor | None = None) -> Tensor:
        """hidden [..., D] -> logits [..., V] through the LM head, or through `weight`, its decoding_head."""
        weight = self.lm_head.weight if weight is None else weight
        if weight.is_mkldnn:  # decoding_head's oneDNN layout, in the weight's dtype (as autocast would cast)
            logits = linear_packed(hidden, weight)
        else:
            logits = F.linear(hidden, weight)[..., :self.config.vocab_size]
        return plus_bias(logits, self.final_logits_bias)

    def decoding_head(self, dtype: torch.dtype) -> Tensor:
        """The LM head's weight as decoding reads it, in `dtype`. It is half of what a decode step reads, so its
        layout is the one the device's fastest kernel wants:
        - on CUDA, decoding_rows rows (zero rows past V, whose logits `logits` drops): the odd 50,265 rows of BART
          misalign the logits and cuBLAS falls back to a slow kernel; with 50,304 rows the decode step's LM-head GEMM
          is 5x faster on an H100;
        - on CPU, oneDNN's blocked layout (what torch.compile's weight prepacking uses): F.linear's BLAS call reads
          the MiniLM BART's 30,522 x 384 head at about 9 GB/s on one thread, oneDNN's kernel on the packed weight
          1.5-3x faster for 1-32 rows (experiments/bench_decode_step.py), in the same precision.
        A copy is made once per weight version (an in-place update makes a new one), not per step."""
        weight = self.lm_head.weight
        rows = decoding_rows(weight.size(0), weight.device)
        packed = onednn_packs(weight.device, dtype)
        if rows == weight.size(0) and dtype == weight.dtype and not packed:
            return weight
        key = (dtype, rows, weight.device, weight.data_ptr(), weight._version)
        if self._decoding_head.key != key:
            head = F.pad(weight.detach().to(dtype), (0, 0, 0, rows - weight.size(0)))
            self._decoding_head.set(key, pack(head) if packed else head)
        return self._decoding_head.value

    # the pieces generation uses: encode once, then decode step by step with a cache
    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.model.encoder(input_ids, attention_mask)

    def new_cache(self, memory: Tensor, attention_mask: Tensor | None, max_len: int, copies: int = 1) -> KVCache:
        """See BartDecoder.new_cache."""
        return self.model.decoder.new_cache(memory, attention_mask, max_len, copies)

    def decode(self, decoder_input_ids: Tensor, cache: KVCache) -> Tensor:
        """The next T ids after cache.pos [B, T] -> logits [B, T, V]; the cache advances by T."""
        hidden = self.model.decoder(decoder_input_ids, cache=cache)
        if type(self.lm_head) is not nn.Linear:  # e.g. quantized: the module as it is, not our layout of its weight
            return plus_bias(self.lm_head(hidden), self.final_logits_bias)
        return self.logits(hidden, self.decoding_head(cache.kv.dtype))

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, *, settings=None, **kwargs) -> Tensor:
        """See minibart.generation.generate; `settings`: a minibart.generation.Settings (resolve_settings) instead
        of the keyword arguments."""
        from .generation import generate
        return generate(self, input_ids, attention_mask, settings=settings, **kwargs)

    @classmethod
    def from_bert(cls, name_or_path, dtype: torch.dtype = torch.float32) -> "BartForConditionalGeneration":
        """A BART warm-started from a BERT checkpoint (Rothe et al. 2020); see minibart.checkpoint.bart_from_bert.
        Its tokenizer is the BERT checkpoint's: minicore.tokenizer.load_tokenizer(name_or_path)."""
        config, state = bart_from_bert(resolve(name_or_path))
        model = cls(config)
        model.load_state_dict(state)
        return model.to(dtype).eval()  # as from_pretrained: dropout off until .train()
