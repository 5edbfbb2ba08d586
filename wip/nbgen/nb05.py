from pathlib import Path

from common import code, md, save

md("""
# 05 · RLHF with PPO

**Goal:** SFT model + reward model → **RLHF model**: the policy is optimised to earn reward, while a KL penalty keeps
it close to the SFT model it started from.

TRL no longer ships a PPO trainer, so the lab has its own (`lab_utils.ppo`, with the tensor math in
`lab_utils.ppo_math`). In this notebook you will see

- the four models of PPO and the implementation details that make it work for language models;
- the pieces written inline — KL-shaped per-token rewards, GAE, the clipped objective — checked against the package
  on a real rollout;
- training with a **live plot** of reward and KL;
- the same prompts answered before and after, and the **head-to-head** of RLHF against SFT, judged by the annotator;
- **reward hacking**: a deliberately flawed reward model, no KL penalty — reward goes up while the annotator's
  verdict goes down;
- the same reward optimised with TRL's maintained **`RLOOTrainer`**, side by side;
- **DPO** with TRL's `DPOTrainer`: the policy trained on notebook 04's preference pairs directly, with no reward
  model, and judged like PPO's.

Expectations on `tiny` (2 idle CPU cores): the main PPO run takes ~2–8 minutes, DPO about 1–3, depending on the
CPU.
""")

md("""
## Setup
""")

code("""
import re
import tempfile
import time
from collections import Counter
import warnings
from dataclasses import fields
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", message="`(is_)?gradient_checkpointing` is deprecated")
""")

code("""
import matplotlib.pyplot as plt
import pandas as pd
import torch
from datasets import disable_progress_bars
from IPython.display import clear_output, display
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()
disable_progress_bars()
pd.set_option("display.max_colwidth", 90)
""")

code("""
from lab_utils import annotator, checkpoints, evaluate, graders, modeling, ppo, ppo_math, reward, stages, tasks
from lab_utils.config import EvalConfig, PPOConfig, WorldConfig, build_world_from, resolve_profile
from lab_utils.generation import alpaca_prompts, generate_ended

profile = resolve_profile()  # $LAB_PROFILE, default "tiny"
root = Path.cwd() if (Path.cwd() / "pyproject.toml").exists() else Path.cwd().parent
out = stages.run_dir(profile, root / "runs" / profile)
world = build_world_from(WorldConfig.for_profile(profile))
print(f"profile: {profile}   run folder: {out.relative_to(root)}")
""")

md("""
## 1. Load the previous stages: SFT model and reward model

- Notebooks 03 and 04 built them; if they are missing, the cell builds every stage up to the reward model and says so.
""")

code("""
stages.ensure("reward", profile, out)
cfg = PPOConfig.for_profile(profile)
display(pd.DataFrame([{"field": f.name, "value": getattr(cfg, f.name), "help": f.metadata["help"]}
                      for f in fields(cfg)]).set_index("field"))
""")

md("""
## 2. Four models

| model | starts as | trained? | role |
|---|---|---|---|
| policy | SFT model | yes | writes the responses |
| reference | SFT model | frozen | the KL penalty keeps the policy near it |
| value model | reward model | yes | predicts the return from each token on (the critic) |
| reward model | reward model | frozen | scores a finished response (normalised: mean 0, std 1 on SFT samples) |

With LoRA (profile `full`) the reference is the policy with its adapter switched off — no second copy in memory.
""")

code("""
policy, ref_model, value_model, reward_model, tokenizer = ppo.load_models(cfg, out / "sft", out / "reward")
prompts = alpaca_prompts(tasks.sft_records(world, cfg.n_prompts, seed=cfg.seed + 2))  # the prompts run_ppo uses
trainer = ppo.PPOTrainer(cfg, policy, ref_model, value_model, reward_model, tokenizer, prompts,
                         log=lambda *_: None)
print(f"PAD {tokenizer.pad_token!r} ≠ EOS {tokenizer.eos_token!r}; prompts are left-padded: {tokenizer.padding_side}")
print(f"{len(prompts)} training prompts, {cfg.rollout_batch} per iteration; "
      f"reward normalisation mean {reward_model.mean:+.3f} std {reward_model.std:.3f}")
""")

md("""
## 3. One rollout, and the pieces inline

- Sample a response to 8 prompts (temperature T, top-k 0, top-p 1), truncate after the first EOS, and compute
  everything PPO needs. The first rows:
""")

code("""
torch.manual_seed(0)
b = trainer.rollout(prompts[:8])
texts = tokenizer.batch_decode([r[m.bool()] for r, m in zip(b["response"], b["loss_mask"])],
                               skip_special_tokens=True)
display(pd.DataFrame({"instruction": [p.split("### Instruction:\\n")[1].split("\\n")[0] for p in prompts[:8]],
                      "response": texts, "ended": b["ended"].tolist(), "score": b["raw_scores"].tolist(),
                      "KL (sum)": b["kl"].sum(1).tolist()}).round(3).head(5))
""")

md("""
**KL-shaped rewards.** Every response token gets −β·(log π(y_t) − log π_ref(y_t)); the reward model's score (minus
a fixed penalty when there is no EOS) is added at the **last real token** only. At this first rollout the policy
*is* the reference (the KL column above is 0), so the same computation is checked a second time on log-probabilities
moved away from the reference's, where a wrong sign or a wrong β would show:
""")

code("""
beta = trainer.kl_ctl.value
scores = b["raw_scores"] + cfg.missing_eos_penalty * (~b["ended"]).float()
kl = (b["logprobs"] - b["ref_logprobs"]) * b["loss_mask"]
rewards = -beta * kl
last = b["loss_mask"].sum(1).long() - 1
rewards[torch.arange(len(last)), last] += scores
pkg_rewards, _ = ppo_math.kl_shaped_rewards(b["scores"], b["logprobs"], b["ref_logprobs"], b["loss_mask"], beta)
print("row 0 rewards:", [round(x, 3) for x in rewards[0, : last[0] + 1].tolist()])
assert torch.allclose(rewards, pkg_rewards, atol=1e-6)

moved = b["logprobs"] + 0.1 * torch.randn(b["logprobs"].shape, generator=torch.Generator().manual_seed(0))
shaped = -beta * (moved - b["ref_logprobs"]) * b["loss_mask"]
shaped[torch.arange(len(last)), last] += scores
pkg_shaped, pkg_kl = ppo_math.kl_shaped_rewards(b["scores"], moved, b["ref_logprobs"], b["loss_mask"], beta)
print(f"moved log-probs: KL per response {pkg_kl.sum(1).mean().item():+.3f}, "
      f"max |ours − package| {(shaped - pkg_shaped).abs().max().item():.1e}")
assert pkg_kl.abs().sum() > 0 and torch.allclose(shaped, pkg_shaped, atol=1e-6)
""")

