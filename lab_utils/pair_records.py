"""One record of a preference file, in any shape people bring, turned into one internal form.

A pair is a plain dict `{"prompt": str, "chosen": str, "rejected": str}`:
- `prompt` is the plain text of the user's turn, NOT rendered with the Alpaca template: the caller
  renders it, exactly as it renders an SFT instruction. A system message comes first, as its own
  paragraph. A multi-turn conversation keeps its context as one transcript
  "Human: …\\n\\nAssistant: …\\n\\nHuman: …" (the Anthropic HH layout), ending with the user's last turn.
- `chosen` / `rejected` are the final assistant replies; either may be empty (a reply that says nothing
  is a fair thing to reject). Surrounding whitespace is stripped everywhere.
- `chosen_ended` / `rejected_ended` (booleans) only when a record with a `prompt` has them (null counts as not
  given): False means that answer was cut off before EOS. Readers treat a missing flag as True
  (`p.get("chosen_ended", True)`).
- `split` ("train" or "eval") only when a record of a local file has one, in any shape: `lab reward` keeps that
  record's prompt in its training or its held-out pairs, and splits the other prompts itself.
- `input` only when an Alpaca-style pair has a non-empty one: the caller renders it under the template's
  "### Input:", as it renders an SFT record's input (`reward_data.rendered_pairs`).

Record shapes, detected per record (one file may mix them):

- TRL, explicit prompt: `prompt`, `chosen`, `rejected` as strings, or as message lists
  `[{"role", "content"}]` (a reply given as a list counts its last message, which must be the assistant's; a
  message's content may be a string or a list of text blocks `{"type": "text", "text"}`, joined by newlines; roles
  are read in any case, "User" as "user");
  optional booleans `chosen_ended` / `rejected_ended` are kept (only with a `prompt`; other shapes ignore them);
- TRL, implicit prompt: only `chosen` and `rejected`, as message lists whose shared leading messages
  are the prompt (after them each list holds exactly one assistant message), or as strings whose shared
  leading text (cut at a word or sentence boundary) is;
- Anthropic HH: `chosen`, `rejected` transcripts "\\n\\nHuman: …\\n\\nAssistant: …"; the prompt is the
  transcript up to its final "Assistant:", and must be the same in both;
- ShareGPT (LLaMA-Factory): `conversations` `[{"from": "human" | "gpt" | "system", "value"}]` with
  `chosen` and `rejected` single messages `{"from": "gpt", "value"}`;
- Alpaca-style (LLaMA-Factory): `instruction`, optional `input`, `system` and `history` (as in `data.load_alpaca`),
  and `chosen` / `rejected` replies (strings or single assistant messages); optional `chosen_ended` /
  `rejected_ended` as with a `prompt`;
- the arena vote export: `prompt`, `chosen`, `rejected` strings, with `chosen_ended` / `rejected_ended`
  (null where not known); extra keys (`vote_id`, `model_chosen`, …) are ignored, but a `vote_id` marks the
  prompt as typed in the arena and shown to both models as it is: it is never read as an HH transcript. The
  arena's database itself (`votes.db`, `.sqlite`) is read the same way, through `votes.pairs`: its A-better and
  B-better votes, without ties and both-bad votes. Its 1–5 ratings, of every vote's answers, come from
  `preferences.load_ratings`; no other source carries ratings.

A record with neither `prompt` nor `instruction` but another field that holds a prompt in other datasets' layouts
(`PROMPT_LIKE`: `question`, `query`, `input`, `system`, `history`, Dolly's `context`) is an error rather than a pair
whose prompt is guessed from the replies with that field dropped; so is such a field beside a `prompt` (outside the
arena's export), which the prompt would drop. A reply given as a string that opens with "Human:" beside a `prompt` is
an HH transcript: its last turn is the reply, and the turns before it must be the prompt's conversation. A record that
holds a prompt in two of `conversations`, `prompt` and `instruction` is an error too: one would be dropped.

Every message of a prompt must say something. Anything else wrong ends in one `LabError` naming the file,
the record and the field. `preferences` reads the files, vote stores and hub datasets these records come from.
"""

from __future__ import annotations

import re
from typing import NoReturn

from .data import alpaca_context, encodable, render_prompt
from .errors import LabError

