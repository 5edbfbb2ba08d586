"""Stage 3 contracts: pairs labelled by the annotator, sequences laid out as PPO scores them, the score read at
the last real token, the Bradley–Terry loss, the saved normalisation, and the stage end to end on micro."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
import torch.nn.functional as F

from lab_utils import reward as R
from lab_utils import reward_data, stages, tasks
from lab_utils.config import RewardConfig
from lab_utils.errors import LabError
from lab_utils.tokenizer import render_alpaca


@pytest.fixture(scope="module")
def score_model(sft_root):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(sft_root / "sft")
    torch.manual_seed(0)
    return R.load_score_model(sft_root / "sft", tokenizer.pad_token_id).eval(), tokenizer


# ------------------------------------------------------------------ labelling

def test_label_pairs_orders_by_the_annotator_and_drops_ties(micro_world):
    rec = tasks.make_capital(random.Random(0), micro_world, "terse", "en", micro_world.country("France"))
    sample = {"rec": rec, "prompt": "P", "responses": [("Paris.", True), ("Lima.", True), ("Paris.", True),
                                                       ("The capital of France is Paris.", True), ("Paris.", False)]}
    pairs, ratings = R.label_pairs(micro_world, [sample])
    assert len(ratings) == 4  # the duplicate "Paris." (ended) is rated once
    by = {(p["chosen"], p["chosen_ended"], p["rejected"], p["rejected_ended"]) for p in pairs}
    assert ("Paris.", True, "Lima.", True) in by          # correct beats wrong
    assert ("Paris.", True, "Paris.", False) in by        # ended beats cut off
    assert ("The capital of France is Paris.", True, "Lima.", True) in by
    # terse and full-sentence are both concise: a tie, left out
    assert not any({(p["chosen"], p["chosen_ended"]), (p["rejected"], p["rejected_ended"])}
                   == {("Paris.", True), ("The capital of France is Paris.", True)} for p in pairs)
    assert all(p["task"] == "capital" and p["prompt"] == "P" for p in pairs)


def test_off_topic_pairs_put_an_answer_against_another_tasks_answer(micro_world):
    rng = random.Random(0)
    capital = tasks.make_capital(rng, micro_world, "terse", "en", micro_world.country("France"))
    arithmetic = tasks.make_arithmetic(rng, micro_world, "sentence", "en", (2, 3))
    samples = [{"rec": capital, "prompt": "C", "responses": [("Paris.", True)]},
               {"rec": arithmetic, "prompt": "A", "responses": [("2 + 3 = 5.", True)]}]
    pairs = R.off_topic_pairs(micro_world, samples, per_prompt=2)
    assert len(pairs) == 4 and all(p["chosen_ended"] and p["rejected_ended"] for p in pairs)
    assert {(p["prompt"], p["chosen"], p["rejected"], p["task"]) for p in pairs} == {
        ("C", "Paris.", "2 + 3 = 5.", "capital"), ("A", "2 + 3 = 5.", "Paris.", "arithmetic")}
    assert R.off_topic_pairs(micro_world, samples, per_prompt=0) == []
    assert R.off_topic_pairs(micro_world, samples[:1] * 3, per_prompt=2) == []  # no other task to draw from
    # the annotator decides the order: a wrong own answer loses to nothing better, so both-bad pairs are left out
    wrong = [{"rec": capital, "prompt": "C", "responses": [("Lima.", True)]}, samples[1]]
    assert [(p["prompt"], p["chosen"]) for p in R.off_topic_pairs(micro_world, wrong, 1)] == [("A", "2 + 3 = 5.")]


def test_deciding_term_names_the_most_important_rubric_term_that_differs(micro_world):
    rec = tasks.make_capital(random.Random(0), micro_world, "terse", "en", micro_world.country("France"))
    zh = next(r for r in tasks.eval_records(micro_world, 2) if r["task"] == "arithmetic" and r["lang"] == "zh")
    a, b, total = zh["answer"]
    wordy = tasks.make_capital(random.Random(0), micro_world, "verbose", "en", micro_world.country("France"))["output"]
    pair = lambda chosen, rejected, rejected_ended=True: {  # noqa: E731
        "prompt": "P", "chosen": chosen, "rejected": rejected, "chosen_ended": True, "rejected_ended": rejected_ended}
    cases = [(rec, pair("Paris.", "Lima."), "correct"),                # a wrong answer loses, whatever its style
             (rec, pair(wordy, "Lima."), "correct"),
             (rec, pair("Paris.", ""), "correct"),                     # so does an empty one
             (zh, pair(f"{a}加{b}等于{total}。", f"The answer is {total}."), "language"),  # right, in English
             (rec, pair("Paris.", "Paris.", False), "ended"),          # both right, one cut off
             (rec, pair("Paris.", wordy), "concise"),                  # both right and ended, one padded
             (rec, pair("Lima.", "Rome."), None),                      # both wrong: the annotator decides nothing
             (rec, pair("Paris.", "Paris."), None)]                    # identical: nothing differs
    assert [R.deciding_term(micro_world, r, p) for r, p, _ in cases] == [t for _, _, t in cases]
    records = {"P": rec}
    pairs = [p for _, p, _ in cases[:2]] + [cases[4][1], cases[5][1]]
    by_term = R.accuracy_by_term(micro_world, records, pairs, [0.5, -0.2, 1.0, 0.0])
    assert by_term == {"correct": {"pairs": 2, "accuracy": 0.5}, "ended": {"pairs": 1, "accuracy": 1.0},
                       "concise": {"pairs": 1, "accuracy": 0.0}}  # a zero margin is not ranked right
    assert list(by_term) == ["correct", "ended", "concise"]  # rubric order


def test_a_pair_scored_alike_is_not_ranked_right():
    """Pairwise accuracy counts chosen > rejected: a tie (a model that scores everything alike) is no right ranking."""
    pairs = [{"task": "capital"}, {"task": "capital"}, {"task": "arithmetic"}]
    got = R._ranking(pairs, torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.0, 1.0, 0.7]))
    assert got["accuracy"] == round(1 / 3, 4) and got["per_task"] == {"capital": 0.5, "arithmetic": 0.0}


def test_held_out_prompts_are_a_fraction_of_distinct_prompts():
    prompts = [f"p{i % 10}" for i in range(100)]
    held = R.held_out_prompts(prompts, 0.2, seed=3)
    assert len(held) == 2 and held <= set(prompts)
    assert held == R.held_out_prompts(list(reversed(prompts)), 0.2, seed=3)  # order of pairs does not matter


# ------------------------------------------------------------------ layout and score position

def test_encode_splits_prompt_and_response_as_sft_trained_them():
    """The reward model reads an answer's ids as the SFT model was trained to write them (`prompt_response_ids`): with
    a Llama-style tokenizer, "Paris" after the prompt's newline, not the word-start "▁Paris" it is alone."""
    from conftest import metaspace_tokenizer
    tok = metaspace_tokenizer()
    prompt = render_alpaca("Name the capital of France.")
    assert R.encode(tok, prompt, "Paris is the capital.") == tok(prompt + "Paris is the capital.")["input_ids"] + [
        tok.eos_token_id]
    model_rows = R.pair_dataset(tok, [{"prompt": prompt, "chosen": "Paris is the capital.", "rejected": "Paris."}])
    assert model_rows[0]["chosen_ids"] == R.encode(tok, prompt, "Paris is the capital.")


