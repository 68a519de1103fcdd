"""Generation with transformers' semantics: greedy, multinomial sampling, beam search, beam sampling.

The encoder runs once; every step feeds the last token of each sequence through the decoder with a
key/value cache. Scores are shaped by small pure functions (HF's logits processors, in HF's order),
and beam search keeps its hypotheses in one tensor structure (`Beams`), per source and in lock step,
exactly as transformers' vectorized beam search does, so both return the same token ids.
"""
import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from minicore.errors import UserError
from minicore.validation import InvalidValue, check_values, token_id

from .config import GENERATION_DEFAULTS, GENERATION_RULES, BartConfig

TOKENS = ("decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id")
ARGUMENT_TYPES = {f.name: f.type for f in fields(BartConfig) if f.name in (*GENERATION_DEFAULTS, *TOKENS)}
START_LENGTH = 1  # the decoder start token, counted in max_length
# Below GREEDY_TEMPERATURE sampling is its limit as the temperature tends to 0: greedy decoding, and beam sampling is
# beam search. There softmax(scores / T) is 0 in float32 (below e^-104) for every token more than 104 T = 0.01 nats
# below the best, so sampling already picks the best but for near-ties; and beam scores, sums of log-probs / T
# (-100 at worst per token), would reach EXCLUDED (-1e9) within 1,000 tokens, when that sentinel would no longer
# exclude anything: a beam sampled at 1e-10 returned only its start token.
GREEDY_TEMPERATURE = 1e-4
EXCLUDED = -1.0e9  # transformers' score for "no candidate" (placeholder beams, ended or disqualified ones): finite,
#                    so that sums with it keep the order transformers' top-k sees


@dataclass(frozen=True)
class Settings:
    """Every generation argument, resolved: the caller's value, else the config's, else HF's default."""
    max_length: int  # total length, decoder start token included
    min_length: int
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    no_repeat_ngram_size: int
    encoder_no_repeat_ngram_size: int
    do_sample: bool
    top_k: int
    top_p: float
    temperature: float
    num_return_sequences: int
    decoder_start_token_id: int
    forced_bos_token_id: int | None
    forced_eos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int

    @property
    def sampling(self) -> bool:
        """do_sample at a temperature where sampling is not yet its limit (see GREEDY_TEMPERATURE)."""
        return self.do_sample and self.temperature >= GREEDY_TEMPERATURE


def check_generation_args(config: BartConfig | None = None, **kwargs) -> dict:
    """generate()'s arguments, merged (the caller's value, else the config's, else transformers' default) and
    checked without running a model, so that a script can check its flags at start-up.

    A bad one is an InvalidValue (a UserError) whose `name`, `value` and `valid` say which argument, its value
    and what would do (a script maps the name to its flag: top_p -> --top-p). Without a config, the checks that
    need the model (token ids within its vocabulary, max_length within its positions) wait for generate().
    """
    unknown = set(kwargs) - set(ARGUMENT_TYPES)
    if unknown:
        raise UserError("unknown generate() argument", ", ".join(sorted(unknown)), fix=f"use {sorted(ARGUMENT_TYPES)}")

    def pick(name):
        for value in (kwargs.get(name), getattr(config, name, None), GENERATION_DEFAULTS.get(name)):
            if value is not None:
                return value

    def where(name: str) -> str:
        return name if kwargs.get(name) is not None else f"{name}, from the model config"

    def bad(name: str, valid: str):
        raise InvalidValue("bad generate() argument", where(name), name, g[name], valid)

    g = {name: pick(name) for name in ARGUMENT_TYPES}
    rules = {**GENERATION_RULES, **(dict.fromkeys(TOKENS, token_id(config.vocab_size)) if config else {})}
    check_values({k: v for k, v in g.items() if v is not None}, ARGUMENT_TYPES, rules, "bad generate() argument",
                 where)
    if g["num_return_sequences"] > 1 and g["num_beams"] == 1 and not g["do_sample"]:
        bad("num_return_sequences", "1, or num_beams > 1 or do_sample=True")
    if g["num_beams"] > 1 and g["num_return_sequences"] > g["num_beams"]:
        bad("num_return_sequences", f"at most num_beams ({g['num_beams']})")
    positions = config.max_position_embeddings if config else math.inf
    if g["max_new_tokens"] is not None:  # wins over max_length, as in transformers
        g["max_length"] = g["max_new_tokens"] + START_LENGTH
    elif kwargs.get("max_length") is None and getattr(config, "max_length", None) is None:
        g["max_length"] = min(g["max_length"] + START_LENGTH, positions)  # HF: 20 new tokens, within the positions
    if g["max_length"] - START_LENGTH > positions:  # the decoder reads all but the last token
        name = "max_length" if g["max_new_tokens"] is None else "max_new_tokens"
        limit = positions + START_LENGTH if name == "max_length" else positions
        bad(name, f"at most {limit}: the decoder has {positions} positions")
    return g


