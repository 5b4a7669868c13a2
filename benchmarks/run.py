"""Run every benchmarks/bench_*.py and write benchmarks/results/latest.{json,md}.

python -m benchmarks.run            # full (make bench)
python -m benchmarks.run --quick    # under 5 minutes on 2 CPU cores (make bench-quick)
python -m benchmarks.run --only tokenizer moe   # re-measure these; keep the other rows

Every row says which benchmark module made it; ``modules`` records when and how each module was
last run (date, command, machine), so a partial run updates its own rows and keeps their
provenance honest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Last run {result['date']} on {m.get('cpu_model', m['processor'])} ({m['cpus']} CPUs"
        + (f", GPU {m['gpu']}" if m["gpu"] else ", no GPU")
        + f"), Python {m['python']}, PyTorch {m['torch']}; `{result['command']}`.",
        "",
    ]
    modules = result.get("modules", {})
    if len({(meta.get("date"), meta.get("command")) for meta in modules.values()}) > 1:
        lines += ["The rows come from several runs; each module's rows were measured:", ""]
        lines += [
            f"* `{name}`: {meta.get('date')}, `{meta.get('command')}`"
            + (" (quick sizes)" if meta.get("quick") else "")
            for name, meta in sorted(modules.items(), key=lambda kv: kv[1].get("date", ""))
        ]
    lines += [
        "",
        "| benchmark | metric | ours | peer | ours (median) | peer (median) | ratio ours/peer |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        rng = ""
        if r.get("ours_range"):
            rng = f" ({r['ours_range'][0]:.3g}–{r['ours_range'][1]:.3g})"
        prng = (
            f" ({r['peer_range'][0]:.3g}–{r['peer_range'][1]:.3g})" if r.get("peer_range") else ""
        )
        lines.append(
            f"| {r['benchmark']} | {r['metric']} ({r['unit']}) | {r['ours_name']} | {r['peer_name']} "
            f"| {r['ours']:.4g}{rng} | {r['peer']:.4g}{prng} | {r['ratio']:.2f} |"
        )
    for name, err in result["errors"].items():
        lines.append(f"\n`{name}` failed: {err}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="small sizes, under 5 minutes on 2 CPU cores"
    )
    ap.add_argument("--only", nargs="*", help="benchmark module names without the bench_ prefix")
    ap.add_argument("--out", type=Path, default=RESULTS / "latest")
    args = ap.parse_args(argv)
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            raise SystemExit(f"unknown benchmarks {sorted(unknown)}; have {names}")
        names = [n for n in names if n in args.only]
    result = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.run"
        + (" --quick" if args.quick else "")
        + (f" --only {' '.join(args.only)}" if args.only else ""),
        "quick": args.quick,
        "machine": machine(),
        "rows": [],
        "seconds": {},
        "errors": {},
        "modules": {},
    }
    previous = {}
    if args.only and args.out.with_suffix(".json").exists():
        previous = json.loads(args.out.with_suffix(".json").read_text())
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            rows = importlib.import_module(f"benchmarks.bench_{name}").run(quick=args.quick)
            result["rows"] += [{**r, "module": name} for r in rows]
            from benchmarks.harness import print_rows

            print_rows(rows)
        except Exception as exc:  # a broken benchmark is reported, the others still run
            traceback.print_exc()
            result["errors"][name] = f"{type(exc).__name__}: {exc}"
        result["seconds"][name] = round(time.perf_counter() - start, 1)
        result["modules"][name] = {
            k: result[k] for k in ("date", "command", "quick", "machine")
        } | {"seconds": result["seconds"][name]}
    if previous:  # a partial run: keep the rows and provenance of the modules it did not run
        # rows from before modules were named keep the provenance of the run that made them
        legacy = f"unnamed ({previous.get('date', 'unknown date')})"
        # and are superseded by this run's rows of the same kind (the same first word: "norm ...")
        fresh = {r["benchmark"].split()[0] for r in result["rows"]}
        kept = [
            r if "module" in r else {**r, "module": legacy}
            for r in previous.get("rows", [])
            if r.get("module") not in names
            and not (
                str(r.get("module", "unnamed")).startswith("unnamed")
                and r["benchmark"].split()[0] in fresh
            )
        ]
        if any(r["module"] == legacy for r in kept):
            previous.setdefault("modules", {})[legacy] = {
                k: previous.get(k) for k in ("date", "command", "quick", "machine")
            }
        result["rows"] = kept + result["rows"]
        for name, meta in previous.get("modules", {}).items():
            if any(r["module"] == name for r in kept):
                result["modules"].setdefault(name, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
