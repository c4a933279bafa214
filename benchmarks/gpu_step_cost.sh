#!/usr/bin/env bash
# Claim (c) "GP is slower per step than SN" on a lent GPU, in one call (~4 min on an H200):
#   1. benchmarks/bench_critic_step.py at the anchor's sizes (width 64, B 64 and 256),
#   2. the PyTorch-only anchor (benchmarks/anchors/gpu_anchor_bench.py) in the same call,
#      so lipkit's ratios and torch's own can be compared on one machine,
#   3. `lipkit reproduce`'s claim (c), profile "full", on cuda.
# Run from the repo root (no install needed; nothing here imports POT):
#   OUT=/where/results/go bash benchmarks/gpu_step_cost.sh
# Files: $OUT/critic_step_gpu.{json,md}, $OUT/anchor_gpu.txt, $OUT/reproduce_c/{REPORT.md,
# results.json, figures/c_step_cost.png}.
# Plumbing check on a CPU (tiny sizes, quick profile, no anchor, no nvidia-smi):
#   DEVICE=cpu SMOKE=1 OUT=/tmp/gpu_smoke bash benchmarks/gpu_step_cost.sh
set -x
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT to the folder for the results}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT/reproduce_c"
failed=0

if [ -n "$SMOKE" ]; then
    BENCH_SIZES="--width 4 --batch 4 8 --steps 1 --warmup 0 --repeats 1"
    PROFILE=quick
else
    nvidia-smi -L
    BENCH_SIZES="--width 64 --batch 64 256 --steps 100 --warmup 10 --repeats 3"
    PROFILE=full
fi
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
# Fail fast (before spending device time) if the import chain needs a package missing here.
python -c "import sys; sys.modules['ot'] = None; import lipkit.cli, lipkit.experiments.step_cost, lipkit.experiments.step_timing" || exit 1

# Every mode once at toy size (~10 s): a mode that breaks on this device shows up here, not
# minutes into the real runs; the anchor, which needs no lipkit, still runs if it does.
timeout 90 python benchmarks/bench_critic_step.py --device "$DEVICE" --width 4 --batch 4 --steps 1 \
    --warmup 0 --repeats 1 > /dev/null
lipkit_ok=$?
[ $lipkit_ok -eq 0 ] || failed=1

if [ $lipkit_ok -eq 0 ]; then
    # shellcheck disable=SC2086  # BENCH_SIZES is a list of flags
    timeout 200 python benchmarks/bench_critic_step.py --device "$DEVICE" $BENCH_SIZES \
        --json "$OUT/critic_step_gpu.json" > "$OUT/critic_step_gpu.md" || failed=1
    cat "$OUT/critic_step_gpu.md"
fi

if [ -z "$SMOKE" ]; then
    timeout 150 python benchmarks/anchors/gpu_anchor_bench.py 100 > "$OUT/anchor_gpu.txt" || failed=1
    cat "$OUT/anchor_gpu.txt"
fi

# The claim itself, through the real command (REPORT.md, results.json, the figure).
[ $lipkit_ok -eq 0 ] && timeout 180 python -c "import sys; from lipkit.cli import main; sys.exit(main(sys.argv[1:]))" \
    reproduce "--$PROFILE" --claims c --device "$DEVICE" --out "$OUT/reproduce_c" --no-progress || failed=1
# runs/c/ is deeper than the device tool brings back; its numbers are all in results.json.
rm -rf "$OUT/reproduce_c/runs"

ls -lR "$OUT"
exit $failed
