"""BERT hyper-parameters, read from and written to Hugging Face's config.json."""
from dataclasses import asdict, dataclass, field, fields


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    pad_token_id: int = 0
    num_labels: int = 2
    classifier_dropout: float | None = None
    attn_implementation: str = "sdpa"  # "sdpa" (fused kernels) or "math" (the readable reference)
    extra: dict = field(default_factory=dict, repr=False)  # other config.json keys, kept for saving

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.attn_implementation not in ("sdpa", "math"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'math', got {self.attn_implementation!r}")

    @classmethod
    def from_hf_dict(cls, d: dict) -> "BertConfig":
        if d.get("model_type", "bert") not in ("bert",):
            raise ValueError(f"config.json has model_type {d['model_type']!r}, expected 'bert'")
        if d.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"config.json hidden_act {d['hidden_act']!r} is not supported (only 'gelu')")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("config.json position_embedding_type must be 'absolute'")
        names = {f.name for f in fields(cls)} - {"extra", "num_labels", "attn_implementation"}
        kw = {k: v for k, v in d.items() if k in names}
        if "id2label" in d or "num_labels" in d:  # HF writes id2label; hand-written configs may say num_labels
            kw["num_labels"] = len(d["id2label"]) if "id2label" in d else d["num_labels"]
        extra = {k: v for k, v in d.items() if k not in names | {"num_labels"}}
        return cls(**kw, extra=extra)

    def to_hf_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("extra", "num_labels", "attn_implementation")}
        d = {**self.extra, **d, "model_type": "bert", "hidden_act": "gelu",
             "position_embedding_type": "absolute"}
        d["id2label"] = {str(i): d.get("id2label", {}).get(str(i), f"LABEL_{i}") for i in range(self.num_labels)}
        d["label2id"] = {v: int(k) for k, v in d["id2label"].items()}
        return d