def test_encode_puts_eos_only_on_ended_responses(tokenizer):
    ended = R.encode(tokenizer, "Question?", "Answer.", ended=True)
    cut = R.encode(tokenizer, "Question?", "Answer.", ended=False)
    assert ended[0] == tokenizer.bos_token_id and ended[-1] == tokenizer.eos_token_id
    assert ended[:-1] == cut and tokenizer.eos_token_id not in cut
    assert ended[:-1] == tokenizer("Question?")["input_ids"] + tokenizer("Answer.", add_special_tokens=False)["input_ids"]


def test_an_answer_that_spells_a_special_token_is_scored_as_the_text_it_is(tokenizer):
    """A model can sample "<", "|", "eos", ... as plain tokens: `lab eval` and the apps score its decoded text, and
    tokenised again the spelling became the EOS control token inside the answer, another sequence than the one
    generated (and an answer cut off by the limit held an EOS)."""
    spelled = f"Paris{tokenizer.eos_token} and more"
    cut = R.encode(tokenizer, "Question?", spelled, ended=False)
    assert tokenizer.eos_token_id not in cut and tokenizer.decode(cut, skip_special_tokens=True) == "Question?" + spelled
    assert R.encode(tokenizer, "Question?", spelled, ended=True) == cut + [tokenizer.eos_token_id]


def test_score_is_read_at_the_last_real_token(score_model):
    model, tok = score_model
    seqs = [R.encode(tok, "What is 2 + 3?", "5", True), R.encode(tok, "Name a fruit.", "apple, banana, pear", False)]
    enc = R.batch(tok, seqs)
    assert enc["input_ids"][0, len(seqs[0]):].eq(tok.pad_token_id).all()  # right-padded, as the trainer pads
    with torch.no_grad():
        hidden = model.model(**enc).last_hidden_state                      # (B, T, d)
        by_hand = torch.stack([model.score(hidden[i, len(s) - 1]) for i, s in enumerate(seqs)])[:, 0]
    assert torch.allclose(R.raw_scores(model, tok, seqs), by_hand, atol=1e-5)
    # ... and a sequence scores the same alone as next to a longer one (padding never leaks in)
    assert torch.allclose(R.raw_scores(model, tok, seqs[:1]), R.raw_scores(model, tok, seqs)[:1], atol=1e-5)


def test_response_loglik_holds_a_bounded_number_of_logits_at_once(sft_root, monkeypatch):
    """A real model's vocabulary (150k) makes 64 long rows of logits tens of GB: batches shrink to fit the cap, and the
    sums are the same as in one batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(sft_root / "sft").eval()
    tok = AutoTokenizer.from_pretrained(sft_root / "sft")
    prompts = [f"Question {i}" + " and more" * (i % 4) for i in range(7)]
    responses, ended = [f"answer {i}" * (1 + i % 3) for i in range(7)], [i % 2 == 0 for i in range(7)]
    whole = R.response_loglik(lm, tok, prompts, responses, ended)
    calls = []
    monkeypatch.setattr(R, "LOGITS_PER_BATCH", 3 * 40 * lm.config.vocab_size)  # about three rows of 40 tokens
    real = lm.forward
    monkeypatch.setattr(lm, "forward", lambda *a, **k: calls.append(k["input_ids"].shape) or real(*a, **k))
    assert torch.allclose(R.response_loglik(lm, tok, prompts, responses, ended), whole, atol=1e-4)
    assert len(calls) >= 2 and all(b * t * lm.config.vocab_size <= R.LOGITS_PER_BATCH or b == 1 for b, t in calls)
    assert list(R._batches([5, 5, 5], 64, 10)) == [(0, 3)] and list(R._batches([5, 9, 2], 2, 10)) == [(0, 2), (2, 3)]
    assert list(R._batches([5, 9, 2], 64, 10 ** 9)) == [(0, 1), (1, 2), (2, 3)]  # one row over the cap goes alone


def test_response_loglik_sums_the_response_tokens_only_and_padding_never_leaks(sft_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(sft_root / "sft").eval()
    tok = AutoTokenizer.from_pretrained(sft_root / "sft")
    prompts, responses, ended = ["What is 2 + 3?", "Name a fruit."], ["5", "apple, banana, pear"], [True, False]

    def by_hand(prompt, response, end):
        ids = torch.tensor([R.encode(tok, prompt, response, end)])
        start = len(tok(prompt)["input_ids"])
        with torch.no_grad():
            logprobs = lm(input_ids=ids).logits[0, :-1].log_softmax(-1)
        return sum(logprobs[t - 1, ids[0, t]].item() for t in range(start, ids.shape[1]))

    got = R.response_loglik(lm, tok, prompts, responses, ended)
    want = torch.tensor([by_hand(*x) for x in zip(prompts, responses, ended)])
    assert torch.allclose(got, want, atol=1e-4)
    # the EOS of an ended answer counts: ending is one more (negative) log-probability
    assert R.response_loglik(lm, tok, prompts[:1], responses[:1], [False])[0] > got[0]
    pairs = [{"prompt": prompts[1], "chosen": responses[1], "rejected": "pear", "chosen_ended": False, "task": "x"}]
    base = R.likelihood_accuracy(lm, tok, pairs)
    margin = got[1] - R.response_loglik(lm, tok, prompts[1:], ["pear"], [True])[0]
    assert base["margins"] == pytest.approx([margin.item()], abs=1e-4)
    assert base["accuracy"] == float(margin > 0) and base["per_task"] == {"x": base["accuracy"]}


def test_bradley_terry_loss_matches_reward_trainer(score_model, tmp_path):
    """The trainer's loss on one batch equals −log σ(r_chosen − r_rejected), computed here by hand."""
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    model, tok = score_model
    pairs = [{"prompt": "Q1", "chosen": "good", "rejected": "bad"},
             {"prompt": "Q2", "chosen": "a longer good answer", "rejected": "no", "rejected_ended": False}]
    trainer = RewardTrainer(model=model, processing_class=tok, train_dataset=R.pair_dataset(tok, pairs),
                            args=TRLRewardConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                                                 bf16=False, activation_checkpointing=False))
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, inputs)
    chosen = R.raw_scores(model, tok, [R.encode(tok, p["prompt"], p["chosen"]) for p in pairs])
    rejected = R.raw_scores(model, tok, [R.encode(tok, p["prompt"], p["rejected"], p.get("rejected_ended", True))
                                         for p in pairs])
    assert torch.allclose(loss, -F.logsigmoid(chosen - rejected).mean(), atol=1e-5)


