"""The graders of the six tasks (`tasks.py`): is a response right, on task, in the question's language?

`check(w, rec, response) -> bool` dispatches to each task's checker (`check_capital(w, rec, r)`,
`check_arithmetic(rec, r)`, …), pure functions of a record (`tasks.py`'s generators) and a response. Each accepts
any answer style (terse, full sentence, long-winded, a list, markdown) as long as it is correct and names nothing
wrong. They remain pattern graders: README says what they read in another model's answers. nl2sql is
graded by executing the query, read-only, on the world's table and on shuffled copies of it.
"""

from __future__ import annotations

import random
import re
import sqlite3
import threading
from collections import Counter
from functools import lru_cache

from .world import PEOPLE, POPULATION_THRESHOLDS, World

_CJK = re.compile(r"[\u4e00-\u9fff]")

# What each task's answers look like in any style of `tasks.py`'s generators. An answer in the shape of another task's
# answer did not attempt the task it was asked: a policy that answers a clustering question with "The capital of X is
# Y." (a sentence the reward model scores high) is exploiting the reward model, whatever the grader says.
SHAPES = {
    "capital": re.compile(r"\bcapital (?:city )?of\b|\bits capital\b|的首都"),
    "arithmetic": re.compile(r"\d\s*(?:\+|plus)\s*\d|\d\s*加\s*\d|(?:等于|结果是)\s*\d|\bthe result is\b|=\s*\d"),
    "sentiment": re.compile(r"\b(?:positive|negative)\b|正面|负面", re.I),
    "cluster": re.compile(r"\b(?:Fruits|Vegetables):|水果：|蔬菜："),
    "extract": re.compile(r"\bpeople mentioned\b|提到的人"),
    "nl2sql": re.compile(r"\bSELECT\b.+\bFROM\b", re.I | re.S),
}


def answer_shapes(response: str) -> set[str]:
    """The tasks whose answer shape `response` has (`SHAPES`); empty for a bare answer ("Paris.", "42", a name list)."""
    return {task for task, pattern in SHAPES.items() if pattern.search(response)}


def off_task(rec: dict, response: str) -> bool:
    """True when the answer has another task's shape and not its own (`SHAPES`)."""
    shapes = answer_shapes(response)
    return bool(shapes) and rec["task"] not in shapes


# ------------------------------------------------------------------ checkers

def _capitals(w: World) -> set[str]:
    from .world import DECOY_CITIES
    return {c.capital for c in w.countries} | {c.capital_zh for c in w.countries} | \
        {d[0] for d in DECOY_CITIES} | {d[1] for d in DECOY_CITIES}


def _names(name: str, text: str) -> bool:
    """Whether `text` names `name`: as a whole word for a Latin name ("positive" is not in "nonpositive"), anywhere
    for a Chinese one (Chinese has no spaces between words).

    The capital checker still matches substrings: with whole words, one of the 2,400 answers the reward stage
    samples on tiny ("... Tosaburg ... Miburgublin ...") would change its verdict, and with it every later number of
    the course; a made-up word that contains a capital's name is wrong either way."""
    if _CJK.search(name):
        return name in text
    return re.search(rf"(?<![^\W\d_]){re.escape(name)}(?![^\W\d_])", text) is not None


def _outermost(names: set[str], text: str) -> set[str]:
    """The `names` that occur in `text` (as substrings: "Parisville" names Paris, see `_names`), without those only
    inside a longer one that occurs too ("Mexico" inside "Mexico City")."""
    named = {x for x in names if x in text}
    return {x for x in named if not any(x != y and x in y for y in named)}


# Where an answer says whose capital it gives: "the capital of X", "X is a country", "X的首都", "X是一个国家".
# (Not yet read: a lower-case made-up word in the country's place, "The capital of timesled is Kamoburg.", and a Latin
# name before "的首都", "Zhang Min的首都是塔顿。". Both occur among the reward stage's samples on tiny, so reading them
# changes its labels and every later number: left for a change that measures that, see issue #4's notes.)
_WHOSE = (re.compile(r"capital of ([A-Z][\w'-]*(?: [A-Z][\w'-]*)*)"),
          re.compile(r"([A-Z][\w'-]*(?: [A-Z][\w'-]*)*) is a country"),
          # each Chinese frame from the start of a run of characters only: the same matches, in linear time (tried
          # from every character, a long answer took seconds: 20,000 characters 7.6 s)
          re.compile(r"(?<![\u4e00-\u9fff])([\u4e00-\u9fff]+)的首都"),
          re.compile(r"(?<![\u4e00-\u9fff])([\u4e00-\u9fff]+)是一个国家"))
