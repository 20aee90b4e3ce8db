#!/usr/bin/env bash
# Train the demo model shipped in listener/data/ (ResNet18, float16), then
# measure it on audio it never saw, and append those figures to its model card.
#
#   scripts/train_demo_model.sh               # stage 1 (60 min) + stage 2 (40 min) + evaluate
#   RESUME=1 scripts/train_demo_model.sh      # continue an interrupted run from its checkpoints
#   SKIP_TRAIN=1 scripts/train_demo_model.sh  # only re-run the held-out evaluation
#   BUDGET=20m scripts/train_demo_model.sh    # a shorter fine-tune (stage 2)
#   BASE=w.safetensors scripts/train_demo_model.sh  # skip stage 1: fine-tune w
#   EQ_DB=6 BASE=w.safetensors scripts/train_demo_model.sh  # stage 2 with --eq-db 6
#                                   # (tried: the selection rule kept the committed model)
#   SNR_DB="-15 15" BASE=w.safetensors scripts/train_demo_model.sh  # stage 2 at other SNRs
#   TEACHER=e.safetensors BASE=w.safetensors scripts/train_demo_model.sh  # stage 2 learning
#                                   # from a teacher too (--teacher, e.g. a listener ensemble)
#   PATIENCE=60 ...                 # run the whole budget (a start selected on the same
#                                   # validation draw scores optimistically at epoch 0)
#   VAL_SEED=100 ...                # stage 2's per-epoch validation windows drawn afresh
#                                   # (--val-seed), not the draw its start was chosen on
#
# The recipe, on ../shared/data/train/: calls mixed into hydrophone and
# recorder backgrounds at live-stream SNRs, AAC round trips, band limits and
# random window levels, sources balanced; the real Orcasound HLS segments of
# ../shared/data/hls/ are site audio (--background, screened by the committed
# demo model, used as beds and negatives). The unlabelled/ folder is NOT
# used: it may hold calls.
#
# Stage 1: a ResNet18 from scratch, every layer, window levels -20..+10 dB
# re 0.05 RMS (the committed model of commit dfde385 is this stage's output:
# BASE= it to skip the hour). Stage 2: fine-tune every layer from it at the
# live streams' levels, -55..+25 dB (the default --gain-db: live Orcasound
# segments sit at -53, -31 and +24 dB, scripts/level_survey.py; the
# spectrogram is not normalised, so the model must train at the levels it
# will hear, and stage 1's model loses recall below -20 dB). A run from
# scratch at -55..+25 was unstable (validation fell from 0.84 at epoch 10
# and had not recovered 20 epochs later), hence the two stages.
#
# Why from scratch first: every demo model before dfde385 descended from
# commit 7fd7a17's, trained in 8 short epochs on a split of its own: 32 of
# the 67 files the later runs held out had trained it. A model trained by
# listener train records the files it trained on (trained_on), and --init
# keeps them out of validation, so stage 2 is validated on unseen files.
#
# Selection: a moving average of the weights (decay 0.99, about 5 epochs),
# 4 and 6 validation windows per held-out call and background file, patience
# 20 and the whole budget. Then scripts/demo_selection.py, BEFORE the held-out
# check: the new model replaces the committed one only when it scores higher
# on held-out files that neither model's chain trained on (both record
# their files; for a model that predates that record, pass the list of its
# files to demo_selection.py, as scripts/demo_7fd7a17_trained_on.txt was).
# When the committed model stays, the script puts it back and stops.
#
# The shipped model (2026-12-05) is stage 2 run a second time with a teacher:
#   1. commit 5e26406's model (stages 1 and 2 above; git show
#      5e26406:listener/data/demo_resnet18.safetensors > shipped.safetensors);
#   2. the eighth candidate of docs/quality.md, a band-normalised network from
#      scratch (listener train ... --band-norm --patience 60 --epochs 90
#      --time-budget 45m, stage 1's arguments without --gain-db; 41 min);
#   3. listener ensemble shipped.safetensors eighth.safetensors --out ens.safetensors
#   4. PATIENCE=60 BASE=shipped.safetensors TEACHER=ens.safetensors
#      scripts/train_demo_model.sh  (40 min; it kept epoch 2, which the fine-tune
#      check and then the selection rule accepted by 0.001).
# PATIENCE=60 because the start was selected on this very validation draw (same
# seed and files), so its epoch-0 figure is optimistic and patience would end the
# run while the learning rate is still high.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# The scripts below import this checkout's listener too, not an installed one.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
data="${DATA:-../shared/data}"  # relative: the card names it
out="$root/listener/data/demo_resnet18.safetensors"
ckpt="${CKPT:-${TMPDIR:-/tmp}/listener_demo_resnet18.ckpt.pt}"
previous="${TMPDIR:-/tmp}/demo_resnet18_previous.safetensors"  # the committed demo model
listener="${PYTHON:-python3} -m listener"
cd "$root"  # python -m imports this checkout's listener

