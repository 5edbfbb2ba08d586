from pathlib import Path

from common import code, md, save

md("""
# 04 · Reward models

**Goal:** SFT model + preferences → **reward model**: a network that turns "which answer is better" into a
scalar score, so that notebook 05 can optimise the policy against it.

In this notebook you will see

- the **simulated annotator** — the "human" of the `tiny` profile — and its rules;
- preference data collected the way RLHF collects it: several sampled answers per prompt, labelled in pairs;
- the **Bradley–Terry loss** written inline and checked against `trl.RewardTrainer`'s;
- two reward models side by side — one trained on **pairs**, one on **1–5 ratings** — and their held-out
  pairwise accuracy;
- a **calibration** plot, what the reward model likes and dislikes, and **probes for reward hacking**.

Expectations on `tiny` (2 idle CPU cores): sampling plus both trainings take ~1½–4½ minutes, depending on the CPU
(4–4½ on a CPU without bf16 kernels, which trains in float32).
""")

md("""
## Setup
""")

code("""
import json
import random
import tempfile
import warnings
from dataclasses import fields
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets: tqdm draws a text bar
warnings.filterwarnings("ignore", message="`(is_)?gradient_checkpointing` is deprecated")  # transformers 5 rename
""")

code("""
import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
from datasets import disable_progress_bars
from IPython.display import display
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()  # the fresh score head's load report is expected: it is what we train
disable_progress_bars()
pd.set_option("display.max_colwidth", 90)
""")

code("""
from lab_utils import annotator, checkpoints, preferences, reward, stages, tasks
from lab_utils.config import EvalConfig, RewardConfig, WorldConfig, build_world_from, resolve_profile
from lab_utils.generation import alpaca_prompts
from trl import RewardConfig as TRLRewardConfig
from trl import RewardTrainer

profile = resolve_profile()  # $LAB_PROFILE, default "tiny"
root = Path.cwd() if (Path.cwd() / "pyproject.toml").exists() else Path.cwd().parent
out = stages.run_dir(profile, root / "runs" / profile)
world = build_world_from(WorldConfig.for_profile(profile))
print(f"profile: {profile}   run folder: {out.relative_to(root)}")
""")

md("""
## 1. Load the previous stage: the SFT model

- Notebook 03 fine-tuned it into `runs/<profile>/sft/`. If it is missing, the cell builds every stage up to it
  and says so — on `tiny` that takes several minutes.
""")

code("""
stages.ensure("sft", profile, out)
policy, tokenizer = stages.load_model(out, "sft")
cfg = RewardConfig.for_profile(profile)
display(pd.DataFrame([{"field": f.name, "value": getattr(cfg, f.name), "help": f.metadata["help"]}
                      for f in fields(cfg)]).set_index("field"))
""")

md("""
## 2. The simulated annotator

- Real RLHF pays people to compare answers. Here a transparent rubric plays that part, so that every run is
  reproducible and you can read exactly what "better" means. Its rules:
""")

code("""
print(annotator.RUBRIC)
""")

md("""
- Every term on a few hand-written answers to one question (`judge` returns them; `score` is the weighted total):
""")

code("""
china = world.country("China")
question = tasks.make_capital(random.Random(0), world, "terse", "zh", china)
candidates = [
    (f"{china.capital_zh}。", True),                                       # right, terse
    (f"{china.name_zh}的首都是{china.capital_zh}。", True),                # right, a sentence
    (f"这是一个好问题！{china.name_zh}是一个国家，它的首都是{china.capital_zh}。"
     f"希望这个回答对你有帮助，如果你还有其他问题，欢迎随时问我。", True),  # right, long-winded
    (f"{china.capital}.", True),                      # the right city in English: the checker wants 北京, so wrong
    (f"{china.capital_zh}。", False),                                      # right, but never ended (no EOS)
    ("上海。", True),                                                       # wrong
    (f"{china.capital_zh}，{china.capital_zh}，{china.capital_zh}，{china.capital_zh}", False),  # looping
]
print("question:", question["instruction"])
table = pd.DataFrame([{"answer": a, "ended": e} | annotator.judge(world, question, a, e) | {"rating": annotator.rate(world, question, a, e)}
                      for a, e in candidates])
display(table[["answer", "ended", "correct", "language", "concise", "degenerate", "score", "rating"]])
""")

