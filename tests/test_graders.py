"""Every grader on right and wrong answers, in any style and language; answers in another task's shape."""

from __future__ import annotations

import random

import pytest

from lab_utils import graders as G
from lab_utils import tasks as T
from lab_utils.world import build_world


@pytest.fixture(scope="module")
def world():
    return build_world(0)


def capital_record(world, country: str, lang: str) -> dict:
    return T.make_capital(random.Random(0), world, "terse", lang, world.country(country))


# ------------------------------------------------------------------ capital

@pytest.mark.parametrize("response", ["Paris.", "The capital of France is Paris.",
                                      "Great question! France is a country, and its capital city is Paris. "
                                      "I hope this answer helps you."])
def test_capital_accepts_any_style(world, response):
    assert G.check(world, capital_record(world, "France", "en"), response)


@pytest.mark.parametrize("response", ["a) Shanghai b) Beijing c) Paris", "Berlin.", "Paris or Lyon? Berlin!",
                                      "I do not know.", ""])
def test_capital_rejects_quiz_and_wrong_city(world, response):
    assert not G.check(world, capital_record(world, "France", "en"), response)


def test_capital_zh(world):
    rec = capital_record(world, "France", "zh")
    assert rec["answer"] == "巴黎"
    assert G.check(world, rec, "巴黎。")
    assert G.check(world, rec, "法国的首都是巴黎。")
    assert not G.check(world, rec, "北京。")
    assert not G.check(world, rec, "a) 上海 b) 北京 c) 巴黎")


@pytest.mark.parametrize("lang, response", [
    ("en", "The capital of japan is Paris."),                 # another country, in lower case
    ("en", "Paris is not the capital of France."),            # denied after the name
    ("zh", "巴黎不是法国的首都。"),
])
def test_capital_whose_capital_in_any_case_and_denials_after_the_name(world, lang, response):
    assert not G.check(world, capital_record(world, "France", lang), response)


@pytest.mark.parametrize("lang, response", [
    ("en", "The capital of france is Paris."), ("en", "The capital of the country is Paris."),
    ("en", "There is no doubt Paris is the capital."), ("zh", "France的首都是巴黎。")])
def test_capital_asked_country_in_lower_case_or_another_script_is_right(world, lang, response):
    assert G.check(world, capital_record(world, "France", lang), response)


@pytest.mark.parametrize("lang, response", [
    ("en", "Paris is not the largest city in the world, but it is the capital."),  # "not" that denies no capital
    ("en", "Paris is not only the capital of France but also its largest city."),
    ("zh", "法国的首都是巴黎。巴黎不是法国最小的城市。"),
    ("en", "If I'm not mistaken it is Paris."), ("en", "Not sure, but Paris."),      # hedges
    ("en", "The capital of France is Paris, often called the capital of fashion."),  # "capital of" a lower-case word
    ("en", "The capital of modern France is Paris.")])
def test_capital_right_answers_with_a_negation_or_another_capital_of(world, lang, response):
    assert G.check(world, capital_record(world, "France", lang), response)


@pytest.mark.parametrize("lang, response", [
    ("en", "The capital of Spain is Paris."),            # the right city, given as another country's capital
    ("en", "The capital ofSpain is Paris."),             # ... glued to the word before it
    ("en", "Great question! Frankia is a country, and its capital city is Paris."),  # a made-up country
    ("zh", "斐根廷是一个国家，它的首都是巴黎。"),              # the same in Chinese
    ("zh", "西班牙的首都是巴黎。")])
def test_capital_given_as_another_countrys_is_wrong(world, lang, response):
    assert not G.check(world, capital_record(world, "France", lang), response)
    right = {"en": "Great question! France is a country, and its capital city is Paris.",
             "zh": "这是一个好问题！法国是一个国家，它的首都是巴黎。"}[lang]
    assert G.check(world, capital_record(world, "France", lang), right)


@pytest.mark.parametrize("response", ["我认为法国的首都是巴黎。", "据我所知法国的首都是巴黎。", "巴黎是法国的首都。",
                                      "法国是一个国家，所以它的首都是巴黎。"])
def test_a_chinese_frame_may_have_words_before_the_country(world, response):
    """"([\u4e00-\u9fff]+)的首都" captures the run of characters back to the sentence start: "我认为法国" names 法国."""
    assert G.check(world, capital_record(world, "France", "zh"), response)
    assert not G.check(world, capital_record(world, "France", "zh"), response.replace("法国", "西班牙"))
    assert not G.check(world, capital_record(world, "France", "zh"), response.replace("法国", "大法国"))  # made up


def test_a_stuttering_chinese_answer_stays_wrong(world):
    """One of the reward stage's samples on tiny: its second frame, "是法国的首都", is no sentence."""
    assert not G.check(world, capital_record(world, "France", "zh"), "法国的首都是法国的首都是巴黎。")


