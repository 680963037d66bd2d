#!/usr/bin/env bash
# Train TEMA-LLM, SASRec and GRU4Rec over several seeds plus the ablations of Tables IV-VI on one dataset,
# then evaluate every run once on the test split under both protocols and print comparison tables.
# The runs go in parallel (JOBS at a time): on one GPU they share it, on a CPU set JOBS=1.
#
# Usage: bash examples/train_eval_grid.sh DATA FEATURES TAGS_ROOT OUT
#   DATA       dataset folder (temacli data split)
#   FEATURES   features folder (temacli features text|clip)
#   TAGS_ROOT  folder with item_tags variants, each a sub-folder holding item_tags.parquet + tag_vocab.parquet:
#              main/ (the default match: hybrid, weighted), keyword/ (--method keyword),
#              topr/ (--select top-r), threshold/ (--select threshold)
#   OUT        where the model folders, eval JSONs and logs go
# Environment: SEEDS ("1 2 3"), EPOCHS (100), JOBS (parallel runs, 16),
#              RECIPE (train recipe, default examples/recipes/paper.toml; examples/recipes/cpu.toml on a CPU),
#              TRAIN_ARGS (extra train flags; they and EPOCHS override the recipe),
#              ONLY (regex of run names to run, e.g. "tema_s[0-9]+|abl_base_s1"),
#              TEMACLI (command, default temacli), TIME_LIMIT (minutes per training run: no new epoch
#              starts after it, the best epoch so far is kept; `train --time-limit`; default none),
#              WEIGHTS (weight files evaluated, default "model.safetensors"; with TRAIN_ARGS="--early-stop hr@10"
#              e.g. "per-domain model.valid-loss.safetensors": LLMCDSR's selection and the paper's),
#              EVAL_ARGS (extra eval flags, e.g. "--ks 1,3,5,10")
set -uo pipefail
data="$1"; feats="$2"; tags="$3"; out="$4"
seeds="${SEEDS:-1 2 3}"; epochs="${EPOCHS:-100}"; jobs="${JOBS:-16}"
tc="${TEMACLI:-temacli}"; extra="${TRAIN_ARGS:-}"
recipe="${RECIPE:-$(cd "$(dirname "$0")" && pwd)/recipes/paper.toml}"
[ -n "${TIME_LIMIT:-}" ] && extra="--time-limit $TIME_LIMIT $extra"
mkdir -p "$out"

runs=()   # name|flags
for s in $seeds; do
    runs+=("tema_s$s|--features $feats --tags $tags/main/item_tags.parquet --seed $s")
    runs+=("sasrec_s$s|--arch sasrec --seed $s")
    runs+=("gru4rec_s$s|--arch gru4rec --seed $s")
done
s1="${seeds%% *}"
# Table IV: base (no tags, one attention) < + keyword tags < + matched tags < + multi-attention (= tema)
runs+=("abl_base_s$s1|--features $feats --attention single --streams id,tex --seed $s1")
runs+=("abl_keyword_s$s1|--features $feats --tags $tags/keyword/item_tags.parquet --attention single --seed $s1")
runs+=("abl_matched_s$s1|--features $feats --tags $tags/main/item_tags.parquet --attention single --seed $s1")
# Table V: tag representation
runs+=("abl_onehot_s$s1|--features $feats --tags $tags/main/item_tags.parquet --tag-weights onehot --seed $s1")
runs+=("abl_multihot_s$s1|--features $feats --tags $tags/main/item_tags.parquet --tag-weights multihot --seed $s1")
# Table VI: tag selection
runs+=("abl_topr_s$s1|--features $feats --tags $tags/topr/item_tags.parquet --seed $s1")
runs+=("abl_threshold_s$s1|--features $feats --tags $tags/threshold/item_tags.parquet --seed $s1")

if [ -n "${ONLY:-}" ]; then  # keep only the runs whose name matches this extended regex
    kept=(); for r in "${runs[@]}"; do [[ "${r%%|*}" =~ ^(${ONLY})$ ]] && kept+=("$r"); done; runs=("${kept[@]}")
fi

train_one() {
    local name="${1%%|*}" flags="${1#*|}"
    local cmd="$tc train --config $recipe --data $data --out $out/$name --epochs $epochs --force --quiet --json $flags $extra"
    echo "$cmd" > "$out/$name.cmd"
    $cmd > "$out/$name.train.json" 2> "$out/$name.train.log"
    echo "trained $name (exit $?)"
}
export -f train_one; export data out epochs tc extra recipe
printf '%s\n' "${runs[@]}" | xargs -P "$jobs" -I{} bash -c 'train_one "$@"' _ {}

# every run evaluated once on test, under both protocols
# (each weight file of WEIGHTS: model.safetensors -> NAME.test.P.json, W -> NAME.W.test.P.json)
weights="${WEIGHTS:-model.safetensors}"; eval_args="${EVAL_ARGS:-}"
eval_one() {
    local name="$1" p="$2" w="$3" tag=""   # per-domain -> .per-domain, model.X.safetensors -> .X
    if [ "$w" != "model.safetensors" ]; then tag="${w%.safetensors}"; tag=".${tag#model.}"; fi
    [ -f "$out/$name/model.safetensors" ] || { echo "no model for $name"; return; }
    $tc eval --model "$out/$name" --data "$data" --split test --protocol "$p" --weights "$w" $eval_args --json \
        --out "$out/$name$tag.test.$p.json" --force > /dev/null 2>> "$out/$name.eval.log" || echo "eval failed: $name $w $p"
}
export -f eval_one; export eval_args
for r in "${runs[@]}"; do for p in sampled full; do for w in $weights; do echo "${r%%|*} $p $w"; done; done; done \
    | xargs -P "$jobs" -L 1 bash -c 'eval_one "$@"' _
for p in sampled full; do
    [ -n "${ONLY:-}" ] && break
    for s in $seeds; do
        $tc eval --compare "$out/tema_s$s.test.$p.json" "$out/sasrec_s$s.test.$p.json" "$out/gru4rec_s$s.test.$p.json" --markdown \
            > "$out/compare_s$s.$p.md" 2>&1 || true
    done
done
# figures of every run (learning curves, comparisons with seeds as error bars; needs the plot extra)
names=(); for r in "${runs[@]}"; do [ -f "$out/${r%%|*}/metrics.jsonl" ] && names+=("$out/${r%%|*}"); done
[ ${#names[@]} -gt 0 ] && { $tc plot "${names[@]}" --out "$out/plots" --force > /dev/null 2>> "$out/plot.log" \
    || echo "figures skipped (see $out/plot.log)"; }
echo "grid done"