SHAPES = ("TRL prompt/chosen/rejected (strings or message lists), TRL chosen/rejected with an implicit "
          "prompt, Anthropic HH transcripts, ShareGPT conversations + chosen/rejected, Alpaca-style "
          "instruction/input + chosen/rejected, or the arena vote export")
PROMPT_LIKE = {  # prompt fields of other datasets' pair layouts, and how to give them to the lab
    "question": "rename 'question' to 'prompt'", "query": "rename 'query' to 'prompt'",
    "input": "rename 'input' to 'prompt', or give the task as 'instruction' and keep 'input' (Alpaca style)",
    "system": "give 'prompt' as a message list that starts with the system message",
    "history": "give 'instruction' with 'history' (Alpaca style), or the conversation as a 'prompt' message list",
    "context": "rename 'context' to 'input' and give the task as 'instruction' (Alpaca style), or join both into "
               "'prompt'"}
WITH_PROMPT = {  # how to give those fields' text when the record has a 'prompt' too
    "question": "join 'question' into 'prompt', or remove it", "query": "join 'query' into 'prompt', or remove it",
    "input": "join 'input' into 'prompt', or give the task as 'instruction' with 'input' (Alpaca style)",
    "system": "give 'prompt' as a message list that starts with the system message",
    "history": "give the conversation as a 'prompt' message list, or 'instruction' with 'history' (Alpaca style)",
    "context": "join 'context' into 'prompt', or give the task as 'instruction' with 'input' (Alpaca style)"}
ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}
_CJK_PUNCT = set("。，；：！？、")  # Chinese puts no space after these: a shared prefix may end at any of them
_PUNCT = set(".,;:!?")  # ... but at these only before a space ("3.14" / "3.15" share "3.1", not a sentence)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_HH = re.compile(r"\n\n(Human|Assistant):")
_HH_OPENING = re.compile(r"\s*Human:")

Where = tuple[str | None, str | None]  # (file, "record 3" / "line 4" / "row 2") for error messages


def _fail(at: Where, message: str, fix: str) -> NoReturn:
    raise LabError(message, path=at[0], where=at[1], fix=fix)


# ------------------------------------------------------------------ one record -> one pair

def parse_pair(rec, at: Where = (None, None)) -> dict:
    """One record of any accepted shape (see the module docstring) as {prompt, chosen, rejected}."""
    if not isinstance(rec, dict):
        _fail(at, f"expected an object, got {type(rec).__name__}", f"make each record one of: {SHAPES}")
    _one_prompt_field(rec, at)
    if "conversations" in rec:
        return _sharegpt(rec, at)
    if "chosen" not in rec and "rejected" not in rec:
        _fail(at, f"unknown record shape (keys: {sorted(rec)})", f"use one of: {SHAPES}")
    chosen, rejected = _present(rec, "chosen", at), _present(rec, "rejected", at)
    if "prompt" in rec:
        # the arena's own votes hold the prompt as it was typed and shown to the models: never a transcript to parse
        vote = "vote_id" in rec
        if not vote:
            _no_unread_context(rec, at)
        prompt = _literal(rec["prompt"], at) if vote else _prompt(rec["prompt"], "prompt", at)
        (c, c_before), (r, r_before) = (_reply(chosen, "chosen", at, transcript=not vote),
                                        _reply(rejected, "rejected", at, transcript=not vote))
        return {"prompt": _with_context(prompt, rec["prompt"], c_before, r_before, at), "chosen": c,
                "rejected": r} | _ended(rec, at)
    if "instruction" in rec:
        return _alpaca_pair(rec, chosen, rejected, at)
    for field in PROMPT_LIKE:
        value = rec.get(field)
        if value and (not isinstance(value, str) or value.strip()):  # the implicit shapes below would drop it
            _fail(at, f"field '{field}' holds prompt text, but a record without 'prompt' or 'instruction' takes its "
                      "prompt from the text 'chosen' and 'rejected' share, and would drop it", PROMPT_LIKE[field])
    if isinstance(chosen, str) and isinstance(rejected, str):
        for field, text in (("chosen", chosen), ("rejected", rejected)):
            encodable(text, at[0], at[1], field)  # before any split: the tokenizer fails on half a character
        return _hh(chosen, rejected, at) if _HH.search(chosen) else _shared_text(chosen, rejected, at)
    if isinstance(chosen, list) and isinstance(rejected, list):
        return _shared_messages(chosen, rejected, at)
    _fail(at, f"fields 'chosen' and 'rejected' are of types {type(chosen).__name__} and {type(rejected).__name__}",
          "without a 'prompt', give both as strings or both as message lists")


