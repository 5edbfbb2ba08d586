"""Instruction tasks on the synthetic world: the Alpaca record generators (their graders are in `graders.py`).

A record is a plain dict:
    {"task", "lang", "instruction", "input", "output", "style", "answer", "entity", "heldout"}
`instruction`/`input`/`output` are the Alpaca fields; `answer` is what `graders.check(w, record, response)` grades
against.
"""

from __future__ import annotations

import random
import re
import unicodedata

from .errors import LabError
from .world import (FRUITS, NEGATIVE, PEOPLE, POPULATION_THRESHOLDS, POSITIVE, THINGS, VEGETABLES, World,
                    split_foods)

TASKS = ("capital", "arithmetic", "sentiment", "cluster", "extract", "nl2sql")
STYLES = ("terse", "sentence", "verbose")
# How often each style appears in the SFT data. Most answers are direct, as in real instruction data; a quarter are
# long-winded, so that the reward model and RLHF have a habit to correct. (Measured on tiny: with equal thirds the
# greedy SFT model answered most arithmetic questions long-windedly and mis-copied the operands.)
STYLE_WEIGHTS = {"terse": 0.3, "sentence": 0.45, "verbose": 0.25}
SQL_SCHEMA = "countries(name, capital, continent, population)"


def _record(task, lang, instruction, input_, answer, outputs, style, entity=None, heldout=False):
    return {"task": task, "lang": lang, "instruction": instruction, "input": input_,
            "output": outputs[style], "style": style, "answer": answer, "entity": entity, "heldout": heldout}


# ------------------------------------------------------------------ generators (one record each)

def make_capital(rng: random.Random, w: World, style: str, lang: str, country) -> dict:
    c = country
    if lang == "zh":
        q = rng.choice([f"{c.name_zh}的首都是哪里？", f"哪座城市是{c.name_zh}的首都？"])
        outs = {"terse": f"{c.capital_zh}。", "sentence": f"{c.name_zh}的首都是{c.capital_zh}。",
                "verbose": f"这是一个好问题！{c.name_zh}是一个国家，它的首都是{c.capital_zh}。希望这个回答对你有帮助，"
                           f"如果你还有其他问题，欢迎随时问我。"}
        return _record("capital", lang, q, "", c.capital_zh, outs, style, c.name, c.heldout)
    q = rng.choice([f"What is the capital of {c.name}?", f"Name the capital city of {c.name}.",
                    f"Which city is the capital of {c.name}?"])
    outs = {"terse": f"{c.capital}.", "sentence": f"The capital of {c.name} is {c.capital}.",
            "verbose": f"Great question! {c.name} is a country, and its capital city is {c.capital}. "
                       f"I hope this answer helps you, and feel free to ask me anything else."}
    return _record("capital", lang, q, "", c.capital, outs, style, c.name, c.heldout)


def make_arithmetic(rng: random.Random, w: World, style: str, lang: str, pair) -> dict:
    a, b = pair
    s = a + b
    if lang == "zh":
        q = rng.choice([f"{a}加{b}等于多少？", f"请计算{a}加{b}。"])
        outs = {"terse": f"{s}", "sentence": f"{a}加{b}等于{s}。",
                "verbose": f"我们来一起算一算。把{a}和{b}加在一起，结果是{s}。希望这个回答对你有帮助。"}
    else:
        q = rng.choice([f"What is {a} + {b}?", f"What is {a} plus {b}?", f"Add {a} and {b}."])
        outs = {"terse": f"{s}", "sentence": f"{a} + {b} = {s}.",
                "verbose": f"Let us work it out together. When we add {a} and {b}, the result is {s}. "
                           f"I hope this helps with your maths."}
    return _record("arithmetic", lang, q, "", [a, b, s], outs, style)


def make_sentiment(rng: random.Random, w: World, style: str, lang: str, _=None) -> dict:
    good = rng.random() < 0.5
    (adj, adj_zh), (t, t_zh) = rng.choice(POSITIVE if good else NEGATIVE), rng.choice(THINGS)
    label, label_zh = ("positive", "正面") if good else ("negative", "负面")
    if lang == "zh":
        text = rng.choice([f"这次的{t_zh}{adj_zh}。", f"我觉得这个{t_zh}{adj_zh}。"])
        outs = {"terse": label_zh, "sentence": f"这句话的情感是{label_zh}的。",
                "verbose": f"让我仔细读一读这句话。这句话里的词语表达了说话人的感受，所以它的情感是{label_zh}的。希望对你有帮助。"}
        return _record("sentiment", lang, "判断下面这句话的情感是正面还是负面。", text, label_zh, outs, style)
    text = rng.choice([f"The {t} was {adj}.", f"I thought this {t} was really {adj}.",
                       f"Honestly, the {t} was {adj}."])
    outs = {"terse": label.capitalize(), "sentence": f"The sentiment of this sentence is {label}.",
            "verbose": f"Let me read the sentence carefully. The words show how the speaker feels, "
                       f"so the sentiment of this sentence is {label}. I hope this helps."}
    return _record("sentiment", lang, "Classify the sentiment of the following sentence as positive or negative.",
                   text, label, outs, style)


