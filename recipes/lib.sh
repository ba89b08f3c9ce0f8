# Shared by the recipes (sourced, not run): where runs go, and steps that are skipped once done and resumed when cut.
# RUNS (default ~/.cache/img2text2img/recipes) holds one folder per recipe; AS=NAME ships the result into the
# package as img2text2img/pretrained/NAME (replacing it), otherwise into the recipe's own folder.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
I2T=${I2T:-$([ -x "$ROOT/.venv/bin/i2t" ] && echo "$ROOT/.venv/bin/i2t" || echo i2t)}
PY=${PY:-$([ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}
RUNS=${RUNS:-${I2T_RUNS:-$HOME/.cache/img2text2img/recipes}}

# train OUT ARGS...: `i2t ARGS --out OUT`, skipped when OUT holds a finished run, resumed when OUT holds a cut one.
train() {
  local out=$1; shift
  if [ -f "$out/summary.json" ]; then echo "[recipe] $out: done, skipped"; return; fi
  local start=$(date +%s)
  if [ -f "$out/last/config.json" ]; then "$I2T" "$@" --out "$out" --resume; else "$I2T" "$@" --out "$out"; fi
  echo "[recipe] $out: $(( ($(date +%s) - start) / 60 )) min"
}

# once OUT COMMAND...: run COMMAND unless OUT already exists (averaging, shipping, scoring).
once() {
  local out=$1; shift
  if [ -e "$out" ]; then echo "[recipe] $out: done, skipped"; return; fi
  "$@"
}

# ship_as RUN NAME [--set K=V ...]: ship RUN into $RUNS/NAME-shipped, or into the package when AS=NAME.
ship_as() {
  local run=$1 name=$2; shift 2
  if [ "${AS:-}" = "$name" ]; then "$I2T" ship "$run" --as "$name" --force "$@"; echo "$ROOT/img2text2img/pretrained/$name"
  else once "$R/shipped" "$I2T" ship "$run" --as "$R/shipped" "$@" >&2; echo "$R/shipped"; fi
}
