from pathlib import Path

from common import code, md, save

md("""
# 06 · Compare, and close the loop

**Goal:** base, SFT and RLHF models + **new feedback on the current models** → a retrained reward model and a
re-optimised policy: the loop of collecting feedback, retraining the reward model and optimising again.

In this notebook you will see

- the final comparison of the three models on the held-out prompts: per-task accuracy, entities never seen in SFT,
  language, reward, and the annotator's head-to-head of RLHF against SFT;
- the course's summary table — pretraining, SFT, reward model, RLHF — filled in with this run's real inputs,
  outputs and numbers;
- how to talk to the models yourself: the **compare** app and the **arena**, where you become the human in RLHF;
- a **second round** of the loop: the simulated annotator votes on RLHF vs SFT answers to fresh prompts through the
  arena's own vote store, the votes are exported as preference pairs, the reward model is retrained on old + new
  pairs, PPO runs again, and the two rounds are compared.

Expectations on `tiny` (2 idle CPU cores): about 3½–8½ minutes in all, depending on the CPU, most of it retraining the
reward model (1–3½ min) and the second PPO run (1–4 min, half of round 1's 25 iterations); the cells print their
own times.
""")

md("""
## Setup
""")

code("""
import hashlib
import json
import random
import shutil
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets: tqdm draws a text bar
warnings.filterwarnings("ignore", message="`(is_)?gradient_checkpointing` is deprecated")  # transformers 5 rename
""")

code("""
import matplotlib.pyplot as plt
import pandas as pd
from datasets import disable_progress_bars, load_dataset
from IPython.display import Markdown, display
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()  # the fresh score head's load report is expected: it is what we train
disable_progress_bars()
pd.set_option("display.max_colwidth", 90)
""")

code("""
from lab_utils import annotator, checkpoints, evaluate, graders, preferences, reward, stages, tasks, votes
from lab_utils.config import EvalConfig, RewardConfig, WorldConfig, build_world_from, resolve_profile
from lab_utils.generation import alpaca_prompts, generate_ended
from lab_utils.tokenizer import render_alpaca

profile = resolve_profile()  # $LAB_PROFILE, default "tiny"
root = Path.cwd() if (Path.cwd() / "pyproject.toml").exists() else Path.cwd().parent
out = stages.run_dir(profile, root / "runs" / profile)
world = build_world_from(WorldConfig.for_profile(profile))
print(f"profile: {profile}   run folder: {out.relative_to(root)}")
""")

md("""
## 1. Base, SFT and RLHF on the held-out prompts

- Notebooks 02–05 built the three models; if a stage is missing, the cell builds it and says so (from nothing, on
  `tiny`, that takes about 20 minutes on the slower 2-core host).
- `stages.run_eval` (what `lab eval` runs) answers every held-out prompt greedily with each model, grades the answers
  with the task checkers, scores them with the reward model and lets the annotator judge RLHF against SFT.
""")

code("""
stages.ensure("ppo", profile, out)
results = stages.run_eval(profile, out)  # {"base": {...}, "sft": {...}, "rlhf": {...}}
keys = ("task_accuracy", "heldout_entity_accuracy", "language_match", "off_task_rate", "mean_reward")
display(pd.DataFrame({m: {**r["per_task"], **{k: r.get(k) for k in keys}} for m, r in results.items()}).round(4))
""")

code("""
duel = results["rlhf"]["head_to_head_vs_sft"]
print("RLHF vs SFT (annotator; ties and both-bad left out of the win rate):",
      {k: duel[k] for k in ("wins", "losses", "ties", "both_bad", "win_rate")})
print("win rate per task:", duel["per_task"], "| mean over tasks:", duel["task_mean"])
evaluate.plot_eval(results)
plt.show()
""")

md("""
**Side by side.** One prompt of each task, plus a capital question about a country that appears in the pretraining
corpus but never in the SFT data (✓: the task's checker accepts the answer):
""")

code("""
eval_recs = tasks.eval_records(world, EvalConfig.for_profile(profile).n_per_task)  # the harness's prompts, in order
picks = [next(i for i, r in enumerate(eval_recs) if r["task"] == t) for t in tasks.TASKS]
picks.append(next(i for i, r in enumerate(eval_recs) if r["task"] == "capital" and r["heldout"]))
mark = lambda rec, text: f"{'✓' if graders.check(world, rec, text) else '✗'} {text}"  # noqa: E731
shown = [eval_recs[i] for i in picks]
display(pd.DataFrame({"prompt": [r["instruction"] + (" | " + r["input"] if r["input"] else "") for r in shown],
                      **{m: [mark(r, results[m]["responses"][i]) for r, i in zip(shown, picks)] for m in results}}))
""")