PROMPT_FIELDS = ("conversations", "prompt", "instruction")  # each is a whole prompt in one of the accepted shapes


def _one_prompt_field(rec: dict, at: Where) -> None:
    """A record that holds its prompt in two of the shapes' prompt fields: one would be read and the other dropped
    (and which one, a matter of the reader), so it is an error, not a guess."""
    given = [f for f in PROMPT_FIELDS if rec.get(f) not in (None, "", [])]
    if len(given) > 1:
        _fail(at, f"fields {' and '.join(repr(f) for f in given)} each hold a prompt, and only one can be read",
              "keep the one that holds the prompt, or join the others' text into it")


def _no_unread_context(rec: dict, at: Where) -> None:
    """A record with a `prompt` takes its prompt from that field alone: another field that holds prompt text in
    other layouts (a system message, an Alpaca input, earlier turns) would be dropped without a word."""
    for field in PROMPT_LIKE:
        value = rec.get(field)
        if value and (not isinstance(value, str) or value.strip()):
            _fail(at, f"field '{field}' holds prompt text, but a record with 'prompt' reads its prompt from 'prompt' "
                      "alone and would drop it", WITH_PROMPT[field])


def _literal(value, at: Where) -> str:
    """A vote's prompt: the text the arena rendered for both models, taken as it is."""
    text = _text(value, "prompt", at)
    if not text:
        _fail(at, "field 'prompt' is empty", "give 'prompt' the user's question")
    return text


def _alpaca_pair(rec: dict, chosen, rejected, at: Where) -> dict:
    """LLaMA-Factory's Alpaca-style pair: `instruction`, an optional `input`, `system` and `history`, and the two
    replies. The prompt is rendered as `preferences.load_prompts` and SFT render that record: the instruction with its context
    (`data.alpaca_context`), and the input, when there is one, under the template's "### Input:"."""
    instruction = _text(rec["instruction"], "instruction", at)
    if not instruction:
        _fail(at, "field 'instruction' is empty", "give 'instruction' the task")
    text = _text(rec["input"], "input", at) if rec.get("input") is not None else ""
    (c, c_before), (r, r_before) = _reply(chosen, "chosen", at), _reply(rejected, "rejected", at)
    if c_before or r_before:
        _fail(at, "an Alpaca-style pair's 'chosen' or 'rejected' holds messages before its reply",
              "give 'chosen' and 'rejected' the assistant's reply alone; earlier turns go in 'history'")
    return ({"prompt": alpaca_context(rec, instruction, at[0], at[1]), "chosen": c, "rejected": r}
            | ({"input": text} if text else {}) | _ended(rec, at))


def _ended(rec: dict, at: Where) -> dict:
    """The optional `chosen_ended` / `rejected_ended` flags, as given (absent or null, as in a vote export of votes
    stored before they were recorded: the caller takes True). Read only beside an explicit prompt: two identical
    implicit-prompt strings have no prompt to keep them apart by."""
    flags = {field: rec[field] for field in ("chosen_ended", "rejected_ended") if rec.get(field) is not None}
    for field, value in flags.items():
        if not isinstance(value, bool):
            _fail(at, f"field '{field}' is of type {type(value).__name__}, not a boolean",
                  f"make '{field}' true (the answer ended with EOS) or false (it was cut off), or leave it out")
    return flags


def _present(rec: dict, field: str, at: Where):
    if rec.get(field) is None:
        _fail(at, f"field '{field}' is {'null' if field in rec else 'missing'}", f"give '{field}' a response")
    return rec[field]


def _text(value, field: str, at: Where) -> str:
    if value is None:
        _fail(at, f"field '{field}' is missing or null", f"give '{field}' a string")
    if not isinstance(value, str):
        _fail(at, f"field '{field}' is of type {type(value).__name__}, not a string", f"make '{field}' a string")
    return encodable(value, at[0], at[1], field).strip()