md("""
**GAE** (γ = 1, λ = 0.95), backwards through the response: δ_t = r_t + γ·V_{t+1} − V_t, A_t = δ_t + γλ·A_{t+1},
with V = 0 after the last real token. Returns = A + V are the value model's targets:
""")

code("""
values, loss_mask = b["values"], b["loss_mask"]
adv = torch.zeros_like(values)
running = torch.zeros(len(values))
for t in reversed(range(values.shape[1])):
    next_value = values[:, t + 1] * loss_mask[:, t + 1] if t + 1 < values.shape[1] else torch.zeros(len(values))
    delta = rewards[:, t] + cfg.gamma * next_value - values[:, t]
    running = (delta + cfg.gamma * cfg.lam * running) * loss_mask[:, t]
    adv[:, t] = running
pkg_adv, pkg_returns = ppo_math.gae(pkg_rewards, values, loss_mask, cfg.gamma, cfg.lam)
print("max |ours − package|:", (adv - pkg_adv).abs().max().item())
assert torch.allclose(adv, pkg_adv, atol=1e-5)
""")

md("""
**The clipped objective.** With ratio ρ = π_new / π_old and whitened advantages A:
L = −E[min(ρA, clip(ρ, 1−ε, 1+ε)A)]. Before its first update the policy has not moved, so on this rollout (here one
minibatch of 8) ρ = 1 exactly, the clip fraction is 0 and the approximate KL is 0 — the check that rollout and
training compute log-probabilities the same way (same temperature, padding and positions, and the same bf16 autocast:
recomputed in float32 instead, the ratio drifted to about 1.0006 when this notebook was written — small, but exactly
the kind of mismatch this check exists to catch). With ρ = 1 and whitened advantages both losses are 0 whatever the
clip does, so the loss itself is compared on log-probabilities moved as an update would move them, where some ratios
leave [1 − ε, 1 + ε]:
""")

code("""
A = ppo_math.masked_whiten(pkg_adv, loss_mask)
with trainer.autocast():  # the precision the rollout used
    logits = ppo.response_logits(trainer.policy, b["query"], b["query_mask"], b["response"], loss_mask,
                                 cfg.temperature, trainer.vocab, trainer.pad_out)  # (None, None: no spare rows)
new_logprobs = ppo_math.logprobs_from_logits(logits, b["response"])
ratio = torch.exp(new_logprobs - b["logprobs"])
clipped = ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange)
ours = ppo_math.masked_mean(torch.max(-A * ratio, -A * clipped), loss_mask)
pkg, stats = ppo_math.policy_loss(new_logprobs, b["logprobs"], A, loss_mask, cfg.cliprange)
print(f"before the update: ratio mean {stats['ratio_mean'].item():.6f}, clipfrac {stats['clipfrac'].item()}, "
      f"approxkl {stats['approxkl'].item():.2e}")
assert abs(stats["ratio_mean"].item() - 1) < 1e-5 and stats["clipfrac"] == 0 and stats["approxkl"] < 1e-8

moved = new_logprobs + 0.3 * torch.randn(new_logprobs.shape, generator=torch.Generator().manual_seed(0))
ratio = torch.exp(moved - b["logprobs"])
clipped = ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange)
ours = ppo_math.masked_mean(torch.max(-A * ratio, -A * clipped), loss_mask)
unclipped = ppo_math.masked_mean(-A * ratio, loss_mask)
pkg, stats = ppo_math.policy_loss(moved, b["logprobs"], A, loss_mask, cfg.cliprange)
print(f"moved: loss ours {ours.item():+.6f} package {pkg.item():+.6f} (without the clip {unclipped.item():+.6f}); "
      f"clipfrac {stats['clipfrac'].item():.3f}")
assert torch.allclose(ours, pkg, atol=1e-6) and stats["clipfrac"] > 0 and not torch.allclose(ours, unclipped)
""")

md("""
## 4. Train, with a live plot

`stages.run_ppo` (what `lab ppo` runs) builds the same trainer and calls it iteration by iteration; the callback
redraws reward and KL every few iterations.

Every forward pass runs under bf16 autocast (`PPOConfig.mixed_precision`): the matmuls in bfloat16, the weights,
gradients, optimizer and log-probability math in float32. On CPUs with AVX512-BF16 a bf16 matmul has 2–4× the
throughput of a float32 one (`lab bench` on two 2-core hosts: 413 vs 176 and 853 vs 206 GFLOP/s); on the faster
host it made the PPO loop of the time (40 iterations of 32 episodes) 2.5× faster, 246 s → 99 s. The ratio-is-1 check above ran under the same autocast.

**β with a ceiling on the KL.** β (`kl_coef`) starts at 0.3, and a controller (Ziegler et al. 2019,
`ppo_math.AdaptiveKLController`) watches the KL of every rollout: when it runs over `kl_target` (1 nat per response),
β grows by up to ×1.2 per iteration; when it is back under, β falls back, never below 0.3 (`kl_floor`). A fixed β let
one seed of five run off to a KL of 3 and into the reward model's blind spots (section 10); with the ceiling, a seed's
KL can still jump above 2 for an iteration or two, but every seed ended between 0.6 and 1.1 nats. The middle plot
shows β beside the KL.
""")

code("""
trainer = policy = ref_model = value_model = None  # section 3's models, dropped: the stage builds its own

def live(trainer, row, every=5):
    if row["iteration"] % every and row["iteration"] != trainer.cfg.iterations:
        return
    h = pd.DataFrame(trainer.history)
    clear_output(wait=True)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    h.plot(x="iteration", y=["score", "rlhf_reward"], ax=axes[0], title="reward (normalised)")
    h.plot(x="iteration", y=["kl", "kl_coef"], ax=axes[1], title="KL(policy ‖ SFT) per response, and β")
    h.plot(x="iteration", y=["eos_rate", "clipfrac"], ax=axes[2], title="EOS rate, clip fraction")
    plt.tight_layout()
    plt.show()
    print(f"iteration {row['iteration']}/{trainer.cfg.iterations}: score {row['score']:+.3f}  kl {row['kl']:.3f}")

metrics = stages.run_ppo(profile, out, callback=live, log=lambda *_: None)
""")

md("""
`reward_start` is the mean score of the first 10% of iterations, `reward_end` and `kl_end` the means of the last 10%
(one iteration is a noisy estimate), so they differ from the last line the live plot printed:
""")

code("""
keys = ("iterations", "episodes", "episodes_per_s", "reward_start", "reward_end", "kl_end", "kl_coef_max", "kl_coef_end",
        "eos_rate_end", "kl_alarm", "wall_s")
display(pd.DataFrame([{k: metrics[k] for k in keys}], index=[profile]))
h = pd.DataFrame(metrics["history"])
display(h[["iteration", "score", "rlhf_reward", "kl", "entropy", "approxkl", "clipfrac", "ratio_mean", "value_loss",
           "eos_rate"]].iloc[[0, len(h) // 2, -1]].round(4))
""")

