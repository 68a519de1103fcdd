from data.squad import SquadExample
from minibart import BartForConditionalGeneration
from minibert import BertForQuestionAnswering, BertForSequenceClassification, load_tokenizer
from minitasks import answer, classify, paraphrase
qa, tok = BertForQuestionAnswering.from_pretrained("out/squad-recipe/checkpoint"), load_tokenizer("minilm")
question = SquadExample("q1", "Who created Python?", "Python was created by Guido van Rossum in 1991.", [], [], True)
a, = answer(qa, tok, [question], batch_size=32, version_2=True, null_threshold=6.0)  # a span of the context, or ""
print(repr(a.text), a.start, a.end, round(a.score, 2))
clf = BertForSequenceClassification.from_pretrained("out/cola-recipe/checkpoint")
probs = classify(clf, tok, ["The book was written by a famous author."], max_seq_length=64, batch_size=32)  # [N, labels]
print(probs, [clf.config.labels[i] for i in probs.argmax(-1)])
bart = BartForConditionalGeneration.from_pretrained("out/paraphrase-recipe/checkpoint")
print(paraphrase(bart, tok, ["How can I improve my English writing skills?"], max_seq_length=128, batch_size=8,
                 num_beams=4, no_repeat_ngram_size=3, max_length=64, num_return_sequences=2))