def resolve_settings(config: BartConfig, **kwargs) -> Settings:
    """The Settings of a generate() call (check_generation_args, with the model's config)."""
    g = check_generation_args(config, **kwargs)
    del g["max_new_tokens"]
    return Settings(**g, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)


def check_inputs(config: BartConfig, input_ids: Tensor, attention_mask: Tensor | None) -> None:
    """UserErrors naming input_ids or attention_mask: not a batch of token ids, an empty source (no token at all, or
    a row whose mask is all 0), a source longer than the encoder's positions, an id outside the vocabulary."""
    if input_ids.dim() != 2 or input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise UserError("not a batch of token ids", "input_ids", f"{input_ids.dtype} {tuple(input_ids.shape)}",
                        "pass integer ids of shape [batch, length]")
    if input_ids.numel() == 0:
        raise UserError("empty source", "input_ids", tuple(input_ids.shape), "pass at least one token per source")
    if input_ids.size(1) > config.max_position_embeddings:
        raise UserError("source longer than the encoder's positions", "input_ids", input_ids.size(1),
                        f"truncate it to max_position_embeddings ({config.max_position_embeddings}) tokens")
    low, high = torch.stack([input_ids.min(), input_ids.max()]).tolist()
    if low < 0 or high >= config.vocab_size:
        raise UserError("token id outside the vocabulary", "input_ids", low if low < 0 else high,
                        f"use ids in [0, {config.vocab_size})")
    if attention_mask is None:
        return
    if attention_mask.shape != input_ids.shape:
        raise UserError("attention_mask does not match input_ids", "attention_mask", tuple(attention_mask.shape),
                        f"give it input_ids' shape {tuple(input_ids.shape)}")
    empty = (~attention_mask.bool().any(-1)).nonzero()
    if len(empty):
        raise UserError("empty source", f"attention_mask row {int(empty[0])}", fix="give every source a real token")


# ---------------------------------------------------------------------------------------------
# Logits processors: (ids [N, t], scores [N, V]) -> scores, in transformers' order
# ---------------------------------------------------------------------------------------------

def ban_ngram_completions(ids: Tensor, scores: Tensor, ngrams: Tensor) -> Tensor:
    """Ban, in each row, every token that would complete one of the row's n-grams `ngrams` [N, W, n]
    after the row's last n - 1 tokens."""
    n, V = ngrams.size(-1), scores.size(-1)
    prefix = ids[:, ids.size(1) + 1 - n:]  # the n-1 last tokens [N, n-1]
    hits = (ngrams[..., :-1] == prefix[:, None]).all(-1)  # n-grams starting with the prefix [N, W]
    banned = scores.new_zeros(scores.size(0), V + 1, dtype=torch.bool)  # column V: a sink for non-hits
    banned.scatter_(1, torch.where(hits, ngrams[..., -1].clamp(max=V), V), True)
    return scores.masked_fill(banned[:, :V], -math.inf)


def no_repeat_ngram(ids: Tensor, scores: Tensor, n: int) -> Tensor:
    """Ban every token that would complete an n-gram already present in the sequence."""
    if ids.size(1) < n:
        return scores
    return ban_ngram_completions(ids, scores, ids.unfold(1, n, 1))


def encoder_no_repeat_ngram(ids: Tensor, scores: Tensor, source_ngrams: Tensor) -> Tensor:
    """Ban every token that would complete an n-gram of the row's source, `source_ngrams` [N, W, n]:
    the output may not copy any n consecutive source tokens (HF's encoder_no_repeat_ngram_size)."""
    if ids.size(1) < source_ngrams.size(-1) - 1:
        return scores
    return ban_ngram_completions(ids, scores, source_ngrams)


def min_length(ids: Tensor, scores: Tensor, length: int, eos: int) -> Tensor:
    """No EOS before the sequence (start token included) is `length` long. In place: `process` owns scores."""
    if ids.size(1) < length:
        scores[:, eos] = -math.inf
    return scores


