#!/usr/bin/env bash
# The GPU check (`just gpu-check`): runs on a one-GPU machine that has PyTorch with CUDA,
# torchvision and timm, using the prebuilt binary .gpu/gpu-check(.gz) from `just gpu-pack` (the
# CUDA toolchain does not travel). Phases, each under its own time limit, so one that hangs or
# fails costs only itself: libraries, env, ops, grads, steps, dist (NCCL with one rank and
# `train-conv --gpus 1`), throughput (ours), throughput (PyTorch). Writes docs/data/gpu-check-YYYY-MM-DD.json (and a copy in $OUT when set) and prints
# a short table last. Typical total: ~4-5 minutes; the limits add up to 9.5 (a device command may run 10).
#
# PYTHON: the interpreter with torch (default /opt/torch/.venv/bin/python3 if present, else python3).
# PHASES: the phases to run, space-separated (default all: env ops host-side grads steps dist
# throughput torch), for a rerun after a fix that spends the device time only on what it
# touched; the others are reported as skipped, in docs/data/gpu-check-DATE-PHASE-....json.
set -u
cd "$(dirname "$0")/.."
source scripts/gpu-env.sh
work=$(mktemp -d)
mkdir -p docs/data
log() { echo "[gpu-check $(date -u +%T)] $*"; }

bin=.gpu/gpu-check
if [ ! -x "$bin" ] && [ -f "$bin.gz" ]; then gunzip -c "$bin.gz" > "$bin" && chmod +x "$bin"; fi
if [ ! -x "$bin" ]; then echo "gpu-check: no $bin; build it with 'just build-cuda && just gpu-pack'" >&2; exit 2; fi

missing=$(ldd -r "$bin" 2>&1 | grep -E "not found|undefined symbol" || true)
echo "{\"libraries\": $(printf '%s' "$missing" | "$py" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}" > "$work/libs.json"
if [ -n "$missing" ]; then log "missing libraries:"; echo "$missing"; fi

all_phases="env ops host-side grads steps dist throughput torch"
phases=${PHASES:-$all_phases}
for p in $phases; do
  case " $all_phases " in *" $p "*) ;; *) echo "gpu-check: PHASES names '$p'; the phases are: $all_phases" >&2; exit 2;; esac
done
# A partial run's report is named after its phases, beside the full one rather than over it.
out=docs/data/gpu-check-$(date -u +%F)${PHASES:+-$(echo $phases | tr ' ' '-')}.json
selected() { case " $phases " in *" $1 "*) return 0;; *) echo "{\"skipped\": true}" > "$work/$1.json"; log "phase $1 skipped (PHASES)"; return 1;; esac; }

phase() { # name limit_s
  selected "$1" || return 0
  log "phase $1 (limit $2 s)"
  timeout "$2" "$bin" "$1" --out "$work/$1.json" > "$work/$1.log" 2>&1
  local rc=$?
  tail -3 "$work/$1.log"
  [ -f "$work/$1.json" ] || echo "{\"pass\": false, \"rc\": $rc, \"log_tail\": $(tail -20 "$work/$1.log" | "$py" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}" > "$work/$1.json"
}
phase env 20
phase ops 100
phase host-side 20
phase grads 50
phase steps 85
phase dist 60
phase throughput 130
if selected torch; then
  log "phase torch (limit 120 s)"
  timeout 120 "$py" bench/torch_gpu_steps.py --out "$work/torch.json" > "$work/torch.log" 2>&1 || tail -5 "$work/torch.log"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$work/smi.txt" 2>/dev/null || true

"$py" - "$work" "$out" <<'PY'
import json, os, sys, datetime
work, out = sys.argv[1], sys.argv[2]
def load(name):
    try:
        v = json.load(open(os.path.join(work, name + ".json")))
    except Exception as e:
        return {"pass": False, "error": f"{name}: {e}"}
    if isinstance(v, dict) and v.get("incomplete"):  # rows so far of a phase that died or ran out of time
        try:
            v["log_tail"] = "".join(open(os.path.join(work, name + ".log")).readlines()[-20:])
        except Exception:
            pass
    return v
