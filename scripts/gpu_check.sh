#!/usr/bin/env bash
# The GPU check (issue 16), one script, under 8 minutes on one H200:
#   1. the step benchmark (scripts/bench_step.py) on a random-weight RoBERTa-base, batch 16,
#      sequence 512, fp32 (TF32 off) and bf16 interleaved: a LoRA step, a darts search iteration
#      and first_order; time ratios, peak memory, bf16 speed-ups                   (<= 240 s)
#   2. a short AutoLoRA run through run.py (search + retrain + evaluation) on GLUE RTE with
#      RoBERTa-base's architecture at random weights, in bf16 and then in fp32 (same seed):
#      both pipelines work on the GPU, phase times, and how far bf16's losses are from fp32's
#      (<= 60 s each)
#   3. the host synchronisations the training loop and the search make per step on the GPU
#      (scripts/sync_check.py; the goal is 0)                                       (<= 60 s)
# and writes JSON into $OUT (default outputs/gpu_check): step/step.{json,md}, run_bf16/ and
# run_fp32/ (result.json, logs), sync.json, summary.json (the figures README's GPU section asks for).
#
# Before (where there is PyPI access): bash scripts/gpu_wheels.sh  (fills .whl/ and .gpu_data/)
# On the GPU machine:                  bash scripts/gpu_check.sh
# Same code paths on CPU, small sizes: bash scripts/gpu_check.sh --device cpu --quick
#
# The GPU machine has torch, transformers, peft, accelerate, numpy, scipy, scikit-learn, pyarrow,
# pandas, tqdm, matplotlib, xxhash, fsspec, huggingface-hub, tokenizers, requests, and no
# network: hydra-core, omegaconf, antlr4, datasets, dill, multiprocess come from .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${GPU_CHECK_SITE:-/tmp/site}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl && export PYTHONPATH=$PWD/src:$SITE
if [ "${PYTHONPATH:-}" != "$PWD/src:$SITE" ]; then  # no pip there: pure-Python wheels are zip files
  echo "pip install failed: unpacking $WHEELS/*.whl into $SITE instead" >&2
  python3 -c 'import glob, sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in glob.glob(sys.argv[2] + "/*.whl")]' \
    "$SITE" "$WHEELS"
  export PYTHONPATH=$PWD/src:$SITE
fi

DEVICE=cuda
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "usage: bash scripts/gpu_check.sh [--device cuda|cpu] [--quick]" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-outputs/gpu_check}
DATA=${GPU_DATA_DIR:-.gpu_data}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
for f in "$DATA/glue/RTE/train.tsv" "$DATA/glue/RTE/dev.tsv" "$DATA/tokenizer/tokenizer.json"; do
  [ -f "$f" ] || { echo "error: $f is missing: run bash scripts/gpu_wheels.sh first" >&2; exit 2; }
done

if [ "$QUICK" = 1 ]; then
  # memory is measured in one subprocess per configuration: left out here to stay quick
  BENCH=(--model tiny-roberta --batch-size 2 --seq-len 16 --repeats 2 --warmup 1 --no-memory)
  BENCH_LIMIT=300
  MODEL=tiny-roberta
  RUN=(task.max_train_samples=32 task.max_eval_samples=16 task.max_length=32 train.batch_size=8
       train.eval_batch_size=16 train.epochs=1 train.search_epochs=1)
  LIMIT=300
else
  BENCH=(--model roberta-base --batch-size 16 --seq-len 512 --repeats 8 --warmup 2)
  BENCH_LIMIT=240
  MODEL=roberta-base-random
  # 1024 RTE rows at 256 tokens: the search runs 32 iterations of batch 16 on D_tr (512 rows),
  # the retrain 64 steps, evaluation covers all 277 dev rows
  RUN=(task.max_train_samples=1024 task.max_length=256 train.epochs=1 train.search_epochs=1)
  LIMIT=60
fi

status=0
python3 - "$OUT/env.json" "$DEVICE" <<'PY' || status=1
import json, platform, sys, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": sys.argv[2], "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    info.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                bf16_supported=torch.cuda.is_bf16_supported())
import transformers, peft
info.update(transformers=transformers.__version__, peft=peft.__version__)
json.dump(info, open(sys.argv[1], "w"), indent=2)
print("env:", info, flush=True)
PY

