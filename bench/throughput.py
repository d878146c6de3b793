"""End-to-end throughput of the worker against the limit and two peers, and its latency at half load.

Run: scripts/with-kafka.sh .venv/bin/python bench/throughput.py [--events N] [--contenders LIST]

It builds --events events once (bench/common.bench_events), produces them once to
fresh topics, and lets each contender read that backlog from the start in a group
of its own, one after the other, on the same broker:

* passthrough: raw aiokafka, copy every record to another topic (the limit);
* worker: `nurture worker` as it runs, measured through its /metrics;
* faust: a plain Faust agent running the same pipeline one event at a time;
* faust-floor: a Faust agent with the worker's settings and batches that only reads,
  the bound of any engine built on Faust agents;
* quix: the same with Quix Streams (its own virtual environment, --quix-python).

Both peers run with --peer-guarantee, exactly once by default like the worker.

Each contender's rate is its events divided by the time from its first record to
its last. Then the worker, still running, gets fresh leads' events at half its
rate (or at --latency-rate) for --latency-seconds, each stamped when sent. Latency runs from that stamp
to the broker timestamp of each command they cause, and to its arrival at a
read_committed consumer. The worker's nurture_agent_seconds_total gives the agent's
wall-clock time per event by phase over the backlog and over the latency run, with the
worker's CPU time per event. With --profile-seconds, py-spy samples the worker during
the backlog, or during the latency run with --profile-live; --profile-gil keeps only
the samples of the thread that holds the GIL, which shows where the CPU time goes. Results go to var/bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import EVENT_KINDS, PROJECT, Worker, progress  # noqa: E402
from latency import command_latencies  # noqa: E402
from spy import record, summarise  # noqa: E402
from nurture.streams.metrics import PhaseClock  # noqa: E402

CONTENDERS = ("passthrough", "faust-floor", "worker", "faust", "quix")
BENCH_VENV = PROJECT / "var" / "bench-venv" / "bin"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the backlog")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated, of " + ", ".join(CONTENDERS))
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="0 skips the latency run")
    parser.add_argument("--latency-rate", type=float, default=0.0,
                        help="events/s of the latency run, or 0 (the default) for half the worker's measured rate")
    parser.add_argument("--profile-seconds", type=int, default=15, help="0 skips the profile")
    parser.add_argument("--profile-gil", action="store_true",
                        help="sample only the thread holding the GIL (py-spy --gil)")
    parser.add_argument("--profile-live", action="store_true",
                        help="profile during the latency run instead of the backlog")
    parser.add_argument("--timeout", type=float, default=900.0, help="maximum wait for one contender (s)")
    parser.add_argument("--peer-guarantee", choices=("exactly-once", "at-least-once"), default="exactly-once",
                        help="processing guarantee of the Faust and Quix contenders (the worker's is its setting)")
    parser.add_argument("--quix-python", default=str(BENCH_VENV / "python"))
    parser.add_argument("--py-spy", default=str(BENCH_VENV / "py-spy"))
    args = parser.parse_args()
    common.broker()
    common.stop_on_sigterm()
    common.RESULTS.parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="throughput-", dir=common.RESULTS.parent))
    model_dir = common.train_model(common.RESULTS.parent)
    prefix = f"b{uuid.uuid4().hex[:6]}"
    progress("throughput", f"building {args.events:,} events")
    events = common.bench_events(args.events, int(time.time() * 1000))
    common.create_topics(f"{prefix}.{kind}" for kind in EVENT_KINDS)
    seconds = asyncio.run(common.produce(common.event_records(events, prefix), "produce", len(events)))
    progress("throughput", f"backlog of {len(events):,} events produced in {seconds:.1f} s")
    result: dict[str, Any] = {"events": len(events), "partitions": common.PARTITIONS, "rates": {},
                              "peer_guarantee": args.peer_guarantee}
    for name in args.contenders.split(","):
        progress("throughput", f"running {name}")
        if name == "worker":
            figures = run_worker(args, directory, prefix, model_dir, len(events))
            result["rates"]["worker"] = figures.pop("rate")
            result.update(figures)
        else:
            result["rates"][name] = run_script(args, name, directory, prefix, model_dir, len(events))
        progress("throughput", f"{name}: {result['rates'][name]:,.0f} events/s")
    common.save("throughput", result)
    if (directory / "profile.txt").exists():
        shutil.copy(directory / "profile.txt", common.RESULTS / "worker-profile.txt")
    shutil.rmtree(directory, ignore_errors=True)
    print_table(result)


def run_worker(args: argparse.Namespace, directory: Path, prefix: str, model_dir: Path, total: int) -> dict[str, Any]:
    (directory / "worker").mkdir()
    worker = Worker(directory / "worker", f"{prefix}-worker", prefix, model_dir)
    worker.create_topics()
    worker.start()
    topics = tuple(f"{prefix}.{kind}" for kind in EVENT_KINDS)
    out: dict[str, Any] = {}
    try:
        first_at, first_count, first_samples, first_cpu, spy = 0.0, 0.0, {}, 0.0, None
        deadline = time.monotonic() + args.timeout
        while True:
            worker.check_alive()
            count = worker.records_in(topics)
            now = time.time()
            if count and not first_at:
                first_at, first_count, first_samples = now, count, worker.samples()
                first_cpu = worker.cpu_seconds()
                if args.profile_seconds and not args.profile_live:
                    spy = record(args.py_spy, worker.process.pid, args.profile_seconds, directory / "profile.txt",
                                 gil=args.profile_gil)
            if count >= total:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the worker handled {count:,.0f} of {total:,} events before the timeout")
            progress_every(count, total, "worker")
            time.sleep(0.2)
        out["rate"] = (total - first_count) / (now - first_at)
        out["cpu_us_per_event"] = (worker.cpu_seconds() - first_cpu) / (total - first_count) * 1e6
        last_samples = worker.samples()
        out["phases_us"] = phase_breakdown(first_samples, last_samples, total - first_count)
        out["row_cache_hits"] = row_cache_hits(last_samples)
        if spy is not None:
            out["profile"] = finish_profile(spy, directory / "profile.txt")
            spy = None
        if args.latency_seconds:
            rate = args.latency_rate or out["rate"] / 2
            before, count_before, cpu_before = worker.samples(), worker.records_in(topics), worker.cpu_seconds()
            if args.profile_seconds and args.profile_live:
                spy = record(args.py_spy, worker.process.pid, args.profile_seconds, directory / "profile.txt",
                             gil=args.profile_gil)
            out["latency"] = command_latencies(worker, prefix, rate, args.latency_seconds)
            out["latency"].update(live_load(worker, topics, before, count_before, cpu_before))
            if spy is not None:
                out["profile"] = finish_profile(spy, directory / "profile.txt")
        out["worker_rss_bytes"] = worker.rss_bytes()
    finally:
        worker.stop()
    return out


def live_load(worker: Worker, topics: tuple[str, ...], before: dict[str, float], count_before: float,
              cpu_before: float) -> dict[str, Any]:
    """Return the agent's phases, CPU time per event and mean batch size over the latency run."""
    after, events = worker.samples(), worker.records_in(topics) - count_before
    batches = (after.get("nurture_scoring_batch_records_count", 0.0)
               - before.get("nurture_scoring_batch_records_count", 0.0))
    return {"phases_us": phase_breakdown(before, after, events),
            "cpu_us_per_event": (worker.cpu_seconds() - cpu_before) / events * 1e6,
            "events_per_batch": events / batches if batches else None}