md("""
- The base model knows the world but not the format: it continues the prompt as text (notebook 02). SFT taught the
  format, and answers about countries it never saw in SFT data come from pretraining (03). RLHF is the SFT model
  moved towards what the reward model scores high, within the KL budget (05) — including what it scores high
  wrongly: on `tiny` the RLHF model can, in some runs, answer a prompt with another task's sentence
  (`off_task_rate` above counts them in this one; notebook 05, section 6).
""")

md("""
## 2. The four stages of this run

The course map of the README, with what each stage measured, filled in from `runs/<profile>/report.json`
(`stages.write_report` merges every stage's `metrics.json`) and from the settings each stage saved with its artifact —
nothing below is typed in by hand.
""")

code("""
report = stages.write_report(out)  # {"profile", "stages": {tokenizer, pretrain, sft, reward, ppo}, "eval": {...}}
s, ev = report["stages"], report["eval"]
m_pre, m_sft, m_rm, m_ppo = s["pretrain"], s["sft"], s["reward"], s["ppo"]
config = {st: checkpoints.read_json(out / stages.STAGE_DIRS[st] / "metrics.json")["config"]
          for st in ("pretrain", "sft", "reward", "ppo")}  # the settings each stage ran with
pct = lambda x: "n/a" if x is None else f"{x:.0%}"  # noqa: E731
where = lambda st: f"`{(out / stages.STAGE_DIRS[st]).relative_to(root)}/`"  # noqa: E731
""")

code("""
rows = [
    ("1 pretraining", f"unlabeled text ({config['pretrain']['data'] or 'world corpus'}): {m_pre['train_tokens']:,} tokens",
     f"base model {where('pretrain')}, {m_pre['params']:,} parameters", "loss falls; knows facts, follows no instructions",
     f"loss {m_pre['initial_loss']:.2f} → {m_pre['val_loss']:.2f}; capital facts {pct(m_pre['fact_accuracy'])}; "
     f"task prompts answered {pct(ev['base']['task_accuracy'])}"),
    ("2 SFT", f"Alpaca records ({m_sft['data']}): {m_sft['n_train_records']:,}",
     f"SFT model {where('sft')}, {m_sft['method']}: {m_sft['trainable_params']:,} weights trained",
     "answers questions; knowledge transfers", f"task accuracy {pct(ev['base']['task_accuracy'])} → "
     f"{pct(ev['sft']['task_accuracy'])}; entities never in SFT data {pct(ev['sft']['heldout_entity_accuracy'])}"),
    ("3 reward model", f"preference pairs ({m_rm['data']}): {m_rm['n_train_pairs']:,} to train, "
     f"{m_rm['n_eval_pairs']:,} held out",
     f"reward model {where('reward')}", "held-out pairs ranked right",
     f"{pct(m_rm['pairwise_accuracy'])} of held-out pairs (ratings model {pct(m_rm['ratings_model_pairwise_accuracy'])})"),
    ("4 RLHF (PPO)", f"{m_ppo['episodes']:,} sampled answers to {config['ppo']['n_prompts']:,} prompts, "
     "scored by the reward model",
     f"RLHF model {where('ppo')}", "reward rises, KL bounded, beats SFT",
     f"reward {m_ppo['reward_start']:+.2f} → {m_ppo['reward_end']:+.2f} at KL {m_ppo['kl_end']:.1f} nats; "
     f"annotator win rate vs SFT {pct(ev['rlhf'].get('win_rate_vs_sft'))}"),
]
header = "| stage | input | output | what should happen | this run |\\n|---|---|---|---|---|\\n"
display(Markdown(header + "\\n".join("| " + " | ".join(row) + " |" for row in rows)))
""")

md("""
The same report, as `lab run` prints it at the end (wall-clock seconds per stage included):
""")

code("""
print(stages.stage_table(report))
""")