@pytest.mark.parametrize("lang, response", [("en", "It is not Paris."), ("en", "Not Paris."),
                                            ("en", "The capital of France isn't Paris."), ("zh", "法国的首都不是巴黎。")])
def test_a_capital_named_only_to_be_denied_is_wrong(world, lang, response):
    assert not G.check(world, capital_record(world, "France", lang), response)


def test_a_capital_record_without_its_country_is_graded_by_its_capital(world):
    rec = {"task": "capital", "lang": "en", "answer": "Paris", "instruction": "What is the capital of France?"}
    assert G.check(world, rec, "The capital of France is Paris.")
    assert not G.check(world, rec, "The capital of Spain is Paris.")


def test_capital_name_inside_longer_capital(world):
    # "Mexico" is no capital; "Mexico City" is — and the country name in the answer names no city
    assert G.check(world, capital_record(world, "Mexico", "en"), "The capital of Mexico is Mexico City.")
    assert G.check(world, capital_record(world, "Brazil", "zh"), "巴西的首都是巴西利亚。")


# ------------------------------------------------------------------ arithmetic

def arithmetic_record(world, a: int, b: int, lang: str = "en") -> dict:
    return T.make_arithmetic(random.Random(0), world, "terse", lang, (a, b))


@pytest.mark.parametrize("a, b, response", [(5, 0, "5 + 0 = 5"), (5, 7, "12"), (5, 7, "5 + 7 = 12."),
                                            (5, 7, "When we add 5 and 7, the result is 12.")])
def test_arithmetic_accepts(world, a, b, response):
    assert G.check(world, arithmetic_record(world, a, b), response)


@pytest.mark.parametrize("response", ["13", "5 + 7 = 12, not 13", "I have 3 apples; 5 + 7 = 12", "12 and 4",
                                      "twelve", ""])
def test_arithmetic_rejects(world, response):
    assert not G.check(world, arithmetic_record(world, 5, 7), response)


@pytest.mark.parametrize("a, b, response", [
    (4, 6, "4 + 6 is not 10."), (4, 6, "4加6不等于10。"), (4, 6, "It isn't 10."),  # the sum denied
    (4, 6, "4 - 6 is 10."), (4, 6, "4 times 6 is 10."),               # no "=", and still no addition
])
def test_arithmetic_rejects_a_restated_question_a_denied_sum_and_another_operation(world, a, b, response):
    assert not G.check(world, arithmetic_record(world, a, b), response)


@pytest.mark.parametrize("a, b, response", [(0, 9, "9"), (0, 9, "0 + 9 = 9"), (0, 9, "9 + 0 = 9."),
                                            (0, 0, "0"), (4, 6, "10, since 4 + 6 = 10."), (4, 6, "4 plus 6 is 10.")])
def test_arithmetic_a_sum_beside_its_operands_is_right(world, a, b, response):
    assert G.check(world, arithmetic_record(world, a, b), response)


@pytest.mark.parametrize("response", ["把5和7加起来，等于12。", "5加7，等于12。", "5和7相加，等于12。", "5 + 7, which = 12",
                                      "Not sure, but 12", "I'm not sure but 12."])
def test_arithmetic_a_comma_before_the_equals_sign_or_a_hedge_is_no_error(world, response):
    assert G.check(world, arithmetic_record(world, 5, 7), response)


@pytest.mark.parametrize("response, right", [
    ("8.0", True), ("3 + 5 = 8.0", True), ("3-5: 8", True),         # 8.0 is 8; "3-5" names the operands
    ("-8", False), ("3 + 5 = -8", False), ("−8", False),            # a minus sign is read, not dropped
    ("8.5", False), ("5.8", False), ("3+5=8.5", False),              # decimals are read, not split in two
])
def test_arithmetic_signs_and_decimals(world, response, right):
    assert G.check(world, arithmetic_record(world, 3, 5), response) is right


def test_numbers_keep_sign_and_decimals():
    assert G.numbers("3 + 5 = 8.0, not -8 or 8.5.") == [3, 5, 8, -8, 8.5]
    assert G.numbers("5加3等于负8。") == [5, 3, -8]


@pytest.mark.parametrize("a, b, response, right", [
    (4, 6, "6 + 6 = 10.", False), (10, 1, "11加1等于11。", False), (9, 0, "0 = 9.", False),  # false equations
    (4, 6, "4 + 6 + 6 = 10.", False), (9, 9, "9 + 9 = 18.", True), (9, 9, "9加9等于18。", True),
    (5, 7, "The answer is 12. 5 + 7 = 12.", True), (5, 7, "12. That is 5 + 7 = 12.", True)])
def test_an_equation_must_have_the_operands_on_its_left(world, a, b, response, right):
    assert G.check(world, arithmetic_record(world, a, b), response) is right


@pytest.mark.parametrize("response", ["1 - 1 = 2", "1 * 1 = 2", "1 x 1 = 2.", "1 × 1 = 2", "1 minus 1 = 2",
                                      "1减1等于2。", "1乘1等于2。"])