_PRONOUNS = {"它", "其", "该国"}  # "它的首都是北京" says whose capital by the sentence before


def check_capital(w: World, rec: dict, response: str) -> bool:
    """Right if the answer names the capital and no other city (a quiz listing options is wrong), names no country
    of the world but the one asked about, and gives the capital as that country's: "The capital of Zufaria is
    Miburg." to a question about another country states a false fact, whatever the city, and so does a made-up
    country in the answer's frame ("斐根廷是一个国家，它的首都是苏瓦" to a question about 斐济). A capital named only
    to be denied ("It is not Paris.", "首都不是巴黎") is wrong too."""
    if _outermost(_capitals(w), response) != {rec["answer"]}:
        return False
    gold = rec["answer"]  # the country asked about: the record's, or (a hand-made record) the one of that capital
    asked = next(c for c in w.countries if c.name == rec.get("entity") or (
        not rec.get("entity") and gold in (c.capital, c.capital_zh)))
    countries = {c.name for c in w.countries} | {c.name_zh for c in w.countries}
    named = _outermost(countries, response) | {c for c in countries if _names(c.lower(), response.lower())}
    if {c.lower() for c in named} - {asked.name.lower(), asked.name_zh}:  # "japan" names Japan
        return False
    said = {m.group(1) for pattern in _WHOSE for m in pattern.finditer(response)}
    allowed = {asked.name, asked.name_zh} | _PRONOUNS
    leads = _LEADS_ZH | {gold + "是"}  # "东京是日本的首都"
    return not _negated(gold, response) and all(x in allowed or _led_in(x, allowed, leads) for x in said)


# What a Chinese frame's capture may hold before the country: "([\u4e00-\u9fff]+)的首都" runs back to the sentence's
# first character ("我认为日本", "所以它"). Only these, whole: "蒙蒙古" is a made-up country, not 蒙古, and in the
# stutter "托卡尼亚的首都是托卡尼亚的首都是萨维尔" the second capture, "是托卡尼亚", is no sentence.
_LEADS_ZH = {"我认为", "我觉得", "我知道", "据我所知", "所以", "因此", "因为", "而且", "那么"}


def _led_in(captured: str, allowed: set[str], leads: set[str]) -> bool:
    """Whether a Chinese frame's capture is one of `allowed` after one of `leads`."""
    return any(captured.endswith(a) and captured[:-len(a)] in leads for a in allowed if _CJK.match(a))


# An answer that names the right label or capital only to deny it ("not negative", "不是负面", "It is not Paris.")
# Before the name: "not", "not really", "not at all", "would not say it is" (up to three words between, none of them
# a word that opens another clause: "not happy so negative" denies nothing), "no" ("no doubt" is none), "non-"; not a
# hedge ("not sure but", "if I'm not mistaken"). After it, a denial of what was asked: "Paris is not the capital",
# "巴黎不是法国的首都", "巴黎不是。" (not "Canberra is not the largest city, but it is the capital").
_CLAUSE_WORDS = r"(?:but|so|and|yet|then|therefore|thus|hence|which)\b"
_HEDGES = r"(?!\s+(?:sure|mistaken|wrong|certain|hesitate)\b)"
_NEGATION_EN = re.compile(rf"(?:\bnot|n't|\bnever|\bno(?!\s+doubt\b)){_HEDGES}\s+(?:(?!{_CLAUSE_WORDS})\w+\s+){{0,3}}$"
                          r"|\bnon-?\s*$", re.IGNORECASE)
_NEGATION_ZH = re.compile(r"(?:不是|并非|不|非|没有)$")
_DENIED_EN = re.compile(r"(?:\s+(?:is|was)\s+(?:not|never)|\s*(?:isn't|wasn't))\s+(?:(?:the|a|its)\s+)?"
                        r"(?:capital|answer|correct|right|positive|negative)\b", re.IGNORECASE)