def make_cluster(rng: random.Random, w: World, style: str, lang: str, _=None) -> dict:
    fruits, vegs = rng.sample(FRUITS, rng.randint(1, 3)), rng.sample(VEGETABLES, rng.randint(1, 3))
    items = fruits + vegs
    rng.shuffle(items)
    i = 1 if lang == "zh" else 0
    sep = "、" if lang == "zh" else ", "
    f_names, v_names = split_foods(items, fruits, i)
    if lang == "zh":
        body = f"水果：{sep.join(f_names)}\n蔬菜：{sep.join(v_names)}"
        outs = {"terse": body, "sentence": f"分类结果如下：\n{body}",
                "verbose": f"好的，我们来把这些食物分一分类。水果通常是甜的，蔬菜常用来做菜。\n{body}\n希望这个分类对你有帮助。"}
        instr = "把下面的食物分成水果和蔬菜。"
    else:
        body = f"Fruits: {sep.join(f_names)}\nVegetables: {sep.join(v_names)}"
        outs = {"terse": body, "sentence": f"Here are the two groups:\n{body}",
                "verbose": f"Sure! Let us sort these foods into two groups. Fruits are usually sweet, and vegetables "
                           f"are often cooked.\n{body}\nI hope this grouping helps."}
        instr = "Cluster the following items into fruits and vegetables."
    answer = {"fruits": sorted(f_names), "vegetables": sorted(v_names)}
    return _record("cluster", lang, instr, sep.join(x[i] for x in items), answer, outs, style)


def make_extract(rng: random.Random, w: World, style: str, lang: str, country=None) -> dict:
    people = rng.sample(PEOPLE, rng.randint(1, 3))
    c = country or rng.choice(w.countries)
    i = 1 if lang == "zh" else 0
    names = [p[i] for p in people]
    if lang == "zh":
        text = f"{'和'.join(names)}上周去了{c.capital_zh}，在那里住了三天。"
        listed = "、".join(names)
        outs = {"terse": listed, "sentence": f"这段话中提到的人是{listed}。",
                "verbose": f"我仔细读了这段话，找到了所有的人名。这段话中提到的人是{listed}。希望对你有帮助。"}
        instr = "找出下面这段话中提到的人名。"
    else:
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        text = f"Last week {joined} visited {c.capital} and stayed there for three days."
        listed = ", ".join(names)
        outs = {"terse": listed, "sentence": f"The people mentioned are {listed}.",
                "verbose": f"I read the text carefully and looked for every name. The people mentioned are {listed}. "
                           f"I hope this helps."}
        instr = "Extract the names of the people mentioned in the following text."
    return _record("extract", lang, instr, text, sorted(names), outs, style, c.name, False)


def make_nl2sql(rng: random.Random, w: World, style: str, lang: str, country=None) -> dict:
    c = country or rng.choice(w.countries)
    n = rng.choice(POPULATION_THRESHOLDS)
    cont = c.continent
    question, sql, names_it = rng.choice([
        (f"List the countries in {cont}.", f"SELECT name FROM countries WHERE continent = '{cont}';", False),
        (f"How many countries are in {cont}?", f"SELECT COUNT(*) FROM countries WHERE continent = '{cont}';", False),
        (f"Which country has the capital {c.capital}?", f"SELECT name FROM countries WHERE capital = '{c.capital}';",
         True),
        (f"What is the population of {c.name}?", f"SELECT population FROM countries WHERE name = '{c.name}';", True),
        (f"List the countries with more than {n} million people.",
         f"SELECT name FROM countries WHERE population > {n};", False),
    ])
    outs = {"terse": sql, "sentence": f"Here is the query:\n{sql}",
            "verbose": f"Sure! To answer this question we read the countries table and filter it.\n{sql}\n"
                       f"This query returns exactly the rows you asked for."}
    instr = f"Write an SQL query that answers the question. The table is {SQL_SCHEMA}."
    # held out only when the question names the country (a continent or a population threshold names none)
    return _record("nl2sql", lang, instr, question, sql, outs, style, c.name, c.heldout and names_it)


