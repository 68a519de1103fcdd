"""BART hyper-parameters, read from and written to Hugging Face's config.json and generation_config.json."""
import math
from dataclasses import InitVar, asdict, dataclass, field, fields
from pathlib import Path

from minicore.errors import UserError
from minicore.validation import (DROPOUT, NON_NEGATIVE, POSITIVE, SCALE, STD, Rule, check_config, head_count, one_of,
                                 token_id)

# transformers' global generation defaults (GenerationConfig._get_default_generation_params), used for
# every generation field left at None by the checkpoint and by the caller.
GENERATION_DEFAULTS = dict(max_length=20, max_new_tokens=None, min_length=0, num_beams=1, length_penalty=1.0,
                           early_stopping=False, no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0,
                           do_sample=False, top_k=50, top_p=1.0, temperature=1.0, num_return_sequences=1)
# special tokens that also live in generation_config.json
GENERATION_TOKENS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                     "forced_bos_token_id", "forced_eos_token_id")
# each generation setting's range, wherever it is set: config, generation_config.json, a generate() argument
GENERATION_RULES: dict[str, Rule] = {
    "max_length": (lambda v: v >= 2, "an integer >= 2 (the decoder start token and one more)"),
    "max_new_tokens": POSITIVE, "min_length": NON_NEGATIVE, "num_beams": POSITIVE,
    "length_penalty": (math.isfinite, "a finite number"),
    "early_stopping": one_of(True, False, "never"),
    "no_repeat_ngram_size": NON_NEGATIVE, "encoder_no_repeat_ngram_size": NON_NEGATIVE, "top_k": NON_NEGATIVE,
    "top_p": (lambda v: 0 < v <= 1, "a number in (0, 1]"), "temperature": SCALE, "num_return_sequences": POSITIVE,
}
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
    source: InitVar[str] = "BartConfig"  # where the values come from (config.json's path), for error messages

    def __post_init__(self, source: str):
        sizes = ("vocab_size", "max_position_embeddings", "d_model", "encoder_layers", "encoder_ffn_dim",
                 "decoder_layers", "decoder_ffn_dim")
        tokens = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "forced_bos_token_id",
                  "forced_eos_token_id")
        check_config(BartConfig, vars(self), {
            **dict.fromkeys(sizes, POSITIVE),
            **{f"{side}_attention_heads": head_count("d_model", self.d_model) for side in ("encoder", "decoder")},
            **dict.fromkeys(("dropout", "attention_dropout", "activation_dropout"), DROPOUT),
            "layer_norm_eps": SCALE, "init_std": STD,
            **dict.fromkeys(tokens, token_id(self.vocab_size)),
            "activation_function": one_of("gelu"), "attn_implementation": one_of("sdpa", "math"),
            **GENERATION_RULES,
        }, source)

    @classmethod
    def from_hf_dict(cls, d: dict, generation: dict | None = None, source: str = "config.json") -> "BartConfig":
        """config.json (and generation_config.json, whose values win, as in transformers 5) -> BartConfig.
        Errors name `source` (config.json's path), the field and the value; generation_config.json's own
        settings are checked first, naming that file."""
        if d.get("model_type", "bart") != "bart":
            raise UserError("unsupported config value", f"{source}: model_type", d["model_type"],
                            "BartConfig supports only 'bart'")
        names = {f.name for f in fields(cls)} - {"extra", "attn_implementation"}
        generation = {k: v for k, v in (generation or {}).items() if k in names}
        check_config(cls, generation, GENERATION_RULES, str(Path(source).with_name("generation_config.json")))
        d = {**d, **generation}
        kw = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names and k not in _WRITTEN_ON_SAVE}
        return cls(**kw, extra=extra, source=source)

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