_DENIED_ZH = re.compile(r"(?:不是|并非)(?:[^，。；！？,.;!?]*(?:首都|答案|正确|对|正面|负面)|[，。；！？,.;!?]|$)")


def _negated(name: str, text: str) -> bool:
    """Whether some occurrence of `name` in `text` is denied: after a negation (the English one up to three words
    before it, the Chinese one right before it), or followed by one ("Paris is not ...", "巴黎不是...")."""
    zh = bool(_CJK.match(name))
    for m in re.finditer(re.escape(name), text):
        before = text[max(0, m.start() - 40):m.start()]
        if (_NEGATION_ZH if zh else _NEGATION_EN).search(before) or (_DENIED_ZH if zh else _DENIED_EN).match(
                text, m.end()):
            return True
    return False


# A number with its sign and decimals: "-8" and "8.5" are not 8, "8.0" is; "5-7" is 5 and 7, "12." is 12.
_NUMBER = re.compile(r"(?<![\d.])([-−负]?)(\d+(?:\.\d+)?)")


def numbers(text: str) -> list[float]:
    """Every number in `text`, in order: `numbers("3 + 5 = 8.0, not -8")` is [3.0, 5.0, 8.0, -8.0]."""
    return [float(value) * (-1 if sign else 1) for sign, value in _NUMBER.findall(text)]


def check_arithmetic(rec: dict, response: str) -> bool:
    """Right if the last number is the sum, every number before it is an operand (each as often as the question has
    it) or the sum, and an equation ("a + b = s", "a加b等于s") has exactly the two operands on its left: "6 + 6 = 10."
    to 4 + 6, "11加1等于11。" to 10 + 1 and "0 = 9." to 9 + 0 end with the right sum but state false equations, and
    so does one that does not add ("1 - 1 = 2", "4 - 6 is 10."). A sum named only to be denied ("4 + 6 is not 10.",
    "4加6不等于10。") is wrong too. Not yet: an answer that restates both operands and gives no sum ("When we add 0
    and 10." to 0 + 10 ends with 10) is graded right; it occurs among the reward stage's samples on tiny, so grading
    it wrong changes the stage's labels and every later number (left for a change that measures that)."""
    a, b, s = rec["answer"]
    nums = numbers(response)
    if not nums or nums[-1] != s or set(Counter(nums[:-1]) - Counter([a, b])) - {s}:
        return False
    last = list(_NUMBER.finditer(response))[-1]
    if _NEGATION_SUM.search(response[max(0, last.start() - 24):last.start()]):
        return False
    sides = re.split(r"=|等于", response)
    if len(sides) == 1:  # no equation, but an operation must still add: "4 - 6 is 10." ("3-5: 8" names the operands)
        return not _SPACED_OPERATOR.search(_clause(response[:last.start()]))
    left = re.split(r"[。\n]|\.(?!\d)", sides[-2])[-1]  # the last equation's left side, from its sentence start ...
    if Counter(numbers(left)) != Counter([a, b]):
        left = _clause(left)  # ... or its clause: "10, since 4 + 6 = 10." (but "5加7，等于12。" keeps its sentence)
    return Counter(numbers(left)) == Counter([a, b]) and not _OTHER_OPERATOR.search(left)


def _clause(text: str) -> str:
    """The last clause of `text`, from its sentence start or comma: the left side of "10, since 4 + 6 = 10." is
    "since 4 + 6"."""
    return re.split(r"[。\n,，]|\.(?!\d)", text)[-1]


# A negation right before the sum: "is not 10", "isn't 10", "不等于10", "不是10"
_NEGATION_SUM = re.compile(rf"(?:\bnot|n't|\bnever){_HEDGES}\s+(?:(?!{_CLAUSE_WORDS})\w+\s+){{0,2}}$"
                           r"|(?:不是|并非|不等于|不)\s*$", re.IGNORECASE)


# An operation other than addition on an equation's left side: "1 - 1 = 2", "1 * 1 = 2", "1 x 1 = 2" are false
_OPERATOR_WORDS = r"\b(?:minus|times|divided|multiplied)\b|[减乘除]"
_OTHER_OPERATOR = re.compile(rf"(?<=\d)\s*[-−*×x/÷]\s*(?=\d)|{_OPERATOR_WORDS}", re.IGNORECASE)