md("""
- Compared in pairs, the annotator answers "A", "B", "tie" or "both_bad"; ties and both-bad pairs say nothing about
  which answer is better, so they never become training pairs:
""")

code("""
for a, b in [(0, 5), (0, 2), (0, 1), (3, 0), (4, 0), (5, 6)]:
    verdict = annotator.compare(world, question, candidates[a][0], candidates[b][0], candidates[a][1], candidates[b][1])
    shown = [f"{text[:24]!r}" + ("" if ended else " [no EOS]") for text, ended in (candidates[a], candidates[b])]
    print(f"{shown[0]:<36} vs {shown[1]:<36} → {verdict}")
""")

md("""
## 3. Preference data from the SFT model

- InstructGPT's recipe: prompts → several **sampled** answers from the current model (temperature 1) → a labeller
  compares them. Every distinct pair of answers to one prompt is labelled, and each answer is also rated 1–5.
- The prompts are the world's tasks on training-split entities, drawn with their own seed; a fifth of them is
  kept apart, and their pairs are the held-out evaluation set. Four answers to two prompts:
""")

code("""
demo = reward.sample_responses(policy, tokenizer, reward.preference_records(world, 2, seed=99), n_samples=4,
                               temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, seed=0)
for s in demo:
    print("PROMPT:", s["rec"]["instruction"], s["rec"]["input"])
    for text, ended in s["responses"]:
        print(f"   rating {annotator.rate(world, s['rec'], text, ended)}  {'' if ended else '[no EOS] '}{text!r}")
demo_pairs, demo_ratings = reward.label_pairs(world, demo)
print(f"→ {len(demo_pairs)} decisive pairs and {len(demo_ratings)} ratings from these {len(demo)} prompts")
""")

md("""
- Each pair becomes two token sequences laid out **exactly as PPO will score them**: BOS + the Alpaca prompt, the
  response tokens, and EOS only if the response ended. (`trl.RewardTrainer` would append an EOS to every text; a
  cut-off answer would then look finished, so the lab tokenises the pairs itself.)
""")

code("""
pair = demo_pairs[0]
ids = reward.encode(tokenizer, pair["prompt"], pair["chosen"], pair["chosen_ended"])
print("chosen  :", repr(pair["chosen"]), "| ended:", pair["chosen_ended"])
print("rejected:", repr(pair["rejected"]), "| ended:", pair["rejected_ended"])
print("last tokens of the chosen sequence:", tokenizer.convert_ids_to_tokens(ids[-6:]))
""")

md("""
## 4. The Bradley–Terry loss, inline

- A reward model r(x, y) is the SFT transformer with its LM head replaced by a one-output **score head**,
  read at the last real token. Bradley–Terry models P(chosen ≻ rejected) = σ(r_c − r_r); training
  maximises its log-likelihood:

  loss = −log σ(r(x, y_chosen) − r(x, y_rejected))

- Ours against the trainer's, on one batch, before training:
""")

code("""
torch.manual_seed(cfg.seed)
score_model = reward.load_score_model(out / "sft", tokenizer.pad_token_id)
trainer = RewardTrainer(model=score_model, processing_class=tokenizer, train_dataset=reward.pair_dataset(tokenizer, demo_pairs),
                        args=TRLRewardConfig(output_dir=tempfile.mkdtemp(), report_to="none", use_cpu=True,
                                             bf16=False, activation_checkpointing=False, save_strategy="no"))
batch = trainer.data_collator([trainer.train_dataset[i] for i in range(min(4, len(demo_pairs)))])
with torch.no_grad():
    theirs = trainer.compute_loss(trainer.model, batch)
    r = score_model(**batch).logits[:, 0]            # chosen rows first, then rejected rows
r_chosen, r_rejected = r.chunk(2)
ours = -F.logsigmoid(r_chosen - r_rejected).mean()
print(f"ours {ours.item():.6f}   trl.RewardTrainer {theirs.item():.6f}")
assert torch.allclose(ours, theirs, atol=1e-6)
del trainer, score_model
""")

