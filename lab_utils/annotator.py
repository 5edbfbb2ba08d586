"""The simulated human of the `tiny` profile: a transparent rubric that labels pairs, rates and judges.

It prefers correct, complete, concise answers in the language of the question that end cleanly.
The rules are `RUBRIC` below (shown to learners as is); `judge` returns every term, `score` the total.

    >>> from lab_utils.world import build_world
    >>> from lab_utils import tasks
    >>> w = build_world(0)
    >>> rec = tasks.eval_records(w, 1)[0]                      # an English capital question, terse style
    >>> compare(w, rec, rec["output"], "I do not know.")
    'A'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from . import graders, tasks
from .world import World, is_chinese

RUBRIC = """\
The simulated annotator scores a response from 0 to 1. Its terms, most important first:
  1. correct   (weight 8) the task's checker accepts it: right, complete, and naming nothing wrong
  2. language  (weight 4) it is written in the language of the question
  3. ended     (weight 2) it ends cleanly with EOS instead of being cut off
  4. concise   (weight 1) 1 within the length budget (2 x the gold answer + 40 characters, a Chinese
                          character counts 2), then budget / length: padding costs a little
Each weight beats the sum of those below it: a correct answer always beats a wrong one, whatever its style.
An empty response, or one that repeats a phrase 3+ times in a row (a model looping), scores 0.
A term it cannot judge (no checker for a free-form prompt) is left out and the rest rescaled to 0..1.
compare(a, b): "both_bad" when neither is acceptable (wrong, empty or looping), "tie" when the scores
  differ by at most 0.001, else "A" or "B".
rate (1-5): 1 wrong, empty or looping; 2 correct but in the wrong language; 3 correct but cut off;
  4 correct but wordy; 5 correct, right language, ended and concise.
The checkers grade the content, the language term the language: "The capital of France is 巴黎." to
  "法国的首都是哪里？" names the right city (correct) in the wrong language (rated 2); "Beijing." to "中国的首都是哪里？"
  names no capital the question's checker knows in Chinese, so it is wrong."""

WEIGHTS = {"correct": 8, "language": 4, "ended": 2, "concise": 1}
BUDGET_SCALE, BUDGET_SLACK = 2, 40  # budget = 2 x width of the gold answer + 40
FREE_FORM_BUDGET = 200  # width allowed when there is no gold answer to measure against
TIE_EPS = 0.001
VERDICTS = ("A", "B", "tie", "both_bad")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_TOKEN = re.compile(r"[\u4e00-\u9fff]|[^\W_\u4e00-\u9fff]+")  # a Chinese character or a word; no punctuation


# ------------------------------------------------------------------ rubric terms

def _width(text: str) -> int:
    """Length in characters, a Chinese character counting 2 (it carries about as much as two letters)."""
    return len(text) + len(_CJK.findall(text))


def _answer_text(answer) -> str:
    """The gold answer as text: a city, a label, names, the sum, the SQL, the fruit/vegetable lists."""
    if isinstance(answer, dict):
        return "\n".join(_answer_text(v) for v in answer.values())
    if isinstance(answer, (list, tuple)):
        return ", ".join(map(str, answer))
    return str(answer)


def length_budget(rec: dict | None) -> int:
    """Width a response may take before the concise term starts to fall."""
    rec = rec or {}
    gold = rec.get("answer") if rec.get("answer") is not None else rec.get("output")  # task, else user record
    if not gold:
        return FREE_FORM_BUDGET
    return BUDGET_SCALE * _width(_answer_text(gold)) + BUDGET_SLACK