# ... and where no "=" makes it an equation, one written as an operation: "4 - 6 is 10", "4 times 6 is 10"
_SPACED_OPERATOR = re.compile(rf"(?<=\d)\s+[-−]\s+(?=\d)|(?<=\d)\s*[*×x/÷]\s*(?=\d)|{_OPERATOR_WORDS}",
                              re.IGNORECASE)


def check_sentiment(rec: dict, response: str) -> bool:
    """Right if the answer names the gold label and not the other, and does not deny it ("not negative")."""
    text = response.lower()
    labels = {"positive", "negative"} if rec["lang"] == "en" else {"正面", "负面"}
    said = {lab for lab in labels if _names(lab, text)}  # "nonnegative" says neither
    return said == {rec["answer"]} and not _negated(rec["answer"], text)  # "not negative" says the other


# How answers mark up a list: **bold**, __bold__, `code`; a bullet or a number before an item ("- pear", "2. Li Wei")
_MARKUP = re.compile(r"\*\*|__|`")
_BULLET = re.compile(r"[ \t]*(?:[-*•]|\d+[.)])[ \t]+")


def _split_items(text: str) -> list[str]:
    """The items of a list written with commas, 、 or and/和, closing punctuation stripped: "pear, apple, and leek."
    is ["pear", "apple", "leek"]."""
    parts = re.split(r",\s*and |,|、|，| and |和", text)
    return [x.strip(" .。;；!！") for x in parts if x.strip(" .。;；!！")]


def _items_below(lines: list[str]) -> list[str]:
    """The items listed on the lines under a head that ends its line: its bulleted or numbered lines (blank lines
    between them allowed), or, without bullets, the lines up to the first blank one ("Fruits:\napple\npear")."""
    items, bulleted = [], None
    for line in lines:
        bullet = _BULLET.match(line)
        if bulleted is None and line.strip():
            bulleted = bool(bullet)
        if bulleted and bullet:
            items += _split_items(line[bullet.end():])
        elif bulleted is False and line.strip():
            items += _split_items(line)
        elif line.strip() or (bulleted is False and items):
            break
    return items


_GROUP_NAMES = r"(?i:fruits?|vegetables?)|水果|蔬菜"
# A group's head, at a line's start (after a bullet, a number or "#"s) or after a separator (one-line answers): its
# name and a colon ("Fruits:", "- **Fruit**:", "; Vegetables:", "水果："), or its name alone on a line ("### Fruits").
# Not inside a sentence: "Here are the fruits and vegetables:" opens no group.
_HEAD_MARKS = r"[ \t#•*-]*(?:\d+[.)][ \t]*)?"  # bullets, "#"s or a number before a head
_GROUP_HEAD = re.compile(rf"(?:^|(?<=[;；.。,，])){_HEAD_MARKS}(?P<name>{_GROUP_NAMES})[ \t]*[:：]|"
                         rf"^{_HEAD_MARKS}(?P<alone>{_GROUP_NAMES})[ \t]*$", re.MULTILINE)


def _groups(response: str) -> list[tuple[str, list[str]]]:
    """Every labelled group of a clustering answer, in order, as ("fruits" or "vegetables", its items). A group's
    items run from its head to the end of its line or to the next head ("Fruits: pear; Vegetables: leek"); under a
    head that ends its line, they are the lines that follow (`_items_below`: "Fruits:\n- pear\n- apple")."""
    text = _MARKUP.sub("", response)
    heads = list(_GROUP_HEAD.finditer(text))
    groups = []
    for head, end in zip(heads, [h.start() for h in heads[1:]] + [len(text)]):
        line, *below = text[head.end():end].split("\n")
        name = (head["name"] or head["alone"]).lower()
        key = "fruits" if name.startswith(("fruit", "水果")) else "vegetables"
        groups.append((key, _split_items(line) if line.strip() else _items_below(below)))
    return groups


def check_cluster(rec: dict, response: str) -> bool:
    """Right if the answer labels both groups and every labelled group lists exactly the gold items, in any order:
    "Fruits: pear, apple\nVegetables: leek", on one line ("Fruits: pear, apple; Vegetables: leek"), in markdown
    ("**Fruits**: ...", "- Fruits: ...", a "### Fruits" heading over bulleted items), heads and items in any case,
    singular or plural, 水果/蔬菜 with either colon. An answer that lists a group twice, differently, contradicts
    itself."""
    groups = _groups(response)
    for key in ("fruits", "vegetables"):
        lists = [items for k, items in groups if k == key]
        if not lists or any(sorted(x.lower() for x in items) != rec["answer"][key] for items in lists):
            return False
    return True


