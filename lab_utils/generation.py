"""Greedy and sampled generation for every stage, on top of `model.generate`.

Prompts are left-padded (so every row's last prompt token sits at the same position) and generation
stops at EOS. `generate` returns the response text only, cut at the first EOS.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .tokenizer import render_alpaca


def spare_ids(model, tokenizer) -> list[int]:
    """Ids the model can output that its tokenizer has no token for. Hub models round their embeddings up to a
    GPU-friendly size (Qwen2.5: 151,936 rows for 151,665 tokens); sampled, such an id decodes to nothing, and a
    reward model built on the same base scores a row that never trained. None on the lab's own models, whose rows
    are their tokenizer's tokens."""
    head = model.get_output_embeddings()
    rows = head.weight.shape[0] if head is not None else model.config.vocab_size
    return list(range(len(tokenizer), rows))


def unsampled_ids(model, tokenizer) -> list[int]:
    """What no sampler here draws from a model with `spare_ids`: those, and PAD, which sits on what was a spare row
    when the lab gave the tokenizer one (Qwen2.5's PAD is its EOS, so `load_causal_lm` adds "<|pad|>" at 151,665).
    Nothing on a model without spare rows: the lab's own models sample as they always have."""
    spare = spare_ids(model, tokenizer)
    pad = tokenizer.pad_token_id
    return ([pad] if spare and pad is not None and pad != tokenizer.eos_token_id else []) + spare


def without_unsampled_ids(model, tokenizer) -> dict:
    """`model.generate`'s keyword that keeps it off `unsampled_ids` (none when there are none)."""
    ids = unsampled_ids(model, tokenizer)
    return {"suppress_tokens": ids} if ids else {}


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, batch_size: int = 64,
             seed: int | None = None) -> list[str]:
    """Responses to raw `prompts` (BOS is added by the tokenizer). Greedy unless `do_sample`."""
    return [text for text, _ in generate_ended(model, tokenizer, prompts, max_new_tokens, do_sample, temperature,
                                               top_p, top_k, batch_size, seed)]


@torch.no_grad()
def generate_ended(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, do_sample: bool = False,
                   temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, batch_size: int = 64,
                   seed: int | None = None, desc: str = "") -> list[tuple[str, bool]]:
    """(response, ended) per prompt: `ended` is False when the response hit `max_new_tokens` without EOS. A `desc`
    draws a progress bar with that description, one step per answer."""
    if seed is not None:
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    out: list[tuple[str, bool]] = []
    spare = without_unsampled_ids(model, tokenizer)
    bar = tqdm(total=len(prompts), desc=desc, unit="answer", disable=not desc)
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True, padding_side="left")
            enc = {k: v.to(model.device) for k, v in enc.items()}
            sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k) if do_sample \
                else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
            seqs = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id, **sampling, **spare)
            new = seqs[:, enc["input_ids"].shape[1]:]  # (B, new tokens)
            out += [(tokenizer.decode(cut_at_eos(row, tokenizer.eos_token_id), skip_special_tokens=True),
                     bool((row == tokenizer.eos_token_id).any())) for row in new]
            bar.update(len(new))
    finally:  # an interrupted call (Ctrl-C in a notebook) leaves the model in the mode it was in
        model.train(was_training)
        bar.close()
    return out


def cut_at_eos(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Tokens before the first EOS (all of them when there is none)."""
    hits = (ids == eos_id).nonzero()
    return ids[: hits[0, 0]] if len(hits) else ids


def alpaca_prompts(records: list[dict]) -> list[str]:
    return [render_alpaca(r["instruction"], r.get("input", "")) for r in records]


def respond(model, tokenizer, records: list[dict], **kw) -> list[str]:
    """Responses to Alpaca records rendered with the Alpaca prompt."""
    return generate(model, tokenizer, alpaca_prompts(records), **kw)