common=(--background "$data/hls/rpi_orcasound_lab" --screen-weights "$previous" --half
        --architecture resnet18 --steps 20 --batch-size 16 --seed 0 --val-fraction 0.2
        --patience "${PATIENCE:-20}" --ema-decay 0.99 --val-per-call-file 4 --val-per-background-file 6
        --model-id listener-demo-resnet18)
if [[ "${SKIP_TRAIN:-0}" != 1 ]]; then
  git -C "$root" show HEAD:listener/data/demo_resnet18.safetensors > "$previous"
  base="${BASE:-}"
  if [[ -z "$base" ]]; then
    # Stage 1: from scratch at the earlier level range (-20..+10 dB); a run
    # from scratch at -55..+25 is unstable (validation fell from 0.84 at
    # epoch 10 and never recovered in 30 epochs).
    base="${TMPDIR:-/tmp}/demo_resnet18_stage1.safetensors"
    [[ "${RESUME:-0}" == 1 ]] || rm -f "$ckpt.stage1"
    $listener train "$data/train" "${common[@]}" --out "$base" --checkpoint "$ckpt.stage1" \
      --epochs 90 --time-budget "${BUDGET1:-60m}" --gain-db -20 10
  fi
  # Stage 2: fine-tune every layer at the live streams' levels (the default
  # --gain-db); --init keeps the files the base trained on out of validation.
  [[ "${RESUME:-0}" == 1 ]] || rm -f "$ckpt"
  $listener train "$data/train" "${common[@]}" --init "$base" --out "$out" \
    --checkpoint "$ckpt" --epochs 60 --time-budget "${BUDGET:-40m}" --eq-db "${EQ_DB:-0}" \
    --snr-db ${SNR_DB:--10 15} ${TEACHER:+--teacher "$TEACHER"} ${VAL_SEED:+--val-seed "$VAL_SEED"}
  # Against the committed model, on held-out files neither trained on. It
  # exits 3 when the committed model stays: then put it back, and stop
  # before any held-out figure of the rejected model exists.
  verdict=0
  ${PYTHON:-python3} "$root/scripts/demo_selection.py" "${out%.safetensors}.md" "$data" "$out" \
    "$previous" || verdict=$?
  if [[ $verdict == 3 ]]; then
    git -C "$root" checkout -- listener/data/demo_resnet18.safetensors listener/data/demo_resnet18.md
    echo "the committed demo model stays; no held-out check run" >&2
    exit 0
  fi
  [[ $verdict == 0 ]] || exit "$verdict"
fi

# Held-out check: the 20 labelled Orcasound Lab clips and the L pod recording.
eval_dir="${EVAL_DIR:-${TMPDIR:-/tmp}/listener_demo_eval}"
rm -rf "$eval_dir" && mkdir -p "$eval_dir"
$listener evaluate "$data/clips" --weights "$out" --out "$eval_dir" \
  --target-precision 0.9 | tee "$eval_dir/summary.txt"
$listener detect "$root/listener/data/lpod_orcasound_22050hz.wav" --weights "$out" \
  --json "$eval_dir/lpod.json" --quiet
# The real Orcasound HLS segments (no labels; used in training as site audio).
for ts in "$data"/hls/rpi_orcasound_lab/*/*.ts; do
  $listener detect "$ts" --weights "$out" --json "$eval_dir/hls_$(basename "$ts" .ts).json" --quiet
done
python3 "$root/scripts/demo_card_figures.py" "$eval_dir" "${out%.safetensors}.md"
