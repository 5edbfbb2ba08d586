"""`lab dpo`: TRL's DPOTrainer on the reward stage's pairs (or a file's), the policy read as a reward model, and
the stage's errors, on micro."""

from __future__ import annotations

import json
import os
import shlex
import shutil

import pytest
import torch
import torch.nn.functional as F

from lab_utils import checkpoints as ck
from lab_utils import reward as R
from lab_utils import stages
from lab_utils.cli import main
from lab_utils.config import DPO_LOSSES
from lab_utils.errors import LabError
from lab_utils.modeling import load_causal_lm
from lab_utils.tokenizer import render_alpaca

from conftest import gpt2_style_tokenizer


def _pair(i: int, split: str, **flags) -> dict:
    """A pair the way `lab reward` writes it: the prompt rendered, the answers' endings and the prompt's split."""
    return {"prompt": render_alpaca(f"Is {i} a number?", ""), "chosen": "yes", "rejected": "no",
            "chosen_ended": True, "rejected_ended": True, "split": split} | flags


def _run_with_pairs(sft_root, tmp_path, pairs: list[dict]):
    """A run folder with the micro SFT model and a finished reward stage whose pairs.jsonl holds `pairs`."""
    root = tmp_path / "run"
    shutil.copytree(sft_root / "sft", root / "sft")
    ck.write_jsonl(root / "reward" / "pairs.jsonl", pairs)
    ck.write_json(root / "reward" / "metrics.json", {"profile": "micro", "finished_at": "2026-12-02T00:00:00"})
    return root


def _evaluated_dpo_policy(sft_root, tmp_path):
    """(run folder, pairs file): a micro run whose dpo/ policy was trained on a file's six pairs and evaluated."""
    root = tmp_path / "my run"  # a space: printed commands quote the paths
    shutil.copytree(sft_root / "sft", root / "sft")
    six = tmp_path / "six.jsonl"
    six.write_text("\n".join(json.dumps({"prompt": f"Is {i} a number?", "chosen": "yes", "rejected": "no"})
                             for i in range(6)))
    stages.run_dpo("micro", root, progress=False, data=str(six))
    stages.run_eval("micro", root, model=str(root / "dpo"), name="dpo")
    return root, six


@pytest.fixture(scope="module")
def dpo_run(sft_root, tmp_path_factory):
    pairs = [_pair(i, "eval" if i < 6 else "train") for i in range(30)]
    pairs.append(_pair(99, "train", rejected_ended=False))  # an answer cut off: TRL would append EOS to it
    root = _run_with_pairs(sft_root, tmp_path_factory.mktemp("dpo"), pairs)
    # float32 so that TRL's held-out loss and the one written out below agree to rounding; a learning rate that
    # moves micro's policy within a few steps
    return root, stages.run_dpo("micro", root, progress=False, bf16=False, lr=1e-3, epochs=3.0)


def test_dpo_trains_on_the_training_pairs_whose_answers_ended_and_saves_a_causal_lm(dpo_run, sft_root):
    root, m = dpo_run
    assert (m["n_train_pairs"], m["n_eval_pairs"], m["n_cut_off"], m["n_too_long"]) == (24, 6, 1, 0)
    assert m["n_eval_loss_pairs"] == 6
    assert m["built_from"] == {"sft": stages.stamp(root, "sft"), "reward": stages.stamp(root, "reward")}
    policy, _ = load_causal_lm(str(root / "dpo"))  # a plain causal LM: `lab eval --model` and the apps load it
    sft, _ = load_causal_lm(str(sft_root / "sft"))
    assert not torch.equal(policy.lm_head.weight, sft.lm_head.weight)
    assert ck.read_json(root / "dpo" / "metrics.json")["n_train_pairs"] == 24
    assert not list(root.glob(".tmp-*"))
    assert ck.read_json(root / "dpo" / "config.json")["use_cache"] is True  # TRL trains with the KV cache off