env, libs, ops, host, grads, steps, dist, ours, torch = (load(n) for n in ["env", "libs", "ops", "host-side", "grads", "steps", "dist", "throughput", "torch"])
smi = open(os.path.join(work, "smi.txt")).read().strip() if os.path.exists(os.path.join(work, "smi.txt")) else ""
rows = []
# PyTorch runs each model once, channels_last for ResNet-50: both of our layouts compare with it.
theirs = {r.get("model"): r for r in torch.get("throughput", [])}
for r in ours.get("throughput", []):
    t = theirs.get(r.get("model"), {})
    row = dict(r)
    for k in ["torch_img_s", "torch_step_ms", "torch_mem_gb", "torch_config", "torch_split_ms", "torch_kernels"]:
        row[k] = t.get(k)
    if "error" in t:
        row["torch_error"] = t["error"]
    if r.get("ours_img_s") and t.get("torch_img_s"):
        row["ratio"] = r["ours_img_s"] / t["torch_img_s"]
    rows.append(row)
report = {
    "date": datetime.date.today().isoformat(), "nvidia_smi": smi, "env": env, "torch_env": torch.get("env"),
    "libraries_missing": libs.get("libraries", ""), "ops_pass": ops.get("pass"), "ops_incomplete": ops.get("incomplete", False),
    "ops_log_tail": ops.get("log_tail"), "ops": ops.get("ops", ops),
    "host_side": host, "grads": grads, "steps": steps, "dist": dist, "throughput": rows,
}
json.dump(report, open(out, "w"), indent=2)
if os.environ.get("OUT"):
    json.dump(report, open(os.path.join(os.environ["OUT"], os.path.basename(out)), "w"), indent=2)
bad = [o for o in report["ops"] if isinstance(o, dict) and not o.get("pass")] if isinstance(report["ops"], list) else ([] if ops.get("skipped") else ["ops phase failed"])
print(f"\nreport: {out}")
print(f"device: {env.get('device', smi)}  cudnn {env.get('cudnn')}  torch {(torch.get('env') or {}).get('torch')}")
print("ops: skipped" if ops.get("skipped") else f"ops: {len(report['ops']) if isinstance(report['ops'], list) else 0} rows, {len(bad)} failing")
if report["ops_incomplete"]:
    print("  ops phase INCOMPLETE (crashed or cut off after the rows above); its log ends:")
    print("   ", (report["ops_log_tail"] or "").strip().replace("\n", "\n    ")[-1200:])
for o in bad[:12]:
    print("  FAIL", o if isinstance(o, str) else f"{o.get('name')} {o.get('dtype')} {o.get('what')} err={o.get('rel_error', o.get('error'))}")
for o in [o for o in host.get("host_side", [host]) if not o.get("pass") and not o.get("skipped")]:
    print("  FAIL host side:", json.dumps(o)[:300])
verdict = lambda p: "skipped" if p.get("skipped") else ("pass" if p.get("pass") else "FAIL")
print(f"host side: {verdict(host)}  grads: {verdict(grads)}  steps: {verdict(steps)}  dist: {verdict(dist)} (NCCL {dist.get('nccl')})")
tr = steps.get("bf16_tracks_f32") or {}
if tr:
    print(f"  bf16 vs f32 loss curve (ResNet-18, 30 steps): largest gap {tr.get('max_gap_over_first_loss', float('nan')):.3f} of the first loss at step {tr.get('max_gap_step')} (bound {tr.get('tolerance')}): {'pass' if tr.get('pass') else 'FAIL'}")
