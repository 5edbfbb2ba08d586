"""One evaluation harness for every model (base, SFT, RLHF): plain dicts in, plain dicts out.

- `fact_accuracy`: does the model *know* the world? Greedy completion of "The capital of X is".
- `evaluate_tasks`: does it *follow instructions*? Greedy answers to held-out Alpaca prompts of every
  task, graded by the task checkers, with accuracy on held-out entities and language match.
"""

from __future__ import annotations

from collections import defaultdict

from . import graders
from . import tasks as T
from .generation import alpaca_prompts, generate, generate_ended
from .world import World, fact_prompts


def fact_accuracy(model, tokenizer, world: World, max_new_tokens: int = 8, batch_size: int = 128) -> dict:
    """Share of capital facts completed correctly, overall and per language: the completion starts with the capital's
    whole name ("Tefaton." or "Tefaton, a city", not "Tefatonville")."""
    probes = fact_prompts(world)
    outs = generate(model, tokenizer, [p["prompt"] for p in probes], max_new_tokens=max_new_tokens,
                    batch_size=batch_size)
    ok = [_opens_with_name(o.strip(), p["answer"]) for p, o in zip(probes, outs)]
    by_lang = {lang: _mean([k for k, p in zip(ok, probes) if p["lang"] == lang]) for lang in ("en", "zh")}
    rows = [{"prompt": p["prompt"], "completion": o, "correct": k, "lang": p["lang"]}
            for p, o, k in zip(probes, outs, ok)]
    samples = [r for lang in ("en", "zh") for r in [r for r in rows if r["lang"] == lang][::max(1, len(rows) // 12)]]
    return {"fact_accuracy": _mean(ok), "fact_accuracy_en": by_lang["en"], "fact_accuracy_zh": by_lang["zh"],
            "samples": [{k: r[k] for k in ("prompt", "completion", "correct")} for r in samples]}


def _opens_with_name(completion: str, name: str) -> bool:
    """`completion` opens with the word `name`: what follows it is no letter or digit (of any script: "洛顿市" is
    another name than "洛顿")."""
    return completion.startswith(name) and not completion[len(name):len(name) + 1].isalnum()


def evaluate_tasks(model, tokenizer, world: World, records: list[dict], max_new_tokens: int = 64,
                   batch_size: int = 64, seen: set[tuple[str, str]] | None = None) -> dict:
    """Per-task and overall accuracy, held-out-entity accuracy and language match; with samples.

    `task_accuracy` is the mean of the per-task accuracies, each task counting the same: the evaluation set adds two
    capital questions per held-out country to the 24 prompts per task (88 of tiny's 208 prompts are capital
    questions), and a mean over prompts would mostly measure capitals. `language_match` is over the prompts whose
    answer has a language (every task but nl2sql); an empty answer is in no language. `heldout_entity_accuracy` is
    over the prompts that name an entity SFT never saw.

    `seen`: the `tasks.seen_keys` of every prompt a training stage used. The world's question spaces are small
    (a few hundred distinct SQL prompts, say), so some evaluation prompts also occur there word for word, and some
    sums were drilled with their operands swapped: they are counted (`n_seen_in_training`), and
    `task_accuracy_unseen` is the same mean over tasks on the others (`per_task_unseen`), or None when a task has
    no other prompt: a mean over fewer tasks would measure something else (on tiny's validation prompts every capital
    question and sum was seen, and the mean over the four other tasks read higher than `task_accuracy`).

    `off_task_rate`: the share of answers in the shape of another task's answer (`graders.off_task`, e.g. "The capital
    of X is Y." to a clustering question), overall and per task: what a policy that exploits its reward model writes,
    which the grader only counts as wrong."""
    outs = generate_ended(model, tokenizer, alpaca_prompts(records), max_new_tokens, batch_size=batch_size)
    return grade(world, records, [text for text, _ in outs], [ended for _, ended in outs], seen)


def grade(world: World, records: list[dict], responses: list[str], ended: list[bool],
          seen: set[tuple[str, str]] | None = None) -> dict:
    """What `evaluate_tasks` reports of answers to `records`: also for stored answers graded again, after the graders
    or the training stages' prompts (`seen`) changed."""
    graded = [(r, resp, graders.check(world, r, resp)) for r, resp in zip(records, responses, strict=True)]
    unseen = [(r, resp, ok) for r, resp, ok in graded if not T.seen_keys(r) & (seen or set())]
    heldout = [ok for r, _, ok in graded if r["heldout"]]
    per_task, per_task_unseen = _per_task(graded), _per_task(unseen)
    off_task = [(r, resp, graders.off_task(r, resp)) for r, resp, _ in graded]  # each answer's shape checked once
    language = [bool(resp.strip()) and graders.language_matches(r, resp)
                for r, resp, _ in graded if r["task"] != "nl2sql"]
    return {
        "task_accuracy": _mean(per_task.values()) if per_task else None,
        "per_task": per_task,
        "heldout_entity_accuracy": _mean(heldout) if heldout else None,
        "language_match": _mean(language) if language else None,
        "n_prompts": len(records),
        "n_seen_in_training": len(records) - len(unseen),
        "task_accuracy_unseen": _mean(per_task_unseen.values()) if per_task_unseen.keys() == per_task.keys() else None,
        "per_task_unseen": per_task_unseen,
        "off_task_rate": _mean(off for *_, off in off_task) if off_task else None,
        "off_task_per_task": _per_task(off_task),
        "samples": [{"task": r["task"], "lang": r["lang"], "instruction": r["instruction"], "input": r["input"],
                     "response": resp, "correct": ok} for r, resp, ok in graded[:: max(1, len(graded) // 16)]],
        "responses": responses, "ended": ended,  # every answer, for rewards and head-to-heads
    }


def _per_task(graded: list[tuple[dict, str, bool]]) -> dict[str, float]:
    """Accuracy of each task (in the order tasks first appear) over the graded (record, response, correct)."""
    per_task = defaultdict(list)
    for r, _, ok in graded:
        per_task[r["task"]].append(ok)
    return {t: _mean(v) for t, v in per_task.items()}


def _mean(xs) -> float:
    xs = list(xs)
    return round(sum(map(float, xs)) / len(xs), 4) if xs else 0.0


def plot_eval(results: dict[str, dict], ax=None):
    """One grouped bar chart: per-task accuracy for each model in `results` ({"base": {...}, ...})."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(9, 3.5))[1]
    names = list(results)
    keys = list(T.TASKS) + ["overall"]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        vals = [results[name]["per_task"].get(k, 0.0) for k in T.TASKS] + [results[name]["task_accuracy"]]
        ax.bar([j + i * width for j in range(len(keys))], vals, width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(keys))], keys)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend()
    return ax