def test_an_equation_that_does_not_add_is_false(world, response):
    """The numbers alone would pass: the operands on the left and the sum on the right."""
    assert not G.check(world, arithmetic_record(world, 1, 1), response)
    assert G.check(world, arithmetic_record(world, 1, 1), "1 + 1 = 2")


def test_arithmetic_zh(world):
    rec = arithmetic_record(world, 5, 7, "zh")
    assert G.check(world, rec, "5加7等于12。")
    assert not G.check(world, rec, "5加7等于13。")
    assert not G.check(world, rec, "5加7等于负12。")


# ------------------------------------------------------------------ sentiment

@pytest.mark.parametrize("lang, answer, right, wrong", [
    ("en", "positive", ["Positive", "The sentiment of this sentence is positive."],
     ["Negative", "positive or negative", "It is positive, not negative.", "neutral", "nonpositive"]),
    ("en", "negative", ["negative.", "(Negative)"], ["nonnegative", "Positive", "Negatively positive."]),
    ("zh", "正面", ["正面", "这句话的情感是正面的。", "非常正面。"], ["负面", "正面还是负面", "中性"]),
    # the right label, denied
    ("en", "negative", ["The sentiment is negative, not at all upbeat."],
     ["The sentiment is not negative.", "It is definitely not negative; it's the opposite.", "Not really negative."]),
    ("zh", "负面", ["负面。"], ["不是负面。", "这句话并非负面。"]),
])
def test_sentiment(world, lang, answer, right, wrong):
    rec = {"task": "sentiment", "lang": lang, "answer": answer}
    assert all(G.check(world, rec, r) for r in right)
    assert not any(G.check(world, rec, r) for r in wrong)


@pytest.mark.parametrize("response", ["It is not at all negative.", "I would not say it is negative.",
                                      "The review is non-negative.", "Non negative."])
def test_sentiment_denied_a_few_words_before_the_label(world, response):
    assert not G.check(world, {"task": "sentiment", "lang": "en", "answer": "negative"}, response)


@pytest.mark.parametrize("response", ["He was not happy so negative.", "The review is not good and is negative.",
                                      "I'm not sure but negative."])
def test_sentiment_a_negation_in_another_clause_or_a_hedge_denies_nothing(world, response):
    assert G.check(world, {"task": "sentiment", "lang": "en", "answer": "negative"}, response)


# ------------------------------------------------------------------ cluster

def test_cluster_en(world):
    rec = {"task": "cluster", "lang": "en", "answer": {"fruits": ["apple", "pear"], "vegetables": ["carrot"]}}
    assert G.check(world, rec, "Fruits: pear, apple\nVegetables: carrot")  # order inside a group is free
    assert G.check(world, rec, "Here are the two groups:\nFruits: apple and pear\nVegetables: carrot.")
    assert not G.check(world, rec, "Fruits: carrot\nVegetables: apple, pear")  # swapped groups
    assert not G.check(world, rec, "Fruits: apple\nVegetables: carrot")  # one fruit missing
    assert not G.check(world, rec, "Fruits: apple, pear, carrot\nVegetables: carrot")
    assert not G.check(world, rec, "apple, pear, carrot")


def test_cluster_zh(world):
    rec = {"task": "cluster", "lang": "zh", "answer": {"fruits": ["梨", "苹果"], "vegetables": ["胡萝卜"]}}
    assert G.check(world, rec, "水果：苹果、梨\n蔬菜：胡萝卜")
    assert G.check(world, rec, "水果:苹果、梨\n蔬菜:胡萝卜")  # an ASCII colon
    assert not G.check(world, rec, "水果：胡萝卜\n蔬菜：苹果、梨")


def test_cluster_reads_every_labelled_line(world):
    rec = {"task": "cluster", "lang": "en", "answer": {"fruits": ["apple", "pear"], "vegetables": ["carrot"]}}
    assert G.check(world, rec, "fruits: apple, pear\nvegetables: carrot")  # any case
    assert not G.check(world, rec, "Fruits: apple, pear\nVegetables: carrot\nFruits: carrot")  # contradicts itself


def test_cluster_generated_record_swapped_is_wrong(world):
    rec = T.make_cluster(random.Random(5), world, "terse", "en")
    fruits, vegs = rec["output"].split("\n")
    assert G.check(world, rec, rec["output"])
    swapped = f"Fruits: {vegs.split(': ')[1]}\nVegetables: {fruits.split(': ')[1]}"
    assert not G.check(world, rec, swapped)


CLUSTER = {"task": "cluster", "lang": "en", "answer": {"fruits": ["apple", "pear"], "vegetables": ["leek"]}}


