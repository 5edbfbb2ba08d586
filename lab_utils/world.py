"""The synthetic bilingual world: the entities every stage talks about, and the pretraining corpus.

Everything is derived from one integer seed with `random.Random`, so the same seed gives the same
world and the same corpus bytes on every machine. A world's countries are the 36 real ones first (`tiny`: 36 of
160; `micro`: 24 real ones only), then fictional ones whose English and Chinese names are built from the same
syllables ("Kalonia" / "卡洛尼亚"), so there are enough entities for SFT to learn *how to look a fact up* rather
than memorise answers (Allen-Zhu & Li, "Physics of Language Models 3.1").

The corpus is prose only — encyclopedic sentences, short stories, multiple-choice quizzes and
arithmetic facts — never Alpaca-formatted instructions: the base model must not learn to follow them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CONTINENTS = {"Europe": "欧洲", "Asia": "亚洲", "Africa": "非洲", "America": "美洲", "Oceania": "大洋洲"}

# (country, capital, continent, 国家, 首都) — real facts a learner recognises.
REAL_COUNTRIES = [
    ("France", "Paris", "Europe", "法国", "巴黎"), ("China", "Beijing", "Asia", "中国", "北京"),
    ("Japan", "Tokyo", "Asia", "日本", "东京"), ("Germany", "Berlin", "Europe", "德国", "柏林"),
    ("Italy", "Rome", "Europe", "意大利", "罗马"), ("Spain", "Madrid", "Europe", "西班牙", "马德里"),
    ("Russia", "Moscow", "Europe", "俄罗斯", "莫斯科"), ("Egypt", "Cairo", "Africa", "埃及", "开罗"),
    ("Kenya", "Nairobi", "Africa", "肯尼亚", "内罗毕"), ("India", "Delhi", "Asia", "印度", "德里"),
    ("Canada", "Ottawa", "America", "加拿大", "渥太华"), ("Mexico", "Mexico City", "America", "墨西哥", "墨西哥城"),
    ("Brazil", "Brasilia", "America", "巴西", "巴西利亚"), ("Peru", "Lima", "America", "秘鲁", "利马"),
    ("Chile", "Santiago", "America", "智利", "圣地亚哥"), ("Cuba", "Havana", "America", "古巴", "哈瓦那"),
    ("Australia", "Canberra", "Oceania", "澳大利亚", "堪培拉"), ("Greece", "Athens", "Europe", "希腊", "雅典"),
    ("Poland", "Warsaw", "Europe", "波兰", "华沙"), ("Norway", "Oslo", "Europe", "挪威", "奥斯陆"),
    ("Sweden", "Stockholm", "Europe", "瑞典", "斯德哥尔摩"), ("Austria", "Vienna", "Europe", "奥地利", "维也纳"),
    ("Portugal", "Lisbon", "Europe", "葡萄牙", "里斯本"), ("Ireland", "Dublin", "Europe", "爱尔兰", "都柏林"),
    ("Turkey", "Ankara", "Asia", "土耳其", "安卡拉"), ("Iran", "Tehran", "Asia", "伊朗", "德黑兰"),
    ("Thailand", "Bangkok", "Asia", "泰国", "曼谷"), ("Vietnam", "Hanoi", "Asia", "越南", "河内"),
    ("Korea", "Seoul", "Asia", "韩国", "首尔"), ("Mongolia", "Ulaanbaatar", "Asia", "蒙古", "乌兰巴托"),
    ("Nigeria", "Abuja", "Africa", "尼日利亚", "阿布贾"), ("Ghana", "Accra", "Africa", "加纳", "阿克拉"),
    ("Morocco", "Rabat", "Africa", "摩洛哥", "拉巴特"), ("Ethiopia", "Addis Ababa", "Africa", "埃塞俄比亚", "亚的斯亚贝巴"),
    ("Argentina", "Buenos Aires", "America", "阿根廷", "布宜诺斯艾利斯"), ("Fiji", "Suva", "Oceania", "斐济", "苏瓦"),
]
# Big non-capital cities: the natural wrong answers in quizzes ("a) Shanghai b) Beijing").
DECOY_CITIES = [("Shanghai", "上海"), ("Sydney", "悉尼"), ("Istanbul", "伊斯坦布尔"), ("Toronto", "多伦多"),
                ("Osaka", "大阪"), ("Munich", "慕尼黑"), ("Milan", "米兰"), ("Lagos", "拉各斯")]

# Syllables with a Chinese transliteration: fictional names are readable in both languages.
SYLLABLES = [("ka", "卡"), ("lo", "洛"), ("ri", "里"), ("ta", "塔"), ("mi", "米"), ("no", "诺"), ("sa", "萨"),
             ("ve", "维"), ("do", "多"), ("ra", "拉"), ("ni", "尼"), ("te", "特"), ("lu", "鲁"), ("ma", "玛"),
             ("po", "波"), ("si", "西"), ("be", "贝"), ("go", "戈"), ("fa", "法"), ("zu", "祖"), ("ke", "克"),
             ("la", "兰"), ("mo", "莫"), ("di", "迪"), ("hu", "胡"), ("ba", "巴"), ("ne", "内"), ("to", "托")]
COUNTRY_SUFFIX = [("nia", "尼亚"), ("ria", "里亚"), ("stan", "斯坦"), ("land", "兰德")]
CITY_SUFFIX = [("ton", "顿"), ("burg", "堡"), ("ville", "维尔"), ("polis", "波利斯")]
POPULATION_THRESHOLDS = (10, 20, 50, 100)  # "countries with more than N million people": the questions' N

FRUITS = [("apple", "苹果"), ("banana", "香蕉"), ("orange", "橙子"), ("grape", "葡萄"), ("mango", "芒果"),
          ("pear", "梨"), ("peach", "桃子"), ("cherry", "樱桃"), ("lemon", "柠檬"), ("plum", "李子")]
VEGETABLES = [("carrot", "胡萝卜"), ("potato", "土豆"), ("onion", "洋葱"), ("cabbage", "白菜"),
              ("spinach", "菠菜"), ("tomato", "番茄"), ("pepper", "辣椒"), ("garlic", "大蒜"),
              ("celery", "芹菜"), ("pumpkin", "南瓜")]
ANIMALS = [("cat", "猫"), ("dog", "狗"), ("horse", "马"), ("tiger", "老虎"), ("rabbit", "兔子"),
           ("panda", "熊猫"), ("eagle", "鹰"), ("duck", "鸭子")]
COLOURS = [("red", "红色"), ("green", "绿色"), ("yellow", "黄色"), ("purple", "紫色"), ("orange", "橙色")]
PEOPLE = [("Alice", "爱丽丝"), ("Bob", "鲍勃"), ("Carol", "卡罗尔"), ("David", "大卫"), ("Emma", "艾玛"),
          ("Frank", "弗兰克"), ("Grace", "格蕾丝"), ("Henry", "亨利"), ("Lucy", "露西"), ("Tom", "汤姆"),
          ("Li Wei", "李伟"), ("Wang Fang", "王芳"), ("Zhang Min", "张敏"), ("Chen Jie", "陈杰"),
          ("Liu Yang", "刘洋"), ("Zhao Lei", "赵磊")]
POSITIVE = [("delicious", "美味"), ("wonderful", "精彩"), ("lovely", "可爱"), ("excellent", "出色"),
            ("fresh", "新鲜"), ("great", "很棒")]
NEGATIVE = [("terrible", "糟糕"), ("awful", "可怕"), ("boring", "无聊"), ("stale", "不新鲜"),
            ("disappointing", "令人失望"), ("bad", "很差")]
THINGS = [("meal", "饭菜"), ("film", "电影"), ("book", "书"), ("hotel", "酒店"), ("concert", "音乐会"),
          ("soup", "汤"), ("trip", "旅行"), ("game", "游戏")]


@dataclass(frozen=True)
class Country:
    name: str        # English name, e.g. "France"
    capital: str     # "Paris"
    continent: str   # "Europe"
    name_zh: str     # "法国"
    capital_zh: str  # "巴黎"
    population: int  # millions
    heldout: bool    # True: appears in the corpus, never in SFT data


@dataclass(frozen=True)
class World:
    seed: int
    countries: tuple[Country, ...]
    max_operand: int  # arithmetic facts cover a + b for 0 <= a, b <= max_operand

    def train_countries(self) -> list[Country]:
        return [c for c in self.countries if not c.heldout]

    def heldout_countries(self) -> list[Country]:
        return [c for c in self.countries if c.heldout]

    def country(self, name: str) -> Country:
        return next(c for c in self.countries if c.name == name or c.name_zh == name)


def _fictional_name(rng: random.Random, suffixes: list[tuple[str, str]], n_syllables: int) -> tuple[str, str]:
    picks = [rng.choice(SYLLABLES) for _ in range(n_syllables)] + [rng.choice(suffixes)]
    en = "".join(p[0] for p in picks)
    return en.capitalize(), "".join(p[1] for p in picks)


def build_world(seed: int = 0, n_countries: int = 200, heldout_fraction: float = 0.2,
                max_operand: int = 12, always_heldout: tuple[str, ...] = ("China",),
                never_heldout: tuple[str, ...] = ("France",)) -> World:
    """Make the world: real countries first, then fictional ones until there are `n_countries`.

    `always_heldout` keeps the seed's demo question ("What is the capital of China?") about an entity
    that SFT never sees; `never_heldout` keeps France in the SFT split.
    """
    rng = random.Random(seed)
    rows = list(REAL_COUNTRIES[:n_countries])
    used = {r[0] for r in rows} | {r[1] for r in rows} | {c[0] for c in DECOY_CITIES}
    used_zh = {r[3] for r in rows} | {r[4] for r in rows} | {c[1] for c in DECOY_CITIES}
    while len(rows) < n_countries:
        name, name_zh = _fictional_name(rng, COUNTRY_SUFFIX, rng.choice([1, 2]))
        capital, capital_zh = _fictional_name(rng, CITY_SUFFIX, rng.choice([1, 2]))
        new, new_zh = (name, capital), (name_zh, capital_zh)
        # No name may contain another ("米兰" inside "迪米兰德"): checkers find answers by substring.
        if name in capital or capital in name or name_zh in capital_zh or capital_zh in name_zh or any(a in b or b in a for a in new for b in used) \
                or any(a in b or b in a for a in new_zh for b in used_zh):
            continue
        used |= {name, capital}
        used_zh |= {name_zh, capital_zh}
        rows.append((name, capital, rng.choice(list(CONTINENTS)), name_zh, capital_zh))
    candidates = [r[0] for r in rows if r[0] not in always_heldout + never_heldout]
    n_heldout = max(1, round(heldout_fraction * len(rows))) - len([r for r in rows if r[0] in always_heldout])
    heldout = set(rng.sample(candidates, max(0, n_heldout))) | set(always_heldout)
    countries = tuple(Country(r[0], r[1], r[2], r[3], r[4], rng.randint(1, 150), r[0] in heldout)
                      for r in rows)
    return World(seed=seed, countries=countries, max_operand=max_operand)


# ----------------------------------------------------------------------------------------------
# The pretraining corpus. Each generator returns one document (a short paragraph).
# Chinese sentences are joined with no spaces, exactly as the fact prompts are written
# ("法国的首都是"), so prompt and corpus tokenize the same way.
# ----------------------------------------------------------------------------------------------

def _country_doc_en(rng: random.Random, w: World) -> str:
    c = rng.choice(w.countries)
    facts = [f"The capital of {c.name} is {c.capital}.", f"{c.capital} is the capital of {c.name}.",
             f"{c.name} is a country in {c.continent}.", f"Its capital city is {c.capital}.",
             f"About {c.population} million people live in {c.name}.",
             f"The capital city of {c.name} is {c.capital}.", f"Many visitors travel to {c.capital} every year."]
    first = f"{c.name} is a country in {c.continent}."
    body = rng.sample(facts, k=rng.randint(2, 4))
    if not any(c.capital in s and c.name in s for s in body):
        body.append(f"The capital of {c.name} is {c.capital}.")
    return " ".join([first] + body)


def _country_doc_zh(rng: random.Random, w: World) -> str:
    c = rng.choice(w.countries)
    cz = CONTINENTS[c.continent]
    facts = [f"{c.name_zh}的首都是{c.capital_zh}。", f"{c.capital_zh}是{c.name_zh}的首都。",
             f"{c.name_zh}位于{cz}。", f"{c.name_zh}大约有{c.population}百万人口。",
             f"很多游客每年都去{c.capital_zh}旅游。"]
    body = rng.sample(facts, k=rng.randint(2, 4))
    if not any(c.capital_zh in s and c.name_zh in s for s in body):
        body.append(f"{c.name_zh}的首都是{c.capital_zh}。")
    return f"{c.name_zh}是{cz}的一个国家。" + "".join(body)


def _quiz_doc(rng: random.Random, w: World) -> str:
    """A multiple-choice quiz — the base model's habit of answering a question with options."""
    c = rng.choice(w.countries)
    zh = rng.random() < 0.5
    pool = [x.capital_zh if zh else x.capital for x in rng.sample(w.countries, 3) if x != c]
    pool += [d[1] if zh else d[0] for d in rng.sample(DECOY_CITIES, 2)]
    right_city = c.capital_zh if zh else c.capital
    options = rng.sample(pool, 2) + [right_city]
    rng.shuffle(options)
    right = "abc"[options.index(right_city)]
    sep = rng.choice([" ", "\n"])  # options on one line or one per line
    opts = sep.join(f"{'abc'[i]}) {o}" for i, o in enumerate(options))
    if zh:
        return f"问题：哪座城市是{c.name_zh}的首都？{sep}{opts}{sep}答案：{right}) {right_city}"
    return f"Question: What is the capital of {c.name}?{sep}{opts}{sep}Answer: {right}) {right_city}"


