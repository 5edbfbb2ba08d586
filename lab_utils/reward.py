"""Stage 3: reward models — a pairwise one (Bradley–Terry, `trl.RewardTrainer`) and a ratings one (regression).

Both are the SFT model with its LM head replaced by a one-output score head
(`AutoModelForSequenceClassification`, `num_labels=1`). The score of a text is read at its **last real
token**: the EOS of a response that ended, or its last token when it was cut off (in training `transformers`
picks the last token that is not PAD, and `raw_scores` the last one the attention mask counts: the same token unless
the text holds a PAD of its own, as a PPO sample can; PAD is a token of its own here, never EOS).

Every sequence is tokenised the way PPO will see it: the rendered prompt (BOS first), then the response
tokens, then EOS only if the response ended. That is why the pairs are tokenised here and handed to the
trainer as `chosen_ids`/`rejected_ids`: `RewardTrainer` would otherwise append an EOS to every text,
and a cut-off response would look finished.

The pairwise model's loss adds a language-modelling regulariser (`RegularisedRewardTrainer`, GRM): the SFT
model's frozen LM head must still predict the chosen texts from the reward model's hidden states. On tiny it
leaves held-out pair accuracy where it was but makes a reward model PPO can push further without exploiting it.

After training, the pairwise scores are normalised — mean 0, standard deviation 1 over the SFT model's
own samples — and that `mean`/`std` is saved next to the weights (`normalization.json`), so that every
later stage reads rewards on one scale (`RewardModel.score`). The ratings model, which nothing downstream
reads, keeps the scale it was trained on, (rating − 3) / 2: its `normalization.json` says mean 0, std 1.
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig
from safetensors import SafetensorError
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments)
from trl import RewardConfig as TRLRewardConfig
from trl import RewardTrainer

from . import annotator, tasks
from . import checkpoints as ck
from .config import RewardConfig
from .errors import LabError
from .generation import alpaca_prompts, generate_ended
from .modeling import (check_model_folder, load_error, quiet_unless, require_eos, use_bf16,
                       with_distinct_pad)
from .ppo_math import logprobs_from_logits
from .tokenizer import prompt_response_ids
from .world import World

NORM_FILE = "normalization.json"


# ------------------------------------------------------------------ preference data from the SFT model

def sample_responses(model, tokenizer, records: list[dict], n_samples: int, temperature: float,
                     max_new_tokens: int, seed: int = 0, progress: bool = False) -> list[dict]:
    """`n_samples` sampled answers per record: [{"rec", "prompt", "responses": [(text, ended), ...]}]."""
    prompts = alpaca_prompts(records)
    outs = generate_ended(model, tokenizer, [p for p in prompts for _ in range(n_samples)], max_new_tokens,
                          do_sample=True, temperature=temperature, seed=seed,
                          desc="sampling SFT answers" if progress else "")
    return [{"rec": r, "prompt": p, "responses": outs[i * n_samples:(i + 1) * n_samples]}
            for i, (r, p) in enumerate(zip(records, prompts))]


def label_pairs(w: World, samples: list[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The annotator labels every pair of distinct answers to a prompt and rates every answer.

    Returns (pairs, ratings). A pair is {"prompt", "chosen", "rejected", "chosen_ended", "rejected_ended",
    "task"}; ties and both-bad pairs teach nothing about which is better and are left out (as an arena
    export leaves them out). A rating is {"prompt", "response", "ended", "rating", "task"}.
    """
    rng = random.Random(seed)
    pairs, ratings = [], []
    for s in samples:
        rec, seen = s["rec"], {}
        for text, ended in s["responses"]:
            seen.setdefault((text.strip(), ended), (text, ended))
        answers = list(seen.values())
        for text, ended in answers:
            ratings.append({"prompt": s["prompt"], "response": text, "ended": ended, "task": rec.get("task"),
                            "rating": annotator.rate(w, rec, text, ended)})
        pairs += [p for i in range(len(answers)) for j in range(i + 1, len(answers))
                  if (p := _labelled_pair(w, s, answers[i], answers[j]))]
    rng.shuffle(pairs)
    return pairs, ratings