md("""
*Restart here:* after a kernel restart you do not need to train again. Run the cells above except the training cell
(sections 1–3 load the models and take one rollout: seconds), with
`metrics = checkpoints.read_json(out / "rlhf" / "metrics.json")` in its place: it reloads this run's numbers.

The table of sample responses: the trainer keeps four of each iteration's answers (`metrics["samples"]`, each with
the reward model's normalised score, before any missing-EOS penalty). Here those of the first, middle and last
iterations, each prompt shown by its instruction (and input, after "|"):
""")

code("""
samples = pd.DataFrame(metrics["samples"])
asked = samples["prompt"].str.extract(r"### Instruction:\\n(.*)\\n\\n### Response", flags=re.S)[0]
samples["asked"] = asked.str.replace("\\n\\n### Input:\\n", " | ", regex=False)
shown = {1, metrics["iterations"] // 2, metrics["iterations"]}
display(samples[samples["iteration"].isin(shown)][["iteration", "asked", "response", "score"]])
""")

md("""
## 5. Before and after

The same held-out prompts, answered greedily by the SFT and the RLHF model:
""")

code("""
sft_model, tok = stages.load_model(out, "sft")
rlhf_model, _ = stages.load_model(out, "rlhf")
show = [r for r in tasks.eval_records(world, 2)][::2][:6]
rows = {"instruction": [r["instruction"] + (" | " + r["input"] if r["input"] else "") for r in show]}
for name, model in (("sft", sft_model), ("rlhf", rlhf_model)):
    outs = generate_ended(model, tok, alpaca_prompts(show), 64)
    rows[name] = [t for t, _ in outs]
    rows[f"{name} reward"] = reward.RewardModel.load(out / "reward").score(alpaca_prompts(show), rows[name],
                                                                          [e for _, e in outs]).round(decimals=2).tolist()
display(pd.DataFrame(rows))
for r, answer in zip(show, rows["rlhf"]):
    if graders.off_task(r, answer):
        print(f"RLHF answered a {r['task']} question in the shape of another task's answer: {answer!r}")
""")

md("""
## 6. Evaluation: base, SFT and RLHF, and the head-to-head

The harness of notebooks 02–03 on every model, now with the mean reward of each model's greedy answers and, for
RLHF, the annotator's verdict against SFT on the same prompts (ties and both-bad pairs excluded).
`task_accuracy_unseen` leaves out the `n_seen_in_training` prompts that also occur among the prompts SFT, the reward
stage or PPO trained on (notebook 03, section 7): PPO's own prompts among them. `off_task_rate` is the share of
answers in the shape of another task's answer (`graders.off_task`: "The capital of X is Y." to a clustering question).
""")

code("""
results = stages.run_eval(profile, out)
keys = ("task_accuracy", "task_accuracy_unseen", "n_seen_in_training", "heldout_entity_accuracy", "language_match",
        "off_task_rate", "mean_reward")
display(pd.DataFrame({m: {**r["per_task"], **{k: r.get(k) for k in keys}} for m, r in results.items()}))
duel = results["rlhf"]["head_to_head_vs_sft"]
print("RLHF vs SFT (annotator):", {k: duel[k] for k in ("wins", "losses", "ties", "both_bad", "win_rate")})
print("win rate per task:", duel["per_task"], "| mean over tasks:", duel["task_mean"])
evaluate.plot_eval(results)
plt.show()
""")

md("""
**Where the reward gain comes from.** The mean reward counts every answer the reward model likes, including answers
it should not: PPO also searches for the reward model's blind spots, KL penalty or not. Split by task, and with the
answers in another task's shape set apart:
""")

code("""
rlhf_res, sft_res = results["rlhf"], results["sft"]
eval_recs = tasks.eval_records(world, EvalConfig.for_profile(profile).n_per_task)  # the harness's prompts
display(pd.DataFrame({m: r["off_task_per_task"] for m, r in results.items()}).T.rename_axis("off-task share"))
print(f"mean-reward gain of RLHF over SFT: {rlhf_res['reward_gain_vs_sft']:+.3f} on all {len(eval_recs)} prompts, "
      f"{rlhf_res['reward_gain_vs_sft_on_task']:+.3f} on the {len(eval_recs) - rlhf_res['n_off_task_pairs']} where "
      f"neither answer is off-task")
duels = list(zip(eval_recs, rlhf_res["responses"], sft_res["responses"], rlhf_res["ended"], sft_res["ended"]))
off = [(r["task"], r["lang"], a, b, annotator.compare(world, r, a, b, ea, eb))
       for r, a, b, ea, eb in duels if graders.off_task(r, a)]
print(f"{len(off)} off-task RLHF answers, by task and language:", dict(Counter((t, lang) for t, lang, *_ in off)))
print("the annotator's verdicts on those duels (A = RLHF, B = SFT):", dict(Counter(v for *_, v in off)))
display(pd.DataFrame(off[:4], columns=["task", "lang", "rlhf", "sft", "verdict"]))
""")

md("""
- On `tiny` the RLHF model can answer some prompts, clustering ones above all, with another task's answer (counted
  and shown above: none or one prompt in the runs with the KL ceiling so far, a Chinese clustering one under bf16;
  without it, at a fixed
  β = 0.3, an SQL query to 9 of the 12 English clustering prompts and a sum to a Chinese one; at β = 0.25 "The
  sentiment of this sentence is positive." to all 12; on earlier runs against other reward models, mostly capital
  sentences). The reward model scores such a fluent answer high (it was trained on pairs where those answers are
  mostly right) and SFT's wrong clusterings low; no sampled preference pair ever put the two side by side.
- The annotator grades correctness: where SFT's clustering was wrong too, both answers are wrong, so the duel is
  "both bad" and stays out of the win rate; where SFT's was right, SFT wins it (the verdicts above, when this run
  has such answers). A win rate and a
  mean reward can both look good while part of the gain is an exploit: look at the answers.
- The gain without those prompts is the gain the reward model's judgement supports; section 10 holds both gains
  against issue #5's +0.5.
""")

md("""
**Sentiment, where the reward model reads the label word.** Notebook 04's probe found that the reward model scores
the label word, not whether it fits the sentence, and prefers one label in each language (which one depends on the
run: under bf16 "negative" in English and 正面 in Chinese, in float32 "positive" and 负面). So RLHF can move sentiment
answers towards that word, right or wrong: under bf16 it lost accuracy here (0.92 → 0.75), in float32 it gained
(0.75 → 0.79). The sentiment prompts on which SFT's and RLHF's greedy answers differ, with the right label and the
annotator's grade of each:
""")