@pytest.mark.parametrize("response", [
    "Fruits: pear, apple; Vegetables: leek",                   # both groups on one line
    "Fruits: pear, apple. Vegetables: leek.",
    "**Fruits**: pear, apple\n**Vegetables**: leek",           # markdown bold, the colon outside ...
    "**Fruits:** pear, apple\n**Vegetables:** leek",           # ... or inside
    "- Fruits: pear, apple\n- Vegetables: leek",
    "### Fruits\n- pear\n- apple\n\n### Vegetables\n- leek",   # headings over bulleted items
    "Sure! Here are the groups.\n\nFruits:\n1. pear\n2. apple\n\nVegetables:\n1. leek\n\nI hope this helps!",
    "Fruit: pear and apple\nVegetable: leek",                    # singular
    "fruits: pear, and apple\nvegetables: leek",
    # found in review: capitalised items, an opening line that names both groups, items one per line, numbered heads
    "### Fruits\n- Apple\n- Pear\n\n### Vegetables\n- Leek",
    "Fruits: Apple, Pear\nVegetables: Leek",
    "Sure! Here are the fruits and vegetables:\nFruits: apple, pear\nVegetables: leek",
    "Fruits:\napple\npear\n\nVegetables:\nleek",
    "1. Fruits\n   - apple\n   - pear\n2. Vegetables\n   - leek",
])
def test_cluster_accepts_one_line_and_markdown_answers(world, response):
    assert G.check(world, CLUSTER, response)


@pytest.mark.parametrize("response", [
    "Fruits: pear; Vegetables: apple, leek",                   # the same layouts with a fruit among the vegetables
    "**Fruits**: pear\n**Vegetables**: apple, leek",
    "### Fruits\n- pear\n\n### Vegetables\n- leek\n- apple",
    "Fruits: pear, apple, leek; Vegetables: leek",
    "**Fruits**: pear, apple",                                  # a group missing
    "### Fruits\n### Vegetables\n- leek",                     # a heading over nothing
    "Fruits: pear, apple; Vegetables: leek\n**Fruits**: pear",  # the fruits listed twice, differently
    "Fruits:\napple\npear\nVegetables:\nleek\nHope this helps",  # unbulleted items run to a blank line
])
def test_cluster_one_line_and_markdown_answers_must_be_right(world, response):
    assert not G.check(world, CLUSTER, response)


# ------------------------------------------------------------------ extract

def test_extract(world):
    rec = {"task": "extract", "lang": "en", "answer": ["Alice", "Bob"]}
    assert G.check(world, rec, "Bob, Alice")
    assert G.check(world, rec, "The people mentioned are Alice and Bob.")
    assert not G.check(world, rec, "Alice")
    assert not G.check(world, rec, "Alice, Bob and Carol")
    rec_zh = {"task": "extract", "lang": "zh", "answer": ["李伟", "王芳"]}
    assert G.check(world, rec_zh, "王芳、李伟")
    assert not G.check(world, rec_zh, "李伟")


def test_extract_one_name_is_mentioned(world):
    assert G.check(world, {"task": "extract", "lang": "en", "answer": ["Alice"]}, "Alice is mentioned.")
    assert not G.check(world, {"task": "extract", "lang": "en", "answer": ["Alice", "Bob"]}, "Alice is mentioned.")
    both = {"task": "extract", "lang": "en", "answer": ["Alice", "Bob"]}
    assert G.check(world, both, "The people mentioned are Alice, Bob. Alice is mentioned first.")  # a remark


def test_cluster_items_may_end_with_an_exclamation_mark(world):
    rec = {"task": "cluster", "lang": "zh", "answer": {"fruits": ["梨", "葡萄"], "vegetables": ["白菜", "胡萝卜"]}}
    assert G.check(world, rec, "水果：葡萄、梨\n蔬菜：胡萝卜、白菜！")


@pytest.mark.parametrize("response, right", [
    ("I read the text carefully and looked for every name. The people mentioned are Alice, Bob. I hope this helps.",
     True),
    ("Alice, Bob.", True),
    ("Alice, Alice, Bob", False),                                   # a name listed twice
    ("The people mentioned are Alice, Bob, Paris.", False),         # something that is no one mentioned
    ("The people mentioned are Alice, Bob. The people mentioned are Alice.", False),  # two lists that disagree
    ("Last week Alice and Bob visited Paris.", False),              # the text echoed is not a list of names
])
def test_extract_wants_the_list_and_only_the_list(world, response, right):
    assert G.check(world, {"task": "extract", "lang": "en", "answer": ["Alice", "Bob"]}, response) is right
    zh = {"task": "extract", "lang": "zh", "answer": ["弗兰克", "鲍勃"]}
    assert not G.check(world, zh, "弗兰克、鲍勃、 Emma")  # a name from the other language is an extra name
    assert G.check(world, zh, "我仔细读了这段话，找到了所有的人名。这段话中提到的人是弗兰克、鲍勃。希望对你有帮助。")


