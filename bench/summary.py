"""Print one table of the latest benchmark results (var/bench/results/*.json) against the targets.

Run: .venv/bin/python bench/summary.py

`make bench` runs it last. A benchmark that did not run is left out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402

TARGET_RATE = 20_000
TARGET_P99_MS = 100.0


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def rows() -> list[tuple[str, str, str]]:
    """Return (measure, value, target or comparison) rows."""
    out: list[tuple[str, str, str]] = []
    scoring = load("scoring")
    if scoring:
        out.append(("ingest handler per event, batch of 500 (no Kafka)", f"{scoring['handler_us_batch_500']:.0f} µs", ""))
    timers = load("timers")
    if timers:
        out.append((f"due wait to command, {timers['leads']} leads", f"p50 {timers['p50_ms']:.0f} ms, "
                    f"p99 {timers['p99_ms']:.0f} ms", ""))
    out.extend(throughput_rows(load("throughput")))
    out.extend(recovery_rows(load("recovery")))
    return out


def throughput_rows(result: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    if not result:
        return []
    rates = result["rates"]
    worker = rates.get("worker")
    out = [(f"{name} throughput ({result['events']:,} events)", f"{rate:,.0f} events/s", "")
           for name, rate in rates.items()]
    if worker:
        out[list(rates).index("worker")] = (out[list(rates).index("worker")][0], f"{worker:,.0f} events/s",
                                            verdict(worker >= TARGET_RATE, f">= {TARGET_RATE:,}"))
        for name, goal, text in (("passthrough", 0.5, ">= 0.50"), ("faust", 1.0, "> 1"), ("quix", 1.0, "> 1")):
            if name in rates:
                ratio = worker / rates[name]
                met = ratio >= goal if name == "passthrough" else ratio > goal
                out.append((f"worker / {name}", f"{ratio:.2f}", verdict(met, text)))
    latency = result.get("latency")
    if latency:
        where = f"at {latency['rate']:,.0f} events/s ({latency['commands']:,} commands)"
        for name, prefix in (("written", ""), ("visible to read_committed", "visible_")):
            if prefix + "p99_ms" not in latency:
                continue
            p99 = latency[prefix + "p99_ms"]
            out.append((f"event to command {name}, {where}",
                        f"p50 {latency[prefix + 'p50_ms']:.0f} ms, p99 {p99:.0f} ms",
                        verdict(p99 < TARGET_P99_MS, f"p99 < {TARGET_P99_MS:.0f} ms")))
    return out


def recovery_rows(result: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    if not result:
        return []
    runs = result["runs"]
    base = runs[0]
    out = [(f"recovery of {run['leads']:,} leads: start to ready (no leads: {base['ready_seconds']:.1f} s)",
            f"{run['ready_seconds']:.1f} s", "") for run in runs[1:]]
    last = runs[-1]
    if last["leads"]:
        memory = (last["rss_bytes"] - base["rss_bytes"]) / last["leads"]
        disk = (last["disk_bytes"] - base["disk_bytes"]) / last["leads"]
        out.append((f"memory per lead at {last['leads']:,} leads", f"{memory:,.0f} B", ""))
        out.append((f"disk per lead at {last['leads']:,} leads", f"{disk:,.0f} B", ""))
    return out


def verdict(met: bool, target: str) -> str:
    return f"{target}: {'met' if met else 'NOT met'}"


def main() -> None:
    table = rows()
    if not table:
        raise SystemExit(f"no results in {RESULTS}; run the benchmarks first (make bench)")
    width = max(len(measure) for measure, _, _ in table)
    print(f"\n{'measure':<{width}}  {'value':>28}  target")
    for measure, value, target in table:
        print(f"{measure:<{width}}  {value:>28}  {target}")
    machine = next(iter(load(name) for name in ("throughput", "recovery", "scoring", "timers") if load(name)))["machine"]
    print(f"\n{machine['platform']}, {machine['cores']} cores, Python {machine['python']}, "
          f"load average before the run {machine['load_before']}")


if __name__ == "__main__":
    main()