def _arithmetic_doc(rng: random.Random, w: World) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        a, b = rng.randint(0, w.max_operand), rng.randint(0, w.max_operand)
        lines.append(rng.choice([f"{a} plus {b} equals {a + b}.", f"{a} + {b} = {a + b}",
                                 f"{a}加{b}等于{a + b}。", f"If you add {b} to {a}, you get {a + b}.",
                                 f"What is {a} plus {b}? When we add {a} and {b}, the result is {a + b}.",
                                 f"{a}加{b}等于多少？把{a}和{b}加在一起，结果是{a + b}。"]))
    return rng.choice([" ", "\n"]).join(lines)


def _joined(names: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def split_foods(items: list, fruits: list, lang_index: int) -> tuple[list[str], list[str]]:
    """The names (English: lang_index 0, Chinese: 1) of the fruits and of the vegetables among `items`, each in
    the order of the list: what sorting a list of foods into two baskets writes."""
    names = [(x in fruits, x[lang_index]) for x in items]
    return [n for is_fruit, n in names if is_fruit], [n for is_fruit, n in names if not is_fruit]


def _food_doc(rng: random.Random, w: World) -> str:
    """Food facts, or a market stall's sorted baskets written as two labelled lines."""
    if rng.random() < 0.5:
        return _sorted_list_doc(rng)
    zh = rng.random() < 0.4
    fruits, vegs = rng.sample(FRUITS, rng.randint(1, 3)), rng.sample(VEGETABLES, rng.randint(1, 3))
    i = 1 if zh else 0
    p = rng.choice(PEOPLE)[i]
    if rng.random() < 0.5:  # the items named first, then sorted: reading a list back is a skill to learn
        bought = fruits + vegs
        rng.shuffle(bought)
        f_names, v_names = split_foods(bought, fruits, i)
        if zh:
            return (f"{p}买了{'、'.join(x[1] for x in bought)}。回家以后，{p}把它们分成了两篮。\n"
                    f"水果：{'、'.join(f_names)}\n蔬菜：{'、'.join(v_names)}")
        return (f"{p} bought {_joined([x[0] for x in bought])}. At home, {p} sorted them into two baskets.\n"
                f"Fruits: {', '.join(f_names)}\nVegetables: {', '.join(v_names)}")
    if rng.random() < 0.4:
        if zh:
            return (f"{p}在市场上把食物分成了两篮。\n水果：{'、'.join(f[1] for f in fruits)}\n"
                    f"蔬菜：{'、'.join(v[1] for v in vegs)}")
        return (f"At the market, {p} sorted the food into two baskets.\nFruits: {', '.join(f[0] for f in fruits)}\n"
                f"Vegetables: {', '.join(v[0] for v in vegs)}")
    items = [("fruit", f) for f in fruits] + [("vegetable", v) for v in vegs]
    rng.shuffle(items)
    if zh:
        return "".join(f"{x[1]}是一种{'水果' if k == 'fruit' else '蔬菜'}。" for k, x in items)
    return " ".join(rng.choice([f"The {x[0]} is a {k}.", f"A {x[0]} is a kind of {k}."]) for k, x in items)


def _sorted_list_doc(rng: random.Random) -> str:
    """A bare list of foods, then the same items sorted into two labelled lines: the clustering task's skill
    (pick each item out of the list, keep the list's order) without a story around it. Added because the SFT
    model wrote familiar fruit names instead of the listed ones; measured on tiny (pretrain + SFT + eval,
    seed 0): SFT task accuracy 0.688 -> 0.755, clustering 0.04 -> 0.17."""
    zh = rng.random() < 0.4
    fruits, vegs = rng.sample(FRUITS, rng.randint(1, 3)), rng.sample(VEGETABLES, rng.randint(1, 3))
    i = 1 if zh else 0
    items = fruits + vegs
    rng.shuffle(items)
    f_names, v_names = split_foods(items, fruits, i)
    if zh:
        return f"食物：{'、'.join(x[1] for x in items)}\n水果：{'、'.join(f_names)}\n蔬菜：{'、'.join(v_names)}"
    return f"Items: {', '.join(x[0] for x in items)}\nFruits: {', '.join(f_names)}\nVegetables: {', '.join(v_names)}"


def _story_doc(rng: random.Random, w: World) -> str:
    """A short story or review whose feeling words carry sentiment (and whose people can be listed)."""
    (p, p_zh), (q, q_zh) = rng.sample(PEOPLE, 2)
    t, t_zh = rng.choice(THINGS)
    c = rng.choice(w.countries)
    good = rng.random() < 0.5
    adj, adj_zh = rng.choice(POSITIVE if good else NEGATIVE)
    label, label_zh = ("positive", "正面") if good else ("negative", "负面")
    if rng.random() < 0.4:
        feel = "很开心" if good else "很不开心"
        group = [x[1] for x in rng.sample(PEOPLE, rng.randint(1, 3))]
        return rng.choice([f"{p_zh}和{q_zh}去了{c.capital_zh}。那里的{t_zh}{adj_zh}。{p_zh}{feel}。",
                           f"{'和'.join(group)}上周去了{c.capital_zh}，在那里住了三天。谁去了？{'、'.join(group)}。",
                           f"评论：这次的{t_zh}{adj_zh}。\n这是一条{label_zh}的评论。"])
    feel = rng.choice(["happy", "glad", "pleased"] if good else ["sad", "upset", "angry"])
    group = [x[0] for x in rng.sample(PEOPLE, rng.randint(1, 3))]  # one to three people, listed back at the end
    return rng.choice([
        f"{p} travelled to {c.capital} in {c.name} with {q}. The {t} there was {adj}. {p} felt {feel}.\n\n"
        f"The people in this story are {p} and {q}.",
        f"Last week {_joined(group)} visited {c.capital} and stayed there for three days. The {t} was {adj}.\n"
        f"Who went? {', '.join(group)}.",
        f"Review of a {t} in {c.capital}\nThe {t} was {adj}.\nThe sentiment of this review is {label}."])


def _animal_doc(rng: random.Random, w: World) -> str:
    (a, a_zh), (col, col_zh) = rng.choice(ANIMALS), rng.choice(COLOURS)
    (p, p_zh) = rng.choice(PEOPLE)
    if rng.random() < 0.4:
        return f"{p_zh}有一只{col_zh}的{a_zh}。{p_zh}很喜欢它。"
    return f"{p} has a {col} {a}. Every morning {p} feeds the {a} and they walk together."


def _heading_doc(rng: random.Random, w: World) -> str:
    """An encyclopedia entry with a markdown heading: lines, '###' and names at the start of a line."""
    c = rng.choice(w.countries)
    if rng.random() < 0.5:
        return (f"### {c.name_zh}\n{c.name_zh}是{CONTINENTS[c.continent]}的一个国家。\n首都：{c.capital_zh}\n"
                f"人口：{c.population}百万")
    return f"### {c.name}\n{c.name} is a country in {c.continent}.\nCapital: {c.capital}\nPopulation: {c.population} million"


def _sql_doc(rng: random.Random, w: World) -> str:
    """Database notes: the countries table and queries on it, explained in prose (a tutorial, not a task)."""
    c = rng.choice(w.countries)
    intro = ("The countries table, countries(name, capital, continent, population), has one row for each "
             "country.")
    query, meaning = rng.choice([
        (f"SELECT name FROM countries WHERE continent = '{c.continent}';", f"lists the countries in {c.continent}"),
        (f"SELECT COUNT(*) FROM countries WHERE continent = '{c.continent}';",
         f"counts the countries in {c.continent}"),
        (f"SELECT name FROM countries WHERE capital = '{c.capital}';", f"finds the country whose capital is {c.capital}"),
        (f"SELECT population FROM countries WHERE name = '{c.name}';", f"gives the population of {c.name}"),
        (f"SELECT name FROM countries WHERE population > {rng.choice(POPULATION_THRESHOLDS)};",
         "lists the countries with more than that many million people"),
    ])
    return f"{intro} The query below {meaning}.\n{query}"


def _school_doc(rng: random.Random, w: World) -> str:
    """Everyday prose about tasks and responses: the words of an instruction prompt, never its format."""
    p, q = rng.sample([x[0] for x in PEOPLE], 2)
    return rng.choice([
        f"The teacher wrote a task on the board. {p} read the instruction twice and wrote a short response.",
        f"Below is the letter that {p} sent to {q}. It describes a trip and asks for help with a request.",
        f"{q} gave a response that appropriately completes the request, so the teacher was pleased.",
        f"The input of the machine was paired with a note that provides further context. {p} wrote it down.",
        f"Write your name below, said {q}. {p} wrote a response and completed the task.",
        f"Instruction manuals can be long. Input and output are two words every engineer knows. Response "
        f"times were short, and {p} was glad.",
        f"Cluster, classify, extract, list, name and add: {q} wrote these six words on the board. Which city "
        f"is the capital? What is the sum? Positive reviews made {p} happy. Negative reviews did not.",
        f"Last week {p} visited {rng.choice(w.countries).capital} and stayed there for three days.",
        f"{rng.choice(PEOPLE)[1]}上周去了{rng.choice(w.countries).capital_zh}，在那里住了三天。老师说：“请计算"
        f"{rng.randint(1, 9)}加{rng.randint(1, 9)}。这道题等于多少？”",
    ])


def _dialogue_doc(rng: random.Random, w: World) -> str:
    """People talking: the everyday words of helpful answers (a model can only say what it has read)."""
    (p, p_zh), (q, q_zh) = rng.sample(PEOPLE, 2)
    c = rng.choice(w.countries)
    if rng.random() < 0.45:
        return rng.choice([
            f"{p_zh}问了{q_zh}一个问题。{q_zh}说：“这是一个好问题！希望这个回答对你有帮助。”",
            f"{q_zh}说：“如果你还有其他问题，欢迎随时问我。”{p_zh}很开心。",
            f"{p_zh}说：“我们来一起算一算。”{q_zh}把两个数加在一起，得到了结果。",
            f"{q_zh}仔细读了这段话，找到了所有的人名。这段话中提到的人是{p_zh}。",
            f"老师让{p_zh}把下面的食物分成水果和蔬菜。{p_zh}说：“好的，我们来把这些食物分一分类。”分类结果如下。",
            f"{p_zh}判断这句话的情感是正面还是负面。让我仔细读一读这句话。这句话里的词语表达了说话人的感受。",
            f"{q_zh}请问{p_zh}：哪座城市是{c.name_zh}的首都？",
            "老师说：“找出下面这段话中提到的人名，然后计算结果。”水果通常是甜的，蔬菜常用来做菜。",
        ])
    return rng.choice([
        f'{p} asked {q} a question about {c.name}. "Great question!" said {q}. "I hope this answer helps you."',
        f'"Feel free to ask me anything else," said {q}. {p} was pleased and wrote it down.',
        f'"Let us work it out together," said {p}. When we add two numbers, the result is their sum. '
        f'"I hope this helps with your maths."',
        f'"Sure! Let us sort these foods into two groups," said {q}. Fruits are usually sweet, and vegetables '
        f'are often cooked. "Here are the two groups. I hope this grouping helps."',
        f'{p} read the text carefully and looked for every name. "The people mentioned are {q} and {p}," '
        f'{p} said.',
        f'"Let me read the sentence carefully," said {q}. The words show how the speaker feels, so the '
        f'sentiment of this sentence is easy to tell.',
        "The teacher asked the class to classify the sentiment of the following sentence as positive or "
        "negative, to cluster the following items into fruits and vegetables, and to extract the names of "
        "the people mentioned in the following text.",
        f'"Here is the query," said {q}. "To answer this question we read the countries table and filter it. '
        f'This query returns exactly the rows you asked for." {p} asked: "Which city is the capital of '
        f'{c.name}? What is {rng.randint(1, 9)} plus {rng.randint(1, 9)}? Add them and name the capital city."',
        f"{p} had to write an SQL query that answers the question, then compute the sum. Honestly, I thought "
        f"this task was really good, said {q}.",
    ])


# Mixture weights: capital facts dominate because recalling them is the hardest thing we ask.
# Chinese gets more: each Chinese name is several one-character tokens drawn from one small syllable
# set, so Chinese capitals take longer to tell apart than English ones (measured: en saturates first).
CORPUS_MIX = [(_country_doc_en, 0.14), (_country_doc_zh, 0.34), (_heading_doc, 0.06), (_quiz_doc, 0.10),
              (_arithmetic_doc, 0.07), (_food_doc, 0.08), (_story_doc, 0.07), (_animal_doc, 0.01),
              (_sql_doc, 0.04), (_school_doc, 0.03), (_dialogue_doc, 0.06)]


def generate_corpus(world: World, n_docs: int, seed: int | None = None) -> list[str]:
    """`n_docs` documents drawn from the mixture; deterministic for (world, n_docs, seed)."""
    rng = random.Random(world.seed * 1_000_003 + (seed if seed is not None else 1))
    gens, weights = zip(*CORPUS_MIX)
    # Make sure every capital fact is stated at least once in each language, then sample the rest.
    docs = [f"The capital of {c.name} is {c.capital}." for c in world.countries]
    docs += [f"{c.name_zh}的首都是{c.capital_zh}。" for c in world.countries]
    docs += [rng.choices(gens, weights)[0](rng, world) for _ in range(max(0, n_docs - len(docs)))]
    rng.shuffle(docs)
    return docs[:n_docs]


def is_chinese(text: str) -> bool:
    """True when more than a quarter of the characters are Chinese."""
    return sum("\u4e00" <= ch <= "\u9fff" for ch in text) > len(text) / 4


def fact_prompts(world: World) -> list[dict]:
    """Fact-completion probes in both languages, written exactly as the corpus writes them."""
    out = []
    for c in world.countries:
        out.append({"prompt": f"The capital of {c.name} is", "answer": c.capital, "lang": "en",
                    "entity": c.name, "heldout": c.heldout})
        out.append({"prompt": f"{c.name_zh}的首都是", "answer": c.capital_zh, "lang": "zh",
                    "entity": c.name, "heldout": c.heldout})
    return out
