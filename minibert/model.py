"""BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers") and its task heads.

A post-LN Transformer encoder: every sub-layer is followed by dropout, a residual add and
LayerNorm, i.e. x = LayerNorm(x + Dropout(Sublayer(x))) (Vaswani et al. 2017, section 5.4); the layer is
minicore.layers.Block, which BART's encoder uses too.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minicore.attention import Packing, padding_mask
from minicore.fused import Dropout
from minicore.layers import Block, GradientCheckpointing, init_weights

from .checkpoint import BertPretrainedMixin
from .config import BertConfig


class BertEmbeddings(nn.Module):
    """Token + learned position + token-type (segment) embeddings, then LayerNorm and dropout."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.word = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.drop = Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        L = input_ids.size(1)
        if L > self.position.num_embeddings:
            raise ValueError(f"input_ids has length {L}, longer than max_position_embeddings "
                             f"{self.position.num_embeddings}")
        x = self.word(input_ids) + self.position.weight[:L]  # [B, L, H]
        x = x + (self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids))
        return self.drop(self.norm(x))


def bert_block(c: BertConfig) -> Block:
    """One of BERT's layers: the shared post-LN block at BERT's sizes, with no dropout inside the FFN."""
    return Block(c.hidden_size, c.num_attention_heads, c.intermediate_size, c.layer_norm_eps, c.hidden_dropout_prob,
                 c.attention_probs_dropout_prob, impl=c.attn_implementation)


class BertPreTrainedModel(BertPretrainedMixin, GradientCheckpointing, nn.Module):
    config_class = BertConfig

    def init_weights(self) -> None:
        init_weights(self, self.config.initializer_range)


class BertModel(BertPreTrainedModel):
    """ids [B, L] -> last hidden states [B, L, H]. attention_mask [B, L]: 1 = token, 0 = padding.

    The pooler, tanh(W h_[CLS] + b) (`pool`), is the part of BERT that next-sentence prediction trained;
    the sequence classifier reads it. Like HF's `add_pooling_layer`, it is optional: from_pretrained gives
    a BertModel one exactly when the checkpoint has one, so that saving it again loses nothing.
    """

    hf_architecture = "BertModel"

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(bert_block(config) for _ in range(config.num_hidden_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        self.init_weights()

    @classmethod
    def for_checkpoint(cls, config: BertConfig, hf_state_dict: dict[str, Tensor]) -> "BertModel":
        return cls(config, add_pooling_layer=any(k.removeprefix("bert.").startswith("pooler.") for k in hf_state_dict))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                skip_padding: bool = False) -> Tensor:
        """skip_padding: the layers compute the real tokens alone (see Packing) and the output is zero at the padding,
        where it would otherwise hold values no loss should read; for heads that read real tokens only. Not on CUDA,
        where finding the real tokens would wait for the device at every call."""
        mask = padding_mask(attention_mask)  # [B, 1, 1, L] or None
        x = self.embeddings(input_ids, token_type_ids)
        packing = Packing.of(attention_mask) if skip_padding and mask is not None and not mask.is_cuda else None
        if packing is not None:
            x = packing.pack(x)  # [n, H]
        for layer in self.layers:
            x = self.run_block(layer, x, mask, packing)
        return x if packing is None else packing.unpack(x)

    def pool(self, hidden: Tensor) -> Tensor:
        """Last hidden states [B, L, H] -> tanh(W h_[CLS] + b) [B, H] (Devlin et al. 2019, section 3)."""
        return torch.tanh(self.pooler(hidden[:, 0]))


class BertForQuestionAnswering(BertPreTrainedModel):
    """Span extraction (Devlin et al. 2019, section 4.2): one linear layer maps each token's hidden
    state to a start and an end score; P(start = i) = softmax_i(S . T_i), likewise for the end."""

    hf_architecture = "BertForQuestionAnswering"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)  # as HF: span scores read every token, not [CLS]
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logits = self.qa_outputs(self.bert(input_ids, attention_mask, token_type_ids))  # [B, L, 2]
        start, end = logits.float().unbind(-1)
        return start, end


def qa_loss(start_logits: Tensor, end_logits: Tensor, start_positions: Tensor, end_positions: Tensor) -> Tensor:
    """Mean of the start and end cross-entropies; positions outside the sequence are ignored (as HF)."""
    L = start_logits.size(1)
    start = F.cross_entropy(start_logits, start_positions.clamp(0, L), ignore_index=L)
    end = F.cross_entropy(end_logits, end_positions.clamp(0, L), ignore_index=L)
    return (start + end) / 2


class BertForSequenceClassification(BertPreTrainedModel):
    """Sentence classification: the encoder's pooler (BertModel.pool), dropout, then a linear classifier."""

    hf_architecture = "BertForSequenceClassification"

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.drop = Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        pooled = self.bert.pool(self.bert(input_ids, attention_mask, token_type_ids, skip_padding=True))  # [B, H]
        return self.classifier(self.drop(pooled)).float()  # [B, num_labels]