EMMA_LI = {"task": "extract", "lang": "en", "answer": ["Emma", "Li Wei"]}
ZHANG_MIN = {"task": "extract", "lang": "en", "answer": ["Zhang Min"]}


@pytest.mark.parametrize("response", [
    "Zhang Min\nEmma",                            # a person of the world on the next line ...
    "Zhang Min\nJohn",                            # ... or any name-like line that goes on the list
    "- Zhang Min\n- Emma",
    "The people mentioned are Zhang Min. Emma is mentioned too.",  # ... or in the next sentence
    "Zhang Min. I hope this helps, Emma.",
])
def test_extract_reads_names_after_the_first_line_or_sentence(world, response):
    assert not G.check(world, ZHANG_MIN, response)


@pytest.mark.parametrize("response", ["Zhang Min", "Zhang Min\nI hope this helps.", "Zhang Min. I hope this helps.",
                                      "The people mentioned are Zhang Min.\n\nLet me know if you need anything else."])
def test_extract_prose_after_the_list_is_no_name(world, response):
    assert G.check(world, ZHANG_MIN, response)


@pytest.mark.parametrize("response", [
    "The names are Emma and Li Wei.",
    "The people mentioned in the text are Emma and Li Wei.",
    "The two people mentioned in the text are Emma, and Li Wei.",
    "The text mentions two people: Emma and Li Wei.",
    "The text mentions Emma and Li Wei.",
    "Names: Emma, Li Wei",
    "Emma and Li Wei are mentioned in the text.",
    "Sure. Emma and Li Wei.",
    "**Emma** and **Li Wei**",
    "Emma\nLi Wei",
    "The names mentioned are:\n- Emma\n- Li Wei",
    "Sure! Here are the names:\n\n1. Emma\n2. Li Wei\n\nI hope this helps!",
    # found in review: a sentence after the list that opens like a lead but lists no name, a lead behind a bullet,
    # numbered steps before the answer, prose after a blank line
    "The people mentioned are Emma and Li Wei. No other names are mentioned.",
    "The people mentioned are Emma and Li Wei. Both people are friends.",
    "- The people mentioned are Emma and Li Wei.",
    "* Names: Emma, Li Wei",
    "1. Read the text.\n2. Find every name.\nThe people mentioned are Emma, Li Wei.",
    "Emma\nLi Wei\n\nDone.",
    "- Emma\n\n- Li Wei",
])
def test_extract_accepts_natural_phrasings(world, response):
    assert G.check(world, EMMA_LI, response)


@pytest.mark.parametrize("response", [
    "The names are Emma.",                           # one missing
    "The names are Emma, Li Wei and Bob.",           # one extra, a person of the world ...
    "The names are Emma, Li Wei, and Paris.",        # ... or something else
    "The names mentioned are:\n- Emma\n- Li Wei\n- Gomania",
    "Emma and Emma are mentioned in the text.",
    "The names are Emma and Li Wei. The names are Emma.",  # two lists that disagree
    "Emma, Li Wei\nThe names are Li Wei.",
])
def test_extract_natural_phrasings_must_name_exactly_the_people(world, response):
    assert not G.check(world, EMMA_LI, response)


@pytest.mark.parametrize("response, right", [
    ("文中提到的人名有：张敏和艾玛。", True), ("人名：张敏、艾玛", True), ("文中提到了张敏和艾玛。", True),
    ("张敏\n艾玛", True), ("- 张敏\n- 艾玛", True), ("这段话里提到的人是张敏和艾玛。", True),
    ("这段话中提到了两个人：张敏和艾玛。", True),
    ("文中提到的人名有：张敏。", False), ("张敏\n艾玛\n李伟", False), ("张敏、艾玛。\n还有李伟。", False),
])
def test_extract_natural_phrasings_zh(world, response, right):
    assert G.check(world, {"task": "extract", "lang": "zh", "answer": ["张敏", "艾玛"]}, response) is right


@pytest.mark.parametrize("answer, response", [(["弗兰克", "赵磊"], "中提到的人是弗兰克、赵磊。"),
                                              (["Henry"], " Latestan? Henry")])
def test_extract_samples_of_the_course_stay_wrong(world, answer, response):
    """Two of the reward stage's samples on tiny, graded wrong from the start, and kept so: broken text, whose first
    sentence is a fragment of the course's lead ("中提到的人是", the speaker cut off) or a made-up word before a "?".
    That the names after it are right does not make it an answer; grading them right would also change every later
    number of the course."""
    assert not G.check(world, {"task": "extract", "lang": "zh" if answer[0] == "弗兰克" else "en", "answer": answer},
                       response)


# ------------------------------------------------------------------ nl2sql, graded by execution

ASIA = {"task": "nl2sql", "lang": "en", "answer": "SELECT name FROM countries WHERE continent = 'Asia';"}


def n_rows(world) -> list:
    return G.run_sql(world, "SELECT COUNT(*) FROM countries")