def test_the_written_out_loss_on_the_implicit_rewards_is_trls(dpo_run):
    """The implicit reward β·log π/π_ref read on the reward stage's token layout (BOS, prompt, answer, EOS) is the
    one TRL trains on: −log σ of its margins is TRL's held-out loss."""
    root, m = dpo_run
    policy, tok = load_causal_lm(str(root / "dpo"))
    reference, _ = load_causal_lm(str(root / "sft"))
    held = [json.loads(line) for line in (root / "reward" / "pairs.jsonl").read_text().splitlines()][:6]
    assert all(p["split"] == "eval" for p in held)

    def log_ratio(side):
        args = [p["prompt"] for p in held], [p[side] for p in held], [True] * len(held)
        return R.response_loglik(policy, tok, *args) - R.response_loglik(reference, tok, *args)
    margins = 0.1 * (log_ratio("chosen") - log_ratio("rejected"))
    assert -F.logsigmoid(margins).mean().item() == pytest.approx(m["eval_loss"], abs=2e-4)
    assert (margins > 0).float().mean().item() == pytest.approx(m["implicit_accuracy"], abs=1e-4)


def test_dpo_splits_prompt_and_answers_as_sft_and_the_reward_model_do(sft_root, tmp_path):
    """With a GPT-2-style tokenizer an indented answer merges the prompt's last newline into its first token; TRL's
    DPOTrainer then cuts the prompt short for both answers of the pair. The lab's trainer keeps the prompt whole and
    each answer as generation would write it after the prompt, the split the implicit reward is read on (`encode`)."""
    from trl import DPOTrainer

    from lab_utils import dpo
    from lab_utils.config import DPOConfig

    tok = gpt2_style_tokenizer()
    prompt = render_alpaca("Write the body.")
    pair = {"prompt": prompt, "chosen": "    return x", "rejected": "return x"}
    prompt_ids = tok(prompt)["input_ids"]
    args = dpo.trl_args(DPOConfig.for_profile("micro"), str(tmp_path))
    built = {cls: cls(model=load_causal_lm(str(sft_root / "sft"))[0], processing_class=tok, args=args,
                      train_dataset=dpo.as_dataset([pair])).train_dataset[0]
             for cls in (DPOTrainer, dpo._dpo_trainer_class())}
    trl, lab = built.values()
    assert len(trl["prompt_ids"]) < len(prompt_ids)  # TRL's split: the prompt lost its last "\n"
    assert lab["prompt_ids"] == prompt_ids
    for side in ("chosen", "rejected"):
        assert lab[f"{side}_ids"] == R.encode(tok, prompt, pair[side])[len(prompt_ids):]  # answer + EOS


def test_the_implicit_reward_is_read_in_float32_from_the_trained_weights(sft_root):
    """Trained under bf16 autocast, the policy and the reference come out of the trainer with accelerate's autocast
    wrapped around their forward; the implicit reward must be the saved float32 weights' (on tiny the wrapped
    forward moved log-probabilities by ~0.1 nats and a held-out pair's ranking)."""
    from lab_utils import dpo
    from lab_utils.config import DPOConfig

    policy, tok = load_causal_lm(str(sft_root / "sft"))
    ref_model = load_causal_lm(str(sft_root / "sft"))[0]
    pairs = [_pair(i, "train") for i in range(8)]
    cfg = DPOConfig.for_profile("micro", bf16=True, lr=1e-3)
    trainer, _, _ = dpo.train(cfg, policy, ref_model, tok, pairs)
    got = torch.tensor(dpo.implicit_accuracy(trainer, tok, pairs, beta=cfg.beta)["margins"])
    trained = load_causal_lm(str(sft_root / "sft"))[0]
    trained.load_state_dict(trainer.model.state_dict())
    fresh = load_causal_lm(str(sft_root / "sft"))[0]

    def log_ratio(side):
        args = [p["prompt"] for p in pairs], [p[side] for p in pairs], [True] * len(pairs)
        return R.response_loglik(trained, tok, *args) - R.response_loglik(fresh, tok, *args)
    assert torch.allclose(got, cfg.beta * (log_ratio("chosen") - log_ratio("rejected")), atol=1e-6)
    assert got.abs().max() > 1e-3  # the policy moved: the check compares something


def test_dpo_learns_the_preference_it_is_shown(dpo_run):
    """Held-out prompts of the same kind: the trained policy's implicit reward ranks their pairs the way the
    training pairs taught (the untrained policy's log-ratio is 0: it ranks none right)."""
    root, m = dpo_run
    assert m["implicit_accuracy"] == 1.0
    losses = [h["loss"] for h in m["history"] if "loss" in h]
    assert losses[-1] < losses[0] and losses[0] == pytest.approx(0.693, abs=0.01)  # log 2: the margins start at 0


