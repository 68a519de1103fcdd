"""Run a model on a task: the functions predict.py and the training scripts' evaluations share."""
from .classification import classify
from .paraphrasing import paraphrase
from .question_answering import Answer, answer, span_logits

__all__ = ["Answer", "answer", "classify", "paraphrase", "span_logits"]