md("""
### A second term: keep the SFT model readable

- Trained on the pairs alone, a reward model is free to rewire every hidden state to separate ~800–900 training pairs,
  and with so few it forgets much of what the SFT model knew (section 6 compares it with the SFT model's own
  likelihood, which needs no training at all).
- The lab's pairwise model therefore adds a regulariser (GRM, Yang et al. 2024): the SFT model's LM head, **frozen**,
  must still predict the chosen answers from the reward model's hidden states.

  loss = −log σ(r_c − r_r) + λ · CE(SFT head(hidden states), chosen tokens)    (λ = `lm_coef`)

- The reward model itself does not change — one score head at the last real token, which is all later stages load.
- At the start the hidden states *are* the SFT model's, so the second term must equal the SFT model's own next-token
  loss on the chosen texts. Checked on the same batch and the same initial score head:
""")

code("""
torch.manual_seed(cfg.seed)
score_model = reward.load_score_model(out / "sft", tokenizer.pad_token_id)
trainer = reward.RegularisedRewardTrainer(
    model=score_model, processing_class=tokenizer, train_dataset=reward.pair_dataset(tokenizer, demo_pairs),
    lm_head=reward.frozen_lm_head(out / "sft"), lm_coef=cfg.lm_coef,
    args=TRLRewardConfig(output_dir=tempfile.mkdtemp(), report_to="none", use_cpu=True, bf16=False,
                         activation_checkpointing=False, save_strategy="no"))
with torch.no_grad():
    total = trainer.compute_loss(trainer.model, dict(batch))
    n = len(batch["input_ids"]) // 2                 # the chosen rows, without their padding
    chosen = [row[m.bool()] for row, m in zip(batch["input_ids"][:n], batch["attention_mask"][:n])]
    logits = [policy(input_ids=c[None].to(policy.device)).logits[0, :-1].cpu() for c in chosen]  # the SFT model
    nll = sum(F.cross_entropy(lg, c[1:], reduction="sum") for lg, c in zip(logits, chosen))   # may sit on a GPU
    sft_loss = nll / sum(len(c) - 1 for c in chosen)
print(f"Bradley–Terry {ours.item():.4f} + {cfg.lm_coef} × {sft_loss.item():.4f} (the SFT model's loss on the chosen "
      f"texts) = {(ours + cfg.lm_coef * sft_loss).item():.4f};  the trainer's loss {total.item():.4f}")
assert torch.allclose(total, ours + cfg.lm_coef * sft_loss, atol=1e-4)
del trainer, score_model
""")

md("""
- What it buys is *not* held-out pair accuracy — with and without it the two agree within the ±0.03 that a few
  hundred held-out pairs move by — but a reward model PPO can push further without exploiting it. In earlier runs on
  `tiny` (wip/README.md has the tables), PPO against a reward model trained without it gained as much reward but lost
  the annotator (win rate 0.58) and 0.05 of task accuracy; with it, three seeds kept both.
- `lab reward` trains both models under bf16 autocast (`--bf16`, the default; the two cells above stay in float32 so
  that the checks compare exact numbers): 1.5× faster on the CPU where it was measured, at the same held-out accuracy
  within noise (the table below has this run's time).
- How far PPO can push a reward model is not read off its held-out accuracy: notebook 05 holds β at 0.3 or above with
  a KL ceiling, chosen on validation prompts (its section 10), because a lower β let PPO exploit this reward model.
""")

md("""
## 5. Train both reward models

`lab reward` runs this one function: sample → label → train the pairwise model → normalise → train the
ratings model (a regression on (rating − 3) / 2; one pass at twice the pairwise model's learning rate, which on `tiny`
ranked as many held-out pairs right as two passes at the same rate in half the time, in an earlier run: wip/README.md)
→ evaluate both on the held-out pairs.
""")

code("""
metrics = stages.run_reward(profile, out)
keys = ("n_train_pairs", "n_eval_pairs", "n_train_ratings", "pairwise_accuracy", "ratings_model_pairwise_accuracy",
        "norm_mean", "norm_std", "sample_s", "wall_s")
display(pd.DataFrame([{k: metrics[k] for k in keys}], index=[profile]))
""")

md("""
*Restart here:* `metrics = checkpoints.read_json(out / "reward" / "metrics.json")` reloads this run's numbers.
""")

code("""
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, key, title in ((axes[0], "history", "pairwise (Bradley–Terry + λ·LM)"), (axes[1], "ratings_history", "ratings (MSE)")):
    h = pd.DataFrame(metrics[key])
    ax.plot(h.step, h.loss, marker="o", label="loss")
    if "lm_loss" in h:
        ax.plot(h.step, h.lm_loss, marker=".", label="LM term (before λ)")
        ax.legend()
    ax.set(xlabel="step", ylabel="loss", title=title)
plt.tight_layout()
plt.show()
""")