echo "== 1. step benchmark (fp32 vs bf16)"
timeout "$BENCH_LIMIT" python3 scripts/bench_step.py "${BENCH[@]}" --device "$DEVICE" --configs lora darts first_order \
  --precisions fp32 bf16 --out "$OUT/step" 2>&1 | tee "$OUT/step.log" || status=1

for precision in bf16 fp32; do
  echo "== 2. short AutoLoRA run through run.py, $precision"
  rm -rf "$OUT/run_$precision"
  timeout "$LIMIT" python3 run.py task=glue/rte task.data_dir="$DATA/glue" model="$MODEL" model.tokenizer="$DATA/tokenizer" \
    method=autolora train.precision="$precision" device="$DEVICE" logger.mode=disabled train.progress=false \
    train.log_every=10 "${RUN[@]}" output_dir="$OUT/run_$precision" hydra.run.dir="$OUT/run_$precision" \
    2>&1 | tee "$OUT/run_$precision.log" || status=1
done

echo "== 3. host synchronisations of the hot loops (torch.cuda.set_sync_debug_mode)"
timeout 60 python3 scripts/sync_check.py --out "$OUT" 2>&1 | tee "$OUT/sync.log" || status=1

python3 - "$OUT" <<'PY' || status=1
"""summary.json: the figures of README's GPU section, and whether the goals are met."""
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
summary = {"env": json.loads((out / "env.json").read_text()) if (out / "env.json").exists() else None}
step_file = out / "step" / "step.json"
if step_file.exists():
    step = json.loads(step_file.read_text())
    bf16 = step["by_precision"]["bf16"]
    summary["step"] = {
        "model": step["by_precision"]["fp32"]["model"], "batch": step["by_precision"]["fp32"]["batch_size"],
        "seq": step["by_precision"]["fp32"]["seq_len"], "clock": step["by_precision"]["fp32"]["clock"],
        "median_s": {p: r["median_s"] for p, r in step["by_precision"].items()},
        "bf16_speedup": step["paired_speedup"]["bf16"],
        "bf16_time_ratio_to_lora": bf16["paired_time_ratio"],
        "fp32_time_ratio_to_lora": step["by_precision"]["fp32"]["paired_time_ratio"],
        "memory_mib": {p: {c: b / 2**20 for c, b in r["memory_bytes"].items()} for p, r in step["by_precision"].items()},
        "goal_bf16_speedup_lora_ge_2": step["paired_speedup"]["bf16"]["lora"] >= 2.0,
        "goal_bf16_darts_le_4x_lora": bf16["paired_time_ratio"]["darts"] <= 4.0,
    }
runs = {}
for p in ("bf16", "fp32"):
    f = out / f"run_{p}" / "result.json"
    if f.exists():
        r = json.loads(f.read_text())
        runs[p] = {"phases": r["phases"], "device_info": r["env"].get("device_info"),
                   "train_loss": [e["train_loss"] for e in r["metrics"]["per_epoch"]],
                   "search_steps": r["search"]["steps"], "mean_rank": r["search"]["mean_rank"],
                   "ranks": r["ranks"], "final": r["metrics"]["final"]}
    else:
        runs[p] = {"error": f"no result.json: see {out}/run_{p}.log"}
summary["runs"] = runs
sync_file = out / "sync.json"
summary["sync"] = json.loads(sync_file.read_text()) if sync_file.exists() else None
if all("train_loss" in runs[p] for p in runs):
    a, b = runs["bf16"]["train_loss"][-1], runs["fp32"]["train_loss"][-1]
    summary["bf16_vs_fp32_train_loss_rel_diff"] = abs(a - b) / abs(b)
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
print("runs:", json.dumps({p: {k: v for k, v in r.items() if k in ("phases", "train_loss", "mean_rank", "error")}
                           for p, r in runs.items()}, indent=1))
PY
echo "gpu_check: status $status, JSON in $OUT"
exit $status