dr = steps.get("default_run") or {}
if dr.get("estimated_run_s") is not None:
    print(f"  default CIFAR-10 run ({dr.get('recipe')}, {dr.get('epochs')} epochs), estimated: {dr['estimated_run_s']:.0f} s (target {dr.get('target_s'):.0f} s: {'met' if dr.get('meets_target') else 'MISSED'}); {dr.get('measured', {}).get('images_per_second', 0):.0f} img/s")
elif dr.get("error"):
    print("  default CIFAR-10 run estimate failed:", dr["error"][:300])
step_ms = {r.get("model", "").split("_")[0]: r.get("ours_step_ms") for r in rows if r.get("layout", "nchw") == "nchw" and r.get("algorithms", "heuristic") == "heuristic" and r.get("attention", "unfused") == "unfused"}
for a in dist.get("allreduce", []) if isinstance(dist.get("allreduce"), list) else []:
    est = {(e["gpus"], e["link"]): e["ms"] for e in a.get("estimated", [])}
    ms = step_ms.get(a["model"].split("_")[0])
    share = f", {100 * est.get((8, 'nvlink'), 0) / ms:.1f}% of a step" if ms else ""
    print(f"  all-reduce {a['model']}: {a['one_rank_ms']:.2f} ms with 1 rank; 8 GPUs est. {est.get((8, 'nvlink'), 0):.2f} ms NVLink{share}, {est.get((8, 'pcie'), 0):.1f} ms PCIe")
if not dist.get("pass") and not dist.get("skipped"):
    print("  dist:", json.dumps({k: v for k, v in dist.items() if k != "allreduce"})[:600])
print(f"{'model':<24}{'layout':<15}{'conv algos':<11}{'attention':<10}{'batch':>6}{'ours img/s':>12}{'torch img/s':>13}{'ratio':>7}{'ours GB':>9}{'torch GB':>9}")
for r in rows:
    f = lambda v, p=1: "-" if v is None else f"{v:.{p}f}"
    print(f"{r.get('model',''):<24}{r.get('layout','nchw'):<15}{r.get('algorithms','heuristic'):<11}{r.get('attention','unfused'):<10}{r.get('batch',''):>6}{f(r.get('ours_img_s')):>12}{f(r.get('torch_img_s')):>13}{f(r.get('ratio'),2):>7}{f(r.get('ours_mem_gb')):>9}{f(r.get('torch_mem_gb')):>9}")
    if "error" in r: print("   ours:", r["error"][:300])
    if r.get("torch_config"): print("   torch:", ", ".join(f"{k} {v}" for k, v in r["torch_config"].items() if k not in ("steps", "warmup")))
    if r.get("torch_config") and (r["torch_config"].get("steps"), r["torch_config"].get("warmup")) != (r.get("steps"), r.get("warmup")):
        print("   WARNING: the sides timed different step counts:", r["torch_config"].get("steps"), "vs", r.get("steps"))
    split = lambda d: "/".join("-" if d is None or d.get(k) is None else f"{d[k]:.1f}" for k in ["forward", "backward", "optimizer"])
    if r.get("ours_split_ms"): print(f"   forward/backward/optimizer ms, synchronised: ours {split(r.get('ours_split_ms'))}, torch {split(r.get('torch_split_ms'))}")
    ok, tk = r.get("ours_kernels") or {}, r.get("torch_kernels") or {}
    if ok.get("top"):
        print(f"   our kernels {ok.get('timed_ms', 0):.1f} ms of the step (the rest: cuBLAS, candle): " + ", ".join(f"{k['name']} {k['ms']:.1f}" for k in ok["top"][:5]))
    if tk.get("top"):
        print(f"   torch kernels {tk.get('timed_ms', 0):.1f} ms in all: " + ", ".join(f"{k['name'][:40]} {k['ms']:.1f}" for k in tk["top"][:4]))
    if r.get("timing_fallbacks"): print("   timing fell back to the heuristic:", "; ".join(r["timing_fallbacks"])[:400])
PY
rm -rf "$work"