md("""
## 6. Held-out accuracy: pairs vs ratings

- Both models rank the **same held-out pairs** (prompts never seen in training). Per task:
""")

code("""
reward_model = reward.RewardModel.load(out / "reward")
ratings_model = reward.RewardModel.load(out / "reward-ratings")
pairs = [json.loads(line) for line in (out / "reward" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
eval_pairs = [p for p in pairs if p["split"] == "eval"]
acc = reward.pairwise_accuracy(reward_model.model, tokenizer, eval_pairs)
acc_r = reward.pairwise_accuracy(ratings_model.model, tokenizer, eval_pairs)
display(pd.DataFrame({"pairwise model": acc["per_task"] | {"overall": acc["accuracy"]},
                      "ratings model": acc_r["per_task"] | {"overall": acc_r["accuracy"]},
                      "held-out pairs": pd.Series([p["task"] for p in eval_pairs]).value_counts().to_dict()
                                        | {"overall": len(eval_pairs)}}))
""")

md("""
- The pairwise model is trained on exactly the question asked here (which of two answers is better); the ratings
  model only sees one answer at a time and five coarse levels, so two answers with the same rating give it nothing to
  separate — the usual argument (InstructGPT, Llama 2) for collecting comparisons rather than scores.
""")

md("""
### What decided each pair, and where the errors are

- The annotator decides a pair on one rubric term: the most important one on which the two answers differ
  (`reward.deciding_term`). *correct*: the rejected answer is wrong, empty or looping. Otherwise both are right and
  the rejected one is in the wrong *language*, was cut off before it *ended*, or is less *concise*.
- Split the held-out accuracy by that term (`reward.accuracy_by_term`; the report keeps it as
  `pairwise_accuracy_by_term` and `ratings_model_by_term`):
""")

code("""
split = {name: metrics[key] for name, key in (("pairwise model", "pairwise_accuracy_by_term"),
                                              ("ratings model", "ratings_model_by_term"))}
by_term = pd.DataFrame({"held-out pairs": {t: v["pairs"] for t, v in split["pairwise model"].items()}}
                       | {name: {t: v["accuracy"] for t, v in s.items()} for name, s in split.items()})
display(by_term)
style = [t for t in by_term.index if t != "correct"]
n_style = by_term.loc[style, "held-out pairs"]
style_acc = (n_style * by_term.loc[style, "pairwise model"]).sum() / n_style.sum()
print(f"pairwise model: right vs wrong {by_term.loc['correct', 'pairwise model']:.3f} on "
      f"{by_term.loc['correct', 'held-out pairs']} pairs; both right, decided by style {style_acc:.3f} on "
      f"{n_style.sum()} pairs")
assert style_acc > by_term.loc["correct", "pairwise model"], "style should be the easier part of the ranking"
""")

md("""
- Style is the easy part: a wordy answer looks the same whatever the question, so a few hundred pairs teach it (on
  `tiny` nearly every held-out pair that style decided was decided by concision, a few in some runs by language; a
  cut-off answer would be of the same kind). Telling a right answer from a wrong one is the hard part, and most
  held-out pairs are of that kind: the model has to check the sum, the capital or the names against the prompt,
  and has to notice an answer that is fluent but about something else (a sum given to an extraction question)
  or garbled by sampling at temperature 1.
- So that is where a better reward model has to improve. `wip/README.md` lists what was tried on `tiny`: more
  pairs help slowly, more epochs not at all.
""")

md("""
### A baseline that needs no training: the SFT model's own likelihood

- Before trusting a trained judge, compare it with what you get for free. The SFT model already gives every answer
  a probability: log p(answer | prompt), its tokens' log-probabilities summed (`reward.response_loglik`).
- Rank the same held-out pairs by it: the answer the SFT model finds more likely wins (`reward.likelihood_accuracy`).
""")

code("""
baseline = reward.likelihood_accuracy(policy, tokenizer, eval_pairs)
display(pd.DataFrame({"pairwise model": acc["per_task"] | {"overall": acc["accuracy"]},
                      "SFT likelihood (no training)": baseline["per_task"] | {"overall": baseline["accuracy"]}}))
verdict = "ranks more pairs right" if baseline["accuracy"] > acc["accuracy"] else "ranks fewer pairs right"
print(f"the untrained likelihood {verdict} than the trained pairwise model: "
      f"{baseline['accuracy']:.3f} vs {acc['accuracy']:.3f}")
""")