code("""
changed = [(r["lang"], r["input"], r["answer"], s, graders.check(world, r, s), a, graders.check(world, r, a))
           for r, a, s in zip(eval_recs, rlhf_res["responses"], sft_res["responses"])
           if r["task"] == "sentiment" and a.strip() != s.strip()]
display(pd.DataFrame(changed, columns=["lang", "sentence", "right label", "sft", "sft right", "rlhf", "rlhf right"]))
print("RLHF right on", sum(c[6] for c in changed), "of these", len(changed), "| SFT right on", sum(c[4] for c in changed))
""")

md("""
## 7. Reward hacking: a flawed reward model, no KL penalty

- A reward model with a flaw a real one can have: it likes **long** answers (here: the trained model plus a bonus
  per response token). PPO with the KL penalty switched off (β = 0) optimises that flaw freely.
- Watch two numbers: the (flawed) reward the optimiser sees, and the annotator — the "human" — judging the result.
""")

code("""
class LengthLovingReward(reward.RewardModel):
    \"\"\"The trained reward model plus a bonus for every response token.\"\"\"
    bonus = 0.15

    def score_tokens(self, prompt_ids, response_ids):
        lengths = torch.tensor([len(r) for r in response_ids], dtype=torch.float)
        return super().score_tokens(prompt_ids, response_ids) + self.bonus * lengths

trained = reward.RewardModel.load(out / "reward")
flawed = LengthLovingReward(trained.model, trained.tokenizer, trained.mean, trained.std)
# a third of the main run's iterations: the flaw is found well within them (and CI runs this notebook on 2 cores)
hack = stages.run_ppo(profile, out, reward_override=flawed, save_to="rlhf-hacked", kl_coef=0.0, adaptive_kl=False,
                      iterations=cfg.iterations // 3, log=lambda *_: None)
h_hack = pd.DataFrame(hack["history"])
""")

md("""
- The optimiser's view: the flawed reward rises over the run, and with β = 0 nothing stops the policy drifting from
  SFT (the KL grows, printed below). The annotator's view of the result, on the evaluation prompts:
""")

code("""
hacked_model, _ = modeling.load_causal_lm(str(out / "rlhf-hacked"))
eval_recs = tasks.eval_records(world, EvalConfig.for_profile(profile).n_per_task)  # the harness's prompts
answers = {name: evaluate.evaluate_tasks(m, tok, world, eval_recs)
           for name, m in (("sft", sft_model), ("rlhf", rlhf_model), ("hacked", hacked_model))}
rows = {}
for name in ("rlhf", "hacked"):
    res = answers[name]
    duel = annotator.win_rate(world, eval_recs, res["responses"], answers["sft"]["responses"], res["ended"],
                              answers["sft"]["ended"])
    rows[name] = {"annotator win rate vs SFT": duel["win_rate"], "task accuracy": res["task_accuracy"],
                  "mean answer length (chars)": sum(map(len, res["responses"])) / len(res["responses"]),
                  "ended with EOS": sum(res["ended"]) / len(res["ended"])}
rows["sft"] = {"task accuracy": answers["sft"]["task_accuracy"],
               "mean answer length (chars)": sum(map(len, answers["sft"]["responses"])) / len(eval_recs),
               "ended with EOS": sum(answers["sft"]["ended"]) / len(eval_recs)}
summary = pd.DataFrame(rows).T
display(summary.round(3))
print(f"flawed reward {hack['reward_start']:+.2f} → {hack['reward_end']:+.2f}, KL to SFT at the end {hack['kl_end']:.2f}")
print(f"sampled training answers that ended with EOS: {h_hack['eos_rate'].iloc[0]:.2f} in the first iteration, "
      f"{h_hack['eos_rate'].iloc[-1]:.2f} in the last")
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
h_hack.plot(x="iteration", y="score", ax=axes[0], title="flawed reward the optimiser sees", legend=False)
h_hack.plot(x="iteration", y="kl", ax=axes[1], title="KL to SFT (not penalised)", legend=False)
plt.tight_layout()
plt.show()
i = max(range(len(eval_recs)), key=lambda j: len(answers["hacked"]["responses"][j]))  # the longest hacked answer
print("prompt:", repr(eval_recs[i]["instruction"] + (" | " + eval_recs[i]["input"] if eval_recs[i]["input"] else "")))
print("sft:   ", repr(answers["sft"]["responses"][i][:300]))
print("hacked:", repr(answers["hacked"]["responses"][i][:300]))
""")

md("""
- The numbers tell the story of Goodhart's law: the reward went up, the answers got longer (the greedy ones mostly
  still end with EOS, the table above; how often the sampled training answers did, first and last iteration, is printed
  above the plots),
  and the annotator prefers them less than the SFT answers they came from. The KL penalty of the main run charges the
  policy for every nat it moves away from the SFT model, so exploiting a flaw has to pay for itself — it still can:
  another task's fluent answer in place of this one's is a short move away from SFT that the reward model pays well
  for (section 6 counts such answers: none or one with the KL ceiling so far, many at a fixed β). A reward model is
  only trustworthy near the data it was trained on.
""")

md("""
## 8. The same reward with TRL's `RLOOTrainer`

REINFORCE Leave-One-Out (Ahmadian et al., 2024) drops the value model: it samples k answers per prompt and uses the mean
reward of the other k − 1 as each answer's baseline. TRL maintains it, so it is the natural comparison. Same SFT start,
same prompts, number of episodes, temperature, response length, KL coefficient (RLOO's stays at 0.3, our PPO's floor;
TRL has no KL controller for it) and learning rate, and the same reward as a reward function: the reward model's score,
with EOS appended only to an answer that ended and the missing-EOS penalty on one that was cut off, as PPO scores its
rollouts:
""")

code("""
from datasets import Dataset
from transformers import AutoModelForCausalLM, PrinterCallback
from trl import RLOOConfig, RLOOTrainer

rm_fn = reward.RewardModel.load(out / "reward")

def reward_fn(prompts, completions, completion_ids, **_):
    ended = torch.tensor([tok.eos_token_id in ids for ids in completion_ids])  # TRL keeps the EOS it stopped at
    scores = rm_fn.score(list(prompts), list(completions), ended.tolist())
    return (scores + cfg.missing_eos_penalty * (~ended).float()).tolist()

k = 4
rloo = RLOOTrainer(
    model=AutoModelForCausalLM.from_pretrained(out / "sft", use_safetensors=True), reward_funcs=reward_fn,
    processing_class=tok,
    train_dataset=Dataset.from_dict({"prompt": prompts}),
    args=RLOOConfig(output_dir=tempfile.mkdtemp(), num_generations=k, per_device_train_batch_size=cfg.rollout_batch,
                    max_steps=cfg.iterations, max_completion_length=cfg.response_length, temperature=cfg.temperature,
                    beta=cfg.kl_coef, learning_rate=cfg.lr, logging_steps=1, report_to="none", save_strategy="no",
                    use_cpu=not torch.cuda.is_available(), bf16=False, activation_checkpointing=False, disable_tqdm=True,
                    seed=cfg.seed))
rloo.remove_callback(PrinterCallback)  # with tqdm off it would print every step's log dict; log_history keeps them
t0 = time.perf_counter()
rloo.train()
rloo_s = time.perf_counter() - t0
logs = pd.DataFrame([h for h in rloo.state.log_history if "reward" in h])
rloo_model = rloo.model
""")