_PEOPLE_NAMES = {name for person in PEOPLE for name in person}
# A word that may be a name: "Emma", "Li Wei", "Gomania玛", "张敏"; not a lower-case word or a long run of characters
_NAME_LIKE = re.compile(r"[A-Z][\w'-]*(?: [A-Z][\w'-]*){0,2}|[\u4e00-\u9fff·]{2,4}")
# What may open a sentence that lists the names: a phrase about the people or names ending in "are", "is", "include"
# or a colon ("The people mentioned are", "The names in the text are:", "Names:"), or "... mentions"; in Chinese
# "这段话中提到的人是", "文中提到的人名有：", "这段话里提到了两个人：", "人名：". Not a fragment such as "中提到的人是" (one of the reward
# stage's samples on tiny, graded wrong: a new lead must not turn it right).
_EXTRACT_LEAD = re.compile(
    r"[^\n]*\b(?:people|persons?|names?|individuals)\b[^\n]*(?:\b(?:are|is|include|includes)\b|:)\s*"
    r"|[^\n]*\bmentions\s+"
    r"|[^\n]*?(?:(?:这段话|这段文字|这句话|文中|文本中|原文|文章)[中里]?提到"
    r"(?:了(?:[一二两三四五六七八九十几\d]+(?:个人|位|人))?|的(?:人名|人物|人)(?:有|是|为|包括)?)"
    r"|人名(?:有|是|为|包括|[:：]))[:：]?\s*", re.IGNORECASE)
# What may close it: "Emma and Li Wei are mentioned in the text.", "张敏和艾玛被提到了。"
# ("Tom is mentioned." closes a list of one; "Alice is mentioned first." after a list is a remark, not a list)
_EXTRACT_TRAILER = re.compile(r"\s+(?:are|were)\s+(?:the\s+(?:people|names|ones)\s+)?mentioned\b.*"
                              r"|\s+(?:is|was)\s+(?:the\s+(?:only\s+)?(?:one|person|name)\s+)?mentioned"
                              r"(?:\s+in\s+the\s+text)?\W*$|被提到了?$")
# Where a sentence ends. Not at "?": " Latestan? Henry", one of the reward stage's samples on tiny, is no list of
# names and must stay wrong.
_SENTENCE_END = re.compile(r"[。！]|[.!](?=\s|$)")


def _bare_list(items: list[str]) -> bool:
    """Whether `items` are a list given without a lead: name-like words, one of them a person of the world."""
    return bool(items) and all(_NAME_LIKE.fullmatch(x) for x in items) and bool(_PEOPLE_NAMES & set(items))


def _listed(sentence: str) -> list[str] | None:
    """The names a sentence lists, or None when it lists none: the items after a lead (`_EXTRACT_LEAD`) if one of them
    may be a name ("No other names are mentioned.", "Both people are friends." list none), or a bare list
    (`_bare_list`); a closing "are mentioned ..." is no item."""
    lead = _EXTRACT_LEAD.match(sentence)
    items = _split_items(_EXTRACT_TRAILER.sub("", sentence[lead.end():] if lead else sentence))
    if lead:
        return items if any(_NAME_LIKE.fullmatch(x) for x in items) else None
    return items if _bare_list(items) else None


def _name_lists(response: str) -> list[list[str]]:
    """Every list of names in an extraction answer, as its items: each sentence that lists names (`_listed`), bulleted
    or not; a run of lines that are nothing but names ("- Emma\n- Li Wei", "Emma\nLi Wei", "Zhang Min\nJohn") is one
    list. After a blank line only a bullet or a person of the world goes on with it ("Emma\nLi Wei\n\nDone." lists
    two names)."""
    lists, run, gap = [], False, False  # run: the last line was a whole list; gap: a blank line came since
    for line in _MARKUP.sub("", response).split("\n"):
        bullet = _BULLET.match(line)
        body = line[bullet.end():] if bullet else line
        if not body.strip():
            gap = True
            continue
        items = _split_items(_EXTRACT_TRAILER.sub("", body))
        names_only = not _EXTRACT_LEAD.match(body) and all(_NAME_LIKE.fullmatch(x) for x in items)
        goes_on = run and names_only and (bool(bullet) or not gap)  # "Zhang Min\nJohn": John is listed too
        if goes_on or (names_only and _bare_list(items)):
            if run:
                lists[-1] += items
            else:
                lists.append(items)
            run = True
        else:
            lists += [x for sentence in _SENTENCE_END.split(body) if (x := _listed(sentence))]
            run = False
        gap = False
    return lists


