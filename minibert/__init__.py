"""minibert: a from-scratch, readable BERT that loads and saves Hugging Face checkpoints."""
from minicore.checkpoint import resolve
from minicore.tokenizer import load_tokenizer

from .config import BertConfig
from .model import BertForQuestionAnswering, BertForSequenceClassification, BertModel, qa_loss

__all__ = ["BertConfig", "BertModel", "BertForQuestionAnswering", "BertForSequenceClassification",
           "qa_loss", "load_tokenizer", "resolve"]