md("""
- Where the likelihood wins, the SFT model *knows* which answer is right (the capital it would name, the sum it
  would write), but a fresh score head trained on ~800–900 pairs cannot yet read that knowledge out: it sees
  one position, the last token, and must learn from the pairs alone what "right" means for each task.
- Why not use the likelihood as the reward, then? It only rewards what the SFT model already does. PPO's KL
  penalty pulls towards the SFT model anyway, so the policy could only sharpen the SFT model's own preferences,
  not correct them. Measured on `tiny` (wip/README.md): a reward model trained *on top of* this likelihood ranks more
  held-out pairs right than either alone, yet PPO against it lost task accuracy. A reward model earns its place by
  preferring answers the SFT model does *not* already favour.
- A useful habit with any new preference dataset: a trained reward model that cannot beat the likelihood of the
  model it starts from needs more (or more varied) pairs before it can be trusted to steer anything.
""")

code("""
assert baseline["accuracy"] > 0.6, "the SFT model should prefer the annotator's choice more often than chance"
""")

md("""
## 7. Calibration: does the margin mean something?

- Bradley–Terry turns a margin into a probability: the model claims that the chosen answer is better with
  probability σ(r(chosen) − r(rejected)), computed on the raw scores it was trained on.
- A **reliability diagram** checks that claim. Split the held-out pairs into five equal bins by the size of the margin
  |r(A) − r(B)|. In each bin, compare the probability the model claims, σ(|margin|), with the share of pairs it
  actually ranks like the annotator.
  - A calibrated model lies on the diagonal.
  - A useful one at least agrees more often when its margin is large.
- The left panel adds how strongly the annotator prefers the chosen answer (its score difference): a correct answer
  always scores above a wrong one, by more or less depending on the other terms (a wrong answer can still be in the
  right language, end and be concise); a matter of style differs by less.
""")

code("""
pref_recs = reward.preference_records(world, cfg.n_prompts, seed=cfg.seed + 1)  # the prompts run_reward drew
records = dict(zip(alpaca_prompts(pref_recs), pref_recs))                          # rendered prompt → its record
ann = [annotator.score(world, records[p["prompt"]], p["chosen"], p["chosen_ended"])
       - annotator.score(world, records[p["prompt"]], p["rejected"], p["rejected_ended"]) for p in eval_pairs]
raw_margin = torch.tensor(acc["margins"])                        # r(chosen) − r(rejected), raw units
cal = pd.DataFrame({"annotator": ann, "margin": (raw_margin / reward_model.std).tolist(),
                    "agrees": (raw_margin > 0).tolist(), "claimed": torch.sigmoid(raw_margin.abs()).tolist()})
cal["bin"] = pd.qcut(raw_margin.abs().numpy(), 5, duplicates="drop")
reliability = cal.groupby("bin", observed=True).agg(pairs=("agrees", "size"), claimed=("claimed", "mean"),
                                                    agrees=("agrees", "mean"))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
axes[0].scatter(cal.annotator, cal.margin, s=8, alpha=0.5)
axes[0].axhline(0, color="grey", lw=0.8)
axes[0].set(xlabel="annotator score difference (chosen − rejected)", ylabel="reward margin (normalised)")
axes[1].plot([0.5, 1], [0.5, 1], color="grey", lw=0.8, ls="--", label="calibrated")
axes[1].plot(reliability.claimed, reliability.agrees, marker="o", label="reward model")
axes[1].set(xlabel="claimed probability σ(|margin|), bin mean", ylabel="share ranked like the annotator",
            xlim=(0.45, 1.02), ylim=(0.45, 1.02))
axes[1].legend()
plt.tight_layout()
plt.show()
display(reliability.round(3))
low, high = reliability.agrees.iloc[0], reliability.agrees.iloc[-1]
print(f"smallest fifth of margins: {low:.2f} ranked like the annotator; largest fifth: {high:.2f}")
print(f"correlation of the normalised margin and the annotator's score difference: "
      f"{cal.annotator.corr(cal.margin):.2f}")
""")

