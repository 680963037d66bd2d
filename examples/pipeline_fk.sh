#!/usr/bin/env bash
# The whole TEMA-LLM pipeline on ../shared/data/amazon-food-kitchen (our leave-one-out split of the raw log).
# Every stage is one visible temacli line; change a line to swap a stage.
# Usage: bash examples/pipeline_fk.sh [RUN_DIR]
# Environment: MODEL (LiteLLM model for the tags; default: the offline local model), API_BASE, DEVICE (auto),
#              EPOCHS (100), SEED (1), TRAIN_ARGS (e.g. "--softmax sampled --dim 128 --max-len 20" on a CPU)
set -euo pipefail
src="${SRC:-../shared/data/amazon-food-kitchen}"
run="${1:-runs/fk}"
llm=(); [ -n "${MODEL:-}" ] && llm+=(--model "$MODEL"); [ -n "${API_BASE:-}" ] && llm+=(--api-base "$API_BASE")
dev="${DEVICE:-auto}"; epochs="${EPOCHS:-100}"; seed="${SEED:-1}"; extra=(${TRAIN_ARGS:-})

temacli data split --interactions "$src/interactions.csv" --items "$src/items.csv" --domains food,kitchen --out "$run/data"
temacli data stats "$run/data"

temacli tags generate --domain food    --items "$run/data/items.parquet" --runs 5 --out "$run/tags/food.parquet" "${llm[@]}"
temacli tags generate --domain kitchen --items "$run/data/items.parquet" --runs 5 --out "$run/tags/kitchen.parquet" "${llm[@]}"
# the paper matches with the LLM (--method llm "${llm[@]}"); the offline default is the embedding method
temacli tags match --items "$run/data/items.parquet" --tags "$run/tags/" --out "$run/tags/item_tags.parquet"

temacli features text --items "$run/data/items.parquet" --out "$run/features" --device "$dev"
# with CLIP weights and images: temacli features clip --items ... --out "$run/features" --pretrained FILE --images-dir DIR

temacli train --data "$run/data" --features "$run/features" --tags "$run/tags/item_tags.parquet" \
    --out "$run/tema" --epochs "$epochs" --seed "$seed" --device "$dev" "${extra[@]}"
temacli train --data "$run/data" --model sasrec  --out "$run/sasrec"  --epochs "$epochs" --seed "$seed" --device "$dev" "${extra[@]}"
temacli train --data "$run/data" --model gru4rec --out "$run/gru4rec" --epochs "$epochs" --seed "$seed" --device "$dev" "${extra[@]}"

for m in tema sasrec gru4rec; do
    for p in sampled full; do
        temacli eval --model "$run/$m" --data "$run/data" --split test --protocol $p --json --out "$run/$m.test.$p.json" > /dev/null
    done
done
temacli eval --compare "$run/tema.test.sampled.json" "$run/sasrec.test.sampled.json" "$run/gru4rec.test.sampled.json"
temacli eval --compare "$run/tema.test.full.json" "$run/sasrec.test.full.json" "$run/gru4rec.test.full.json"
temacli recommend --model "$run/tema" --data "$run/data" --user "$(sed -n 2p "$src/interactions.csv" | cut -d, -f1)" --k 10 --explain
