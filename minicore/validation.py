"""The checks of a value against its type and range, shared by the model configs (config.json) and generate():
each field of its annotated type, and within its range, or an `InvalidValue` naming where it came from."""
import math
import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any, get_args

from minicore.errors import UserError

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

    def as_flag(self, note: str = "", flags: dict[str, str] | None = None) -> UserError:
        """The same mistake told as that of the command-line flag of the name: "argument --top-p: expected ...".
        `flags` (a name -> its flag) names the flag of a name where it is not the name spelled as a flag
        (max_length: --max-target-length), and tells the names it holds in what a valid value is as flags too:
        "num_beams > 1 or do_sample=True" -> "--num-beams > 1 or --do-sample" (=False: --no-do-sample)."""
        flags = flags or {}
        valid = self.valid
        if flags:
            def told(m: re.Match) -> str:
                return "--no-" + flags[m[1]][2:] if m[2] == "=False" else flags[m[1]]
            valid = re.sub(r"\b(" + "|".join(map(re.escape, flags)) + r")\b(=True|=False)?", told, valid)
        return UserError(f"argument {flags.get(self.name, self.flag)}: expected {valid}, got {self.value}{note}")

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


def check_length(flag: str, value: int, positions: int) -> None:
    """A length in tokens (a script's flag) within the model's positions, or a UserError naming the flag."""
    if value > positions:
        raise UserError(f"argument {flag}: expected at most {positions} (the model's max_position_embeddings), "
                        f"got {value}")


def check_vocabulary(tokenizer_size: int, vocab_size: int, model: str) -> None:
    """A tokenizer whose ids all have a row in the model's embedding table, or a UserError naming --model: a
    larger tokenizer would fail with an IndexError at the first sentence holding one of its extra tokens."""
    if tokenizer_size > vocab_size:
        raise UserError(f"the tokenizer has {tokenizer_size} tokens, more than the model's vocabulary "
                        f"(vocab_size {vocab_size})", "--model", model,
                        "give a checkpoint whose tokenizer files belong to its model")
