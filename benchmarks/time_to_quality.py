"""Inception FID against training time: which recipe is best for the minutes you have.

    python benchmarks/quality_table.py --data-dir PATH/TO/fashion-mnist --rows bce,hinge,wgan-gp,dcgan \\
        --score-at 5,10 --fid-n 2000 --out runs/quality
    python benchmarks/time_to_quality.py --runs runs/quality --plot time_to_quality.png

reads what quality_table.py left in ``--runs`` (results.jsonl and each row's training log) and prints, for every
scored snapshot, the minutes of training it took and its Inception FID (and the CNN distance beside it), then
the best recipe within each budget of ``--budgets`` minutes, and draws FID against minutes.

Minutes are epochs x seconds per epoch. ``--clock quietest`` (the default) takes each run's fastest epoch from
its log as its time per epoch: on a shared machine the other epochs carry other jobs' load, and the fastest is
the closest to the run alone. ``--clock log`` adds the logged epochs up as they were. ``--pace ROW=SECONDS``
gives a row's seconds per epoch measured apart (a run of the same command on a quiet machine) instead.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ done in ([\d.]+) s")


def epoch_seconds(log_path):
    """{epoch: seconds} from a `scratchgan train` log."""
    with open(log_path) as f:
        return {int(e): float(s) for e, s in EPOCH_LINE.findall(f.read())}


def points(runs, dataset, clock, pace=None):
    """[{row, seed, epoch, minutes, fid, fd}] for every snapshot scored by Inception FID; ``pace``: {row: seconds
    per epoch} measured apart, used for those rows instead of their logs."""
    pace = pace or {}
    out = []
    with open(os.path.join(runs, "results.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for r in rows:
        seconds = epoch_seconds(os.path.join(runs, f"{dataset}-{r['row']}-s{r['seed']}.log"))
        if not seconds:
            raise SystemExit(f"no epoch times in the log of row {r['row']} seed {r['seed']}")
        for epoch, s in sorted(r["scores"].items(), key=lambda kv: int(kv[0])):
            if "fid" not in s:
                continue
            e = int(epoch)
            if r["row"] in pace:
                total = e * pace[r["row"]]
            elif clock == "quietest":
                total = e * min(seconds.values())
            else:
                missing = [k for k in range(1, e + 1) if k not in seconds]
                if missing:
                    raise SystemExit(f"row {r['row']}: epoch {missing[0]} has no time in its log")
                total = sum(seconds[k] for k in range(1, e + 1))
            out.append({"row": r["row"], "seed": r["seed"], "epoch": e, "minutes": total / 60,
                        "fid": s["fid"], "fd": s["frechet_distance"]})
    return out


def best_within(pts, budgets):
    """{budget: the point with the lowest FID trained within that many minutes, or None}."""
    return {b: min((p for p in pts if p["minutes"] <= b), key=lambda p: p["fid"], default=None) for b in budgets}


def plot(pts, best, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in dict.fromkeys(p["row"] for p in pts):
        mine = sorted((p for p in pts if p["row"] == name), key=lambda p: p["minutes"])
        ax.plot([p["minutes"] for p in mine], [p["fid"] for p in mine], marker="o", label=name)
    for budget in best:
        ax.axvline(budget, color="grey", linestyle=":", linewidth=1)
    marked = {}  # one label per point, naming every budget it is the best of
    for budget, p in best.items():
        if p is not None:
            marked.setdefault(id(p), (p, []))[1].append(f"{budget:g}")
    for p, budgets in marked.values():
        ax.annotate(f"best in {', '.join(budgets)} min:\n{p['row']}, {p['fid']:.1f}", (p["minutes"], p["fid"]),
                    textcoords="offset points", xytext=(-8, 30), ha="right", fontsize=7,  # up and left: clear of
                    arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6})   # the slower runs' points
    ax.set_xscale("log")
    ax.set_xlabel("minutes of training (2-core CPU)")
    ax.set_ylabel("Inception FID (lower is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, metavar="DIR", help="quality_table.py's --out folder")
    p.add_argument("--dataset", default="fashion-mnist", help="(default: %(default)s)")
    p.add_argument("--budgets", default="5,15,60", help="minutes (default: %(default)s)")
    p.add_argument("--clock", choices=["quietest", "log"], default="quietest",
                   help="seconds per epoch: each run's fastest logged epoch, or the logged epochs summed "
                        "(default: %(default)s)")
    p.add_argument("--pace", action="append", default=[], metavar="ROW=SECONDS",
                   help="a row's seconds per epoch measured apart, instead of its log (repeatable)")
    p.add_argument("--plot", metavar="PNG", help="also draw FID against minutes into this file")
    args = p.parse_args(argv)
    try:
        pace = {row: float(s) for row, s in (item.split("=", 1) for item in args.pace)}
    except ValueError:
        p.error("--pace takes ROW=SECONDS, e.g. --pace wgan-gp=17.5")
    pts = points(args.runs, args.dataset, args.clock, pace)
    if not pts:
        raise SystemExit(f"no snapshot in {args.runs} was scored by Inception FID (quality_table.py --fid-n N)")
    budgets = [float(b) for b in args.budgets.split(",")]
    best = best_within(pts, budgets)
    paced = "".join(f"; {row}: {s:g} s per epoch measured apart" for row, s in pace.items())
    print(f"{args.dataset}: Inception FID against minutes of training ({args.clock} clock{paced})\n")
    print("| row | seed | epoch | minutes | Inception FID | CNN distance |")
    print("|---|---|---|---|---|---|")
    for q in sorted(pts, key=lambda q: q["minutes"]):
        print(f"| {q['row']} | {q['seed']} | {q['epoch']} | {q['minutes']:.1f} | {q['fid']:.1f} | {q['fd']:.1f} |")
    print()
    for budget, q in best.items():
        said = f"{q['row']} (seed {q['seed']}), {q['epoch']} epochs, {q['minutes']:.1f} min: FID {q['fid']:.1f}" \
            if q else "no snapshot measured"
        print(f"best within {budget:g} min: {said}")
    if args.plot:
        plot(pts, best, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