def _labelled_pair(w: World, sample: dict, first: tuple[str, bool], second: tuple[str, bool]) -> dict | None:
    """The annotator's verdict on two (text, ended) answers to `sample`'s prompt as a chosen/rejected pair;
    None for a tie or when both are bad."""
    verdict = annotator.compare(w, sample["rec"], first[0], second[0], first[1], second[1])
    if verdict not in ("A", "B"):
        return None
    (c, ec), (r, er) = (first, second) if verdict == "A" else (second, first)
    return {"prompt": sample["prompt"], "chosen": c, "rejected": r, "chosen_ended": ec, "rejected_ended": er,
            "task": sample["rec"].get("task")}


def off_topic_pairs(w: World, samples: list[dict], per_prompt: int, seed: int = 0) -> list[dict]:
    """Pairs that put one of a prompt's own answers against an answer the SFT model gave to a prompt of another task.

    The annotator labels them like any pair (ties and both-bad left out), so the labels stay the annotator's. They
    cover a blind spot that sampled pairs rarely show and that PPO finds: an answer that is fluent, well formed and
    about something else ("The sentiment of this sentence is positive." to an extraction question).
    """
    if per_prompt <= 0:
        return []
    rng, pairs = random.Random(seed), []
    others = {task: [o for o in samples if o["rec"].get("task") != task]
              for task in {s["rec"].get("task") for s in samples}}
    for s in samples:
        pool = others[s["rec"].get("task")]
        for _ in range(per_prompt if pool else 0):
            own, foreign = rng.choice(s["responses"]), rng.choice(rng.choice(pool)["responses"])
            if pair := _labelled_pair(w, s, own, foreign):
                pairs.append(pair)
    return pairs


def preference_records(w: World, n: int, seed: int) -> list[dict]:
    """Prompts for preference collection: the SFT tasks on training-split entities, drawn with their own seed."""
    return tasks.sft_records(w, n, seed=seed)


def held_out_prompts(prompts: list[str], eval_fraction: float, seed: int = 0) -> set[str]:
    """The prompts whose pairs are kept for evaluation: no evaluation prompt is seen in training."""
    unique = sorted(set(prompts))
    random.Random(seed).shuffle(unique)
    return set(unique[: round(len(unique) * eval_fraction)])


# ------------------------------------------------------------------ tokenisation: the layout PPO scores

def encode(tokenizer, prompt: str, response: str, ended: bool = True) -> list[int]:
    """BOS + prompt tokens, response tokens (split as `tokenizer.prompt_response_ids` splits them), EOS only when the
    response ended."""
    (prompt_ids, response_ids), = prompt_response_ids(tokenizer, [prompt], [response])
    ids = prompt_ids + response_ids
    return ids + [tokenizer.eos_token_id] if ended else ids


def within_length(tokenizer, pairs: list[dict], max_length: int) -> list[dict]:
    """The pairs whose prompt and longer answer fit in `max_length` tokens. Brought data (ShareGPT dialogues) can
    run to thousands of tokens: far past a small model's context, and too long to sample from or train on."""
    def fits(p):
        return all(len(encode(tokenizer, p["prompt"], p[side], p.get(f"{side}_ended", True))) <= max_length
                   for side in ("chosen", "rejected"))
    return [p for p in pairs if fits(p)]


def pair_dataset(tokenizer, pairs: list[dict]) -> Dataset:
    return Dataset.from_list([{"chosen_ids": encode(tokenizer, p["prompt"], p["chosen"], p.get("chosen_ended", True)),
                               "rejected_ids": encode(tokenizer, p["prompt"], p["rejected"],
                                                      p.get("rejected_ended", True))} for p in pairs])