md("""
## 3. Talk to the models: the apps

Two Gradio apps serve a run folder (default `runs/<profile>`):

```bash
lab app compare   # one prompt → base, SFT and RLHF answer side by side as the tokens come; reward under each answer
lab app arena     # two anonymous models answer; vote A / B / tie / both bad; the names are revealed after the vote
make demo         # `lab run` (every stage, finished ones reused), then serves the compare app
```

- They listen on **127.0.0.1** only, at http://127.0.0.1:7860 (or the next free port). `--host 0.0.0.0` opens an
  app to your network and `--share` makes a public link — only when you ask for it.
- A class voting on one machine: `lab app arena --host 0.0.0.0 --auth alice:pw1,bob:pw2`, or put the accounts in
  `$LAB_APP_AUTH`, which other users cannot read with `ps`. Each vote records its voter's login name.
- The arena's votes go to `runs/<profile>/votes.db` (SQLite, WAL mode: no vote lost with many voters, a retry never
  counted twice). `lab votes count` counts them, `lab votes export` writes them as `prompt`/`chosen`/`rejected`
  JSONL, and `lab reward --data runs/<profile>/votes.db` trains the reward models on them (the ratings model on the
  votes' 1–5 ratings). Round 2 below, with the simulated annotator as the voter, goes through the same store and the
  same export, then trains in Python: it reads the exported pairs with `preferences.load_pairs` (the loader behind
  `lab reward --data`) and hands them to the reward stage after round 1's pairs
  (`stages.run_reward(profile, out2, pairs=old_pairs + new_pairs)`), which trains the pairwise model only, no ratings
  model (sections 5 and 6).

The screenshots come from the browser test, run on a finished run folder:

```bash
LAB_SCREENSHOT_DIR=docs/screenshots LAB_SCREENSHOT_RUN=runs/tiny LAB_PROFILE=tiny .venv/bin/pytest tests/test_browser.py
```
""")

code("""
shots = {"compare": "compare app", "arena": "arena: a battle, before the vote", "arena-voted": "arena: after the vote"}
for name, caption in shots.items():
    if (root / "docs" / "screenshots" / f"{name}.png").exists():
        display(Markdown(f"**{caption}**\\n\\n![{caption}](../docs/screenshots/{name}.png)"))
    else:
        print(f"no docs/screenshots/{name}.png yet: the browser test above makes it")
""")

md("""
## 4. Round 2: fresh votes on the current models

Round 1's preferences compared the SFT model's samples with each other, and PPO then optimised against a reward
model that had never seen an RLHF answer. A reward model is only trustworthy near its training data, so the loop
goes on: people vote on the **current** models, the reward model learns from old + new votes, and PPO optimises
again.

- Round 2 gets its own run folder, `runs/<profile>/round2/`, so round 1's models stay exactly as they are (the
  outcomes check it). The SFT model is linked in: the reward stage starts from it and the harness compares with it.
- Every run of this notebook plays round 2 afresh.
""")

code("""
out2 = out / "round2"
shutil.rmtree(out2, ignore_errors=True)  # a link inside is removed, never followed
out2.mkdir()
(out2 / "sft").symlink_to((out / "sft").resolve(), target_is_directory=True)

def fingerprint(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}

round1 = {name: fingerprint(out / name) for name in ("sft", "reward", "rlhf")}  # compared again in the outcomes
print(f"round 2 folder: {out2.relative_to(root)}   round 1 files fingerprinted: {sum(map(len, round1.values()))}")
""")

md("""
**Fresh prompts.** The vote store keeps what a person typed — plain text — and the arena wraps it in the Alpaca
prompt. An instruction with a separate `input` field cannot be typed that way, so, like the arena's prompt pool,
round 2 draws the tasks without one: capital questions and sums in both languages, on training-split entities, from
a seed no stage has used (SFT records use 0, reward prompts 1, PPO prompts 2): as many as round 1's reward stage
had, less those that are evaluation prompts (a sum counts with its operands swapped too, a capital question in any
wording or language), since round 2 trains on the votes:
""")

code("""
ROUND2_SEED = 3
evaluation = set().union(*map(tasks.seen_keys, eval_recs))  # the harness's prompts (section 1)
drawn = tasks.sft_records(world, RewardConfig.for_profile(profile).n_prompts, seed=ROUND2_SEED,
                          tasks=("capital", "arithmetic"))
fresh = [r for r in drawn if not tasks.seen_keys(r) & evaluation]  # votes train round 2: no evaluation prompt
print(f"{len(fresh)} of {len(drawn)} drawn prompts kept ({len(drawn) - len(fresh)} are evaluation prompts)")
assert all(not r["input"] for r in fresh)
assert alpaca_prompts(fresh) == [render_alpaca(r["instruction"]) for r in fresh]  # the typed text is the whole prompt
display(pd.DataFrame(fresh)[["task", "lang", "instruction"]].head(4))
""")

