"""Pretraining: the loss is the textbook next-token cross-entropy, and a resumed run equals a straight one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lab_utils import checkpoints as ck
from lab_utils import pretrain as pretrain_module
from lab_utils.cli import main
from lab_utils.config import PretrainConfig, WorldConfig
from lab_utils.errors import LabError
from lab_utils.modeling import build_model, count_params, load_causal_lm
from lab_utils.pretrain import batch_indices, pack, pretrain


def causal_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Token t predicts token t+1: drop the last logit and the first label. logits (B, T, V), ids (B, T)."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1))


def test_inline_loss_equals_model_loss(tokenizer):
    cfg = PretrainConfig.for_profile("micro")
    model = build_model(cfg, tokenizer, seed=0).eval()
    x = torch.randint(0, len(tokenizer), (3, cfg.seq_len), generator=torch.Generator().manual_seed(0))  # (B, T)
    with torch.no_grad():
        out = model(input_ids=x, labels=x)
    assert out.logits.shape == (3, cfg.seq_len, len(tokenizer))
    assert torch.allclose(causal_lm_loss(out.logits, x), out.loss, atol=1e-6)


def test_tied_embeddings_counted_once(tokenizer):
    model = build_model(PretrainConfig.for_profile("micro"), tokenizer)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert count_params(model) == sum(p.numel() for p in model.parameters())


def test_pack_puts_bos_and_eos_around_every_document(tokenizer):
    docs = ["Paris.", "巴黎。", "1 + 2 = 3."]
    flat = [t for d in docs for t in [tokenizer.bos_token_id] +
            tokenizer(d, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]]
    rows = pack(tokenizer, docs, seq_len=4)  # (N, T)
    assert rows.shape == (len(flat) // 4, 4)
    assert rows.flatten().tolist() == flat[: rows.numel()]


def test_a_corpus_tokenised_in_chunks_packs_as_in_one(tokenizer, monkeypatch):
    """A large corpus is tokenised a chunk of text at a time (profile `full`'s wikitext-103 as one batch took
    gigabytes): every document once, in order, whether a chunk ends inside the corpus or one document outgrows it."""
    docs = [f"Document {i} says {'so ' * (i % 7)}much." for i in range(40)] + ["x" * 300, "y"]
    whole = pack(tokenizer, docs, seq_len=8)
    monkeypatch.setattr(pretrain_module, "_CHUNK_CHARS", 50)  # one or two documents a chunk, the long one alone
    assert torch.equal(pack(tokenizer, docs, seq_len=8), whole)
    assert pretrain_module._doc_ids(tokenizer, docs)[-2].dtype == np.int32  # 4 bytes a token until packed


def test_text_that_spells_a_special_token_is_packed_as_text(tokenizer):
    """A document that writes "<|eos|>" (code, a chat log) is text: one EOS per document, the one pack adds."""
    docs = ["a <|eos|> b <|bos|>", "c"]
    rows = pack(tokenizer, docs, seq_len=1).flatten().tolist()
    assert rows.count(tokenizer.eos_token_id) == 2 and rows.count(tokenizer.bos_token_id) == 2
    assert rows[0] == tokenizer.bos_token_id and rows[-1] == tokenizer.eos_token_id


def test_batches_are_a_pure_function_of_seed_and_step():
    a = [batch_indices(40, 8, step, seed=0).tolist() for step in range(10)]
    assert a == [batch_indices(40, 8, step, seed=0).tolist() for step in range(10)]
    # one epoch (5 steps) visits every row exactly once
    assert sorted(i for batch in a[:5] for i in batch) == list(range(40))
    assert a[:5] != a[5:]  # the next epoch is reshuffled


def test_resume_equals_straight_run(tok_dir, tmp_path):
    cfg, world_cfg = PretrainConfig.for_profile("micro", max_steps=20, save_every=10), WorldConfig.for_profile("micro")
    assert cfg.mixed_precision == "no"
    straight = pretrain(cfg, tok_dir, tmp_path / "a" / "base", world_cfg, progress=False)

    out_b = tmp_path / "b" / "base"
    cut = pretrain(cfg, tok_dir, out_b, world_cfg, stop_at=10, progress=False)
    assert cut["interrupted_at"] == 10 and not out_b.exists()  # an interrupted run leaves no model behind
    assert ck.latest_checkpoint(tmp_path / "b" / "base-checkpoints").name == "step-0000010"
    resumed = pretrain(cfg, tok_dir, out_b, world_cfg, resume=True, progress=False)

    assert resumed["resumed_from"] == 10 and straight["resumed_from"] == 0
    assert resumed["history"] == straight["history"]
    assert resumed["history"]["step"] == list(range(1, 21))
    a, b = load_file(tmp_path / "a" / "base" / "model.safetensors"), load_file(out_b / "model.safetensors")
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_pretraining_continues_from_the_model_given(micro_run, tok_dir, tmp_path):
    """`--model` works on every profile: training starts from the given weights, not from a fresh Llama."""
    world_cfg = WorldConfig.for_profile("micro")
    fresh = pretrain(PretrainConfig.for_profile("micro", max_steps=1), tok_dir, tmp_path / "fresh", world_cfg,
                     progress=False)
    given = pretrain(PretrainConfig.for_profile("micro", max_steps=1, model=str(micro_run / "base")), tok_dir,
                     tmp_path / "given", world_cfg, progress=False)
    trained = ck.read_json(micro_run / "base" / "metrics.json")["val_loss"]
    assert given["initial_loss"] < fresh["initial_loss"] - 0.5
    assert given["initial_loss"] == pytest.approx(trained, abs=0.3)


def test_the_loops_loss_is_the_next_token_loss_of_its_batch(micro_run, tok_dir, tmp_path):
    """What the loop trains on is the textbook loss of step 1's batch: started from a trained model (the first step
    trains at lr 0 and a fresh model scores every label alike), its logged loss equals `causal_lm_loss` on the rows
    of `batch_indices(..., step=0)`. Labels shifted once more (predicting token t + 2) log another (micro's base:
    5.56 against 5.50)."""
    cfg = PretrainConfig.for_profile("micro", max_steps=1, model=str(micro_run / "base"), mixed_precision="no")
    world_cfg = WorldConfig.for_profile("micro")
    logged = pretrain(cfg, tok_dir, tmp_path / "base", world_cfg, progress=False)["history"]["train_loss"][0]
    model, tokenizer = load_causal_lm(cfg.model)
    rows, _ = pretrain_module.training_rows(cfg, tokenizer, world_cfg)
    x = rows[batch_indices(len(rows), cfg.batch_size, 0, cfg.seed)]
    with torch.no_grad():
        want = causal_lm_loss(model.eval()(input_ids=x).logits, x).item()
        shifted = causal_lm_loss(model(input_ids=x).logits, x.roll(-1, 1)).item()
    assert logged == pytest.approx(want, abs=1e-3) and abs(shifted - want) > 0.01  # the check can tell them apart


def test_bench_times_the_architecture_named_by_model(micro_run):
    """`lab bench --profile full` must time the hub model it would train, not the tiny Llama of the defaults."""
    from transformers import AutoConfig

    from lab_utils.bench import pretrain_throughput, train_flops_per_token

    cfg = PretrainConfig.for_profile("micro", model=str(micro_run / "base"), n_layers=7, d_model=128)
    result = pretrain_throughput(cfg, steps=1)
    config = AutoConfig.from_pretrained(micro_run / "base")
    n = count_params(AutoModelForCausalLM.from_config(config))
    assert result["params"] == n
    per_token = train_flops_per_token(n, cfg, config.num_hidden_layers, config.hidden_size)
    assert result["flops_per_s"] == pytest.approx(result["tokens_per_s"] * per_token)


def test_bench_times_the_real_step_and_ppo_on_the_architecture_named_by_model(micro_run, monkeypatch):
    """The timed step is pretraining's (its optimizer and schedule, clipped), and with --model the PPO part times that
    model's architecture too, not the profile's Llama beside the model's pretraining numbers."""
    from transformers import AutoConfig, AutoTokenizer

    from lab_utils import bench, ppo, pretrain
    from lab_utils.config import PPOConfig

    made, policies = [], []
    real_optimizer, real_trainer = pretrain._make_optimizer, ppo.PPOTrainer
    monkeypatch.setattr(pretrain, "_make_optimizer", lambda model, cfg: made.append(cfg) or real_optimizer(model, cfg))
    monkeypatch.setattr(ppo, "PPOTrainer", lambda cfg, policy, *a, **k: policies.append(policy) or
                        real_trainer(cfg, policy, *a, **k))
    cfg = PretrainConfig.for_profile("micro", model=str(micro_run / "base"), n_layers=7, d_model=128)  # not its shape
    bench.pretrain_throughput(cfg, steps=1)
    assert made == [cfg]
    tok = AutoTokenizer.from_pretrained(micro_run / "base")
    r = bench.ppo_throughput(cfg, PPOConfig.for_profile("micro"), tok, iterations=1, profile="micro")
    assert r["ppo_episodes_per_s"] > 0
    want = AutoConfig.from_pretrained(micro_run / "base")
    got = policies[0].config
    assert (got.num_hidden_layers, got.hidden_size, got.intermediate_size) == \
        (want.num_hidden_layers, want.hidden_size, want.intermediate_size)


