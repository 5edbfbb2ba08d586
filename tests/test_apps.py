"""The compare and arena apps: their handlers called directly, then the launched apps driven by `gradio_client`
(streaming order, battle -> vote -> row in the database, export round-trip, 8 clients voting at once).

The models are the micro run's base and SFT: their answers are nonsense, but every contract holds for them."""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: tests never phone home

import itertools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import types  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client  # noqa: E402

from apps import arena, common, compare  # noqa: E402
from lab_utils import checkpoints as ck  # noqa: E402
from lab_utils import cli, modeling, serving, tasks, votes  # noqa: E402
from lab_utils.errors import LabError  # noqa: E402
from lab_utils.generation import generate_ended  # noqa: E402
from lab_utils.preferences import load_pairs  # noqa: E402
from lab_utils.tokenizer import render_alpaca  # noqa: E402

from conftest import before_eos, with_spare_rows  # noqa: E402

QUESTION = "What is the capital of Sweden?"  # asked by no evaluation prompt of any profile: the arena takes it


@pytest.fixture(scope="module")
def app_root(sft_root, tmp_path_factory) -> Path:
    """base and sft of the micro run, and an untrained reward model (a fresh score head on the SFT model): its
    scores mean nothing, but they must appear where they belong. No rlhf: the apps offer what exists."""
    from transformers import AutoTokenizer

    from lab_utils.reward import RewardModel, load_score_model

    root = tmp_path_factory.mktemp("app_run")
    for folder in ("base", "sft"):
        shutil.copytree(sft_root / folder, root / folder)
    tok = AutoTokenizer.from_pretrained(root / "sft")
    RewardModel(load_score_model(root / "sft", tok.pad_token_id).eval(), tok).save(root / "reward")
    ck.write_json(root / "reward" / "metrics.json", {"stage": "reward"})  # a finished stage, as the apps require
    return root


@pytest.fixture(scope="module")
def models(app_root) -> serving.Models:
    return serving.Models(app_root)


def run_folder(app_root: Path, tmp_path: Path) -> Path:
    """A run folder of its own (own votes.db) whose models link to app_root's."""
    root = tmp_path / "run"
    root.mkdir()
    for folder in ("base", "sft", "reward"):
        (root / folder).symlink_to(app_root / folder)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(demo: gr.Blocks, **kw) -> str:
    _, url, _ = common.launch(demo, port=free_port(), block=False, **kw)
    return url


def public_endpoints(client: Client) -> set[str]:
    return set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


def greedy(models: serving.Models, name: str, text: str, max_new_tokens: int) -> tuple[str, bool]:
    model, tok = models.get(name)
    return generate_ended(model, tok, [serving.rendered_prompt(name, text)], max_new_tokens)[0]


class FakeStream:
    """What `interleave` needs of a stream: iteration over pieces, and stop(); `ended` as the arena reads it."""

    def __init__(self, pieces: list[str], ended: bool = False):
        self.pieces, self.text, self.stopped, self.ended = pieces, "", False, ended

    def __iter__(self):
        for p in self.pieces:
            self.text += p
            yield p

    def stop(self):
        self.stopped = True


# ------------------------------------------------------------------ lab_utils.serving

