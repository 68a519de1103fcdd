"""BART hyper-parameters, read from and written to Hugging Face's config.json and generation_config.json."""
from dataclasses import asdict, dataclass, field, fields

# transformers' global generation defaults (GenerationConfig._get_default_generation_params), used for
# every generation field left at None by the checkpoint and by the caller.
GENERATION_DEFAULTS = dict(max_length=20, max_new_tokens=None, min_length=0, num_beams=1, length_penalty=1.0,
                           early_stopping=False, no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0,
                           do_sample=False, top_k=50, top_p=1.0, temperature=1.0, num_return_sequences=1)
# special tokens that also live in generation_config.json
GENERATION_TOKENS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                     "forced_bos_token_id", "forced_eos_token_id")
_NOT_HF = ("extra", "attn_implementation", *GENERATION_DEFAULTS)  # fields config.json does not hold
_WRITTEN_ON_SAVE = ("model_type", "is_encoder_decoder", "architectures", "torch_dtype", "dtype",
                    "transformers_version", "_from_model_config")  # not kept in `extra`


@dataclass
class BartConfig:
    vocab_size: int = 50265
    max_position_embeddings: int = 1024
    d_model: int = 1024
    encoder_layers: int = 12
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_layers: int = 12
    decoder_ffn_dim: int = 4096
    decoder_attention_heads: int = 16
    activation_function: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    scale_embedding: bool = False  # token embeddings times sqrt(d_model) when True
    tie_word_embeddings: bool = True
    layer_norm_eps: float = 1e-5  # not an HF BART field (HF fixes 1e-5); a BERT warm start keeps BERT's 1e-12
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = 2
    attn_implementation: str = "sdpa"  # "sdpa" (fused kernels) or "math" (the readable reference)
    # generation defaults; None = transformers' global default (GENERATION_DEFAULTS)
    max_length: int | None = None
    max_new_tokens: int | None = None
    min_length: int | None = None
    num_beams: int | None = None
    length_penalty: float | None = None
    early_stopping: bool | str | None = None
    no_repeat_ngram_size: int | None = None
    encoder_no_repeat_ngram_size: int | None = None
    do_sample: bool | None = None
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    num_return_sequences: int | None = None
    extra: dict = field(default_factory=dict, repr=False)  # other config.json keys, kept for saving

    def __post_init__(self):
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads:
                raise ValueError(f"d_model {self.d_model} is not a multiple of {side}_attention_heads {heads}")
        if self.activation_function != "gelu":
            raise ValueError(f"activation_function {self.activation_function!r} is not supported (only 'gelu')")
        if self.attn_implementation not in ("sdpa", "math"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'math', got {self.attn_implementation!r}")
        for name in ("eos_token_id", "forced_eos_token_id"):
            if isinstance(getattr(self, name), (list, tuple)):
                raise ValueError(f"{name} must be one token id, got {getattr(self, name)!r}")

    @classmethod
    def from_hf_dict(cls, d: dict, generation: dict | None = None) -> "BartConfig":
        """config.json (and generation_config.json, whose values win, as in transformers 5) -> BartConfig."""
        if d.get("model_type", "bart") != "bart":
            raise ValueError(f"config.json has model_type {d['model_type']!r}, expected 'bart'")
        names = {f.name for f in fields(cls)} - {"extra", "attn_implementation"}
        d = {**d, **{k: v for k, v in (generation or {}).items() if k in names}}
        kw = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names and k not in _WRITTEN_ON_SAVE}
        return cls(**kw, extra=extra)

    def to_hf_dict(self) -> dict:
        """The config.json dict (generation settings go to generation_config.json, as transformers 5 wants)."""
        d = {k: v for k, v in asdict(self).items() if k not in _NOT_HF}
        if d["forced_bos_token_id"] is None:
            del d["forced_bos_token_id"]
        return {**self.extra, **d, "model_type": "bart", "is_encoder_decoder": True}

    def to_generation_dict(self) -> dict:
        """The generation_config.json dict: special tokens and every generation default that is set."""
        d = {k: getattr(self, k) for k in (*GENERATION_TOKENS, *GENERATION_DEFAULTS)}
        return {k: v for k, v in d.items() if v is not None}
