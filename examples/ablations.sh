#!/usr/bin/env bash
# The ablations of Tables IV, V and VI on a dataset that pipeline_fk.sh (or pipeline_llmcdsr.sh) has prepared:
# it makes the tag variants with `tags match`, then trains and evaluates every row with train_eval_grid.sh.
# Usage: bash examples/ablations.sh [RUN_DIR]     (RUN_DIR holds data/, features/ and tags/<domain>.parquet)
# Environment: as train_eval_grid.sh (SEEDS, EPOCHS, JOBS, RECIPE, TRAIN_ARGS); METHOD, the matching of the main
#              row (embedding offline; llm with MODEL/API_BASE for the paper's LLM matching)
set -euo pipefail
run="${1:-runs/fk}"
method="${METHOD:-embedding}"
llm=(); [ -n "${MODEL:-}" ] && llm+=(--llm "$MODEL"); [ -n "${API_BASE:-}" ] && llm+=(--api-base "$API_BASE")
v="$run/tag_variants"
# Table IV "Tag Embedding" row: static keyword assignment
temacli tags match --items "$run/data/items.parquet" --tags "$run/tags/" --method keyword --out "$v/keyword/item_tags.parquet" --force
# Table IV "LLM Matching" row and Table V (representations come from train --tag-weights)
temacli tags match --items "$run/data/items.parquet" --tags "$run/tags/" --method "$method" --select hybrid \
    --out "$v/main/item_tags.parquet" --force "${llm[@]}"
# Table VI: selection strategies (top-R = 5, threshold = 70)
temacli tags match --items "$run/data/items.parquet" --tags "$run/tags/" --method "$method" --select top-r \
    --out "$v/topr/item_tags.parquet" --force "${llm[@]}"
temacli tags match --items "$run/data/items.parquet" --tags "$run/tags/" --method "$method" --select threshold \
    --out "$v/threshold/item_tags.parquet" --force "${llm[@]}"

ONLY="${ONLY:-tema_s[0-9]+|abl_.*}" bash "$(dirname "$0")/train_eval_grid.sh" "$run/data" "$run/features" "$v" "$run/ablations"
python "$(dirname "$0")/summarize_results.py" "$run/ablations" 2>/dev/null || true