def test_lm_regulariser_starts_as_the_sft_models_own_loss_on_the_chosen_texts(sft_root, tmp_path):
    """Before training the reward model's hidden states are the SFT model's, so the regulariser read through the
    frozen SFT head is the SFT model's next-token loss on the chosen sequences (padding left out); the trainer's
    loss is Bradley–Terry + lm_coef × that; the frozen head gets no gradient, the reward model does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import RewardConfig as TRLRewardConfig

    tok = AutoTokenizer.from_pretrained(sft_root / "sft")
    pairs = [{"prompt": "Q1", "chosen": "good", "rejected": "a much longer bad answer"},
             {"prompt": "Q2 is longer", "chosen": "a longer good answer", "rejected": "no", "chosen_ended": False}]

    def trainer(lm_coef):
        torch.manual_seed(0)
        model = R.load_score_model(sft_root / "sft", tok.pad_token_id)
        return R.RegularisedRewardTrainer(
            model=model, processing_class=tok, train_dataset=R.pair_dataset(tok, pairs),
            lm_head=R.frozen_lm_head(sft_root / "sft") if lm_coef else None, lm_coef=lm_coef,
            args=TRLRewardConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False,
                                 activation_checkpointing=False))

    plain, regularised = trainer(0.0), trainer(0.5)
    inputs = plain.data_collator([plain.train_dataset[i] for i in range(2)])
    assert inputs["attention_mask"].min() == 0  # the batch has padding to leave out
    with torch.no_grad():
        bradley_terry = plain.compute_loss(plain.model, dict(inputs))
    loss = regularised.compute_loss(regularised.model.train(), dict(inputs))  # no dropout in these models
    # under several processes the trainer passes the model wrapped (DDP); DataParallel wraps it the same way on a CPU
    wrapped = regularised.compute_loss(torch.nn.DataParallel(regularised.model), dict(inputs))
    assert wrapped.item() == pytest.approx(loss.item(), abs=1e-6)
    regularised._metrics["train"]["lm_loss"].pop()

    lm = AutoModelForCausalLM.from_pretrained(sft_root / "sft").eval()
    nll, count = 0.0, 0
    for p in pairs:
        ids = torch.tensor([R.encode(tok, p["prompt"], p["chosen"], p.get("chosen_ended", True))])
        with torch.no_grad():
            logits = lm(input_ids=ids).logits[0, :-1]
        nll, count = nll + F.cross_entropy(logits, ids[0, 1:], reduction="sum").item(), count + ids.shape[1] - 1
    assert loss.item() == pytest.approx(bradley_terry.item() + 0.5 * nll / count, abs=1e-4)
    assert regularised._metrics["train"]["lm_loss"] == [pytest.approx(nll / count, abs=1e-4)]

    loss.backward()
    assert regularised.lm_head.weight.grad is None
    assert regularised.model.model.layers[-1].mlp.down_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="lm_head"):
        R.RegularisedRewardTrainer(model=plain.model, processing_class=tok, train_dataset=plain.train_dataset,
                                   lm_coef=1.0, args=plain.args)


def test_ratings_model_trains_with_its_own_epochs_and_learning_rate(sft_root, monkeypatch):
    seen = []

    class Spy(R.Trainer):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs["args"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(R, "Trainer", Spy)
    ratings = [{"prompt": render_alpaca(f"What is {i} plus {i}?"), "response": str(2 * i), "ended": True,
                "rating": 1 + i % 5} for i in range(6)]
    cfg = RewardConfig.for_profile("micro", epochs=1.0, lr=1e-5, ratings_epochs=2.0, ratings_lr=3e-4,
                                   batch_size=3, logging_steps=1, bf16=False)
    _, _, history = R.train_ratings(cfg, sft_root / "sft", ratings, progress=False)
    assert (seen[0].num_train_epochs, seen[0].learning_rate) == (2.0, 3e-4)
    assert history[-1]["step"] == 2 * len(ratings) // 3  # two passes of two steps each


def test_both_reward_models_train_without_printing_their_logs_when_progress_is_off(sft_root, capsys):
    """With tqdm off, transformers prints every logged dict instead of a bar; `progress=False` prints nothing per
    step, and the history keeps every logged loss."""
    pairs = [{"prompt": f"What is {i} plus 1?", "chosen": f"{i + 1}.", "rejected": "No idea."} for i in range(4)]
    ratings = [{"prompt": p["prompt"], "response": p["chosen"], "ended": True, "rating": 5} for p in pairs]
    cfg = RewardConfig.for_profile("micro", epochs=1.0, ratings_epochs=1.0, batch_size=2, logging_steps=1, bf16=False)
    capsys.readouterr()
    for train, data in ((R.train_pairwise, pairs), (R.train_ratings, ratings)):
        _, _, history = train(cfg, sft_root / "sft", data, progress=False)
        assert len(history) == 2 and "'loss'" not in capsys.readouterr().out


def test_a_model_whose_pad_is_its_eos_gets_a_pad_of_its_own_in_both_reward_models(sft_root, tmp_path):
    """`lab reward --model DIR` with a folder whose tokenizer reuses EOS as PAD (as many downloaded models do): the
    reward models get the distinct PAD the rest of the stage gets from `load_causal_lm`, with an embedding row for it.
    With PAD = EOS the score of an answer that ended would be read before its EOS, as if it had been cut off."""
    from transformers import AutoTokenizer

    folder = tmp_path / "eos-pad"
    shutil.copytree(sft_root / "sft", folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.eos_token
    tok.save_pretrained(folder)
    pairs = [{"prompt": f"What is {i} plus 1?", "chosen": f"{i + 1}.", "rejected": "No idea."} for i in range(4)]
    ratings = [{"prompt": p["prompt"], "response": p["chosen"], "ended": True, "rating": 5} for p in pairs]
    cfg = RewardConfig.for_profile("micro", epochs=1.0, ratings_epochs=1.0, batch_size=4, lm_coef=1.0, bf16=False)
    for model, tok, _ in (R.train_pairwise(cfg, folder, pairs, progress=False),
                          R.train_ratings(cfg, folder, ratings, progress=False)):
        assert tok.pad_token_id != tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
        assert model.get_input_embeddings().num_embeddings >= len(tok)
        ended, cut = R.encode(tok, "Q?", "4.", True), R.encode(tok, "Q?", "4.", False)
        assert not torch.allclose(*R.raw_scores(model.eval(), tok, [ended, cut]).chunk(2))  # EOS is read


def test_pairwise_training_learns_the_preference_it_is_shown(sft_root):
    """Bradley–Terry training must move the scores the way the pairs say: trained on pairs where a number beats the
    same filler answer, the model ranks held-out pairs of that kind right; trained on the opposite preference, it
    ranks them the other way. An untrained score head ranks them one way whatever it was shown."""
    def pairs(numbers, number_wins: bool):
        rows = []
        for i in numbers:
            number, filler = f"{i + 1}.", "I do not know, sorry."
            chosen, rejected = (number, filler) if number_wins else (filler, number)
            rows.append({"prompt": f"What is {i} plus 1?", "chosen": chosen, "rejected": rejected})
        return rows
    cfg = RewardConfig.for_profile("micro", epochs=3.0, lr=1e-3, lm_coef=0.0, bf16=False)  # float32: any host alike
    for number_wins in (True, False):
        model, tok, history = R.train_pairwise(cfg, sft_root / "sft", pairs(range(0, 64, 2), number_wins),
                                               progress=False)
        assert R.pairwise_accuracy(model.eval(), tok, pairs(range(1, 33, 2), number_wins))["accuracy"] == 1.0
        assert history[-1]["loss"] < history[0]["loss"]


def test_reward_model_saves_and_applies_its_normalisation(score_model, tmp_path):
    model, tok = score_model
    prompts, responses = ["Q1", "Q2", "Q3"], ["a", "bb", "ccc"]
    raw = R.raw_scores(model, tok, [R.encode(tok, p, r) for p, r in zip(prompts, responses)])
    R.RewardModel(model, tok, mean=0.5, std=2.0).save(tmp_path / "rm")
    assert (tmp_path / "rm" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "rm" / R.NORM_FILE).read_text()) == {"mean": 0.5, "std": 2.0}
    loaded = R.RewardModel.load(tmp_path / "rm")
    assert torch.allclose(loaded.score(prompts, responses), (raw - 0.5) / 2.0, atol=1e-5)


def test_a_reward_model_with_pickled_weights_is_refused(score_model, tmp_path):
    """RewardModel.load passes use_safetensors=True, as every model load does: no pytorch_model.bin is unpickled."""
    from safetensors.torch import load_file

    model, tok = score_model
    R.RewardModel(model, tok, mean=0.5, std=2.0).save(tmp_path / "rm")
    torch.save(load_file(tmp_path / "rm" / "model.safetensors"), tmp_path / "rm" / "pytorch_model.bin")
    (tmp_path / "rm" / "model.safetensors").unlink()
    with pytest.raises(LabError, match=r"rm: no safetensors weights .*Fix: the lab loads weights only from "):
        R.RewardModel.load(tmp_path / "rm")


def test_normalised_scores_of_the_fitted_samples_have_mean_0_std_1(score_model):
    model, tok = score_model
    samples = [{"prompt": f"Q{i}", "responses": [(r, e) for r, e in (("a", True), ("bb", False), ("the c", True))]}
               for i in range(4)]
    reward_model = R.RewardModel(model, tok, *R.fit_normalisation(model, tok, samples))
    scores = reward_model.score([s["prompt"] for s in samples for _ in s["responses"]],
                      [r for s in samples for r, _ in s["responses"]], [e for s in samples for _, e in s["responses"]])
    raw = R.raw_scores(model, tok, [R.encode(tok, s["prompt"], r, e) for s in samples for r, e in s["responses"]])
    assert raw.std() > 1e-3 and abs(raw.mean()) > 1e-3  # there was something to normalise
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-4) and scores.std().item() == pytest.approx(1.0, abs=1e-4)


def test_normalisation_of_a_single_sample_keeps_the_raw_unit(score_model):
    """One answer has no spread: its std would be NaN, and every later reward with it."""
    model, tok = score_model
    mean, std = R.fit_normalisation(model, tok, [{"prompt": "Q1", "responses": [("a", True)]}])
    assert std == 1.0 and mean == pytest.approx(R.raw_scores(model, tok, [R.encode(tok, "Q1", "a")]).item())


def test_missing_reward_model_is_lab_error(tmp_path):
    with pytest.raises(LabError, match="lab reward"):
        R.RewardModel.load(tmp_path / "nothing")


def test_sampling_draws_a_bar_per_answer_and_samples_the_same_answers(sft_root, capsys):
    """The reward stage's sampling is its longest silent stretch; the bar must not change what is sampled."""
    from lab_utils.modeling import load_causal_lm

    lm, tok = load_causal_lm(str(sft_root / "sft"))
    records = [{"instruction": f"What is {i} + 1?", "input": "", "output": str(i + 1)} for i in range(5)]
    capsys.readouterr()  # the loader's own bar
    quiet = R.sample_responses(lm, tok, records, 2, 1.0, 6, seed=3)
    assert capsys.readouterr().err == ""
    shown = R.sample_responses(lm, tok, records, 2, 1.0, 6, seed=3, progress=True)
    err = capsys.readouterr().err
    assert "sampling SFT answers" in err and "10/10" in err
    assert [s["responses"] for s in shown] == [s["responses"] for s in quiet]