def test_bench_times_a_bf16_config_in_float32_and_counts_no_flops_for_an_untied_lookup(micro_run, tmp_path,
                                                                                       monkeypatch):
    """A config that declares bfloat16 (most hub models', as saved) made `from_config` build bf16 models: the bench
    timed bf16 weights and a bf16 optimizer, and PPO in bf16, where `lab pretrain` and `lab ppo` load float32. An
    untied input embedding is a table lookup: 6·N counted its parameters as matmul work."""
    from transformers import AutoConfig, AutoTokenizer

    from lab_utils import bench, ppo, pretrain
    from lab_utils.config import PPOConfig

    config = AutoConfig.from_pretrained(micro_run / "base")
    config.dtype, config.tie_word_embeddings = torch.bfloat16, False
    config.save_pretrained(tmp_path / "m")
    trained, policies = [], []
    real_optimizer, real_trainer = pretrain._make_optimizer, ppo.PPOTrainer
    monkeypatch.setattr(pretrain, "_make_optimizer", lambda model, cfg: trained.append(model.dtype) or
                        real_optimizer(model, cfg))
    monkeypatch.setattr(ppo, "PPOTrainer", lambda cfg, *models, **k: policies.append(models) or
                        real_trainer(cfg, *models, **k))
    cfg = PretrainConfig.for_profile("micro", model=str(tmp_path / "m"))
    r = bench.pretrain_throughput(cfg, steps=1)
    assert trained == [torch.float32]
    lookup = config.vocab_size * config.hidden_size
    assert r["params"] == count_params(AutoModelForCausalLM.from_config(config))
    assert r["flops_per_s"] == pytest.approx(r["tokens_per_s"] * bench.train_flops_per_token(
        r["params"] - lookup, cfg, config.num_hidden_layers, config.hidden_size))
    tok = AutoTokenizer.from_pretrained(micro_run / "base")
    bench.ppo_throughput(cfg, PPOConfig.for_profile("micro"), tok, iterations=1, profile="micro")
    policy, ref, value, reward = policies[0][:4]
    assert {m.dtype for m in (policy, ref, value, reward.model)} == {torch.float32}