def batch(tokenizer, seqs: list[list[int]]) -> dict:
    """Right-padded input_ids and attention_mask, as the reward trainer pads."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def raw_scores(model, tokenizer, seqs: list[list[int]], batch_size: int = 64) -> torch.Tensor:
    """The score head's output at each sequence's last real token (unnormalised).

    transformers' classifiers read their score at the last token that is not PAD. A sequence can hold a PAD token
    of its own — PPO's policy may sample it, and a typed "<pad>" tokenises to it — and one that ends with it would
    be scored a token early. So the head's output is taken at every position and read at the last one the attention
    mask counts; for a sequence without PAD tokens that is the very number the classifier returns."""
    was_training = model.training
    model.eval()
    head = getattr(model, "score", None)  # decoder classifiers' head (PEFT passes the attribute through)
    out = []
    for i in range(0, len(seqs), batch_size):
        enc = {k: v.to(model.device) for k, v in batch(tokenizer, seqs[i:i + batch_size]).items()}
        if not isinstance(head, torch.nn.Module):  # another architecture's head: the classifier's own reading
            out.append(model(**enc).logits[:, 0].float().cpu())
            continue
        seen = []
        hook = head.register_forward_hook(lambda _module, _inputs, output: seen.append(output))
        try:
            model(**enc)
        finally:
            hook.remove()
        last = enc["attention_mask"].sum(1) - 1  # right-padded: the last real token
        out.append(seen[-1][torch.arange(len(last)), last, 0].float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


# ------------------------------------------------------------------ the two reward models

def load_score_model(path: str | Path, pad_token_id: int, n_tokens: int | None = None):
    """The SFT (or any causal LM) checkpoint with a fresh one-output score head; its embeddings grown to `n_tokens`
    rows when the tokenizer has more (a PAD added by `score_tokenizer`)."""
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32,
                                                               use_safetensors=True)
    if n_tokens and n_tokens > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(n_tokens)
    model.config.pad_token_id = pad_token_id  # the score is read at the last non-PAD token
    return model


def as_saved(model):
    """The trained model as it is saved and as `lab eval`, the apps and the notebooks score it: in float32, without
    the bf16 autocast that the trainer (accelerate) leaves wrapped around its `forward` under --bf16. In place."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_fp32_wrapper=False)


def score_tokenizer(path: str | Path):
    """The tokenizer of the model a reward model starts from, with a PAD distinct from EOS as `load_causal_lm` gives
    it to the rest of the stage: with PAD = EOS the score of an answer that ended would be read before its EOS."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    require_eos(tokenizer, path)  # an answer that ended is scored at its EOS
    with_distinct_pad(tokenizer)
    return tokenizer


def _lora(cfg: RewardConfig) -> LoraConfig | None:
    if not cfg.lora:
        return None  # `modules_to_save` trains the fresh score head in full next to the adapters
    return LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, target_modules="all-linear",
                      modules_to_save=["score"], task_type="SEQ_CLS")


def _common_args(cfg: RewardConfig, output_dir: str, progress: bool) -> dict:
    return dict(output_dir=output_dir, num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
                learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0,
                logging_steps=cfg.logging_steps, save_strategy="no", report_to="none", seed=cfg.seed,
                disable_tqdm=not progress, use_cpu=not torch.cuda.is_available(), bf16=use_bf16(cfg.bf16),
                dataloader_num_workers=0, activation_checkpointing=False)


def chosen_lm_loss(lm_head, hidden: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of the chosen texts, read through `lm_head` from the reward model's last hidden
    states. `RewardTrainer` stacks the chosen rows first, then the rejected ones; a token counts when it and the
    position predicting it are both real (so padding on either side never leaks in)."""
    n = hidden.shape[0] // 2
    logits = lm_head(hidden[:n, :-1]).float()
    real = (attention_mask[:n, :-1] * attention_mask[:n, 1:]).bool()
    labels = input_ids[:n, 1:].masked_fill(~real, -100)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


class RegularisedRewardTrainer(RewardTrainer):
    """`trl.RewardTrainer`'s Bradley–Terry loss + `lm_coef` × `chosen_lm_loss` through a frozen copy of the SFT
    model's LM head (GRM, Yang et al. 2024, "Regularizing hidden states enables learning generalizable reward models
    for LLMs"). The reward model may move its hidden states only as far as the SFT model's head can still read the
    chosen answers from them, so it keeps what the SFT model knows instead of overwriting it with ~1,000 pairs.
    The reward model itself is unchanged: one score head read at the last real token."""

    def __init__(self, *args, lm_head: torch.nn.Module | None = None, lm_coef: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if lm_coef and lm_head is None:
            raise ValueError("lm_coef > 0 needs the SFT model's lm_head")
        self.lm_head, self.lm_coef = lm_head, lm_coef

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.lm_coef:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        captured = {}
        inner = self.accelerator.unwrap_model(model)  # under several processes `model` is DDP, which hides both
        backbone = (inner.get_base_model() if hasattr(inner, "get_base_model") else inner).base_model
        hook = backbone.register_forward_hook(lambda _m, _i, out: captured.update(hidden=out.last_hidden_state))
        try:
            loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        finally:
            hook.remove()
        hidden = captured["hidden"]
        self.lm_head.to(hidden.device)  # the trainer moved the reward model (to a GPU, say), not this frozen head
        lm = chosen_lm_loss(self.lm_head, hidden, inputs["input_ids"], inputs["attention_mask"])
        self._metrics["train" if model.training else "eval"]["lm_loss"].append(lm.item())
        loss = loss + self.lm_coef * lm
        return (loss, outputs) if return_outputs else loss


def frozen_lm_head(sft_dir: Path) -> torch.nn.Module:
    """The SFT model's output layer (its tied embedding here), detached from training."""
    head = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32,
                                        use_safetensors=True).get_output_embeddings()
    return head.requires_grad_(False)


