"""The apps in a real browser: Debian's Chromium driven by Playwright. Open the arena, type a prompt, wait for both
answers, vote, see the names revealed, find the row in the database; open the compare app and let every pane
answer. Screenshots go to pytest's temp folder; with LAB_SCREENSHOT_DIR=docs/screenshots they refresh the README's.

Needs a Chromium binary (`apt-get install chromium`); Playwright's own browser download is never used. Without
one the test is skipped. The screenshots show the micro models' nonsense; for README-quality ones, point
LAB_SCREENSHOT_RUN at a finished run folder (e.g. runs/tiny): its models are read, its votes.db left alone.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: tests never phone home

import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from apps import arena, common, compare  # noqa: E402
from lab_utils import serving, votes  # noqa: E402

QUESTION = "Which city is the capital of Sweden?"  # asked by no evaluation prompt of any profile: the arena takes it


def chromium() -> str | None:
    """Debian puts the real binary in /usr/lib/chromium; /usr/bin/chromium is a shell wrapper around it."""
    return next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and os.access(p, os.X_OK)), None)


@pytest.fixture(scope="module")
def page():
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium binary found (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=binary, headless=True)
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where the screenshots go: a temp folder, so a test run never rewrites tracked files unless asked to."""
    folder = Path(os.environ.get("LAB_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def run_root(tmp_path_factory, request) -> Path:
    """A run folder of its own (so votes.db lands in a temp dir) linking the models of LAB_SCREENSHOT_RUN, or
    of the micro run built by the `sft_root` fixture."""
    source = Path(os.environ.get("LAB_SCREENSHOT_RUN") or request.getfixturevalue("sft_root"))
    root = tmp_path_factory.mktemp("browser_run")
    for name in [*serving.available_models(source), "reward"]:
        if (source / name).is_dir():
            (root / name).symlink_to(source.resolve() / name)
    return root


def evaluation_question(profile: str) -> str:
    """A capital question about a country the evaluation prompts ask the capital of, worded as none of them is."""
    from lab_utils import tasks
    from lab_utils.config import EvalConfig, WorldConfig, build_world_from

    world = build_world_from(WorldConfig.for_profile(profile))
    country = next(r["entity"] for r in tasks.eval_records(world, EvalConfig.for_profile(profile).n_per_task)
                   if r["task"] == "capital" and r["lang"] == "en")
    return f"Tell me the capital city of {country}, please"


def serve(demo) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return common.launch(demo, port=port, block=False)[1]


def test_arena_in_a_browser_vote_reveals_names_and_lands_in_the_db(page, run_root, shots):
    from playwright.sync_api import expect

    profile = os.environ.get("LAB_PROFILE", "micro")
    demo = arena.build(run_root, profile, max_new_tokens=24)
    try:
        page.goto(serve(demo))
        page.get_by_role("textbox", name="prompt", exact=True).fill(QUESTION)
        page.get_by_role("button", name="Battle").click()
        a_better, tie = (page.get_by_role("button", name=n) for n in ("A is better", "Tie"))
        expect(tie).to_be_enabled(timeout=60_000)  # unlocked only when both answers are finished
        answers = [page.get_by_label(f"Model {x}").input_value() for x in "AB"]
        asked = page.get_by_label("the question these answers belong to")
        expect(asked).to_have_value(QUESTION)  # shown beside the answers: the prompt box may be edited before the vote
        expect(page.get_by_role("textbox", name="prompt", exact=True)).to_be_editable()  # locked only while it ran
        # two models may well give one text (spacing aside, both ended or both cut off): the arena says so, and then
        # A and B stay locked; whether both ended is not on the page, so the note tells which case this is
        same = page.get_by_text("The two answers are the same text").is_visible()
        if same:
            assert " ".join(answers[0].split()) == " ".join(answers[1].split())
            expect(a_better).to_be_disabled()
        else:
            expect(a_better).to_be_enabled()
        page.get_by_text("4", exact=True).first.click()  # rate A: 4
        page.screenshot(path=shots / "arena.png", full_page=True)
        (tie if same else a_better).click()
        expect(page.get_by_text(re.compile(r"A was \S+, B was \S+"))).to_be_visible(timeout=30_000)
        expect(a_better).to_be_disabled()  # one vote per battle
        expect(tie).to_be_disabled()
        page.screenshot(path=shots / "arena-voted.png", full_page=True)
        # a refused prompt (here an evaluation question in other words) leaves no earlier answers on the page
        page.get_by_role("textbox", name="prompt", exact=True).fill(evaluation_question(profile))
        page.get_by_role("button", name="Battle").click()
        expect(page.get_by_text(re.compile("asks what an evaluation prompt asks"))).to_be_visible(timeout=30_000)
        for x in "AB":
            expect(page.get_by_label(f"Model {x}")).to_have_value("")
        expect(asked).to_have_value("")
        expect(tie).to_be_disabled()
        expect(page.get_by_role("button", name="Battle")).to_be_enabled()  # free to ask another question
    finally:
        demo.close()
    [row] = votes.rows(votes.db_path(run_root))
    assert row == row | {"prompt": QUESTION, "answer_a": answers[0], "answer_b": answers[1],
                         "choice": "tie" if same else "a", "rating_a": 4, "rating_b": None}
    assert row["model_a"] in serving.available_models(run_root) and row["voter"]  # the browser session


def test_compare_in_a_browser_every_pane_answers(page, run_root, shots):
    from playwright.sync_api import expect

    demo = compare.build(run_root)
    names = [n for n in serving.available_models(run_root) if n in compare.DEFAULTS]  # the panes picked at start
    try:
        page.goto(serve(demo))
        page.get_by_role("textbox", name="prompt", exact=True).fill(QUESTION)
        page.get_by_label("show the exact prompt each model is given").check()
        page.get_by_role("button", name="Generate").click()
        done = page.get_by_text(re.compile(r"(ended at EOS|cut off at max new tokens) ·"))
        expect(done).to_have_count(len(names), timeout=60_000)  # a line under every finished answer
        expect(page.get_by_label("sft: rendered prompt")).to_have_value(re.compile(r"### Instruction:\n" + QUESTION))
        page.screenshot(path=shots / "compare.png", full_page=True)
        page.get_by_role("textbox", name="prompt", exact=True).fill("   ")  # refused: nothing to answer
        page.get_by_role("button", name="Generate").click()
        expect(page.get_by_text(re.compile("the prompt is empty"))).to_be_visible(timeout=30_000)
        for name in names:  # no earlier answer is left under a prompt it does not answer
            expect(page.get_by_role("textbox", name=name, exact=True)).to_have_value("")
        expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    finally:
        demo.close()


def test_arena_vote_in_a_browser_is_taken_while_the_queue_is_full(page, run_root, monkeypatch):
    """Votes skip the queue: a voter is not turned away ("Queue is full") while other users' battles wait."""
    import threading

    from gradio_client import Client
    from gradio_client.utils import Status
    from playwright.sync_api import expect

    go = threading.Event()
    go.set()
    battle = arena.Arena.battle

    def held_battle(self, *args, **kwargs):  # battles wait for `go`: the queue can be filled on purpose
        assert go.wait(60), "the test never let the battles go"
        yield from battle(self, *args, **kwargs)  # a generator, as the arena's is: the answers stream

    monkeypatch.setattr(arena.Arena, "battle", held_battle)
    demo = arena.build(run_root, os.environ.get("LAB_PROFILE", "micro"), max_new_tokens=8)
    jobs = []
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = common.launch(demo, port=port, block=False, queue_size=1)[1]
        page.goto(url)
        page.get_by_role("textbox", name="prompt", exact=True).fill(QUESTION)
        page.get_by_role("button", name="Battle").click()
        tie = page.get_by_role("button", name="Tie")
        expect(tie).to_be_enabled(timeout=60_000)
        go.clear()  # now two scripted battles: one runs (held), one waits and fills the queue of one
        client = Client(url, verbose=False)

        def wait_for(condition, what: str) -> None:
            for _ in range(600):
                if condition():
                    return
                threading.Event().wait(0.1)
            raise AssertionError(f"the scripted battles never {what}")
        jobs = [client.submit(QUESTION, api_name="/battle")]
        # the second joins only once the first has left the queue for a worker: sent together, the second could be
        # refused with "Queue is full" while the first still waited there
        wait_for(lambda: jobs[0].status().code in (Status.PROCESSING, Status.ITERATING), "started")
        jobs.append(client.submit(QUESTION, api_name="/battle"))
        wait_for(lambda: len(demo._queue) >= 1, "filled the queue")
        tie.click()
        expect(page.get_by_text(re.compile(r"A was \S+, B was \S+"))).to_be_visible(timeout=30_000)
        assert not page.get_by_text("Queue is full").is_visible()
        assert len(demo._queue) >= 1, "the queue emptied before the vote: this test proved nothing"
    finally:
        go.set()
        for job in jobs:
            job.result(timeout=60)
        demo.close()
    [row] = votes.rows(votes.db_path(run_root))[-1:]
    assert row["prompt"] == QUESTION and row["choice"] == "tie"
