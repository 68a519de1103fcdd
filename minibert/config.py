"""BERT hyper-parameters, read from and written to Hugging Face's config.json, and the checks of a config's values
(shared with minibart's config and generate()): each field of its annotated type, and within its range."""
import math
from collections.abc import Callable
from dataclasses import InitVar, asdict, dataclass, field, fields
from typing import Any, get_args

from .cli import UserError

Rule = tuple[Callable[[Any], bool], str]  # (test, what a valid value is); the test sees a value of the right type

POSITIVE: Rule = (lambda v: v > 0, "an integer > 0")
NON_NEGATIVE: Rule = (lambda v: v >= 0, "an integer >= 0")
DROPOUT: Rule = (lambda v: 0 <= v < 1, "a number in [0, 1)")
SCALE: Rule = (lambda v: 0 < v < math.inf, "a finite number > 0")  # LayerNorm eps, temperature
STD: Rule = (lambda v: 0 <= v < math.inf, "a finite number >= 0")


def token_id(vocab_size: int) -> Rule:
    return lambda v: 0 <= v < vocab_size, f"a token id in [0, {vocab_size})"


def head_count(width_name: str, width: int) -> Rule:
    return lambda v: v > 0 and width % v == 0, f"an integer > 0 that divides {width_name} ({width})"


def one_of(*choices) -> Rule:
    *most, last = map(repr, choices)
    return lambda v: v in choices, f"{', '.join(most)} or {last}" if most else last


class InvalidValue(UserError):
    """A value of the wrong type or out of range. `name` (a config field, a generate() argument), `value` and
    `valid` (what a valid value is) let a caller restate it in its own terms, e.g. a script as its flag."""

    def __init__(self, what: str, where: str, name: str, value, valid: str):
        self.name, self.value, self.valid = name, value, valid
        super().__init__(what, where, value, f"use {valid}")

    def as_flag(self, note: str = "") -> UserError:
        """The same mistake told as that of the command-line flag of the name: "argument --top-p: expected ..."."""
        return UserError(f"argument {self.flag}: expected {self.valid}, got {self.value}{note}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def has_type(value, annotation) -> bool:
    """isinstance against an annotation such as `int`, `float | None` or `bool | str`; a bool is no number
    (JSON true is not 1), an int is a float (JSON 0 for a dropout)."""
    allowed = set(get_args(annotation) or (annotation,))
    if float in allowed:
        allowed.add(int)
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, tuple(allowed))


TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "an object"}


def check_values(values: dict, types: dict, rules: dict[str, Rule], what: str, where: Callable[[str], str]) -> None:
    """InvalidValue for the first value not of its type, else for the first, in `rules` order, that breaks its
    rule (None, where its type allows it, passes). `where(name)` names the place: a file and field, an argument."""
    for name, value in values.items():
        if name in types and not has_type(value, types[name]):
            valid = rules[name][1] if name in rules else " or ".join(
                TYPE_NAMES.get(t, "null") for t in get_args(types[name]) or (types[name],))
            raise InvalidValue(what, where(name), name, value, valid)
    for name, (test, valid) in rules.items():
        if values.get(name) is not None and not test(values[name]):
            raise InvalidValue(what, where(name), name, values[name], valid)


def check_config(cls: type, values: dict, rules: dict[str, Rule], source: str) -> None:
    """Values of the config dataclass `cls` against its fields' annotations and `rules`; errors name `source` (the
    path of the file the values come from) and the field."""
    check_values(values, {f.name: f.type for f in fields(cls)}, rules, "bad config value",
                 lambda name: f"{source}: {name}")


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