def test_the_apps_offer_the_finished_causal_lms_of_the_run(app_root, tmp_path):
    assert serving.available_models(app_root) == ["base", "sft"]  # no rlhf yet; the reward model is no LM
    config = (app_root / "sft" / "config.json").read_text()
    for folder in ("rlhf-nokl", "rlhf", ".tmp-rlhf-123", "sft", "base"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.json").write_text(config)
    shutil.copytree(app_root / "reward", tmp_path / "reward")
    for folder in ("sft", "base"):
        (tmp_path / folder / "metrics.json").write_text("{}")
    assert serving.available_models(tmp_path) == ["base", "sft", "rlhf-nokl"]  # PPO did not finish: no rlhf yet
    (tmp_path / "rlhf" / "metrics.json").write_text("{}")
    assert serving.available_models(tmp_path) == ["base", "sft", "rlhf", "rlhf-nokl"]
    assert serving.available_models(tmp_path / "missing") == []
    for broken, text in (("notes", "{oops"), ("listed", "[1, 2]")):  # a folder that is no model: skipped, said
        (tmp_path / broken).mkdir()
        (tmp_path / broken / "config.json").write_text(text)
    with pytest.warns(UserWarning, match="is not a model's config") as warned:
        assert serving.available_models(tmp_path) == ["base", "sft", "rlhf", "rlhf-nokl"]
    assert len(warned) == 2


def test_the_inference_device_is_this_processs_gpu_or_else_the_cpu(monkeypatch):
    import torch

    from lab_utils.modeling import inference_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert inference_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device() == torch.device("cuda", 1)  # one GPU per process under accelerate launch / torchrun
    monkeypatch.delenv("LOCAL_RANK")
    assert inference_device() == torch.device("cuda", 0)


def test_models_that_only_answer_or_score_are_loaded_onto_the_inference_device(app_root, monkeypatch):
    """The apps and `lab eval` put their models where `inference_device` says (a GPU when there is one): the meta
    device stands in for it here, and nothing runs on it."""
    import torch

    from lab_utils import harness, modeling

    meta = torch.device("meta")
    monkeypatch.setattr(modeling, "inference_device", lambda: meta)
    fresh = serving.Models(app_root)
    assert fresh.get("sft")[0].device == meta and fresh.reward_model().model.device == meta
    assert harness.load_model(app_root, "base")[0].device == meta
    assert harness._load(app_root, "other", str(app_root / "sft"))[0].device == meta  # lab eval --model
    assert harness._reward_model(app_root).model.device == meta


def test_only_names_of_the_run_are_loaded(models):
    for name in ("rlhf", "../sft", "/etc"):
        with pytest.raises(LabError, match="pick one of base, sft"):
            models.get(name)


def test_prompts_are_rendered_per_stage_and_capped():
    assert serving.rendered_prompt("base", "The capital of France is") == "The capital of France is"
    assert serving.rendered_prompt("sft", QUESTION) == render_alpaca(QUESTION)
    assert serving.rendered_prompt("rlhf", QUESTION) == render_alpaca(QUESTION)
    assert serving.check_prompt(f"  {QUESTION}\n") == QUESTION
    assert serving.check_prompt("x" * serving.MAX_PROMPT_CHARS)
    with pytest.raises(LabError, match="the prompt is empty"):
        serving.check_prompt(" \n")
    with pytest.raises(LabError, match="the prompt has 2001 characters. Fix: keep it to 2000 or fewer"):
        serving.check_prompt("x" * 2001)
    shown = compare.rendered_prompts(["base", "sft"], "The capital of France is \n", True)  # "show the exact prompt"
    assert [u["value"] for u in shown] == ["The capital of France is", render_alpaca("The capital of France is")]
    [long] = compare.rendered_prompts(["base"], "x" * 10**6, True)  # a direct call past the page's cap
    assert long["value"] == "x" * serving.MAX_PROMPT_CHARS
    with pytest.raises(LabError, match="field 'prompt' holds half of a character"):  # JSON can carry "\ud800"
        serving.check_prompt("Paris \ud800?")


def test_an_answer_too_long_for_the_reward_models_context_gets_no_score(models):
    reward_model = models.reward_model()
    ctx = reward_model.model.config.max_position_embeddings
    long = " ".join(["Paris"] * ctx)  # the base model's room is counted from the raw prompt, not the template
    short, none = serving.reward_scores(reward_model, QUESTION, ["Paris.", long], [True, False])
    assert isinstance(short, float) and none is None
    assert short == round(reward_model.score([render_alpaca(QUESTION)], ["Paris."], [True]).item(), 3)
    results = {"base": {"answer": long, "ended": False, "reward": None,
                        "no_reward": "prompt and answer too long for the reward model to score"}}
    assert compare.score_line("base", results) == ("cut off at max new tokens · prompt and answer too long for the "
                                                   "reward model to score")


def test_streams_already_started_are_stopped_when_a_later_one_fails_to_start(monkeypatch):
    started = []

    class Starts(FakeStream):
        def __init__(self, *args, **kw):
            if started:
                raise RuntimeError("out of memory")
            super().__init__(["a"])
            started.append(self)

    monkeypatch.setattr(serving, "Stream", Starts)
    monkeypatch.setattr(serving, "check_fits", lambda *args: 1)
    with pytest.raises(RuntimeError, match="out of memory"):
        serving.start_streams([(None, None, "p"), (None, None, "p")])
    assert [s.stopped for s in started] == [True]


@pytest.mark.parametrize("name, temperature", [("base", 0.0), ("sft", 0.0), ("sft", 1e-40)])
def test_a_greedy_stream_gives_the_answer_of_generate(models, name, temperature):
    """Temperature 0 is greedy, and so is one too small to divide the logits by: 1e-40 sent through the API made
    them inf, and the answer a traceback ("probability tensor contains either inf, nan or element < 0")."""
    model, tok = models.get(name)
    stream = serving.Stream(model, tok, serving.rendered_prompt(name, QUESTION), max_new_tokens=12,
                            temperature=temperature)
    pieces = list(stream)
    assert (stream.text, stream.ended) == greedy(models, name, QUESTION, 12)
    assert "".join(pieces) == stream.text
    # it came piece by piece: the streamer flushes at each space or newline (a reply without one, such as the
    # untrained micro base model's "............", arrives whole)
    assert len(pieces) > 1 or not any(c.isspace() for c in stream.text.strip())


def test_a_models_spare_rows_are_never_sampled_by_the_apps_or_the_evaluation(sft_root):
    """A hub model's rows past its tokenizer's tokens (`generation.spare_ids`), and a PAD the lab added to it, decode
    to nothing: a sampled one would drop out of the answer unseen. The apps' streams and `generate_ended` (evaluation,
    the reward stage's samples) suppress them."""
    model, tok = modeling.load_causal_lm(str(sft_root / "sft"))
    prompt = serving.rendered_prompt("sft", QUESTION)
    with_spare_rows(model, tok, [prompt])
    enc = tok([prompt] * 8, return_tensors="pt")
    torch.manual_seed(0)
    unsuppressed = model.generate(**enc, do_sample=True, top_k=0, max_new_tokens=24, pad_token_id=tok.pad_token_id,
                                  eos_token_id=tok.eos_token_id)
    unsuppressed = before_eos(unsuppressed[:, enc["input_ids"].shape[1]:], tok.eos_token_id)
    assert (unsuppressed >= len(tok)).any() and (unsuppressed == tok.pad_token_id).any()  # they would be sampled
    drawn, generate = [], model.generate

    def recorded(**kwargs):
        out = generate(**kwargs)
        drawn.append(out[:, kwargs["input_ids"].shape[1]:])
        return out

    model.generate = recorded
    generate_ended(model, tok, [prompt] * 8, 24, do_sample=True, seed=0)
    torch.manual_seed(0)
    for _ in range(4):
        list(serving.Stream(model, tok, prompt, max_new_tokens=24, temperature=1.0))
    answers = [before_eos(d, tok.eos_token_id) for d in drawn]
    assert len(answers) == 5 and all(int(a.max()) < len(tok) and not (a == tok.pad_token_id).any() for a in answers)


def test_interleave_reads_the_streams_in_turn_and_stops_them_all():
    streams = [FakeStream(["a", "b", "c"]), FakeStream(["x"]), FakeStream(["1", "2"])]
    seen = [tuple(s.text for s in streams) for _ in serving.interleave(streams)]
    assert seen == [("a", "", ""), ("a", "x", ""), ("a", "x", "1"), ("ab", "x", "1"), ("ab", "x", "12"),
                    ("abc", "x", "12")]
    assert all(s.stopped for s in streams)


def test_closing_the_reader_stops_generation_early(models):
    text = "1 2 3 4 5"
    assert not greedy(models, "base", text, serving.MAX_NEW_TOKENS)[1]  # left alone, it would run to the cap
    stream = serving.Stream(*models.get("base"), text, max_new_tokens=serving.MAX_NEW_TOKENS)
    reader = serving.interleave([stream])
    for _ in range(3):
        next(reader)
    reader.close()  # what Gradio does when the stop button cancels the event
    assert 3 <= stream.new_tokens < serving.MAX_NEW_TOKENS and not stream.ended


# ------------------------------------------------------------------ handlers, called directly

def test_compare_streams_every_chosen_model_then_scores_them(models):
    updates = list(compare.compare(models, QUESTION, ["sft", "base"], 0.0, 1.0, 8))
    *streaming, (base, sft, results) = updates
    assert all(u[-1] is None for u in streaming)
    # one update per streamed piece; the streamer flushes at each space or newline, so an answer with one
    # arrives in two pieces or more
    assert len(streaming) >= 2 + any(any(c.isspace() for c in a.strip()) for a in (base, sft))
    assert list(results) == ["base", "sft"]  # pane order, whatever order they were ticked in
    for name, answer in (("base", base), ("sft", sft)):
        assert (answer, results[name]["ended"]) == greedy(models, name, QUESTION, 8)
        assert results[name]["answer"] == answer and isinstance(results[name]["reward"], float)
    assert compare.score_line("sft", results).endswith(f"reward **{results['sft']['reward']:+.2f}**")
    assert compare.score_line("rlhf", results) == ""


@pytest.mark.parametrize("text, names, message", [("x" * 2001, ["base"], "the prompt has 2001 characters"),
                                                  (QUESTION, [], "pick one or more of: base, sft"),
                                                  (QUESTION, ["sft", "../rlhf"], "pick one or more of: base, sft")])
def test_compare_refuses_bad_requests_before_generating(models, text, names, message):
    with pytest.raises(gr.Error, match=message):
        next(compare.compare(models, text, names, 0.0, 1.0, 8))


@pytest.mark.parametrize("temperature, top_p, max_new_tokens, message", [
    (0.0, 1.0, float("nan"), "max_new_tokens must be a number from 1 to 512, not 'nan'"),
    (float("nan"), 1.0, 8, "temperature must be a number from 0 to 1.5"),
    ("hot", 1.0, 8, "temperature must be a number from 0 to 1.5, not 'hot'"),
    (0.7, 5.0, 8, "top_p must be a number from 0.05 to 1"),
    (0.7, 1.0, True, "max_new_tokens must be a number"),
    (0.7, 1.0, 10**400, "max_new_tokens must be a number from 1 to 512")])  # too large for a float: OverflowError
def test_compare_refuses_sampling_settings_out_of_range_before_generating(models, temperature, top_p, max_new_tokens,
                                                                         message):
    """A client may send anything a slider would not (NaN passes Gradio's bounds check): each setting is named."""
    with pytest.raises(gr.Error, match=message):
        next(compare.compare(models, QUESTION, ["sft"], temperature, top_p, max_new_tokens))


def test_values_the_browser_sends_back_are_checked_before_they_are_shown():
    """The score lines and the arena's reveal read a hidden gr.JSON, which any client can fill: a value the server
    could not have made gives no line, or a gr.Error, never a traceback."""
    good = {"sft": {"answer": "Paris.", "ended": True, "tokens": 3, "reward": 0.5}}
    assert compare.score_line("sft", good) == "ended at EOS · reward **+0.50**"
    for bad in ({"sft": {"ended": 1, "reward": "x" * 10**6}}, {"sft": {"ended": True, "reward": "0.5"}},
                {"sft": "x"}, ["sft"], {"sft": {"ended": False, "reward": None, "no_reward": 3}}):
        assert compare.score_line("sft", bad) == ""
    long = {"sft": {"ended": False, "reward": None, "no_reward": "y" * 10**4}}
    assert compare.score_line("sft", long) == "cut off at max new tokens · " + "y" * 500
    vote = {"choice": "a", "model_a": "sft", "model_b": "rlhf", "recorded": True}
    assert arena.reveal(vote).startswith("**A** was **sft**, **B** was **rlhf**. Your vote: A is better.")
    long_name = "rlhf-" + "k" * 250  # a contestant is any folder of the run: its name may be up to 255 characters
    assert f"**B** was **{long_name}**" in arena.reveal({**vote, "model_b": long_name})
    for bad in ({**vote, "choice": "x"}, {**vote, "model_a": ["sft"]}, {**vote, "model_b": "z" * 256},
                {**vote, "recorded": "yes"}, {**vote, "choice": ["a"]}, {**vote, "choice": {}}, {"choice": "a"}, None,
                "a"):
        with pytest.raises(gr.Error, match="no vote to reveal"):
            arena.reveal(bad)


def test_a_reward_model_whose_stage_did_not_finish_gives_no_scores(app_root, tmp_path, monkeypatch):
    """An interrupted `lab reward` leaves reward/ without metrics.json; `lab eval` and PPO refuse it, and so do the
    apps: compare keeps the answers, and each score line says why there is no reward."""
    root = tmp_path / "run"
    root.mkdir()
    for folder in ("base", "sft"):
        (root / folder).symlink_to(app_root / folder)
    shutil.copytree(app_root / "reward", root / "reward")
    (root / "reward" / "metrics.json").unlink()
    half = serving.Models(root)
    with pytest.raises(LabError, match="no reward model \\(the folder has no metrics.json"):
        half.reward_model()
    *_, results = list(compare.compare(half, QUESTION, ["sft"], 0.0, 1.0, 4))[-1]
    assert results["sft"]["reward"] is None
    assert "the reward model did not load: " in compare.score_line("sft", results)
    assert (f"run `lab reward --profile micro --out {root}` (or `lab run --profile micro --out {root}`) first"
            in compare.score_line("sft", results))  # the profile the run's stages recorded: the app is given none
    monkeypatch.setattr(common, "_served_beyond_this_machine", True)  # --host 0.0.0.0: no server path, no fix
    *_, results = list(compare.compare(half, QUESTION, ["sft"], 0.0, 1.0, 4))[-1]
    line = compare.score_line("sft", results)
    assert "the reward model did not load: " in line and str(tmp_path) not in line and "Fix:" not in line


def test_a_prompt_that_spells_a_special_token_is_refused(models):
    """Typed "<|eos|>" would reach the model as its end-of-text token, and the arena would store the vote."""
    with pytest.raises(gr.Error, match="the prompt holds '<\\|eos\\|>', which this model reads as a control token"):
        next(compare.compare(models, "Say <|eos|> please", ["base", "sft"], 0.0, 1.0, 8))
    model, tok = models.get("sft")
    assert serving.check_fits(model, tok, serving.rendered_prompt("sft", "Say <| eos |> please")) > 0


def test_a_prompt_longer_than_the_models_context_is_refused_before_any_answer_starts(models, monkeypatch):
    """Past its context a model answers nonsense (and the arena would store votes on it): the prompt is refused, and
    an answer is cut where the context ends."""
    model, tok = models.get("sft")
    ctx = serving.context_length(model)
    prompt = serving.rendered_prompt("sft", QUESTION)
    n = len(tok(prompt)["input_ids"])
    assert n < ctx and serving.check_fits(model, tok, prompt) == n
    long_text = "龘" * (ctx // 2)  # a rare character: several byte-level tokens each
    assert len(long_text) <= serving.MAX_PROMPT_CHARS  # short enough in characters, too long in tokens
    with pytest.raises(gr.Error, match=f"this model reads at most {ctx}. Fix: shorten the prompt"):
        next(compare.compare(models, long_text, ["base", "sft"], 0.0, 1.0, 8))
    started = []
    monkeypatch.setattr(serving, "Stream", lambda *a, **k: started.append(a))
    with pytest.raises(LabError, match="this model reads at most"):
        serving.start_streams([(model, tok, prompt), (model, tok, long_text)])
    assert started == []  # the first, fitting prompt was not started either
    monkeypatch.undo()
    monkeypatch.setattr(model.config, "max_position_embeddings", n + 3)
    stream = serving.Stream(model, tok, prompt, max_new_tokens=serving.MAX_NEW_TOKENS)
    list(stream)
    assert stream.new_tokens <= 3


def test_a_model_or_reward_model_that_fails_to_load_is_said_in_the_browser(app_root, tmp_path):
    """Gradio shows the text of its own `gr.Error` only; any other exception reaches the page as a bare "Error".
    A torn weights file is a LabError naming the folder: the arena and compare show it. A reward model that fails
    to load costs compare only the scores: the answers stand, and each score line says why."""
    root = tmp_path / "run"
    shutil.copytree(app_root / "sft", root / "sft")
    (root / "base").symlink_to(app_root / "base")
    a = arena.Arena(root, "micro", max_new_tokens=4)
    a.models._loaded.clear()  # loaded as the arena starts; torn since, and loaded again
    weights = root / "sft" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # torn mid-write
    shutil.copytree(app_root / "reward", root / "reward")
    (root / "reward" / "normalization.json").write_text("{oops")
    broken = serving.Models(root)
    with pytest.raises(gr.Error, match=r"run/sft: could not load a model"):
        next(a.battle(QUESTION))
    with pytest.raises(LabError, match=r"run/sft: could not load a model.*leave sft out of --models"):
        arena.Arena(root, "micro")  # as the arena starts: refused before it serves
    with pytest.raises(gr.Error, match=r"run/sft: could not load a model"):
        next(compare.compare(broken, QUESTION, ["base", "sft"], 0.0, 1.0, 4))
    *_, (answer, _, results) = compare.compare(broken, QUESTION, ["base"], 0.0, 1.0, 4)
    assert results["base"]["answer"] == answer and results["base"]["reward"] is None
    assert compare.score_line("base", results).endswith(" · the reward model did not load: "
                                                        f"{root / 'reward' / 'normalization.json'}: not a normalisation"
                                                        ' (a JSON object with numbers "mean" and "std", std > 0). Fix:'
                                                        ' train the'
                                                        " reward model again (`lab reward`).")


def test_a_model_folder_removed_while_the_app_runs_is_said_and_never_looked_up_on_the_hub(app_root, tmp_path,
                                                                                          monkeypatch):
    """A relative run folder's "myrun/sft" has the shape of a hub id: once the folder is gone, loading it would ask
    the Hugging Face hub for that repository and, online, serve whatever it holds."""
    shutil.copytree(app_root / "sft", tmp_path / "myrun" / "sft")
    monkeypatch.chdir(tmp_path)
    models = serving.Models("myrun")
    assert models.names == ["sft"] and models.root == (tmp_path / "myrun").resolve()
    shutil.rmtree(tmp_path / "myrun" / "sft")
    with pytest.raises(LabError, match="model 'sft' is no longer in the run folder"):
        models.get("sft")


def test_a_page_served_beyond_this_machine_shows_no_server_path(app_root, tmp_path, monkeypatch, capsys):
    """Voters on an arena opened to a class (--host 0.0.0.0, --share) are shown what went wrong, but not the
    server's file paths or the operator's fixes; the server's log gets the whole error. A problem of the request
    itself (a prompt too long) is shown whole, fix included, everywhere."""
    shutil.copytree(app_root / "sft", tmp_path / "run" / "sft")
    weights = tmp_path / "run" / "sft" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # torn mid-write
    models = serving.Models(tmp_path / "run")
    monkeypatch.setattr(common, "_served_beyond_this_machine", True)
    with pytest.raises(gr.Error) as shown:
        common.loaded(models, "sft")
    assert str(tmp_path) not in shown.value.message and "Fix:" not in shown.value.message
    assert shown.value.message.endswith("(the server's log has the details)")
    assert str(tmp_path / "run" / "sft") in capsys.readouterr().err
    with pytest.raises(gr.Error, match=r"the prompt has 2001 characters\. Fix: keep it to 2000 or fewer"):
        common.checked_prompt("x" * 2001)
    monkeypatch.setattr(common, "_served_beyond_this_machine", False)  # on this machine: everything
    with pytest.raises(gr.Error, match="run/sft: could not load a model"):
        common.loaded(models, "sft")


def test_arena_battle_then_one_vote_per_battle(app_root, tmp_path):
    a = arena.Arena(run_folder(app_root, tmp_path), "micro", max_new_tokens=6)
    assert a.contestants == ["sft"]  # with one fine-tuned model: two samples of it; the base model stays out
    request = gr.Request(session_hash="session-1")
    with pytest.raises(gr.Error, match="no finished battle to vote on"):
        a.vote("a", None, None, None, request)
    *streaming, (answer_a, answer_b, battle) = a.battle(QUESTION)
    assert not any(b["done"] for *_, b in streaming) and battle["done"]
    assert battle["answers"] == [answer_a, answer_b] and battle["models"] == ["sft", "sft"]
    with pytest.raises(gr.Error, match="a rating must be 1, 2, 3, 4 or 5"):
        a.vote("a", 7, None, battle, request)
    with pytest.raises(gr.Error, match="the choice must be one of a, b, tie, both_bad"):
        a.vote("c", None, None, battle, request)
    first = a.vote("both_bad", "2", 1, battle, request)
    assert first == {"vote_id": battle["vote_id"], "choice": "both_bad", "recorded": True, "model_a": "sft",
                     "model_b": "sft"}
    retry = a.vote("a", None, None, battle, request)  # a retry, or a second click: it reports the vote that stands
    assert (retry["recorded"], retry["choice"]) == (False, "both_bad") and "the first one stands" in arena.reveal(retry)
    assert "Your vote: Both are bad" in arena.reveal(retry)
    [row] = votes.rows(a.db)
    assert row == row | {"prompt": QUESTION, "answer_a": answer_a, "answer_b": answer_b, "choice": "both_bad",
                         "rating_a": 2, "rating_b": 1, "voter": "session-1"}
    assert [row["a_ended"], row["b_ended"]] == battle["ended"] and all(type(e) is bool for e in battle["ended"])
    assert "**A** was **sft**" in arena.reveal(first)


def test_the_arena_refuses_models_built_for_another_profile(app_root, tmp_path, monkeypatch, capsys):
    """It keeps typed prompts apart from the evaluation prompts of its --profile: `lab app arena --out runs/micro`
    without `--profile micro` checked them against tiny's."""
    root = run_folder(app_root, tmp_path)
    assert ck.read_json(root / "sft" / "metrics.json")["profile"] == "micro"
    with pytest.raises(LabError, match=r"built for profile micro, not tiny .*\. Fix: pass --profile micro\.$"):
        arena.Arena(root, "tiny")
    monkeypatch.delenv("LAB_PROFILE", raising=False)
    assert cli.main(["app", "arena", "--out", str(root)]) == 2  # tiny, the default: refused before anything starts
    assert "built for profile micro, not tiny" in capsys.readouterr().err
    monkeypatch.setenv("LAB_PROFILE", "micro")
    assert arena.Arena(root, None).contestants == ["sft"]


def test_a_damaged_metrics_file_stops_the_arena_with_one_line_naming_it(app_root, tmp_path, capsys):
    """A model's metrics.json cut short: the arena said JSONDecodeError with a traceback."""
    root = run_folder(app_root, tmp_path)
    (root / "sft").unlink()
    shutil.copytree(app_root / "sft", root / "sft")
    (root / "sft" / "metrics.json").write_text('{"profile": "mic', encoding="utf-8")
    assert cli.main(["app", "arena", "--out", str(root), "--profile", "micro"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{root / 'sft' / 'metrics.json'}: the file is not JSON" in err[0], err


def test_a_contestant_that_will_not_load_stops_the_arena_before_it_serves(app_root, tmp_path, monkeypatch, capsys):
    """The arena loaded its models at the first battle: it started, printed its address, and then every battle that
    drew the broken model failed (with two contestants, every battle)."""
    monkeypatch.setattr(arena, "launch", lambda *args, **kwargs: pytest.fail("the arena started serving"))
    root = run_folder(app_root, tmp_path)
    (root / "sft").unlink()
    shutil.copytree(app_root / "sft", root / "sft")
    (root / "sft" / "model.safetensors").unlink()
    assert cli.main(["app", "arena", "--out", str(root), "--profile", "micro", "--models", "base,sft"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not load" in err[0] and "leave sft out of --models" in err[0], err


def test_ctrl_c_stops_an_app_with_the_lab_s_one_line_and_exit_130(monkeypatch, capsys):
    """Gradio's block_thread caught the Ctrl-C itself, printed its own line and returned: `lab app` exited 0, and
    without the line every other command prints."""
    def interrupted(seconds):
        raise KeyboardInterrupt

    with gr.Blocks() as demo:
        gr.Markdown("hello")
    port = free_port()
    monkeypatch.setattr(common, "time", types.SimpleNamespace(sleep=interrupted), raising=False)  # not Gradio's
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: pytest.fail("block_thread swallows Ctrl-C"))
    with pytest.raises(KeyboardInterrupt):
        common.launch(demo, port=port, block=True)
    assert not demo.is_running
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))
    monkeypatch.setitem(cli.COMMANDS, "app", lambda argv: common.launch(demo, port=free_port(), block=True))
    capsys.readouterr()
    assert cli.main(["app", "arena", "--auth", "me:secret", "--port", "7999"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["stopped; `lab app arena --auth ... --port 7999` serves it again (the votes cast are in the run's "
                   "votes.db)"], err


def by_model(model, tokenizer, prompt, **sampling):
    """A stand-in for `serving.Stream` whose answer tells which model gave it (the base model gets the raw text,
    a fine-tuned one the Alpaca prompt)."""
    return FakeStream(["base says" if prompt == QUESTION else "sft says", " hi."], ended=True)


def test_two_contestants_are_shown_in_a_random_order_and_stored_in_the_order_shown(app_root, tmp_path, monkeypatch):
    monkeypatch.setattr(serving, "Stream", by_model)
    a = arena.Arena(run_folder(app_root, tmp_path), "micro", models=["base", "sft"])
    a.rng = random.Random(0)
    orders = []
    for i in range(8):
        *_, (answer_a, answer_b, battle) = a.battle(QUESTION)
        assert [answer_a, answer_b] == [f"{name} says hi." for name in battle["models"]]
        result = a.vote("a", None, None, battle, gr.Request(session_hash=f"session-{i}"))
        assert [result["model_a"], result["model_b"]] == battle["models"]
        orders.append(tuple(battle["models"]))
    assert set(orders) == {("base", "sft"), ("sft", "base")}  # A is not always the same model
    for row, order in zip(votes.rows(a.db), orders, strict=True):  # the stored row names who gave which answer
        assert (row["model_a"], row["model_b"], row["answer_a"]) == (*order, f"{order[0]} says hi.")


def test_the_arena_stores_whether_each_answer_ended(app_root, tmp_path, monkeypatch):
    made = iter([FakeStream(["Paris", "."], ended=True), FakeStream(["Paris", " is", " the"], ended=False)])
    monkeypatch.setattr(serving, "Stream", lambda *args, **kw: next(made))  # A ends with EOS, B is cut off
    a = arena.Arena(run_folder(app_root, tmp_path), "micro")
    *_, (_, _, battle) = a.battle(QUESTION)
    assert battle["ended"] == [True, False]
    a.vote("b", None, None, battle, gr.Request(session_hash="session-1"))
    [row] = votes.rows(a.db)
    assert (row["answer_a"], row["a_ended"], row["answer_b"], row["b_ended"]) == ("Paris.", True, "Paris is the",
                                                                                  False)
    [pair] = votes.pairs(a.db)  # the cut-off B won: the reward stage must not append EOS to it
    assert (pair["chosen"], pair["chosen_ended"], pair["rejected_ended"]) == ("Paris is the", False, True)


def test_two_answers_of_the_same_text_can_be_voted_only_tie_or_both_bad(app_root, tmp_path, monkeypatch):
    made = iter([FakeStream(["Paris is", " it."], ended=True), FakeStream(["Paris  is\nit. "], ended=True),
                 FakeStream(["Paris."], ended=True), FakeStream(["Paris."], ended=False)])
    monkeypatch.setattr(serving, "Stream", lambda *args, **kw: next(made))
    a = arena.Arena(run_folder(app_root, tmp_path), "micro")
    request = gr.Request(session_hash="session-1")
    *streaming, (_, _, battle) = a.battle(QUESTION)  # "Paris is it." and "Paris  is\nit. ": the same words
    assert battle["same"] and arena.votable(battle) == ("tie", "both_bad")
    assert arena.votable(streaming[0][2]) == ()  # nothing before both answers are finished
    *buttons, note = arena.unlocked(battle)
    assert [b["interactive"] for b in buttons] == [False, False, True, True] and "same text" in note
    for choice in "ab":
        with pytest.raises(gr.Error, match="both answers are the same text: vote tie or both_bad"):
            a.vote(choice, None, None, battle, request)
    assert votes.rows(a.db) == []
    assert a.vote("tie", 3, 3, battle, request)["recorded"]
    *_, (_, _, other) = a.battle(QUESTION)  # the same text, but only one ended: B was cut off, A was not
    assert not other["same"] and arena.votable(other) == tuple(arena.BUTTONS)
    assert [b["interactive"] for b in arena.unlocked(other)[:-1]] == [True] * 4 and arena.unlocked(other)[-1] == ""


def test_a_typed_evaluation_prompt_is_refused_and_the_voter_name_is_capped(app_root, tmp_path, monkeypatch):
    from lab_utils.config import EvalConfig, WorldConfig, build_world_from

    world = build_world_from(WorldConfig.for_profile("micro"))
    asked = next(r["instruction"] for r in tasks.eval_records(world, EvalConfig.for_profile("micro").n_per_task)
                 if not r["input"])
    a = arena.Arena(run_folder(app_root, tmp_path), "micro")
    refused = "asks what an evaluation prompt asks"
    with pytest.raises(gr.Error, match=refused):
        next(a.battle(f"  {asked.replace(' ', '  ')} "))  # spacing aside, it is the same question
    with pytest.raises(gr.Error, match=refused):
        next(a.battle(asked.upper().rstrip("?？") + " !"))  # ... and case and punctuation aside
    evaluation = tasks.eval_records(world, EvalConfig.for_profile("micro").n_per_task)
    x, y, _ = next(r["answer"] for r in evaluation if r["task"] == "arithmetic")
    country = world.country(next(r["entity"] for r in evaluation if r["task"] == "capital"))
    full_width = str.maketrans("0123456789+", "０１２３４５６７８９＋")  # as Chinese input methods type them
    # the same sum or capital, in other words
    for other_words in (f"what's {y}+{x}", f"{y}加{x}是几？", f"Tell me the capital city of {country.name}, please",
                        f"{country.name_zh}的首都叫什么？", f"{x}加上{y}是多少？", f"{y} added to {x}?",
                        f"{x}+{y}等于多少？".translate(full_width), f"Add {y} to {x}.", f"{x}与{y}相加"):
        with pytest.raises(gr.Error, match=refused):
            next(a.battle(other_words))
    for p in a.pool:  # the pool's prompts, drawn by the records' own keys, pass the check of typed text
        assert not tasks.typed_keys(world, p) & a.excluded, p
    made = iter([FakeStream(["Paris."], ended=True), FakeStream(["Lima."], ended=True)] * 3)
    monkeypatch.setattr(serving, "Stream", lambda *args, **kw: next(made))
    *_, (_, _, battle) = a.battle(a.pool[0])
    a.vote("a", None, None, battle, gr.Request(session_hash="s" * 10_000))  # the client picks its session id
    *_, (_, _, battle) = a.battle(a.pool[1])
    a.vote("b", None, None, battle, gr.Request())  # a client that sends no session id: the vote still counts
    *_, (_, _, battle) = a.battle(a.pool[0])
    a.vote("a", None, None, battle, gr.Request(session_hash="\ud800evil"))  # half a character: the store refused it
    assert [row["voter"] for row in votes.rows(a.db)] == ["s" * arena.MAX_VOTER_CHARS, "", "?evil"]


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_an_app_launches_behind_a_web_proxy_and_on_the_ipv6_loopback(monkeypatch, capsys, host):
    """After it binds, Gradio asks its own address whether it is up, through httpx, which follows $http_proxy: with
    a proxy set for the web the launch failed with httpx's traceback, and so did a bare IPv6 host, whose URL Gradio
    writes unbracketed ("http://::1:PORT/"). The loopback's IPv6 forms are no network to warn about."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens on port 9: a request sent there fails
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "example.org")
    for where in ("127.0.0.1", host):
        with gr.Blocks(title="t") as demo:
            gr.Markdown("hi")
        _, url, _ = common.launch(demo, host=where, port=free_port(), block=False)
        demo.close()
        assert url.startswith("http://127.0.0.1:" if where == "127.0.0.1" else "http://[::1]:")
    assert "open to" not in capsys.readouterr().err
    assert os.environ["NO_PROXY"].startswith("example.org,") and "127.0.0.1" in os.environ["no_proxy"]


def test_an_app_open_beyond_this_machine_with_no_login_is_said_and_only_the_arena_speaks_of_votes(
        app_root, tmp_path, monkeypatch, capsys):
    """An app served to the network (or a --share link) with no login is warned about; the warning told compare's
    users that votes there train the next reward model, and compare takes no votes. The loopback stands in for the
    network here."""
    def served_once(demo, *args, **kwargs):
        common.launch(demo, *args, **kwargs, block=False)
        demo.close()

    monkeypatch.setattr(common, "LOOPBACK", ())
    for app in (compare, arena):
        monkeypatch.setattr(app, "launch", served_once)
    compare.main(app_root, port=free_port())
    said = capsys.readouterr().err
    assert "compare is open to the network with no login: pass --auth" in said and "votes" not in said
    arena.main(run_folder(app_root, tmp_path), "micro", port=free_port())
    assert "arena is open to the network with no login, and votes there train the next reward model: pass --auth" \
        in capsys.readouterr().err


def test_the_prompt_pool_holds_instructions_without_input_and_no_evaluation_prompt(app_root, tmp_path):
    """Votes on the pool's prompts train the next reward model (`lab reward --data votes.db`): an evaluation prompt
    there would be trained on. It was the evaluation set itself before."""
    from lab_utils.config import EvalConfig, WorldConfig, build_world_from

    a = arena.Arena(run_folder(app_root, tmp_path), "micro")
    assert a.pool and a.random_prompt() in a.pool
    assert all(serving.check_prompt(p) == p for p in a.pool)
    for profile in ("micro", "tiny"):
        world = build_world_from(WorldConfig.for_profile(profile))
        evaluation = tasks.eval_records(world, EvalConfig.for_profile(profile).n_per_task)
        keys = set().union(*map(tasks.seen_keys, evaluation))
        pool = tasks.arena_prompts(world, exclude=keys)
        drawn = tasks.sft_records(world, 200, seed=tasks.ARENA_SEED, tasks=("capital", "arithmetic"))
        assert len(pool) > 50 and len(set(pool)) == len(pool)
        assert not any(tasks.seen_keys(r) & keys for r in drawn if r["instruction"] in pool)
        assert not any(c.name in p or c.name_zh in p for p in pool for c in world.heldout_countries())
    assert len(tasks.arena_prompts(world)) > len(pool)  # what the exclusion removes (on tiny: sums swapped, too)
    assert not set(a.pool) & {r["instruction"] for r in tasks.eval_records(build_world_from(WorldConfig.for_profile(
        "micro")), EvalConfig.for_profile("micro").n_per_task)}


def test_the_arena_pits_sft_against_rlhf_unless_told_otherwise():
    names = ["base", "sft", "rlhf", "rlhf-hacked", "sft-full"]
    assert arena.contestants(names) == ["sft", "rlhf"]
    assert arena.contestants(["base", "sft", "sft-full"]) == ["sft", "sft-full"]
    assert arena.contestants(["base"]) == ["base"]
    assert arena.contestants(names, ["rlhf", "rlhf-hacked"]) == ["rlhf", "rlhf-hacked"]
    for chosen, message in ((["sft", "rlfh"], "no finished model rlfh"), (["sft", "sft"], "named twice")):
        with pytest.raises(LabError, match=message):
            arena.contestants(names, chosen)


def test_auth_comes_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.delenv(common.AUTH_ENV, raising=False)
    assert common.parse_auth(None) is None
    assert common.parse_auth("alice:pw1,bob:p:w") == [("alice", "pw1"), ("bob", "p:w")]
    assert common.parse_auth("alice:pw1, bob:pw2 ") == [("alice", "pw1"), ("bob", "pw2")]  # spaces after commas
    monkeypatch.setenv(common.AUTH_ENV, "carol:pw")
    assert common.parse_auth(None) == [("carol", "pw")]
    with pytest.raises(LabError, match="--auth must look like user:password"):
        common.parse_auth("alice")
    with pytest.raises(LabError, match="user 'alice' is given more than once") as info:  # Gradio keeps one password
        common.parse_auth("alice:pw1,bob:pw3, alice:pw2")
    assert "pw1" not in str(info.value) and "pw2" not in str(info.value)


# ------------------------------------------------------------------ launched apps, driven by gradio_client

@pytest.fixture(scope="module")
def compare_url(app_root):
    demo = compare.build(app_root)
    yield serve(demo)
    demo.close()


@pytest.fixture
def arena_app(app_root, tmp_path):
    """An arena over its own run folder, behind a login, served on 127.0.0.1: (url, run folder)."""
    root = run_folder(app_root, tmp_path)
    demo = arena.build(root, "micro", max_new_tokens=4)
    yield serve(demo, auth="alice:pw"), root
    demo.close()


def test_every_step_from_a_finished_battle_to_the_revealed_vote_skips_the_queue(app_root, tmp_path):
    """The queue is bounded (64 waiting): a step of the voter's path left in it would be refused ("Queue is full")
    while other users' battles wait, and leave the vote locked or unrevealed. Only the battle waits its turn (the
    browser test votes with the queue full)."""
    demo = arena.build(run_folder(app_root, tmp_path), "micro", max_new_tokens=4)
    queued = {fn.api_name: fn.queue for fn in demo.fns.values()}
    voter_path = ["new_battle", "battle_over", "battle_failed", "unlock_votes", "show_prompt",
                  *(f"{step}_{c}" for step in ("vote", "reveal") for c in arena.BUTTONS)]
    assert {name: queued[name] for name in voter_path} == dict.fromkeys(voter_path, False)
    assert queued["battle"] is True


def test_compare_endpoint_streams_all_panes_together_and_returns_final_answers(compare_url, models):
    assert compare_url.startswith("http://127.0.0.1:")
    client = Client(compare_url, verbose=False)
    assert public_endpoints(client) == {"/compare"}
    job = client.submit(QUESTION, ["base", "sft"], 0.0, 1.0, 8, api_name="/compare")
    base, sft, results = job.result(timeout=120)
    for name, answer in (("base", base), ("sft", sft)):
        assert (answer, results[name]["ended"]) == greedy(models, name, QUESTION, 8) and answer
    *streaming, _ = job.outputs()
    panes = [u[:2] for u in streaming]
    assert panes[0][1] == "" and all(panes[1])  # the second update already shows both answers started
    for before, after in zip(panes, panes[1:]):  # each update adds one piece to one pane
        changed = [i for i in (0, 1) if before[i] != after[i]]
        assert len(changed) == 1 and after[changed[0]].startswith(before[changed[0]])


def test_the_served_apps_keep_no_uploaded_file(compare_url, app_root):
    """Neither app takes a file, but Gradio serves an upload route on every app: it must refuse every file, so that
    no client can fill the disk."""
    import httpx

    uploads = Path(gr.utils.get_upload_folder())
    before = set(uploads.rglob("*")) if uploads.exists() else set()
    reply = httpx.post(compare_url + "gradio_api/upload", files={"files": ("x.bin", b"0" * 100_000)})
    assert reply.status_code == 413
    after = set(uploads.rglob("*")) if uploads.exists() else set()
    assert not {p for p in after - before if p.is_file()}


def test_compare_endpoint_refuses_a_long_prompt(compare_url):
    with pytest.raises(Exception, match="the prompt has 2001 characters"):
        Client(compare_url, verbose=False).predict("x" * 2001, ["sft"], 0.0, 1.0, 8, api_name="/compare")


@pytest.mark.parametrize("args, message", [
    ((QUESTION, ["sft"], "hot", 1.0, 8), "temperature must be a number from 0 to 1.5, not 'hot'"),
    ((QUESTION, ["sft"], 0.7, [1.0], 8), r"top_p must be a number from 0.05 to 1, not '\[1.0\]'"),
    ((QUESTION, None, 0.7, 1.0, 8), "pick one or more of"),
    ((QUESTION, "sft", 0.7, 1.0, 8), "pick one or more of"),
    (({"text": QUESTION}, ["sft"], 0.7, 1.0, 8), "the prompt is a dict, not text")])
def test_compare_endpoint_names_each_bad_value_a_client_sends(compare_url, args, message):
    """Gradio's slider and checkbox handling ran before the lab's checks and failed on a string or a null: the
    client got an error with no message, and the server logged a traceback."""
    with pytest.raises(Exception, match=message):
        Client(compare_url, verbose=False).predict(*args, api_name="/compare")


def test_arena_battle_vote_row_and_export_round_trip(arena_app, tmp_path, monkeypatch):
    url, root = arena_app
    answers = itertools.cycle(["Paris", "Lima"])  # the server runs in this process: two different answers each time
    monkeypatch.setattr(serving, "Stream", lambda *args, **kw: FakeStream([next(answers), "."], ended=True))
    with pytest.raises(Exception, match="(?i)login|auth|401"):  # behind a login: no API without it
        Client(url, verbose=False)
    client = Client(url, auth=("alice", "pw"), verbose=False)
    assert public_endpoints(client) == {"/battle", "/vote", "/random_prompt"}
    answer_a, answer_b = client.predict(QUESTION, api_name="/battle")
    assert (answer_a, answer_b) == ("Paris.", "Lima.")
    assert client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/vote"]["parameters"][1][
        "python_type"]["type"] == "Literal['1', '2', '3', '4', '5']"  # what a client is told to send
    result = client.predict("b", "4", None, api_name="/vote")  # refused by Gradio's own check against 1-5
    assert result["recorded"] and (result["model_a"], result["model_b"]) == ("sft", "sft")
    assert client.predict("b", "4", None, api_name="/vote")["recorded"] is False  # a retry stores nothing
    [row] = votes.rows(votes.db_path(root))
    assert row == row | {"vote_id": result["vote_id"], "prompt": QUESTION, "answer_a": answer_a,
                         "answer_b": answer_b, "choice": "b", "rating_a": 4, "rating_b": None, "voter": "alice"}
    out = tmp_path / "pairs.jsonl"
    assert votes.export_pairs(votes.db_path(root), out) == 1
    [pair] = load_pairs(str(out))  # the loader strips the surrounding whitespace of every text it reads
    assert type(row["a_ended"]) is bool and type(row["b_ended"]) is bool  # the arena always knows
    assert pair == {"prompt": QUESTION, "chosen": answer_b.strip(), "rejected": answer_a.strip(),
                    "chosen_ended": row["b_ended"], "rejected_ended": row["a_ended"]}


def test_eight_clients_voting_at_once_store_exactly_200_votes(arena_app):
    url, root = arena_app

    def voter(_):
        client = Client(url, auth=("alice", "pw"), verbose=False)
        ids = set()
        for k in range(25):
            answer_a, answer_b = client.predict(f"{QUESTION} ({k})", api_name="/battle")
            same = " ".join(answer_a.split()) == " ".join(answer_b.split())  # the arena's rule, spacing aside
            choice = "tie" if same else "ab"[k % 2]  # the same text (unless only one ended): A and B locked
            first = client.predict(choice, None, None, api_name="/vote")
            retry = client.predict(choice, None, None, api_name="/vote")  # as if the first reply were lost
            assert first["recorded"] and not retry["recorded"] and first["vote_id"] == retry["vote_id"]
            ids.add(first["vote_id"])
        return ids

    with ThreadPoolExecutor(8) as pool:
        ids = set().union(*pool.map(voter, range(8)))
    rows = votes.rows(votes.db_path(root))
    assert len(ids) == len(rows) == 200 and {r["vote_id"] for r in rows} == ids


# ------------------------------------------------------------------ the command line

def test_lab_votes_export_holds_only_pairs_the_reward_stage_trains_on(app_root, tmp_path, capsys):
    """A model may sample "<|eos|>" as plain characters. Reading the store, `lab reward` leaves such a pair out; the
    export wrote it, and `lab reward --data votes.jsonl` (the command the export prints) then failed on it with a fix
    that asks the user to edit the file the lab wrote."""
    from transformers import AutoTokenizer

    root = run_folder(app_root, tmp_path)
    db = votes.db_path(root)
    votes.init(db)
    votes.record_vote(db, "v1", QUESTION, "Paris.", "Berlin.", "sft", "rlhf", "a")
    votes.record_vote(db, "v2", QUESTION, "Paris.", "It is <|eos|> Rome.", "sft", "rlhf", "a")
    out = tmp_path / "pairs.jsonl"
    with pytest.warns(UserWarning, match="left out 1 of 2 pairs that spell out a special token"):
        assert cli.main(["votes", "export", "--out", str(root), "--to", str(out)]) == 0
    assert f"1 preference pairs -> {out}" in capsys.readouterr().out
    specials = AutoTokenizer.from_pretrained(root / "sft").all_special_tokens
    assert load_pairs(str(out), special_tokens=specials) == load_pairs(str(db), special_tokens=specials)


def test_lab_app_without_models_and_lab_votes_export(app_root, tmp_path, capsys):
    assert cli.main(["app", "compare", "--out", str(tmp_path / "empty")]) == 2
    assert "no finished model to compare" in capsys.readouterr().err
    root = run_folder(app_root, tmp_path)
    votes.init(votes.db_path(root))
    votes.record_vote(votes.db_path(root), "v1", QUESTION, "Paris.", "Berlin.", "sft", "rlhf", "a")
    votes.record_vote(votes.db_path(root), "v2", QUESTION, "Paris.", "Rome.", "sft", "rlhf", "tie", 4)
    assert cli.main(["votes", "count", "--out", str(root)]) == 0
    assert "a=1 b=0 tie=1 both_bad=0 (rated answers: 1)" in capsys.readouterr().out
    out = tmp_path / "pairs.jsonl"
    assert cli.main(["votes", "export", "--out", str(root), "--to", str(out)]) == 0
    printed = capsys.readouterr().out  # the pairs go to the file; the ratings reach a reward model from the store
    assert f"1 preference pairs -> {out}" in printed
    # the next command names this run (a micro one): without --profile and --out it would train runs/tiny's
    assert (f"train on them with `lab reward --profile micro --out {root} --data {out}`, or with `lab reward "
            f"--profile micro --out {root} --data {votes.db_path(root)}` to train the ratings model on its 1 rated"
            in printed)
    assert "--mix_previous" not in printed  # no pairs of an earlier reward model to keep
    ck.write_jsonl(root / "reward" / "pairs.jsonl", [])  # a reward model trained on pairs: the hint keeps them
    assert cli.main(["votes", "export", "--out", str(root), "--to", str(out)]) == 0
    assert (f"Either trains the run's next reward model on the votes alone; `lab reward --profile micro --out {root} "
            f"--data {votes.db_path(root)} --mix_previous` keeps the pairs" in capsys.readouterr().out)
    (root / "reward" / "metrics.json").rename(root / "reward" / "metrics.json.away")  # unfinished: nothing to mix
    assert cli.main(["votes", "export", "--out", str(root), "--to", str(out)]) == 0
    assert "--mix_previous" not in capsys.readouterr().out
    (root / "reward" / "metrics.json.away").rename(root / "reward" / "metrics.json")
    (root / "reward" / "pairs.jsonl").unlink()
    assert json.loads(out.read_text())["chosen"] == "Paris."
    for to, message in ((votes.db_path(root), "would overwrite the vote store"), (tmp_path / "p.json", ".jsonl")):
        assert cli.main(["votes", "export", "--out", str(root), "--to", str(to)]) == 2
        assert message in capsys.readouterr().err
    assert cli.main(["votes", "count", "--out", str(root)]) == 0  # the store is intact, its tie vote too
    assert "a=1 b=0 tie=1 both_bad=0" in capsys.readouterr().out
    assert cli.main(["app", "compare", "--out", str(root), "--models", "sft"]) == 2
    assert "--models picks the arena's contestants" in capsys.readouterr().err
