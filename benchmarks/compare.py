"""Side by side in one run: another checkout of scratchgan (e.g. main) against this one, fast and reference paths.

    python benchmarks/compare.py --baseline ../baseline                    # the step at batches 64, 256, 1024
    python benchmarks/compare.py --baseline ../baseline --what conv        # bench_conv's DCGAN layers
    python benchmarks/compare.py --baseline ../baseline --what step,conv --rounds 6

Each measurement runs in its own process with PYTHONPATH set to its checkout, using that checkout's
own benchmark worker (benchmarks/bench_step.py --worker scratchgan, benchmarks/bench_conv.py --worker
scratchgan), so each side runs exactly as its code would. Three sides: "baseline" (the other
checkout), "fast" (this one) and "reference" (this one with SCRATCHGAN_REFERENCE=1: the textbook path
only). They alternate, in reversed order every other round, so that a slow drift of a shared machine
hits every side alike; the tables show the median over rounds (of each run's median over steps), and
for the step also the ratio of the best rounds (on a shared machine the load only ever adds time).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(root, script_args, reference=False):
    env = {k: v for k, v in os.environ.items() if k != "SCRATCHGAN_REFERENCE"}
    env["PYTHONPATH"] = root
    if reference:
        env["SCRATCHGAN_REFERENCE"] = "1"
    out = subprocess.run([sys.executable, *script_args], cwd=root, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker {script_args} in {root} failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def sides(baseline):
    return [("baseline", baseline, False), ("fast", HERE, False), ("reference", HERE, True)]


def compare_step(baseline, batches, rounds, steps, warmup):
    rows = []
    for batch in batches:
        n = max(5, steps * 64 // batch) if batch > 64 else steps
        samples = {name: [] for name, _, _ in sides(baseline)}
        for r in range(rounds):
            order = sides(baseline) if r % 2 == 0 else sides(baseline)[::-1]
            for name, root, reference in order:
                res = run(root, ["benchmarks/bench_step.py", "--worker", "scratchgan", str(batch), str(n),
                                 str(warmup), "numpy"], reference)
                samples[name].append(res["ms"])
        med = {name: statistics.median(v) for name, v in samples.items()}
        best = {name: min(v) for name, v in samples.items()}
        rows.append([batch, med["baseline"], med["fast"], med["fast"] / med["baseline"],
                     best["fast"] / best["baseline"], med["reference"], med["reference"] / med["baseline"],
                     " / ".join(f"{x:.2f}" for x in samples["fast"]),
                     " / ".join(f"{x:.2f}" for x in samples["baseline"])])
        print(f"# step, batch {batch}: done", flush=True)
    print("\n| batch | baseline ms | fast ms | fast / baseline | (best run / best run) | reference ms | "
          "reference / baseline | fast, each round | baseline, each round |")
    print("|---|---|---|---|---|---|---|---|---|")
    for b, base, fst, ratio, best_ratio, ref, ref_ratio, each_fast, each_base in rows:
        print(f"| {b} | {base:.2f} | {fst:.2f} | **{ratio:.3f}** | {best_ratio:.3f} | {ref:.2f} | {ref_ratio:.2f} | "
              f"{each_fast} | {each_base} |")


def compare_conv(baseline, rounds, batch, reps):
    per_layer = {name: {} for name, _, _ in sides(baseline)}
    totals = {name: [] for name, _, _ in sides(baseline)}
    for r in range(rounds):
        order = sides(baseline) if r % 2 == 0 else sides(baseline)[::-1]
        for name, root, reference in order:
            times = run(root, ["benchmarks/bench_conv.py", "--worker", "scratchgan", "--batch", str(batch),
                               "--warmup", "2", "--reps", str(reps)], reference)
            for layer, t in times.items():
                per_layer[name].setdefault(layer, []).extend(t)
            totals[name].append(sum(statistics.median(t) for t in times.values()) * 1e3)
        print(f"# conv, round {r + 1}/{rounds}: done", flush=True)
    print("\n| layer | baseline ms | fast ms | fast / baseline | reference ms | reference / baseline |")
    print("|---|---|---|---|---|---|")
    med = {name: {layer: statistics.median(t) * 1e3 for layer, t in layers.items()}
           for name, layers in per_layer.items()}
    for layer in med["baseline"]:
        b, f, ref = med["baseline"][layer], med["fast"][layer], med["reference"][layer]
        print(f"| {layer} | {b:.2f} | {f:.2f} | {f / b:.3f} | {ref:.2f} | {ref / b:.2f} |")
    b, f, ref = (sum(med[name].values()) for name in ("baseline", "fast", "reference"))
    print(f"| **total** | {b:.2f} | {f:.2f} | **{f / b:.3f}** | {ref:.2f} | {ref / b:.2f} |")
    print(f"best round's total: fast / baseline = {min(totals['fast']) / min(totals['baseline']):.3f}")
    print("totals per round (ms), fast: " + " / ".join(f"{x:.1f}" for x in totals["fast"]) +
          "; baseline: " + " / ".join(f"{x:.1f}" for x in totals["baseline"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="path of the other checkout (e.g. a worktree of main)")
    ap.add_argument("--what", default="step", help="step, conv or step,conv (default: %(default)s)")
    ap.add_argument("--batches", default="64,256,1024", help="step: batch sizes (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating runs per side (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=100, help="step: timed steps per run at batch 64 (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=15, help="step: untimed steps first (default: %(default)s)")
    ap.add_argument("--conv-batch", type=int, default=64, help="conv: batch size (default: %(default)s)")
    ap.add_argument("--conv-reps", type=int, default=5, help="conv: timed repetitions per layer (default: %(default)s)")
    args = ap.parse_args(argv)
    baseline = os.path.abspath(args.baseline)
    commit = lambda root: subprocess.run(["git", "-C", root, "log", "-1", "--format=%h %s"],  # noqa: E731
                                         capture_output=True, text=True).stdout.strip()[:70]
    print(f"# baseline: {baseline} ({commit(baseline)})\n# this:     {HERE} ({commit(HERE)})")
    print(f"# python {sys.version.split()[0]}, {len(os.sched_getaffinity(0))} cores; load average "
          f"{os.getloadavg()[0]:.2f}")
    what = args.what.split(",")
    if "step" in what:
        compare_step(baseline, [int(b) for b in args.batches.split(",")], args.rounds, args.steps, args.warmup)
    if "conv" in what:
        compare_conv(baseline, args.rounds, args.conv_batch, args.conv_reps)
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
