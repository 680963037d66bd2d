#!/usr/bin/env bash
# Tags with a real model, end to end on amazon-food-kitchen.
#
#   OPENAI_API_KEY=... examples/real_llm.sh                        # OpenAI (gpt-4o-mini)
#   MODEL=ollama_chat/qwen2.5:7b examples/real_llm.sh              # a local Ollama server
#   MODEL=hosted_vllm/Qwen/Qwen2.5-7B-Instruct API_BASES="http://gpu1:8000/v1 http://gpu2:8000/v1" examples/real_llm.sh
#   MODEL=temacli-local/smollm2-135m examples/real_llm.sh  # offline; hours for 28k items (docs/tags.md)
#
# Keys are read from the environment by LiteLLM; this script never passes one on a command line.
# Every step is cached (SQLite, $TEMACLI_CACHE_DIR): rerunning after an interruption resumes.
set -euo pipefail

MODEL=${MODEL:-openai/gpt-4o-mini}
OUT=${OUT:-runs/fk-real}
DATA=${DATA:-../shared/data/amazon-food-kitchen}
CONCURRENCY=${CONCURRENCY:-16}
RUNS=${RUNS:-5}
NUM_TAGS=${NUM_TAGS:-40}
API_BASES=${API_BASES:-}

base_args=()
for b in $API_BASES; do base_args+=(--api-base "$b"); done

if [[ "$MODEL" == openai/* && -z "${OPENAI_API_KEY:-}" && -z "$API_BASES" ]]; then
    echo "set OPENAI_API_KEY (or MODEL=... for another backend)" >&2
    exit 2
fi

# 1. the dataset folder (skipped when it exists)
if [[ ! -f "$OUT/data/manifest.json" ]]; then
    temacli data split --interactions "$DATA/interactions.csv" --items "$DATA/items.csv" \
        --domains food,kitchen --out "$OUT/data"
fi

# 2. Algorithm 1 for each domain
for domain in food kitchen; do
    temacli tags generate --domain "$domain" --items "$OUT/data/items.parquet" --runs "$RUNS" \
        --num-tags "$NUM_TAGS" --llm "$MODEL" "${base_args[@]}" --concurrency "$CONCURRENCY" \
        --out "$OUT/tags/$domain.parquet" --force
done

# 3. LLM matching (the paper's), hybrid selection, weighted multi-hot
temacli tags match --items "$OUT/data/items.parquet" --tags "$OUT/tags/" --method llm \
    --llm "$MODEL" "${base_args[@]}" --concurrency "$CONCURRENCY" --batch-items 8 \
    --select hybrid --top-r 5 --threshold 70 --out "$OUT/tags/item_tags.parquet" --force

# 4. Table V/VI variants are one flag away, and free: every reply is in the cache
temacli tags match --items "$OUT/data/items.parquet" --tags "$OUT/tags/" --method llm \
    --llm "$MODEL" "${base_args[@]}" --select top-r --represent onehot \
    --out "$OUT/tags-onehot/item_tags.parquet" --force

echo "done: $OUT/tags/item_tags.parquet (report: $OUT/tags/item_tags.report.json)"