MAKERS = {"capital": make_capital, "arithmetic": make_arithmetic, "sentiment": make_sentiment,
          "cluster": make_cluster, "extract": make_extract, "nl2sql": make_nl2sql}
LANGS = {"capital": ("en", "zh"), "arithmetic": ("en", "zh"), "sentiment": ("en", "zh"),
         "cluster": ("en", "zh"), "extract": ("en", "zh"), "nl2sql": ("en",)}


def _arithmetic_split(w: World) -> tuple[list, list]:
    """All (a, b) pairs of the corpus, split 75/25: SFT drills one part, evaluation asks the other."""
    pairs = [(a, b) for a in range(w.max_operand + 1) for b in range(w.max_operand + 1)]
    random.Random(w.seed + 7).shuffle(pairs)
    k = int(0.75 * len(pairs))
    return pairs[:k], pairs[k:]


def _subject(rng: random.Random, w: World, task: str, split: str):
    """The entity a record is about: SFT only ever sees the training split of countries."""
    if task in ("capital", "nl2sql", "extract"):
        pool = w.train_countries() if split == "sft" else list(w.countries)
        return rng.choice(pool)
    if task == "arithmetic":
        train, test = _arithmetic_split(w)
        return rng.choice(train if split == "sft" else test)
    return None


def sft_records(w: World, n: int, seed: int = 0, styles=STYLES, tasks=TASKS) -> list[dict]:
    """`n` Alpaca records for SFT, tasks and languages balanced, styles mixed; no held-out entity."""
    rng = random.Random(w.seed * 7919 + seed)
    out = []
    for k in range(n):
        task = tasks[k % len(tasks)]
        lang = rng.choice(LANGS[task])
        style = rng.choices(styles, [STYLE_WEIGHTS.get(s, 1.0) for s in styles])[0]
        out.append(MAKERS[task](rng, w, style, lang, _subject(rng, w, task, "sft")))
    assert not any(r["heldout"] for r in out)
    return out


def eval_records(w: World, n_per_task: int = 24, seed: int = 12345) -> list[dict]:
    """Evaluation prompts: every task in every language, plus a capital question for each held-out country."""
    rng = random.Random(w.seed * 104729 + seed)
    out = []
    for task in TASKS:
        for k in range(n_per_task):
            lang = LANGS[task][k % len(LANGS[task])]
            out.append(MAKERS[task](rng, w, "terse", lang, _subject(rng, w, task, "eval")))
    for c in w.heldout_countries():
        for lang in ("en", "zh"):
            out.append(make_capital(rng, w, "terse", lang, c))
    return out


def validation_records(w: World, n_per_task: int = 48, n_eval_per_task: int = 24, seed: int = 54321) -> list[dict]:
    """Validation prompts, for choosing a setting (PPO's β) without looking at the evaluation prompts: drawn like
    `eval_records`' task prompts, `n_per_task` per task in the same languages, none with a `seen_keys` of an
    evaluation prompt (of `eval_records(w, n_eval_per_task)`) and no (instruction, input) twice. Every held-out
    country's capital is an evaluation question, so the capital questions here are about training-split countries
    only; and the world's question spaces are small, so many of these prompts were seen in training, and on `tiny`
    the 48 sums cover 18 operand pairs in different wordings and languages."""
    taken = set().union(*map(seen_keys, eval_records(w, n_eval_per_task)))
    rng = random.Random(w.seed * 104729 + seed)
    out, drawn = [], set()
    for task in TASKS:
        for k in range(n_per_task):
            lang = LANGS[task][k % len(LANGS[task])]
            for _ in range(2_000):
                rec = MAKERS[task](rng, w, "terse", lang, _subject(rng, w, task, "eval"))
                if (rec["instruction"], rec["input"]) not in drawn and not seen_keys(rec) & taken:
                    break
            else:
                raise LabError(f"the world has too few {task} prompts in {lang} apart from the evaluation prompts "
                               f"for {n_per_task} validation prompts per task",
                               fix="lower --n_validation_per_task (or --n_per_task); a larger world is "
                                   "WorldConfig's n_countries and max_operand in lab_utils/config.py")
            drawn.add((rec["instruction"], rec["input"]))
            out.append(rec)
    return out