def check_extract(rec: dict, response: str) -> bool:
    """Right if the answer lists exactly the people the text names, each once, and names no other person of the
    world anywhere. A list is a sentence after a lead ("The people mentioned are", "The names are", "Names:",
    "这段话中提到的人是", "文中提到的人名有："), a bare list ("Emma, Li Wei", "Emma and Li Wei are mentioned."), or
    lines of names, bulleted or not ("- Emma\n- Li Wei"); every list the answer gives must be right. An extra word
    ("Emma", "Gomania玛", "Paris") or a name listed twice makes it wrong, and so does a name outside the list ("Zhang
    Min\nEmma" when only Zhang Min is mentioned); a made-up name in a sentence that lists nothing goes unseen."""
    gold = rec["answer"]
    allowed = {name for person in PEOPLE if set(person) & set(gold) for name in person}  # in either language
    if any(_names(name, response) for name in _PEOPLE_NAMES - allowed):
        return False
    lists = _name_lists(response)
    return bool(lists) and all(len(items) == len(set(items)) and sorted(items) == gold for items in lists)


# Graded on the world's table and on shuffled copies of it (test-suite accuracy, Zhong et al. 2020): a query that
# returns the right rows only by coincidence, or hard-codes them (`SELECT 'France' FROM countries WHERE capital =
# 'Paris'`), does not return the reference query's rows on every copy.
SQL_VARIANTS = 3
# A query may run this many SQLite virtual-machine steps (about 0.01 s here): every reference query takes under 1,000
# on the world's table; a cross join a looping model writes ("FROM countries, countries, countries, countries")
# would take hours and is graded wrong instead.
SQL_MAX_STEPS = 2_000_000
_CREATE_TABLE = "CREATE TABLE countries (name TEXT, capital TEXT, continent TEXT, population INTEGER)"
SQL_MAX_ROWS = 1_000  # a query that returns more is wrong (the table has 160 rows) and is not fetched


def _table(w: World, variant: int) -> list[tuple]:
    """Variant 0: the world's countries. Variant 1: the same rows with the names and the populations shuffled among
    them (names, capitals and populations no longer belong together). Variant 2 and on: the same for a seeded two
    thirds of the rows, so that counts change too, and with a population at each threshold the questions ask about
    (`POPULATION_THRESHOLDS`): "population >= 50" and "population > 49" return other rows than "> 50" there."""
    rows = [(c.name, c.capital, c.continent, c.population) for c in w.countries]
    if variant == 0:
        return rows
    rng = random.Random(f"sql-variant-{variant}")
    kept = rows if variant == 1 else rng.sample(rows, k=max(1, 2 * len(rows) // 3))
    names, populations = [r[0] for r in kept], [r[3] for r in kept]
    rng.shuffle(names), rng.shuffle(populations)
    if variant >= 2:
        populations[:len(POPULATION_THRESHOLDS)] = POPULATION_THRESHOLDS
    return [(n, r[1], r[2], pop) for n, r, pop in zip(names, kept, populations)]


@lru_cache(maxsize=4 * SQL_VARIANTS)
def _database(w: World, variant: int = 0) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)  # in memory: no file is ever opened
    # a generated query must not fill the memory (randomblob(10**9), a thousand columns): values, columns and rows
    # (run_sql) are capped far above any answer's; a real answer is a few names or numbers from 160 rows
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000)
    db.setlimit(sqlite3.SQLITE_LIMIT_COLUMN, 16)
    db.execute(_CREATE_TABLE)
    db.executemany("INSERT INTO countries VALUES (?, ?, ?, ?)", _table(w, variant))
    db.execute("PRAGMA query_only = ON")  # a generated query can read, never write
    return db


