#!/usr/bin/env bash
# Rebuilds img2text2img/pretrained/captioner, the Flickr8k captioner, as the exact sequence of steps its lineage took:
#   1. EfficientNet-Lite0 features (frozen) + soft attention, 6 epochs with label smoothing; one self-critical
#      (CIDEr-D) run from it; the two averaged.
#   2. The encoder's last 5 blocks fine-tuned on photos with the decoder, 3 epochs; a self-critical epoch; averaged.
#   3. A word detector added (its 10 likeliest words become cells the decoder attends to), 3 more epochs; a
#      self-critical epoch; averaged.
#   4. One more round of step 3's two stages from step 3's model; the three (start, round, its self-critical epoch)
#      averaged. Decoded at beam 5 with length normalisation 1.0 and say_once (chosen on validation), with open
#      vocabulary, whose adapter (fine-tuned features -> the frozen head's) is fitted last, into the package's
#      img2text2img/openvocab/adapters/ under the new encoder's hash (it replaces nothing there).
# Needs Flickr8k and the EfficientNet-Lite0 weights. Every step resumes when cut: run the script again.
# Wall time and the scores it should reach: docs/TRAINING.md. Usage: bash recipes/captioner.sh
source "$(dirname "$0")/lib.sh"
R=$RUNS/captioner
T=${THREADS:-2}
scst() {  # scst OUT FROM [extra recipe options]: one self-critical run from FROM
  local out=$1 from=$2; shift 2
  train "$out" train captioner --init-from "$from" --scst --batch-size 32 --lr 1e-4 --eval-every 94 \
    --val-images 500 --threads "$T" "$@"
}
# 1
train "$R/base" train captioner --model efficientnet_lite0+attention --data flickr8k --epochs 6 --lr 2e-3 \
  --warmup-steps 100 --label-smoothing 0.1 --val-images 500 --threads "$T"
scst "$R/base-scst" "$R/base/best" --epochs 2 --warmup-steps 20 --label-smoothing 0.1
once "$R/stage1" "$I2T" average "$R/base/best" "$R/base-scst/last" --out "$R/stage1"
# 2
FT=(--encoder-trainable-blocks 5 --group-images --batch-size 13 --epochs 3 --val-images 500 --patience 5
    --label-smoothing 0.1)
train "$R/ft" train captioner --init-from "$R/stage1" "${FT[@]}" --lr 1e-4 --threads "$T"
scst "$R/ft-scst" "$R/ft/best" --epochs 1 --encoder-trainable-blocks 5 --label-smoothing 0.1
once "$R/stage2" "$I2T" average "$R/ft/best" "$R/ft-scst/last" --out "$R/stage2"
# 3
ATTR=(--attribute-words 10 --attribute-weight 0.02)
train "$R/attr" train captioner --init-from "$R/stage2" "${FT[@]}" "${ATTR[@]}" --lr 2e-4 --threads "$T"
scst "$R/attr-scst" "$R/attr/best" --epochs 1 --encoder-trainable-blocks 5 --label-smoothing 0.1 \
  --attribute-weight 0.02
once "$R/stage3" "$I2T" average "$R/attr/best" "$R/attr-scst/last" --out "$R/stage3"
# 4
train "$R/round2" train captioner --init-from "$R/stage3" "${FT[@]}" "${ATTR[@]}" --lr 2e-4 --threads "$T"
scst "$R/round2-scst" "$R/round2/best" --epochs 1 --encoder-trainable-blocks 5 --label-smoothing 0.1 \
  --attribute-weight 0.02
once "$R/final" "$I2T" average "$R/stage3" "$R/round2/best" "$R/round2-scst/last" --out "$R/final"
M=$(ship_as "$R/final" captioner --set beam_size=5 --set length_alpha=1.0 --set say_once=true --set open_vocab=true)
once "$R/adapter.json" "$PY" "$ROOT/scripts/fit_openvocab_adapter.py" --model "$M" --out "$R/adapter.json"
once "$R/test.json" "$I2T" eval captioner --model "$M" --data flickr8k --split test --out "$R/test.json"
