"""The notebooks as committed, read without running them (nbval runs them in `make test`, but it does not compare
their stored outputs with what the code prints now).

Each stage's notebook shows its configuration as a table of every setting, its value on `tiny` and its help text.
Those outputs were stored when the notebook was last executed; a setting added or a help text changed since then
would leave the table telling the learner something the code no longer says."""

from __future__ import annotations

import html
import re
from dataclasses import fields
from pathlib import Path

import nbformat
import pytest

from lab_utils.config import PPOConfig, PretrainConfig, RewardConfig, SFTConfig

LABS = Path(__file__).resolve().parents[1] / "labs"
ROW = re.compile(r"<tr>\s*<th>([^<]*)</th>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>\s*</tr>")


@pytest.mark.parametrize("notebook, config", [("02_pretraining", PretrainConfig), ("03_sft_qlora", SFTConfig),
                                              ("04_reward_model", RewardConfig), ("05_ppo_rlhf", PPOConfig)])
def test_each_stages_configuration_table_shows_its_current_settings(notebook, config):
    nb = nbformat.read(LABS / f"{notebook}.ipynb", as_version=4)
    tables = [c for c in nb.cells if c.cell_type == "code" and "fields(cfg)" in c.source]
    assert len(tables) == 1, f"{notebook}: one configuration table expected"
    shown = [o["data"]["text/html"] for o in tables[0].outputs if "text/html" in o.get("data", {})]
    assert len(shown) == 1, f"{notebook}: the table cell has no stored table (execute the notebook)"
    rows = [tuple(map(html.unescape, row)) for row in ROW.findall(shown[0])]
    cfg = config.for_profile("tiny")
    assert [name for name, _, _ in rows] == [f.name for f in fields(cfg)], \
        f"{notebook}: its table lists other settings than {config.__name__} has (run the table's cell again)"
    for (name, value, help_shown), f in zip(rows, fields(cfg), strict=True):
        setting = getattr(cfg, f.name)
        same = float(value) == setting if type(setting) in (int, float) else value == str(setting)  # 3e-05 as 0.00003
        assert same, f"{notebook}: {name} shows {value!r}, the profile says {setting!r}"
        cut = help_shown.removesuffix("...")  # pandas shortens long cells to display.max_colwidth
        assert f.metadata["help"].startswith(cut) and (cut == help_shown or len(cut) > 40), \
            f"{notebook}: {name}'s help text changed since the table was stored"
