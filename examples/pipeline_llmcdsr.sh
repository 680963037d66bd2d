#!/usr/bin/env bash
# The whole TEMA-LLM pipeline on the published LLMCDSR Food-Kitchen split (../shared/data/llmcdsr-food-kitchen):
# its own train/valid/test split is kept, with its protocol's negatives (999 without replacement from the target's domain,
# only the target excluded, seed 42; `--negatives-exclude-history` gives the older, easier rule).
# Usage: bash examples/pipeline_llmcdsr.sh [RUN_DIR]      (same environment variables as pipeline_fk.sh)
# On a 2-core CPU (the recipe of docs/results.md; TEMA-LLM then takes 45 minutes, each baseline about 6):
#   RECIPE=examples/recipes/cpu.toml TRAIN_ARGS="--time-limit 45" bash examples/pipeline_llmcdsr.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${SRC:-../shared/data/llmcdsr-food-kitchen}"
run="${1:-runs/llmcdsr}"
llm=(); [ -n "${MODEL:-}" ] && llm+=(--llm "$MODEL"); [ -n "${API_BASE:-}" ] && llm+=(--api-base "$API_BASE")
dev="${DEVICE:-auto}"; seed="${SEED:-1}"
extra=(--config "${RECIPE:-$here/recipes/paper.toml}"); [ -n "${EPOCHS:-}" ] && extra+=(--epochs "$EPOCHS")
extra+=(${TRAIN_ARGS:-})

temacli data split --format llmcdsr "$src" --out "$run/data"
temacli data stats "$run/data"

temacli tags generate --domain food    --items "$run/data/items.parquet" --runs 5 --out "$run/tags/food.parquet" --force "${llm[@]}"
temacli tags generate --domain kitchen --items "$run/data/items.parquet" --runs 5 --out "$run/tags/kitchen.parquet" --force "${llm[@]}"
temacli tags match --items "$run/data/items.parquet" --tags "$run/tags/" --out "$run/tags/item_tags.parquet" --force
temacli features text --items "$run/data/items.parquet" --out "$run/features" --device "$dev"

temacli train --data "$run/data" --features "$run/features" --tags "$run/tags/item_tags.parquet" \
    --out "$run/tema" --seed "$seed" --device "$dev" "${extra[@]}"
temacli train --data "$run/data" --arch sasrec  --out "$run/sasrec"  --seed "$seed" --device "$dev" "${extra[@]}"
temacli train --data "$run/data" --arch gru4rec --out "$run/gru4rec" --seed "$seed" --device "$dev" "${extra[@]}"

for m in tema sasrec gru4rec; do
    temacli eval --model "$run/$m" --data "$run/data" --split test --json --out "$run/$m.test.sampled.json" --force > /dev/null
done
temacli eval --compare "$run/tema.test.sampled.json" "$run/sasrec.test.sampled.json" "$run/gru4rec.test.sampled.json"
temacli plot "$run/tema" "$run/sasrec" "$run/gru4rec" --out "$run/plots" --force || echo "figures skipped (pip install 'temacli[plot]')"
