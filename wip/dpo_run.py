"""DPO on the reward stage's training pairs, from the SFT model; implicit-reward accuracy on the held-out pairs."""
import json, os, sys, time, tempfile, shutil
from pathlib import Path
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

run = Path(sys.argv[1]); beta = float(sys.argv[2]); lr = float(sys.argv[3]); epochs = float(sys.argv[4])
bf16 = len(sys.argv) > 5 and sys.argv[5] == "bf16"
SEED = int(os.environ.get("SEED", "0")); torch.manual_seed(SEED)
tok = AutoTokenizer.from_pretrained(run / "sft")
pairs = [json.loads(l) for l in open(run / "reward" / "pairs.jsonl")]
train = [p for p in pairs if p["split"] == "train" and p["chosen_ended"] and p["rejected_ended"]]
ev = [p for p in pairs if p["split"] != "train"]
print("train pairs", len(train), "eval", len(ev))
model = AutoModelForCausalLM.from_pretrained(run / "sft")
args = DPOConfig(output_dir=tempfile.mkdtemp(), beta=beta, learning_rate=lr, num_train_epochs=epochs,
                 per_device_train_batch_size=16, max_length=256, report_to="none", save_strategy="no",
                 logging_steps=10, use_cpu=True, bf16=bf16, disable_tqdm=True, seed=SEED, lr_scheduler_type="linear",
                 warmup_steps=0, gradient_checkpointing=False, loss_type=os.environ.get('LOSS', 'sigmoid').split(','))
tr = DPOTrainer(model=model, args=args, processing_class=tok,
                train_dataset=Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in train]))
t0 = time.perf_counter(); tr.train(); print("train_s", round(time.perf_counter() - t0, 1))
for h in tr.state.log_history[-3:]:
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in h.items()})
pol = tr.model.eval(); ref = AutoModelForCausalLM.from_pretrained(run / "sft").eval()

@torch.no_grad()
def logp(m, prompt, ans, ended):
    p = tok(prompt, add_special_tokens=False)["input_ids"]; a = tok(prompt + ans, add_special_tokens=False)["input_ids"][len(p):]
    if ended: a = a + [tok.eos_token_id]
    ids = torch.tensor([p + a]); lp = torch.log_softmax(m(ids).logits[0, :-1].float(), -1)
    tgt = ids[0, 1:]; tok_lp = lp.gather(-1, tgt[:, None])[:, 0]
    return tok_lp[len(p) - 1:].sum().item()
right = 0; by = {}
for p in ev:
    rc = logp(pol, p["prompt"], p["chosen"], p["chosen_ended"]) - logp(ref, p["prompt"], p["chosen"], p["chosen_ended"])
    rr = logp(pol, p["prompt"], p["rejected"], p["rejected_ended"]) - logp(ref, p["prompt"], p["rejected"], p["rejected_ended"])
    ok = rc > rr; right += ok; by.setdefault(p["task"], []).append(ok)
print("heldout implicit-reward accuracy", round(right / len(ev), 4), {t: round(sum(v) / len(v), 2) for t, v in by.items()})
if len(sys.argv) > 6:
    dest = Path(sys.argv[6]); shutil.rmtree(dest, ignore_errors=True); tr.model.save_pretrained(dest); tok.save_pretrained(dest)