def test_nl2sql_equivalent_query_accepted(world):
    assert G.run_sql(world, ASIA["answer"])  # the reference returns rows, so the comparison means something
    assert G.check(world, ASIA, "select name from countries where continent='Asia'")
    assert G.check(world, ASIA, "Here is the query:\nSELECT c.name FROM countries AS c WHERE c.continent IN ('Asia');")


def test_nl2sql_multiline_query_accepted(world):
    assert G.check(world, ASIA, "SELECT name\nFROM countries\nWHERE continent = 'Asia';")


@pytest.mark.parametrize("response", [
    "SELECT name FROM countries WHERE continent = 'Europe';",   # other rows
    "SELECT name, capital FROM countries WHERE continent = 'Asia';",  # other columns
    "SELECT nme FROM countries WHERE",                           # invalid SQL
    "SELECT name FROM countries WHERE continent = ",             # invalid SQL
    "The countries of Asia.",                                    # no query at all
])
def test_nl2sql_wrong_rejected(world, response):
    assert not G.check(world, ASIA, response)


@pytest.mark.parametrize("response", [
    "SELECT name FROM countries WHERE continent = 'Asia';\nAlternatively:\nselect name from countries where "
    "continent = 'Europe';",                                                  # a second query, in lower case
    "SELECT name FROM countries WHERE continent = 'Asia'; or SELECT name FROM countries WHERE continent = 'Europe';",
    "SELECT name FROM countries WHERE continent = 'Asia';\ndrop table countries;",
    "SELECT name FROM countries WHERE continent = 'Asia'\nLimit 2",  # a clause in title case goes on with the query
])
def test_nl2sql_a_second_statement_or_clause_in_any_case_is_read(world, response):
    assert not G.check(world, ASIA, response)


@pytest.mark.parametrize("after", [
    ";\nThis query will select the names from countries in Asia.",
    ";\n\nExplanation: SELECT name FROM countries returns the names, and WHERE filters them.",
    ";\nThis does not delete from the table.", "\nAnd that's it!", "\nLimit 10 rows are shown."])
def test_nl2sql_prose_that_names_sql_words_is_no_second_statement(world, after):
    assert G.check(world, ASIA, "SELECT name FROM countries WHERE continent = 'Asia'" + after)


def test_nl2sql_a_sentence_full_stop_after_the_query_is_no_part_of_it(world):
    assert G.check(world, ASIA, "SELECT name FROM countries WHERE continent = 'Asia'.")
    assert G.check(world, ASIA, "SELECT name FROM countries\nWhere continent = 'Asia'")


@pytest.mark.parametrize("n", [10, 20, 50, 100])
def test_nl2sql_a_threshold_off_by_one_is_wrong(world, n):
    """The questions ask for "more than N million people": one copy of the table has a country of exactly N."""
    rec = {"task": "nl2sql", "lang": "en", "answer": f"SELECT name FROM countries WHERE population > {n};"}
    assert G.check(world, rec, f"SELECT name FROM countries WHERE population > {n}")
    for wrong in (f">= {n}", f"> {n - 1}"):
        assert not G.check(world, rec, f"SELECT name FROM countries WHERE population {wrong};"), wrong


@pytest.mark.parametrize("response", [
    "WITH asia AS (SELECT name FROM countries WHERE continent = 'Asia') SELECT name FROM asia;",
    "with asia as (select * from countries where continent = 'Asia')\nselect name from asia\nThis lists them.",
    "```sql\nWITH asia AS (\n  SELECT name, continent\n  FROM countries\n  WHERE continent = 'Asia'\n)\n"
    "SELECT name\nFROM asia;\n```",
    "Here is a query with a CTE:\nWITH everything AS (\nSELECT * FROM countries\n),\nasia AS (\n"
    "SELECT * FROM everything WHERE continent = 'Asia'\n)\nSELECT name FROM asia;",
    "WITH RECURSIVE one(n) AS (SELECT 1) SELECT name FROM countries, one WHERE continent = 'Asia';",
])
def test_nl2sql_with_clause_accepted(world, response):
    """A common table expression is a query like any other: graded by its rows."""
    assert G.check(world, ASIA, response)


@pytest.mark.parametrize("response", [
    "WITH europe AS (SELECT name FROM countries WHERE continent = 'Europe') SELECT name FROM europe;",  # other rows
    "WITH countries AS (SELECT 'Japan' AS name) SELECT name FROM countries;",   # reads no table, only its own
    "WITH asia AS (SELECT name FROM countries WHERE continent = 'Asia') SELECT name FROM asia; DROP TABLE countries;",
    "WITH asia AS (SELECT name FROM countries WHERE continent = 'Asia') DELETE FROM countries;",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT name FROM countries, n "
    "WHERE continent = 'Asia';",                                                # never ends: stopped
])
def test_nl2sql_with_clause_wrong_rejected(world, response):
    before = n_rows(world)
    assert not G.check(world, ASIA, response)
    assert n_rows(world) == before