def _turn(msg, field: str, at: Where) -> tuple[str, str]:
    """(role, text) of a message {"role", "content"} or {"from", "value"}; role is user/assistant/system."""
    if not isinstance(msg, dict):
        _fail(at, f"field '{field}' is of type {type(msg).__name__}, not a message",
              'make it {"role": ..., "content": ...} or {"from": ..., "value": ...}')
    key, text_key = ("role", "content") if "role" in msg else ("from", "value")
    value = msg.get(key)
    # "Human", "USER": exports differ in case. A list or dict role is not a name to look up
    role = ROLES.get(value.strip().lower()) if isinstance(value, str) else None
    if role is None:
        said = (repr(value) if isinstance(value, str) else "missing" if key not in msg else
                "null" if value is None else f"of type {type(value).__name__}, not a string")
        _fail(at, f"field '{field}.{key}' is {said}", f"give each message a role, one of {sorted(ROLES)}")
    content, where = msg.get(text_key), f"{field}.{text_key}"
    if isinstance(content, list):  # content blocks [{"type": "text", "text": ...}], as chat APIs and templates use
        content = _blocks_text(content, where, at)
    return role, _text(content, where, at)


def _blocks_text(blocks: list, field: str, at: Where) -> str:
    """The text of a message's content blocks, joined by newlines; a block of another type (an image) is an error:
    the lab's models read text only."""
    texts = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            said = f"of type {type(block).__name__}, not a content block"
        elif block.get("type") != "text":
            said = f"a {block['type']!r} block" if "type" in block else "a block without a 'type'"
        elif not isinstance(block.get("text"), str):
            said = "a text block without a string 'text'"
        else:
            texts.append(block["text"])
            continue
        _fail(at, f"field '{field}[{i}]' is {said}",
              'give text only: a string, or blocks {"type": "text", "text": ...} (the models read no images)')
    return "\n".join(texts)


def _turns(messages, field: str, at: Where) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        _fail(at, f"field '{field}' is {'empty' if messages == [] else 'not a list of messages'}",
              "give it a list of messages")
    return [_turn(m, f"{field}[{i}]", at) for i, m in enumerate(messages)]


def _filled(turns: list[tuple[str, str]], field: str, at: Where) -> None:
    """Every prompt message says something: an empty one would vanish from the rendered prompt unnoticed."""
    for i, (role, text) in enumerate(turns):
        if not text:
            _fail(at, f"message {i} of field '{field}' ({role}) is empty",
                  "give every message of the prompt some text, or remove the empty one")


def _prompt(value, field: str, at: Where, first: list[tuple[str, str]] = ()) -> str:
    """A prompt given as a string, a message list, or an HH transcript ending in "\n\nAssistant:" (the layout of
    HH-derived sets with an explicit prompt); `first` goes before it (ShareGPT's top-level system message)."""
    if isinstance(value, list):
        turns = _turns(value, field, at)
        _filled(turns, field, at)
    elif isinstance(value, str) and _is_hh_prompt(value):
        turns = _hh_prompt_turns(value, field, at)
    else:
        turns = [("user", _text(value, field, at))]
    if not turns:  # "\n\nAssistant:" alone: an HH transcript's cue with no question before it
        _fail(at, f"field '{field}' holds no user turn", "give the user's question before \"Assistant:\"")
    turns = [*first, *turns]
    if turns[-1][0] != "user":
        _fail(at, f"field '{field}' ends with a turn of role '{turns[-1][0]}'", "end the prompt with the user's turn")
    text = render_prompt(turns)
    if not text:
        _fail(at, f"field '{field}' is empty", f"give '{field}' the user's question")
    if _RENDERED.match(text):
        _fail(at, f"field '{field}' is a prompt already rendered with the Alpaca template (as in a run's "
                  "reward/pairs.jsonl), which the lab would wrap in the template a second time",
              "give the plain question; for a run's own pairs use `lab dpo` without --data or "
              "`lab reward --mix_previous`")
    return text


# a prompt the chat template already wrapped: its preamble, then the template's last line at its end
_RENDERED = re.compile(r"\s*Below is an instruction that describes a task\b.*### Response:\s*$", re.S)