def test_sampling_gives_each_record_its_own_n_answers_in_the_samplers_order(monkeypatch):
    """Each prompt is sampled n_samples times in a row; every record gets exactly its own n answers (one lost per
    prompt would leave fewer pairs, and a shifted slice would pair one prompt's answers with another's)."""
    records = [{"instruction": f"What is {i} + 1?", "input": "", "output": str(i + 1)} for i in range(3)]
    asked = []

    def generate_ended(model, tokenizer, prompts, *args, **kwargs):
        asked.extend(prompts)
        return [(f"answer {k}", k % 2 == 0) for k in range(len(prompts))]

    monkeypatch.setattr(R, "generate_ended", generate_ended)
    samples = R.sample_responses(None, None, records, 3, 1.0, 6)
    prompts = [render_alpaca(r["instruction"], "") for r in records]
    assert asked == [p for p in prompts for _ in range(3)]
    assert [(s["rec"], s["prompt"]) for s in samples] == list(zip(records, prompts))
    assert [s["responses"] for s in samples] == [[(f"answer {k}", k % 2 == 0) for k in range(3 * i, 3 * i + 3)]
                                                 for i in range(3)]


def sampled_with_spies(world, tokenizer, monkeypatch, **overrides):
    """`reward_data.sampled_pairs` on micro's reward prompts, the SFT model's answers canned (its reference answer
    cut off, two wrong ones): (held-out prompts, the samples `label_pairs` labels, the samples `off_topic_pairs`
    draws from)."""
    from types import SimpleNamespace

    seen = {}

    def sample_responses(policy, tok, records, n_samples, *args, **kwargs):
        answers = lambda r: [(r["output"], False), ("I do not know.", True), ("No.", True)][:n_samples]  # noqa: E731
        return [{"rec": r, "prompt": p, "responses": answers(r)}
                for r, p in zip(records, [render_alpaca(r["instruction"], r["input"]) for r in records])]

    def spy(name, real):
        def call(w, samples, *args, **kwargs):
            seen[name] = samples
            return real(w, samples, *args, **kwargs)
        monkeypatch.setattr(R, name, call)

    monkeypatch.setattr(R, "sample_responses", sample_responses)
    spy("label_pairs", R.label_pairs)
    spy("off_topic_pairs", R.off_topic_pairs)
    cfg = RewardConfig.for_profile("micro", max_length=512, **overrides)  # every pair fits: no warning
    policy = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=512))
    held = reward_data.sampled_pairs(cfg, world, policy, tokenizer, progress=False)[3]
    assert 0 < len(held) < len({s["prompt"] for s in seen["label_pairs"]})  # both splits hold prompts
    return held, seen["label_pairs"], seen["off_topic_pairs"]


