"""Arena: two anonymous models answer one prompt; you vote for the better answer and become the human in RLHF.

    lab app arena [--profile tiny] [--models sft,rlhf] [--host 127.0.0.1] [--port 7860] [--auth alice:pw1,bob:pw2]
                  [--share]

A battle pits two different fine-tuned models of the run against each other, in a random order: SFT and RLHF
by default, any finished models with `--models sft,rlhf,sft-full`, or two samples of the same model when the run
has only one. "Random prompt" draws from training-split prompts, never the evaluation set's, and a typed prompt
that asks what an evaluation prompt asks is refused (votes train the next reward model): the same text, the same sum
in any wording, or a capital question about a country the evaluation prompts ask about (`tasks.typed_keys`); the
evaluation prompts are those of `--profile`, which must be the profile the run's models were built for. While
a battle runs its prompt is locked, and the question its answers belong to is shown beside them. The vote buttons
unlock when both answers are finished (only Tie and Both are bad when the two answers are the same text: A and B cannot
be told apart); one vote per battle, then the names are revealed. Votes go to
`runs/<profile>/votes.db` (`lab_utils.votes`); `lab votes export` turns them into preference pairs and
`lab reward --data runs/<profile>/votes.db` trains the next reward model on them.

For scripts and load tests, each client session has its own current battle:

    c = Client("http://127.0.0.1:7860/")
    answer_a, answer_b = c.predict("Which city is the capital of Sweden?", api_name="/battle")
    c.predict("a", "4", None, api_name="/vote")  # choice a|b|tie|both_bad, optional ratings "1"-"5" of A and B
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from pathlib import Path

import gradio as gr

from apps.common import browser_error, checked_prompt, launch, loaded, started, unlocked_after
from lab_utils import checkpoints as ck
from lab_utils import serving, tasks, votes
from lab_utils.config import EvalConfig, WorldConfig, build_world_from, resolve_profile
from lab_utils.errors import LabError

MAX_VOTER_CHARS = 64
MAX_MODEL_NAME_CHARS = 255  # a contestant is a folder of the run, and no common filesystem allows a longer name
BUTTONS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
SAME_TEXT = ("The two answers are the same text, so neither can be better: vote **Tie** or **Both are bad** (and "
             "rate them if you like).")


class Arena:
    """The arena's logic, apart from the page: who fights, the answers streamed, and the vote stored."""

    def __init__(self, root: str | Path, profile: str | None = None, max_new_tokens: int = 64,
                 temperature: float = 0.8, top_p: float = 0.95, models: list[str] | None = None):
        self.models = serving.Models(root)
        if not self.models.names:
            raise LabError("no finished model for the arena", path=str(root), fix="run `lab run` first")
        self.contestants = contestants(self.models.names, models)
        # typed prompts are checked against the evaluation prompts of the profile the models were built for
        profile = resolve_profile(profile)
        built_for = {ck.read_json(f).get("profile") for name in self.contestants
                     if (f := self.models.root / name / "metrics.json").is_file()} - {None, profile}
        if built_for:
            raise LabError(f"the arena's models were built for profile {', '.join(sorted(built_for))}, not {profile} "
                           "(whose evaluation prompts the arena would keep out of the votes)", path=str(root),
                           fix=f"pass --profile {min(built_for)}")
        for name in dict.fromkeys(self.contestants):  # one that will not load stops the start, not every battle
            try:
                self.models.get(name)
            except LabError as err:
                raise LabError(err.message, path=err.path, where=err.where,
                               fix=f"run its stage again, or leave {name} out of --models") from None
        self.db = votes.init(votes.db_path(root))
        self.sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        self.world = build_world_from(WorldConfig.for_profile(profile))
        evaluation = tasks.eval_records(self.world, EvalConfig.for_profile(profile).n_per_task)
        # votes train a reward model: no evaluation prompt, nor a sum it asks with the operands swapped, nor a capital
        # question about a country it asks about, in any wording
        self.excluded = set().union(*map(tasks.seen_keys, evaluation))
        self.pool = tasks.arena_prompts(self.world, exclude=self.excluded)
        self.evaluation = {question_key(r["instruction"]) for r in evaluation if not r["input"]}
        self.rng = random.Random()

    def battle(self, text: str):
        """Stream two anonymous answers: yields (answer A, answer B, battle); battle["done"] once both finished, when
        battle["ended"] tells for each whether it stopped at EOS (False: cut off at max_new_tokens) and
        battle["same"] whether the two answers are the same text (then only tie and both_bad can be voted)."""
        text = checked_prompt(text)
        if question_key(text) in self.evaluation or tasks.typed_keys(self.world, text) & self.excluded:
            raise gr.Error("this prompt asks what an evaluation prompt asks (the same question, sum or country's "
                           "capital): a vote on it would train the next reward model on the test set. Ask another "
                           "question (Random prompt draws one that is safe)", print_exception=False)
        names = self.rng.sample(self.contestants, 2) if len(self.contestants) > 1 else self.contestants * 2
        battle = {"vote_id": uuid.uuid4().hex, "prompt": text, "models": names, "answers": ["", ""], "done": False}
        streams = started([(*loaded(self.models, n), serving.rendered_prompt(n, text)) for n in names],
                          **self.sampling)
        for _ in serving.interleave(streams):
            yield streams[0].text, streams[1].text, battle
        answers, ended = [s.text for s in streams], [s.ended for s in streams]
        same = " ".join(answers[0].split()) == " ".join(answers[1].split()) and ended[0] == ended[1]  # spacing aside
        yield streams[0].text, streams[1].text, battle | {"answers": answers, "ended": ended, "same": same,
                                                          "done": True}

    def vote(self, choice: str, rating_a, rating_b, battle: dict | None, request: gr.Request) -> dict:
        """Store the vote on this session's finished battle and return what was stored. Voting again on the same
        battle (a retry) stores nothing: result["recorded"] is False and the first vote stands."""
        if choice not in votes.CHOICES:
            raise gr.Error(f"the choice must be one of {', '.join(votes.CHOICES)}", print_exception=False)
        if not battle or not battle["done"]:
            raise gr.Error("no finished battle to vote on: start one and wait for both answers",
                           print_exception=False)
        if choice not in votable(battle):  # an A/B vote on one text twice would be a pair that teaches nothing
            raise gr.Error("both answers are the same text: vote tie or both_bad", print_exception=False)
        a_ended, b_ended = battle["ended"]  # the reward stage appends EOS only to answers that ended
        try:
            recorded = votes.record_vote(self.db, battle["vote_id"], battle["prompt"], *battle["answers"],
                                         *battle["models"], choice, _rating(rating_a), _rating(rating_b),
                                         voter=_voter(request), a_ended=a_ended,
                                         b_ended=b_ended)
        except LabError as err:
            raise browser_error(err) from None
        model_a, model_b = battle["models"]
        if not recorded:  # a retry: report the vote that stands, not this click
            choice = votes.stored_choice(self.db, battle["vote_id"]) or choice
        return {"vote_id": battle["vote_id"], "choice": choice, "recorded": recorded, "model_a": model_a,
                "model_b": model_b}

    def random_prompt(self) -> str:
        return self.rng.choice(self.pool)


