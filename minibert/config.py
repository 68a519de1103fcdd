"""BERT hyper-parameters, read from and written to Hugging Face's config.json and checked by minicore.validation."""
from dataclasses import InitVar, asdict, dataclass, field, fields

from minicore.errors import UserError
from minicore.validation import DROPOUT, POSITIVE, SCALE, STD, check_config, head_count, one_of, token_id


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
    source: InitVar[str] = "BertConfig"  # where the values come from (config.json's path), for error messages

    def __post_init__(self, source: str):
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings",
                 "type_vocab_size", "num_labels")
        check_config(BertConfig, vars(self), {
            **dict.fromkeys(sizes, POSITIVE),
            "num_attention_heads": head_count("hidden_size", self.hidden_size),
            **dict.fromkeys(("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"), DROPOUT),
            "layer_norm_eps": SCALE, "initializer_range": STD,
            "pad_token_id": token_id(self.vocab_size),
            "attn_implementation": one_of("sdpa", "math"),
        }, source)

    @classmethod
    def from_hf_dict(cls, d: dict, source: str = "config.json") -> "BertConfig":
        """config.json's dict -> BertConfig; errors name `source` (the file's path), the field and the value."""
        supported_values = (("model_type", "bert"), ("hidden_act", "gelu"), ("position_embedding_type", "absolute"))
        for name, supported in supported_values:
            if d.get(name, supported) != supported:
                raise UserError("unsupported config value", f"{source}: {name}", d[name],
                                f"BertConfig supports only {supported!r}")
        names = {f.name for f in fields(cls)} - {"extra", "num_labels", "attn_implementation"}
        kw = {k: v for k, v in d.items() if k in names}
        if "id2label" in d or "num_labels" in d:  # HF writes id2label; hand-written configs may say num_labels
            kw["num_labels"] = len(d["id2label"]) if "id2label" in d else d["num_labels"]
        extra = {k: v for k, v in d.items() if k not in names | {"num_labels"}}
        return cls(**kw, extra=extra, source=source)

    def to_hf_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("extra", "num_labels", "attn_implementation")}
        d = {**self.extra, **d, "model_type": "bert", "hidden_act": "gelu",
             "position_embedding_type": "absolute"}
        labels = self.labels
        d["id2label"] = {str(i): name for i, name in enumerate(labels)}
        d["label2id"] = {name: i for i, name in enumerate(labels)}
        return d

    @property
    def labels(self) -> list:
        """Label i's name: config.json's id2label[i], else HF's LABEL_i."""
        id2label = self.extra.get("id2label") or {}
        return [id2label.get(str(i), f"LABEL_{i}") for i in range(self.num_labels)]