def _reply(value, field: str, at: Where, transcript: bool = False) -> tuple[str, list[tuple[str, str]] | None]:
    """(reply, the turns before it) of a response given as a string, one assistant message, or a message list
    ending in the assistant's (the turns before it: None unless a list gives some). `transcript`: a string that
    opens with "Human:" is a whole HH transcript ending in the reply (HH-derived sets that also give the prompt),
    whose earlier turns count as a list's would."""
    if transcript and isinstance(value, str) and _HH_OPENING.match(value):
        turns = _hh_turns(value, field, at)
        return turns[-1][1], turns[:-1]
    if isinstance(value, dict):
        role, text = _turn(value, field, at)
        if role != "assistant":
            _fail(at, f"field '{field}' is a {role} message, not the assistant's reply",
                  f"give '{field}' the assistant's message (role 'assistant', or from 'gpt')")
        return text, None
    if isinstance(value, list):
        turns = _turns(value, field, at)
        return _last_reply(turns, field, at), (turns[:-1] or None)
    return _text(value, field, at), None


def _with_context(prompt: str, raw_prompt, c_before, r_before, at: Where) -> str:
    """An explicit prompt, and replies that repeat the conversation before them (UltraFeedback's layout): the
    conversation must be the same in both and agree with the prompt's. When it holds more (a system message or
    earlier turns the prompt field leaves out) and ends with the prompt's turns, it is the prompt; when it repeats
    only the prompt's last turns, the prompt stays whole. A reply to some other turn, or a conversation that
    contradicts the prompt's, has no place: which of the two to train on is not for the loader to guess."""
    before = [b for b in (c_before, r_before) if b is not None]
    if not before:
        return prompt
    if len(before) == 2 and c_before != r_before:
        _fail(at, "fields 'chosen' and 'rejected' hold different conversations before their replies",
              "give both the same conversation before the reply, or give each the assistant's reply alone")
    if isinstance(raw_prompt, list):
        asked = _turns(raw_prompt, "prompt", at)
    elif _is_hh_prompt(raw_prompt):
        asked = _hh_prompt_turns(raw_prompt, "prompt", at)
    else:
        asked = [("user", _text(raw_prompt, "prompt", at))]
    said = list(before[0])
    if not said:
        return prompt
    if said[-len(asked):] == asked:  # the same conversation, or more of it before the prompt's turns
        return render_prompt(said)
    if asked[-len(said):] == said:  # only the prompt's last turns repeated
        return prompt
    field = "chosen" if c_before is not None else "rejected"
    why = ("do not end with the question of field 'prompt'" if said[-1] != asked[-1] else
           "end with the question of field 'prompt' but differ from the prompt's earlier messages")
    _fail(at, f"field '{field}' holds {len(said)} message(s) before its reply that {why}",
          f"give '{field}' the assistant's reply alone, or the prompt's messages followed by the reply")


def _last_reply(turns: list[tuple[str, str]], field: str, at: Where) -> str:
    """The text of the last message, which must be the assistant's: never an earlier reply to another turn."""
    if all(role != "assistant" for role, _ in turns):
        _fail(at, f"field '{field}' has no assistant message", "end it with the assistant's reply")
    if turns[-1][0] != "assistant":
        _fail(at, f"field '{field}' ends with a {turns[-1][0]} message, not the assistant's reply",
              "end it with the assistant's reply")
    return turns[-1][1]


# ------------------------------------------------------------------ the shapes with no plain prompt field

def _sharegpt(rec: dict, at: Where) -> dict:
    """ShareGPT pairs (LLaMA-Factory's layout): `conversations`, an optional top-level `system` message, and one
    assistant message each in `chosen` and `rejected`."""
    system = rec.get("system")
    if system is not None and not isinstance(system, str):
        _fail(at, f"field 'system' is of type {type(system).__name__}, not a string",
              "make 'system' a string, or leave it out")
    first = [("system", _text(system, "system", at))] if system and system.strip() else []
    for field in [f for f in PROMPT_LIKE if f != "system"]:  # a ShareGPT prompt is its conversation (and system) alone
        value = rec.get(field)
        if value and (not isinstance(value, str) or value.strip()):
            _fail(at, f"field '{field}' holds prompt text, but a ShareGPT pair reads its prompt from 'conversations' "
                      "(and 'system') alone and would drop it",
                  "put its text into the conversation's messages, or remove it")
    if not isinstance(rec["conversations"], list):  # e.g. a list saved as its JSON text by a CSV round trip
        _fail(at, f"field 'conversations' is of type {type(rec['conversations']).__name__}, not a list of messages",
              'give it as a list of {"from", "value"} messages (parse a list that was saved as text)')
    replies = {}
    for field in ("chosen", "rejected"):
        replies[field], before = _reply(_present(rec, field, at), field, at)
        if before is not None:  # earlier turns here would be dropped, or contradict the conversation
            _fail(at, f"field '{field}' holds {len(before) + 1} messages, where a ShareGPT pair gives one",
                  f"give '{field}' the assistant's reply alone, as one message " '{"from": "gpt", "value": …}')
    return {"prompt": _prompt(rec["conversations"], "conversations", at, first), **replies}