def contestants(names: list[str], chosen: list[str] | None = None) -> list[str]:
    """Who fights: `chosen` (checked against the run's finished models); by default SFT against RLHF when both
    exist, else every fine-tuned model. The base model only continues text, so it fights only alone (two samples)."""
    if chosen:
        unknown = [n for n in chosen if n not in names]
        if unknown or len(set(chosen)) != len(chosen):
            raise LabError(f"--models {','.join(chosen)}: " + (f"no finished model {', '.join(unknown)}" if unknown
                                                               else "a model is named twice"),
                           fix=f"pick from {', '.join(names)}, comma-separated")
        return list(chosen)
    if {"sft", "rlhf"} <= set(names):
        return ["sft", "rlhf"]
    return [n for n in names if n != "base"] or list(names)


def votable(battle: dict | None) -> tuple[str, ...]:
    """The choices a battle can be voted with: none until both answers are finished, and only tie or both_bad when
    they are the same text."""
    if not battle or not battle["done"]:
        return ()
    return ("tie", "both_bad") if battle.get("same") else tuple(BUTTONS)


def unlocked(battle: dict | None) -> list:
    """Updates for the vote buttons (in BUTTONS order) and the note under them, once a battle has run."""
    allowed = votable(battle)
    note = SAME_TEXT if battle and battle.get("same") and allowed else ""
    return [gr.update(interactive=c in allowed) for c in BUTTONS] + [note]


def asked_line(battle: dict | None) -> str:
    """The question a finished battle's answers belong to ("" before): shown beside them, since the prompt box may
    be edited before the vote."""
    return battle["prompt"] if battle and battle.get("done") else ""


def question_key(text: str) -> str:
    """A question as the evaluation-prompt check compares it: case, punctuation and spacing aside."""
    kept = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.casefold())
    return " ".join(kept.split())


def _voter(request: gr.Request) -> str:
    """Who voted: the login name, else the browser session's id (the client chooses it: capped); "" when a client
    sends neither (the store's `voter` column is NOT NULL, so None would lose the vote). Half a character in a
    client's id ("\ud800") is replaced, since the store cannot hold it and the vote would be lost."""
    voter = (request.username or request.session_hash or "")[:MAX_VOTER_CHARS]
    return voter.encode("utf-8", "replace").decode("utf-8")


# The radio buttons' values are text: Gradio's API description gives a radio's choices the type string whatever they
# are, and its own check then refused a client's "4" against the numbers 1-5.
RATINGS = ["1", "2", "3", "4", "5"]


def _rating(value) -> int | None:
    """An optional 1-5 rating as sent by the radio button or a client (None, "", 3 or "3")."""
    if value in (None, ""):
        return None
    if str(value) not in RATINGS:
        raise gr.Error("a rating must be 1, 2, 3, 4 or 5", print_exception=False)
    return int(value)