def test_reference_answers_train_joins_the_training_prompts_answers_only(micro_world, tokenizer, monkeypatch):
    """--reference_answers train adds each training prompt's reference answer (ended) to its sampled ones; held-out
    prompts keep the SFT model's answers alone, so the held-out accuracy is measured on the model's own answers."""
    held, labelled, _ = sampled_with_spies(micro_world, tokenizer, monkeypatch, reference_answers="train")
    n = RewardConfig.for_profile("micro").n_samples
    for s in labelled:
        reference = [] if s["prompt"] in held else [(s["rec"]["output"], True)]
        assert s["responses"][n:] == reference and len(s["responses"][:n]) == n


def test_off_topic_pairs_are_drawn_from_the_training_prompts_only(micro_world, tokenizer, monkeypatch):
    """--off_topic pairs are training pairs: built on a held-out prompt they would enter the held-out accuracy the
    flag's effect is measured by, and a held-out answer would be trained on as the foreign one."""
    held, labelled, drawn = sampled_with_spies(micro_world, tokenizer, monkeypatch, off_topic=1)
    assert [s["prompt"] for s in drawn] == [s["prompt"] for s in labelled if s["prompt"] not in held]


# ------------------------------------------------------------------ the stage, end to end on micro

@pytest.fixture(scope="module")
def reward_metrics(sft_root):
    return stages.run_reward("micro", sft_root, progress=False, off_topic=1)