md("""
**Two answers per prompt:** one from the SFT model, one from the round-1 RLHF model, sampled with the arena's
settings (temperature 0.8, top-p 0.95, at most 64 new tokens):
""")

code("""
sft_model, tok = stages.load_model(out, "sft")
rlhf_model, _ = stages.load_model(out, "rlhf")
ARENA = dict(max_new_tokens=64, do_sample=True, temperature=0.8, top_p=0.95)
answers = {name: generate_ended(model, tok, alpaca_prompts(fresh), seed=seed, **ARENA)  # [(text, ended), ...]
           for seed, (name, model) in enumerate([("sft", sft_model), ("rlhf", rlhf_model)])}
for name, outs in answers.items():
    print(f"{name}: {sum(e for _, e in outs)} of {len(outs)} answers ended with EOS")
""")

md("""
**The votes.** The simulated annotator stands in for a person at the arena. Each battle shows two anonymous answers
in random order, and the verdict goes into the same SQLite store, through the same call, as a click on the arena's
vote button (`votes.record_vote`, with a 1–5 rating of each answer).

- The annotator says `"A"`, `"B"`, `"tie"` or `"both_bad"`; the store takes the button's `"a"`, `"b"`, `"tie"`,
  `"both_bad"`.
- Whether each answer ended with EOS or was cut off at 64 tokens goes into the store beside its text
  (`a_ended`/`b_ended`, as the arena stores its streams'): the annotator marks a cut-off answer down, and the
  reward stage will append EOS only to the answers that ended, so a cut-off answer never looks finished to it.
""")

code("""
db = votes.init(votes.db_path(out2))  # runs/<profile>/round2/votes.db
CHOICE = {"A": "a", "B": "b", "tie": "tie", "both_bad": "both_bad"}  # annotator verdict → arena button
rng = random.Random(0)
battles = []
for i, rec in enumerate(fresh):
    names = rng.sample(["sft", "rlhf"], 2)  # anonymous, in random order
    (a, a_ended), (b, b_ended) = (answers[n][i] for n in names)
    choice = CHOICE[annotator.compare(world, rec, a, b, a_ended, b_ended)]
    votes.record_vote(db, f"round2-{i:04d}", rec["instruction"], a, b, *names, choice,
                      annotator.rate(world, rec, a, a_ended), annotator.rate(world, rec, b, b_ended),
                      voter="annotator", a_ended=a_ended, b_ended=b_ended)
    battles.append({"task": rec["task"], "winner": {"a": names[0], "b": names[1]}.get(choice, choice)})
counts = votes.count(db)
print(f"{len(battles)} battles, votes in the store: {counts}")
""")

code("""
display(pd.DataFrame(votes.rows(db))[["prompt", "model_a", "answer_a", "a_ended", "model_b", "answer_b", "b_ended",
                                       "choice", "rating_a", "rating_b"]].head(6))
""")

md("""
**A retried vote counts once.** The vote id belongs to the battle; the same vote sent again (a network retry, a
double click) stores nothing — even with a different choice, the first one stands:
""")

code("""
first = votes.rows(db)[0]
again = votes.record_vote(db, first["vote_id"], first["prompt"], first["answer_a"], first["answer_b"],
                          first["model_a"], first["model_b"], "b" if first["choice"] == "a" else "a", voter="annotator")
print("stored again?", again, "  counts:", votes.count(db))
assert again is False and votes.count(db) == counts
""")

md("""
Who won, per task — the feedback round 1's reward model never had:
""")

code("""
display(pd.crosstab(pd.DataFrame(battles)["task"], pd.DataFrame(battles)["winner"], margins=True))
""")

md("""
## 5. Export: votes → preference pairs

`votes.export_pairs` is what `lab votes export --out runs/<profile>/round2` runs: the A-better and B-better votes
become `prompt`/`chosen`/`rejected` records (TRL's explicit-prompt preference format) in JSONL; ties and both-bad
votes stay in the database. `datasets` loads the file as it is:
""")