def _split_hh(transcript: str) -> tuple[str, list[tuple[str, str]]]:
    """("text before the first turn", [(role, text), ...]) of "\\n\\nHuman: a\\n\\nAssistant: b"."""
    parts = _HH.split("\n\n" + transcript.lstrip("\n"))  # ["", "Human", "a", "Assistant", "b", ...]
    return parts[0], [(ROLES[role.lower()], text.strip()) for role, text in zip(parts[1::2], parts[2::2])]


def _hh_turns(transcript: str, field: str, at: Where) -> list[tuple[str, str]]:
    """Split "\\n\\nHuman: a\\n\\nAssistant: b" into [("user", "a"), ("assistant", "b")]."""
    lead, turns = _split_hh(transcript)
    if lead.strip() or len(turns) < 2 or turns[-1][0] != "assistant":
        _fail(at, f"field '{field}' is not a transcript ending in an assistant reply",
              'write it as "\\n\\nHuman: …\\n\\nAssistant: …"')
    return turns


def _is_hh_prompt(text: str) -> bool:
    """An HH transcript given as the prompt: it opens with "\n\nHuman:" or ends with the "Assistant:" the reply
    follows. A prompt that merely starts with "Human:" is taken as it is."""
    return bool(_HH.match("\n\n" + text.lstrip("\n"))) and (text.startswith("\n\nHuman:") or
                                                            text.rstrip().endswith("Assistant:"))


def _hh_prompt_turns(transcript: str, field: str, at: Where) -> list[tuple[str, str]]:
    """The turns of an explicit HH prompt, "\n\nHuman: a\n\nAssistant:" -> [("user", "a")]: the final, empty
    "Assistant:" is where the reply goes."""
    encodable(transcript, at[0], at[1], field)
    turns = _split_hh(transcript)[1]
    if turns and turns[-1] == ("assistant", ""):
        turns = turns[:-1]
    _filled(turns, field, at)
    return turns


def _hh(chosen: str, rejected: str, at: Where) -> dict:
    """Anthropic HH: each transcript up to its final reply is the prompt, the same in both."""
    c_turns, r_turns = _hh_turns(chosen, "chosen", at), _hh_turns(rejected, "rejected", at)
    if c_turns[:-1] != r_turns[:-1]:
        _fail(at, "fields 'chosen' and 'rejected' differ before their final \"Assistant:\" reply",
              "give both transcripts the same conversation before the final reply, "
              "or give a 'prompt' field with single replies in 'chosen' and 'rejected'")
    return {"prompt": _prompt_from(c_turns[:-1], "chosen", at), "chosen": c_turns[-1][1], "rejected": r_turns[-1][1]}


def _prompt_from(turns: list[tuple[str, str]], field: str, at: Where) -> str:
    _filled(turns, field, at)
    text = render_prompt(turns) if turns and turns[-1][0] == "user" else ""
    if not text:
        _fail(at, f"field '{field}' has no user turn before the final reply",
              "give the user's question before the replies, or add a 'prompt' field")
    return text


def _shared_messages(chosen: list, rejected: list, at: Where) -> dict:
    """TRL implicit prompt: the leading messages both lists share; after them each holds one assistant reply."""
    c_turns, r_turns = _turns(chosen, "chosen", at), _turns(rejected, "rejected", at)
    replies = {"chosen": _last_reply(c_turns, "chosen", at), "rejected": _last_reply(r_turns, "rejected", at)}
    k = 0  # shared leading messages, leaving each list at least its reply
    while k < min(len(c_turns), len(r_turns)) - 1 and c_turns[k] == r_turns[k]:
        k += 1
    if max(len(c_turns), len(r_turns)) > k + 1:  # one prompt, one reply each: an earlier difference has no place
        _fail(at, f"fields 'chosen' and 'rejected' differ before their last assistant turn (from message {k} on)",
              "give an explicit 'prompt' with the conversation so far, and 'chosen' and 'rejected' as single "
              "assistant messages")
    return {"prompt": _prompt_from(c_turns[:k], "chosen", at)} | replies