def test_dpo_on_a_pairs_file_holds_out_a_share_of_its_prompts(sft_root, tmp_path):
    rows = [{"conversations": [{"from": "human", "value": f"Is {i} a number?"}],
             "chosen": {"from": "gpt", "value": "yes"}, "rejected": {"from": "gpt", "value": "no"}} for i in range(12)]
    data = tmp_path / "sharegpt.json"
    data.write_text(json.dumps(rows))
    root = tmp_path / "run"
    shutil.copytree(sft_root / "sft", root / "sft")
    m = stages.run_dpo("micro", root, progress=False, data=str(data), eval_fraction=0.25, name="dpo-file")
    assert (m["n_train_pairs"], m["n_eval_pairs"]) == (9, 3) and m["data"] == str(data)
    assert m["built_from"] == {"sft": stages.stamp(root, "sft")}  # no reward stage read
    assert (root / "dpo-file" / "model.safetensors").is_file()


def test_bad_dpo_input_is_one_clear_error_before_any_training(sft_root, tmp_path, capsys):
    root = tmp_path / "run"
    shutil.copytree(sft_root / "sft", root / "sft")
    with pytest.raises(LabError, match="no preference pairs for DPO"):  # no reward stage: say what builds one
        stages.run_dpo("micro", root, progress=False)
    for name in ("sft", "rlhf", "base-checkpoints", "../x", ""):
        with pytest.raises(LabError, match="cannot name the DPO policy's folder"):
            stages.run_dpo("micro", root, progress=False, name=name)
    assert main(["dpo", "--profile", "micro", "--out", str(root), "--loss", "sigmoid,nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--loss is 'sigmoid,nope'" in err[0]
    only_held = _run_with_pairs(sft_root, tmp_path / "held", [_pair(i, "eval") for i in range(4)])
    with pytest.raises(LabError, match=r"no preference pair to train DPO on.*Fix: collect more pairs \(`lab reward "
                                       f"--profile micro --out {only_held} --n_prompts N`"):  # not runs/tiny's
        stages.run_dpo("micro", only_held, progress=False)
    held_file = tmp_path / "held.jsonl"  # every record held out by its own split: --eval_fraction cannot help
    held_file.write_text("\n".join(json.dumps({"prompt": f"Is {i} a number?", "chosen": "yes", "rejected": "no",
                                               "split": "eval"}) for i in range(4)))
    with pytest.raises(LabError, match="4 held out.*or give some records \"split\": \"train\""):
        stages.run_dpo("micro", root, progress=False, data=str(held_file))
    # the fix names the cause that left most pairs out: here answers cut off at the reward stage's token limit
    cut = _run_with_pairs(sft_root, tmp_path / "cut", [_pair(0, "eval")] + [_pair(i, "train", chosen_ended=False)
                                                                           for i in range(1, 5)])
    with pytest.raises(LabError, match="1 held out and 4 have an answer cut off before EOS.*raise the reward "
                                       "stage's --max_new_tokens"):
        stages.run_dpo("micro", cut, progress=False)
    assert not (root / "dpo").exists() and not (only_held / "dpo").exists() and not (cut / "dpo").exists()


def test_a_prompt_keeps_one_split_and_held_out_cut_off_pairs_are_ranked_but_not_in_trls_loss(sft_root, tmp_path):
    """A file's record may name its split; a prompt's pairs never straddle training and held out (the first split
    given wins, as in `lab reward`), and a held-out pair with an answer cut off is ranked by the implicit reward but
    left out of TRL's loss, which appends EOS to every answer."""
    rows = [{"prompt": f"Is {i} a number?", "chosen": "yes", "rejected": "no"} for i in range(10)]
    rows[0] |= {"split": "eval"}
    rows.append({"prompt": "Is 0 a number?", "chosen": "yes!", "rejected": "no", "split": "train"})  # 0 stays held out
    rows.append({"prompt": "Is 0 a number?", "chosen": "yes", "rejected": "n", "rejected_ended": False})
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    root = tmp_path / "run"
    shutil.copytree(sft_root / "sft", root / "sft")
    m = stages.run_dpo("micro", root, progress=False, data=str(data), eval_fraction=0.2)
    # "Is 0": its three pairs held out; of the nine other prompts round(9 × 0.2) = 2 held out, one pair each
    assert (m["n_eval_pairs"], m["n_train_pairs"], m["n_cut_off"]) == (5, 7, 0)
    assert m["n_eval_loss_pairs"] == 4  # the held-out pair whose rejected answer was cut off


def test_trls_held_out_loss_is_taken_on_the_held_out_pairs_whose_answers_ended(sft_root, monkeypatch):
    """`dpo.train` hands TRL's `evaluate` only the held-out pairs whose two answers ended: TRL appends EOS to every
    answer, so a cut-off one would be scored as ending where it never did."""
    from lab_utils import dpo
    from lab_utils.config import DPOConfig

    given, as_dataset = [], dpo.as_dataset
    monkeypatch.setattr(dpo, "as_dataset", lambda pairs: given.append(list(pairs)) or as_dataset(pairs))
    policy, tok = load_causal_lm(str(sft_root / "sft"))
    train = [_pair(i, "train") for i in range(4)]
    held = [_pair(10, "eval"), _pair(11, "eval", rejected_ended=False), _pair(12, "eval", chosen_ended=False)]
    _, _, loss = dpo.train(DPOConfig.for_profile("micro", bf16=False), policy, load_causal_lm(str(sft_root / "sft"))[0],
                           tok, train, held)
    assert given == [train, held[:1]] and loss > 0  # the training pairs, then the held-out ones TRL evaluates


def test_a_pair_whose_prompt_fills_max_length_is_left_out(tokenizer):
    """TRL keeps a pair only while its prompt leaves room for an answer token within max_length: a prompt of exactly
    max_length tokens is left out, one a token shorter is kept, whole."""
    from lab_utils import dpo

    pair = _pair(0, "train")
    prompt_ids = dpo.tokenized_pairs([pair], tokenizer, None)[0]["prompt_ids"]
    assert len(dpo.tokenized_pairs([pair], tokenizer, len(prompt_ids))) == 0
    kept = dpo.tokenized_pairs([pair], tokenizer, len(prompt_ids) + 1)
    assert len(kept) == 1 and kept[0]["prompt_ids"] == prompt_ids


def test_lora_dpo_reads_its_reference_with_the_adapter_disabled_and_saves_it_merged(sft_root, tmp_path):
    """With --lora the reference is the policy with its adapter disabled: the implicit rewards read that way are the
    saved merged model's against the SFT model's, and only the adapter's layers moved."""
    from lab_utils import dpo
    from lab_utils.config import DPOConfig

    policy, tok = load_causal_lm(str(sft_root / "sft"))
    pairs = [_pair(i, "train") for i in range(8)]
    cfg = DPOConfig.for_profile("micro", lora=True, lora_r=4, lr=1e-3, bf16=False)
    trainer, _, _ = dpo.train(cfg, policy, None, tok, pairs)
    assert trainer.ref_model is None
    got = torch.tensor(dpo.implicit_accuracy(trainer, tok, pairs, beta=cfg.beta)["margins"])
    dpo.save(trainer, tok, tmp_path / "merged", lora=True)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()  # a plain model: the adapter merged in
    merged, sft = load_causal_lm(str(tmp_path / "merged"))[0], load_causal_lm(str(sft_root / "sft"))[0]

    def log_ratio(side):
        args = [p["prompt"] for p in pairs], [p[side] for p in pairs], [True] * len(pairs)
        return R.response_loglik(merged, tok, *args) - R.response_loglik(sft, tok, *args)
    assert torch.allclose(got, cfg.beta * (log_ratio("chosen") - log_ratio("rejected")), atol=1e-4)
    assert got.abs().max() > 1e-3
    assert torch.equal(merged.model.embed_tokens.weight, sft.model.embed_tokens.weight)  # not a LoRA target
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, sft.model.layers[0].self_attn.q_proj.weight)


def test_name_never_writes_over_what_is_not_a_dpo_policy(sft_root, tmp_path):
    root = _run_with_pairs(sft_root, tmp_path, [_pair(i, "eval" if i < 2 else "train") for i in range(6)])
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("keep me")
    shutil.copytree(sft_root / "sft", root / "my-model",  # a model saved alone, as save_pretrained writes one
                    ignore=shutil.ignore_patterns("metrics.json", "lab_config.json"))
    for name, said in (("mine", "holds something other than a DPO policy"),
                       ("my-model", "holds something other than a DPO policy"),  # a model saved alone, not dpo/
                       ("sft", "cannot name"), ("votes.jsonl", "cannot name"), ("round2", "cannot name"),
                       ("votes.db-wal", "cannot name"), ("votes.db-journal", "cannot name")):  # SQLite's side files
        with pytest.raises(LabError, match=said):
            stages.run_dpo("micro", root, progress=False, name=name)
    assert (root / "mine" / "notes.txt").read_text() == "keep me" and (root / "my-model" / "config.json").is_file()
    with pytest.raises(LabError, match="--eval_fraction 0.5 splits --data's prompts"):
        stages.run_dpo("micro", root, progress=False, eval_fraction=0.5)
    # dpo/ as notebook 05 saved it before `lab dpo` wrote metrics beside it: replaced, like a folder `lab dpo` wrote
    shutil.copytree(root / "my-model", root / "dpo")
    assert stages.run_dpo("micro", root, progress=False)["n_train_pairs"] == 4
    assert "implicit_accuracy" in ck.read_json(root / "dpo" / "metrics.json")
    assert stages.run_dpo("micro", root, progress=False)["n_train_pairs"] == 4  # and again


def test_lab_dpo_after_the_reward_stage_trains_on_its_pairs_and_evaluates_against_sft(sft_root, tmp_path, capsys):
    """End to end on micro: the reward stage samples and labels pairs, `lab dpo` trains on its training pairs and
    the harness judges the policy against SFT."""
    root = tmp_path / "run"
    shutil.copytree(sft_root / "sft", root / "sft")
    r = stages.run_reward("micro", root, progress=False)
    assert main(["dpo", "--profile", "micro", "--out", str(root), "--name", "dpo-cli"]) == 0
    out = capsys.readouterr().out
    m = ck.read_json(root / "dpo-cli" / "metrics.json")
    # every pair of the stage is trained on, held out, or left out as cut off or as longer than --max_length
    assert (m["n_train_pairs"] + m["n_eval_pairs"] + m["n_cut_off"] + m["n_too_long"]
            == r["n_train_pairs"] + r["n_eval_pairs"]) and m["n_train_pairs"] > 0 and m["n_eval_pairs"] > 0
    assert f"[lab] dpo: {m['n_train_pairs']} training pairs" in out and "dpo-cli vs sft (annotator" in out
    res = ck.read_json(root / "eval" / "dpo-cli.json")
    assert res["model"] == str((root / "dpo-cli").resolve()) and "win_rate_vs_sft" in res
    # from another policy: the run's SFT model is no baseline to print a win rate against (as `lab ppo --model`)
    other = tmp_path / "other" / "sft"  # named like the run's own: the printed `lab eval` names it otherwise
    shutil.copytree(root / "sft", other)
    assert main(["dpo", "--profile", "micro", "--out", str(root), "--model", str(other), "--name", "dpo-other"]) == 0
    out = capsys.readouterr().out
    command = f"lab eval --profile micro --out {root} --model {other} --name start-sft"
    assert f"started from {other}, not this run's SFT model: `{command}`" in out and "vs sft (annotator" not in out
    assert main(shlex.split(command)[1:]) == 0  # before, it refused 'sft' as the name of another model
    # --model naming the run's own SFT folder: the run's SFT model is the baseline after all
    own = ["--model", str(root / "sft"), "--name", "dpo-own"]
    assert main(["dpo", "--profile", "micro", "--out", str(root), *own]) == 0
    out = capsys.readouterr().out
    assert "started from" not in out and "dpo-own vs sft (annotator" in out


def test_lab_dpo_on_a_file_names_this_run_in_its_next_command_and_marks_the_replaced_evaluation_stale(
        sft_root, tmp_path, capsys):
    """`lab dpo --data` prints the `lab eval` that evaluates the policy on the file's prompts: without --profile and
    --out it read runs/tiny. The policy it replaced had an evaluation in report.json, which is stale from then on
    (before, the report went on showing the old policy's numbers as this one's)."""
    root, _ = _evaluated_dpo_policy(sft_root, tmp_path)
    assert "dpo" in ck.read_json(root / "report.json")["eval"]
    data = tmp_path / "two.jsonl"  # two prompts: at --eval_fraction 0.2 none is held out
    data.write_text("\n".join(json.dumps({"prompt": f"Is {i} a number?", "chosen": "yes", "rejected": "no"})
                              for i in range(2)))
    with pytest.warns(UserWarning, match=r"no pair of .*two.jsonl is held out \(2 prompt\(s\), --eval_fraction 0.2\)"):
        assert main(["dpo", "--profile", "micro", "--out", str(root), "--data", str(data)]) == 0
    # the run has no reward model, which `lab eval --data` scores with: the reward stage on the same file comes first
    assert (f"`lab reward --profile micro --out '{root}' --data {data}` trains the reward model that scores the "
            f"answers, then `lab eval --profile micro --out '{root}' --model '{root / 'dpo'}' --data {data}`\n"
            in capsys.readouterr().out)
    report = ck.read_json(root / "report.json")
    assert "dpo" not in report["eval"] and report["eval_stale"]["dpo"].endswith(
        f"run `lab eval --profile micro --out '{root}' --model '{root / 'dpo'}' --name dpo`")  # not plain `lab eval`


@pytest.mark.parametrize("loss", DPO_LOSSES)
def test_every_loss_lab_dpo_accepts_builds_trls_trainer(sft_root, tmp_path, loss):
    """Every --loss `lab dpo` accepts is one TRL's trainer builds with the settings it is given: 'exo_pair' crashed
    with a traceback after the model had loaded (TRL needs a label smoothing, for which there was no flag)."""
    from lab_utils import dpo
    from lab_utils.config import _SMOOTHED, DPOConfig

    cfg = DPOConfig.for_profile("micro", loss=loss, label_smoothing=1e-3 if loss in _SMOOTHED else 0.0)
    policy, tok = load_causal_lm(str(sft_root / "sft"))
    trainer = dpo._dpo_trainer_class()(model=policy, ref_model=load_causal_lm(str(sft_root / "sft"))[0],
                                       processing_class=tok, args=dpo.trl_args(cfg, str(tmp_path)),
                                       train_dataset=dpo.as_dataset([_pair(0, "train")]))
    assert trainer.loss_types == [loss] and trainer.label_smoothing == cfg.label_smoothing


def test_label_smoothing_is_refused_where_no_loss_reads_it_or_the_loss_cannot_run_without_it(capsys):
    from lab_utils.config import DPOConfig

    for flags, said in ((["--loss", "exo_pair"], "--label_smoothing is 0"),
                        (["--loss", "robust", "--label_smoothing", "0.5"], "must be below 0.5"),
                        (["--label_smoothing", "0.1"], "read by none of --loss sigmoid"),
                        (["--label_smoothing", "1"], "--label_smoothing is 1.0")):
        assert main(["dpo", "--profile", "micro", "--out", "/nonexistent/run", *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], (flags, err)
    assert DPOConfig.for_profile("micro", loss="sigmoid,robust", label_smoothing=0.1).label_smoothing == 0.1


def test_a_copy_of_the_run_keeps_the_dpo_policys_evaluation(sft_root, tmp_path):
    """README: copy runs/tiny to keep round 1. `cp -r` gives the copy's files new modification times: the DPO
    policy's evaluation must stay in the copy's report, as the run's own models' do (stamped by `finished_at`), not
    be called "changed or is gone"; trained again in the copy, it is stale there."""
    root, six = _evaluated_dpo_policy(sft_root, tmp_path)
    copy = tmp_path / "round1"
    shutil.copytree(root, copy, copy_function=shutil.copy)  # as `cp -r`: new modification times
    report = stages.write_report(copy)
    assert "dpo" in report["eval"] and "dpo" not in report.get("eval_stale", {})
    stages.run_dpo("micro", copy, progress=False, data=str(six))
    assert "dpo" in stages.write_report(copy)["eval_stale"] and "dpo" in stages.write_report(root)["eval"]


def test_a_dpo_policy_from_an_earlier_sft_model_is_stale_until_trained_again(sft_root, tmp_path):
    """After the SFT stage is rebuilt, the DPO policy itself is out of date: the report says to train it again
    (evaluating it again, as the fix said before, re-scored the old policy and then listed it as current)."""
    root, six = _evaluated_dpo_policy(sft_root, tmp_path)
    assert "dpo" in ck.read_json(root / "report.json")["eval"]
    sft_metrics = root / "sft" / "metrics.json"
    ck.write_json(sft_metrics, ck.read_json(sft_metrics) | {"finished_at": "2026-12-08T00:00:00"})  # a new build
    stale = stages.write_report(root)["eval_stale"]["dpo"]
    assert stale.startswith("its policy was trained from an earlier SFT model: run `lab dpo --profile micro --out "
                            f"'{root}' --name dpo` again") and f"then `lab eval --profile micro --out '{root}'" in stale
    stages.run_eval("micro", root, model=str(root / "dpo"), name="dpo")  # evaluated again: still the old policy
    assert "dpo" not in ck.read_json(root / "report.json")["eval"]
    stages.run_dpo("micro", root, progress=False, data=str(six))
    stages.run_eval("micro", root, model=str(root / "dpo"), name="dpo")
    assert "dpo" in ck.read_json(root / "report.json")["eval"]


def test_a_damaged_pairs_file_names_the_command_for_this_run(sft_root, tmp_path):
    """The fix names this run's flags: plain `lab reward` would build a reward model in runs/tiny, another run."""
    root = _run_with_pairs(sft_root, tmp_path, [_pair(i, "train") for i in range(4)])
    with open(root / "reward" / "pairs.jsonl", "a") as f:
        f.write('{"prompt": "cut')
    with pytest.raises(LabError, match=f"pairs.jsonl:5.*Fix: run `lab reward --profile micro --out {root}` again"):
        stages.run_dpo("micro", root, progress=False)



def test_the_stale_fix_names_the_policys_folder_and_an_edited_metrics_file_stops_no_report(sft_root, tmp_path):
    """Evaluated under another --name, the fix trains the policy's own folder again (it named a folder after the
    evaluation); a hand-edited metrics.json in the policy's folder (a number for finished_at, a list for built_from)
    raised a TypeError from every command that writes the report."""
    root, _ = _evaluated_dpo_policy(sft_root, tmp_path)
    stages.run_eval("micro", root, model=str(root / "dpo"), name="mine")
    sft_metrics = root / "sft" / "metrics.json"
    ck.write_json(sft_metrics, ck.read_json(sft_metrics) | {"finished_at": "2026-12-08T00:00:00"})
    stale = stages.write_report(root)["eval_stale"]
    assert f"`lab dpo --profile micro --out '{root}' --name dpo` again" in stale["mine"]
    metrics = root / "dpo" / "metrics.json"
    ck.write_json(metrics, ck.read_json(metrics) | {"finished_at": 20261208, "built_from": ["sft"], "folder_stamps": 3})
    assert {"dpo", "mine"} <= set(stages.write_report(root)["eval_stale"])  # written, no TypeError


def test_a_dpo_policy_records_the_model_folder_it_started_from(sft_root, tmp_path):
    """--model naming the run's own SFT folder is the run's SFT model (its rebuild makes the policy stale); another
    folder is stamped, and trained again in place it makes the policy stale too."""
    root = tmp_path / "run"
    shutil.copytree(sft_root / "sft", root / "sft")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"prompt": f"Is {i} a number?", "chosen": "yes", "rejected": "no"})
                               for i in range(6)))
    own = stages.run_dpo("micro", root, progress=False, data=str(pairs), model=str(root / "sft"), name="dpo-own")
    assert own["built_from"] == {"sft": stages.stamp(root, "sft")} and "folder_stamps" not in own
    other = tmp_path / "other"
    shutil.copytree(sft_root / "sft", other)
    m = stages.run_dpo("micro", root, progress=False, data=str(pairs), model=str(other), name="dpo-other")
    assert m["built_from"] == {} and m["folder_stamps"] == {"model": stages.folder_stamp(str(other))}
    stages.run_eval("micro", root, model=str(root / "dpo-other"), name="dpo-other")
    assert "dpo-other" in ck.read_json(root / "report.json")["eval"]
    os.utime(other / "model.safetensors", ns=(1, 1))  # saved again in place
    assert stages.write_report(root)["eval_stale"]["dpo-other"].startswith(
        f"its policy started from {other}, trained again or gone since: run `lab dpo")
