"""The bridge between hosts (docs/BRIDGE.md) against plain Zenoh, side by
side in one run, between the same two network namespaces joined by a veth
pair (tests/bridge/netns.py: each host has its own /dev/shm).

- throughput: a shmring topic on host A -> ``shmring bridge --export`` ->
  Zenoh -> ``shmring bridge --import`` -> the topic on host B, against a
  Zenoh publisher on A (one put per message, reliable, blocking congestion
  control: what the exporter of a block topic uses) and a subscriber on B;
  messages/s at the receiver, from its first message to its last.
- latency: round trips, a topic each way (ping exported A -> B, pong B -> A;
  the programs at both ends are local shmring programs), against a Zenoh
  ping-pong between the same hosts; p50 and p99.

Every message is checked (benchmarks/_bridge_workers.py); a mismatch, a
missing message or a gap reported by an importer fails the run.  Each
figure is the median of --repeat runs.  The issue's targets: the bridge
keeps at least 70 % of Zenoh's throughput and adds at most 25 % to its
latency.  Needs root, iproute2 and Zenoh (pip install shmring[zenoh]).

    sudo .venv/bin/python benchmarks/bench_bridge.py [--quick] [--repeat 3] [--no-batch] [--spin-us N] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _harness import fmt_num, fmt_rate, log, md_table, percentiles, size_label  # noqa: E402

from tests.bridge.netns import Host, NamespaceError, two_hosts  # noqa: E402

WORKERS = Path(__file__).resolve().parent / "_bridge_workers.py"
SIZES = [64, 1024, 65536]
# Messages per throughput run: about a second or two through the bridge here.
MESSAGES = {64: 400_000, 1024: 250_000, 65536: 20_000}
ZENOH_PORT = 7448
THROUGHPUT_TARGET = 0.70
LATENCY_TARGET = 1.25


class RunFailed(Exception):
    pass


def result_of(proc: subprocess.Popen[str], what: str, timeout: float = 300) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RunFailed(f"{what}: exit status {proc.returncode} (see its log)")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def wait_ready(proc: subprocess.Popen[str], what: str, timeout: float = 30) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == "ready":
            return
        if not line and proc.poll() is not None:
            raise RunFailed(f"{what} ended ({proc.returncode}) before it was ready")
    raise RunFailed(f"{what} not ready within {timeout} s")


def wait_log(path: Path, pattern: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(re.findall(pattern, path.read_text())) >= count:
            return
        time.sleep(0.1)
    raise RunFailed(f"{path.name}: no {count} x {pattern!r} within {timeout} s")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, all threads) process ``pid`` used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_bridges(a: Host, b: Host, tmp: Path, options: list[str]) -> list[int]:
    """B listens and imports tput and ping, exports pong; A the other way
    (both with ``options``).  Their process ids (nsenter runs the bridge in
    its own process)."""
    importer = b.bridge("--import", "topic:tput", "--import", "topic:ping", "--export", "topic:pong", "--listen", b.endpoint(),
             *options, log="bridge-b.log")
    exporter = a.bridge("--export", "topic:tput", "--export", "topic:ping", "--import", "topic:pong", "--connect", b.endpoint(),
             *options, log="bridge-a.log")
    wait_log(tmp / "bridge-a.log", "importer matched", 2)
    wait_log(tmp / "bridge-b.log", "importer matched", 1)
    return [exporter.pid, importer.pid]


def bridge_throughput(a: Host, b: Host, bridges: list[int], size: int, n: int,
                      tag: int) -> tuple[float, dict[str, float]]:
    """Messages/s at the receiver, and the CPU seconds per message of each
    process of the path: source, both bridges, sink."""
    sink = b.python(WORKERS, "topic-sink", "tput", str(n), str(size), str(tag), log="workers.log")
    wait_ready(sink, "topic-sink")
    before = [cpu_seconds(pid) for pid in bridges]
    source = a.python(WORKERS, "topic-source", "tput", str(n), str(size), str(tag), log="workers.log")
    result = result_of(sink, "topic-sink")
    cpu = {"source": result_of(source, "topic-source")["cpu_s"]}
    cpu["exporter"], cpu["importer"] = (cpu_seconds(pid) - t for pid, t in zip(bridges, before))
    cpu["sink"] = result["cpu_s"]
    return n / (result["elapsed_ns"] / 1e9), {k: v / n for k, v in cpu.items()}


def zenoh_throughput(a: Host, b: Host, bridges: list[int], size: int, n: int,
                     tag: int) -> tuple[float, dict[str, float]]:
    """The same with a Zenoh publisher and subscriber (``bridges``: unused)."""
    endpoint = f"tcp/{b.address}:{ZENOH_PORT}"
    sink = b.python(WORKERS, "zenoh-sink", "bench/tput", str(n), str(size), str(tag), endpoint, log="workers.log")
    wait_ready(sink, "zenoh-sink")
    source = a.python(WORKERS, "zenoh-source", "bench/tput", str(n), str(size), str(tag), endpoint, log="workers.log")
    result = result_of(sink, "zenoh-sink")
    cpu = {"source": result_of(source, "zenoh-source")["cpu_s"], "sink": result["cpu_s"]}
    return n / (result["elapsed_ns"] / 1e9), {k: v / n for k, v in cpu.items()}


def round_trips(a: Host, b: Host, system: str, size: int, n: int) -> list[int]:
    """``n`` round trips from A to B and back, sorted (ns): through the
    bridges (``system`` "bridge") or plain Zenoh ("zenoh")."""
    if system == "bridge":
        names, extra = ["ping", "pong"], []
    else:
        names, extra = ["bench/ping", "bench/pong"], [f"tcp/{b.address}:{ZENOH_PORT}"]
    pong = b.python(WORKERS, f"{system_worker(system)}-pong", *names, str(n), str(size), *extra, log="workers.log")
    wait_ready(pong, "pong")
    ping = a.python(WORKERS, f"{system_worker(system)}-ping", *names, str(n), str(size), *extra, log="workers.log")
    rtts: list[int] = result_of(ping, "ping")["rtt_ns"]
    result_of(pong, "pong")
    return rtts


def system_worker(system: str) -> str:
    return "topic" if system == "bridge" else "zenoh"


def measure(a: Host, b: Host, bridges: list[int], opts: argparse.Namespace) -> dict[str, Any]:
    rates: dict[str, dict[int, list[float]]] = {"bridge": {s: [] for s in opts.sizes}, "zenoh": {s: [] for s in opts.sizes}}
    cpus: dict[str, dict[int, list[dict[str, float]]]] = {"bridge": {s: [] for s in opts.sizes},
                                                          "zenoh": {s: [] for s in opts.sizes}}
    rtts: dict[str, dict[int, list[tuple[float, float]]]] = {"bridge": {s: [] for s in opts.sizes},
                                                             "zenoh": {s: [] for s in opts.sizes}}
    tag = 0
    for r in range(opts.repeat):
        for size in opts.sizes:
            n = max(1000, int(MESSAGES.get(size, 20_000) * opts.scale))
            for system, run in (("bridge", bridge_throughput), ("zenoh", zenoh_throughput)):
                tag += 1
                rate, cpu = run(a, b, bridges, size, n, tag)
                rates[system][size].append(rate)
                cpus[system][size].append(cpu)
                log(f"run {r + 1}: throughput {system} {size_label(size)}: {fmt_rate(rate)} msg/s ({n} messages), "
                    f"µs CPU per message: {sum(cpu.values()) * 1e6:.2f} ("
                    + ", ".join(f"{k} {v * 1e6:.2f}" for k, v in cpu.items()) + ")")
    for r in range(opts.repeat):
        for size in opts.sizes:
            for system in ("bridge", "zenoh"):
                pct = percentiles(round_trips(a, b, system, size, opts.round_trips))
                rtts[system][size].append((pct["p50_us"], pct["p99_us"]))
                log(f"run {r + 1}: round trip {system} {size_label(size)}: p50 {pct['p50_us']:.0f} µs, "
                    f"p99 {pct['p99_us']:.0f} µs")
    return {"rates": rates, "cpus": cpus, "rtts": rtts}


def summarise(raw: dict[str, Any], sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        row: dict[str, Any] = {"size": size}
        for system in ("bridge", "zenoh"):
            row[f"{system}_rate"] = statistics.median(raw["rates"][system][size])
            runs = raw["cpus"][system][size]
            row[f"{system}_cpu_us"] = statistics.median(sum(parts.values()) for parts in runs) * 1e6
            for part in runs[0]:
                row[f"{system}_{part}_cpu_us"] = statistics.median(parts[part] for parts in runs) * 1e6
            row[f"{system}_p50_us"] = statistics.median(p50 for p50, _ in raw["rtts"][system][size])
            row[f"{system}_p99_us"] = statistics.median(p99 for _, p99 in raw["rtts"][system][size])
        # Ratios run by run (the bridge and Zenoh measured back to back, under
        # the same load), then their median.
        row["throughput_ratio"] = statistics.median(
            b / z for b, z in zip(raw["rates"]["bridge"][size], raw["rates"]["zenoh"][size]))
        row["latency_ratio"] = statistics.median(
            b[0] / z[0] for b, z in zip(raw["rtts"]["bridge"][size], raw["rtts"]["zenoh"][size]))
        rows.append(row)
    return rows


def report(rows: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    tput = md_table(
        ["size", "bridge msg/s", "Zenoh msg/s", "bridge / Zenoh (target ≥ 0.70)", "bridge MB/s", "Zenoh MB/s",
         "CPU µs/msg, bridge path", "CPU µs/msg, Zenoh"],
        [[size_label(r["size"]), fmt_rate(r["bridge_rate"]), fmt_rate(r["zenoh_rate"]),
          f"{r['throughput_ratio']:.2f}" + ("" if r["throughput_ratio"] >= THROUGHPUT_TARGET else " (missed)"),
          fmt_num(r["bridge_rate"] * r["size"] / 1e6), fmt_num(r["zenoh_rate"] * r["size"] / 1e6),
          fmt_num(r["bridge_cpu_us"]), fmt_num(r["zenoh_cpu_us"])] for r in rows])
    lat = md_table(
        ["size", "bridge p50 µs", "bridge p99 µs", "Zenoh p50 µs", "Zenoh p99 µs", "bridge / Zenoh p50 (target ≤ 1.25)"],
        [[size_label(r["size"]), fmt_num(r["bridge_p50_us"]), fmt_num(r["bridge_p99_us"]), fmt_num(r["zenoh_p50_us"]),
          fmt_num(r["zenoh_p99_us"]),
          f"{r['latency_ratio']:.2f}" + ("" if r["latency_ratio"] <= LATENCY_TARGET else " (missed)")] for r in rows])
    parts = md_table(
        ["size", "bridge: source", "exporter", "importer", "sink", "Zenoh: source", "sink"],
        [[size_label(r["size"])] + [fmt_num(r[f"bridge_{p}_cpu_us"]) for p in ("source", "exporter", "importer", "sink")]
         + [fmt_num(r[f"zenoh_{p}_cpu_us"]) for p in ("source", "sink")] for r in rows])
    spin = "" if opts.spin_us is None else f", polling {opts.spin_us} µs before they sleep (--spin-us)"
    head = (f"{os.cpu_count()} CPUs, both namespaces on this machine; exporters "
            f"{'one sample per message (--no-batch)' if opts.no_batch else 'batching'}{spin}; median of {opts.repeat} runs (a ratio: the "
            f"median of the runs' ratios); "
            f"round trips: {opts.round_trips} per run after 200 unmeasured; CPU per message: all the processes "
            f"of the path (bridge: source, exporter, importer, sink; Zenoh: source, sink), all their threads")
    return (f"{head}\n\nThroughput\n\n{tput}\n\nCPU µs per message, by process\n\n{parts}\n\n"
            f"Round trip\n\n{lat}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=lambda t: [int(x) for x in t.split(",")], default=SIZES)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="Multiply the messages per throughput run.")
    ap.add_argument("--round-trips", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="One run, a tenth of the messages, 500 round trips.")
    ap.add_argument("--markdown", help="Write the tables to this file too.")
    ap.add_argument("--json", help="Write every run's figures to this file.")
    ap.add_argument("--no-batch", action="store_true",
                    help="Exporters send one Zenoh sample per message (the bridge before batches).")
    ap.add_argument("--spin-us", type=int, default=None,
                    help="Give both bridges --spin-us N (their exporters poll N µs before they sleep).")
    ap.add_argument("--keep-logs", action="store_true", help="Keep the bridges' and workers' logs (their folder is printed).")
    opts = ap.parse_args()
    if opts.quick:
        opts.repeat, opts.scale, opts.round_trips = 1, 0.1, 500
    tmp = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    try:
        with two_hosts(tmp) as (a, b):
            options = (["--no-batch"] if opts.no_batch else []) + ([] if opts.spin_us is None else ["--spin-us", str(opts.spin_us)])
            bridges = start_bridges(a, b, tmp, options)
            raw = measure(a, b, bridges, opts)
        gaps = re.findall(r"gap of \d+ messages", (tmp / "bridge-b.log").read_text()
                          + (tmp / "bridge-a.log").read_text())
        if gaps:
            raise RunFailed(f"the importers reported {len(gaps)} gaps: {gaps[:3]}")
    except NamespaceError as e:
        log(f"bench_bridge: needs {e}")
        return 1
    except RunFailed as e:
        log(f"bench_bridge: FAILED: {e}; logs in {tmp}")
        return 1
    rows = summarise(raw, opts.sizes)
    text = report(rows, opts)
    print(text)
    if opts.markdown:
        Path(opts.markdown).write_text(text)
    if opts.json:
        Path(opts.json).write_text(json.dumps({"raw": raw, "rows": rows}, indent=1))
    if opts.keep_logs:
        log(f"logs in {tmp}")
    else:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
