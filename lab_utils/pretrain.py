"""Stage 1: the tokenizer and causal-LM pretraining from scratch, under `accelerate`.

The loop, top to bottom:  # 1. batch  # 2. loss  # 3. step  # 4. evaluate  # 5. checkpoint
Batches are a pure function of (seed, step), so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, get_cosine_with_min_lr_schedule_with_warmup

from . import checkpoints as ck
from .config import PretrainConfig, TokenizerConfig, WorldConfig, build_world_from
from .data import load_texts
from .errors import LabError
from .modeling import build_model, count_params, fresh_accelerator, load_causal_lm, sync_device, use_bf16
from .runs import folder_stamp
from .tokenizer import chars_per_token, train_tokenizer
from .world import generate_corpus, is_chinese

def world_corpus(world_cfg: WorldConfig) -> tuple[list[str], list[str]]:
    """(train documents, validation documents) of the synthetic world.

    The generators repeat short documents word for word (an SQL intro, a fact), so of the first `val_docs` drawn,
    those that also occur among the training documents are left out: validation loss is measured on text the model
    never trained on (tiny: 563 of the 1,000 drawn are kept)."""
    world = build_world_from(world_cfg)
    docs = generate_corpus(world, world_cfg.n_docs + world_cfg.val_docs)
    train = docs[world_cfg.val_docs:]
    in_train = set(train)
    return train, [d for d in docs[:world_cfg.val_docs] if d not in in_train]


# ------------------------------------------------------------------ tokenizer stage

def build_tokenizer(tok_cfg: TokenizerConfig, world_cfg: WorldConfig, out_dir: Path) -> dict:
    """Train the BPE on the world corpus, or on `tok_cfg.data` (the user's text: the merges then fit the text the
    model will be pretrained on), save it atomically, and return its metrics. Compression is measured on documents
    the merges were not learned from: the world's validation documents, or the last 2% of the user's."""
    t0 = time.perf_counter()
    if tok_cfg.data:
        docs = load_texts(tok_cfg.data, tok_cfg.data_split)
        if len(docs) < 2:
            raise LabError("one document: nothing left for validation", path=tok_cfg.data,
                           fix="give at least two documents (lines of a .txt, records of a .jsonl)")
        n_val = max(1, len(docs) // 50)  # the documents pretraining holds out come first among its validation ones
        train_docs, val_docs = docs[:-n_val], docs[-n_val:]
    else:
        train_docs, val_docs = world_corpus(world_cfg)
    tokenizer = train_tokenizer(train_docs[: tok_cfg.tokenizer_docs], tok_cfg.vocab_size)
    metrics = {"vocab_size": len(tokenizer)}
    for lang, chinese in (("en", False), ("zh", True)):  # None when the held-out text has no such document
        docs = [d for d in val_docs if is_chinese(d) == chinese]
        metrics[f"chars_per_token_{lang}"] = round(chars_per_token(tokenizer, docs), 3) if docs else None
    metrics["wall_s"] = round(time.perf_counter() - t0, 2)
    with ck.atomic_dir(out_dir) as tmp:
        tokenizer.save_pretrained(tmp)
        ck.write_json(tmp / "metrics.json", metrics)
    return metrics


# ------------------------------------------------------------------ data

def pack(tokenizer, docs: list[str], seq_len: int, source: str = "the corpus") -> torch.Tensor:
    """Concatenate BOS + doc + EOS for every doc and cut into rows of `seq_len` tokens: (N, T)."""
    return _pack_ids(_doc_ids(tokenizer, docs), seq_len, source)


_CHUNK_CHARS = 1_000_000  # text tokenised at a time: the tokenizer's encodings (~100 bytes a token) of a chunk only


def _doc_ids(tokenizer, docs: list[str]) -> list[np.ndarray]:
    """Each document's token ids, BOS + doc + EOS, as an int32 array: a Python list of every id would take ~36 bytes a
    token (gigabytes for wikitext-103's ~120M, profile `full`), an array takes 4."""
    out, start = [], 0
    while start < len(docs):
        end, chars = start, 0
        while end < len(docs) and (end == start or chars + len(docs[end]) <= _CHUNK_CHARS):
            chars += len(docs[end])
            end += 1
        # BOS comes from the post-processor; text that spells "<|eos|>" is text (split_special_tokens), not the control
        # token, which would teach the model to end mid-document
        ids = tokenizer(docs[start:end], add_special_tokens=True, split_special_tokens=True,
                        return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        out.extend(np.array(row + [tokenizer.eos_token_id], dtype=np.int32) for row in ids)
        start = end
    return out


def _pack_ids(doc_ids: list[np.ndarray], seq_len: int, source: str) -> torch.Tensor:
    flat = np.concatenate(doc_ids) if doc_ids else np.zeros(0, dtype=np.int32)
    n = len(flat) // seq_len
    if n == 0:
        raise LabError(f"only {len(flat)} tokens, fewer than one sequence of {seq_len}", path=source,
                       fix="give more text, or lower --seq_len")
    return torch.from_numpy(flat[: n * seq_len].astype(np.int64)).view(n, seq_len)


def batch_indices(n_rows: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Row indices of global batch `step`: epoch e shuffles with seed (seed, e) — no hidden state."""
    per_epoch = n_rows // batch_size
    if per_epoch == 0:
        raise LabError(f"{n_rows} training sequences cannot fill one batch of {batch_size}",
                       fix="give more text, or lower --batch_size")
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[k * batch_size:(k + 1) * batch_size]


def training_rows(cfg: PretrainConfig, tokenizer, world_cfg: WorldConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, validation rows): the world's own split, or the user's text split by whole documents: the last
    2% of the documents (more, until they fill one row of `seq_len` tokens) are validation, packed apart, so that no
    validation row holds text of a training document."""
    if not cfg.data:
        train_docs, val_docs = world_corpus(world_cfg)
        return pack(tokenizer, train_docs, cfg.seq_len), pack(tokenizer, val_docs, cfg.seq_len)
    docs = load_texts(cfg.data, cfg.data_split)
    if len(docs) < 2:
        raise LabError("one document: nothing left for validation", path=cfg.data,
                       fix="give at least two documents (lines of a .txt, records of a .jsonl)")
    ids = _doc_ids(tokenizer, docs)

    def enough(n_val: int) -> bool:
        return sum(map(len, _unseen(docs, ids, n_val))) >= cfg.seq_len
    # the fewest last documents whose unseen ones fill a row: the unseen tokens only grow with n_val (the validation
    # documents gain one, the training ones lose it), so a binary search finds it (a loop adding one document at a time
    # took minutes on a file of repeated lines)
    lo, hi = max(1, len(docs) // 50), len(docs) - 1
    if not enough(lo):
        if not enough(hi) and len(set(docs)) < len(docs):  # (without repeats: too little text, which packing says)
            distinct = sum(len(row) for row in dict(zip(docs, ids)).values())
            raise LabError(f"no {cfg.seq_len} tokens of text apart from the training documents for validation: the "
                           f"file's {len(docs)} documents hold {len(set(docs))} distinct ones, {distinct} tokens in "
                           "all", path=cfg.data, fix="give more text, in distinct documents (lines of a .txt, records "
                                                     "of a .jsonl), or lower --seq_len")
        while hi - lo > 1:  # not enough(lo); enough(hi), or hi is every document but one
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if enough(mid) else (mid, hi)
        lo = hi
    n_val = lo
    return (_pack_ids(ids[:-n_val], cfg.seq_len, f"{cfg.data} (training documents)"),
            _pack_ids(_unseen(docs, ids, n_val), cfg.seq_len,
                      f"{cfg.data} (the last {n_val} documents that are not also training documents, for validation)"))


def _unseen(docs: list[str], ids: list[np.ndarray], n_val: int) -> list[np.ndarray]:
    """The token ids of the last `n_val` documents, less those that are also training documents (a corpus can repeat
    a document, and its validation loss would then be measured on text it trained on), as the world's split does, and
    each distinct document once (a footer repeated on every page would otherwise be most of the validation loss)."""
    train, kept = set(docs[:-n_val]), {}
    for doc, row in zip(docs[-n_val:], ids[-n_val:]):
        if doc not in train:
            kept.setdefault(doc, row)
    return list(kept.values())


@torch.no_grad()
def eval_loss(model, rows: torch.Tensor, batch_size: int, n_batches: int, accelerator) -> float:
    """Mean causal-LM loss over the rows of the first `n_batches` batches of `rows` (a short last batch counts by
    its rows)."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, min(len(rows), batch_size * n_batches), batch_size):
        x = rows[i:i + batch_size].to(accelerator.device)
        with accelerator.autocast():
            total += model(input_ids=x, labels=x).loss.float().item() * len(x)
        n += len(x)
    model.train()
    return total / n


# ------------------------------------------------------------------ training

RESUMABLE_CHANGES = ("eval_every", "save_every", "eval_batches")  # settings a resumed run may change


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's whole definition (vocabulary, merges, special tokens): a checkpoint's weights mean
    something only with the token ids they were trained on."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _training_changes(cfg: PretrainConfig, state: dict, tokenizer_sha: str, data_sha: str | None,
                      strict: bool, model_stamp: str | None = None) -> list[str]:
    """What differs between this run and the checkpoint's run: settings that change what is trained (lr, data, seed,
    max_steps, ...; the optimizer and the schedule restore the checkpoint's, so a new value would be ignored, or
    recorded without being used), the tokenizer (trained again since, the same token ids mean other text), and the
    --model folder the run started from (`runs.folder_stamp`: replaced or retrained since).
    A checkpoint from before runs recorded these is taken as the same when asked for explicitly (--resume), and as
    different when `strict` (`lab run` resumes only what it can check)."""
    recorded = state.get("config")
    if recorded is not None:
        recorded = ck.data_as_named_now(recorded, state.get("data_sha256"), data_sha, cfg.data)
    changed = ck.resume_changes(recorded, cfg.to_dict(), RESUMABLE_CHANGES) if recorded is not None else []
    if "tokenizer_sha256" in state and state["tokenizer_sha256"] != tokenizer_sha:
        changed.append("the tokenizer (trained again since)")
    if state.get("data_sha256") and state["data_sha256"] != data_sha:
        changed.append(f"the contents of --data {cfg.data}")
    if state.get("model_stamp") and (recorded or {}).get("model") == cfg.model and state["model_stamp"] != model_stamp:
        changed.append(f"the --model folder {cfg.model} (changed since)")
    if strict and (recorded is None or "tokenizer_sha256" not in state):
        changed.append("settings or tokenizer not recorded (an older checkpoint)")
    return changed


def _make_optimizer(model, cfg: PretrainConfig):
    """AdamW with weight decay on the matrices only (not on norms and biases), and its warmup + cosine schedule."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
    return optimizer, get_cosine_with_min_lr_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.max_steps,
                                                                  min_lr_rate=cfg.min_lr_ratio)


def _model_and_rows(cfg: PretrainConfig, tokenizer_dir: Path, world_cfg: WorldConfig):
    """The model to train (a fresh Llama, or `--model`'s weights with its own tokenizer), its tokenizer, and the
    training and validation rows, (N, T) each."""
    if cfg.model:
        model, tokenizer = load_causal_lm(cfg.model)
        positions = getattr(model.config, "max_position_embeddings", None)  # GPT-2's n_positions goes by it too
        if positions is not None and cfg.seq_len > positions:  # learned positions: an index error at the first step
            raise LabError(f"--seq_len {cfg.seq_len} is longer than the model's context ({positions} positions)",
                           path=cfg.model, fix=f"give a --seq_len of at most {positions}")
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        model = build_model(cfg, tokenizer, seed=cfg.seed)
    train_rows, val_rows = training_rows(cfg, tokenizer, world_cfg)
    if len(train_rows) < cfg.batch_size:
        raise LabError(f"{len(train_rows)} training sequences cannot fill one batch of {cfg.batch_size}",
                       path=cfg.data or "the world corpus", fix="give more text, or lower --batch_size")
    return model, tokenizer, train_rows, val_rows


def _check_finite(loss: torch.Tensor, step: int, cfg: PretrainConfig, accelerator) -> None:
    """Stop at the first NaN or infinite loss of any process: every later step and stage would build on NaN weights
    (all processes check the same gathered numbers, so all stop together)."""
    if not torch.isfinite(accelerator.gather(loss.detach().reshape(1))).all():
        raise LabError(f"the training loss is {loss.item()} at step {step + 1}: the run diverged",
                       fix=f"lower --lr (now {cfg.lr:g}) or raise --warmup_steps, then start again")


def _resume_point(cfg: PretrainConfig, resume: bool | str, ckpt_root: Path, fingerprints: dict, model, optimizer,
                  scheduler, say, scaler=None) -> tuple[int, dict]:
    """The step to start at and the history so far: 0 and an empty one, or the last checkpoint's, loaded into
    `model`, `optimizer` and `scheduler`. A checkpoint trained with other settings is an error for `resume=True`
    and a fresh start for "auto"."""
    history = {"step": [], "train_loss": [], "lr": [], "eval_step": [], "val_loss": []}
    last = ck.latest_checkpoint(ckpt_root) if resume else None
    if last is None:
        if resume is True:
            say(f"[lab] pretrain: no checkpoint in {ckpt_root} to resume from: starting at step 0")
        return 0, history
    changed = _training_changes(cfg, ck.read_json(last / "state.json"), fingerprints["tokenizer_sha256"],
                                fingerprints["data_sha256"], strict=resume == "auto",
                                model_stamp=fingerprints["model_stamp"])
    if changed:
        if resume != "auto":
            raise LabError(f"the checkpoint was trained with other settings ({', '.join(changed)})", path=str(last),
                           fix="resume with the checkpoint's settings, or start again without --resume")
        say(f"[lab] pretrain: {last} was trained with other settings ({', '.join(changed)}): starting afresh")
        return 0, history
    with ck.readable_checkpoint(last):
        saved = type(model).from_pretrained(last, use_safetensors=True)
    model.load_state_dict(saved.state_dict())
    state = ck.load_training_state(last, optimizer, scheduler, scaler)
    say(f"[lab] pretrain: resuming from {last} (step {state['step']})")
    return state["step"], state["history"]


def _save_base(model, tokenizer, out_dir: Path, lab_config: dict) -> None:
    """The trained model, its tokenizer and the settings it was made with, as one folder (written whole or not at
    all)."""
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with ck.atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        ck.write_json(tmp / "lab_config.json", lab_config)


def training_precision(requested: str) -> str:
    """The precision pretraining runs in: float32 ("no") where bf16 was asked for and this machine's bf16 is slow
    (`use_bf16`, which warns); `lab bench` times the same."""
    return "no" if requested == "bf16" and not use_bf16(True) else requested


def pretrain(cfg: PretrainConfig, tokenizer_dir: Path, out_dir: Path, world_cfg: WorldConfig,
             resume: bool | str = False, stop_at: int | None = None, progress: bool = True) -> dict:
    """Train the base model; save it to `out_dir` and return the metrics (loss curve included).

    `resume`: True continues from the last checkpoint (one clear error if it was trained with other settings or
    another tokenizer); "auto" (`lab run`) continues from it only when it was trained with the same ones, and starts
    afresh otherwise. A fresh run removes an earlier run's checkpoints when it saves its first own one, so an
    interrupted fresh run leaves the earlier ones to resume.
    `stop_at` ends the loop early without the final save: it simulates an interrupted run.
    """
    t0 = time.perf_counter()
    accelerator = fresh_accelerator(mixed_precision=training_precision(cfg.mixed_precision),
                                    cpu=not torch.cuda.is_available())
    model, tokenizer, train_rows, val_rows = _model_and_rows(cfg, tokenizer_dir, world_cfg)
    optimizer, scheduler = _make_optimizer(model, cfg)
    ckpt_root = out_dir.parent / f"{out_dir.name}-checkpoints"
    fingerprints = {"tokenizer_sha256": tokenizer_fingerprint(tokenizer), "data_sha256": ck.file_sha256(cfg.data),
                    "model_stamp": folder_stamp(cfg.model)}  # None for a fresh Llama or a hub id
    say = print if accelerator.is_main_process else (lambda *_: None)  # one line per run, not per process
    start, history = _resume_point(cfg, resume, ckpt_root, fingerprints, model, optimizer, scheduler, say,
                                   accelerator.scaler)
    clear_earlier = start == 0  # a fresh run: an earlier run's checkpoints go when this run saves its first one
    # The scheduler stays ours: each process takes its share of one global batch per step (below), and accelerate's
    # scheduler wrapper would step the schedule once per process, finishing warmup and decay N times too early.
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    n_proc, rank = accelerator.num_processes, accelerator.process_index
    train_time, bar = 0.0, tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps,
                                desc="pretrain", disable=not progress or not accelerator.is_main_process,
                                mininterval=3)  # in a notebook each redraw is a stored output
    for step in bar:
        if stop_at is not None and step >= stop_at:
            break
        ts = time.perf_counter()
        # 1. batch: this process's share of global batch `step`, (B / n_proc, T)
        idx = batch_indices(len(train_rows), cfg.batch_size, step, cfg.seed)[rank::n_proc]
        x = train_rows[idx].to(accelerator.device)
        # 2. loss: next-token cross-entropy (labels are shifted inside the model)
        with accelerator.autocast():
            loss = model(input_ids=x, labels=x).loss
        # 3. step
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = scheduler.get_last_lr()[0]  # the rate this step trains with (0 at the first: warmup starts from 0)
        optimizer.step()
        if not optimizer.step_was_skipped:  # fp16 skips a step whose gradients overflowed: the schedule waits too
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        sync_device(accelerator.device)  # tokens_per_s counts a GPU step's kernels done
        train_time += time.perf_counter() - ts
        _check_finite(loss, step, cfg, accelerator)
        history["step"].append(step + 1)
        history["train_loss"].append(round(loss.item(), 4))
        history["lr"].append(lr)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)  # shown at the next redraw (mininterval)
        # 4. evaluate
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.max_steps:
            history["eval_step"].append(step + 1)
            history["val_loss"].append(round(eval_loss(model, val_rows, cfg.batch_size, cfg.eval_batches,
                                                       accelerator), 4))
        # 5. checkpoint (weights, optimizer, scheduler, RNG) every save_every steps
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.max_steps and \
                accelerator.is_main_process:
            if clear_earlier:  # never resume an earlier run's later step into this one
                shutil.rmtree(ckpt_root, ignore_errors=True)
                clear_earlier = False
            ck.save_training_state(ckpt_root, step + 1, accelerator.unwrap_model(model), optimizer, scheduler,
                                   {"history": history, "config": cfg.to_dict(), **fingerprints}, accelerator.scaler)
            ck.prune_checkpoints(ckpt_root)
    bar.close()
    model = accelerator.unwrap_model(model)
    if stop_at is not None and stop_at < cfg.max_steps:
        return {"interrupted_at": stop_at, "history": history}
    steps_run = cfg.max_steps - start
    metrics = {"params": count_params(model), "train_tokens": cfg.max_steps * cfg.batch_size * cfg.seq_len,
               "val_loss": history["val_loss"][-1], "initial_loss": history["train_loss"][0],
               "tokens_per_s": round(steps_run * cfg.batch_size * cfg.seq_len / max(train_time, 1e-9), 1),
               "steps": cfg.max_steps, "resumed_from": start, "history": history}
    if accelerator.is_main_process:
        if clear_earlier:  # a fresh run that saved no checkpoint of its own: none of an earlier run may outlive it
            shutil.rmtree(ckpt_root, ignore_errors=True)
        _save_base(model, tokenizer, out_dir, {"pretrain": cfg.to_dict(), "world": world_cfg.to_dict()})
    accelerator.wait_for_everyone()  # no process goes on (to probe or load the model) before it is saved
    metrics["wall_s"] = round(time.perf_counter() - t0, 2)
    return metrics


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy): the number of tokens the model is, on average, choosing between."""
    return math.exp(loss)
