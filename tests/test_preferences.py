"""Preference pairs from every accepted format into {prompt, chosen, rejected}; bad files name file, record, field."""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from pathlib import Path

import pytest

from conftest import real_sample  # belongs beside alpaca_demo in conftest.py once this file is reviewed
from lab_utils.errors import LabError
from lab_utils.pair_records import parse_pair, prompt_of
from lab_utils.preferences import load_pairs, load_prompts, load_ratings
from lab_utils.tokenizer import render_alpaca

PAIR = {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Berlin."}


def write_json(path: Path, records) -> str:
    try:
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    except UnicodeEncodeError:  # half a character can only be written as a JSON escape
        path.write_text(json.dumps(records), encoding="utf-8")
    return str(path)


def write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict:
    return {"role": "system", "content": text}


def sharegpt(conversations: list[dict], chosen: dict | None = None, rejected: dict | None = None) -> dict:
    return {"conversations": conversations, "chosen": chosen or {"from": "gpt", "value": "Paris."},
            "rejected": rejected or {"from": "gpt", "value": "Berlin."}}


def hh(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


# ------------------------------------------------------------------ every format

FORMATS = {  # name: (record, expected pair)
    "explicit strings": (PAIR, PAIR),
    "explicit messages": ({"prompt": [user(PAIR["prompt"])], "chosen": [assistant("Paris.")],
                           "rejected": [assistant("Berlin.")]}, PAIR),
    "explicit messages with system": (
        {"prompt": [{"role": "system", "content": "Be brief."}, user("Capital of France?")],
         "chosen": [assistant("Paris.")], "rejected": [assistant("Berlin.")]},
        {"prompt": "Be brief.\n\nCapital of France?", "chosen": "Paris.", "rejected": "Berlin."}),
    "implicit messages": ({"chosen": [user(PAIR["prompt"]), assistant("Paris.")],
                           "rejected": [user(PAIR["prompt"]), assistant("Berlin.")]}, PAIR),
    "implicit messages, multi-turn": (
        {"chosen": [user("Hi!"), assistant("Hello."), user("2+2?"), assistant("4")],
         "rejected": [user("Hi!"), assistant("Hello."), user("2+2?"), assistant("5")]},
        {"prompt": "Human: Hi!\n\nAssistant: Hello.\n\nHuman: 2+2?", "chosen": "4", "rejected": "5"}),
    "implicit strings": ({"chosen": "The sky is blue.", "rejected": "The sky is green."},
                         {"prompt": "The sky is", "chosen": "blue.", "rejected": "green."}),
    "implicit strings, cut at a word boundary": ({"chosen": "The answer is 4.", "rejected": "The answer is 42."},
                                                 {"prompt": "The answer is", "chosen": "4.", "rejected": "42."}),
    "implicit strings, Chinese": ({"chosen": "法国的首都是哪里？巴黎。", "rejected": "法国的首都是哪里？柏林。"},
                                  {"prompt": "法国的首都是哪里？", "chosen": "巴黎。", "rejected": "柏林。"}),
    "implicit strings, never inside a number": ({"chosen": "Pi is 3.14", "rejected": "Pi is 3.15"},
                                                 {"prompt": "Pi is", "chosen": "3.14", "rejected": "3.15"}),
    "implicit strings, never inside a web address": (
        {"chosen": "See www.a.com", "rejected": "See www.b.com"},
        {"prompt": "See", "chosen": "www.a.com", "rejected": "www.b.com"}),
    "implicit strings, Chinese with no punctuation": ({"chosen": "天空是蓝色的。", "rejected": "天空是绿色的。"},
                                                      {"prompt": "天空是", "chosen": "蓝色的。", "rejected": "绿色的。"}),
    "anthropic hh": ({"chosen": hh(PAIR["prompt"], "Paris."), "rejected": hh(PAIR["prompt"], "Berlin.")}, PAIR),
    "anthropic hh as an explicit prompt": ({"prompt": hh(PAIR["prompt"], ""), "chosen": " Paris.",
                                            "rejected": " Berlin."}, PAIR),
    "anthropic hh as an explicit prompt, multi-turn": (
        {"prompt": hh("Hi!", "Hello.", "2+2?", ""), "chosen": " 4", "rejected": " 5"},
        {"prompt": "Human: Hi!\n\nAssistant: Hello.\n\nHuman: 2+2?", "chosen": "4", "rejected": "5"}),
    "anthropic hh, multi-turn": (
        {"chosen": hh("Hi!", "Hello.", "2+2?", "4"), "rejected": hh("Hi!", "Hello.", "2+2?", "5")},
        {"prompt": "Human: Hi!\n\nAssistant: Hello.\n\nHuman: 2+2?", "chosen": "4", "rejected": "5"}),
    "sharegpt": ({"conversations": [{"from": "human", "value": PAIR["prompt"]}],
                  "chosen": {"from": "gpt", "value": "Paris."}, "rejected": {"from": "gpt", "value": "Berlin."}},
                 PAIR),
    "sharegpt with system": (
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Capital of France?"}],
         "chosen": {"from": "gpt", "value": "Paris."}, "rejected": {"from": "gpt", "value": "Berlin."}},
        {"prompt": "Be brief.\n\nCapital of France?", "chosen": "Paris.", "rejected": "Berlin."}),
    "sharegpt with a top-level system field": (  # LLaMA-Factory's sharegpt layout
        {"conversations": [{"from": "human", "value": "Capital of France?"}], "system": "Be brief.",
         "chosen": {"from": "gpt", "value": "Paris."}, "rejected": {"from": "gpt", "value": "Berlin."}},
        {"prompt": "Be brief.\n\nCapital of France?", "chosen": "Paris.", "rejected": "Berlin."}),
    "sharegpt, multi-turn": (
        {"conversations": [{"from": "human", "value": "Hi!"}, {"from": "gpt", "value": "Hello."},
                           {"from": "human", "value": "2+2?"}],
         "chosen": {"from": "gpt", "value": "4"}, "rejected": {"from": "gpt", "value": "5"}},
        {"prompt": "Human: Hi!\n\nAssistant: Hello.\n\nHuman: 2+2?", "chosen": "4", "rejected": "5"}),
    "arena vote export": ({"vote_id": 7, **PAIR, "model_chosen": "rlhf", "model_rejected": "sft",
                           "created_at": "2025-01-01T00:00:00"}, PAIR),
    "alpaca-style (LLaMA-Factory)": ({"instruction": PAIR["prompt"], "input": "", "chosen": "Paris.",
                                      "rejected": "Berlin."}, PAIR),
    "alpaca-style with system, history and message replies": (
        {"instruction": "2+2?", "system": "Be brief.", "history": [["Hi!", "Hello."]],
         "chosen": {"from": "gpt", "value": "4"}, "rejected": {"role": "assistant", "content": "5"}},
        {"prompt": "Be brief.\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman: 2+2?", "chosen": "4",
         "rejected": "5"}),
}


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_every_format_loads_from_json_and_jsonl(tmp_path, name, suffix):
    record, expected = FORMATS[name]
    write = write_json if suffix == ".json" else write_jsonl
    assert load_pairs(write(tmp_path / f"pairs{suffix}", [record])) == [expected]


def test_one_file_may_mix_formats(tmp_path):
    records = [rec for rec, _ in FORMATS.values()]
    assert load_pairs(write_jsonl(tmp_path / "mixed.jsonl", records)) == [pair for _, pair in FORMATS.values()]


def test_whitespace_is_stripped_and_an_empty_reply_is_allowed():
    got = parse_pair({"prompt": "  Hi?\n", "chosen": " Hello.\n", "rejected": ""})
    assert got == {"prompt": "Hi?", "chosen": "Hello.", "rejected": ""}


def test_limit_keeps_the_first_records(tmp_path):
    spec = write_jsonl(tmp_path / "p.jsonl", [PAIR, PAIR | {"chosen": "Paris!"}, {"bad": "record"}])
    assert [p["chosen"] for p in load_pairs(spec, limit=2)] == ["Paris.", "Paris!"]


def test_identical_pairs_are_skipped_with_a_count(tmp_path):
    spec = write_jsonl(tmp_path / "p.jsonl", [PAIR, PAIR | {"rejected": "Paris."}, PAIR | {"rejected": " Paris. "}])
    with pytest.warns(UserWarning, match="skipped 2 pair"):
        assert load_pairs(spec) == [PAIR]


def test_identical_message_lists_are_a_pair_with_the_users_prompt_skipped_with_the_count(tmp_path):
    """TRL's implicit-prompt layout with the same messages in chosen and rejected: their shared messages before the
    reply are the prompt, the reply the same on both sides, so the pair is skipped as identical with the one warning,
    like any other, not refused as a record without a user turn."""
    same = [user(PAIR["prompt"]), assistant("Paris.")]
    assert parse_pair({"chosen": same, "rejected": same}) == PAIR | {"rejected": "Paris."}
    spec = write_jsonl(tmp_path / "p.jsonl", [{"chosen": same, "rejected": same}, PAIR])
    with pytest.warns(UserWarning, match=r"skipped 1 pair\(s\) whose chosen and rejected are identical"):
        assert load_pairs(spec) == [PAIR]


# ------------------------------------------------------------------ bad input: one LabError naming file, record, field

BAD_RECORDS = [  # (second record of a file whose first is fine, words the message must contain)
    ({"prompt": PAIR["prompt"], "chosen": "Paris."}, ["field 'rejected' is missing"]),
    (PAIR | {"chosen": None}, ["field 'chosen' is null"]),
    (PAIR | {"prompt": 42}, ["field 'prompt' is of type int, not a string"]),
    (PAIR | {"prompt": "   "}, ["field 'prompt' is empty"]),
    (PAIR | {"rejected": ["Berlin."]}, ["field 'rejected[0]' is of type str, not a message"]),
    (PAIR | {"chosen": [user("Paris.")]}, ["field 'chosen' has no assistant message"]),
    (PAIR | {"prompt": [user("Hi"), assistant("Hello")]}, ["field 'prompt' ends with a turn of role 'assistant'"]),
    (PAIR | {"chosen": [{"role": "tool", "content": "x"}]}, ["field 'chosen[0].role' is 'tool'"]),
    (PAIR | {"chosen": [{"role": "assistant", "content": [{"type": "text"}]}]},
     ["field 'chosen[0].content[0]' is a text block without a string 'text'"]),
    ({"instruction": "Hi", "output": "Hello"}, ["unknown record shape", "instruction", "ShareGPT", "Anthropic HH"]),
    (["Paris.", "Berlin."], ["expected an object, got list"]),
    ({"chosen": "Paris.", "rejected": "Berlin."}, ["'chosen' and 'rejected' share no prompt text"]),
    ({"chosen": "Paris.", "rejected": [assistant("Berlin.")]}, ["'chosen' and 'rejected' are of types str and list"]),
    ({"chosen": [assistant("x")], "rejected": [assistant("y")]},
     ["field 'chosen' has no user turn before the final reply"]),
    ({"chosen": hh("Hi") + "\n\nHuman: again", "rejected": hh("Hi", "Yo")},
     ["field 'chosen' is not a transcript ending in an assistant reply"]),
    ({"conversations": [{"from": "human", "value": "Hi"}], "chosen": {"from": "gpt", "value": "Hello"}},
     ["field 'rejected' is missing"]),
    ({"conversations": [{"from": "human", "value": "Hi"}], "chosen": {"from": "gpt", "value": "Hello"},
      "rejected": {"from": "gpt", "text": "Yo"}}, ["field 'rejected.value' is missing or null"]),
    ({"conversations": [], "chosen": {"from": "gpt", "value": "a"}, "rejected": {"from": "gpt", "value": "b"}},
     ["field 'conversations' is empty"]),
    ({"conversations": [{"from": "observation", "value": "Hi"}], "chosen": {"from": "gpt", "value": "a"},
      "rejected": {"from": "gpt", "value": "b"}}, ["field 'conversations[0].from' is 'observation'"]),
]

BAD_RECORDS_REVIEWED = [  # found in review; each message names the field, message or reply at fault
    # a role that is a list or dict: not a role name (it used to end in "TypeError: unhashable type")
    (PAIR | {"prompt": [{"role": ["user"], "content": "hi"}]},
     ["field 'prompt[0].role' is of type list, not a string"]),
    (sharegpt([{"from": {"x": 1}, "value": "Hi"}]), ["field 'conversations[0].from' is of type dict, not a string"]),
    (PAIR | {"chosen": [{"role": None, "content": "Paris."}]}, ["field 'chosen[0].role' is null"]),
    # implicit prompt: after the shared messages each side is one assistant reply, or the pair fits no prompt
    ({"chosen": [user("a"), assistant("x"), user("b"), assistant("y")],
      "rejected": [user("a"), assistant("X"), user("b"), assistant("Y")]},
     ["'chosen' and 'rejected' differ before their last assistant turn", "from message 1", "explicit 'prompt'"]),
    ({"chosen": [user("a"), assistant("x"), user("b"), assistant("y")], "rejected": [user("a"), assistant("X")]},
     ["'chosen' and 'rejected' differ before their last assistant turn"]),
    ({"chosen": [user("A?"), assistant("x")], "rejected": [user("B?"), assistant("y")]},
     ["'chosen' and 'rejected' differ before their last assistant turn", "from message 0"]),
    # every message of a prompt says something
    (PAIR | {"prompt": [system("Be brief."), user("  ")]}, ["message 1 of field 'prompt' (user) is empty"]),
    (sharegpt([{"from": "system", "value": ""}, {"from": "human", "value": "Hi"}]),
     ["message 0 of field 'conversations' (system) is empty"]),
    ({"chosen": [user("Hi"), assistant(" "), user("2+2?"), assistant("4")],
      "rejected": [user("Hi"), assistant(" "), user("2+2?"), assistant("5")]},
     ["message 1 of field 'chosen' (assistant) is empty"]),
    (sharegpt([{"from": "human", "value": "Hi"}]) | {"system": 3}, ["field 'system' is of type int, not a string"]),
    (PAIR | {"prompt": hh("  ", "")}, ["message 0 of field 'prompt' (user) is empty"]),
    (PAIR | {"prompt": hh("Hi?", "Hello.")}, ["field 'prompt' ends with a turn of role 'assistant'"]),
    (PAIR | {"prompt": "\n\nAssistant:"}, ["field 'prompt' holds no user turn"]),  # an HH cue and no question
    # a prompt the lab already rendered (a run's reward/pairs.jsonl): it would get the template twice
    (PAIR | {"prompt": render_alpaca("What is 2+2?")}, ["field 'prompt' is a prompt already rendered with the Alpaca"]),
    (PAIR | {"prompt": render_alpaca("Names?", "Emma met Li Wei.")}, ["already rendered with the Alpaca template"]),
    # Anthropic HH: the rejected transcript's prompt is the chosen one's
    ({"chosen": hh("Hi!", "Hello.", "2+2?", "4"), "rejected": hh("Hi!", "Go away.", "2+2?", "5")},
     ["'chosen' and 'rejected' differ before their final \"Assistant:\" reply"]),
    ({"chosen": hh("2+2?", "4"), "rejected": hh("3+3?", "6")}, ["differ before their final \"Assistant:\" reply"]),
    # a reply is the assistant's
    (sharegpt([{"from": "human", "value": "Hi"}], chosen={"from": "human", "value": "Hello"}),
     ["field 'chosen' is a user message, not the assistant's reply"]),
    (PAIR | {"chosen": [assistant("Paris."), user("Thanks!")]},
     ["field 'chosen' ends with a user message, not the assistant's reply"]),
    ({"chosen": [user("a"), assistant("x"), user("b")], "rejected": [user("a"), assistant("y")]},
     ["field 'chosen' ends with a user message, not the assistant's reply"]),
    # implicit strings: the prompt is shared, one reply is empty
    ({"chosen": "Q? ", "rejected": "Q? answer"}, ["field 'chosen' has an empty reply", "'Q?'"]),
    ({"chosen": "Q? answer", "rejected": "Q?"}, ["field 'rejected' has an empty reply"]),
    # ... also when the shorter side is the prompt up to a sentence end (it used to back off to "Tell me a")
    ({"chosen": "Tell me a joke.", "rejected": "Tell me a joke. Why did the hen cross?"},
     ["field 'chosen' has an empty reply", "'Tell me a joke.'"]),
    # half a character before an HH or implicit split: it used to reach the tokenizer (a bare TypeError)
    ({"chosen": hh("Hi", "ok \ud83d"), "rejected": hh("Hi", "ok")}, ["field 'chosen' holds half of a character"]),
    ({"chosen": "Q? ok", "rejected": "Q? no \ud83d"}, ["field 'rejected' holds half of a character"]),
    # explicit prompt, whole conversations as replies: the turns before the reply are the prompt's
    (PAIR | {"chosen": [user("What is 2+2?"), assistant("4"), user("And times 3?"), assistant("12")],
             "rejected": [user("What is 2+2?"), assistant("7")]},
     ["fields 'chosen' and 'rejected' hold different conversations before their replies"]),
    (PAIR | {"chosen": [user("Any other question?"), assistant("Paris.")],
             "rejected": [user("Any other question?"), assistant("Berlin.")]},
     ["field 'chosen' holds 1 message(s) before its reply that do not end with the question of field 'prompt'"]),
    (PAIR | {"prompt": [system("Answer in French."), user("Hi?")], "chosen": [system("Answer in English."),
             user("Hi?"), assistant("Hello.")], "rejected": [system("Answer in English."), user("Hi?"),
             assistant("Bonjour.")]},
     ["field 'chosen' holds 2 message(s) before its reply that end with the question of field 'prompt' but differ "
      "from the prompt's earlier messages"]),
    (PAIR | {"instruction": "Name a city."}, ["fields 'prompt' and 'instruction' each hold a prompt"]),
    ({"conversations": [user("Hi?")], "prompt": "Hello?", "chosen": assistant("Hi."), "rejected": assistant("No.")},
     ["fields 'conversations' and 'prompt' each hold a prompt", "keep the one that holds the prompt"]),
    # chosen_ended / rejected_ended are JSON booleans
    (PAIR | {"chosen_ended": "yes"}, ["field 'chosen_ended' is of type str, not a boolean"]),
    (PAIR | {"rejected_ended": 1}, ["field 'rejected_ended' is of type int, not a boolean"]),
    (PAIR | {"rejected_ended": 1.0}, ["field 'rejected_ended' is of type float, not a boolean"]),
]


def test_a_null_ended_flag_means_not_known_as_in_an_export_of_old_votes():
    assert parse_pair(PAIR | {"chosen_ended": None, "rejected_ended": False}) == PAIR | {"rejected_ended": False}


def test_implicit_strings_split_inside_a_number_keep_the_number_in_the_replies():
    assert parse_pair({"chosen": "The answer is 4", "rejected": "The answer is 42"}) == \
        {"prompt": "The answer is", "chosen": "4", "rejected": "42"}


def test_a_full_stop_inside_a_number_ends_no_sentence_in_either_reply():
    """"Pi is 3." is no sentence end where one reply goes on "14" and the other " 14": a full stop is a boundary only
    where both texts go on with a space, so the shared prompt stops before the number, whichever side is chosen."""
    assert parse_pair({"chosen": "Pi is 3. 14", "rejected": "Pi is 3.15"}) == \
        {"prompt": "Pi is", "chosen": "3. 14", "rejected": "3.15"}
    assert parse_pair({"chosen": "Pi is 3.15", "rejected": "Pi is 3. 14"}) == \
        {"prompt": "Pi is", "chosen": "3.15", "rejected": "3. 14"}


def test_replies_that_repeat_the_explicit_prompt_give_the_last_reply():
    """UltraFeedback's layout: the prompt as a string, each reply the whole conversation."""
    q = PAIR["prompt"]
    pair = parse_pair({"prompt": [system("Be brief."), user(q)], "chosen": [system("Be brief."), user(q),
                       assistant("Paris.")], "rejected": [system("Be brief."), user(q), assistant("Berlin.")]})
    assert pair == {"prompt": "Be brief.\n\n" + q, "chosen": "Paris.", "rejected": "Berlin."}


def test_replies_may_carry_more_context_than_the_prompt_field():
    """A system message or earlier turns only in the replies: their conversation, ending with the prompt's
    question, is the prompt."""
    q = PAIR["prompt"]
    with_system = parse_pair({"prompt": q, "chosen": [system("Be brief."), user(q), assistant("Paris.")],
                              "rejected": [system("Be brief."), user(q), assistant("Berlin.")]})
    assert with_system == {"prompt": "Be brief.\n\n" + q, "chosen": "Paris.", "rejected": "Berlin."}
    turns = [user("Hi."), assistant("Hello."), user(q)]
    multi = parse_pair({"prompt": q, "chosen": [*turns, assistant("Paris.")], "rejected": "Berlin."})
    assert multi["prompt"] == f"Human: Hi.\n\nAssistant: Hello.\n\nHuman: {q}" and multi["rejected"] == "Berlin."


def test_replies_that_repeat_only_the_prompts_last_turns_keep_the_whole_prompt():
    """The system message or the earlier turns are in the prompt field only: the replies' shorter context must not
    replace it (it did: "Answer in French." was dropped and the pair trained on "Hi?" alone)."""
    pair = parse_pair({"prompt": [system("Answer in French."), user("Hi?")], "chosen": [user("Hi?"),
                       assistant("Bonjour.")], "rejected": [user("Hi?"), assistant("Hello.")]})
    assert pair == {"prompt": "Answer in French.\n\nHi?", "chosen": "Bonjour.", "rejected": "Hello."}
    hh = "\n\nHuman: Hi.\n\nAssistant: Hello.\n\nHuman: And you?\n\nAssistant:"
    pair = parse_pair({"prompt": hh, "chosen": "\n\nHuman: And you?\n\nAssistant: Fine.",
                       "rejected": "\n\nHuman: And you?\n\nAssistant: No."})
    assert pair["prompt"] == "Human: Hi.\n\nAssistant: Hello.\n\nHuman: And you?" and pair["chosen"] == "Fine."


def test_prompt_and_instruction_in_one_record_is_an_error_for_pairs_and_prompts_alike():
    """`parse_pair` read 'prompt' and `prompt_of` 'instruction': PPO and the reward model disagreed on one file."""
    rec = PAIR | {"instruction": "Name a city."}
    for read in (parse_pair, prompt_of):
        with pytest.raises(LabError, match="fields 'prompt' and 'instruction' each hold a prompt"):
            read(rec)


def test_a_longer_reply_that_repeats_the_shorter_one_keeps_the_question_as_the_prompt():
    """The wordy-answer pairs: "Q? A." against "Q? A. More." share everything the shorter one says."""
    q = PAIR["prompt"]
    assert parse_pair({"chosen": f"{q} Paris.", "rejected": f"{q} Paris. It is a lovely city."}) == \
        {"prompt": q, "chosen": "Paris.", "rejected": "Paris. It is a lovely city."}


def test_the_full_profiles_preference_set_layout_loads(tmp_path):
    """HuggingFaceH4/ultrafeedback_binarized (profile `full`), offline: a local file of the same schema."""
    q = "Name a primary colour."
    rec = {"prompt": q, "prompt_id": "abc", "chosen": [user(q), assistant("Red.")],
           "rejected": [user(q), assistant("Green.")], "messages": [user(q), assistant("Red.")],
           "score_chosen": 8.0, "score_rejected": 3.0}
    path = write_jsonl(tmp_path / "train_prefs.jsonl", [rec])
    assert load_pairs(path) == [{"prompt": q, "chosen": "Red.", "rejected": "Green."}]
    assert load_prompts(path) == [(q, "")]


@pytest.mark.parametrize("field, text", [("prompt", "Say <|eos|> twice"), ("chosen", "Paris.<|eos|>"),
                                         ("rejected", "Berlin <|pad|>")])
def test_text_that_spells_a_special_token_names_record_and_field(tmp_path, field, text):
    """The tokenizer would read "<|eos|>" written in a reply as the real end of text: data could end an answer
    midway. Refused when the loader is given the model's special tokens (the reward and PPO stages do)."""
    spec = write_jsonl(tmp_path / "prefs.jsonl", [PAIR, PAIR | {field: text}])
    assert len(load_pairs(spec)) == 2  # without them, any text is text
    token = "<|eos|>" if "eos" in text else "<|pad|>"
    with pytest.raises(LabError, match=rf"line 2: field '{field}' holds '{token}'.*Fix: remove"):
        load_pairs(spec, special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"])
    with pytest.raises(LabError, match=r"line 2: field 'prompt' holds") if field == "prompt" else nullcontext():
        load_prompts(spec, special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"])


def test_ratings_come_from_the_vote_store_only_and_leave_out_a_special_token(tmp_path):
    """Only the arena's store holds 1–5 ratings; a pairs file gives none. A rated answer that spells out a special
    token is left out with a warning, as its pair is."""
    from lab_utils import votes

    db = votes.init(tmp_path / "votes.db")
    votes.record_vote(db, "v1", "What is 2+2?", "4", "5", "sft", "rlhf", "tie", 4, None, a_ended=True)
    assert load_ratings(str(db)) == [{"prompt": "What is 2+2?", "response": "4", "ended": True, "rating": 4,
                                      "vote_id": "v1", "model": "sft"}]
    assert load_ratings(write_jsonl(tmp_path / "prefs.jsonl", [PAIR])) == []
    votes.record_vote(db, "v2", "Say it", "fine <|eos|>", "no", "sft", "rlhf", "a", None, 2)
    assert len(load_ratings(str(db), special_tokens=["<|eos|>"])) == 2  # v2's rated answer B says nothing special
    votes.record_vote(db, "v3", "Say it", "fine <|eos|>", "no", "sft", "rlhf", "b", 3)
    # a stored vote cannot be fixed by hand: such a rating (and its pair) is left out with a warning, as a hub
    # dataset's record is, not an error that would stop `lab reward --data votes.db` for good
    with pytest.warns(UserWarning, match="left out 1 rating"):
        assert [r["vote_id"] for r in load_ratings(str(db), special_tokens=["<|eos|>"])] == ["v1", "v2"]
    votes.record_vote(db, "v4", "What is 3+3?", "6", "7", "sft", "rlhf", "a")
    with pytest.warns(UserWarning, match="left out 2 record"):  # v2's and v3's pairs; v1 is a tie
        assert [p["chosen"] for p in load_pairs(str(db), special_tokens=["<|eos|>"])] == ["6"]
    with pytest.raises(LabError, match="holds '<\\|eos\\|>'"):  # the same text in a file is the user's to fix
        load_pairs(write_jsonl(tmp_path / "p.jsonl", [PAIR | {"chosen": "fine <|eos|>"}]), special_tokens=["<|eos|>"])


def test_a_prompt_that_merely_starts_with_human_is_taken_as_it_is():
    assert parse_pair({"prompt": "Human: the word. Define it.", "chosen": "a", "rejected": "b"})["prompt"] == \
        "Human: the word. Define it."


@pytest.mark.parametrize("bad, words", BAD_RECORDS + BAD_RECORDS_REVIEWED)
def test_bad_json_record_names_file_record_and_field(tmp_path, bad, words):
    spec = write_json(tmp_path / "prefs.json", [PAIR, bad])
    with pytest.raises(LabError) as err:
        load_pairs(spec)
    for word in [spec, "record 2", *words]:
        assert word in str(err.value)
    assert "Fix:" in str(err.value)


@pytest.mark.parametrize("bad, words", BAD_RECORDS[:3])
def test_bad_jsonl_record_names_its_line(tmp_path, bad, words):
    spec = write_jsonl(tmp_path / "prefs.jsonl", [PAIR, bad])
    with pytest.raises(LabError, match="line 2") as err:
        load_pairs(spec)
    assert spec in str(err.value) and words[0] in str(err.value)


BAD_FILES = [  # (file name, content, words the message must contain)
    ("broken.json", '[{"prompt": "Hi", "chosen": "a",', ["malformed JSON"]),
    ("broken.jsonl", json.dumps(PAIR) + '\n{"prompt": "Hi", \n', ["line 2", "malformed JSON"]),
    ("empty.jsonl", "", ["the file is empty"]),
    ("none.json", "[]", ["no records"]),
    ("object.json", json.dumps(PAIR), ["expected a JSON array"]),
    ("identical.jsonl", json.dumps(PAIR | {"rejected": "Paris."}) + "\n", ["identical chosen and rejected"]),
    ("prefs.csv", "prompt,chosen,rejected\n", ["unsupported file type '.csv'"]),
]


@pytest.mark.parametrize("name, content, words", BAD_FILES)
def test_bad_file_is_one_clear_error(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LabError) as err:
        load_pairs(str(path))
    for word in [str(path), *words]:
        assert word in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(LabError, match="file not found"):
        load_pairs(str(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("suffix", [".JSON", ".Jsonl"])
def test_extension_case_does_not_matter(tmp_path, suffix):
    write = write_json if suffix.lower() == ".json" else write_jsonl
    assert load_pairs(write(tmp_path / f"prefs{suffix}", [PAIR])) == [PAIR]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_byte_order_mark_is_accepted(tmp_path, suffix):
    path = Path((write_json if suffix == ".json" else write_jsonl)(tmp_path / f"prefs{suffix}", [PAIR]))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # what some Windows editors save
    assert load_pairs(str(path)) == [PAIR]


def test_non_utf8_file_is_still_one_clear_error(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(json.dumps(PAIR | {"chosen": "Caf\u00e9."}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(LabError, match="not UTF-8"):
        load_pairs(str(path))


@pytest.mark.parametrize("spec", ["allenai/tulu-2.5-preference-data", "Anthropic/hh-rlhf", "owner/name:config"])
def test_hub_id_with_dots_goes_to_the_hub(monkeypatch, spec):
    asked = []
    monkeypatch.setattr("lab_utils.preferences._hub_rows", lambda name, split, local: asked.append(name) or [PAIR])
    assert load_pairs(spec) == [PAIR] and asked == [spec]


@pytest.mark.parametrize("spec", ["nope", "./owner/name", "~/owner/name", "a/b/c", "owner/na me"])
def test_not_a_file_nor_a_hub_id_is_file_not_found(monkeypatch, spec):
    monkeypatch.setattr("lab_utils.preferences._hub_rows", lambda *a: pytest.fail(f"{spec!r} taken for a hub id"))
    with pytest.raises(LabError, match="file not found") as err:
        load_pairs(spec)
    assert spec in str(err.value)


def test_local_folder_that_looks_like_a_hub_id_is_not_one(tmp_path, monkeypatch):
    (tmp_path / "owner" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("lab_utils.preferences._hub_rows", lambda *a: pytest.fail("taken for a hub id"))
    with pytest.raises(LabError, match="owner/name: is a folder, not a file"):
        load_pairs("owner/name")


# ------------------------------------------------------------------ chosen_ended / rejected_ended

def test_ended_flags_pass_through_only_when_given(tmp_path):
    records = [PAIR | {"chosen_ended": True, "rejected_ended": False}, PAIR | {"rejected_ended": False}, PAIR]
    got = load_pairs(write_jsonl(tmp_path / "votes.jsonl", records))
    assert got == records  # the third keeps exactly {prompt, chosen, rejected}: absent means ended


def test_a_split_passes_through_when_given_and_a_bad_one_names_its_line(tmp_path):
    """`lab reward` keeps a record's prompt in the split it names (its error for too few prompts says so)."""
    records = [PAIR | {"split": "eval"}, PAIR | {"split": "train"}, PAIR | {"split": None}, PAIR]
    assert load_pairs(write_jsonl(tmp_path / "p.jsonl", records)) == [PAIR | {"split": "eval"},
                                                                       PAIR | {"split": "train"}, PAIR, PAIR]
    with pytest.raises(LabError, match=r"bad\.jsonl, line 2: field 'split' is 'test'\. Fix: make 'split' \"train\""):
        load_pairs(write_jsonl(tmp_path / "bad.jsonl", [PAIR, PAIR | {"split": "test"}]))


def test_a_hub_datasets_own_split_column_is_not_the_labs_field(monkeypatch):
    monkeypatch.setattr("lab_utils.preferences._hub_rows", lambda name, split, local: [PAIR | {"split": "test"}])
    assert load_pairs("owner/name") == [PAIR]


def test_same_text_that_ended_differently_is_not_identical(tmp_path):
    cut_off = PAIR | {"rejected": PAIR["chosen"], "rejected_ended": False}  # "Paris." + EOS vs "Paris." cut off
    assert load_pairs(write_jsonl(tmp_path / "p.jsonl", [cut_off])) == [cut_off]


def test_ended_flags_are_read_only_beside_an_explicit_prompt(tmp_path):
    same = {"chosen": "The sky is blue.", "rejected": "The sky is blue.", "rejected_ended": False}  # no prompt in it
    with pytest.warns(UserWarning, match="skipped 1 pair"):
        assert load_pairs(write_jsonl(tmp_path / "p.jsonl", [PAIR, same])) == [PAIR]


# ------------------------------------------------------------------ a real public file nobody here wrote

@pytest.fixture(scope="module")
def dpo_demo() -> Path:
    return real_sample("dpo_en_demo.json")


def test_real_sharegpt_dpo_demo_loads(dpo_demo):
    pairs = load_pairs(str(dpo_demo))
    assert len(pairs) == 300
    for p in pairs:
        assert set(p) == {"prompt", "chosen", "rejected"}
        assert all(isinstance(v, str) and v.strip() for v in p.values())
        assert p["chosen"] != p["rejected"]
    # the prompt ends with the last human turn; a multi-turn prompt keeps the earlier turns as a transcript
    for rec, p in zip(json.loads(dpo_demo.read_text(encoding="utf-8")), pairs):
        humans = [t["value"].strip() for t in rec["conversations"] if t["from"] == "human"]
        assert p["prompt"].endswith(humans[-1])
        assert p["prompt"].startswith("Human: ") == (len(humans) > 1)
        assert p["chosen"] == rec["chosen"]["value"].strip()


# ------------------------------------------------------------------ prompts only (lab ppo --data)

@pytest.mark.parametrize("name", FORMATS)
def test_every_pair_format_gives_its_prompt(tmp_path, name):
    record, expected = FORMATS[name]
    assert load_prompts(write_json(tmp_path / "pairs.json", [record])) == [(expected["prompt"], "")]


@pytest.mark.parametrize("record, expected", [
    ({"instruction": " Sort these. ", "input": "pear, leek", "output": "..."}, ("Sort these.", "pear, leek")),
    ({"instruction": "Name a fruit."}, ("Name a fruit.", "")),  # prompts need no output
    ({"instruction": "Name a fruit.", "input": None}, ("Name a fruit.", "")),
    ({"prompt": "What is 2+2?"}, ("What is 2+2?", "")),  # TRL prompt-only
    ({"prompt": [system("Be brief."), user("What is 2+2?")]}, ("Be brief.\n\nWhat is 2+2?", "")),
    ({"prompt": "What is 2+2?", "completion": "4"}, ("What is 2+2?", "")),  # TRL prompt-completion
    ({"instruction": "And in French?", "system": "Translate.", "history": [["Hello in German?", "Hallo"]]},
     ("Translate.\n\nHuman: Hello in German?\n\nAssistant: Hallo\n\nHuman: And in French?", "")),
])
def test_alpaca_and_prompt_only_records_give_their_prompt(tmp_path, record, expected):
    assert load_prompts(write_jsonl(tmp_path / "prompts.jsonl", [record])) == [expected]


def test_prompts_are_distinct_and_in_file_order(tmp_path):
    records = [{"prompt": "b?"}, PAIR, {"prompt": "b?"}, {"instruction": "b?"}, {"instruction": "b?", "input": "x"}]
    assert load_prompts(write_json(tmp_path / "p.json", records)) == [("b?", ""), (PAIR["prompt"], ""), ("b?", "x")]


def test_prompts_of_the_arena_vote_store(tmp_path):
    from lab_utils import votes

    db = votes.init(tmp_path / "votes.db")
    votes.record_vote(db, "v1", "2+2?", "4", "5", "sft", "rlhf", "a")
    votes.record_vote(db, "v2", "3+3?", "6", "7", "sft", "rlhf", "tie")  # not a pair
    assert load_prompts(str(db)) == [("2+2?", "")]


@pytest.mark.parametrize("record, words", [
    ({"text": "no prompt here"}, ["record 2", "no prompt", "'text'"]),
    ({"instruction": ""}, ["record 2", "'instruction' is empty"]),
    ({"instruction": 3}, ["record 2", "'instruction'", "not a string"]),
    ({"instruction": "Sort.", "input": ["a"]}, ["record 2", "'input'", "not a string"]),
    ({"prompt": [assistant("Hi.")]}, ["record 2", "'prompt'", "end the prompt with the user's turn"]),
    ({"prompt": ""}, ["record 2", "'prompt' is empty"]),
    ("just a string", ["record 2", "expected an object"]),
])
def test_a_record_without_a_usable_prompt_names_file_and_record(tmp_path, record, words):
    path = write_json(tmp_path / "p.json", [{"prompt": "fine?"}, record])
    with pytest.raises(LabError) as err:
        load_prompts(path)
    for word in [path, *words]:
        assert word in str(err.value)


def test_an_empty_prompt_file_is_one_clear_error(tmp_path):
    with pytest.raises(LabError, match="no records"):
        load_prompts(write_json(tmp_path / "p.json", []))


def test_real_files_give_their_distinct_prompts(dpo_demo, alpaca_demo):
    prompts = load_prompts(str(dpo_demo))
    assert prompts == list(dict.fromkeys((p["prompt"], "") for p in load_pairs(str(dpo_demo))))
    records = json.loads(alpaca_demo.read_text(encoding="utf-8"))
    expected = list(dict.fromkeys((r["instruction"].strip(), r["input"].strip()) for r in records))
    assert load_prompts(str(alpaca_demo)) == expected and len(expected) > 900


# ------------------------------------------------------------------ prompts under other names

def test_an_alpaca_style_pairs_input_reaches_the_reward_stage_as_ppo_sees_it(tmp_path):
    """LLaMA-Factory's Alpaca-style pair {instruction, input, chosen, rejected}: its prompt is not the text the two
    replies share (that reading gave "The colour is" with the question dropped), and its input is rendered under
    "### Input:" for the reward stage exactly as `lab ppo --data` renders the same record."""
    from types import SimpleNamespace

    from lab_utils.reward_data import rendered_pairs
    from lab_utils.tokenizer import render_alpaca

    spec = write_jsonl(tmp_path / "alpaca_pairs.jsonl", [
        {"instruction": "Name the colour.", "input": "", "chosen": "The colour is blue.",
         "rejected": "The colour is red."},
        {"instruction": " Sum these. ", "input": " 2 3\n", "chosen": "5", "rejected": "6", "rejected_ended": False}])
    assert load_pairs(spec) == [
        {"prompt": "Name the colour.", "chosen": "The colour is blue.", "rejected": "The colour is red."},
        {"prompt": "Sum these.", "input": "2 3", "chosen": "5", "rejected": "6", "rejected_ended": False}]
    prompts = load_prompts(spec)
    assert prompts == [("Name the colour.", ""), ("Sum these.", "2 3")]
    rendered = rendered_pairs(spec, "train", SimpleNamespace(all_special_tokens=[]))
    assert [p["prompt"] for p in rendered] == [render_alpaca(*p) for p in prompts]  # what PPO renders
    assert "### Input:\n2 3" in rendered[1]["prompt"] and all("input" not in p for p in rendered)


@pytest.mark.parametrize("record, field", [
    ({"system": "You are helpful.", "question": "Colour of the sky?", "chosen": "It is blue.",
      "rejected": "It is green."}, "question"),  # Intel/orca_dpo_pairs
    ({"input": "Colour of the sky?", "chosen": "It is blue.", "rejected": "It is green."}, "input"),
    ({"query": "Colour of the sky?", "chosen": [assistant("It is blue.")], "rejected": [assistant("It is green.")]},
     "query"),
])
def test_a_prompt_under_another_name_is_an_error_not_a_guess(tmp_path, record, field):
    """Without 'prompt' or 'instruction' the prompt would be the replies' shared text ("It is"), the real question
    dropped without a word: one error names the field instead."""
    spec = write_jsonl(tmp_path / "p.jsonl", [PAIR, record])
    with pytest.raises(LabError, match=rf"line 2: field '{field}' holds prompt text.*would drop it\. Fix: rename "
                                       rf"'{field}' to 'prompt'"):
        load_pairs(spec)


def test_an_empty_field_of_those_names_is_no_prompt():
    """An empty system message, input or history says nothing the implicit prompt would lose: the record loads."""
    record = {"chosen": "The sky is blue.", "rejected": "The sky is green.", "system": "", "input": " ", "history": []}
    assert parse_pair(record) == {"prompt": "The sky is", "chosen": "blue.", "rejected": "green."}


@pytest.mark.parametrize("extra, field", [({"system": "You are terse."}, "system"), ({"input": "Long text."}, "input"),
                                          ({"history": [["Hi", "Hello."]]}, "history"),
                                          ({"question": "Colour of the sky?"}, "question"),
                                          ({"context": "The sky is blue."}, "context")])
def test_beside_a_prompt_another_prompt_field_is_an_error_not_dropped(tmp_path, extra, field):
    """A record with 'prompt' took its prompt from that field alone: a system message, an input or earlier turns
    beside it were dropped without a word (a review found the Orca layout, with 'question' renamed to 'prompt' as the
    error above advises, losing its system message). The same holds for a prompt-only record PPO reads."""
    spec = write_jsonl(tmp_path / "p.jsonl", [PAIR, PAIR | extra])
    with pytest.raises(LabError, match=rf"line 2: field '{field}' holds prompt text, but a record with 'prompt' reads "
                                       r"its prompt from 'prompt' alone"):
        load_pairs(spec)
    prompts = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "Colour of the sky?"} | extra])
    with pytest.raises(LabError, match=rf"line 1: field '{field}' holds prompt text"):
        load_prompts(prompts)
    vote = PAIR | extra | {"vote_id": "v1"}  # the arena's export: extra keys are the vote's own, never read
    assert parse_pair(vote)["prompt"] == PAIR["prompt"]


def test_hh_transcripts_beside_an_explicit_hh_prompt_give_their_last_replies():
    """HH-derived sets that give the prompt and keep whole transcripts as replies: the reply is the transcript's
    last turn (it used to be the whole transcript, "Human: q\\n\\nAssistant: a"); a transcript of another
    conversation is an error. A reply that merely mentions "Human:" later is text."""
    prompt = "\n\nHuman: What is 2 + 2?\n\nAssistant:"
    rec = {"prompt": prompt, "chosen": prompt + " 4.", "rejected": prompt + " 5."}
    assert parse_pair(rec) == {"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "5."}
    with pytest.raises(LabError, match="different conversations before their replies"):
        parse_pair(rec | {"chosen": "\n\nHuman: What is 3 + 3?\n\nAssistant: 6."})
    text = {"prompt": "Say hi.", "chosen": "Hi.\n\nHuman: and you?", "rejected": "No."}
    assert parse_pair(text)["chosen"] == text["chosen"]
    vote = {"prompt": "Say hi.", "chosen": "Human: hi", "rejected": "No.", "vote_id": "v1"}  # an answer, as typed
    assert parse_pair(vote)["chosen"] == "Human: hi"


@pytest.mark.parametrize("rec, words", [
    (sharegpt([{"from": "human", "value": "Q1"}]) | {"chosen": [{"from": "human", "value": "Q2"},
                                                                  {"from": "gpt", "value": "A"}]},
     "field 'chosen' holds 2 messages, where a ShareGPT pair gives one"),
    (sharegpt([{"from": "human", "value": "Q1"}]) | {"rejected": [{"from": "gpt", "value": "A1"},
                                                                    {"from": "gpt", "value": "A2"}]},
     "field 'rejected' holds 2 messages"),
    (sharegpt([{"from": "human", "value": "Q1"}]) | {"conversations": '[{"from": "human", "value": "Q1"}]'},
     "field 'conversations' is of type str, not a list of messages")])
def test_a_sharegpt_pair_with_replies_of_several_messages_or_a_conversation_as_text_is_an_error(rec, words):
    """Only the last message of a list reply was kept (the turns before it dropped, even when they contradicted
    the conversation), and a conversation saved as its JSON text became the prompt."""
    with pytest.raises(LabError, match=re.escape(words)):
        parse_pair(rec, ("p.json", "record 1"))


def test_a_prompt_only_vote_record_is_read_as_typed():
    """As `parse_pair` reads a vote's prompt: never as an HH transcript."""
    assert prompt_of({"prompt": "\n\nHuman: hi\n\nAssistant:", "vote_id": "v"}) == ("Human: hi\n\nAssistant:", "")


# ------------------------------------------------------------------ messages as other exports write them

def test_roles_are_read_in_any_case():
    """Exports differ in case ("Human", "GPT", "USER"): the same pair as with lower-case roles, not an error."""
    lower = sharegpt([{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Capital of France?"}])
    upper = sharegpt([{"from": "System", "value": "Be brief."}, {"from": "Human", "value": "Capital of France?"}],
                     {"from": "GPT", "value": "Paris."}, {"from": " gpt ", "value": "Berlin."})
    assert parse_pair(upper) == parse_pair(lower) == {"prompt": "Be brief.\n\nCapital of France?",
                                                      "chosen": "Paris.", "rejected": "Berlin."}
    messages = {"prompt": [{"role": "USER", "content": "Hi?"}], "chosen": [{"role": "Assistant", "content": "Hi."}],
                "rejected": [{"role": "assistant", "content": "No."}]}
    assert parse_pair(messages) == {"prompt": "Hi?", "chosen": "Hi.", "rejected": "No."}
    with pytest.raises(LabError, match="field 'prompt\\[0\\].role' is 'robot'"):
        parse_pair(messages | {"prompt": [{"role": "robot", "content": "Hi?"}]})


def test_content_given_as_text_blocks_is_joined():
    """Chat APIs and multimodal chat templates give a message's content as blocks {"type": "text", "text"}: their
    text, joined by newlines, is the message (it used to be "of type list, not a string")."""
    def blocks(*texts: str) -> list[dict]:
        return [{"type": "text", "text": t} for t in texts]

    rec = {"prompt": [{"role": "system", "content": blocks("Be brief.")},
                      {"role": "user", "content": blocks("Capital of France?", "One word.")}],
           "chosen": [{"role": "assistant", "content": blocks("Paris.")}], "rejected": "Berlin."}
    assert parse_pair(rec) == {"prompt": "Be brief.\n\nCapital of France?\nOne word.", "chosen": "Paris.",
                               "rejected": "Berlin."}
    assert prompt_of({"prompt": rec["prompt"]}) == ("Be brief.\n\nCapital of France?\nOne word.", "")
    implicit = {"chosen": [{"role": "user", "content": blocks("Hi?")}, {"role": "assistant", "content": "Hi."}],
                "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": blocks("No.")}]}
    assert parse_pair(implicit) == {"prompt": "Hi?", "chosen": "Hi.", "rejected": "No."}


@pytest.mark.parametrize("content, words", [
    ([{"type": "text", "text": "What is this?"}, {"type": "image", "url": "cat.png"}],
     "field 'prompt[0].content[1]' is a 'image' block"),
    ([{"text": "What is this?"}], "field 'prompt[0].content[0]' is a block without a 'type'"),
    ([{"type": "text", "text": None}], "field 'prompt[0].content[0]' is a text block without a string 'text'"),
    (["What is this?"], "field 'prompt[0].content[0]' is of type str, not a content block"),
])
def test_a_content_block_that_is_not_text_is_an_error(tmp_path, content, words):
    spec = write_jsonl(tmp_path / "p.jsonl", [PAIR, PAIR | {"prompt": [{"role": "user", "content": content}]}])
    with pytest.raises(LabError) as err:
        load_pairs(spec)
    assert all(w in str(err.value) for w in (spec, "line 2", words, "the models read no images"))


def test_dollys_context_is_an_error_not_dropped(tmp_path):
    """databricks-dolly names Alpaca's input 'context': read by no stage, its text was dropped without a word from
    an Alpaca-style pair, a prompt for PPO, and a record without a prompt field (its prompt comes from the replies)."""
    alpaca_pair = {"instruction": "Summarise the text.", "context": "The sky is blue.", "chosen": "Blue sky.",
                   "rejected": "Green."}
    with pytest.raises(LabError, match="field 'context' is not an Alpaca field.*move its text into 'input'"):
        parse_pair(alpaca_pair)
    with pytest.raises(LabError, match="record 1: field 'context' is not an Alpaca field"):
        load_prompts(write_json(tmp_path / "q.json", [{"instruction": "Summarise the text.",
                                                        "context": "The sky is blue."}]))
    implicit = {"context": "The sky is blue.", "chosen": "Blue sky.", "rejected": "Green."}
    with pytest.raises(LabError, match="field 'context' holds prompt text.*rename 'context' to 'input'"):
        parse_pair(implicit)
    assert parse_pair(alpaca_pair | {"context": " ", "input": "The sky is blue."})["input"] == "The sky is blue."


def test_a_hub_datasets_unusable_rows_are_left_out_with_one_warning_and_a_files_stay_an_error(monkeypatch, tmp_path):
    """Anthropic-HH holds a few rows whose two transcripts differ before the final reply; one such row among
    thousands stopped `lab reward`, `lab dpo` and `lab ppo --data <hub id>` with a fix no one can apply to a hub
    dataset. Like `load_alpaca`, a hub dataset's unusable rows are left out with a warning, unless every row is."""
    good = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}
    bad = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Bye?\n\nAssistant: Bye."}
    monkeypatch.setattr("lab_utils.preferences._hub_rows", lambda spec, split, local: [good, bad, good])
    with pytest.warns(UserWarning, match=r"left out 1 of 3 records that are not usable preference pairs \(the "
                                         r"first: row 2: fields 'chosen' and 'rejected' differ"):
        assert len(load_pairs("Anthropic/hh-rlhf")) == 2
    with pytest.warns(UserWarning, match="left out 1 of 3 records that are not usable prompts"):
        assert load_prompts("Anthropic/hh-rlhf") == [("Hi?", "")]
    monkeypatch.setattr("lab_utils.preferences._hub_rows", lambda spec, split, local: [bad, bad])
    for load in (load_pairs, load_prompts):  # no row usable: another layout, said with the first row's error
        with pytest.raises(LabError, match="row 1: fields 'chosen' and 'rejected' differ"):
            load("Anthropic/hh-rlhf")
    for load in (load_pairs, load_prompts):  # a file is the user's to fix: its first bad record is the error
        with pytest.raises(LabError, match="record 2: fields 'chosen' and 'rejected' differ"):
            load(write_json(tmp_path / "hh.json", [good, bad, good]))


@pytest.mark.parametrize("field", ["input", "question", "query", "history", "context"])
def test_prompt_text_beside_a_sharegpt_conversation_is_an_error_not_dropped(field):
    """A ShareGPT pair's prompt is its conversation (and `system`): text in another prompt field was dropped."""
    rec = {"conversations": [{"from": "human", "value": "Summarise the text below."}],
           "chosen": {"from": "gpt", "value": "A cat sat."}, "rejected": {"from": "gpt", "value": "Dogs."},
           field: "The cat sat on the mat all day." if field != "history" else [["Hi", "Hello"]]}
    with pytest.raises(LabError, match=f"field '{field}' holds prompt text, but a ShareGPT pair reads its prompt "
                                       "from 'conversations'"):
        parse_pair(rec)
    assert parse_pair(rec | {field: " " if field != "history" else []})["prompt"] == "Summarise the text below."


@pytest.mark.parametrize("field", ["question", "query"])
def test_a_question_beside_an_alpaca_instruction_is_an_error_not_dropped(tmp_path, field):
    """`question` and `query` beside `instruction` were read by no stage, as Dolly's `context` was."""
    from lab_utils.data import load_alpaca

    pair = {"instruction": "Answer the question.", field: "What is 2+2?", "chosen": "4", "rejected": "5"}
    with pytest.raises(LabError, match=f"field '{field}' is not an Alpaca field.*move its text into 'input'"):
        parse_pair(pair)
    with pytest.raises(LabError, match=f"record 1: field '{field}' is not an Alpaca field"):
        load_prompts(write_json(tmp_path / "q.json", [{"instruction": "Answer the question.", field: "What?"}]))
    with pytest.raises(LabError, match=f"record 1: field '{field}' is not an Alpaca field"):
        load_alpaca(write_json(tmp_path / "sft.json", [{"instruction": "Answer.", field: "What?", "output": "4"}]))


@pytest.mark.parametrize("content, message", [(b"", "the file is empty"),
                                              ('{"prompt": "caf\xe9"}\n'.encode("latin-1"), "not UTF-8 text"),
                                              (None, "file not found")])
def test_the_runs_own_pairs_file_says_what_is_wrong_with_it_as_a_whole(tmp_path, content, message):
    """A missing, empty or non-UTF-8 reward/pairs.jsonl was reported as `path:: not a preference pair written by
    `lab reward``, its cause lost."""
    from lab_utils.reward_data import run_pairs

    path = tmp_path / "pairs.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LabError, match=message) as err:
        run_pairs(path, fix="run `lab reward` again")
    assert "::" not in str(err.value) and str(err.value).endswith("Fix: run `lab reward` again.")
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{oops\n', encoding="utf-8")
    with pytest.raises(LabError, match=r"pairs.jsonl:2: not a preference pair written by `lab reward`"):
        run_pairs(path, fix="run `lab reward` again")