def test_run_reward_writes_both_models_and_report(reward_metrics, sft_root):
    m = reward_metrics
    for key in ("pairwise_accuracy", "ratings_model_pairwise_accuracy", "n_train_pairs", "n_eval_pairs", "wall_s"):
        assert key in m
    assert m["n_train_pairs"] > 0 and m["n_eval_pairs"] > 0  # the accuracy is rebuilt from its terms below
    assert m["history"] and all(h["lm_loss"] > 0 for h in m["history"])  # the regulariser is on by default
    for key, overall in (("pairwise_accuracy_by_term", "pairwise_accuracy"),
                         ("ratings_model_by_term", "ratings_model_pairwise_accuracy")):
        split = m[key]  # every held-out pair falls under exactly one term, and the shares add up to the whole
        assert sum(t["pairs"] for t in split.values()) == m["n_eval_pairs"] and "undecided" not in split
        right = sum(t["pairs"] * t["accuracy"] for t in split.values())
        assert right / m["n_eval_pairs"] == pytest.approx(m[overall], abs=1e-3)
    for folder in ("reward", "reward-ratings"):
        assert (sft_root / folder / "model.safetensors").is_file() and (sft_root / folder / R.NORM_FILE).is_file()
    rows = [json.loads(line) for line in (sft_root / "reward" / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == m["n_train_pairs"] + m["n_eval_pairs"]
    assert 0 < m["n_off_topic_pairs"] < m["n_train_pairs"]  # off-topic pairs are training pairs only
    train = {r["prompt"] for r in rows if r["split"] == "train"}
    assert train.isdisjoint(r["prompt"] for r in rows if r["split"] == "eval")  # prompts never shared
    report = json.loads((sft_root / "report.json").read_text())
    assert report["stages"]["reward"]["n_eval_pairs"] == m["n_eval_pairs"]


def test_sampled_pairs_longer_than_max_length_are_left_out_and_counted(reward_metrics, sft_root, tmp_path,
                                                                        monkeypatch):
    """RewardTrainer drops pairs over its max_length without a word, so the stage leaves them out itself and counts
    them: n_train_pairs is then what the model trained on. The same seed samples the same pairs at any limit."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sft_root / "sft")

    def length(r):  # the longer of the pair's two sequences, as the stage encodes them
        return max(len(R.encode(tok, r["prompt"], r[side], r.get(f"{side}_ended", True)))
                   for side in ("chosen", "rejected"))

    rows = [json.loads(line) for line in (sft_root / "reward" / "pairs.jsonl").read_text().splitlines()]
    limit = sorted(map(length, rows))[len(rows) // 2]
    over = sum(length(r) > limit for r in rows)
    assert over > 0
    drawn = []  # the off-topic pairs the stage draws, before the length filter

    def off_topic_pairs(*args, **kwargs):
        drawn.extend(pairs := off_topic(*args, **kwargs))
        return pairs

    off_topic = R.off_topic_pairs
    monkeypatch.setattr(R, "off_topic_pairs", off_topic_pairs)
    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    n_long = over + reward_metrics["n_too_long"]
    with pytest.warns(UserWarning, match=rf"^{n_long} of {len(rows) + reward_metrics['n_too_long']} preference "
                                         rf"pairs are longer than {limit} tokens") as caught:
        m = stages.run_reward("micro", out, progress=False, off_topic=1, max_length=limit)
    assert [w.filename for w in caught if "longer than" in str(w.message)] == [__file__]  # at the stage's caller
    assert m["n_too_long"] == n_long and len(drawn) >= reward_metrics["n_off_topic_pairs"]
    kept = [json.loads(line) for line in (out / "reward" / "pairs.jsonl").read_text().splitlines()]
    assert m["n_train_pairs"] + m["n_eval_pairs"] == len(kept) == len(rows) - over
    assert all(length(r) <= limit for r in kept)
    assert 0 < m["n_off_topic_pairs"] == sum(length(p) <= limit for p in drawn) < len(drawn)  # the ones left in


def test_the_stage_saves_the_normalisation_it_reports(reward_metrics, sft_root):
    reward_model, ratings = R.RewardModel.load(sft_root / "reward"), R.RewardModel.load(sft_root / "reward-ratings")
    m = reward_metrics
    assert (reward_model.mean, reward_model.std) == pytest.approx((m["norm_mean"], m["norm_std"]), abs=1e-4)
    assert m["norm_std"] != 1.0 and (ratings.mean, ratings.std) == (0.0, 1.0)  # the ratings model keeps its scale
    assert json.loads((sft_root / "reward-ratings" / R.NORM_FILE).read_text()) == {"mean": 0.0, "std": 1.0}


def test_the_stage_samples_its_pairs_on_the_inference_device(sft_root, tmp_path, monkeypatch):
    """On a GPU the SFT model's samples are drawn there, not on the CPU where from_pretrained leaves a model (the
    meta device stands in for the GPU; sampling stops the stage before anything runs on it)."""
    from lab_utils import modeling

    class Sampled(Exception):
        pass

    def sample_responses(policy, *args, **kwargs):
        raise Sampled(policy.device)

    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    monkeypatch.setattr(modeling, "inference_device", lambda: torch.device("meta"))
    monkeypatch.setattr(R, "sample_responses", sample_responses)
    with pytest.raises(Sampled) as caught:
        stages.run_reward("micro", out, progress=False)
    assert caught.value.args == (torch.device("meta"),)


def test_run_reward_on_a_pairs_file(sft_root, tmp_path):
    rows = [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 2)} for i in range(12)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    m = stages.run_reward("micro", out, progress=False, data=str(data), eval_fraction=0.25)
    assert m["n_train_pairs"] + m["n_eval_pairs"] == 12 and m["ratings_model_pairwise_accuracy"] is None
    assert m["pairwise_accuracy_by_term"] is None  # given pairs: no task record to judge them against


def test_the_stage_reports_the_held_out_accuracy_of_the_model_as_saved(sft_root, tmp_path, monkeypatch):
    """Under --bf16 the trainer leaves bf16 autocast wrapped around the model's `forward`. The held-out accuracy is
    the float32 model's, as saved and as `lab eval`, the apps and notebook 04 score it (on the third CPU the wrapped
    model ranked 4 of 220 held-out pairs otherwise); the normalisation is fitted at the trainer's precision, the one
    PPO scores in."""
    wrapped = {}
    accuracy, normalisation = R.pairwise_accuracy, R.fit_normalisation

    def spy(name, fn):
        def called(model, *args, **kwargs):
            wrapped[name] = hasattr(model, "_original_forward")  # accelerate's autocast wrapper
            return fn(model, *args, **kwargs)
        return called

    monkeypatch.setattr(R, "pairwise_accuracy", spy("accuracy", accuracy))
    monkeypatch.setattr(R, "fit_normalisation", spy("normalisation", normalisation))
    pairs = [{"prompt": f"What is {i} plus 1?", "chosen": f"{i + 1}.", "rejected": "No idea."} for i in range(12)]
    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    m = stages.run_reward("micro", out, progress=False, pairs=pairs, eval_fraction=0.25, bf16=True)
    assert wrapped == {"normalisation": True, "accuracy": False}
    held = [json.loads(line) for line in (out / "reward" / "pairs.jsonl").read_text().splitlines()]
    saved = R.RewardModel.load(out / "reward")
    assert accuracy(saved.model, saved.tokenizer, [p for p in held if p["split"] == "eval"])["accuracy"] == \
        m["pairwise_accuracy"]


def test_given_pairs_keep_their_split_and_the_rest_are_split_as_usual(sft_root, tmp_path):
    """Notebook 06 retrains on last round's pairs (rendered prompts, a `split` each) plus new votes (no split):
    a prompt held out before stays held out, and none of the new prompts is trained and evaluated at once."""
    old = [{"prompt": f"Q{i}", "chosen": "yes", "rejected": "no", "split": "eval" if i < 3 else "train"}
           for i in range(8)]
    new = [{"prompt": f"N{i}", "chosen": "yes", "rejected": "no"} for i in range(12)]
    new[0] |= {"chosen_ended": None, "rejected_ended": False}  # a vote stored before the flags were recorded: unknown
    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    m = stages.run_reward("micro", out, progress=False, pairs=old + new, eval_fraction=0.25)
    rows = [json.loads(line) for line in (out / "reward" / "pairs.jsonl").read_text().splitlines()]
    split = {r["prompt"]: r["split"] for r in rows}
    n0 = next(r for r in rows if r["prompt"] == "N0")  # unknown reads as ended (no flag), as the loaders read it
    assert "chosen_ended" not in n0 and n0["rejected_ended"] is False
    assert [split[f"Q{i}"] for i in range(8)] == ["eval"] * 3 + ["train"] * 5
    assert {split[f"N{i}"] for i in range(12)} == {"train", "eval"}
    assert m["n_train_pairs"] + m["n_eval_pairs"] == 20 and m["data"] == "20 given pairs"
    with pytest.raises(LabError, match="pass one of them"):
        stages.run_reward("micro", out, progress=False, pairs=new, data="votes.jsonl")


def test_mix_previous_adds_the_new_pairs_to_the_ones_the_last_reward_model_was_trained_on(sft_root, tmp_path,
                                                                                         capsys):
    """`lab reward --data votes.db --mix_previous`, the loop's next round from the command line: the previous pairs
    keep their split, a new pair already among them counts once, and a second run with the same votes adds none."""
    from lab_utils.cli import main

    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    old = [{"prompt": render_alpaca(f"Q{i}", ""), "chosen": "yes", "rejected": "no", "chosen_ended": True,
            "rejected_ended": True, "split": "eval" if i < 3 else "train"} for i in range(8)]
    (out / "reward").mkdir()
    (out / "reward" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    (out / "reward" / "metrics.json").write_text("{}")  # a finished round's
    data = tmp_path / "votes.jsonl"
    new = [{"prompt": f"N{i}", "chosen": "yes", "rejected": "no"} for i in range(12)]
    again = {"prompt": "Q4", "chosen": "yes", "rejected": "no"}  # a pair the previous round had already
    other = {"prompt": "Q0", "chosen": "yes, it is", "rejected": "no", "chosen_ended": False,  # a held-out prompt's,
             "split": "train"}  # which cannot move it out of the previous round's held-out prompts
    data.write_text("".join(json.dumps(r) + "\n" for r in new + [again, other]))
    for _ in range(2):
        m = stages.run_reward("micro", out, progress=False, data=str(data), mix_previous=True, eval_fraction=0.25)
        rows = [json.loads(line) for line in (out / "reward" / "pairs.jsonl").read_text().splitlines()]
        assert len(rows) == m["n_train_pairs"] + m["n_eval_pairs"] == 21
        split = {r["prompt"]: r["split"] for r in rows}
        assert [split[render_alpaca(f"Q{i}", "")] for i in range(8)] == ["eval"] * 3 + ["train"] * 5
        assert {split[render_alpaca(f"N{i}", "")] for i in range(12)} == {"train", "eval"}
        q0 = [r for r in rows if r["prompt"] == render_alpaca("Q0", "")]
        assert [(r["chosen"], r["split"], r["chosen_ended"]) for r in q0] == [("yes", "eval", True),
                                                                              ("yes, it is", "eval", False)]
    printed = capsys.readouterr().out
    assert "8 previous pairs" in printed
    assert "+ 13 from --data (1 more was among the previous ones already)" in printed
    assert "21 previous pairs" in printed and "+ 0 from --data (14 more were" in printed  # the second run
    assert m["data"] == f"{data} + 21 previous pairs"
    with pytest.raises(LabError, match="no --data was given"):
        stages.run_reward("micro", out, progress=False, mix_previous=True)
    with pytest.raises(LabError, match="no previous preference pairs"):
        stages.run_reward("micro", tmp_path / "fresh", progress=False, data=str(data), mix_previous=True)
    (out / "reward" / "pairs.jsonl").write_text(json.dumps(old[0]) + "\n{not json\n")
    assert main(["reward", "--profile", "micro", "--out", str(out), "--data", str(data), "--mix_previous"]) == 2
    err = capsys.readouterr().err
    assert "pairs.jsonl:2" in err and "without --mix_previous" in err


def test_mix_previous_refuses_the_pairs_of_a_reward_stage_that_did_not_finish(sft_root, tmp_path, capsys):
    """The stage saves the pairwise model with its pairs.jsonl (the previous round's mixed with --data's) before it
    trains the ratings model and writes metrics.json: interrupted between the two, the next --mix_previous read the
    mixed pairs as the previous round's and trained on the first run's --data too, without a word."""
    from lab_utils.cli import main

    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    rows = [{"prompt": render_alpaca(f"Q{i}", ""), "chosen": "yes", "rejected": "no", "split": "train"}
            for i in range(8)]
    (out / "reward").mkdir()
    (out / "reward" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # no metrics.json
    data = tmp_path / "votes.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"N{i}", "chosen": "yes", "rejected": "no"}) + "\n"
                            for i in range(12)))
    capsys.readouterr()
    assert main(["reward", "--profile", "micro", "--out", str(out), "--data", str(data), "--mix_previous"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pairs.jsonl: these pairs are not a finished round's" in err[0]
    assert "put back the previous round's reward folder" in err[0] and "or drop --mix_previous" in err[0]
    assert sorted(p.name for p in (out / "reward").iterdir()) == ["pairs.jsonl"]  # nothing trained, nothing written


def test_a_reward_stage_killed_while_the_ratings_model_trains_is_out_of_the_report(sft_root, tmp_path, monkeypatch):
    """The stage replaces reward/ with the new pairwise model before it trains the ratings model: killed in between,
    report.json went on listing the numbers of the model the folder no longer held, until another command rewrote
    it."""
    from lab_utils import votes

    db = votes.init(tmp_path / "votes.db")
    for i in range(8):
        votes.record_vote(db, f"v{i}", f"What is {i} + 1?", str(i + 1), str(i + 2), "sft", "rlhf", "a", 5, 1,
                          a_ended=True, b_ended=True)
    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    stages.run_reward("micro", out, progress=False, data=str(db), eval_fraction=0.25)
    assert "reward" in json.loads((out / "report.json").read_text())["stages"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(R, "train_ratings", killed)
    with pytest.raises(KeyboardInterrupt):
        stages.run_reward("micro", out, progress=False, data=str(db), eval_fraction=0.25)
    assert not (out / "reward" / "metrics.json").exists()
    assert "reward" not in json.loads((out / "report.json").read_text())["stages"]
    (out / "rlhf").mkdir()  # a damaged file elsewhere: no report can be written, and the stale one must not stay
    (out / "rlhf" / "metrics.json").write_text('{"cut sh', encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        stages.run_reward("micro", out, progress=False, data=str(db), eval_fraction=0.25)
    assert not (out / "report.json").exists()


def test_the_vote_stores_ratings_train_the_ratings_model_and_carry_into_the_next_round(sft_root, tmp_path, capsys):
    """`lab reward --data votes.db`: the arena's 1–5 ratings train the ratings model beside the pairwise one (a tie's
    ratings too), on the pairs' training prompts only, and are saved for `--mix_previous`, which trains on them again
    with the new votes' without counting a vote twice, keeping the prompts it held out. A store with no rating has no
    ratings model, and a ratings flag is then refused before any work."""
    from lab_utils import votes

    db = votes.init(tmp_path / "votes.db")
    for i in range(12):
        votes.record_vote(db, f"v{i}", f"What is {i} + 1?", str(i + 1), str(i + 2), "sft", "rlhf", "a", 5, 1 + i % 3,
                          a_ended=True, b_ended=True)
    votes.record_vote(db, "tie", "Name a colour. ", " Red.\n", "Blue.", "sft", "rlhf", "tie", 4, 4)  # no pair; read as
    # a pair would be (surrounding whitespace stripped)
    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    m = stages.run_reward("micro", out, progress=False, data=str(db), eval_fraction=0.25, ratings_lr=3e-4)
    held = {json.loads(line)["prompt"] for line in (out / "reward" / "pairs.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == "eval"}
    saved = [json.loads(line) for line in (out / "reward" / reward_data.RATINGS_FILE).read_text().splitlines()]
    assert len(saved) == 26 and len(held) == 3
    assert {r["prompt"] for r in saved if r["split"] == "eval"} == held  # the split is the pairs'
    colour = [r for r in saved if r["vote_id"] == "tie"]
    assert [(r["prompt"], r["response"], r["ended"], r["rating"], r["split"]) for r in colour] == [
        (render_alpaca("Name a colour.", ""), text, True, 4, "train") for text in ("Red.", "Blue.")]
    assert m["n_train_ratings"] == 26 - 2 * 3 and m["ratings_model_pairwise_accuracy"] is not None
    assert R.RewardModel.load(out / "reward-ratings").model.config.problem_type == "regression"
    assert m["config"]["ratings_lr"] == 3e-4

    # round 2: one more rated vote, on a training prompt, and a rating round 1 held out on a prompt with no pair
    train_prompt = next(f"What is {i} + 1?" for i in range(12) if render_alpaca(f"What is {i} + 1?", "") not in held)
    votes.record_vote(db, "new", train_prompt, "right", "wrong", "sft", "rlhf", "a", 5, 1)
    lonely = {"prompt": render_alpaca("Lonely?", ""), "response": "Yes.", "ended": True, "rating": 3, "split": "eval"}
    with (out / "reward" / reward_data.RATINGS_FILE).open("a") as f:
        f.write(json.dumps(lonely) + "\n")
    capsys.readouterr()
    again = stages.run_reward("micro", out, progress=False, data=str(db), mix_previous=True, eval_fraction=0.25)
    printed = capsys.readouterr().out
    assert "27 previous ratings" in printed and "+ 2 from --data" in printed  # round 1's 26 are not counted twice
    saved = [json.loads(line) for line in (out / "reward" / reward_data.RATINGS_FILE).read_text().splitlines()]
    assert len(saved) == 29 and [r["split"] for r in saved if r["prompt"] == lonely["prompt"]] == ["eval"]
    assert again["n_train_ratings"] == m["n_train_ratings"] + 2  # the new vote's two; the lonely one stays held out

    lines = (out / "reward" / reward_data.RATINGS_FILE).read_text().splitlines()
    assert '"rating": 5' in lines[0]
    (out / "reward" / reward_data.RATINGS_FILE).write_text(lines[0].replace('"rating": 5', '"rating": true') + "\n")
    with pytest.raises(LabError, match=r"ratings.jsonl:1: not a rating written by `lab reward`.*without --mix_previous"):
        stages.run_reward("micro", out, progress=False, data=str(db), mix_previous=True, eval_fraction=0.25)
    (out / "reward" / reward_data.RATINGS_FILE).unlink()  # as a reward stage from before the file existed left it
    third = stages.run_reward("micro", out, progress=False, data=str(db), mix_previous=True, eval_fraction=0.25)
    assert "no previous ratings" in (printed := capsys.readouterr().out) and "+ 28 from --data" in printed
    assert third["n_train_ratings"] == 28 - 2 * 3

    unrated = votes.init(tmp_path / "unrated.db")
    for i in range(12):
        votes.record_vote(unrated, f"u{i}", f"What is {i} + 2?", str(i + 2), str(i + 3), "sft", "rlhf", "a")
    with pytest.raises(LabError, match=r"--ratings_lr sets .*given pairs carry no ratings"):  # before any work: no SFT
        stages.run_reward("micro", tmp_path / "no-sft", progress=False, data=str(unrated), ratings_lr=3e-4)
    fresh = tmp_path / "fresh"
    shutil.copytree(sft_root / "sft", fresh / "sft")
    m = stages.run_reward("micro", fresh, progress=False, data=str(unrated), eval_fraction=0.25)
    assert m["ratings_model_pairwise_accuracy"] is None and m["n_train_ratings"] == 0
    assert not (fresh / "reward" / reward_data.RATINGS_FILE).exists() and not (fresh / "reward-ratings").exists()


def test_a_mixed_reward_model_counts_as_trained_on_the_worlds_tasks_too(tmp_path):
    """After `--data votes.db --mix_previous` the reward model knows the world's tasks as well as the votes: PPO on
    them is not warned about, and the harness counts the world's reward prompts as seen in training."""
    import warnings

    from lab_utils import checkpoints as ck
    from lab_utils.config import PPOConfig, WorldConfig, build_world_from
    from lab_utils.harness import training_prompts

    world = build_world_from(WorldConfig.for_profile("micro"))
    seen = {}
    for mixed in (False, True):
        ck.write_json(tmp_path / "reward" / "metrics.json", {"config": {"data": "votes.db", "mix_previous": mixed}})
        seen[mixed] = training_prompts(tmp_path, "micro", world)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stages._warn_if_prompts_differ(PPOConfig.for_profile("micro"), tmp_path / "reward")
        assert [str(w.message) for w in caught if "PPO optimises on" in str(w.message)] == ([] if mixed else [
            "the reward model was trained on the pairs of votes.db, but PPO optimises on the world's tasks: its "
            "scores there are untested (pass --data votes.db to optimise on its prompts)"])
    assert seen[False] < seen[True]  # the reward stage's world prompts are added


