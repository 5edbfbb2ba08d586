"""What the apps serve, kept out of the UI code: which models a run folder holds, the prompt each gets,
generation streamed token by token, and the reward model's score of an answer.

Streaming: `model.generate` runs in a thread and hands its text to a `TextIteratorStreamer`; the app reads
the pieces as they come. Several `Stream`s run at once and `interleave` reads them in turn, so every
pane of the compare app (or both answers of a battle) grows together.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from .data import encodable, spelled_special_token
from .errors import LabError
from .generation import cut_at_eos, without_unsampled_ids
from .runs import MODEL_DIRS, MODEL_STAGES, finished_dir, is_done
from .tokenizer import prompt_response_ids, render_alpaca

MAX_PROMPT_CHARS = 2000  # a longer prompt is refused, not cut: the model would never see what was cut
MAX_NEW_TOKENS = 512  # server-side cap, whatever a client sends
MIN_TEMPERATURE = 0.01  # below it an answer is greedy: sampling's limit, where logits / T would overflow to inf
STREAM_TIMEOUT_S = 600  # a generation thread silent this long has died; the reader stops waiting


# ------------------------------------------------------------------ what a run folder offers

def available_models(root: str | Path) -> list[str]:
    """Causal LMs saved directly under the run folder: base, sft, rlhf first (those whose stage finished), then any
    other saved one (e.g. an `rlhf-nokl` experiment). Reward models (a score head) are not offered."""
    root = Path(root)
    found = {d.name for d in root.iterdir() if _is_causal_lm(d)} if root.is_dir() else set()
    # base, sft and rlhf only once their stage finished (pretraining saves base/ before its metrics.json), as `lab eval`
    return [m for m in MODEL_DIRS if m in found and is_done(root, MODEL_STAGES[m])] + sorted(found - set(MODEL_DIRS))


def _is_causal_lm(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file() or folder.name.startswith("."):  # .tmp-* folders are unfinished saves
        return False
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (ValueError, AttributeError):  # not JSON, or JSON but not an object: not a model the apps can load
        warnings.warn(f"{config} is not a model's config (not a JSON object): {folder.name} is not offered",
                      stacklevel=2)
        return False
    return any(isinstance(a, str) and a.endswith("ForCausalLM") for a in architectures)


def rendered_prompt(name: str, text: str) -> str:
    """The exact text a model is given: the base model continues the raw text, every later stage gets the
    Alpaca prompt it was fine-tuned on."""
    return text if name == "base" else render_alpaca(text)


def check_prompt(text: str) -> str:
    """The prompt, stripped, if it is fit to send to a model; a LabError otherwise."""
    if text is not None and not isinstance(text, str):  # a client may send anything
        raise LabError(f"the prompt is a {type(text).__name__}, not text", fix="send the prompt as a string")
    text = (text or "").strip()
    if not text:
        raise LabError("the prompt is empty", fix="type a question or an instruction")
    if len(text) > MAX_PROMPT_CHARS:
        raise LabError(f"the prompt has {len(text)} characters", fix=f"keep it to {MAX_PROMPT_CHARS} or fewer")
    return encodable(text, None, None, "prompt")


def context_length(model) -> int | None:
    """How many tokens (prompt + answer) the model reads: its position table (None if the config does not say)."""
    return getattr(model.config, "max_position_embeddings", None)


def check_fits(model, tokenizer, prompt: str) -> int:
    """The prompt's length in tokens, if it leaves room for an answer in the model's context; a LabError otherwise
    (past its context a model answers nonsense, and the arena would store votes on it). A prompt that spells out a
    special token ("<|eos|>") is refused too: the model would read the control token itself."""
    if hit := spelled_special_token(prompt, tokenizer.all_special_tokens):
        raise LabError(f"the prompt holds {hit!r}, which this model reads as a control token, not as text",
                       fix=f"remove {hit!r} or break it up (e.g. with a space)")
    n = len(tokenizer(prompt)["input_ids"])
    _room(model, n)
    return n


def _room(model, n_prompt: int) -> int:
    """Tokens left for the answer after a prompt of `n_prompt` tokens; a LabError when none are."""
    ctx = context_length(model)
    if ctx is not None and n_prompt >= ctx:
        raise LabError(f"the prompt has {n_prompt} tokens (template included), and this model reads at most {ctx}",
                       fix="shorten the prompt")
    return (ctx or 10**9) - n_prompt


def start_streams(jobs: list[tuple], **sampling) -> list["Stream"]:
    """A `Stream` for each (model, tokenizer, prompt), or none at all: every prompt is checked before one starts."""
    for model, tokenizer, prompt in jobs:
        check_fits(model, tokenizer, prompt)
    streams: list[Stream] = []
    try:
        for model, tokenizer, prompt in jobs:
            streams.append(Stream(model, tokenizer, prompt, **sampling))
    except BaseException:  # one failed to start: the others must not generate on with no reader
        for s in streams:
            s.stop()
        raise
    return streams


class Models:
    """Models of one run folder, each loaded on first use and then kept (a `full` model takes seconds to load).
    Only names from `available_models` are accepted, so a request can never point at another path."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()  # an absolute path is never taken for a hub id ("myrun/sft" could be one)
        self.names = available_models(self.root)
        self._loaded: dict[str, tuple] = {}
        self._lock = threading.Lock()
        self._reward = None

    def get(self, name: str):
        """(model, tokenizer) of `name`."""
        from .modeling import inference_device, load_causal_lm

        if name not in self.names:
            raise LabError(f"no model {name!r} in the run folder", path=str(self.root),
                           fix=f"pick one of {', '.join(self.names)}")
        with self._lock:
            if name not in self._loaded:
                if not (self.root / name / "config.json").is_file():  # removed since the app started
                    raise LabError(f"model {name!r} is no longer in the run folder", path=str(self.root / name),
                                   fix="restore it (or run its stage again) and restart the app")
                model, tokenizer = load_causal_lm(str(self.root / name), device=inference_device())
                self._loaded[name] = (model.eval(), tokenizer)
            return self._loaded[name]

    def reward_model(self):
        """The run's reward model, or None before stage 3 has run; a LabError when its stage did not finish (as for
        `lab eval` and PPO: an interrupted `lab reward` leaves a model without its metrics)."""
        from .modeling import inference_device
        from .reward import RewardModel

        with self._lock:
            if self._reward is None and (self.root / "reward" / "config.json").is_file():
                self._reward = RewardModel.load(finished_dir(self.root, "reward", "reward model"),
                                                device=inference_device())
            return self._reward