def force_token(scores: Tensor, token: int) -> Tensor:
    forced = torch.full_like(scores, -math.inf)
    forced[:, token] = 0
    return forced


def top_k_filter(scores: Tensor, k: int, keep: int = 1) -> Tensor:
    """Keep the k best scores (at least `keep`), and their ties."""
    k = min(max(k, keep), scores.size(-1))
    return scores.masked_fill(scores < scores.topk(k)[0][..., -1:], -math.inf)


def top_p_filter(scores: Tensor, p: float, keep: int = 1) -> Tensor:
    """Nucleus (Holtzman et al. 2020): keep the smallest set of best tokens whose probability reaches p."""
    sorted_scores, order = scores.sort(descending=False)
    remove = sorted_scores.softmax(-1).cumsum(-1) <= 1 - p  # the low tail holding at most 1 - p
    remove[..., -keep:] = False
    return scores.masked_fill(remove.scatter(1, order, remove), -math.inf)


def process(ids: Tensor, scores: Tensor, s: Settings, source_ngrams: Tensor | None = None) -> Tensor:
    """All processors the settings ask for; the sampling warpers only when sampling.

    scores must be a fresh tensor (the step's logits): processors may overwrite it. source_ngrams
    [N, W, n]: the n-grams of each row's source, when encoder_no_repeat_ngram_size asks for them.
    """
    t = ids.size(1)
    if s.no_repeat_ngram_size > 0:
        scores = no_repeat_ngram(ids, scores, s.no_repeat_ngram_size)
    if source_ngrams is not None:
        scores = encoder_no_repeat_ngram(ids, scores, source_ngrams)
    if s.min_length > 0 and s.eos_token_id is not None:
        scores = min_length(ids, scores, s.min_length, s.eos_token_id)
    if s.forced_bos_token_id is not None and t == 1:
        scores = force_token(scores, s.forced_bos_token_id)
    if s.forced_eos_token_id is not None and t == s.max_length - 1:
        scores = force_token(scores, s.forced_eos_token_id)
    if s.sampling:
        keep = 2 if s.num_beams > 1 else 1  # beams keep one token besides EOS to continue with
        if s.temperature != 1.0:
            scores = scores / s.temperature  # HF's temperature warper
        if s.top_k != 0:
            scores = top_k_filter(scores, s.top_k, keep)
        if s.top_p < 1.0:
            scores = top_p_filter(scores, s.top_p, keep)
    return scores


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------

class DecodeStep:
    """One decoder step for every sequence: its last token [N, 1] -> next-token logits [N, V].

    With `reorder` (beam search), the step first moves each sequence's cache to the beam it now
    continues: `origin` [N], from the previous beam_step (the identity at first). The step reads its
    inputs from static buffers and leaves the cache's shapes and addresses alone (see KVCache), so
    on CUDA the first step, run eagerly, is also recorded as a CUDA graph, and every later step of
    the generate call replays it: one launch per step instead of a few hundred small kernels.
    """

    def __init__(self, model, cache, rows: int, reorder: bool = False, cuda_graph: bool = False):
        self.model, self.cache, self.cuda_graph = model, cache, cuda_graph
        self.ids = torch.zeros(rows, 1, dtype=torch.long, device=cache.kv.device)
        self.origin = torch.arange(rows, device=cache.kv.device) if reorder else None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: Tensor | None = None  # the graph's output buffer

    def run(self) -> Tensor:
        if self.origin is not None:
            self.cache.reorder(self.origin, in_place=self.cuda_graph)
        return self.model.decode(self.ids, self.cache)[:, -1]

    def run_and_capture(self) -> Tensor:
        """Run the step on a side stream, which also does what must not happen during capture (lazy
        initializations, autocast's weight casts), then record it there; recording executes nothing.
        (torch.cuda.graph would also empty the allocator's cache first, at every generate call.)"""
        main, side = torch.cuda.current_stream(), torch.cuda.Stream()
        side.wait_stream(main)
        with torch.cuda.stream(side):
            logits = self.run()
            self.graph = torch.cuda.CUDAGraph()
            self.graph.capture_begin()
            try:
                self.logits = self.run()
            finally:
                self.graph.capture_end()
        main.wait_stream(side)
        logits.record_stream(main)  # made on the side stream, used on the main one
        return logits

    def __call__(self, ids: Tensor, origin: Tensor | None = None) -> Tensor:
        """ids [N, t] -> logits [N, V] (the model's dtype) for the token after ids[:, -1]; the cache advances.
        With reorder, `origin` [N] is required after the first step. The result is overwritten by the next call."""
        self.ids.copy_(ids[:, -1:])
        if origin is not None:
            self.origin.copy_(origin)
        if self.graph is not None:
            self.graph.replay()
            return self.logits
        return self.run_and_capture() if self.cuda_graph else self.run()


