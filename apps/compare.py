"""Compare app: one prompt, every checkpoint of a run answering side by side as the tokens come.

    lab app compare [--profile tiny] [--host 127.0.0.1] [--port 7860] [--auth user:pass] [--share]

The base model continues the raw text; SFT and RLHF get the Alpaca prompt they were tuned on (tick "show
the exact prompt" to see it). Once stage 3 has run, the reward model's score appears under each finished
answer. Temperature 0 is greedy decoding. For scripts, the `compare` endpoint returns every pane's final
answer and then a dict {model: {"answer", "ended", "tokens", "reward"}}:

    from gradio_client import Client
    Client("http://127.0.0.1:7860/").predict("What is the capital of France?", ["base", "sft"], 0.0, 1.0, 32,
                                              api_name="/compare")
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import gradio as gr

from apps.common import browser_error, checked_prompt, launch, loaded, started, unlocked_after
from lab_utils import serving
from lab_utils.errors import LabError

DEFAULTS = ("base", "sft", "rlhf")  # ticked at start; any other finished model can be ticked by hand


def compare(models: serving.Models, text: str, names: list[str], temperature: float, top_p: float,
            max_new_tokens: int):
    """Stream every chosen model's answer: yields (one text per pane, ..., results); results is None until
    all have finished, then {model: {"answer", "ended", "tokens", "reward"}} (reward None before stage 3)."""
    text = checked_prompt(text)
    temperature, top_p = _number("temperature", temperature, 0.0, 1.5), _number("top_p", top_p, 0.05, 1.0)
    max_new_tokens = int(_number("max_new_tokens", max_new_tokens, 1, serving.MAX_NEW_TOKENS))
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)
            and set(names) <= set(models.names)):
        raise gr.Error(f"pick one or more of: {', '.join(models.names)}", print_exception=False)
    chosen = [n for n in models.names if n in names]
    jobs = [(*loaded(models, n), serving.rendered_prompt(n, text)) for n in chosen]
    streams = dict(zip(chosen, started(jobs, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)))

    def panes() -> list[str]:
        return [streams[n].text if n in streams else "" for n in models.names]

    for _ in serving.interleave(list(streams.values())):
        yield *panes(), None
    results = {n: {"answer": s.text, "ended": s.ended, "tokens": s.new_tokens, "reward": None}
               for n, s in streams.items()}
    try:
        reward_model = models.reward_model()
    except LabError as err:  # the answers stand; each score line says why there is no reward
        reward_model = None
        for r in results.values():
            r["no_reward"] = f"the reward model did not load: {browser_error(err).message}"
    if reward_model is not None:
        scores = serving.reward_scores(reward_model, text, [s.text for s in streams.values()],
                                       [s.ended for s in streams.values()])
        for n, score in zip(streams, scores):
            results[n]["reward"] = score
            if score is None:
                results[n]["no_reward"] = "prompt and answer too long for the reward model to score"
    yield *panes(), results


def _number(name: str, value, lo: float, hi: float) -> float:
    """A sampling setting from the page or the API, where a client may send anything (NaN passes a slider's bounds)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float
        number = math.nan
    if isinstance(value, bool) or not lo <= number <= hi:  # NaN fails every comparison
        raise gr.Error(f"{name} must be a number from {lo:g} to {hi:g}, not {str(value)[:20]!r}", print_exception=False)
    return number


def score_line(name: str, results: dict | None) -> str:
    """The line under a pane: whether the answer ended at EOS, and its reward. `results` comes back from the browser
    (a hidden gr.JSON that any client may fill): a value `compare` could not have made gives no line."""
    r = results.get(name) if isinstance(results, dict) else None
    if not (isinstance(r, dict) and isinstance(r.get("ended"), bool)
            and (r.get("reward") is None or type(r["reward"]) in (int, float))
            and isinstance(r.get("no_reward", ""), str)):
        return ""
    end = "ended at EOS" if r["ended"] else "cut off at max new tokens"
    if r["reward"] is None:
        return f"{end} · {r.get('no_reward', 'no reward model yet')[:500]}"
    return f"{end} · reward **{r['reward']:+.2f}**"


def rendered_prompts(names: list[str], text: str, show: bool) -> list:
    """The exact text each pane's model is given, shown only while the box is ticked."""
    text = (text or "").strip()[:serving.MAX_PROMPT_CHARS]  # the page caps the box; a direct call is capped here
    return [gr.update(visible=show, value=serving.rendered_prompt(n, text)) for n in names]


def build(root: str | Path) -> gr.Blocks:
    """The compare app over the models of one run folder (only names from that folder are ever loaded)."""
    models = serving.Models(root)
    if not models.names:
        raise LabError("no finished model to compare", path=str(root), fix="run `lab run` (or `lab pretrain`) first")
    with gr.Blocks(title="LLM Training Lab: compare") as demo:
        gr.Markdown("## Compare the stages\nOne prompt, every checkpoint answering at once. The base model "
                    "continues your text; SFT and RLHF answer it as an instruction.")
        start = [n for n in models.names if n in DEFAULTS] or models.names[:1]
        picked = gr.CheckboxGroup(models.names, value=start, label="checkpoints")
        prompt = gr.Textbox(label="prompt", placeholder="What is the capital of France?", lines=2,
                            max_length=serving.MAX_PROMPT_CHARS)
        with gr.Row():
            go, stop = gr.Button("Generate", variant="primary"), gr.Button("Stop")
        with gr.Accordion("sampling", open=False):
            temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="top-p")
            max_new = gr.Slider(1, serving.MAX_NEW_TOKENS, value=64, step=1, label="max new tokens")
        show = gr.Checkbox(label="show the exact prompt each model is given")
        answers, scores, shown, panes = [], [], [], []
        with gr.Row():
            for name in models.names:
                with gr.Column(visible=name in start) as pane:  # a pane per ticked checkpoint only
                    answers.append(gr.Textbox(label=name, lines=6, interactive=False))
                    scores.append(gr.Markdown())
                    shown.append(gr.Textbox(label=f"{name}: rendered prompt", visible=False, interactive=False))
                panes.append(pane)
        results = gr.JSON(visible=False)
        picked.change(lambda chosen: [gr.update(visible=n in chosen) for n in models.names], picked, panes,
                      api_name="panes", api_visibility="private", queue=False)

        # while the models answer, the prompt cannot change under them; a new request first clears the last answers
        # (a refused prompt leaves none of them under it)
        inputs, frozen = [prompt, go], [gr.update(interactive=False)] * 2
        cleared = gr.on([go.click, prompt.submit], lambda: [*[""] * len(answers), None, *frozen], None,
                        [*answers, results, *inputs], api_name="clear", api_visibility="private", queue=False)
        # preprocess=False: a client's values reach `compare` as sent, and its checks name each bad one (Gradio's
        # own slider and checkbox handling failed first on a string or a null, with an error that says nothing)
        run = cleared.then(partial(compare, models), [prompt, picked, temperature, top_p, max_new],
                           [*answers, results], api_name="compare", preprocess=False)
        unlocked_after(run, inputs, "compare")
        # results is None while answers stream (the old lines clear) and filled once all have finished
        results.change(lambda r: [score_line(n, r) for n in models.names], results, scores,
                       api_name="scores", api_visibility="private", queue=False)
        stop.click(None, cancels=[run], api_name="stop")
        gr.on([show.change, prompt.change], partial(rendered_prompts, models.names), [prompt, show], shown,
              api_name="rendered_prompts", api_visibility="private", queue=False, trigger_mode="always_last")
    return demo


def main(root: str | Path, host: str = "127.0.0.1", port: int | None = None, auth: str | None = None,
         share: bool = False) -> None:
    launch(build(root), host, port, auth, share)