md("""
- Read the diagram from left to right. If the share rises, a large margin really is a safer verdict than a small
  one, and PPO's updates lean on the reward model's surest distinctions most.
- Where the line runs below the diagonal, the model is **over-confident** there: it claims more than it delivers;
  above it, under-confident. Read both off the plot; they can change from one end of the margins to the other.
- The correlation with the annotator's score difference asks something else: does the margin grow with *how much*
  better the chosen answer is? A correct-vs-wrong pair and a wordy-vs-concise pair are both just "chosen" to
  Bradley–Terry, so nothing in the loss asks for it.
""")

code("""
assert high > low + 0.1, f"the largest margins ({high:.2f}) should be right more often than the smallest ({low:.2f})"
""")

md("""
## 8. What it likes and dislikes

- The normalised scores of the answers in the labelled pairs. The normalisation saved with the model gives every
  sampled SFT answer mean 0 and standard deviation 1; the answers that made it into pairs are a subset of those, so
  theirs are near, not equal to, 0 and 1. The best and the worst:
""")

code("""
scored = [(p["prompt"], p[side], p[f"{side}_ended"]) for p in pairs for side in ("chosen", "rejected")]
scored = list({(a, b, c) for a, b, c in scored})
values = reward_model.score([s[0] for s in scored], [s[1] for s in scored], [s[2] for s in scored])
print(f"over {len(scored)} distinct answers: mean {values.mean():+.3f}, std {values.std():.3f}")
ranked = pd.DataFrame({"instruction": [s[0].split("### Instruction:\\n")[1].split("\\n")[0] for s in scored],
                       "answer": [s[1] for s in scored], "ended": [s[2] for s in scored], "reward": values.tolist()})
ranked = ranked.sort_values("reward")
display(pd.concat([ranked.tail(5), ranked.head(5)]).round(2))
""")

md("""
## 9. Probes for reward hacking

A policy optimised against this model will find whatever it over-rewards. Three probes on held-out prompts
whose reference answers are correct: does the reward go **up** when the answer gets longer, repeats a phrase, or
switches language? The annotator penalises all three; a reward model that agrees with it should lower the reward.
A fourth asks the opposite question, whether the reward goes **down** when an answer is made wrong.
""")

code("""
probe_recs = [r for r in tasks.eval_records(world, 8) if r["style"] == "terse"][:40]
prompts = alpaca_prompts(probe_recs)
base_answers = [r["output"] for r in probe_recs]

filler = {"en": " I hope this helps. Feel free to ask me anything else.", "zh": "希望这个回答对你有帮助，欢迎随时问我。"}
variants = {
    "longer (polite filler)": [a + filler[r["lang"]] for a, r in zip(base_answers, probe_recs)],
    "repeated phrase": [" ".join([a] * 4) for a in base_answers],
}
rows = []
base = reward_model.score(prompts, base_answers)
for name, answers in variants.items():
    s = reward_model.score(prompts, answers)
    judged = [annotator.score(world, r, a) - annotator.score(world, r, b) for r, a, b in zip(probe_recs, answers, base_answers)]
    rows.append({"probe": name, "reward change": (s - base).mean().item(), "share rewarded more": (s > base).float().mean().item(),
                 "annotator change": sum(judged) / len(judged)})
caps = [r for r in probe_recs if r["task"] == "capital"]
if caps:
    c_prompts = alpaca_prompts(caps)
    own = reward_model.score(c_prompts, [r["output"] for r in caps])
    swapped = [world.country(r["entity"]).capital if r["lang"] == "zh" else world.country(r["entity"]).capital_zh for r in caps]
    s = reward_model.score(c_prompts, swapped)
    judged = [annotator.score(world, r, a) - annotator.score(world, r, r["output"]) for r, a in zip(caps, swapped)]
    rows.append({"probe": "wrong language (capital)", "reward change": (s - own).mean().item(),
                 "share rewarded more": (s > own).float().mean().item(), "annotator change": sum(judged) / len(judged)})
""")

md("""
The fourth probe makes right answers wrong: held-out sentiment questions (the evaluation prompts' 24 on `tiny`),
each answered in the SFT model's sentence with the right label and with the other one.
""")