def train_pairwise(cfg: RewardConfig, sft_dir: Path, pairs: list[dict], progress: bool = True):
    """Bradley–Terry reward model: loss = −log σ(r(chosen) − r(rejected)), via `trl.RewardTrainer`, plus the
    language-modelling regulariser of `RegularisedRewardTrainer` when `cfg.lm_coef` > 0."""
    tokenizer = score_tokenizer(sft_dir)
    lm_head = frozen_lm_head(sft_dir) if cfg.lm_coef else None
    torch.manual_seed(cfg.seed)  # the score head is drawn when the model is built
    model = load_score_model(sft_dir, tokenizer.pad_token_id, len(tokenizer))
    with tempfile.TemporaryDirectory() as tmp:
        args = TRLRewardConfig(**_common_args(cfg, tmp, progress), max_length=cfg.max_length, disable_dropout=True)
        trainer = RegularisedRewardTrainer(model=model, args=args, train_dataset=pair_dataset(tokenizer, pairs),
                                           processing_class=tokenizer, peft_config=_lora(cfg), lm_head=lm_head,
                                           lm_coef=cfg.lm_coef)
        quiet_unless(progress, trainer).train()
    model = trainer.model.merge_and_unload() if cfg.lora else trainer.model
    history = [{"step": h["step"], "loss": h["loss"]} | ({"lm_loss": h["lm_loss"]} if "lm_loss" in h else {})
               for h in trainer.state.log_history if "loss" in h]
    return model, tokenizer, history


