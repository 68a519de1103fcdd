"""Config validation: a config.json (or generation_config.json) value of the wrong type or out of range is one
UserError naming the file, the field and the value, raised by from_pretrained before any weight is read."""
import json
import math

import pytest

from minibart import BartConfig, BartForConditionalGeneration
from minibert import BertConfig, BertForSequenceClassification, BertModel
from minicore.errors import UserError

BERT = dict(vocab_size=53, hidden_size=20, num_attention_heads=4, num_hidden_layers=2, intermediate_size=27,
            max_position_embeddings=16)
BART = dict(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)


def weightless_checkpoint(folder, config: dict, generation: dict | None = None):
    """A checkpoint folder with config files and no weights: loading it can only fail on the config, or on
    the missing weights (FileNotFoundError) if the config passed."""
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


BAD_BERT = [  # field, value, what the message says a valid value is
    ("hidden_size", "384", "an integer > 0"), ("hidden_size", 20.0, "an integer > 0"),
    ("hidden_size", True, "an integer > 0"), ("hidden_size", 0, "an integer > 0"),
    ("num_hidden_layers", -1, "an integer > 0"), ("vocab_size", None, "an integer > 0"),
    ("intermediate_size", 0, "an integer > 0"), ("max_position_embeddings", 0, "an integer > 0"),
    ("type_vocab_size", 0, "an integer > 0"),
    ("num_attention_heads", 3, "divides hidden_size (20)"), ("num_attention_heads", 0, "divides hidden_size (20)"),
    ("hidden_dropout_prob", 1.0, "a number in [0, 1)"), ("attention_probs_dropout_prob", -0.1, "in [0, 1)"),
    ("classifier_dropout", 1.5, "in [0, 1)"), ("hidden_dropout_prob", "0.1", "in [0, 1)"),
    ("hidden_dropout_prob", math.nan, "in [0, 1)"),
    ("layer_norm_eps", 0, "a finite number > 0"), ("layer_norm_eps", -1e-12, "> 0"), ("layer_norm_eps", "1e-12", "> 0"),
    ("initializer_range", -0.02, "a finite number >= 0"),
    ("pad_token_id", 53, "a token id in [0, 53)"), ("pad_token_id", -1, "a token id in [0, 53)"),
    ("num_labels", 0, "an integer > 0"),
    ("hidden_act", "relu", "BertConfig supports only 'gelu'"),
    ("position_embedding_type", "relative_key", "BertConfig supports only 'absolute'"),
    ("model_type", "bart", "BertConfig supports only 'bert'"),
]


@pytest.mark.parametrize("field,value,valid", BAD_BERT, ids=[f"{f}={v!r}" for f, v, _ in BAD_BERT])
@pytest.mark.parametrize("cls", [BertModel, BertForSequenceClassification])
def test_bad_bert_config_value(tmp_path, cls, field, value, valid):
    config = {**BertConfig(**BERT).to_hf_dict(), field: value}
    if field == "num_labels":
        del config["id2label"], config["label2id"]
    folder = weightless_checkpoint(tmp_path / "ckpt", config)
    with pytest.raises(UserError) as e:
        cls.from_pretrained(folder)
    assert f"({folder / 'config.json'}: {field}, {value!r})" in str(e.value) and valid in str(e.value)


BAD_BART = [  # file, field, value, what the message says a valid value is
    ("config.json", "d_model", "16", "an integer > 0"), ("config.json", "encoder_layers", 0, "an integer > 0"),
    ("config.json", "decoder_ffn_dim", -4, "an integer > 0"), ("config.json", "max_position_embeddings", True, "> 0"),
    ("config.json", "encoder_attention_heads", 3, "divides d_model (16)"),
    ("config.json", "decoder_attention_heads", 0, "divides d_model (16)"),
    ("config.json", "dropout", 1.0, "a number in [0, 1)"), ("config.json", "attention_dropout", math.nan, "[0, 1)"),
    ("config.json", "layer_norm_eps", 0.0, "a finite number > 0"), ("config.json", "init_std", "0.02", ">= 0"),
    ("config.json", "pad_token_id", 64, "a token id in [0, 64)"), ("config.json", "eos_token_id", [2], "[0, 64)"),
    ("config.json", "forced_bos_token_id", -1, "[0, 64)"), ("config.json", "decoder_start_token_id", 99, "[0, 64)"),
    ("config.json", "activation_function", "relu", "'gelu'"),
    ("config.json", "scale_embedding", "yes", "true or false"),
    ("config.json", "model_type", "bert", "BartConfig supports only 'bart'"),
    ("config.json", "num_beams", 0, "an integer > 0"),
    ("generation_config.json", "num_beams", 0, "an integer > 0"),
    ("generation_config.json", "top_p", 1.5, "a number in (0, 1]"),
    ("generation_config.json", "temperature", 0.0, "a finite number > 0"),
    ("generation_config.json", "length_penalty", math.inf, "a finite number"),
    ("generation_config.json", "early_stopping", "sometimes", "True, False or 'never'"),
    ("generation_config.json", "max_length", 1, "an integer >= 2"),
    ("generation_config.json", "no_repeat_ngram_size", 2.5, "an integer >= 0"),
    ("generation_config.json", "do_sample", "false", "true or false"),
]


@pytest.mark.parametrize("file,field,value,valid", BAD_BART, ids=[f"{f}:{n}={v!r}" for f, n, v, _ in BAD_BART])
def test_bad_bart_config_value(tmp_path, file, field, value, valid):
    good = BartConfig(**BART)
    config, generation = good.to_hf_dict(), good.to_generation_dict()
    if file == "config.json":
        config[field] = value
        generation.pop(field, None)  # special tokens live in both files, generation_config.json's win
    else:
        generation[field] = value
    folder = weightless_checkpoint(tmp_path / "ckpt", config, generation)
    with pytest.raises(UserError) as e:
        BartForConditionalGeneration.from_pretrained(folder)
    assert f"({folder / file}: {field}, {value!r})" in str(e.value) and valid in str(e.value)


def test_good_configs_pass_and_fail_only_on_the_missing_weights(tmp_path):
    """The weightless folders above fail on their config, not on the weights: the same folder with a good config
    gets as far as the weights."""
    for cls, config in ((BertModel, BertConfig(**BERT).to_hf_dict()), (BartForConditionalGeneration,
                                                                         BartConfig(**BART).to_hf_dict())):
        with pytest.raises(FileNotFoundError, match="has no weights"):
            cls.from_pretrained(weightless_checkpoint(tmp_path / cls.__name__, config))


@pytest.mark.parametrize("make", [lambda: BertConfig(**{**BERT, "hidden_size": 21}),
                                  lambda: BartConfig(**{**BART, "dropout": -0.5}),
                                  lambda: BartConfig(**{**BART, "top_k": -1})])
def test_configs_built_in_code_are_checked_too(make):
    with pytest.raises(UserError, match=r"^bad config value \(Ba?e?rtConfig: "):
        make()


def test_an_override_is_checked(tmp_path):
    """from_pretrained(**overrides) checks the overridden value like the file's."""
    folder = weightless_checkpoint(tmp_path / "ckpt", BertConfig(**BERT).to_hf_dict())
    with pytest.raises(UserError, match=r"hidden_dropout_prob, 2\.0\): use a number in \[0, 1\)"):
        BertModel.from_pretrained(folder, hidden_dropout_prob=2.0)


def test_json_that_is_not_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"not a JSON object"):
        BertModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{'hidden_size': 20}")
    with pytest.raises(UserError, match=r"not a valid JSON file .*config\.json"):
        BertModel.from_pretrained(tmp_path)