def is_degenerate(text: str, min_chars: int = 2, max_n: int = 10) -> bool:
    """True when a phrase of 1..max_n words (Chinese: characters) repeats 3+ times in a row, punctuation
    ignored so that a loop cut off mid-phrase still counts. Phrases under `min_chars` ("哈哈哈") do not.

    >>> [is_degenerate(t) for t in ("Paris. Paris. Paris", "巴黎。巴黎。巴黎。", "Paris, Paris.")]
    [True, True, False]
    """
    toks = _TOKEN.findall(text)
    for n in range(1, min(max_n, len(toks) // 3) + 1):
        for i in range(len(toks) - 3 * n + 1):
            unit = toks[i:i + n]
            if unit == toks[i + n:i + 2 * n] == toks[i + 2 * n:i + 3 * n] and len("".join(unit)) >= min_chars:
                return True
    return False


def _correct(w: World, rec: dict | None, response: str) -> bool | None:
    if rec is None or rec.get("task") not in tasks.TASKS:
        return None  # free-form prompt (arena, user data): nothing to grade against
    return graders.check(w, rec, response)


def _language(rec: dict | None, response: str) -> bool | None:
    if rec is None:
        return None
    lang = rec.get("lang") or ("zh" if is_chinese(rec.get("instruction", "")) else "en")
    return graders.language_matches({"task": rec.get("task"), "lang": lang}, response)


# ------------------------------------------------------------------ judge, score, rate, compare

def judge(w: World, rec: dict | None, response: str, ended: bool = True) -> dict:
    """Every rubric term of one response, plus `bad` (unacceptable) and the total `score` in [0, 1].

    `rec` is a task record (`tasks.eval_records`, `tasks.make_capital`, ...), an Alpaca record from the
    user, or None for a free-form prompt. `ended`: the response ended with EOS (not cut off by the limit).
    """
    empty, degenerate = not response.strip(), is_degenerate(response)
    terms = {"correct": _correct(w, rec, response), "language": _language(rec, response), "ended": bool(ended),
             "concise": min(1.0, length_budget(rec) / max(1, _width(response.strip())))}
    known = {k: v for k, v in terms.items() if v is not None}
    total = sum(WEIGHTS[k] * float(v) for k, v in known.items()) / sum(WEIGHTS[k] for k in known)
    failed = empty or degenerate
    return terms | {"empty": empty, "degenerate": degenerate, "bad": failed or terms["correct"] is False,
                    "score": 0.0 if failed else round(total, 6)}


def score(w: World, rec: dict | None, response: str, ended: bool = True) -> float:
    """The rubric total in [0, 1]; see `RUBRIC`."""
    return judge(w, rec, response, ended)["score"]


def rate(w: World, rec: dict | None, response: str, ended: bool = True) -> int:
    """A 1-5 rating: 5 correct, right language, ended and concise; 1 wrong, empty or looping."""
    j = judge(w, rec, response, ended)
    if j["bad"]:
        return 1
    if j["language"] is False:
        return 2
    if not j["ended"]:
        return 3
    return 5 if j["concise"] >= 1.0 else 4


def compare(w: World, rec: dict | None, a: str, b: str, a_ended: bool = True, b_ended: bool = True) -> str:
    """Which response the annotator prefers: "A", "B", "tie" or "both_bad" (checked first)."""
    ja, jb = judge(w, rec, a, a_ended), judge(w, rec, b, b_ended)
    if ja["bad"] and jb["bad"]:
        return "both_bad"
    if abs(ja["score"] - jb["score"]) <= TIE_EPS:
        return "tie"
    return "A" if ja["score"] > jb["score"] else "B"


def win_rate(w: World, recs: Sequence[dict | None], responses_a: Sequence[str], responses_b: Sequence[str],
             ended_a: Sequence[bool] | None = None, ended_b: Sequence[bool] | None = None) -> dict:
    """Head-to-head of model A against model B on the same prompts.

    `win_rate` = wins / (wins + losses): ties and both-bad pairs are left out; None when no pair is decisive.
    `per_task`: the same for each task's prompts (free-form prompts under "free"), and `task_mean` their mean over
    the tasks with a decisive pair — every task counting the same, as in `evaluate.evaluate_tasks`.
    """
    n = len(recs)
    ended_a, ended_b = ended_a or [True] * n, ended_b or [True] * n
    counts, per_task = dict.fromkeys(VERDICTS, 0), {}
    for rec, a, b, ea, eb in zip(recs, responses_a, responses_b, ended_a, ended_b, strict=True):
        verdict = compare(w, rec, a, b, ea, eb)
        counts[verdict] += 1
        per_task.setdefault((rec or {}).get("task") or "free", []).append(verdict)
    rate = lambda wins, losses: round(wins / (wins + losses), 4) if wins + losses else None  # noqa: E731
    by_task = {t: rate(v.count("A"), v.count("B")) for t, v in per_task.items()}
    decided = [r for r in by_task.values() if r is not None]
    return {"wins": counts["A"], "losses": counts["B"], "ties": counts["tie"], "both_bad": counts["both_bad"],
            "n": n, "win_rate": rate(counts["A"], counts["B"]), "per_task": by_task,
            "task_mean": round(sum(decided) / len(decided), 4) if decided else None}