@pytest.mark.parametrize("precision, peak", [("no", 1e9), ("bf16", 4e9), ("fp16", 2e9)])
def test_bench_divides_by_the_peak_of_the_precision_it_trains_in(precision, peak, monkeypatch):
    """fp16's "matching peak" was fp32's: no fp16 matmul was timed, and on a GPU the fraction would be many times
    too high. The peaks and the step are stand-ins here: what is checked is which peak each precision is read
    against."""
    from lab_utils import bench

    peaks = {torch.float32: 1e9, torch.bfloat16: 4e9, torch.float16: 2e9}
    monkeypatch.setattr(bench, "matmul_flops", lambda dtype=torch.float32, **_: peaks[dtype])
    monkeypatch.setattr(bench, "pretrain_throughput", lambda cfg, steps, vocab: {
        "tokens_per_s": 100.0, "flops_per_s": 5e8, "params": 1, "mixed_precision": cfg.mixed_precision})
    r = bench.run_bench(PretrainConfig.for_profile("micro", mixed_precision=precision), steps=1)
    assert r["fraction_of_matching_peak"] == round(5e8 / peak, 3) and r["fraction_of_fp32_peak"] == 0.5
    assert ("matmul_fp16_gflops" in r) == (precision == "fp16")


def test_bench_times_pretraining_in_float32_where_lab_pretrain_trains_in_float32(monkeypatch):
    """On a CPU without bf16 kernels `lab pretrain` falls back to float32, but `lab bench` timed bf16 autocast there
    (about 32 s a tiny step against 1 s) and read it against the bf16 peak: it measured a step no stage runs."""
    from lab_utils import bench, modeling

    monkeypatch.setattr(modeling, "bf16_is_fast", lambda device_type: False)
    asked = []
    real = bench.fresh_accelerator
    monkeypatch.setattr(bench, "fresh_accelerator", lambda **kw: asked.append(kw["mixed_precision"]) or real(**kw))
    peaks = {torch.float32: 1e9, torch.bfloat16: 4e9}
    monkeypatch.setattr(bench, "matmul_flops", lambda dtype=torch.float32, **_: peaks[dtype])
    with pytest.warns(UserWarning, match="trains in float32"):
        r = bench.run_bench(PretrainConfig.for_profile("micro", mixed_precision="bf16"), steps=1, vocab_size=512)
    assert asked == ["no"] and r["mixed_precision"] == "no"
    assert r["fraction_of_matching_peak"] == r["fraction_of_fp32_peak"]


