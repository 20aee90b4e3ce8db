#!/usr/bin/env bash
# Train the demo model shipped in listener/data/ (ResNet18, float16), then
# measure it on audio it never saw, and append those figures to its model card.
#
#   scripts/train_demo_model.sh            # train + evaluate (~25-30 min on 2 CPU cores)
#   RESUME=1 scripts/train_demo_model.sh   # continue an interrupted run from its checkpoint
#   SKIP_TRAIN=1 scripts/train_demo_model.sh  # only re-run the held-out evaluation
#
# Trains on ../shared/data/train/ ONLY. Never add ../shared/data/clips/ or the
# L pod demo recording: they are the held-out check reported in the card.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
data="${DATA:-$root/../shared/data}"
out="$root/listener/data/demo_resnet18.safetensors"
ckpt="${CKPT:-${TMPDIR:-/tmp}/listener_demo_resnet18.ckpt.pt}"

if [[ "${SKIP_TRAIN:-0}" != 1 ]]; then
  [[ "${RESUME:-0}" == 1 ]] || rm -f "$ckpt"
  listener train "$data/train" --out "$out" --checkpoint "$ckpt" --half \
    --architecture resnet18 --epochs 8 --steps 12 --batch-size 16 --lr 2e-3 \
    --seed 0 --val-fraction 0.2 --patience 4
fi

# Held-out check: the 20 labelled Orcasound Lab clips and the L pod recording.
eval_dir="${TMPDIR:-/tmp}/listener_demo_eval"
rm -rf "$eval_dir" && mkdir -p "$eval_dir"
listener evaluate "$data/clips" --weights "$out" --out "$eval_dir" \
  --target-precision 0.9 | tee "$eval_dir/summary.txt"
listener detect "$root/listener/data/lpod_orcasound_22050hz.wav" --weights "$out" \
  --json "$eval_dir/lpod.json" --quiet
python3 "$root/scripts/demo_card_figures.py" "$eval_dir" "${out%.safetensors}.md"