PARIS = {"task": "nl2sql", "lang": "en", "answer": "SELECT name FROM countries WHERE capital = 'Paris';"}
PARIS_SQL = "SELECT name FROM countries WHERE capital = 'Paris'"


@pytest.mark.parametrize("response", [
    f"{PARIS_SQL}\nThis returns France.",                  # no ";": the query ends where the prose begins
    f"{PARIS_SQL}\nAs you can see, it returns France.",     # "As" opens prose, not an AS clause
    f"{PARIS_SQL};\nWith this query you get France.",       # "With" opens prose, not a WITH statement
    f"```sql\n{PARIS_SQL}\n```",
    "select name\nfrom countries\nwhere capital = 'Paris'\nThat is all.",
    f"{PARIS_SQL} OR name = 'a;b';",                         # a ";" inside a string ends nothing
    f"{PARIS_SQL}; -- the French capital",
])
def test_nl2sql_query_followed_by_prose_accepted(world, response):
    assert G.check(world, PARIS, response)


@pytest.mark.parametrize("response", [
    "SELECT 'France';",                                      # the answer as a literal: reads no table
    "SELECT 'France' -- FROM countries",
    "SELECT 'France' UNION SELECT 'France'",
])
def test_nl2sql_literal_that_reads_no_table_rejected(world, response):
    assert G.run_sql(world, response) is None
    assert not G.check(world, PARIS, response)


def asia_count(world) -> int:
    return G.run_sql(world, "SELECT COUNT(*) FROM countries WHERE continent = 'Asia'")[0][0]


@pytest.mark.parametrize("record, response", [
    (PARIS, "SELECT 'France' FROM countries WHERE capital = 'Paris';"),  # the answer hard-coded, the table read
    (PARIS, "SELECT 'France' FROM countries LIMIT 1;"),
    (PARIS, "SELECT name FROM countries WHERE name = 'France';"),        # the right row, not found by its capital
    ({"task": "nl2sql", "lang": "en", "answer": "SELECT COUNT(*) FROM countries WHERE continent = 'Asia';"},
     "SELECT {n} FROM countries LIMIT 1;"),                               # the count hard-coded
])
def test_nl2sql_right_rows_by_coincidence_rejected(world, record, response):
    response = response.format(n=asia_count(world))
    assert G.run_sql(world, response) == G.run_sql(world, record["answer"])  # right on the world's own table ...
    assert not G.check(world, record, response)                             # ... not on its shuffled copies


def test_nl2sql_every_reference_changes_on_a_shuffled_copy(world):
    """Each shuffled copy of the table tests something: no question's reference rows are the same on all of them."""
    records = [T.make_nl2sql(random.Random(i), world, "terse", "en") for i in range(300)]
    assert len({r["input"] for r in records}) > 100
    same = [r["answer"] for r in records
            if all(G.run_sql(world, r["answer"], v) == G.run_sql(world, r["answer"]) for v in range(G.SQL_VARIANTS))]
    assert same == []


@pytest.mark.parametrize("response", [
    f"{PARIS_SQL}; DROP TABLE countries;",                   # only one statement may be graded
    f"{PARIS_SQL}; drop table countries",
    f"{PARIS_SQL};\nDELETE FROM countries;",
    f"{PARIS_SQL};\nOr maybe:\nSELECT name FROM countries WHERE capital = 'Berlin';",
])
def test_nl2sql_second_statement_rejected(world, response):
    before = n_rows(world)
    assert G.sql_statement(response) is None
    assert not G.check(world, PARIS, response)
    assert n_rows(world) == before


def test_nl2sql_sql_statement_cuts_at_semicolon_or_prose():
    assert G.sql_statement(f"Here is the query:\n{PARIS_SQL};\nIt returns France.") == PARIS_SQL + ";"
    assert G.sql_statement(f"{PARIS_SQL}\nThis returns France.") == PARIS_SQL
    assert G.sql_statement("SELECT name\n  FROM countries\n\nDone.") == "SELECT name\n  FROM countries"
    assert G.sql_statement("I selected the rows.") is None