code("""
export = out2 / "votes.jsonl"
n_exported = votes.export_pairs(db, export)
ds = load_dataset("json", data_files=str(export), split="train")
print(ds)
assert n_exported == len(ds) == counts["a"] + counts["b"]
""")

md("""
- The new pairs are read back with `preferences.load_pairs` — the loader behind `lab reward --data` — and rendered
  with the Alpaca template, exactly as the reward stage renders pairs someone brings. Each pair keeps the store's
  `chosen_ended`/`rejected_ended`, so an answer cut off in the arena stays cut off (a pair without them counts as
  two answers that ended).
- Round 1's pairs come from `runs/<profile>/reward/pairs.jsonl`. They are rendered already, remember whether each
  answer ended, and carry the split (`train`/`eval`) they were used in.
""")

code("""
task_of = {r["instruction"]: r["task"] for r in fresh}
new_pairs = [p | {"prompt": render_alpaca(p["prompt"]), "task": task_of.get(p["prompt"]), "source": "round 2 votes"}
             for p in preferences.load_pairs(str(export))]
old_lines = (out / "reward" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
old_pairs = [json.loads(line) | {"source": "round 1"} for line in old_lines]
old_eval_prompts = {p["prompt"] for p in old_pairs if p["split"] == "eval"}
old_prompts = {p["prompt"] for p in old_pairs}
print(f"round 1: {len(old_pairs)} pairs ({len(old_eval_prompts)} held-out prompts); round 2 votes: {len(new_pairs)} "
      f"pairs, {sum(p['prompt'] in old_prompts for p in new_pairs)} of them on a prompt round 1 also had")
""")

md("""
> **Your own votes.** If you voted in the arena, your pairs can join this round: add
> `[p | {"prompt": render_alpaca(p["prompt"]), "source": "arena"} for p in preferences.load_pairs(str(votes.db_path(out)))]`
> to `new_pairs` before the `run_reward` cell of section 6. (The outcome thresholds below are for the annotator's votes
> alone.)
""")

md("""
## 6. Retrain the reward model on old + new preferences

- The reward stage, given the pairs directly (`pairs=`): prompts are used as they are, and so are each pair's
  `chosen_ended`/`rejected_ended`. A prompt that already has a split keeps it, so round 1's held-out prompts stay
  out of training and both rounds' reward models can be judged on the same held-out pairs; new prompts are split
  80/20 as usual.
- It starts from the SFT model again, with round 1's settings and seed: only the data changed. Given pairs train
  the pairwise model only. (`lab reward --data votes.db --mix_previous` would also retrain the ratings model on
  round 1's ratings plus the votes' 1–5 ratings; here, only the pairwise model is compared.)
""")

code("""
m2 = stages.run_reward(profile, out2, pairs=old_pairs + new_pairs)
print({k: m2[k] for k in ("pairwise_accuracy", "n_train_pairs", "n_eval_pairs", "norm_mean", "norm_std", "wall_s")})
""")

md("""
**Round 1's reward model against round 2's,** on two held-out sets: round 1's pairs (two SFT samples each), and the
held-out new votes (an RLHF answer against an SFT answer) — the kind of pair round 1's reward model never saw, which
the loop adds. On a few dozen held-out votes, two or three pairs either way are noise:
""")

code("""
pairs2 = [json.loads(line) for line in (out2 / "reward" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
held_old = [p for p in pairs2 if p["split"] == "eval" and p["source"] == "round 1"]
held_new = [p for p in pairs2 if p["split"] == "eval" and p["source"] == "round 2 votes"]
accuracy = lambda model, pairs: reward.pairwise_accuracy(model.model, model.tokenizer, pairs)["accuracy"]  # noqa: E731
reward_models = {1: reward.RewardModel.load(out / "reward"), 2: reward.RewardModel.load(out2 / "reward")}  # the rounds' RMs
rm_acc = {k: {"old": accuracy(m, held_old), "new": accuracy(m, held_new)} for k, m in reward_models.items()}
display(pd.DataFrame({f"reward model, round {k}": {f"round-1 held-out pairs ({len(held_old)})": a["old"],
                                                   f"held-out new votes ({len(held_new)})": a["new"]}
                      for k, a in rm_acc.items()}))
""")

