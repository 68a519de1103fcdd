"""minibart: a from-scratch, readable BART (encoder-decoder, KV cache, beam search) that loads and saves
Hugging Face checkpoints and warm-starts from BERT."""
from .config import BartConfig
from .generation import generate
from .loss import lm_head_loss, seq2seq_loss
from .model import BartDecoder, BartEncoder, BartForConditionalGeneration, BartModel, KVCache

__all__ = ["BartConfig", "BartDecoder", "BartEncoder", "BartForConditionalGeneration", "BartModel", "KVCache",
           "generate", "lm_head_loss", "seq2seq_loss"]