def phase_breakdown(before: dict[str, float], after: dict[str, float], events: float) -> dict[str, float]:
    """Return the agent's wall-clock microseconds per event by phase between two /metrics snapshots.

    ``scoring`` is the part of ``handle`` spent in the scoring thread.
    """
    names = {phase: f'nurture_agent_seconds_total{{phase="{phase}"}}' for phase in PhaseClock.PHASES}
    names["scoring"] = "nurture_scoring_batch_seconds_sum"
    return {phase: (after.get(name, 0.0) - before.get(name, 0.0)) / events * 1e6 for phase, name in names.items()}


def row_cache_hits(samples: dict[str, float]) -> float | None:
    """Return the share of stored rows the worker took from its row cache, or None before any read."""
    hits, misses = (samples.get(f'nurture_row_cache_reads_total{{result="{result}"}}', 0.0)
                    for result in ("hit", "miss"))
    return hits / (hits + misses) if hits + misses else None


_last_report = [0.0]


def progress_every(count: float, total: int, name: str) -> None:
    if time.monotonic() - _last_report[0] >= 5:
        _last_report[0] = time.monotonic()
        progress(name, f"handled {count:,.0f} of {total:,}")


def finish_profile(spy: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    _, errors = spy.communicate(timeout=120)
    if spy.returncode != 0 or not path.exists():
        message = errors.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        progress("profile", f"py-spy failed: {message[0]}")
        return {"error": message[0]}
    samples, rows = summarise(path)
    return {"samples": samples, "top": rows}


def run_script(args: argparse.Namespace, name: str, directory: Path, prefix: str, model_dir: Path, total: int) -> float:
    group = f"{prefix}-{name}"
    python = args.quix_python if name == "quix" else sys.executable
    script = {"passthrough": "passthrough.py", "faust-floor": "faust_floor.py", "faust": "faust_agent.py",
              "quix": "quix_pipeline.py"}[name]
    result = directory / f"{name}.json"
    command = [python, str(PROJECT / "bench" / script), "--prefix", prefix, "--group", group,
               "--expect", str(total), "--result", str(result)]
    if name != "passthrough":
        (directory / name).mkdir()
        command += ["--data-dir", str(directory / name / "data"), "--guarantee", args.peer_guarantee]
    if name in ("faust", "quix"):
        command += ["--model-dir", str(model_dir),
                    "--journeys", str(common.journeys_without_quiet_hours(directory / name))]
    common.create_topics([f"{prefix}.{group}.{'out' if name == 'passthrough' else 'commands'}"])
    with (directory / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + args.timeout
        while not result.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop(process)
    if not result.exists():
        tail = (directory / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"{name} gave no result:\n" + "\n".join(tail))
    summary = json.loads(result.read_text())
    return summary["count"] / (summary["last"] - summary["first"])


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def phase_text(phases: dict[str, float]) -> str:
    """Return the phases in a line, with the scoring thread's share inside the handle phase."""
    parts = []
    for phase, micros in phases.items():
        if phase == "scoring":
            continue
        text = f"{phase} {micros:.0f}"
        if phase == "handle" and "scoring" in phases:
            text += f" (scoring thread {phases['scoring']:.0f})"
        parts.append(text)
    return ", ".join(parts)


def print_table(result: dict[str, Any]) -> None:
    rates = result["rates"]
    worker = rates.get("worker")
    print(f"\nthroughput over a backlog of {result['events']:,} events, {result['partitions']} partitions, "
          f"peers {result.get('peer_guarantee', 'at-least-once')}")
    print(f"{'contender':<14}{'events/s':>12}{'worker / this':>16}")
    for name, rate in rates.items():
        ratio = f"{worker / rate:.2f}" if worker and name != "worker" else ""
        print(f"{name:<14}{rate:>12,.0f}{ratio:>16}")
    latency = result.get("latency")
    if latency:
        print(f"latency at {latency['rate']:,.0f} events/s for {latency['seconds']:.0f} s, "
              f"over {latency['commands']:,} commands:")
        for name, prefix in (("written (broker timestamp)", ""), ("visible to read_committed", "visible_")):
            print(f"  {name}: p50 {latency[prefix + 'p50_ms']:.0f} ms, p99 {latency[prefix + 'p99_ms']:.0f} ms, "
                  f"max {latency[prefix + 'max_ms']:.0f} ms")
        if latency.get("phases_us"):
            print(f"  the agent's time per event by phase (µs): {phase_text(latency['phases_us'])}")
            print(f"  CPU time per event {latency['cpu_us_per_event']:.0f} µs, "
                  f"events per batch {latency['events_per_batch'] or 0:.0f}")
    phases = result.get("phases_us")
    if phases:
        print("the agent's wall-clock time per event during the backlog, by phase (µs):")
        print(f"  {phase_text(phases)}")
    if result.get("cpu_us_per_event"):
        print(f"the worker process's CPU time per event during the backlog: {result['cpu_us_per_event']:.0f} µs")
    if result.get("row_cache_hits") is not None:
        print(f"rows taken from the row cache: {result['row_cache_hits']:.0%}")
    elif phases:
        print("rows taken from the row cache: unknown (the worker publishes the count every 5 s, "
              "and the backlog ended sooner)")
    profile = result.get("profile")
    if profile and "top" in profile:
        print(f"\nworker profile, {profile['samples']:,} samples (inclusive %, self %):")
        for name, inclusive, own in profile["top"]:
            print(f"{inclusive:6.1f} {own:6.1f}  {name}")


if __name__ == "__main__":
    main()