def test_pairs_longer_than_max_length_are_dropped_and_counted(sft_root, tmp_path):
    """Brought dialogues can be thousands of tokens: past the model's context, they are dropped before sampling."""
    rows = [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 2)} for i in range(12)]
    rows.append({"prompt": "word " * 2000, "chosen": "yes", "rejected": "no"})
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    with pytest.warns(UserWarning, match=r"1 of 13 preference pairs are longer than 200 tokens .* left out"):
        m = stages.run_reward("micro", out, progress=False, data=str(data), eval_fraction=0.25, max_length=200)
    assert m["n_too_long"] == 1 and m["n_train_pairs"] + m["n_eval_pairs"] == 12
    with pytest.raises(LabError, match=r"longer than 5 tokens \(--max_length 5, the model's context 512\)"):
        stages.run_reward("micro", out, progress=False, data=str(data), max_length=5)
    data.write_text("\n".join(json.dumps(r | {"prompt": "What is 1 + 1?"}) for r in rows[:-1])  # one prompt only,
                    + "\n" + json.dumps(rows[-1]))  # and the long pair
    with pytest.raises(LabError, match=r"12 preference pair\(s\) on 1 prompt\(s\) leave no held-out prompt \(1 more "
                                       r"were too long and left out\).*Fix: bring pairs on at least two prompts: a "
                                       r"prompt's pairs are never split between training and held out, or raise "
                                       r"--max_length") as err:
        stages.run_reward("micro", out, progress=False, data=str(data), max_length=200)
    assert "--eval_fraction" not in str(err.value)  # no fraction divides one prompt's pairs
    data.write_text("\n".join(json.dumps(r | {"prompt": f"What is {i % 2} + 1?"}) for i, r in enumerate(rows[:-1])))
    with pytest.raises(LabError, match=r"12 preference pair\(s\) on 2 prompt\(s\) leave no held-out prompt.*"
                                       r"\(a prompt's pairs are never split\), raise --eval_fraction \(now 0.01\)"):
        stages.run_reward("micro", out, progress=False, data=str(data), max_length=200, eval_fraction=0.01)