code("""
prompts_eval = alpaca_prompts(eval_recs)
def greedy_reward(model):
    outs = generate_ended(model, tok, prompts_eval, 64)
    return rm_fn.score(prompts_eval, [t for t, _ in outs], [e for _, e in outs]).mean().item()

window = max(1, cfg.iterations // 10)
comparison = pd.DataFrame({
    "ours (PPO)": {"episodes": metrics["episodes"], "wall_s": metrics["episodes"] / metrics["episodes_per_s"],
                   "reward (train, last 10%)": h.score.tail(window).mean(),
                   "KL (train, last 10%)": h.kl.tail(window).mean(),
                   "greedy reward on eval prompts": greedy_reward(rlhf_model)},
    "trl RLOOTrainer": {"episodes": cfg.iterations * cfg.rollout_batch, "wall_s": rloo_s,
                        "reward (train, last 10%)": logs.reward.tail(window).mean(),
                        "KL (train, last 10%)": logs["kl"].tail(window).mean() if "kl" in logs else None,
                        "greedy reward on eval prompts": greedy_reward(rloo_model)},
    "sft (start)": {"greedy reward on eval prompts": greedy_reward(sft_model)},
}).T
display(comparison.round(3))
""")

md("""
- Read the KL columns with care: ours is the sum over a response's tokens (nats per response); TRL logs its KL per
  token. Both methods start from the same SFT model and chase the same reward, the missing-EOS penalty included.
""")

md("""
## 9. No reward model at all: DPO on the same preference pairs

Direct Preference Optimization (Rafailov et al., 2023) skips the reward model, the sampling and the value model. The
objective PPO maximises, E[r(x, y)] − β·KL(π ‖ π_ref), has a closed-form optimum, π*(y | x) ∝ π_ref(y | x)·exp(r(x, y)
/ β). Turned around, every policy π *defines* a reward, r(x, y) = β·log π(y | x) / π_ref(y | x) plus a term of x
alone, and in notebook 04's Bradley–Terry loss that term cancels between the two answers to one prompt:

L = −log σ(β·[log π(y_w | x) / π_ref(y_w | x) − log π(y_l | x) / π_ref(y_l | x)])

So DPO fine-tunes the policy directly on the reward stage's preference pairs (y_w chosen, y_l rejected), with the
SFT model as π_ref. TRL maintains it as `DPOTrainer`; `lab dpo` runs it on a run's pairs (`lab_utils/dpo.py` sets it
up), and this section calls the same function. Its data here: notebook 04's training pairs
(`reward/pairs.jsonl`, split "train"; TRL appends EOS to every answer, so the few pairs with an answer cut off at the
token limit are left out).

**Its settings** (β, learning rate, epochs) were picked on `tiny` among nine tried with one seed (wip/README.md): by
the annotator's win rate against SFT on the validation prompts, among the five measured there. The other four were
dropped after their results on the evaluation prompts, so those prompts played a part too. They are `lab dpo`'s
defaults on `tiny` (`DPOConfig`); on `full` it trains a LoRA adapter at lr 5e-6 for one epoch, settings no GPU run
has measured yet.
""")

code("""
import json

import torch.nn.functional as F

from lab_utils import dpo as dpo_lib
from lab_utils.config import DPOConfig

dpo_cfg = DPOConfig.for_profile(profile)  # β, learning rate, epochs: the settings above, `lab dpo`'s defaults
pairs = [json.loads(line) for line in (out / "reward" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
ended, both_ended = dpo_lib.ended, dpo_lib.both_ended  # a pair without the `_ended` fields: both ended
dpo_train = [p for p in pairs if p["split"] == "train" and both_ended(p)]
dpo_held = [p for p in pairs if p["split"] == "eval"]
print(f"{len(dpo_train)} training pairs ({sum(p['split'] == 'train' for p in pairs) - len(dpo_train)} with an answer "
      f"cut off left out), {len(dpo_held)} held out")
""")

code("""
def train_dpo(loss, save_to):
    \"\"\"`lab dpo --loss LOSS --name SAVE_TO`: TRL's DPOTrainer from the SFT model on `dpo_train`, set up by
    `lab_utils/dpo.py`, saved to out/save_to with its metrics; those metrics and the training seconds.\"\"\"
    m = stages.run_dpo(profile, out, name=save_to, progress=False, loss=loss)
    assert m["n_train_pairs"] == len(dpo_train), "DPO trains on the pairs counted above"
    log = pd.DataFrame([h for h in m["history"] if "loss" in h])  # each row: the mean of logging_steps steps
    first, last = log.iloc[0], log.iloc[-1]
    print(f"{save_to}: {m['train_s']:.0f} s for {m['n_train_pairs'] * dpo_cfg.epochs:,.0f} pairs seen. Over the "
          f"first and the last {dpo_cfg.logging_steps} steps: loss {first.loss:.3f} → {last.loss:.3f}, pairs "
          f"ranked right {first['rewards/accuracies']:.2f} → {last['rewards/accuracies']:.2f}; implicit reward of the "
          f"chosen answers {first['rewards/chosen']:+.3f} → {last['rewards/chosen']:+.3f}, of the rejected "
          f"{first['rewards/rejected']:+.3f} → {last['rewards/rejected']:+.3f}")
    return m, m["train_s"]


dpo, dpo_s = train_dpo("sigmoid", "dpo")  # TRL's name for the loss above
""")

md("""
**The loss by hand, and the policy as a reward model.** The implicit reward of an answer is β times the log-ratio of
its probability under the DPO policy and under the SFT model (`reward.response_loglik`: the answer's token
log-probabilities summed, with EOS when it ended), here in float32 from the saved weights. On the held-out pairs
whose answers both ended, the loss written above must equal TRL's `evaluate`. On all of them, the implicit reward
ranks pairs like a reward model; next to it, notebook 04's trained reward model and the untrained SFT model's
likelihood on the very same pairs:
""")