def reward_scores(reward_model, text: str, answers: list[str], ended: list[bool]) -> list[float | None]:
    """Normalised rewards of answers to `text`. The reward model was trained on Alpaca prompts, so every answer
    (the base model's too) is judged as an answer to the Alpaca-rendered question. None for an answer that does not
    fit the reward model's context with that prompt (the base model's answer room is counted from the raw text, the
    template's tokens aside): past its context a model's score means nothing."""
    prompt, tok = render_alpaca(text), reward_model.tokenizer
    ctx = context_length(reward_model.model)
    fits = [ctx is None or len(p) + len(r) + e <= ctx
            for (p, r), e in zip(prompt_response_ids(tok, [prompt] * len(answers), answers), ended, strict=True)]
    kept = [i for i, ok in enumerate(fits) if ok]
    scores = reward_model.score([prompt] * len(kept), [answers[i] for i in kept], [ended[i] for i in kept]).tolist()
    out: list[float | None] = [None] * len(answers)
    for i, s in zip(kept, scores):
        out[i] = round(s, 3)
    return out


# ------------------------------------------------------------------ streamed generation

class _StopFlag(StoppingCriteria):
    """Ends `generate` once set: a stream closed by the stop button must not run on to max_new_tokens."""

    def __init__(self):
        self.event = threading.Event()

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Stream:
    """One answer generated in a background thread. Iterate it for the new text pieces; afterwards `text` is the
    whole answer, `new_tokens` how many tokens were generated, and `ended` whether it stopped at EOS (False: it
    hit max_new_tokens or was stopped).

    `temperature` 0 means greedy decoding, so a scripted call gives the same answer as `generation.generate`; so does
    any temperature under `MIN_TEMPERATURE` (sampling at T → 0 is greedy, and logits divided by 1e-40 overflow).
    """

    def __init__(self, model, tokenizer, prompt: str, max_new_tokens: int = 64, temperature: float = 0.0,
                 top_p: float = 1.0):
        self.text, self.ended, self.new_tokens, self._final, self._error = "", False, 0, "", None
        self._stop = _StopFlag()
        self._streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True,
                                              timeout=STREAM_TIMEOUT_S)
        enc = tokenizer([prompt], return_tensors="pt").to(model.device)  # (1, T)
        greedy = temperature < MIN_TEMPERATURE
        sampling = (dict(do_sample=False, temperature=None, top_p=None, top_k=None) if greedy
                    else dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0))
        room = _room(model, enc["input_ids"].shape[1])  # the answer stays inside the context
        new_tokens = min(max(1, int(max_new_tokens)), MAX_NEW_TOKENS, room)
        kwargs = dict(**enc, max_new_tokens=new_tokens, streamer=self._streamer,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      stopping_criteria=StoppingCriteriaList([self._stop]), **sampling,
                      **without_unsampled_ids(model, tokenizer))
        self._thread = threading.Thread(target=self._generate, args=(model, tokenizer, kwargs), daemon=True)
        self._thread.start()

    def _generate(self, model, tokenizer, kwargs: dict) -> None:
        try:
            new = model.generate(**kwargs)[0, kwargs["input_ids"].shape[1]:]  # (new,): the answer, EOS included
            self.ended, self.new_tokens = bool((new == tokenizer.eos_token_id).any()), len(new)
            # decoded once more as a whole: a piece streamed while a character's bytes were incomplete shows "�"
            self._final = tokenizer.decode(cut_at_eos(new, tokenizer.eos_token_id), skip_special_tokens=True)
        except Exception as err:  # noqa: BLE001 - handed to the reading thread, which raises it
            self._error = err
            self._streamer.end()  # wake the reader

    def __iter__(self) -> Iterator[str]:
        for piece in self._streamer:
            if piece:  # the streamer also sends "" while a word is still incomplete
                self.text += piece
                yield piece
        self._thread.join()
        if self._error is not None:
            raise self._error
        self.text = self._final

    def stop(self) -> None:
        """End the generation now (a no-op once it has finished) and wait for its thread."""
        self._stop.event.set()
        self._thread.join()


def interleave(streams: list[Stream]) -> Iterator[None]:
    """Read the streams in turn, one piece from each unfinished stream, yielding after every piece; the caller
    reads each stream's `text`. Closing this generator (the stop button) stops every stream.

    The panes advance in lockstep, which suits checkpoints of one architecture (they run at one speed); a
    faster model's pieces wait in its queue until their turn."""
    live = [iter(s) for s in streams]
    try:
        while live:
            for it in list(live):
                if next(it, None) is None:
                    live.remove(it)
                else:
                    yield
    finally:
        for s in streams:
            s.stop()