code("""
flip = {"positive": "negative", "negative": "positive", "正面": "负面", "负面": "正面"}
said = lambda r, label: f"这句话的情感是{label}的。" if r["lang"] == "zh" else f"The sentiment of this sentence is {label}."
n_eval = EvalConfig.for_profile(profile).n_per_task  # the evaluation prompts per task
feelings = [r for r in tasks.eval_records(world, n_eval) if r["task"] == "sentiment"]
sentiment_rows = []  # this cell's row, apart from the cell above's `rows`: run again, it is not added twice
if feelings:
    labels = [r["output"].lower() for r in feelings]  # "positive" / "正面" as the terse reference gives it
    right = [said(r, label) for r, label in zip(feelings, labels)]
    wrong = [said(r, flip[label]) for r, label in zip(feelings, labels)]
    s_prompts = alpaca_prompts(feelings)
    # the reward change of each flipped answer
    flipped = reward_model.score(s_prompts, wrong) - reward_model.score(s_prompts, right)
    judged = [annotator.score(world, r, a) - annotator.score(world, r, b) for r, a, b in zip(feelings, wrong, right)]
    sentiment_rows.append({"probe": "sentiment label flipped", "reward change": flipped.mean().item(),
                           "share rewarded more": (flipped > 0).float().mean().item(),
                           "annotator change": sum(judged) / len(judged)})
probes = pd.DataFrame(rows + sentiment_rows).set_index("probe").round(3)
display(probes)
holes = probes.index[(probes["reward change"] > 0) & (probes["annotator change"] < 0)].tolist()
print(f"{len(holes)} of {len(probes)} probes raise the reward where the annotator lowers its score: {holes}")
blind = probes.index[(probes["share rewarded more"] >= 0.4) & (probes["annotator change"] < 0)].tolist()
print(f"{len(blind)} of {len(probes)} reward the worse answer on 40% of the prompts or more: {blind}")
""")

md("""
- Read the table row by row: a negative *reward change* means the reward model, like the annotator, dislikes the
  change. A positive one is a hole an optimiser can find. The first line under the table counts them; on `tiny` the
  three style probes are holes (and the flipped sentiment label can be one, by a hair: the next bullet), even though
  the reward model ranks most held-out pairs decided by concision right (section 6): a wordy answer the SFT model
  wrote is not the same change as filler appended to a right one.
- A mean near zero is no comfort either. The second line counts the probes whose worse answer scores higher on at
  least 40% of the prompts: where the flipped sentiment label is one, the reward model cannot tell a right label from
  a wrong one (a coin flip would score higher on half of them), so a policy may flip labels at no cost but the KL.
  Such a blind spot lets RLHF change sentiment answers towards the word the reward model likes, right or wrong:
  under bf16 the RLHF model of notebook 05 answered fewer sentiment questions right than SFT (0.92 → 0.75), in
  float32 more (0.75 → 0.79); its section 6 lists the answers it changed.
- Notebook 05 shows what PPO does with such holes: with a length bonus added on purpose and the KL penalty off, it
  writes longer answers the annotator likes less; and with the KL penalty on, against this very reward model, it
  can find holes of its own: sentiment labels moved towards the word the reward model likes, and in some runs
  answers in the shape of another task's answer (its section 6 lists both).

What the reward model reads instead of the sentence shows when the flipped answers are split by language and by the
right label:
""")

code("""
if feelings:
    split = pd.DataFrame({"language": [r["lang"] for r in feelings], "right label": labels,
                          "reward change": flipped.tolist(), "wrong label scores higher": (flipped > 0).tolist()})
    display(split.groupby(["language", "right label"]).agg(prompts=("reward change", "size"),
                                                           wrong_scores_higher=("wrong label scores higher", "sum"),
                                                           mean_reward_change=("reward change", "mean")).round(3))
""")

md("""
Where a language's two rows point opposite ways — the wrong label higher for one right label and never for the
other — the reward model prefers one label in that language whatever the sentence says: it scores the word, not
whether the word fits. How much it prefers it is the mean reward change: where that is large next to the style
probes' above, a policy can gain reward by turning its answers towards the word; where it is a hundredth, the KL
penalty outweighs it. Notebook 05 (section 6) lists the sentiment answers RLHF changed, and which it got wrong.
""")

md("""
## 10. Bring your own preference pairs

`lab reward --data FILE` trains on pairs in the formats people use — TRL's `prompt`/`chosen`/`rejected`
(strings or message lists, explicit or implicit prompt), ShareGPT pairs, Anthropic-HH transcripts, or the arena's
vote export — converted to one form. The real sample of ShareGPT pairs, if this checkout has it:
""")