code("""
def implicit_margin(policy, ps):
    \"\"\"r(y_w) − r(y_l) per pair: β times the chosen answer's log-ratio minus the rejected one's.\"\"\"
    def log_ratio(side):
        args = [p["prompt"] for p in ps], [p[side] for p in ps], [ended(p, side) for p in ps]
        return reward.response_loglik(policy, tok, *args) - reward.response_loglik(sft_model, tok, *args)
    return dpo_cfg.beta * (log_ratio("chosen") - log_ratio("rejected"))


margin = implicit_margin(modeling.load_causal_lm(str(out / "dpo"))[0], dpo_held)
both = torch.tensor([both_ended(p) for p in dpo_held])
loss_by_hand = -F.logsigmoid(margin[both]).mean().item()
loss_trl = dpo["eval_loss"]  # TRL's `evaluate` on the held-out pairs whose answers both ended
# TRL's evaluate runs under bf16 autocast, ours in float32: 1e-4 apart on tiny; longer answers on full sum more
# rounding (unmeasured there, so a looser bound)
DPO_LOSS_TOLERANCE = 1e-3 if profile == "tiny" else 2e-2
implicit_accuracy = (margin > 0).float().mean().item()
assert abs(implicit_accuracy - dpo["implicit_accuracy"]) < 1e-4, "the package ranks the held-out pairs alike"
print(f"held-out DPO loss: by hand {loss_by_hand:.4f}, TRL {loss_trl:.4f} ({int(both.sum())} pairs)")
ranked = {"DPO's implicit reward": implicit_accuracy,
          "notebook 04's reward model": checkpoints.read_json(out / "reward" / "metrics.json")["pairwise_accuracy"],
          "the SFT model's likelihood (untrained)": reward.likelihood_accuracy(sft_model, tok, dpo_held)["accuracy"]}
print(f"held-out pairs ranked right ({len(dpo_held)} pairs):", {k: round(v, 3) for k, v in ranked.items()})
""")

md("""
The head-to-head: the harness (`lab eval --model runs/<profile>/dpo --name dpo`, and again with `--split validation`,
does the same) answers the evaluation
prompts and the validation prompts with the DPO policy, grades them, scores them with notebook 04's reward model —
which DPO never queried; it learned from the same pairs — and lets the annotator judge them against SFT's:
""")

code("""
valid = stages.run_eval(profile, out, models=("sft", "rlhf"), split="validation")  # what β was chosen on (section 10)
dpo_res = stages.run_eval(profile, out, model=str(out / "dpo"), name="dpo")["dpo"]
dpo_valid = stages.run_eval(profile, out, model=str(out / "dpo"), name="dpo", split="validation")["dpo"]
row = lambda r, s: {"task_accuracy": r["task_accuracy"], "reward gain vs SFT": r["reward_gain_vs_sft"],  # noqa: E731
                    "win rate vs SFT": r["win_rate_vs_sft"], "win rate, mean over tasks": r["win_rate_vs_sft_task_mean"],
                    "off_task_rate": r["off_task_rate"], "train_s": s}
versus = pd.DataFrame({"PPO (ours), evaluation prompts": row(results["rlhf"], metrics["wall_s"]),
                       "DPO, evaluation prompts": row(dpo_res, dpo_s),
                       "PPO (ours), validation prompts": row(valid["rlhf"], None),
                       "DPO, validation prompts": row(dpo_valid, None)}).T
display(versus.round(3))
print(f"SFT's task accuracy: {results['sft']['task_accuracy']:.3f} on the evaluation prompts, "
      f"{valid['sft']['task_accuracy']:.3f} on the validation prompts; DPO per task (evaluation prompts):",
      {t: round(a, 2) for t, a in dpo_res["per_task"].items()})
""")

md("""
- DPO needs no sampling and no reward model, so it is cheap: a pass or two over the pairs, with a forward pass of
  the policy and of the reference per answer. PPO's time includes sampling every answer it learns from, and it trains
  a value model too.
- The policy *is* a reward model. On `tiny` it ranks as many held-out pairs right as notebook 04's trained reward
  model or more (0.783 against 0.730 under bf16, 0.770 against 0.770 in float32), though that model reads one score
  at the answer's last token, where DPO's sums a log-ratio over every answer token; the untrained SFT likelihood
  still ranks more than either (the printout above).
- It is **offline**: it learns only from answers the SFT model wrote before training, never from its own. PPO samples
  the current policy and the reward model grades what it has never seen — which is how PPO improves where no pair
  showed the way, and also how it finds the reward model's blind spots (section 6). DPO cannot exploit a reward model
  it never queries; it can only over-fit the pairs (a higher learning rate or more epochs lowered its win rate on the
  validation prompts in the runs that chose its settings, wip/README.md).
- Its loss only asks that the chosen answer gain on the rejected one, and the training log shows how it got there on
  `tiny`: both implicit rewards fell (the printed `rewards/chosen` and `rewards/rejected`), the rejected further. Some
  of the probability both lost went to answers no pair showed — here, answers in another task's shape
  (`off_task_rate` in the table, against PPO's). Razin et al. (2024) call it *likelihood displacement*. A preference
  pair says which answer is better, not what the model may say instead.
- Read the table's two splits. The validation prompts are other questions of the same six tasks, 48 of each; 88 of
  the 208 evaluation prompts are capital questions, which both methods win nearly always, so the pooled win rate
  flatters both there ("win rate, mean over tasks" weighs the six tasks alike). A method is only as good as it is on
  the prompts nobody chose its settings on.

**Keeping the chosen answers likely.** If the trouble is that the chosen answers lose probability too, add a term
that keeps them likely: the SFT loss on the chosen answers, beside DPO's (Pang et al. 2024 add it to train on
reasoning chains; Liu et al. 2024 show it guards against over-optimisation). In TRL that is one setting,
`loss_type=["sigmoid", "sft"]`: the loss above plus the mean negative log-likelihood of the chosen answers' tokens in
the batch, weighted alike (`loss_weights`). The pairs, β, learning rate, epochs and seed are the ones above; the term
was tried after those were chosen, on five seeds (wip/README.md), and not tuned.
""")

code("""
dpo_sft, dpo_sft_s = train_dpo("sigmoid,sft", "dpo-sft")
sft_term_margin = implicit_margin(modeling.load_causal_lm(str(out / "dpo-sft"))[0], dpo_held)
dpo_sft_res = stages.run_eval(profile, out, model=str(out / "dpo-sft"), name="dpo-sft")["dpo-sft"]
dpo_sft_valid = stages.run_eval(profile, out, model=str(out / "dpo-sft"), name="dpo-sft", split="validation")["dpo-sft"]
display(pd.DataFrame({"DPO, evaluation prompts": row(dpo_res, dpo_s),
                      "DPO + SFT term, evaluation prompts": row(dpo_sft_res, dpo_sft_s),
                      "DPO, validation prompts": row(dpo_valid, None),
                      "DPO + SFT term, validation prompts": row(dpo_sft_valid, None)}).T.round(3))
print(f"held-out pairs ranked right by the implicit reward: DPO {implicit_accuracy:.3f}, "
      f"DPO + SFT term {(sft_term_margin > 0).float().mean().item():.3f}")
""")

md("""
- The SFT term pulls the chosen answers back up where the pairs alone pushed them down (the implicit reward of the
  chosen answers in the two training printouts), and the probability they keep is the probability that did not
  leak into other tasks' shapes: compare `off_task_rate`.
- It ranks held-out pairs about as well (a little worse under bf16, a little better in float32) and moves notebook
  04's reward model less — the pairs are no longer its
  only objective. The annotator, the stand-in for people, judges otherwise: on the validation prompts, where plain
  DPO won fewest, the SFT term wins more of the duels, and on the evaluation prompts it wins more on the mean over
  tasks (the pooled rate leans on the 88 capital questions, which both win). Section 10 prints and checks the
  validation verdict on this run; the five seeds run so far all went the same way (wip/README.md).
""")