md("""
## 7. PPO again

- **Where it starts:** from the SFT model again, with the SFT model as the KL reference: round 1's run
  (`lab ppo --out runs/<profile>/round2 --iterations 12`) with the new reward model.
- **Half the iterations:** 12 of round 1's 25, with the learning rate decayed to zero over those 12. Round 1's 25
  would add three to four minutes to a notebook CI runs on two cores. So two things change between the rounds: the
  reward model, and a policy optimised half as long, which moves less far from SFT. Read the round-over-round
  tables with that in mind: they compare the reward models fairly (section 6, and each policy scored by both), the
  policies only as what each round produced. `iterations=` below set to round 1's count compares them at one budget.
- **Why not continue from the round-1 policy?** We tried: with the KL measured against the round-1 policy, the
  distance from SFT adds up over rounds, and on `tiny` the round-2 reward rose while the annotator's win rate and
  the task accuracy fell well below round 1's (the measurement is in `wip/README.md`) — over-optimisation of a
  reward model that saw new votes on two tasks only. Iterated RLHF at scale (Llama 2) does continue from the last
  policy, with far more votes per round than this loop has.
- The value model starts from the new reward model; the prompts are round 1's PPO prompts.
- On `tiny`: 12 iterations, 1–4 minutes depending on the CPU (`wall_s` below).
""")

code("""
# from out2/sft (round 1's SFT model), as in round 1, for half its iterations
ppo2 = stages.run_ppo(profile, out2, save_every=0, iterations=s["ppo"]["iterations"] // 2)
keys = ("iterations", "episodes", "reward_start", "reward_end", "kl_end", "eos_rate_end", "kl_alarm", "wall_s")
display(pd.DataFrame([{k: s["ppo"][k] for k in keys}, {k: ppo2[k] for k in keys}], index=["round 1", "round 2"]))
""")

md("""
*Restart here:* after a kernel restart you do not need to train round 2 again. Run the cells above except three:
section 4's first cell, which starts round 2 afresh (it deletes `round2/` with its votes, reward model and policy), and
the two that train (section 6's `stages.run_reward`, section 7's `stages.run_ppo`). In their places:
`out2 = out / "round2"` and the first cell's lines from `def fingerprint` on (the outcomes compare round 1's models
with these fingerprints: after a restart, that checks only what changed since), `m2 = checkpoints.read_json(out2 /
"reward" / "metrics.json")` and
`ppo2 = checkpoints.read_json(out2 / "rlhf" / "metrics.json")`: they reload round 2's numbers. The votes cast again
count once (section 4).

The harness on round 2's folder: the SFT model and the round-2 policy, the mean reward by round 2's reward model,
and the annotator's head-to-head against SFT on the same held-out prompts as in section 1:
""")

code("""
results2 = stages.run_eval(profile, out2, models=("sft", "rlhf"))
print("round-2 RLHF vs SFT (annotator):", results2["rlhf"]["head_to_head_vs_sft"])
""")

md("""
## 8. Round over round

- Each round's reward model is normalised on SFT samples (mean 0, standard deviation 1), but the two are different
  judges: a reward from one is not a reward from the other. The judges that stay the same across rounds are the
  task checkers and the annotator.
""")

code("""
r1, r2 = results["rlhf"], results2["rlhf"]
rounds = {}
for k, (rm_metrics, ppo_metrics, res) in {1: (s["reward"], s["ppo"], r1), 2: (m2, ppo2, r2)}.items():
    rounds[f"round {k}"] = {
        "reward model: training pairs": rm_metrics["n_train_pairs"],
        "RM accuracy, round-1 held-out pairs": rm_acc[k]["old"], "RM accuracy, held-out new votes": rm_acc[k]["new"],
        "PPO iterations": ppo_metrics["iterations"], "PPO reward, start": ppo_metrics["reward_start"],
        "PPO reward, end": ppo_metrics["reward_end"], "KL to its reference, end": ppo_metrics["kl_end"],
        "task accuracy": res["task_accuracy"],
        "held-out entity accuracy": res["heldout_entity_accuracy"], "mean reward (own round's RM)": res["mean_reward"],
        "annotator win rate vs SFT": res["win_rate_vs_sft"]}
display(pd.DataFrame(rounds).round(4))
""")

md("""
The same greedy answers scored by **both** reward models — how each judge sees each policy:
""")