def _cut_allowed(chosen: str, rejected: str, k: int) -> bool:
    """May the shared prefix end before index k? After whitespace or Chinese punctuation; after . , ; : ! ? only
    where a space (or the end) follows in both texts; between two Chinese characters. Never inside a word or
    a number: "is 4" / "is 42" share "is ", not "is 4", and "3.14" / "3.15" share no sentence."""
    last = chosen[k - 1]
    if last.isspace() or last in _CJK_PUNCT:
        return True
    after = [t[k] if k < len(t) else " " for t in (chosen, rejected)]
    if last in _PUNCT:
        return all(a.isspace() for a in after)
    return bool(_CJK.match(last)) and all(_CJK.match(a) for a in after)


def _shared_text(chosen: str, rejected: str, at: Where) -> dict:
    """TRL implicit prompt as strings: the shared leading text, cut back to a word or sentence boundary
    so that both replies are non-empty ("The sky is blue." / "The sky is green." -> "The sky is"; "天空是蓝色的。" /
    "天空是绿色的。" -> "天空是")."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    # One side is all shared text up to a boundary ("Q? A." / "Q? A. More."): its reply can only start at an earlier
    # sentence end; without one ("Tell me a joke." / "Tell me a joke. Why..."), that side has no reply (below).
    one_side_ends = n == min(len(chosen), len(rejected)) and 0 < n < max(len(chosen), len(rejected))
    sentences_only = one_side_ends and _cut_allowed(chosen, rejected, n)
    for k in range(n, 0, -1):
        if sentences_only and not chosen[:k].rstrip().endswith(tuple("?!.\n") + tuple(_CJK_PUNCT)):
            continue
        if _cut_allowed(chosen, rejected, k):
            prompt, c, r = chosen[:k].strip(), chosen[k:].strip(), rejected[k:].strip()
            if prompt and c and r:
                return {"prompt": prompt, "chosen": c, "rejected": r}
    c, r = chosen.strip(), rejected.strip()
    if c == r:
        return {"prompt": c, "chosen": "", "rejected": ""}  # identical: preferences.load_pairs skips it
    for field, short, long in (("chosen", c, r), ("rejected", r, c)):
        if short and long.startswith(short):  # "Q? " / "Q? answer": the prompt text is all of one side
            _fail(at, f"field '{field}' has an empty reply: it is only the prompt text it shares ({short!r})",
                  "add a 'prompt' field; with it an empty reply is allowed")
    _fail(at, "fields 'chosen' and 'rejected' share no prompt text", "add a 'prompt' field")


# ------------------------------------------------------------------ one record -> one prompt (PPO's --data)

PROMPT_SHAPES = ("Alpaca {instruction, input} (output ignored), TRL prompt-only {prompt} (a string or a message "
                 f"list), or any preference pair: {SHAPES}")


def prompt_of(rec, at: Where = (None, None)) -> tuple[str, str]:
    """(instruction, input) of one record of any shape `preferences.load_prompts` accepts."""
    if not isinstance(rec, dict):
        _fail(at, f"expected an object, got {type(rec).__name__}", f"make each record one of: {PROMPT_SHAPES}")
    _one_prompt_field(rec, at)
    if "instruction" in rec:
        instruction = _text(rec["instruction"], "instruction", at)
        if not instruction:
            _fail(at, "field 'instruction' is empty", "give 'instruction' the task")
        instruction = alpaca_context(rec, instruction, at[0], at[1])
        return instruction, _text(rec["input"], "input", at) if rec.get("input") is not None else ""
    if "prompt" in rec and "chosen" not in rec and "rejected" not in rec:
        if "vote_id" in rec:  # typed in the arena: never read as a transcript (as `parse_pair` reads it)
            return _literal(rec["prompt"], at), ""
        _no_unread_context(rec, at)
        return _prompt(rec["prompt"], "prompt", at), ""
    if "conversations" in rec or "chosen" in rec or "rejected" in rec:
        return parse_pair(rec, at)["prompt"], ""
    _fail(at, f"no prompt in this record (keys: {sorted(rec)})", f"use one of: {PROMPT_SHAPES}")