md("""
## 10. Outcomes

The thresholds are for the **`tiny`** profile (what CI runs); the structural checks run everywhere. Issue #5 sets
three targets: the annotator prefers RLHF in at least 60% of the decided duels, task accuracy drops by at most 0.02,
and the mean reward on the evaluation prompts beats SFT's by at least 0.5 normalised units. The cells below print
each with whether this run met it. On `tiny` they assert the win rate and the task accuracy, a mean-reward gain of
at least +0.25 (not issue #5's +0.5, which this run does not reach; five seeds gave +0.30 to +0.35 on the evaluation prompts), and what the
course claims of every run: the reward rose, and the KL stayed bounded and far below the unpenalised run's.

**How β was chosen.** β is the one knob that trades the reward gain against the annotator's verdict. It was chosen on
the **validation prompts** (`lab eval --split validation`: 48 per task, none asking what an evaluation prompt asks), by
the annotator's win rate against SFT — the stand-in for people, which the reward model only approximates — averaged over
the seeds run. The evaluation prompts the targets are measured on took no part. Means over seeds on the validation
prompts (25 iterations of 64; `lab ppo --kl_coef B --seed S --no_adaptive_kl` for a fixed β, `lab ppo --seed S
[--no_kl_floor]` for the controllers, then `lab eval --split validation`; wip/README.md has every seed):

| β | mean-reward gain | (where neither answer is off-task) | win rate vs SFT | task accuracy vs SFT's 0.604 |
|---|---|---|---|---|
| 0.2 (seeds 1, 2) | +0.82 | +0.48 | 0.25 | −0.130 |
| 0.25 (seeds 0–4) | +0.60 | +0.36 | 0.48 | −0.036 |
| 0.3 (seeds 0–2) | +0.43 | +0.38 | 0.56 | −0.014 |
| 0.35 (seeds 0–2) | +0.35 | +0.33 | 0.54 | −0.020 |
| 0.3, seeds 0–4 (3 and 4 run after the choice) | +0.50 | +0.35 | 0.51 | −0.030 |
| 0.35, seeds 0–4 | +0.41 | +0.31 | 0.54 | −0.017 |
| 0.3, Ziegler's controller (target 1 nat, β free to fall; seeds 0–4) | +0.34 | +0.30 | 0.54 | −0.020 |
| **0.3 with the KL ceiling (β never below 0.3; seeds 0–4; the default)** | +0.33 | +0.32 | **0.59** | −0.004 |
| 0.3 with a looser ceiling, target 1.5 nats (seeds 0–4, run after the choice) | +0.40 | +0.32 | 0.59 | −0.002 |

β = 0.25 (the default on the morning of 2026-12-01, 0.2 before) was chosen on the evaluation prompts themselves; there,
on seed 0, it met all three targets (+0.54 / 0.71 / −0.007), but on the validation prompts its answers lost to SFT's on
three seeds of five (win rates 0.38–0.56): a setting chosen on the test prompts looks better there than it is. At a
fixed β = 0.3, seed 4 exploits the reward model: its KL runs to 3.1, and its win rate is 0.22 on the validation prompts
(0.52, with task accuracy 0.526, on the evaluation prompts). No fixed β tried is safe on every seed. Ziegler's
controller as published lets β fall while the KL is still under target — in the first iterations it halves — and then
overshoots (seed 3 ended at β 0.16, with 26 off-task answers). With β held at 0.3 or above, no seed exploits (at most
one off-task answer in 288) and the worst seed's win rate is 0.48 (fixed β: 0.22): the ceiling is the default. Its price
is the gain, +0.29 to +0.35 on the validation prompts on every seed, all of it on-task. A looser ceiling (1.5 nats) wins as often and gains more,
but the gain over the tighter ceiling's is off-task answers (24 on one seed), so the target stays 1 nat. No setting
meets all three targets on the validation prompts, and a gain of +0.5 came only with the off-task exploit of section 6:
on the prompts where neither answer is off-task the gain is +0.22 to +0.48 on every seed in every setting. A reward
model that ranks more pairs right (issue #4) is the lever, not β.
""")

code("""
display(pd.DataFrame({f"{split}: {m}": {"prompts": r["n_prompts"], "task_accuracy": r["task_accuracy"],
                                       "mean_reward": r["mean_reward"], "win_rate_vs_sft": r.get("win_rate_vs_sft"),
                                       "off_task_rate": r["off_task_rate"]}
                      for split, res in (("test", results), ("validation", valid)) for m, r in res.items()
                      if m in ("sft", "rlhf")}).T)
""")

code("""
check = profile == "tiny"
# tiny profile, seed 0. Issue #5 asks +0.5 of the gain; max_kl is twice the KL ceiling's 1-nat target, under the
# 3.1 nats of the seed that exploited the reward model at a fixed β = 0.3
THRESHOLDS = {"reward_gain": 0.2, "max_kl": 2.0, "win_rate_vs_sft": 0.6, "mean_reward_gain": 0.25,
              "task_accuracy_drop": 0.02}
gain = metrics["reward_end"] - metrics["reward_start"]
sft_res, rlhf_res = results["sft"], results["rlhf"]
print(f"reward {metrics['reward_start']:+.3f} → {metrics['reward_end']:+.3f} (gain {gain:+.3f}), KL at the end {metrics['kl_end']:.3f}")
duel = rlhf_res["head_to_head_vs_sft"]
targets = {  # issue #5's three, on this run's evaluation prompts
    f"win rate vs SFT {rlhf_res['win_rate_vs_sft']} ({duel['wins']} wins, {duel['losses']} losses) ≥ 0.6":
        rlhf_res["win_rate_vs_sft"] >= 0.6,
    f"mean-reward gain {rlhf_res['reward_gain_vs_sft']:+.3f} ≥ +0.5 (on on-task prompts only: "
    f"{rlhf_res['reward_gain_vs_sft_on_task']:+.3f})": rlhf_res["reward_gain_vs_sft"] >= 0.5,
    f"task accuracy {sft_res['task_accuracy']:.3f} → {rlhf_res['task_accuracy']:.3f}, at most 0.02 lower":
        rlhf_res["task_accuracy"] >= sft_res["task_accuracy"] - 0.02}
for target, met in targets.items():
    print(f"issue #5: {target}: {'met' if met else 'NOT met'}")
assert not metrics["kl_alarm"], "KL stayed negative: log-probabilities of policy and reference disagree"
assert metrics["kl_end"] > 0, "the policy moved away from the reference"
if check:
    assert gain >= THRESHOLDS["reward_gain"], "PPO should raise the reward"
    assert metrics["kl_end"] <= THRESHOLDS["max_kl"], "the KL penalty should keep the policy near SFT"
    assert metrics["kl_end"] < hack["kl_end"] / 2, "the penalised run should stay far closer to SFT than the β = 0 one"
    assert rlhf_res["win_rate_vs_sft"] >= THRESHOLDS["win_rate_vs_sft"], "the annotator should prefer RLHF"
    assert rlhf_res["task_accuracy"] >= sft_res["task_accuracy"] - THRESHOLDS["task_accuracy_drop"], "RLHF lost tasks"
    assert rlhf_res["reward_gain_vs_sft"] >= THRESHOLDS["mean_reward_gain"], "RLHF's answers should score higher"
""")