def may_have_ended(t: int, s: Settings) -> bool:
    """Whether a hypothesis can have ended in the step that made the sequences t long.

    Not while min_length bans EOS (unless forced BOS is EOS) and max_length is ahead: then every
    stop check is known to be False, and skipping it saves its host-device sync.
    """
    eos_banned = t <= s.min_length and not (t == 2 and s.forced_bos_token_id == s.eos_token_id)
    return not eos_banned or t >= s.max_length


def greedy_or_sample(step: DecodeStep, ids: Tensor, s: Settings, source_ngrams: Tensor | None = None) -> Tensor:
    """One sequence per row: argmax or a sample each step; finished rows continue with padding."""
    unfinished = torch.ones(ids.size(0), dtype=torch.bool, device=ids.device)
    while True:
        scores = process(ids, step(ids).float(), s, source_ngrams)
        token = torch.multinomial(scores.softmax(-1), 1)[:, 0] if s.sampling else scores.argmax(-1)
        if s.eos_token_id is not None:
            token = torch.where(unfinished, token, s.pad_token_id)
            unfinished &= token != s.eos_token_id
        ids = torch.cat([ids, token[:, None]], dim=1)
        if ids.size(1) >= s.max_length or may_have_ended(ids.size(1), s) and not unfinished.any():
            return ids


@dataclass
class Beams:
    """Beam search state for B sources x K beams.

    Open hypotheses: `seqs` [B, K, max_length] and their summed log-probabilities `scores` [B, K],
    best first. Finished ones: `done_seqs`, `done_scores` (length-penalized: sum / length**alpha),
    `done` (a real hypothesis, not a placeholder) and `done_len` (generated tokens), all [B, K].
    `improvable` [B, 1]: whether an open beam may still beat the worst finished one.
    """
    seqs: Tensor
    scores: Tensor
    done_seqs: Tensor
    done_scores: Tensor
    done: Tensor
    done_len: Tensor
    improvable: Tensor

    @classmethod
    def start(cls, ids: Tensor, K: int, max_length: int, fill: int) -> "Beams":
        """ids [B*K, t]: K copies of each start; only the first copy is live at first."""
        B, t = ids.size(0) // K, ids.size(1)
        seqs = ids.new_full((B, K, max_length), fill)
        seqs[:, :, :t] = ids.view(B, K, t)
        scores = torch.zeros(B, K, device=ids.device)
        scores[:, 1:] = EXCLUDED
        return cls(seqs, scores, seqs.clone(), torch.full_like(scores, EXCLUDED),
                   torch.zeros(B, K, dtype=torch.bool, device=ids.device), torch.zeros_like(seqs[..., 0]),
                   torch.ones(B, 1, dtype=torch.bool, device=ids.device))


def gather_beams(x: Tensor, index: Tensor) -> Tensor:
    """x [B, K, ...], index [B, K'] -> x[b, index[b, k]] [B, K', ...]."""
    return x.take_along_dim(index.view(*index.shape, *[1] * (x.dim() - 2)), dim=1)


def merge_beams(old: Tensor, new: Tensor, index: Tensor) -> Tensor:
    """old [B, K, ...] and new [B, K', ...] side by side, then the rows `index` [B, K] of that."""
    return gather_beams(torch.cat((old, new), dim=1), index)


