#!/usr/bin/env bash
# The README's main job: every stage of temacli on the small real sample shipped in examples/sample
# (500 users of the Amazon Food-Kitchen data, with titles), with the offline defaults.
# Usage: bash examples/quickstart.sh [RUN_DIR]      (needs `temacli` on PATH)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${1:-runs/quickstart}"
mkdir -p "$run"

# 1. the dataset: filter, index, leave-one-out split, 999 stored negatives per evaluation row
temacli data split --interactions "$here/sample/interactions.csv" --items "$here/sample/items.csv" \
    --domains food,kitchen --out "$run/data" --force
temacli data stats "$run/data"