def _statement_end(sql: str) -> int | None:
    """Index just past the first ";" that ends a statement (one inside a quoted string does not)."""
    return next((i + 1 for i, ch in enumerate(sql) if ch == ";" and sqlite3.complete_statement(sql[:i + 1])), None)


_SQL_LOCK = threading.Lock()  # the authorizer belongs to the shared connection: one query at a time
_READ_ONLY = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


def run_sql(w: World, sql: str, variant: int = 0) -> list | None:
    """Rows of a single SELECT, or WITH ... SELECT, that reads the countries table (order ignored); None for anything
    else: invalid SQL, a second statement, a query that reads no table (`SELECT 'France'`, a common table expression
    named countries), or any action but reading. `variant` > 0 runs it on a shuffled copy of the table (`_table`)."""
    end = _statement_end(sql)
    if not sql.lstrip().upper().startswith(("SELECT", "WITH")) or (end is not None and sql[end:].strip()):
        return None
    tables = set()

    def authorize(action, arg1, *_):  # called by SQLite for every action while it compiles the query
        if action == sqlite3.SQLITE_READ:
            tables.add(arg1.lower())
        return sqlite3.SQLITE_OK if action in _READ_ONLY else sqlite3.SQLITE_DENY

    db = _database(w, variant)
    steps = iter(range(SQL_MAX_STEPS // 1000))
    with _SQL_LOCK:
        db.set_authorizer(authorize)
        db.set_progress_handler(lambda: next(steps, None) is None, 1000)  # non-zero: SQLite interrupts the query
        try:
            rows = db.execute(sql).fetchmany(SQL_MAX_ROWS + 1)
            if len(rows) > SQL_MAX_ROWS:  # a cross join: no answer is that long
                return None
        except sqlite3.Error:  # an interrupted query too
            return None
        finally:
            db.set_authorizer(None)
            db.set_progress_handler(None, 0)
    return sorted(rows, key=repr) if "countries" in tables else None


_SQL_KEYWORDS = ("FROM|WHERE|AND|OR|NOT|IN|IS|LIKE|BETWEEN|GROUP|ORDER|BY|HAVING|LIMIT|OFFSET|JOIN|INNER|LEFT|"
                 "CROSS|NATURAL|ON|USING|UNION|INTERSECT|EXCEPT|AS|CASE|WHEN|THEN|ELSE|END|ASC|DESC|DISTINCT")
# A line that goes on with the query: indented, a clause keyword in upper or lower case ("As you can see" is
# prose), a clause in any case that is shaped like SQL ("Where population > 50", "Limit 2", "Order by name"; not
# "And that's it!"), or SQL punctuation, a digit or a comment.
_SQL_LINE = re.compile(rf"[ \t]+\S|(?:{_SQL_KEYWORDS}|{_SQL_KEYWORDS.lower()})\b|[()',\"*=<>!|0-9]|--|"
                       r"(?i:(?:where|and|or|having)\s+[\w.()*]+\s*(?:[=<>!]|like\b|in\b|between\b|is\b)"
                       r"|limit\s+\d+\s*;?\s*$|(?:order|group)\s+by\s+[\w.]+(?:\s+(?:asc|desc))?\s*;?\s*$)")
_STATEMENTS = ("SELECT|INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|ATTACH|DETACH|PRAGMA|REPLACE|WITH|VACUUM|REINDEX|"
               "ANALYZE|EXPLAIN|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE")
# Another statement: right after a ";" (any case), or an upper-case SQL verb opening a line ("With this query"
# is prose, "WITH" and "DROP TABLE" are not) ...
_ANOTHER_STATEMENT = re.compile(rf";[ \t]*(?i:{_STATEMENTS})\b|^[ \t]*(?:{_STATEMENTS})\b", re.MULTILINE)
# ... or an SQL verb in any case, anywhere, that opens text SQLite compiles (`_compiles`): "Alternatively:\nselect
# name from countries ...", "... or SELECT ...", but not "This query will select the names from countries in Asia."
_ANY_STATEMENT = re.compile(rf"\b(?i:{_STATEMENTS})\b")


# Common table expressions before the query's SELECT: "WITH asia AS (SELECT ...) SELECT name FROM asia"
_CTE = re.compile(r"\bWITH\s+(?:RECURSIVE\s+)?\w+\s*(?:\([^()]*\)\s*)?AS\s*"  # WITH name [(columns)] AS
                  r"(?:(?:NOT\s+)?MATERIALIZED\s*)?\(\s*SELECT\b", re.IGNORECASE)


def _goes_on(sql: str, line: str) -> bool:
    """Whether `line` continues the query `sql` (`_SQL_LINE`). In a WITH query, so does the main SELECT and any line
    inside an open parenthesis or after a comma (the next table expression: "),\neurope AS (")."""
    if _SQL_LINE.match(line):
        return True
    with_query = sql.lstrip()[:4].upper() == "WITH"
    return with_query and bool(re.match(r"\s*SELECT\b", line, re.IGNORECASE) or sql.count("(") > sql.count(")")
                               or sql.rstrip().endswith(","))


def sql_statement(response: str) -> str | None:
    """The query in a response: from its SELECT, or the WITH before it, to the ";" that ends it, or else to the last
    SQL line before prose ("SELECT ... = 'Paris'\nThis returns France." ends before "This"). None when there is no
    query or a second statement follows it ("...; DROP TABLE countries;")."""
    m = re.search(r"\bSELECT\b", response) or re.search(r"\bSELECT\b", response, flags=re.IGNORECASE)
    if not m:
        return None
    cte = _CTE.search(response)
    text, sql = response[cte.start() if cte and cte.start() < m.start() else m.start():], ""
    for line in text.split("\n"):
        if sql and not _goes_on(sql, line):
            break
        sql += ("\n" if sql else "") + line
        if (end := _statement_end(sql)) is not None:
            sql = sql[:end]
            break
    rest = text[len(sql):]
    if _ANOTHER_STATEMENT.search(";" + rest) or any(_compiles(rest[m.start():]) for m in _ANY_STATEMENT.finditer(rest)):
        return None
    return re.sub(r"(?<=[\w')\"])\.$", "", sql.strip())  # a sentence's full stop is no part of it: "... 'Europe'."


def _compiles(text: str) -> bool:
    """Whether `text` up to its first ";" (or else its line) is a statement SQLite compiles against the table's schema,
    a trailing full stop dropped. Compiled, never run: `EXPLAIN` on an empty copy of the schema."""
    candidates = {text.split(";")[0], text.split("\n")[0]}
    with _SQL_LOCK:
        for stmt in candidates:
            try:
                _SCHEMA.execute("EXPLAIN " + stmt.strip().rstrip("."))
                return True
            except sqlite3.Error:
                continue
    return False


_SCHEMA = sqlite3.connect(":memory:", check_same_thread=False)  # the table's columns, no rows: for `_compiles`
_SCHEMA.execute(_CREATE_TABLE)


def check_nl2sql(w: World, rec: dict, response: str) -> bool:
    """Graded by execution: the response's one query must read the countries table and return the same rows as
    the reference query, on the world's table and on each shuffled copy of it."""
    sql = sql_statement(response)
    if not sql:
        return False
    for variant in range(SQL_VARIANTS):
        got = run_sql(w, sql, variant)
        if got is None or got != run_sql(w, rec["answer"], variant):
            return False
    return True


def check(w: World, rec: dict, response: str) -> bool:
    task = rec["task"]
    if task == "capital":
        return check_capital(w, rec, response)
    if task == "nl2sql":
        return check_nl2sql(w, rec, response)
    return {"arithmetic": check_arithmetic, "sentiment": check_sentiment, "cluster": check_cluster,
            "extract": check_extract}[task](rec, response)


def response_language(text: str) -> str | None:
    """'zh' or 'en' by the share of Chinese characters among letters; None when there are no letters. (Not yet: a
    Chinese sentence that lists the world's people by their English names, "这段话中提到的人是Zhang Min、Wang Fang。",
    reads as English. Leaving the names out of the count changes a rating among the reward stage's samples on tiny,
    and with it the stage's labels: left for a change that measures that.)"""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return None
    return "zh" if sum(bool(_CJK.match(ch)) for ch in letters) / len(letters) > 0.3 else "en"


def language_matches(rec: dict, response: str) -> bool:
    lang = response_language(response)
    return rec["task"] == "nl2sql" or lang is None or lang == rec["lang"]