def select_candidates(log_probs: Tensor, beam_scores: Tensor, n: int, do_sample: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The n best (or n sampled without replacement, best first) continuations of each source's beams.

    log_probs [B, K, V], beam_scores [B, K] -> scores (beam score + token log-prob), origin beam and
    token, each [B, n]. Without sampling, the n best of each beam hold the n best overall, so a
    top-n per beam, then one over the K*n survivors, give what one top-n over all K*V continuations
    gives (as transformers computes it), without forming the K*V sums or selecting from rows of K*V.
    """
    B, K, V = log_probs.shape
    if do_sample:
        total = (log_probs + beam_scores[:, :, None]).view(B, K * V)
        probs = total.softmax(-1)
        index = torch.multinomial(probs, n)  # the draws, then (ranked last) continuations of probability 0
        # At a low temperature float32 holds a probability for fewer than n continuations, and multinomial fills
        # the rest with any of probability 0 (banned tokens, placeholder beams: empty outputs). Sampling without
        # replacement tends to the best of the rest there (the limit as their probabilities vanish): take those.
        drawn = probs.gather(1, index) > 0  # [B, n], the first ones of each row
        rest = total.scatter(1, index, torch.where(drawn, math.inf, total.gather(1, index))).topk(n)[1]
        index = torch.where(drawn, index, rest)  # rest: the draws, then the best of the others
        top, order = total.gather(1, index).sort(dim=-1, descending=True)
        cand = index.gather(1, order)
        return top, cand // V, cand % V
    best, token = log_probs.topk(min(n, V))  # [B, K, n]
    top, index = (best + beam_scores[:, :, None]).view(B, -1).topk(n)
    return top, index // best.size(-1), token.view(B, -1).gather(1, index)


def beam_step(beams: Beams, log_probs: Tensor, t: int, prompt_len: int, s: Settings) -> tuple[Beams, Tensor, Tensor]:
    """Extend every beam by one token (Beams at length t -> t + 1).

    log_probs [B, K, V] are the processed next-token log-probabilities. The 2K best continuations
    per source (so that K stay open even if K end here) are split: those that end (EOS or
    max_length) may enter the finished list if among the top K, the best K others stay open.
    Returns the new beams, per new open beam the flat row it came from (for the cache), and whether
    every continuation ended (nothing left to extend; a bool tensor, to spare a host sync).
    """
    B, K = log_probs.shape[:2]
    cand_scores, origin, token = select_candidates(log_probs, beams.scores, 2 * K, s.sampling)  # [B, 2K]
    cand_seqs = gather_beams(beams.seqs, origin)
    cand_seqs[:, :, t] = token
    ends = torch.full_like(token, t + 1 >= s.max_length, dtype=torch.bool)
    if s.eos_token_id is not None:
        ends |= token == s.eos_token_id

    # open beams: the best K continuations that did not end
    open_scores = cand_scores + ends.to(torch.float32) * EXCLUDED
    keep = open_scores.topk(K)[1]
    flat_origin = (gather_beams(origin, keep) + torch.arange(B, device=token.device)[:, None] * K).flatten()

    # finished: merge the ended top-K continuations into the K best finished so far
    ended = ends & (torch.arange(2 * K, device=token.device) < K)
    final = cand_scores / ((t + 1 - prompt_len) ** s.length_penalty)
    final += (beams.done.all(-1, keepdim=True) & (s.early_stopping is True)).to(torch.float32) * EXCLUDED
    final += (~beams.improvable).to(torch.float32) * EXCLUDED
    final += (~ended) * EXCLUDED
    best = torch.cat((beams.done_scores, final), dim=1).topk(K)[1]
    length = torch.full_like(token, t + 1 - prompt_len)
    beams = Beams(seqs=gather_beams(cand_seqs, keep), scores=gather_beams(open_scores, keep),
                  done_seqs=merge_beams(beams.done_seqs, cand_seqs, best),
                  done_scores=merge_beams(beams.done_scores, final, best),
                  done=merge_beams(beams.done, ended, best), done_len=merge_beams(beams.done_len, length, best),
                  improvable=beams.improvable)
    return beams, flat_origin, ends.all()


def still_improvable(beams: Beams, t: int, prompt_len: int, s: Settings) -> Tensor:
    """HF's early-stop heuristic at length t: can the best open beam still beat the worst finished one?

    early_stopping=False assumes the best open beam ends now; "never" with a positive length
    penalty assumes it ends at max_length (the best it could do); a source without K finished
    hypotheses is always improvable.
    """
    length = (s.max_length if s.early_stopping == "never" and s.length_penalty > 0.0 else t) - prompt_len
    best_open = beams.scores[:, :1] / (length ** s.length_penalty)
    worst_done = torch.where(beams.done, beams.done_scores.min(dim=1, keepdim=True)[0], EXCLUDED)
    return beams.improvable & (best_open > worst_done).any(-1, keepdim=True)


def beam_search(step: DecodeStep, ids: Tensor, s: Settings, source_ngrams: Tensor | None = None) -> Tensor:
    """Beam search (and beam sampling with do_sample) over ids [B*K, t], K = num_beams."""
    K, t = s.num_beams, ids.size(1)
    prompt_len = t
    # transformers fills unused positions with `pad or eos` (a pad id of 0 gives eos), -1 without eos
    fill = (s.pad_token_id or s.eos_token_id) if s.eos_token_id is not None else -1
    beams = Beams.start(ids, K, s.max_length, fill)
    B, origin = beams.seqs.size(0), None
    while True:
        flat = beams.seqs[:, :, :t].flatten(0, 1)  # [B*K, t]
        logits = step(flat, origin)  # reorders the cache for the previous step's origins first
        log_probs = process(flat, F.log_softmax(logits, -1, dtype=torch.float32), s, source_ngrams)
        beams, origin, stop = beam_step(beams, log_probs.view(B, K, -1), t, prompt_len, s)
        t += 1
        beams.improvable = still_improvable(beams, t, prompt_len, s)
        if may_have_ended(t, s):  # stop when all ended, all done (early_stopping), or none improvable: one sync
            stop |= ~beams.improvable.any()
            if s.early_stopping is True:
                stop |= beams.done.all()
            if stop.item():
                break
    n = s.num_return_sequences
    return beams.done_seqs[:, :n].flatten(0, 1)[:, :prompt_len + int(beams.done_len[:, :n].max())]


@torch.no_grad()
def generate(model, input_ids: Tensor, attention_mask: Tensor | None = None, *, settings: Settings | None = None,
             cuda_graph: bool | None = None, **kwargs) -> Tensor:
    """Token ids [B * num_return_sequences, T], each row starting with the decoder start token and
    padded with pad_token_id, as `transformers`' generate returns for the same weights and arguments
    (so, like it, beam search pads with eos_token_id when pad_token_id is 0).

    cuda_graph: replay each decoder step as a CUDA graph (see DecodeStep); default: on CUDA. False runs each step
    eagerly: to see its kernels in a profiler (a replay is one launch), for a modified decoder whose step reads values
    back to the host or changes shapes (a graph replays neither), or to spare the graph's private memory pool.

    Arguments (default: the model config's generation settings, else transformers' defaults):
    max_length, max_new_tokens, min_length, num_beams, length_penalty, early_stopping (True, False
    or "never"), no_repeat_ngram_size, encoder_no_repeat_ngram_size (no n-gram of the source in the
    output: against copying), do_sample, top_k, top_p, temperature (below GREEDY_TEMPERATURE, sampling is
    its limit: greedy decoding, or beam search with beams), num_return_sequences, decoder_start_token_id,
    forced_bos_token_id, forced_eos_token_id.

    settings: instead of the arguments, a Settings already built by resolve_settings(model.config, ...) (a caller
    that generates many times resolves and checks them once).

    Bad arguments (check_generation_args), then bad inputs (check_inputs), are UserErrors naming them.

    On CPU, minicore.quantize.inference_weights(model, "fp32" | "bf16" | "int8") makes a copy that generates
    faster: its linear layers read packed (or int8) weights (experiments/bench_decode_step.py).
    """
    if settings is not None and kwargs:
        raise UserError("generate() takes settings or generation arguments, not both", ", ".join(sorted(kwargs)),
                        fix="put them in the settings (resolve_settings), or leave out settings")
    s = settings or resolve_settings(model.config, **kwargs)
    check_inputs(model.config, input_ids, attention_mask)
    if cuda_graph is None:
        cuda_graph = input_ids.is_cuda
    elif cuda_graph and not input_ids.is_cuda:
        raise UserError("a CUDA graph needs a CUDA device", "cuda_graph", True,
                        f"input_ids are on {input_ids.device}: move them and the model to CUDA, or leave it unset")
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # nothing padded: no mask, the fast attention kernels
    copies = max(s.num_beams, s.num_return_sequences)  # sequences per source, sharing its cross-attention K/V
    cache = model.new_cache(model.encode(input_ids, attention_mask), attention_mask, s.max_length - 1, copies)
    ids = input_ids.new_full((input_ids.size(0) * copies, 1), s.decoder_start_token_id)
    step = DecodeStep(model, cache, ids.size(0), reorder=s.num_beams > 1, cuda_graph=cuda_graph)
    n, source_ngrams = s.encoder_no_repeat_ngram_size, None
    if 0 < n <= input_ids.size(1):  # the source's n-grams (padding included, as HF), for each of its copies
        source_ngrams = input_ids.unfold(1, n, 1).repeat_interleave(copies, dim=0)  # [N, W, n]
    if s.num_beams == 1:
        return greedy_or_sample(step, ids, s, source_ngrams)
    return beam_search(step, ids, s, source_ngrams)