def train_ratings(cfg: RewardConfig, sft_dir: Path, ratings: list[dict], progress: bool = True):
    """The alternative: regress the annotator's 1–5 rating (mean squared error, rating centred as (r − 3) / 2), with
    its own epochs and learning rate (`cfg.ratings_epochs`, `cfg.ratings_lr`)."""
    cfg = replace(cfg, epochs=cfg.ratings_epochs, lr=cfg.ratings_lr)
    tokenizer = score_tokenizer(sft_dir)
    torch.manual_seed(cfg.seed)
    model = load_score_model(sft_dir, tokenizer.pad_token_id, len(tokenizer))
    model.config.problem_type = "regression"
    data = Dataset.from_list([{"input_ids": encode(tokenizer, r["prompt"], r["response"], r["ended"]),
                               "labels": (r["rating"] - 3) / 2} for r in ratings])

    def collate(rows):
        out = batch(tokenizer, [r["input_ids"] for r in rows])
        return out | {"labels": torch.tensor([r["labels"] for r in rows], dtype=torch.float32)}

    if cfg.lora:
        from peft import get_peft_model
        model = get_peft_model(model, _lora(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model=model, args=TrainingArguments(**_common_args(cfg, tmp, progress),
                                                              remove_unused_columns=False),
                          train_dataset=data, data_collator=collate)
        quiet_unless(progress, trainer).train()
    model = trainer.model.merge_and_unload() if cfg.lora else trainer.model
    history = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    return model, tokenizer, history


def pairwise_accuracy(model, tokenizer, pairs: list[dict]) -> dict:
    """Share of pairs whose chosen answer scores higher, per task too; and the score margins."""
    chosen = raw_scores(model, tokenizer, [encode(tokenizer, p["prompt"], p["chosen"], p.get("chosen_ended", True))
                                           for p in pairs])
    rejected = raw_scores(model, tokenizer, [encode(tokenizer, p["prompt"], p["rejected"],
                                                    p.get("rejected_ended", True)) for p in pairs])
    return _ranking(pairs, chosen, rejected)


DECIDING_TERMS = tuple(annotator.WEIGHTS)  # the annotator's rubric terms, most important first


def deciding_term(w: World, rec: dict | None, pair: dict) -> str | None:
    """The rubric term that decided a labelled pair: "correct" when the rejected answer is unacceptable (wrong,
    empty or looping) and the chosen one is not, else the most important term on which the two answers differ.
    None when the annotator would not have decided the pair (both unacceptable, or no term differs)."""
    chosen = annotator.judge(w, rec, pair["chosen"], pair.get("chosen_ended", True))
    rejected = annotator.judge(w, rec, pair["rejected"], pair.get("rejected_ended", True))
    if chosen["bad"] != rejected["bad"]:
        return "correct"
    if chosen["bad"]:
        return None
    return next((t for t in DECIDING_TERMS[1:] if chosen[t] != rejected[t]), None)


def accuracy_by_term(w: World, records: dict[str, dict | None], pairs: list[dict], margins: list[float]) -> dict:
    """Pairwise accuracy split by the term that decided each pair (`deciding_term`), from the margins of
    `pairwise_accuracy`: {term: {"pairs": n, "accuracy": share ranked right}}, terms in rubric order.
    `records` maps each pair's prompt to the task record it was asked from (None: a free-form prompt)."""
    right: dict[str, list[bool]] = {}
    for pair, margin in zip(pairs, margins, strict=True):
        term = deciding_term(w, records.get(pair["prompt"]), pair)
        right.setdefault(term or "undecided", []).append(margin > 0)
    order = DECIDING_TERMS + ("undecided",)
    return {t: {"pairs": len(right[t]), "accuracy": round(sum(right[t]) / len(right[t]), 4)}
            for t in order if t in right}


def _ranking(pairs: list[dict], chosen: torch.Tensor, rejected: torch.Tensor) -> dict:
    right = (chosen > rejected).tolist()
    per_task: dict[str, list[bool]] = {}
    for p, ok in zip(pairs, right, strict=True):
        per_task.setdefault(p.get("task") or "data", []).append(ok)
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return {"accuracy": mean(right), "per_task": {t: mean(v) for t, v in per_task.items()},
            "margins": (chosen - rejected).tolist()}


def response_loglik(lm, tokenizer, prompts: list[str], responses: list[str], ended: list[bool],
                    batch_size: int = 64) -> torch.Tensor:
    """log p(response | prompt) under a causal LM: the log-probabilities of the response's tokens (EOS included
    when it ended) summed, on the same token layout as `encode`. Padding never enters a sum."""
    seqs = [encode(tokenizer, p, r, e) for p, r, e in zip(prompts, responses, ended, strict=True)]
    starts = [len(tokenizer(p)["input_ids"]) for p in prompts]  # the first response token's position
    was_training = lm.training
    lm.eval()
    out = []
    with torch.no_grad():
        for i, j in _batches([len(s) for s in seqs], batch_size, lm.config.vocab_size):
            enc = {k: v.to(lm.device) for k, v in batch(tokenizer, seqs[i:j]).items()}
            logprobs = logprobs_from_logits(lm(**enc).logits[:, :-1].float(), enc["input_ids"][:, 1:])  # (B, T-1)
            position = torch.arange(1, enc["input_ids"].shape[1], device=lm.device)  # of each predicted token
            first = torch.tensor(starts[i:j], device=lm.device)[:, None]
            keep = (position >= first) & enc["attention_mask"][:, 1:].bool()
            out.append((logprobs * keep).sum(1).cpu())
    lm.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


LOGITS_PER_BATCH = 2 ** 28  # float32 logits held at once (1 GiB; their log-softmax takes about as much again)


def _batches(lengths: list[int], batch_size: int, vocab_size: int):
    """(start, end) of consecutive batches of at most `batch_size` sequences whose logits (rows × longest ×
    vocabulary) stay under LOGITS_PER_BATCH: 64 rows of 1,024 tokens of a 150k vocabulary would be 40 GB. On tiny's
    vocabulary every batch is `batch_size` rows."""
    start = 0
    while start < len(lengths):
        end, longest = start + 1, lengths[start]
        while end < len(lengths) and end - start < batch_size and \
                (end - start + 1) * max(longest, lengths[end]) * vocab_size <= LOGITS_PER_BATCH:
            longest, end = max(longest, lengths[end]), end + 1
        yield start, end
        start = end


def likelihood_accuracy(lm, tokenizer, pairs: list[dict]) -> dict:
    """The baseline that needs no training: rank each pair by how likely the causal LM (the SFT model) finds each
    answer (`response_loglik`). Same keys as `pairwise_accuracy`; the margins are in nats."""
    def loglik(side):
        return response_loglik(lm, tokenizer, [p["prompt"] for p in pairs], [p[side] for p in pairs],
                               [p.get(f"{side}_ended", True) for p in pairs])
    return _ranking(pairs, loglik("chosen"), loglik("rejected"))


# ------------------------------------------------------------------ the saved, normalised reward model

class RewardModel:
    """A trained reward model on the normalised scale: `score` = (raw − mean) / std."""

    def __init__(self, model, tokenizer, mean: float = 0.0, std: float = 1.0):
        self.model, self.tokenizer, self.mean, self.std = model, tokenizer, mean, std

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> RewardModel:
        """The reward model saved at `path` with its normalisation, on `device` when given (else the CPU)."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise LabError("no reward model", path=str(path), fix="run `lab reward` first")
        check_model_folder(str(path), "reward")
        norm = {"mean": 0.0, "std": 1.0}
        if (path / NORM_FILE).exists():
            try:
                norm = ck.read_json(path / NORM_FILE)
                norm = {"mean": float(norm["mean"]), "std": float(norm["std"])}
                if not (math.isfinite(norm["mean"]) and math.isfinite(norm["std"]) and norm["std"] > 0):
                    raise ValueError  # a std of 0 divides by zero, a negative one turns every ranking round
            except (ValueError, KeyError, TypeError):
                raise LabError("not a normalisation (a JSON object with numbers \"mean\" and \"std\", std > 0)",
                               path=str(path / NORM_FILE), fix="train the reward model again (`lab reward`)") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32,
                                                                           use_safetensors=True)
        except (OSError, ValueError, SafetensorError) as err:
            raise load_error(str(path), err) from None
        model = model.to(device) if device is not None else model
        return cls(model.eval(), tokenizer, norm["mean"], norm["std"])

    def normalise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean) / self.std

    def score(self, prompts: list[str], responses: list[str], ended: list[bool] | None = None) -> torch.Tensor:
        """Normalised rewards of text responses (EOS appended to those that ended)."""
        ended = ended if ended is not None else [True] * len(prompts)
        tok = self.tokenizer
        pairs = prompt_response_ids(tok, prompts, responses)
        return self.score_tokens([p for p, _ in pairs], [r + ([tok.eos_token_id] if e else [])
                                                         for (_, r), e in zip(pairs, ended, strict=True)])

    def score_tokens(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> torch.Tensor:
        """Normalised rewards of token sequences: prompt (with BOS) + response (with EOS if it ended).
        PPO calls this on the tokens it sampled; override it to build a different (e.g. flawed) reward."""
        seqs = [p + r for p, r in zip(prompt_ids, response_ids, strict=True)]
        return self.normalise(raw_scores(self.model, self.tokenizer, seqs))

    def save(self, path: Path) -> None:
        """Weights (safetensors), tokenizer and normalisation, written to a temporary folder then renamed."""
        with ck.atomic_dir(path) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            ck.write_json(tmp / NORM_FILE, {"mean": self.mean, "std": self.std})


def fit_normalisation(model, tokenizer, samples: list[dict]) -> tuple[float, float]:
    """Mean and standard deviation of the raw scores over every sampled SFT answer."""
    seqs = [encode(tokenizer, s["prompt"], text, ended) for s in samples for text, ended in s["responses"]]
    raw = raw_scores(model, tokenizer, seqs)
    std = raw.std().item() if len(raw) > 1 else 1.0  # one sample has no spread: keep the raw unit
    return raw.mean().item(), max(std, 1e-6)