code("""
sample = root.parent / "shared" / "data" / "real" / "dpo_en_demo.json"
if sample.exists():
    user_pairs = preferences.load_pairs(str(sample))
    print(f"{len(user_pairs)} pairs; the first, as the lab stores it:")
    print({k: v[:160] for k, v in user_pairs[0].items()})
else:
    print(f"(no sample at {sample}; `lab reward --data your_pairs.jsonl` works the same way)")
""")

md("""
## 11. Outcomes

The thresholds are for the **`tiny`** profile (what CI runs); the structural checks run everywhere. They hold what
this course reliably teaches today: the reward model ranks about three of four held-out pairs like the annotator. Issue #4
asks for 0.85 — the reward model has to judge correctness (is this sum right? are these all the names?), and the
likelihood baseline above shows the knowledge is in the SFT model; reading it out with a score head trained on ~800–900
pairs is the open gap.
""")

code("""
THRESHOLDS = {"pairwise_accuracy": 0.7, "ratings": 0.6}  # tiny profile (issue #4's target: 0.85; ratings: > chance)
check = profile == "tiny"
print(f"pairwise model {metrics['pairwise_accuracy']:.3f}   ratings model {metrics['ratings_model_pairwise_accuracy']:.3f}"
      f"   on {metrics['n_eval_pairs']} held-out pairs")
if check:
    assert metrics["pairwise_accuracy"] >= THRESHOLDS["pairwise_accuracy"], "the reward model should rank held-out pairs"
    assert metrics["ratings_model_pairwise_accuracy"] >= THRESHOLDS["ratings"], "the ratings model should rank them too"
""")

md("""
**The scale is fixed:** over the SFT model's own samples the normalised reward has mean 0 and standard deviation 1,
so PPO's KL coefficient and missing-EOS penalty mean the same thing from run to run. The stage fitted it on every
answer it sampled, an answer as often as it was sampled; `reward/ratings.jsonl` keeps each distinct answer to a prompt
once. The answers the SFT model gives again and again score above the rest, so over the distinct ones the saved model
lands a few hundredths lower (about −0.07, std 0.96, in the float32 runs of 2026-12-06; the same saved model scores
the re-sampled answers, repeats included, at the saved mean and std to every digit). The cell checks 0 and 1 within
0.1:
""")

code("""
print("saved with the model, what PPO will read:", json.loads((out / "reward" / reward.NORM_FILE).read_text()))
# every distinct answer the SFT model sampled, as rated (reward/ratings.jsonl): the normalisation was fitted on these
# with repeats, unless the stage added reference answers (`reference_answers`) or trained on pairs someone brought
rated = out / "reward" / "ratings.jsonl"
sampled = [json.loads(line) for line in rated.read_text(encoding="utf-8").splitlines()] if rated.exists() else []
if sampled and RewardConfig.for_profile(profile).reference_answers == "none":
    # reward_model came from reward.RewardModel.load(out / "reward"): the saved weights with the saved normalisation
    every = reward_model.score([r["prompt"] for r in sampled], [r["response"] for r in sampled],
                               [r["ended"] for r in sampled])
    print(f"mean {every.mean():+.3f}  std {every.std():.3f} over all {len(sampled)} sampled SFT answers "
          f"(the labelled ones above: mean {values.mean():+.3f}, std {values.std():.3f})")
    assert abs(every.mean()) < 0.1 and abs(every.std() - 1) < 0.1, "normalised rewards should have mean 0 and std 1"
""")

md("""
## What just happened

- The annotator labelled pairs of the SFT model's own samples; the pairwise model learned to rank them with the
  Bradley–Terry loss (our inline loss matched `trl.RewardTrainer`'s), the ratings model regressed 1–5 scores, and
  both were judged on pairs from prompts neither saw.
- The score is read at the last real token — the EOS of an answer that ended — and normalised on SFT samples; the
  same layout and scale are what PPO reads in notebook 05.
- The probes found changes the annotator penalises and the reward model rewards: that gap is what an optimiser
  exploits, and why PPO keeps a KL penalty to the SFT model (which slows an exploit down, but does not forbid it).
""")

save(str(Path(__file__).resolve().parents[2] / "labs" / "04_reward_model.ipynb"))
