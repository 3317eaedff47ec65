"""Every check the issues ask for on real hardware, as one prepared script (`make gpu-check`).

A GPU is lent to this project rarely and briefly, so everything runs from one command, under
5 minutes on one GPU, and writes every output to one folder (``--out``, default
``build/gpu-check``) with a ``summary.txt``:

1. ``mixfleet devices``: the vendor tools and NVML answer, the chip is named;
2. ``mixfleet bench`` of digits-cnn and mlp-matmul on the device (samples/s, MFU);
3. a training run on the device with telemetry on: NVML readings (temperature, clocks,
   power) reach the run's ``metrics.jsonl``, none marked emulated;
4. ``benchmarks/llm_throughput.py``: tokens/s and MFU of the llama presets that fit;
5. a kill-and-resume on the device: rank 0 killed mid-run, the resumed run's final weights
   compared bit for bit with an uninterrupted run's;
6. ``mixfleet plan-job`` predicted against measured step time, when the command exists.

Without an accelerator it says so in one line and exits 0. ``--cpu`` runs the same checks on
the CPU with tiny settings (CI runs it, so the script does not rot); CPU figures are not
hardware results and the summary says so.

    .venv/bin/python benchmarks/gpu_check.py [--out DIR] [--cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def accelerator() -> str | None:
    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    return None if acc is None else acc.type


class Checks:
    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.results = out, []  # type: list[tuple[str, bool, str]]
        self.deadline = time.monotonic() + budget_s

    def run(self, name: str, argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        left = max(5.0, min(timeout_s, self.deadline - time.monotonic()))
        t0 = time.monotonic()
        try:
            p = subprocess.run([sys.executable, "-P", *argv], capture_output=True, text=True,
                               timeout=left, cwd=ROOT)
        except subprocess.TimeoutExpired as e:
            p = subprocess.CompletedProcess(argv, 124, str(e.stdout or ""),
                                            f"timed out after {left:.0f} s")
        (self.out / f"{name}.txt").write_text(
            f"$ {' '.join(argv)}\n# rc {p.returncode}, {time.monotonic() - t0:.1f} s\n"
            f"{p.stdout}\n--- stderr ---\n{p.stderr}")
        return p

    def record(self, name: str, ok: bool, line: str) -> None:
        self.results.append((name, ok, line))
        print(f"[{'ok' if ok else 'FAIL'}] {name}: {line}", flush=True)


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "gpu-check"), help="output folder")
    ap.add_argument("--cpu", action="store_true", help="run the checks on the CPU, tiny "
                    "settings (the CI half; not hardware figures)")
    ap.add_argument("--budget-s", type=float, default=280.0, help="total time (default 280)")
    args = ap.parse_args()
    dev = "cpu" if args.cpu else accelerator()
    if dev is None:
        print("gpu-check: no accelerator on this machine (torch.accelerator finds none); "
              "nothing to check")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    c = Checks(out, args.budget_s)
    tiny = args.cpu
    print(f"gpu-check on {dev} ({torch.__version__}); outputs in {out}", flush=True)

    p = c.run("devices", ["-m", "mixfleet", "devices"], 60)
    c.record("devices", p.returncode == 0, " | ".join(p.stdout.strip().splitlines()[:4])[:240])

    steps = "5" if tiny else "20"
    p = c.run("bench", ["-m", "mixfleet", "bench", "--workloads", "mlp-matmul", "digits-cnn",
                        "--devices", dev, "--steps", steps, "--out", str(out / "bench")], 120)
    c.record("bench", p.returncode == 0 and (out / "bench" / "throughput.json").exists(),
             last_line(p.stdout)[:160])

    run_steps = 60 if tiny else 400
    common = ["-m", "mixfleet", "train", str(ROOT / "examples" / "digits-cnn.toml"),
              "--nproc", "1", "--device", dev, "--resume", "never", "--json",
              "--set", f"train.steps={run_steps}", "--set", "checkpoint.interval=20",
              "--set", "telemetry.hz=5"]
    ref_dir, kill_dir = out / "run-reference", out / "run-killed"
    p = c.run("train-reference", [*common, "--run-dir", str(ref_dir),
                                  "--set", "launch.max_restarts=1"], 120)
    metrics = ref_dir / "metrics.jsonl"  # telemetry readings share the metrics log
    records = [json.loads(x) for x in metrics.read_text().splitlines()] \
        if metrics.exists() else []
    real = [r for r in records if "temp_c" in r and not r.get("emulated")]
    keys = sorted({k for r in real for k, v in r.items() if v is not None})
    c.record("telemetry", p.returncode == 0 and (tiny or bool(real)),
             f"{len(real)} readings not emulated, fields {keys[:8]}")

    p2 = c.run("train-killed", [*common, "--run-dir", str(kill_dir),
                                "--set", "launch.max_restarts=1",
                                "--inject", f"kill@rank=0,step={run_steps // 2}"], 150)
    same, restarts = False, None
    if p2.returncode == 0:
        restarts = json.loads(last_line(p2.stdout)).get("restarts")
    if p.returncode == 0 and p2.returncode == 0 and restarts:
        a = torch.load(ref_dir / "final" / "model.pt", weights_only=True)
        b = torch.load(kill_dir / "final" / "model.pt", weights_only=True)
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c.record("kill-and-resume", same, f"restarts {restarts}; final weights bit-identical to "
             f"the uninterrupted run: {same}")

    presets = ["debug"] if tiny else ["debug", "llama3-1b"]
    llm = ["benchmarks/llm_throughput.py", "--preset", *presets]
    if not tiny:
        llm += ["--bf16", "--seq-len", "2048", "--batch", "8"]
    else:
        llm += ["--steps", "3", "--warmup", "1"]
    p = c.run("llm-throughput", llm, 150)
    c.record("llm-throughput", p.returncode == 0, last_line(p.stdout)[:200])

    has_plan = c.run("plan-job-help", ["-m", "mixfleet", "plan-job", "--help"], 30)
    if has_plan.returncode == 0:
        # the chip the bench detected (a catalog id); the CPU has none: an emulated H100
        bench_rows = out / "bench" / "throughput.json"
        chips = {r.get("chip") for r in json.loads(bench_rows.read_text()).get("rows", [])} \
            if bench_rows.exists() else set()
        from mixfleet.catalog.base import load_catalog

        chip = next((c for c in sorted(chips, key=str) if c in load_catalog()),
                    "emu:nvidia-h100")
        p = c.run("plan-job", ["-m", "mixfleet", "plan-job",
                               str(ROOT / "examples" / "digits-cnn.toml"),
                               "--ranks", chip], 60)
        c.record("plan-job", p.returncode == 0, last_line(p.stdout)[:200])
    else:
        c.record("plan-job", True, "skipped: this version has no `mixfleet plan-job`")

    passed = sum(ok for _, ok, _ in c.results)
    label = "CPU (not a hardware measurement)" if tiny else dev
    lines = [f"{'ok  ' if ok else 'FAIL'} {n}: {line}" for n, ok, line in c.results]
    (out / "summary.txt").write_text(f"gpu-check on {label}, torch {torch.__version__}\n"
                                     + "\n".join(lines) + "\n")
    print(f"gpu-check on {label}: {passed} of {len(c.results)} checks passed (summary in "
          f"{out / 'summary.txt'})")
    return 0 if passed == len(c.results) else 1


if __name__ == "__main__":
    sys.exit(main())
