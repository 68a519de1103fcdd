"""Tokenizers of the checkpoints both models read: a `tokenizers.Tokenizer` from its files."""
import os

from minicore.checkpoint import read_config, resolve


def load_tokenizer(name_or_path: str | os.PathLike):
    """A `tokenizers.Tokenizer` from tokenizer.json, a WordPiece vocab.txt (BERT) or a byte-level BPE
    vocab.json + merges.txt (BART), with truncation and padding off (callers decide both)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    folder = resolve(name_or_path)
    if (folder / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").exists():
        cfg = read_config(folder, "tokenizer_config.json", required=False)
        tok = Tokenizer(models.WordPiece.from_file(str(folder / "vocab.txt"), unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=cfg.get("do_lower_case", True))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        tok.decoder = decoders.WordPiece()
        specials = [cfg.get(k) or d for k, d in (("pad_token", "[PAD]"), ("unk_token", "[UNK]"), ("cls_token", "[CLS]"),
                                                 ("sep_token", "[SEP]"), ("mask_token", "[MASK]"))]
        specials = [t["content"] if isinstance(t, dict) else t for t in specials]  # old configs store AddedToken dicts
        tok.add_special_tokens([t for t in specials if tok.token_to_id(t) is not None])  # kept whole, skipped by decode
    elif (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        tok = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                          ("<s>", tok.token_to_id("<s>")), trim_offsets=True)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([t for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
                                if tok.token_to_id(t) is not None])  # kept whole, skipped by decode
    else:
        raise FileNotFoundError(f"{folder} has no tokenizer: expected tokenizer.json, vocab.txt, "
                                f"or vocab.json + merges.txt")
    tok.no_truncation()
    tok.no_padding()
    return tok