def test_pairs_longer_than_the_models_context_are_dropped_whatever_max_length_says(sft_root, tmp_path):
    """Past its context the model would score at positions it never trained on (rotary: nothing fails, it is wrong)."""
    from transformers import AutoTokenizer

    rows = [{"prompt": f"What is {i} + 1?", "chosen": str(i + 1), "rejected": str(i + 2)} for i in range(12)]
    rows.append({"prompt": "word " * 300, "chosen": "yes", "rejected": "no"})
    tok = AutoTokenizer.from_pretrained(sft_root / "sft")
    assert 512 < len(tok(rows[-1]["prompt"])["input_ids"]) < 4000  # micro declares 512 positions
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "run"
    shutil.copytree(sft_root / "sft", out / "sft")
    (out / "reward-ratings").mkdir()  # an earlier sampled run's ratings model
    m = stages.run_reward("micro", out, progress=False, data=str(data), eval_fraction=0.25, max_length=4000)
    assert m["n_too_long"] == 1 and m["n_train_pairs"] + m["n_eval_pairs"] == 12
    assert m["ratings_model_pairwise_accuracy"] is None and not (out / "reward-ratings").exists()


def test_run_reward_without_sft_is_lab_error(tmp_path):
    with pytest.raises(LabError, match="lab sft"):
        stages.run_reward("micro", tmp_path, progress=False)


def test_reward_config_profiles():
    assert RewardConfig.for_profile("full").lora and not RewardConfig.for_profile("tiny").lora


def test_unknown_reference_mode_is_lab_error_before_any_work(tmp_path):
    with pytest.raises(LabError, match="reference_answers"):
        stages.run_reward("micro", tmp_path, progress=False, reference_answers="some")


def test_off_topic_with_given_pairs_is_lab_error_before_any_work(tmp_path):
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps([{"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}]))
    with pytest.raises(LabError, match="off_topic"):
        stages.run_reward("micro", tmp_path, progress=False, data=str(data), off_topic=1)


@pytest.mark.parametrize("flag, value", [("n_samples", 6), ("reference_answers", "train"), ("ratings_lr", 1e-3)])
def test_a_sampling_or_ratings_flag_with_given_pairs_is_lab_error_before_any_work(tmp_path, flag, value):
    """Given pairs are neither sampled from the SFT model nor rated: these flags would change nothing, silently."""
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps([{"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}]))
    with pytest.raises(LabError, match=rf"--{flag} sets .*with given pairs it would be ignored.*Fix: drop --{flag}"):
        stages.run_reward("micro", tmp_path, progress=False, data=str(data), **{flag: value})
    with pytest.raises(LabError, match=rf"--{flag} sets"):
        stages.run_reward("micro", tmp_path, progress=False, pairs=json.loads(data.read_text()), **{flag: value})


def test_given_pairs_with_an_input_are_refused_until_it_is_rendered_into_the_prompt(tmp_path):
    """`run_reward(pairs=...)` takes prompts as they are; an Alpaca-style pair's separate `input` would be dropped."""
    pairs = [{"prompt": "Sum these.", "input": "2 3", "chosen": "5", "rejected": "6"}]
    with pytest.raises(LabError, match=r"pair 1 has an 'input'.*Fix: render it into the prompt first"):
        stages.run_reward("micro", tmp_path, progress=False, pairs=pairs)