md("""
**Reward hacking showed up:** the flawed reward rose while the annotator liked the result less than the main RLHF
model's:
""")

code("""
print(f"flawed reward {hack['reward_start']:+.3f} → {hack['reward_end']:+.3f}; annotator win rate vs SFT: "
      f"hacked {summary.loc['hacked', 'annotator win rate vs SFT']}, rlhf {summary.loc['rlhf', 'annotator win rate vs SFT']}")
if check:
    assert hack["reward_end"] > hack["reward_start"]
    assert summary.loc["hacked", "annotator win rate vs SFT"] < 0.5, "the annotator should prefer SFT to hacked answers"
    assert summary.loc["hacked", "annotator win rate vs SFT"] < summary.loc["rlhf", "annotator win rate vs SFT"]
    assert summary.loc["hacked", "mean answer length (chars)"] > summary.loc["sft", "mean answer length (chars)"]
""")

md("""
**DPO learned the preferences from the pairs alone:** the loss written in section 9 is TRL's, its implicit reward
ranks held-out pairs far above chance, and on the evaluation prompts both the reward model it never queried and the
annotator (whose labels the pairs are) prefer its answers to SFT's. Whether it keeps SFT's task accuracy is printed,
not asserted: at the settings tried it did on the evaluation prompts only at the chosen one (wip/README.md), and
the line below says whether it did in this run. **The
SFT term** must answer in another task's shape less often than plain DPO, win more of the annotator's duels on the
validation prompts, and keep SFT's task accuracy there (on `tiny`; it did on each of five seeds).
""")

code("""
# tiny: 0.77, 0.59, +0.32 in float32 (a CPU without bf16 kernels); 0.78, 0.77, +0.27 under bf16; 0.77, 0.52, +0.36
# on a third CPU (README.md)
DPO_THRESHOLDS = {"implicit_accuracy": 0.65, "win_rate_vs_sft": 0.5, "reward_gain": 0.1}
kept = dpo_res["task_accuracy"] >= sft_res["task_accuracy"] - THRESHOLDS["task_accuracy_drop"]
print(f"DPO: held-out loss by hand {loss_by_hand:.4f} vs TRL {loss_trl:.4f}; implicit reward ranks "
      f"{implicit_accuracy:.3f} of held-out pairs right; win rate vs SFT {dpo_res['win_rate_vs_sft']}, reward gain "
      f"{dpo_res['reward_gain_vs_sft']:+.3f}; task accuracy {sft_res['task_accuracy']:.3f} → "
      f"{dpo_res['task_accuracy']:.3f} ({'kept' if kept else 'NOT kept'} within 0.02; on the validation prompts "
      f"{valid['sft']['task_accuracy']:.3f} → {dpo_valid['task_accuracy']:.3f})")
assert abs(loss_by_hand - loss_trl) < DPO_LOSS_TOLERANCE, "the DPO loss by hand should be TRL's"
if check:
    assert implicit_accuracy >= DPO_THRESHOLDS["implicit_accuracy"], "DPO's implicit reward should rank pairs"
    assert dpo_res["win_rate_vs_sft"] > DPO_THRESHOLDS["win_rate_vs_sft"], "the annotator should prefer DPO"
    assert dpo_res["reward_gain_vs_sft"] >= DPO_THRESHOLDS["reward_gain"], "the reward model should score DPO higher"
""")

code("""
print(f"DPO → DPO + SFT term: off-task answers {dpo_res['off_task_rate']:.3f} → {dpo_sft_res['off_task_rate']:.3f} "
      f"(evaluation prompts); on the validation prompts win rate vs SFT {dpo_valid['win_rate_vs_sft']} → "
      f"{dpo_sft_valid['win_rate_vs_sft']}, task accuracy {dpo_valid['task_accuracy']:.3f} → "
      f"{dpo_sft_valid['task_accuracy']:.3f} (SFT {valid['sft']['task_accuracy']:.3f})")
if check:
    assert dpo_sft_res["off_task_rate"] < dpo_res["off_task_rate"], "the SFT term should keep answers on task"
    assert dpo_sft_valid["win_rate_vs_sft"] > dpo_valid["win_rate_vs_sft"], "the annotator should prefer the SFT term"
    assert dpo_sft_valid["task_accuracy"] >= valid["sft"]["task_accuracy"] - THRESHOLDS["task_accuracy_drop"]
""")

md("""
## What just happened

- PPO sampled answers, scored them with the reward model at the last real token, charged a per-token KL penalty
  against the SFT model, estimated advantages with GAE and took clipped steps — each piece matched the package
  inline, and the first minibatch's ratio of exactly 1 proved that rollout and training agree.
- The reward rose while the KL stayed bounded, and the annotator — the stand-in for people — gave the RLHF answers
  more duels than the SFT answers on the evaluation prompts (some of which PPO trained on too:
  `n_seen_in_training`), by the margin section 10 prints. On the validation prompts, which ask none of the evaluation
  prompts' questions, RLHF wins a smaller share of the duels on `tiny`: section 10's table prints both splits side
  by side.
- The policy also found blind spots of the reward model, KL penalty and all: answers in another task's shape in
  some runs, and on `tiny` sentiment answers changed towards the label the reward model likes (notebook 04's last
  probe: in each language it prefers one label whatever the sentence says). A duel
  of two wrong answers is "both bad", so only the answers themselves, the off-task share, the task accuracy and the
  gain on the other prompts show it. β and the KL ceiling decide how far the policy goes (section 10's table); a
  better reward model (issue #4), not a higher reward, is the fix.
- With a flawed reward and no KL penalty, the optimiser found the flaw: the reward went up and the answers got
  worse. TRL's RLOO, with no value model, chased the same reward for comparison.
- DPO skipped the reward model: trained on the same pairs, offline, its policy doubles as a reward model, and the
  annotator judged it against SFT like PPO's (section 9's table). Its chosen answers lost probability too, some of
  it to other tasks' shapes; an SFT term on the chosen answers kept them likely, and on the validation prompts the
  annotator preferred that.
""")

save(str(Path(__file__).resolve().parents[2] / "labs" / "05_ppo_rlhf.ipynb"))