@pytest.mark.parametrize("profile", ["micro", "tiny"])
def test_no_validation_document_is_also_a_training_document(profile):
    """The world's generators repeat short documents word for word; validation keeps only the unseen ones."""
    from lab_utils.pretrain import generate_corpus, world_corpus

    world_cfg = WorldConfig.for_profile(profile)
    train, val = world_corpus(world_cfg)
    assert val and not set(train) & set(val)
    assert len(train) == world_cfg.n_docs  # the training documents are the ones drawn, all of them
    from lab_utils.config import build_world_from
    drawn = generate_corpus(build_world_from(world_cfg), world_cfg.n_docs + world_cfg.val_docs)
    assert len(val) < world_cfg.val_docs and val == [d for d in drawn[:world_cfg.val_docs] if d not in set(train)]


def test_your_own_text_is_split_by_whole_documents(tokenizer, tmp_path):
    """Validation is the last documents, packed apart: no validation row holds a token of a training document."""
    from lab_utils.pretrain import training_rows

    docs = [f"Training document number {i} says something about apples and pears." for i in range(49)]
    docs.append(" ".join(["The held out document talks about winter rain."] * 8))
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    cfg = PretrainConfig.for_profile("micro", data=str(path))
    train, val = training_rows(cfg, tokenizer, WorldConfig.for_profile("micro"))
    assert torch.equal(val, pack(tokenizer, docs[-1:], cfg.seq_len))  # 2% of 50 documents: the last one
    assert torch.equal(train, pack(tokenizer, docs[:-1], cfg.seq_len))


def test_a_validation_document_that_is_also_a_training_document_is_left_out(tokenizer, tmp_path):
    """A corpus may repeat a document; measured on it, the validation loss would be measured on trained text."""
    from lab_utils.pretrain import training_rows

    docs = [f"Training document number {i} says something about apples and pears." for i in range(48)]
    docs += [" ".join(["The held out document talks about winter rain."] * 8), docs[3]]  # the last repeats one
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    cfg = PretrainConfig.for_profile("micro", data=str(path))
    train, val = training_rows(cfg, tokenizer, WorldConfig.for_profile("micro"))
    assert torch.equal(val, pack(tokenizer, docs[-2:-1], cfg.seq_len))  # the last two, less the repeat
    assert torch.equal(train, pack(tokenizer, docs[:-2], cfg.seq_len))


def test_validation_takes_more_documents_until_they_fill_a_row(tokenizer, tmp_path):
    from lab_utils.pretrain import training_rows

    docs = [f"Line {i} is long enough to matter, with several words in it." for i in range(60)]
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    cfg = PretrainConfig.for_profile("micro", data=str(path))
    train, val = training_rows(cfg, tokenizer, WorldConfig.for_profile("micro"))
    n_tokens = [len(tokenizer(d)["input_ids"]) + 1 for d in docs]
    n_val = next(k for k in range(1, 60) if sum(n_tokens[-k:]) >= cfg.seq_len)
    assert n_val > 1 and len(val) >= 1
    assert torch.equal(val, pack(tokenizer, docs[-n_val:], cfg.seq_len))


def test_a_text_of_repeated_lines_is_one_clear_error_at_once_and_a_repeated_footer_is_validated_once(tokenizer,
                                                                                                        tmp_path):
    """A reviewer's file of 20,000 identical lines: validation grew one document at a time, rebuilding a set of every
    document each time (13 s, quadratic), until training was one document and the error said "only 18 tokens...
    give more text". A footer repeated on every page filled the whole validation set."""
    from lab_utils.pretrain import training_rows

    path = tmp_path / "same.txt"
    path.write_text("the same line of text repeated here\n" * 20_000, encoding="utf-8")
    cfg = PretrainConfig.for_profile("micro", data=str(path))
    with pytest.raises(LabError, match=r"the file's 20000 documents hold 1 distinct ones, \d+ tokens in all.*in "
                                       "distinct documents"):
        training_rows(cfg, tokenizer, WorldConfig.for_profile("micro"))

    docs = [f"Page {i} tells about the apples and pears of the market." for i in range(400)] + ["- footer -"] * 60
    path = tmp_path / "pages.txt"
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    cfg = PretrainConfig.for_profile("micro", data=str(path))
    train, val = training_rows(cfg, tokenizer, WorldConfig.for_profile("micro"))
    # the fewest last documents whose distinct unseen ones fill a row: pages before the footers, and the footer once
    n_tokens = {d: len(tokenizer(d)["input_ids"]) + 1 for d in docs}
    k = next(k for k in range(61, 400) if n_tokens["- footer -"] + sum(n_tokens[d] for d in docs[-k:-60]) >= 64)
    assert torch.equal(val, pack(tokenizer, docs[-k:-60] + ["- footer -"], cfg.seq_len))
    assert torch.equal(train, pack(tokenizer, docs[:-k], cfg.seq_len))


