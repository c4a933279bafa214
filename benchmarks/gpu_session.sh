#!/usr/bin/env bash
# Every open GPU measurement in one call, for a session lent a GPU (~10 min on an H200):
#   1. conv-SN's true norm on the GPU under cuDNN's default TF32, shipped vs full_precision
#      disabled (benchmarks/gpu_conv_sn_check.py; issues 11, 12);
#   2. the critic-step table eager AND compiled beside the PyTorch-only anchor (issue 12);
#   3. lk.lipschitz_bound of ResNet-18 at 3x224x224 on the GPU (issue 15's < 1 s; needs torchvision);
#   4. torchrun with 1 rank on NCCL: train-gan, 20 steps (issue 12).
# Each part has its own timeout and a failing part does not stop the next.
#   OUT=/where/results/go bash benchmarks/gpu_session.sh
# Plumbing check on a CPU (tiny sizes; no anchor):  DEVICE=cpu SMOKE=1 OUT=/tmp/gpu_smoke bash benchmarks/gpu_session.sh
set -x
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT to the folder for the results}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
failed=0
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
[ -z "$SMOKE" ] && nvidia-smi -L

if [ -n "$SMOKE" ]; then STEPS=2; SEEDS=0; BENCH="--width 4 --batch 4 --steps 1 --warmup 0 --repeats 1"
else STEPS=20; SEEDS=0,1; BENCH="--width 64 --batch 64 --steps 100 --warmup 10 --repeats 3"; fi

timeout 300 python benchmarks/gpu_conv_sn_check.py --device "$DEVICE" --steps $STEPS --seeds $SEEDS \
    > "$OUT/conv_sn_check.md" || failed=1
cat "$OUT/conv_sn_check.md"

# shellcheck disable=SC2086  # BENCH is a list of flags
timeout 240 python benchmarks/bench_critic_step.py --device "$DEVICE" $BENCH --compile \
    --modes none torch-sn sn sn-conv gp sn+gp --json "$OUT/critic_step_compiled.json" \
    > "$OUT/critic_step_compiled.md" || failed=1
cat "$OUT/critic_step_compiled.md"
if [ -z "$SMOKE" ]; then
    timeout 150 python benchmarks/anchors/gpu_anchor_bench.py 100 > "$OUT/anchor_gpu.txt" || failed=1
    cat "$OUT/anchor_gpu.txt"
    timeout 150 python benchmarks/bound_speed.py --device "$DEVICE" --network-only --out "$OUT/bound_speed.md" || failed=1
fi

timeout 120 python -m torch.distributed.run --standalone --nproc_per_node=1 -m lipkit train-gan --data gaussians8 \
    --critic sn --steps 20 --eval-every 20 --device "$DEVICE" --out "$OUT/ddp_run" --no-progress \
    > "$OUT/ddp_run.log" 2>&1 || failed=1
tail -n 5 "$OUT/ddp_run.log"
rm -rf "$OUT/ddp_run"/ckpt-*.pt  # checkpoints are not needed back

ls -lR "$OUT"
exit $failed