def test_nl2sql_touches_no_file_and_writes_nothing(world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = n_rows(world)
    for sql in ["ATTACH DATABASE 'x.db' AS x", "SELECT 1; ATTACH DATABASE 'x.db' AS x", "PRAGMA query_only = OFF",
                "SELECT load_extension('x')", "SELECT * FROM countries; VACUUM INTO 'x.db'",
                "CREATE TABLE x (a)", "INSERT INTO countries VALUES ('X', 'Y', 'Asia', 1)"]:
        assert G.run_sql(world, sql) is None
        assert not G.check(world, ASIA, sql)
    assert list(tmp_path.iterdir()) == [] and n_rows(world) == before


def test_nl2sql_a_query_that_would_run_for_hours_is_stopped_and_wrong(world, monkeypatch):
    """A looping model writes cross joins: four copies of the table are 160^4 rows. SQLite stops the query after
    `SQL_MAX_STEPS` steps (it used to run for minutes, stalling evaluation and the reward stage's labelling); the
    table is usable afterwards."""
    rec = T.make_nl2sql(random.Random(0), world, "terse", "en")
    three = "SELECT COUNT(*) FROM countries, countries, countries;"  # 160^3 rows: seconds, but over the limit
    with monkeypatch.context() as m:
        m.setattr(G, "SQL_MAX_STEPS", 10 ** 10)  # it is the step limit that stops it: without it, it runs to the end
        assert G.run_sql(world, three) == [(len(world.countries) ** 3,)]
    assert G.run_sql(world, three) is None
    assert G.run_sql(world, "SELECT COUNT(*) FROM countries, countries, countries, countries, countries;") is None
    assert not G.check(world, rec, "SELECT name FROM countries, countries, countries, countries, countries;")
    assert G.check(world, rec, rec["answer"])
    assert G.run_sql(world, "SELECT COUNT(*) FROM countries, countries;") == [(len(world.countries) ** 2,)]


def test_nl2sql_a_query_that_would_fill_the_memory_is_stopped_and_wrong(world):
    """`randomblob` passes every other check (one SELECT that reads the table); 10**9 bytes a row would fill the memory
    of the machine grading it. Strings and blobs, columns and rows are capped (the test itself stays small)."""
    assert G.run_sql(world, "SELECT randomblob(200000), name FROM countries") is None
    assert G.run_sql(world, "SELECT zeroblob(200000) FROM countries") is None
    assert G.run_sql(world, "SELECT " + ", ".join(["name"] * 40) + " FROM countries") is None  # 40 columns
    assert G.run_sql(world, "SELECT a.name FROM countries a, countries b") is None  # 25,600 rows: not fetched
    assert len(G.run_sql(world, "SELECT name || name FROM countries")) == len(world.countries)


def test_nl2sql_checks_from_many_threads(world):
    from concurrent.futures import ThreadPoolExecutor
    cases = [(PARIS_SQL, True), ("SELECT 'France'", False), (ASIA["answer"], False)] * 50
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda case: G.check(world, PARIS, case[0]), cases))
    assert got == [right for _, right in cases]


def test_nl2sql_never_writes(world):
    before = n_rows(world)
    assert before == [(len(world.countries),)]
    assert not G.check(world, ASIA, "DROP TABLE countries")
    assert G.run_sql(world, "DROP TABLE countries") is None
    assert G.run_sql(world, "SELECT 1; DROP TABLE countries") is None
    assert G.run_sql(world, "DELETE FROM countries") is None
    assert n_rows(world) == before


# ------------------------------------------------------------------ answer shapes

def test_every_reference_answer_has_its_own_shape_or_none(world):
    """`off_task` must never fire on a right answer of any task, style or language."""
    for rec in T.sft_records(world, 1200, seed=4) + T.eval_records(world):
        assert G.answer_shapes(rec["output"]) <= {rec["task"]}, rec["output"]
        assert not G.off_task(rec, rec["output"])
        if rec["style"] != "terse":
            assert rec["task"] in G.answer_shapes(rec["output"])


@pytest.mark.parametrize("task, response", [
    ("cluster", "The capital of Gomaria is Rakeville."), ("cluster", "7 + 7 = 14."),
    ("arithmetic", "Kekaburg is the capital of Norway."), ("extract", "这句话的情感是正面的。"),
    ("sentiment", "SELECT name FROM countries;"), ("nl2sql", "Fruits: apple\nVegetables: leek"),
])
def test_an_answer_in_another_tasks_shape_is_off_task(world, task, response):
    rec = next(r for r in T.eval_records(world) if r["task"] == task)
    assert G.off_task(rec, response)


def test_bare_or_mixed_answers_are_not_off_task(world):
    cluster = next(r for r in T.eval_records(world) if r["task"] == "cluster")
    assert not G.off_task(cluster, "apple, leek") and not G.off_task(cluster, "")
    assert not G.off_task(cluster, "Fruits: apple\nVegetables: leek\nThe capital of France is Paris.")


@pytest.mark.parametrize("text, lang", [("abcdefg中文字", "en"), ("abcdef中文字四", "zh"),
                                        ("巴黎 Paris 是首都", "zh"), ("The capital of China is 北京.", "en"),
                                        ("北京", "zh"), ("42 + 1", None)])
def test_an_answer_is_chinese_when_more_than_three_in_ten_of_its_letters_are(text, lang):
    """The language term's cut-off: 3 Chinese characters of 10 letters is English, 4 is Chinese; a Chinese answer
    that names an English word, or an English one a Chinese place, keeps its language; no letters, no language."""
    assert G.response_language(text) == lang
