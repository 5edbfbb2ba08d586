"""The fix wip/README.md tried for the QLoRA merge gap: a copy of a finished tiny run whose `sft/` is the adapter
merged into the dequantised NF4 base (the weights it was trained against) instead of the float32 base.

    HF_HUB_OFFLINE=1 .venv/bin/python wip/merge_dequantised.py RUN_DIR OUT_DIR
    HF_HUB_OFFLINE=1 .venv/bin/python wip/merge_gap.py OUT_DIR                  # merged vs as trained
    HF_HUB_OFFLINE=1 .venv/bin/lab reward --profile tiny --out OUT_DIR          # then the later stages on it
    HF_HUB_OFFLINE=1 .venv/bin/lab ppo --profile tiny --out OUT_DIR
"""

import shutil
import sys
import warnings
from pathlib import Path

import torch
from peft import PeftModel

from lab_utils import checkpoints as ck
from lab_utils.sft import load_for_method

warnings.filterwarnings("ignore")
run, out = Path(sys.argv[1]), Path(sys.argv[2])
if out.exists():
    sys.exit(f"{out} exists: give a new folder (the copy is written whole, or not at all)")
nf4 = load_for_method(str(run / "base"), "qlora").dequantize(dtype=torch.float32)  # NF4 rounding kept, fp32
merged = PeftModel.from_pretrained(nf4, str(run / "sft-adapter")).merge_and_unload()
with ck.atomic_dir(out) as tmp:  # a temporary folder beside OUT_DIR, renamed to it at the end
    for name in ("base", "tokenizer", "sft-adapter", "report.json"):  # what the later stages read
        (shutil.copytree if (run / name).is_dir() else shutil.copy)(run / name, tmp / name)
    merged.save_pretrained(tmp / "sft", safe_serialization=True)
    for f in (run / "sft").iterdir():  # tokenizer (with its PAD), chat template, lab_config.json, metrics.json
        if f.name not in ("model.safetensors", "config.json", "generation_config.json"):
            shutil.copy(f, tmp / "sft" / f.name)
print(f"{out / 'sft'}: the adapter merged into the dequantised NF4 base")