code("""
prompts_eval = alpaca_prompts(eval_recs)
policies = {"sft": results["sft"], "rlhf, round 1": r1, "rlhf, round 2": r2}
mean_reward = lambda model, res: model.score(prompts_eval, res["responses"], res["ended"]).mean().item()  # noqa: E731
display(pd.DataFrame({name: {f"mean reward by RM of round {k}": mean_reward(m, res) for k, m in reward_models.items()}
                      for name, res in policies.items()}).T.round(4))
""")

code("""
evaluate.plot_eval(policies)
plt.show()
duel = annotator.win_rate(world, eval_recs, r2["responses"], r1["responses"], r2["ended"], r1["ended"])
print("round-2 policy vs round-1 policy (annotator):", duel)
""")

md("""
Round 2's own report — the SFT model it shares with round 1, its reward model, its PPO run and its evaluation:
""")

code("""
print(stages.stage_table(stages.write_report(out2)))
""")

md("""
## 9. Outcomes

The structural checks run on every profile:

- every battle has exactly one vote, a retried vote changed nothing (section 4), and the export holds exactly the
  A-better and B-better votes;
- round 2's reward model trained and was judged on old + new pairs, nothing lost, and no prompt held out in round 1
  was trained on;
- round 1's models are byte for byte what they were; PPO's KL never stayed negative.
""")

code("""
assert sum(counts.values()) == len(battles), "every battle has exactly one vote"
assert m2["n_train_pairs"] + m2["n_eval_pairs"] == len(old_pairs) + len(new_pairs), "round 2 trains on old + new"
assert len(held_old) == sum(p["split"] == "eval" for p in old_pairs), "round 1's held-out pairs are held out again"
assert not {p["prompt"] for p in pairs2 if p["split"] == "train"} & old_eval_prompts
assert {name: fingerprint(out / name) for name in round1} == round1, "round 1's models are untouched"
assert not ppo2["kl_alarm"], "KL stayed negative: log-probabilities of policy and reference disagree"
""")

md("""
On **`tiny`** (what CI runs), the outcome of the loop:

- round 2's reward model ranks the held-out new votes (RLHF vs SFT) **no worse than noise allows** than round 1's.
  Counted on the pairs the two models rank differently (McNemar's test): round 2 may get at most max(2, 2·√n) more
  of those n pairs wrong than right, about two standard errors, since on a few dozen held-out votes a pair or two
  either way is noise. It can go either way: in the run shown here round 2 ranked as many of the 38 right
  (0.737 → 0.737); in a bf16 run, 2 of 45 fewer (0.756 → 0.711). A fixed drop in points would not do: the number of held-out votes depends on the machine's answers,
  and under 40 of them two pairs are more than 5 points;
- and it has **not forgotten** round 1: on round 1's held-out pairs the same test holds;
- the second PPO run raises its own reward with the KL bounded.

Whether the round-2 *policy* is better is not asserted: that is the question the loop exists to ask, answered below
by the judges that do not change between rounds. A few hundred votes move a reward model a little, and the win rate
on a few dozen decisive pairs moves a few points by chance alone.
""")

code("""
check = profile == "tiny"
THRESHOLDS = {"max_kl": 2.0}  # tiny profile: twice the KL ceiling's target (notebook 05)
print(f"RM accuracy, held-out new votes ({len(held_new)}): round 1 {rm_acc[1]['new']}, round 2 {rm_acc[2]['new']}")
print(f"RM accuracy, round 1's held-out pairs ({len(held_old)}): round 1 {rm_acc[1]['old']}, round 2 {rm_acc[2]['old']}")
print(f"PPO round 2: its reward {ppo2['reward_start']:+.3f} → {ppo2['reward_end']:+.3f}, KL {ppo2['kl_end']:.3f}")


def rank_change(pairs) -> int:
    \"\"\"McNemar on the pairs the two rounds' reward models rank differently: +1 when round 2 gets more of those n
    pairs wrong than right by more than max(2, 2·√n), −1 when it gets more right by as much, 0 within noise.\"\"\"
    right = [[m > 0 for m in reward.pairwise_accuracy(rm.model, rm.tokenizer, pairs)["margins"]]
             for rm in (reward_models[1], reward_models[2])]
    lost, gained = (sum(a and not b for a, b in zip(*right)), sum(b and not a for a, b in zip(*right)))
    noise = max(2, 2 * (lost + gained) ** 0.5)
    return 1 if lost - gained > noise else -1 if gained - lost > noise else 0


if check:
    assert rank_change(held_new) < 1, "round 2's reward model ranks the held-out new votes worse than noise allows"
    assert rank_change(held_old) < 1, "the RM forgot round 1: it ranks round 1's held-out pairs worse"
    assert ppo2["reward_end"] > ppo2["reward_start"], "PPO should raise the round-2 reward"
    assert ppo2["kl_end"] <= THRESHOLDS["max_kl"], "the KL penalty should keep round 2 near its start"
""")

