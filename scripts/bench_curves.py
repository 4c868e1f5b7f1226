"""LoRA r=4 learning curves on GLUE: the training size, sequence length, lr and epochs each task needs.

    python scripts/bench_curves.py --tasks stsb --train-samples 256,1024 --max-lengths 64 --epochs 12
    python scripts/bench_curves.py --quick --out /tmp/bench --committed none     # tiny-roberta smoke run

Each (task, setting, seed) is one real run (python run.py) under <out>/runs/curves/...; its
result.json holds the dev score after every epoch (the curve). Finished runs are reused; with
--committed (default docs/bench/runs) they are also read from and copied to a committed store of
small JSON files, so another machine resumes instead of recomputing. The plateau and choice
rules: src/autolora_exp/curves.py. Writes <out>/<name>.{json,md} and <out>/<name>_<task>.png.
"""

import sys
from pathlib import Path

from autolora_exp.curves import main

if __name__ == "__main__":
    sys.exit(main(None, Path(__file__).resolve().parents[1]))
