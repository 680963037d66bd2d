#!/usr/bin/env bash
# The README's main job: every stage of temacli on the small real sample shipped in examples/sample
# (500 users of the Amazon Food-Kitchen data, with titles), with the offline defaults (a local LLM for the
# tags, a local sentence encoder for the item text). A few minutes on a 2-core CPU.
# Usage: bash examples/quickstart.sh [RUN_DIR]      (needs `temacli` on PATH)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
run="${1:-runs/quickstart}"
epochs="${EPOCHS:-15}"
mkdir -p "$run"

# 1. the dataset: filter, index, leave-one-out split, 999 stored negatives per evaluation row
temacli data split --interactions "$here/sample/interactions.csv" --items "$here/sample/items.csv" \
    --domains food,kitchen --out "$run/data" --force
temacli data stats "$run/data"

# 2. tags: a voted tag list per domain (Algorithm 1), then a 1-100 score per item and tag
temacli tags generate --domain food --items "$run/data/items.parquet" --runs 3 --out "$run/tags/food.parquet" --force
temacli tags generate --domain kitchen --items "$run/data/items.parquet" --runs 3 --out "$run/tags/kitchen.parquet" --force
temacli tags match --items "$run/data/items.parquet" --tags "$run/tags/" --out "$run/tags/item_tags.parquet" --force

# 3. frozen text features (the offline encoder; `features clip` with real CLIP weights where you have them)
temacli features text --items "$run/data/items.parquet" --out "$run/features"

# 4. TEMA-LLM and the two baselines, on the same data and candidates
temacli train --data "$run/data" --features "$run/features" --tags "$run/tags/item_tags.parquet" \
    --out "$run/tema" --epochs "$epochs" --force
temacli train --data "$run/data" --arch sasrec --out "$run/sasrec" --epochs "$epochs" --force
temacli train --data "$run/data" --arch gru4rec --out "$run/gru4rec" --epochs "$epochs" --force

# 5. evaluation on the test split (sampled protocol: the target among its 999 stored negatives)
temacli eval --model "$run/tema" --data "$run/data" --split test
temacli eval --compare "$run/tema" "$run/sasrec" "$run/gru4rec"

# figures: learning curves and the comparison (optional extra: pip install 'temacli[plot]')
temacli plot "$run/tema" "$run/sasrec" "$run/gru4rec" --out "$run/plots" --force \
    || echo "figures skipped: install the plot extra (pip install 'temacli[plot]') to get them"

# 6. one user's recommendations
user="$(sed -n 2p "$here/sample/interactions.csv" | cut -d, -f1)"
temacli recommend --model "$run/tema" --data "$run/data" --user "$user" --k 10