def _vote_for(arena: Arena, choice: str):
    """The handler of one vote button. A closure, not `functools.partial`: Gradio finds the `gr.Request` parameter
    by its annotation, which a partial hides."""
    def vote(rating_a, rating_b, battle: dict | None, request: gr.Request) -> dict:
        return arena.vote(choice, rating_a, rating_b, battle, request)
    return vote


def reveal(result: dict) -> str:
    """The names behind A and B after a vote. `result` comes back from the browser (a hidden gr.JSON that any client
    may fill), so it is checked before it is shown."""
    names = (result.get("model_a"), result.get("model_b")) if isinstance(result, dict) else ()
    if not (names and isinstance(result.get("choice"), str) and result["choice"] in BUTTONS
            and isinstance(result.get("recorded"), bool)
            and all(isinstance(n, str) and 0 < len(n) <= MAX_MODEL_NAME_CHARS for n in names)):
        raise gr.Error("no vote to reveal: vote with the buttons first", print_exception=False)
    said = "" if result["recorded"] else " (this battle already had your vote; the first one stands)"
    return (f"**A** was **{result['model_a']}**, **B** was **{result['model_b']}**. "
            f"Your vote: {BUTTONS[result['choice']]}{said}. Start a new battle for the next vote.")


def build(root: str | Path, profile: str | None = None, models: list[str] | None = None, **sampling) -> gr.Blocks:
    """The arena page over one run folder; `models` picks the contestants (`contestants`), `sampling` overrides
    `Arena`'s generation settings."""
    arena = Arena(root, profile, models=models, **sampling)
    locked = [gr.update(interactive=False)] * len(BUTTONS)
    with gr.Blocks(title="LLM Training Lab: arena") as demo:
        gr.Markdown("## Arena\nTwo anonymous models answer your prompt. Vote for the better answer; the names "
                    "are revealed after your vote, and your vote trains the next reward model.")
        battle = gr.State()
        with gr.Row():
            prompt = gr.Textbox(label="prompt", placeholder=arena.pool[0] if arena.pool else "", lines=2, scale=4,
                                max_length=serving.MAX_PROMPT_CHARS)
            with gr.Column(scale=1):
                go = gr.Button("Battle", variant="primary")
                draw, stop = gr.Button("Random prompt"), gr.Button("Stop")
        with gr.Row():
            with gr.Column():
                answer_a = gr.Textbox(label="Model A", lines=6, interactive=False)
                rating_a = gr.Radio(RATINGS, label="rate A (optional)")
            with gr.Column():
                answer_b = gr.Textbox(label="Model B", lines=6, interactive=False)
                rating_b = gr.Radio(RATINGS, label="rate B (optional)")
        # the question of the battle on the page, whatever the prompt box holds by the time of the vote
        asked = gr.Textbox(label="the question these answers belong to", interactive=False, lines=1)
        with gr.Row():
            buttons = {c: gr.Button(label, interactive=False) for c, label in BUTTONS.items()}
        outcome = gr.Markdown()
        result = gr.JSON(visible=False)
        choice = gr.Textbox(visible=False)  # only the `vote` endpoint for scripts fills it

        # While a battle runs, its prompt cannot change (the answers would be judged against another question), and
        # a new battle first clears the last one: a refused prompt leaves no old answers on the page to vote on.
        inputs = [prompt, go, draw]
        draw.click(arena.random_prompt, None, prompt, api_name="random_prompt")
        start = gr.on([go.click, prompt.submit],
                      lambda: [*locked, "", None, None, "", "", None, "", *[gr.update(interactive=False)] * 3], None,
                      [*buttons.values(), outcome, rating_a, rating_b, answer_a, answer_b, battle, asked, *inputs],
                      api_name="new_battle", api_visibility="private", queue=False)
        run = start.then(arena.battle, prompt, [answer_a, answer_b, battle], api_name="battle")
        unlocked_after(run, inputs, "battle")
        run.success(unlocked, battle, [*buttons.values(), outcome], api_name="unlock_votes",
                    api_visibility="private", queue=False)
        run.success(asked_line, battle, asked, api_name="show_prompt", api_visibility="private", queue=False)
        stop.click(None, cancels=[run], api_name="stop")
        # A page's vote skips the queue (queue=False: the browser posts it straight to the server), as does every
        # step that unlocks it: quick updates and a SQLite write, which neither wait behind generations nor are turned
        # away when the queue is full of them. Only the battle itself waits its turn.
        for c, button in buttons.items():
            button.click(_vote_for(arena, c), [rating_a, rating_b, battle], result,
                         api_name=f"vote_{c}", api_visibility="private", queue=False
                         ).success(lambda r: [reveal(r), *locked], result, [outcome, *buttons.values()],
                                   api_name=f"reveal_{c}", api_visibility="private", queue=False)
        # votes are quick SQLite writes: several may run beside a generation without loading the CPU
        choice.submit(arena.vote, [choice, rating_a, rating_b, battle], result, api_name="vote",
                      concurrency_limit=4)
    return demo


def main(root: str | Path, profile: str | None = None, host: str = "127.0.0.1", port: int | None = None,
         auth: str | None = None, share: bool = False, models: list[str] | None = None) -> None:
    launch(build(root, profile, models), host, port, auth, share, takes_votes=True)