def test_the_logged_learning_rate_is_the_one_each_step_trained_with(tok_dir, tmp_path):
    """The schedule's step 0 is 0 (warmup starts there): step 1 trains at lr 0, and its weights stay as initialised
    (the log said 0.001, the rate of step 2)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    cfg = PretrainConfig.for_profile("micro", max_steps=4, save_every=0)
    m = pretrain(cfg, tok_dir, tmp_path / "base", WorldConfig.for_profile("micro"), progress=False)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    schedule = get_cosine_with_min_lr_schedule_with_warmup(opt, cfg.warmup_steps, cfg.max_steps,
                                                           min_lr_rate=cfg.min_lr_ratio)
    rates = []
    for _ in range(cfg.max_steps):
        rates.append(schedule.get_last_lr()[0])
        opt.step()
        schedule.step()
    assert m["history"]["lr"] == pytest.approx(rates) and rates[0] == 0.0 and rates[1] == cfg.lr / cfg.warmup_steps


def test_a_model_with_fewer_positions_than_seq_len_is_one_clear_error(tokenizer, tmp_path, capsys):
    """GPT-2's positions are learned: a row longer than its table was an IndexError traceback at the first step."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=64, n_layer=1, n_head=2,
                                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    out = tmp_path / "run"
    assert main(["pretrain", "--profile", "micro", "--out", str(out), "--model", str(tmp_path / "gpt2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--seq_len 64 is longer than the model's context (32 positions)" in err and "at most 32" in err
    assert not (out / "base").exists()


def test_validation_loss_weighs_each_row_once():
    """Three rows in batches of two: a short last batch counts by its rows, not as a whole batch."""
    import types

    from lab_utils.pretrain import eval_loss

    class RowValue(torch.nn.Module):  # the "loss" of a batch is the mean of its rows' first tokens
        def forward(self, input_ids, labels):
            return types.SimpleNamespace(loss=input_ids[:, 0].float().mean())

    acc = types.SimpleNamespace(device="cpu", autocast=lambda: torch.autocast("cpu", enabled=False))
    rows = torch.tensor([[0, 0], [0, 0], [3, 3]])
    assert eval_loss(RowValue(), rows, batch_size=2, n_batches=2, accelerator=acc) == pytest.approx(1.0)


def test_resume_with_other_settings_is_one_clear_error(tok_dir, tmp_path):
    """The optimizer and schedule come back from the checkpoint: a new lr (or data, seed, max_steps) would be
    ignored, or recorded in metrics.json without having been used. How often to evaluate may change."""
    from lab_utils.errors import LabError

    cfg, world_cfg = PretrainConfig.for_profile("micro", max_steps=20, save_every=10), WorldConfig.for_profile("micro")
    out = tmp_path / "base"
    pretrain(cfg, tok_dir, out, world_cfg, stop_at=10, progress=False)
    with pytest.raises(LabError, match=r"other settings \(lr 0.002 -> 1e-05\).*without --resume"):
        pretrain(PretrainConfig.for_profile("micro", max_steps=20, save_every=10, lr=1e-5), tok_dir, out, world_cfg,
                 resume=True, progress=False)
    more_evals = PretrainConfig.for_profile("micro", max_steps=20, save_every=10, eval_every=5)
    assert pretrain(more_evals, tok_dir, out, world_cfg, resume=True, progress=False)["resumed_from"] == 10


@pytest.mark.parametrize("damaged", ["optimizer.pt", "model.safetensors"])
def test_a_checkpoint_file_cut_short_is_one_clear_error_naming_the_step(tok_dir, tmp_path, damaged):
    """A full disk or a killed copy can cut a checkpoint's file short: one error naming the step folder and the one
    to resume from instead, not torch's or safetensors' traceback (which `lab run` hit again on every try)."""
    from lab_utils.errors import LabError

    cfg, world_cfg = PretrainConfig.for_profile("micro", max_steps=20, save_every=5), WorldConfig.for_profile("micro")
    out, ckpts = tmp_path / "base", tmp_path / "base-checkpoints"
    pretrain(cfg, tok_dir, out, world_cfg, stop_at=10, progress=False)
    with open(ckpts / "step-0000010" / damaged, "r+b") as f:
        f.truncate(100)
    with pytest.raises(LabError, match=r"step-0000010: a file of this checkpoint cannot be read \(.*\)\. Fix: delete "
                                       r"step-0000010/ and run the command again: it resumes from step-0000005\.$"):
        pretrain(cfg, tok_dir, out, world_cfg, resume=True, progress=False)
    shutil.rmtree(ckpts / "step-0000010")  # as the fix says
    assert pretrain(cfg, tok_dir, out, world_cfg, resume="auto", progress=False)["resumed_from"] == 5


def test_resume_with_another_tokenizer_is_one_clear_error(tok_root, tmp_path):
    """The same settings, but the tokenizer was trained again (other documents, the same vocabulary size): the
    checkpoint's weights belong to other token ids. Resuming used to go on silently and corrupt the model."""
    import shutil

    from lab_utils import stages
    from lab_utils.errors import LabError

    shutil.copytree(tok_root / "tokenizer", tmp_path / "tokenizer")
    cfg, world_cfg = PretrainConfig.for_profile("micro"), WorldConfig.for_profile("micro")
    pretrain(cfg, tmp_path / "tokenizer", tmp_path / "base", world_cfg, stop_at=10, progress=False)
    stages.run_tokenizer("micro", tmp_path, tokenizer_docs=700)
    with pytest.raises(LabError, match=r"other settings \(the tokenizer \(trained again since\)\)"):
        pretrain(cfg, tmp_path / "tokenizer", tmp_path / "base", world_cfg, resume=True, progress=False)
    fresh = pretrain(cfg, tmp_path / "tokenizer", tmp_path / "base", world_cfg, resume="auto", progress=False)
    assert fresh["resumed_from"] == 0


def test_lab_run_does_not_resume_a_checkpoint_that_recorded_no_tokenizer(tok_root, tmp_path):
    """Checkpoints saved before the tokenizer's fingerprint was recorded: `lab run` cannot check them, so it starts
    afresh; an explicit --resume still continues them, as it did."""
    import shutil

    shutil.copytree(tok_root / "tokenizer", tmp_path / "tokenizer")
    cfg, world_cfg = PretrainConfig.for_profile("micro"), WorldConfig.for_profile("micro")
    pretrain(cfg, tmp_path / "tokenizer", tmp_path / "base", world_cfg, stop_at=10, progress=False)
    state_file = ck.latest_checkpoint(tmp_path / "base-checkpoints") / "state.json"
    ck.write_json(state_file, {k: v for k, v in ck.read_json(state_file).items() if k != "tokenizer_sha256"})
    auto = pretrain(cfg, tmp_path / "tokenizer", tmp_path / "base", world_cfg, resume="auto", stop_at=5,
                    progress=False)
    assert auto["history"]["step"] == [1, 2, 3, 4, 5]  # started afresh (resumed, it would hold steps 1-10)
    assert ck.latest_checkpoint(tmp_path / "base-checkpoints") == state_file.parent  # kept: no own save yet
    assert pretrain(cfg, tmp_path / "tokenizer", tmp_path / "base", world_cfg, resume=True,
                    progress=False)["resumed_from"] == 10


def test_lab_run_continues_an_interrupted_pretraining_and_a_fresh_run_keeps_old_checkpoints_until_its_own(tok_root,
                                                                                                         tmp_path):
    """`lab run` (`stages.ensure`) used to start pretraining again and delete the checkpoints of an interrupted run
    (5-10 minutes lost on tiny); it continues it now. A fresh run deletes an earlier run's checkpoints only once it
    has saved one of its own, so an interruption before that loses nothing."""
    import shutil

    from lab_utils import stages

    shutil.copytree(tok_root / "tokenizer", tmp_path / "tokenizer")
    stages.run_tokenizer("micro", tmp_path)  # the same tokenizer again (training is deterministic), with its metrics
    cfg, world_cfg = PretrainConfig.for_profile("micro"), WorldConfig.for_profile("micro")
    ckpts = tmp_path / "base-checkpoints"
    pretrain(cfg, tmp_path / "tokenizer", tmp_path / "base", world_cfg, stop_at=10, progress=False)
    pretrain(cfg, tmp_path / "tokenizer", tmp_path / "base", world_cfg, stop_at=5, progress=False)  # fresh, cut early
    assert ck.latest_checkpoint(ckpts).name == "step-0000010"  # the first run's checkpoint is still there
    stages.ensure("pretrain", "micro", tmp_path)
    assert ck.read_json(tmp_path / "base" / "metrics.json")["resumed_from"] == 10
    marker = ckpts / "step-0000010" / "from-the-first-run"
    marker.write_text("")
    stages.ensure("pretrain", "micro", tmp_path, force=True)  # --force: a fresh run, which clears the old ones
    assert ck.read_json(tmp_path / "base" / "metrics.json")["resumed_from"] == 0
    assert ck.latest_checkpoint(ckpts).name == "step-0000010" and not marker.exists()  # its own step 10


def test_a_pretraining_killed_while_it_probes_the_new_model_is_out_of_the_report(tok_root, tmp_path, monkeypatch):
    """base/ holds the new model before its facts are probed and metrics.json written: killed in between,
    report.json went on listing the old model's numbers until another command rewrote it."""
    import shutil

    from lab_utils import stages

    shutil.copytree(tok_root / "tokenizer", tmp_path / "tokenizer")
    stages.run_tokenizer("micro", tmp_path)
    stages.run_pretrain("micro", tmp_path, progress=False, max_steps=4)
    assert "pretrain" in ck.read_json(tmp_path / "report.json")["stages"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "fact_accuracy", killed)
    with pytest.raises(KeyboardInterrupt):
        stages.run_pretrain("micro", tmp_path, progress=False, max_steps=4)
    assert not (tmp_path / "base" / "metrics.json").exists()
    report = ck.read_json(tmp_path / "report.json")
    assert "pretrain" not in report["stages"] and "tokenizer" in report["stages"]


def test_two_processes_under_torchrun_train_one_tokenizer_and_report_once(tmp_path):
    """`accelerate launch` / torchrun: the main process trains the tokenizer (the other waits), both train their share
    of each batch, and only the main process probes the model and writes metrics and report."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).parent / "torchrun"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "lab_utils.cli", "pretrain", "--profile",
                           "micro", "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("training it first") == 1 and proc.stdout.count("[lab] pretrain:") == 1, proc.stdout
    report = ck.read_json(tmp_path / "report.json")
    assert report["stages"]["pretrain"]["steps"] == PretrainConfig.for_profile("micro").max_steps


def test_save_every_zero_means_no_checkpoints(tmp_path):
    from lab_utils import stages

    out = tmp_path / "run"
    stages.run_pretrain("micro", out, progress=False, save_every=0, max_steps=12)  # micro would save at step 10
    assert (out / "base" / "model.safetensors").is_file() and not list((out / "base-checkpoints").glob("step-*"))


def test_a_diverged_run_is_one_clear_error_and_saves_nothing(tok_root, tmp_path, capsys):
    """--lr 1e6 sends the loss to NaN within a few steps; the run used to finish, save a NaN model as a finished
    stage and let the next stages build on it."""
    import shutil

    from lab_utils.cli import main

    shutil.copytree(tok_root / "tokenizer", tmp_path / "tokenizer")
    assert main(["pretrain", "--profile", "micro", "--out", str(tmp_path), "--lr", "1e6"]) == 2
    err = capsys.readouterr().err
    assert "the run diverged" in err and "lower --lr" in err
    assert not (tmp_path / "base").exists()


def test_a_folder_that_holds_no_model_or_a_torn_weights_file_is_one_clear_error(micro_run, tmp_path):
    import shutil

    from lab_utils.errors import LabError
    from lab_utils.modeling import load_causal_lm

    with pytest.raises(LabError, match=r"not a model folder \(no config.json\)\. Fix: pass a folder written by"):
        load_causal_lm(str(micro_run / "tokenizer"))  # a tokenizer, no model
    shutil.copytree(micro_run / "base", tmp_path / "base")
    weights = tmp_path / "base" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(LabError, match="could not load a model"):
        load_causal_lm(str(tmp_path / "base"))
    with pytest.raises(LabError, match="check the hub id, and that it is in the cache when offline"):
        load_causal_lm("nobody-here/no-such-model")
    for missing in (tmp_path / "runs" / "tiny" / "sft-full", tmp_path / "nothing"):  # a folder not built yet
        with pytest.raises(LabError, match=r"no such model folder .*check the path, or build it first"):
            load_causal_lm(str(missing))


def pickled_copy(model_dir: Path, to: Path) -> Path:
    """`model_dir` with its weights as a pickle (pytorch_model.bin, as older hub models ship them) instead of
    safetensors: the same state dict, written by torch.save."""
    import shutil

    shutil.copytree(model_dir, to)
    torch.save(load_file(to / "model.safetensors"), to / "pytorch_model.bin")
    (to / "model.safetensors").unlink()
    return to


def test_weights_only_in_a_pickle_are_refused_with_one_clear_error(micro_run, tmp_path, capsys):
    """Every model load passes use_safetensors=True: transformers would otherwise unpickle pytorch_model.bin."""
    from lab_utils.cli import main
    from lab_utils.errors import LabError
    from lab_utils.modeling import load_causal_lm, pickled_only

    pickled = pickled_copy(micro_run / "base", tmp_path / "base-bin")
    with pytest.raises(LabError, match=r"base-bin: no safetensors weights \(OSError: .*model\.safetensors.*\)\. "
                                       r"Fix: the lab loads weights only from safetensors files"):
        load_causal_lm(str(pickled))
    data = tmp_path / "ok.json"
    data.write_text('[{"instruction": "Say hi.", "output": "Hi."}]')
    assert main(["sft", "--profile", "micro", "--data", str(data), "--model", str(pickled),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "base-bin: no safetensors weights" in err[0], err
    hub = OSError("org/old-model does not appear to have a file named model.safetensors or "
                  "model.safetensors.index.json and thus cannot be loaded with `safetensors`. Please do not set "
                  "`use_safetensors=True`.")  # transformers' words for a hub repo without safetensors weights
    assert "no safetensors weights" in str(pickled_only("org/old-model", hub))
    nothing = tmp_path / "empty"  # a folder with no weights at all: not this error
    nothing.mkdir()
    assert pickled_only(str(nothing), OSError(f"Error no file named model.safetensors found in {nothing}")) is None


def test_resume_after_the_data_file_changed_is_one_clear_error(tok_root, tmp_path):
    import shutil

    from lab_utils.errors import LabError

    shutil.copytree(tok_root / "tokenizer", tmp_path / "tokenizer")
    data = tmp_path / "notes.txt"
    data.write_text("\n".join(f"Document {i} says the capital of Zorland is Zorburg." for i in range(300)))
    cfg, world_cfg = PretrainConfig.for_profile("micro", data=str(data)), WorldConfig.for_profile("micro")
    pretrain(cfg, tmp_path / "tokenizer", tmp_path / "base", world_cfg, stop_at=10, progress=False)
    data.write_text("\n".join(f"Document {i} says the capital of Zorland is Orburg." for i in range(300)))
    with pytest.raises(LabError, match=r"the contents of --data"):
        pretrain(cfg, tmp_path / "tokenizer", tmp_path / "base", world_cfg, resume=True, progress=False)


def test_resume_after_the_model_folder_changed_is_one_clear_error(micro_run, tok_dir, tmp_path):
    """A checkpoint of a run that started from `--model` DIR continues only from the same DIR: replaced by another
    model (here a fresh one of the same shape and tokenizer) since, --resume is an error and `lab run`'s "auto"
    starts afresh, where both resumed the old checkpoint and recorded the new folder as the one trained from."""
    import shutil

    from lab_utils.errors import LabError

    start = tmp_path / "start"
    shutil.copytree(micro_run / "base", start)
    cfg, world_cfg = PretrainConfig.for_profile("micro", model=str(start)), WorldConfig.for_profile("micro")
    pretrain(cfg, tok_dir, tmp_path / "base", world_cfg, stop_at=10, progress=False)
    other = pretrain(PretrainConfig.for_profile("micro", max_steps=1), tok_dir, tmp_path / "other", world_cfg,
                     progress=False)
    assert other["steps"] == 1
    shutil.rmtree(start)
    shutil.copytree(tmp_path / "other", start)
    with pytest.raises(LabError, match=r"other settings \(the --model folder .*start \(changed since\)\)"):
        pretrain(cfg, tok_dir, tmp_path / "base", world_cfg, resume=True, progress=False)
    auto = pretrain(cfg, tok_dir, tmp_path / "base", world_cfg, resume="auto", stop_at=5, progress=False)
    assert auto["history"]["step"] == [1, 2, 3, 4, 5]  # started afresh (resumed, it would hold steps 1-10)
    with pytest.raises(LabError, match="other settings") as err:  # --model not given again: that is the change
        pretrain(PretrainConfig.for_profile("micro"), tok_dir, tmp_path / "base", world_cfg, resume=True,
                 progress=False)
    assert f"model '{start}' -> ''" in str(err.value) and "changed since" not in str(err.value)