md("""
**Did the policy get better?** Not asserted, because it is the question the loop exists to ask, and the answer
depends on the round: the judges that do not change between rounds — the annotator and the task checkers — decide it,
not the reward model being optimised:
""")

code("""
w1, w2 = r1["win_rate_vs_sft"], r2["win_rate_vs_sft"]
print(f"reward the optimiser saw: {ppo2['reward_start']:+.3f} → {ppo2['reward_end']:+.3f} (round-2 reward model)")
print(f"annotator win rate vs SFT: round 1 {w1:.3f} → round 2 {w2:.3f}; "
      f"task accuracy {r1['task_accuracy']:.3f} → {r2['task_accuracy']:.3f}")
if w2 < w1:
    print("→ round 2's policy is not better: its own reward rose, but the annotator liked its answers less than round 1's.")
    how = {-1: "better than", 1: "worse than", 0: "about as well as (within noise)"}[rank_change(held_new)]
    print(f"  Its reward model ranks the {len(held_new)} held-out new votes {how} round 1's "
          f"({rm_acc[1]['new']} → {rm_acc[2]['new']}); a better rank there would not make it a better judge")
    print("  everywhere:", end=" ")
    print("the new votes covered two tasks only, and a reward model is trustworthy only near what it was trained on.")
    if ppo2["iterations"] < s["ppo"]["iterations"]:
        print(f"  And round 2 optimised for {ppo2['iterations']} iterations, round 1 for {s['ppo']['iterations']}: a "
              f"policy trained half as long (KL to SFT {ppo2['kl_end']:.2f} against {s['ppo']['kl_end']:.2f}) is not a "
              f"verdict on its reward model.")
else:
    print("→ round 2 improved on round 1 in the annotator's eyes, not only in its own reward model's.")
""")

md("""
## What just happened

- The harness compared base, SFT and RLHF on held-out prompts, and the summary table showed each stage's real input,
  artifact and measured outcome — the whole course in one table, from `report.json`.
- The loop turned once more. The simulated annotator voted on the current models exactly as a person in the arena
  does — same store, same call, same export — and a retried vote counted once. The exported pairs joined round 1's,
  the reward model was retrained with round 1's held-out prompts still held out, and PPO ran again from the SFT model
  against it (half as many iterations), in a folder of its own.
- The round-over-round table separates the judges: each reward model on held-out pairs, each policy under both
  reward models, and the annotator and the task checkers — the judges that do not change between rounds. Whether or
  not the new reward model ranks the new votes better, its held-out accuracy does not by itself make a better
  policy: the last cell says which way this run went, and why a loop needs a judge it does not optimise.
- `lab app compare --out runs/<profile>/round2` serves the SFT model and the round-2 policy side by side.

## On a GPU (profile `full`)

- `LAB_PROFILE=full` runs the same notebook with the `full` settings: a hub model with LoRA, longer responses and
  bigger batches, and round 2's PPO from the SFT model again, with the new reward model (half of round 1's
  iterations, as here).
- The annotator only knows the synthetic world, so on `full` it still judges world prompts. Real feedback comes from
  people in the arena (`lab app arena --host 0.0.0.0 --auth …`): their votes go through `votes.db` and the export
  exactly as the annotator's did here, and join `new_pairs` the way the tip in section 5 shows.
- PPO runs data-parallel under `accelerate launch` or torchrun (DDP): `accelerate launch -m lab_utils.cli ppo
  --profile full --out runs/full/round2`. Each process answers its share of every global batch (`rollout_batch`,
  `mini_batch`) with samples of its own; advantages are whitened per process. Tested with two CPU processes. FSDP
  and DeepSpeed are refused in one line: they shard the weights, and PPO saves the main process's copy.
""")

save(str(Path(__file__).resolve().parents[2] / "labs" / "06_compare_and_iterate.ipynb"))