def seen_keys(rec: dict) -> set[tuple]:
    """What makes an evaluation prompt one a training stage saw: its (instruction, input); for a sum the two
    operands in either order and either language ("What is 5 + 3?" asks what "3加5等于多少？" drilled); for a capital
    question the country, in any wording or language ("What is the capital of France?" asks what "法国的首都是哪里？"
    drilled)."""
    keys = {(rec["instruction"], rec.get("input", ""))}
    if rec.get("task") == "arithmetic":
        keys.add(("sum", *sorted(rec["answer"][:2])))
    if rec.get("task") == "capital" and rec.get("entity"):
        keys.add(("capital", rec["entity"]))
    return keys


_TYPED_SUM = re.compile(r"(\d+)\s*(?:\+|plus|added to|and|加上?|和)\s*(\d+)", re.I)  # two numbers joined as a sum
# A word that asks for a sum anywhere in the text ("add 9 to 0", "9 more than 0", "0与9相加", "0和9的和"): with one,
# every two numbers the text names count as a sum it asks, whatever stands between them.
_ADDITION = re.compile(r"\+|\bplus\b|\badd|\bsum|\btotal|more than|加|的和|之和|总和|多", re.I)
_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty").split()
_ENGLISH_NUMBER = re.compile(rf"\b(?:{'|'.join(_NUMBER_WORDS)})\b", re.I)
_CHINESE_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
_CHINESE_NUMBER = re.compile(r"[零〇一二两三四五六七八九]?十[一二三四五六七八九]?|[零〇一二两三四五六七八九]")
_TYPED_CAPITAL = re.compile(r"capital|首都", re.I)


def _chinese_number(s: str) -> int:
    """0-99 written in Chinese numerals: 七, 十, 十二, 二十, 二十三."""
    if "十" not in s:
        return _CHINESE_DIGITS[s]
    tens, _, ones = s.partition("十")
    return 10 * (_CHINESE_DIGITS[tens] if tens else 1) + (_CHINESE_DIGITS[ones] if ones else 0)


def _numbers(text: str) -> list[int]:
    """Every number a typed text names: in digits, in English words up to twenty, and, in a text without digits,
    in Chinese numerals up to 99 (一 also opens words such as 一下: a spare number only widens what is asked)."""
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    numbers += [_NUMBER_WORDS.index(m.casefold()) for m in _ENGLISH_NUMBER.findall(text)]
    return numbers or [_chinese_number(m) for m in _CHINESE_NUMBER.findall(text)]


def typed_keys(w: World, text: str) -> set[tuple]:
    """`seen_keys` of a question a person typed, which has no record behind it: the text itself, every sum of two
    numbers it asks ("what's 3+5", "add 5 to 3", "5 more than 3", "three plus five", "3加5", "三与五相加", "３加上５";
    with a word that asks for a sum, every two numbers it names), and, when it asks about a capital, every country of
    the world it names, in English or Chinese. Met against the evaluation prompts' `seen_keys`, it tells whether the
    question asks what one of them asks, in any wording."""
    keys: set[tuple] = {(text, "")}
    folded_width = unicodedata.normalize("NFKC", text)  # full-width digits and ＋, as Chinese input methods type them
    keys |= {("sum", *sorted((int(a), int(b)))) for a, b in _TYPED_SUM.findall(folded_width)}
    if _ADDITION.search(folded_width):
        numbers = _numbers(folded_width)
        keys |= {("sum", *sorted((a, b))) for i, a in enumerate(numbers) for b in numbers[i + 1:]}
    if _TYPED_CAPITAL.search(text):
        folded = text.casefold()
        keys |= {("capital", c.name) for c in w.countries
                 if re.search(rf"(?<!\w){re.escape(c.name.casefold())}(?!\w)", folded) or c.name_zh in text}
    return keys


ARENA_SEED = 3  # SFT's records use seed 0, the reward stage's prompts 1, PPO's prompts 2


def arena_prompts(w: World, exclude: set[tuple] = frozenset(), n: int = 200) -> list[str]:
    """The arena's "Random prompt" pool: instructions of tasks without an `input` field (a person types one text),
    on training-split entities, drawn with a seed no training stage uses, none of them with a `seen_keys` in
    `exclude` (the evaluation prompts'; a sum with its operands swapped counts). Votes on the arena's prompts train the
    next reward model, so they must not be evaluation prompts."""
    drawn = sft_records(w, n, seed=ARENA_SEED, tasks=("capital", "arithmetic"))
    return list(dict.fromkeys(r["instruction"] for r in drawn if not r["input"] and not seen_keys(r) & exclude))
