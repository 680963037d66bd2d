#!/usr/bin/env bash
# The whole TEMA-LLM pipeline on ../shared/data/amazon-food-kitchen (our leave-one-out split of the raw log).
# Every stage is one visible temacli line; change a line to swap a stage.
# Usage: bash examples/pipeline_fk.sh [RUN_DIR]
# Environment: SRC (folder with interactions.csv and items.csv; default ../shared/data/amazon-food-kitchen),
#              MODEL (LiteLLM model for the tags; default: the offline local model), API_BASE, DEVICE (auto),
#              RECIPE (train recipe; default examples/recipes/paper.toml, on a CPU examples/recipes/cpu.toml),
#              EPOCHS (default: the recipe's), SEED (1), TRAIN_ARGS (more train flags; they override the recipe)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="${SRC:-../shared/data/amazon-food-kitchen}"
run="${1:-runs/fk}"
llm=(); [ -n "${MODEL:-}" ] && llm+=(--llm "$MODEL"); [ -n "${API_BASE:-}" ] && llm+=(--api-base "$API_BASE")
dev="${DEVICE:-auto}"; seed="${SEED:-1}"
extra=(--config "${RECIPE:-$here/recipes/paper.toml}"); [ -n "${EPOCHS:-}" ] && extra+=(--epochs "$EPOCHS")
extra+=(${TRAIN_ARGS:-})

temacli data split --interactions "$src/interactions.csv" --items "$src/items.csv" --domains food,kitchen --out "$run/data"
temacli data stats "$run/data"

temacli tags generate --domain food    --items "$run/data/items.parquet" --runs 5 --out "$run/tags/food.parquet" --force "${llm[@]}"
temacli tags generate --domain kitchen --items "$run/data/items.parquet" --runs 5 --out "$run/tags/kitchen.parquet" --force "${llm[@]}"
# the paper matches with the LLM (--method llm "${llm[@]}"); the offline default is the embedding method
temacli tags match --items "$run/data/items.parquet" --tags "$run/tags/" --out "$run/tags/item_tags.parquet" --force

temacli features text --items "$run/data/items.parquet" --out "$run/features" --device "$dev"
# with CLIP weights and images: temacli features clip --items ... --out "$run/features" --pretrained FILE --images-dir DIR

temacli train --data "$run/data" --features "$run/features" --tags "$run/tags/item_tags.parquet" \
    --out "$run/tema" --seed "$seed" --device "$dev" "${extra[@]}"
temacli train --data "$run/data" --arch sasrec  --out "$run/sasrec"  --seed "$seed" --device "$dev" "${extra[@]}"
temacli train --data "$run/data" --arch gru4rec --out "$run/gru4rec" --seed "$seed" --device "$dev" "${extra[@]}"

for m in tema sasrec gru4rec; do
    for p in sampled full; do
        temacli eval --model "$run/$m" --data "$run/data" --split test --protocol $p --json --out "$run/$m.test.$p.json" --force > /dev/null
    done
done
temacli eval --compare "$run/tema.test.sampled.json" "$run/sasrec.test.sampled.json" "$run/gru4rec.test.sampled.json"
temacli eval --compare "$run/tema.test.full.json" "$run/sasrec.test.full.json" "$run/gru4rec.test.full.json"
# figures: learning curves and the test comparison (needs the plot extra: pip install 'temacli[plot]')
temacli plot "$run/tema" "$run/sasrec" "$run/gru4rec" --out "$run/plots" --force || echo "figures skipped"
temacli recommend --model "$run/tema" --data "$run/data" --user "$(sed -n 2p "$src/interactions.csv" | cut -d, -f1)" --k 10 --explain
