#!/usr/bin/env bash
# `make gpu-check`: what CPU tests cannot cover, on the GPUs of this machine (never in CI).
# FSDP (FSDP2 fully_shard) SFT and GRPO on a random-initialised Qwen2-VL-2B-size model in bf16-mixed with
# fp32 master weights, each export reloaded by from_pretrained; then DDP for comparison; GRPO with the vLLM
# backend (when vllm is installed) and each GRPO run's step time split; SFT tokens/s and MFU, HF vs vLLM
# rollout tokens/s and their greedy agreement (scripts/gpu_speed.py). Prints one summary line per check and
# the GPU name; paste the output and the date into the README.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${GPU_CHECK_OUT:-outputs/gpu_check}
rm -rf "$OUT"; mkdir -p "$OUT"
N=$($PY -c "import torch; print(torch.cuda.device_count())")
[ "$N" -ge 1 ] || { echo "gpu-check: no CUDA device visible"; exit 2; }
$PY -c "import torch; print('gpu-check', torch.cuda.get_device_name(0), 'x', torch.cuda.device_count(), '| torch', torch.__version__)"
date -u +"date %Y-%m-%dT%H:%M:%SZ"
COMMON=(logger=csv model=qwen2_vl_2b_random fabric=fsdp fabric.devices=$N "paths.cache_dir=$OUT/cache"
        debug=tiny debug.max_steps=4 debug.n_train=$((8 * N)) debug.n_eval=4 debug.batch_size=$((2 * N))
        debug.max_new_tokens=32)
status=0
check() {  # name, then run.py arguments
  local name=$1; shift
  local t0=$(date +%s)
  if $PY run.py "$@" "hydra.run.dir=$OUT/$name" > "$OUT/$name.log" 2>&1; then
    echo "ok   $name ($(( $(date +%s) - t0 )) s)"
  else
    echo "FAIL $name ($(( $(date +%s) - t0 )) s): tail of $OUT/$name.log"; tail -20 "$OUT/$name.log"; status=1
  fi
}
check fsdp_sft experiment=smoke "${COMMON[@]}"
check fsdp_grpo experiment=coldstart_rl_full "${COMMON[@]}" rl.kl_beta=0.04
check ddp_sft experiment=smoke "${COMMON[@]}" fabric.strategy=ddp
if $PY -c "import vllm" 2>/dev/null; then
  check grpo_vllm experiment=coldstart_rl_full "${COMMON[@]}" fabric.strategy=ddp generation.backend=vllm \
        generation.vllm.gpu_memory_utilization=0.3 rl.kl_beta=0.04
else
  echo "skip grpo_vllm: vllm is not installed (pip install -e '.[vllm]')"
fi
$PY - "$OUT" <<'PY' || status=1
import csv, json, sys, time
from pathlib import Path
import torch
from transformers import Qwen2VLForConditionalGeneration
out = Path(sys.argv[1])
for run in ("fsdp_sft", "fsdp_grpo", "ddp_sft", "grpo_vllm"):
    stages = out / run / "stages.json"
    if not stages.exists():
        continue
    for name, s in json.loads(stages.read_text()).items():
        model = Path(s["dir"]) / "model"
        if s["kind"] in ("sft", "grpo") and (model / "config.json").exists():
            t0 = time.time()
            m = Qwen2VLForConditionalGeneration.from_pretrained(model, dtype=torch.bfloat16)
            n = sum(p.numel() for p in m.parameters())
            print(f"ok   {run}/{name}: export reloaded by from_pretrained ({n / 1e9:.2f}B params, "
                  f"{time.time() - t0:.0f} s); summary {json.dumps({k: v for k, v in s['summary'].items() if not isinstance(v, (list, dict))})}")
        if s["kind"] == "grpo":  # one GRPO step's time split, averaged over the run's steps
            for csv_path in Path(s["dir"]).rglob("metrics.csv"):
                rows = [r for r in csv.DictReader(open(csv_path)) if r.get("time/step_s")]
                keys = [k for k in rows[0] if k.startswith("time/")] if rows else []
                split = ", ".join(f"{k[5:-2]} {sum(float(r[k]) for r in rows if r[k]) / len(rows):.2f} s" for k in keys)
                print(f"ok   {run}/{name}: GRPO step split ({len(rows)} steps): {split}")
PY
echo "== throughput (scripts/gpu_speed.py)"
$PY scripts/gpu_speed.py --out "$OUT/speed" || status=1
echo "== pytest -m gpu (the tests that need CUDA)"
$PY -m pytest -m gpu -q -p no:cacheprovider || status=1
exit $status
