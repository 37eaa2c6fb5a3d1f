#!/usr/bin/env python3
"""Benchmark shmring's broadcast Topic: fan-out, overwrite with a slow subscriber, latest().

Sections (--sections; every process is a fresh interpreter started with
multiprocessing's "spawn" context, and every measured run starts at a
barrier that all its processes pass once attached and ready):

  fanout     1 publisher -> 1, 2 and 4 subscribers, 64 B and 1 KiB bytes
             messages, shmring Topic policy "block" (every subscriber gets
             every message) against pyzmq XPUB/SUB over ipc:// and iceoryx2
             publish-subscribe.  Messages/s per subscriber and in total, from
             the barrier to the last subscriber done.
  overwrite  policy "overwrite": the publisher alone, with a slow subscriber
             (sleeps between reads while the publisher runs; also one that
             reads again at once after Lagged), with a fast one, with a fast
             and a slow one.  Publisher messages/s against the same without
             the slow subscriber; per subscriber, received + missed (sum of
             Lagged.missed) must equal published.
  latest     Topic.latest() call latency (p50/p99/p99.9) in one process while
             another publishes as fast as it can, and while it is idle.

Messages: struct "<Q{n}sQ": the sequence number in the first and last 8
bytes, a fixed body in between.  Every message received is unpacked with that
struct (which also checks the length) and compared: both sequence numbers,
and the whole body.  Fan-out: each subscriber must see seq base..base+count-1
in order, then nothing more (shmring, iceoryx2); pyzmq subscribers count
gaps as drops (reported) and fail on a reordered or repeated seq.  Overwrite:
after Lagged(missed) the next seq must be exactly the expected one + missed.
A failed check fails the run (exit status 1, MISMATCH in the tables).

    .venv/bin/python benchmarks/bench_topic.py             # everything, ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_topic.py --quick     # smoke test, ~5-10 s
    .venv/bin/python benchmarks/bench_topic.py --sections fanout --only shmring,pyzmq --subs 1,2,4,8
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _harness import (  # noqa: E402
    KiB, MachineLoad, MiB, WorkerError, WorkerGroup, add_output_arguments, bench_parser, clean_up_run, exit_status,
    fmt_rate, fmt_ratio, last_line, load_line, log, md_table, percentiles, quick_defaults, record_failure, run_line,
    run_measured, run_meta, run_warnings, shmring_build, shmring_source_note, sizes, sigterm_as_interrupt, size_label,
    skipped_and_failures, spread_pct, warn_if_rebuilt, write_outputs,
)
from _topic_workers import SUB_ROLES, ZMQ_HWM, Spec, worker_main  # noqa: E402

START_METHOD = "spawn"
SIZES = [64, KiB]
SUBS = [1, 2, 4]
SECTIONS = ["fanout", "overwrite", "latest"]
FAMILIES = ["shmring", "shmring-many", "pyzmq", "iceoryx2"]
SUB_BATCH = 64  # the "shmring-many" rows: send_many and recv_many batches
DEFAULT_CAPACITY = MiB  # shmring ring bytes; iceoryx2 buffer = capacity / size samples (<= 1024)
# Messages per fan-out run (before --scale), per family and size: ~0.3-0.7 s a
# run on 2 cores with 1 subscriber (~1-2 s with 4), so that a full run takes
# about a minute.
FANOUT_COUNTS = {"shmring": (1_500_000, 700_000), "shmring-many": (3_000_000, 1_000_000), "pyzmq": (600_000, 200_000), "iceoryx2": (150_000, 150_000)}
OVERWRITE_COUNT = 3_000_000  # messages per overwrite run (64 B): ~0.3-0.5 s of publishing

SLOW_SLEEP = 0.001  # the slow subscriber's sleep after each message while the publisher runs
LATEST_CALLS = 300_000  # latest() calls per latency run
DEFAULT_MARKDOWN = os.path.join(HERE, "results", "topic.md")
FAMILY_LABEL = {"shmring": "shmring Topic (block)",
                "shmring-many": f"shmring Topic (block), send_many/recv_many({SUB_BATCH})", "pyzmq": "pyzmq XPUB/SUB ipc", "iceoryx2": "iceoryx2 pub/sub (spin)"}


# ---------------------------------------------------------------------------
# parent side


class Group(WorkerGroup):
    """A topic (or zmq endpoint / iceoryx2 service) and its processes, kept
    for all runs of one configuration.  roles: e.g. ["pub", "sub", "sub"].
    Leaving the `with` block stops everything ("stop", join, SIGTERM,
    SIGKILL) and removes the topic."""

    def __init__(self, bench: Bench, family: str, roles: list[str], label: str, policy: str = "block",
                 events: tuple[str, ...] = (), pin: dict[str, int] | None = None) -> None:
        super().__init__(bench.ctx, bench.opts, [f"{r} {i}" for i, r in enumerate(roles)])
        self.bench, self.family, self.roles, self.label = bench, family, roles, label
        self.policy: Any = policy  # "block" or "overwrite"
        self.topic: Any = None
        self.base = 0  # next sequence number: continues across runs
        self.events = {k: self.ctx.Event() for k in events}
        self.iox2_used = False
        self.pin = pin or {}

    def __enter__(self) -> Group:
        try:
            n_subs = sum(r in SUB_ROLES for r in self.roles)
            spec = Spec(self.family, n_subs=n_subs, max_size=max(self.opts.sizes), events=self.events, pin=self.pin,
                        sub_batch=SUB_BATCH if self.family == "shmring-many" else 0)
            if self.family.startswith("shmring"):
                import shmring

                self.topic = shmring.Topic.create(None, self.opts.capacity, policy=self.policy)
                self.bench.shm_names.append(self.topic.name)
                spec.topic = self.topic
            elif self.family == "pyzmq":
                spec.addr = f"ipc://{self.bench.tmpdir}/{uuid.uuid4().hex[:12]}.sock"
            else:
                self.iox2_used = True
                spec.iox2_name = f"shmring-bench-topic/{uuid.uuid4().hex[:12]}"
                spec.iox2_buffer = max(4, min(1024, self.opts.capacity // min(self.opts.sizes)))
            barrier = self.ctx.Barrier(len(self.roles))
            wopts = {"run_timeout": self.opts.run_timeout, "zmq_idle": self.opts.zmq_idle}
            for i, role in enumerate(self.roles):
                self._spawn(worker_main, (spec, role, i, barrier), f"bt-{self.family}-{role}{i}", {"opts": wopts})
            for i in range(len(self.roles)):
                self._expect(i, "ready", 120.0)
            # Publisher first (iceoryx2 drops samples for subscribers older
            # than the publisher), then the subscribers, then the handshake.
            order = [i for i, r in enumerate(self.roles) if r == "pub"] + \
                    [i for i, r in enumerate(self.roles) if r != "pub"]
            for i in order:
                self.conns[i].send(("open",))
                self._expect(i, "opened", 60.0)
            if self.family in ("pyzmq", "iceoryx2") and n_subs:
                i = self.roles.index("pub")
                self.conns[i].send(("sync", n_subs))
                self._expect(i, "synced", 60.0)
        except BaseException:
            self.close()
            raise
        return self

    def run(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """One run; the workers' results in role order."""
        return self._guard(lambda: self._run(params))

    def _not_run_message(self, broken: WorkerError) -> str:
        return f"not run: {self.label}'s workers were stopped after an earlier {broken.tag}"

    def _run(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        for ev in self.events.values():
            ev.clear()
        params = {**params, "base": self.base}
        published0 = self.topic.stats()["published"] if self.topic is not None else 0
        for c in self.conns:
            c.send(("run", params))
        results = self._collect()
        out = [results[i] for i in range(len(self.conns))]
        sent = out[self.roles.index("pub")]["sent"]
        self.base += sent
        if self.topic is not None:
            published = self.topic.stats()["published"] - published0
            if published != sent:
                raise WorkerError(f"topic stats: {published} published, the publisher sent {sent}", "MISMATCH")
        for i, r in enumerate(out):
            if self.roles[i] in SUB_ROLES and r["received"] + r["missed"] != sent:
                raise WorkerError(f"{self.names[i]}: received {r['received']} + missed {r['missed']} "
                                  f"!= published {sent}", "MISMATCH")
        return out

    def _diagnose_hang(self, results: dict[int, dict[str, Any]]) -> None:
        waiting = self._waiting(results)
        state = ""
        if self.topic is not None:
            state = f"; topic stats() {self._safe(self.topic.stats)}"
        log(f"!!! HANG: {self.label}: no result after {self.opts.run_timeout:g} s from {', '.join(waiting)}"
            f"{state}. Stacks of the workers follow:")
        self._dump_stacks(results)
        raise WorkerError(f"no result from {', '.join(waiting)} after {self.opts.run_timeout:g} s{state}", "HANG")

    def close(self) -> None:
        killed = self._stop_workers()
        if killed and self.iox2_used:
            self.bench.iceoryx2_killed = True
        topic, self.topic = self.topic, None
        if topic is not None:
            topic.close()
            try:
                topic.unlink()
            except Exception:
                pass


class Bench:
    def __init__(self, opts: Any) -> None:
        import multiprocessing as mp

        self.opts = opts
        self.ctx: Any = mp.get_context(START_METHOD)
        self.tmpdir = tempfile.mkdtemp(prefix="bench-topic-")
        self.fanout: dict[tuple[str, int, int], dict[str, Any]] = {}  # (family, size, n_subs)
        self.overwrite: dict[str, dict[str, Any]] = {}  # config label -> result
        self.latest: dict[str, dict[str, Any]] = {}  # row label -> result
        self.errors: list[dict[str, Any]] = []
        self.section_load: dict[str, float] = {}
        self.shm_names: list[str] = []  # every topic made, for cleanup()
        self.iceoryx2_killed = False  # an iceoryx2 worker had to be killed: clean up dead nodes at the end

    def cleanup(self) -> list[str]:
        """Last line of defence: nothing of this run may stay behind."""
        return clean_up_run(self.shm_names, self.tmpdir, self.iceoryx2_killed)

    def _fail(self, where: str, e: BaseException) -> dict[str, Any]:
        return record_failure(where, e, self.errors, where=where)

    def run(self) -> None:
        for section in self.opts.sections:
            load = MachineLoad()
            getattr(self, f"run_{section}")()
            self.section_load[section] = load.summary()["other_processes_pct_of_machine"]

    # -- 1. fan-out ---------------------------------------------------------

    def fanout_count(self, family: str, size: int) -> int:
        c = FANOUT_COUNTS[family]
        return max(1000, int((c[0] if size < KiB else c[1]) * self.opts.scale))

    def run_fanout(self) -> None:
        for n in self.opts.subs:
            with ExitStack() as stack:
                groups: dict[str, Group] = {}
                for fam in self.opts.families:
                    label = f"{FAMILY_LABEL[fam]}, 1 -> {n}"
                    try:
                        log(f"[fanout] starting {1 + n} workers for {label}")
                        groups[fam] = stack.enter_context(Group(self, fam, ["pub"] + ["sub"] * n, label))
                    except Exception as e:
                        for size in self.opts.sizes:
                            self.fanout[(fam, size, n)] = self._fail(f"fanout {label}, {size_label(size)}", e)
                for size in self.opts.sizes:
                    self._fanout_cells(groups, size, n)

    def _fanout_cells(self, groups: dict[str, Group], size: int, n: int) -> None:
        runs: dict[str, list[dict[str, Any]]] = {fam: [] for fam in groups}
        live = dict(groups)
        for r in range(-1, self.opts.runs):  # run -1: warm-up, a tenth of the messages
            for fam, g in list(live.items()):
                count = self.fanout_count(fam, size)
                if r < 0:
                    count = max(1000, count // 10)
                try:
                    out = g.run({"section": "fanout", "size": size, "count": count})
                except Exception as e:
                    self.fanout[(fam, size, n)] = self._fail(f"fanout {g.label}, {size_label(size)}", e)
                    del live[fam]
                    continue
                if r < 0:
                    continue
                pub, subs = out[0], out[1:]
                t0 = min(x["t0"] for x in out)
                t1 = max(x["t1"] for x in subs)
                runs[fam].append({
                    "count": count, "seconds": t1 - t0, "per_sub": count / (t1 - t0),
                    "total": n * count / (t1 - t0), "pub_s": pub["t1"] - pub["t0"],
                    "drops": sum(x["missed"] for x in subs), "stalled": any(x.get("stalled") for x in subs),
                })
        for fam in live:
            rs = runs[fam]
            per = [x["per_sub"] for x in rs]
            med = statistics.median(per)
            res = {"per_sub": med, "total": n * med, "runs": rs, "count": rs[0]["count"], "spread_pct": spread_pct(per),
                   "drops": sum(x["drops"] for x in rs), "stalled": any(x["stalled"] for x in rs)}
            self.fanout[(fam, size, n)] = res
            log(f"[fanout {size_label(size)} 1->{n}] {FAMILY_LABEL[fam]}: {fmt_rate(med)} msgs/s per subscriber, "
                f"{fmt_rate(n * med)} total (spread {res['spread_pct']:.0f}%, drops {res['drops']})")

    # -- 2. overwrite with a slow subscriber ---------------------------------

    # (label, roles, the same without the slow subscriber: what its row is compared with)
    OVERWRITE_CONFIGS = [
        ("publisher alone", ["pub"], None),
        ("publisher + slow subscriber", ["pub", "slow"], "publisher alone"),
        ("publisher + slow subscriber reading again at once after Lagged", ["pub", "eager"], "publisher alone"),
        ("publisher + fast subscriber", ["pub", "sub"], None),
        ("publisher + fast + slow subscriber", ["pub", "sub", "slow"], "publisher + fast subscriber"),
    ]

    def run_overwrite(self) -> None:
        size = min(self.opts.sizes)
        count = max(2000, int(OVERWRITE_COUNT * self.opts.scale))
        with ExitStack() as stack:
            groups: dict[str, Group] = {}
            for label, roles, _ in self.OVERWRITE_CONFIGS:
                try:
                    log(f"[overwrite] starting {len(roles)} workers for {label}")
                    groups[label] = stack.enter_context(
                        Group(self, "shmring", roles, f"overwrite: {label}", "overwrite", events=("pub_done",),
                              pin=self.two_cpus("pub", "sub")))
                except Exception as e:
                    self.overwrite[label] = self._fail(f"overwrite: {label}", e)
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in groups}
            live = dict(groups)
            for r in range(-1, self.opts.runs):
                for label, g in list(live.items()):
                    params = {"section": "overwrite", "size": size, "slow": self.opts.slow_sleep,
                              "count": count if r >= 0 else max(1000, count // 10)}
                    try:
                        out = g.run(params)
                    except Exception as e:
                        self.overwrite[label] = self._fail(f"overwrite: {label}", e)
                        del live[label]
                        continue
                    if r >= 0:
                        pub = out[0]
                        runs[label].append({"count": params["count"], "pub_rate": params["count"] / (pub["t1"] - pub["t0"]),
                                            "subs": {g.roles[i]: out[i] for i in range(1, len(out))}})
            for label in live:
                rs = runs[label]
                rates = [x["pub_rate"] for x in rs]
                res: dict[str, Any] = {"pub_rate": statistics.median(rates), "spread_pct": spread_pct(rates),
                                       "runs": rs, "count": count, "size": size}
                for role in SUB_ROLES:
                    if role in rs[0]["subs"]:
                        res[role] = {k: sum(x["subs"][role][k] for x in rs) / len(rs)
                                     for k in ("received", "missed", "lag_events")}
                        res[role]["slow_reads"] = sum(x["subs"][role].get("slow_reads", 0) for x in rs) / len(rs)
                self.overwrite[label] = res
                log(f"[overwrite] {label}: publisher {fmt_rate(res['pub_rate'])} msgs/s (spread {res['spread_pct']:.0f}%)"
                    + "".join(f"; {role}: received {res[role]['received']:.0f} + missed {res[role]['missed']:.0f}"
                              for role in SUB_ROLES if role in res))

    # -- 3. latest() ---------------------------------------------------------

    def run_latest(self) -> None:
        calls = max(5000, int(LATEST_CALLS * self.opts.scale))
        label = "latest()"
        try:
            log("[latest] starting 2 workers")
            g = Group(self, "shmring", ["pub", "latest"], label, "overwrite", events=("stop",),
                      pin=self.two_cpus("pub", "latest")).__enter__()
        except Exception as e:
            for size in self.opts.sizes:
                for streaming in (True, False):
                    self.latest[self._latest_row(size, streaming)] = self._fail(f"latest {size_label(size)}", e)
            return
        try:
            for size in self.opts.sizes:
                for streaming in (True, False):
                    row = self._latest_row(size, streaming)
                    rs = []
                    try:
                        for r in range(-1, self.opts.runs):
                            out = g.run({"section": "latest", "size": size, "stream": streaming,
                                         "calls": calls if r >= 0 else max(1000, calls // 10)})
                            if r >= 0:
                                rs.append(self._latest_run(out))
                    except Exception as e:
                        self.latest[row] = self._fail(f"latest: {row}", e)
                        continue
                    self.latest[row] = self._latest_summary(rs, calls)
                    x = self.latest[row]
                    log(f"[latest] {row}: p50 {x['p50_us']:.2f} µs, p99 {x['p99_us']:.2f} µs")
        finally:
            g.close()
        # The timer's own cost: the same loop around nothing, in this process.
        clock = time.perf_counter_ns
        rs = []
        for _ in range(self.opts.runs):
            ns = []
            for _ in range(calls):
                a = clock()
                ns.append(clock() - a)
            rs.append(percentiles(sorted(ns)) | {"distinct": 0, "pub_rate": 0.0, "calls": calls})
        self.latest["timer floor (perf_counter_ns pair, parent)"] = self._latest_summary(rs, calls)

    def two_cpus(self, a: str, b: str) -> dict[str, int]:
        """Roles a and b pinned to two different CPUs, so that they really run
        at the same time, and always the same way from run to run (unpinned,
        the scheduler sometimes puts both on one CPU: a latest() reader then
        sees a publisher that is not running, and an overwrite publisher's
        rate changes several-fold with where its fast subscriber runs)."""
        if self.opts.no_pin or not hasattr(os, "sched_setaffinity"):
            return {}
        cpus = sorted(os.sched_getaffinity(0))
        return {a: cpus[0], b: cpus[1]} if len(cpus) >= 2 else {}

    @staticmethod
    def _latest_row(size: int, streaming: bool) -> str:
        return f"{size_label(size)}, publisher {'streaming' if streaming else 'idle'}"

    def _latest_run(self, out: list[dict[str, Any]]) -> dict[str, Any]:
        from array import array

        pub, rd = out
        ns = array("q")
        ns.frombytes(rd["ns"])
        res = percentiles(sorted(ns))
        res.update(calls=len(ns), distinct=rd["distinct"], pub_rate=pub["sent"] / max(1e-9, pub["t1"] - pub["t0"]))
        return res

    @staticmethod
    def _latest_summary(rs: list[dict[str, Any]], calls: int) -> dict[str, Any]:
        keys = ("p50_us", "p99_us", "p999_us", "max_us", "mean_us", "distinct", "pub_rate")
        out: dict[str, Any] = {k: statistics.median(x[k] for x in rs) for k in keys}
        out.update(runs=rs, calls=calls, spread_pct=spread_pct([x["p50_us"] for x in rs]))
        return out


# ---------------------------------------------------------------------------
# report


def _failed(res: dict[str, Any] | None) -> str | None:
    if not res:
        return "–"
    if res.get("failed"):
        return f"**{res['failed']}**"
    return None


def report(bench: Bench, meta: dict[str, Any]) -> str:
    opts = bench.opts
    P = ["# shmring.Topic: broadcast fan-out, overwrite with a slow subscriber, latest()\n", run_line(meta),
         f"Medians of {opts.runs} run(s), each after one unmeasured warm-up run. Messages: seq in the first and "
         "last 8 bytes, a fixed body between; every message received is checked (length, both seqs, body, "
         f"order). shmring ring capacity {opts.capacity} bytes.\n"]

    if "fanout" in opts.sections:
        P.append("## 1. Fan-out: 1 publisher -> N subscribers, every message to every subscriber\n")
        P.append("Messages/s delivered **per subscriber** (each subscriber gets all of them) and **in total** "
                 "(N x per subscriber), from the start barrier to the last subscriber done. shmring: policy "
                 f"\"block\", `send`/`recv_bytes`. pyzmq: XPUB (XPUB_VERBOSE handshake: the publisher starts once "
                 f"it has read every subscription) / SUB over ipc://, SNDHWM = RCVHWM = {ZMQ_HWM:,} (more than any "
                 "run's messages); gaps count as drops. iceoryx2: `RetryUntilDelivered`, no safe overflow, "
                 "publisher created before the subscribers, subscribers busy-poll `receive()`.\n")
        fams = [f for f in opts.families]
        for size in opts.sizes:
            P.append(f"### {size_label(size)} messages\n")
            hdr = ["msgs/s"] + [f"{h}, 1 -> {n}" for n in opts.subs for h in ("per sub", "total")]
            rows = []
            for fam in fams:
                row = [FAMILY_LABEL[fam]]
                for n in opts.subs:
                    r = bench.fanout.get((fam, size, n)) or {}
                    f = _failed(r)
                    if f:
                        row += [f, f]
                    else:
                        row += [fmt_rate(r["per_sub"]), fmt_rate(r["total"])]
                rows.append(row)
            for ours, other in [(a, b) for a in ("shmring", "shmring-many") for b in fams if not b.startswith("shmring")]:
                if ours not in fams:
                    continue
                row = [f"{ours} ÷ {other}"]
                for n in opts.subs:
                    a, b = bench.fanout.get((ours, size, n)), bench.fanout.get((other, size, n))
                    x = fmt_ratio(a["per_sub"] / b["per_sub"]) + "x" if a and b and not _failed(a) and not _failed(b) else "–"
                    row += [x, ""]
                rows.append(row)
            P.append(md_table(hdr, rows) + "\n")
        detail = []
        for size in opts.sizes:
            for fam in fams:
                for n in opts.subs:
                    r = bench.fanout.get((fam, size, n)) or {}
                    if _failed(r):
                        continue
                    detail.append([size_label(size), FAMILY_LABEL[fam], f"1 -> {n}", f"{r['count']:,}",
                                   ", ".join(fmt_rate(x["per_sub"]) for x in r["runs"]), f"{r['spread_pct']:.0f}%",
                                   ", ".join(fmt_rate(x["count"] / x["pub_s"]) for x in r["runs"]),
                                   (f"{r['drops']:,}" + (" (stalled)" if r["stalled"] else "")) if fam == "pyzmq" else "–"])
        if detail:
            P.append("Runs: messages/s per subscriber of each run, spread (max - min) / median, the publisher's own "
                     "send rate (its `send` calls returning; pyzmq queues in its I/O thread) and messages dropped "
                     "(pyzmq, over all runs).\n")
            P.append(md_table(["size", "transport", "config", "msgs/run", "per sub, each run", "spread",
                               "publisher send rate", "drops"], detail) + "\n")

    if "overwrite" in opts.sections and bench.overwrite:
        any_res = next((r for r in bench.overwrite.values() if not r.get("failed")), None)
        size = any_res["size"] if any_res else min(opts.sizes)
        P.append("## 2. Policy \"overwrite\" with a slow subscriber\n")
        P.append(f"shmring Topic, policy \"overwrite\", {size_label(size)} messages, "
                 f"{format(any_res['count'], ',') if any_res else '?'} a run. Publisher msgs/s = messages / its own "
                 "time from the barrier to its last `send`; \"÷ same without the slow sub\" compares it with the row "
                 "that has no slow subscriber (1.00x: the slow subscriber costs the publisher nothing). The fast "
                 "subscriber reads as fast as it can; the slow one sleeps "
                 f"{opts.slow_sleep * 1000:g} ms after each `recv` while the publisher runs (after a message and after "
                 "a `Lagged`), then catches up; the one \"reading again at once after Lagged\" sleeps after a "
                 "message only, as a consumer that just goes on after a `Lagged` would: it resumes at the oldest "
                 "message held, the next one the publisher overwrites, and often lags again at once. Received and missed (sum of `Lagged.missed`) are per run, averaged; every run checks "
                 "received + missed == published and that after each `Lagged(missed)` the next seq is the expected "
                 "one + missed. "
                 + ("Publisher pinned to CPU {pub}, fast subscriber to CPU {sub}, slow subscriber unpinned.\n".format(
                     **bench.two_cpus("pub", "sub")) if bench.two_cpus("pub", "sub") else "Processes not pinned.\n"))
        rows = []
        for label, _, without in Bench.OVERWRITE_CONFIGS:
            r = bench.overwrite.get(label) or {}
            f = _failed(r)
            if f:
                rows.append([label, f, "", "", "", ""])
                continue
            base = bench.overwrite.get(without) or {} if without else {}
            rel = fmt_ratio(r["pub_rate"] / base["pub_rate"]) + "x" if base and not _failed(base) else "–"

            def subcell(role: str) -> str:
                if role not in r:
                    return "–"
                s = r[role]
                return (f"{s['received']:,.0f} + {s['missed']:,.0f} missed ({s['lag_events']:,.0f} Lagged)")

            ok = all(x["subs"][role]["received"] + x["subs"][role]["missed"] == x["count"]
                     for x in r["runs"] for role in x["subs"])
            rows.append([label, fmt_rate(r["pub_rate"]), rel, subcell("sub"), subcell("slow" if "slow" in r else "eager"),
                         ("✓" if ok else "✗") if r["runs"][0]["subs"] else "–"])
        P.append(md_table(["config", "publisher msgs/s", "÷ same without the slow sub", "fast sub: received + missed",
                           "slow sub: received + missed", "received + missed == published"], rows) + "\n")
        detail = [[label, ", ".join(fmt_rate(x["pub_rate"]) for x in r["runs"]), f"{r['spread_pct']:.0f}%",
                   next((f"{r[k]['slow_reads']:,.0f}" for k in ("slow", "eager") if k in r), "–")]
                  for label, r in bench.overwrite.items() if not _failed(r)]
        P.append(md_table(["config", "publisher msgs/s, each run", "spread", "slow sub: messages read while publishing"],
                          detail) + "\n")

    if "latest" in opts.sections and bench.latest:
        P.append("## 3. `Topic.latest()` latency\n")
        pin = bench.two_cpus("pub", "latest")
        P.append("One process calls `topic.latest()` (no subscription) in a loop, timing each call with two "
                 "`time.perf_counter_ns()` calls (their own cost is the timer floor row), while another process "
                 "publishes as fast as it can (policy \"overwrite\", no subscriber) or has published one message "
                 "and waits. Each result is checked (length, seq at both ends, body) and its seq may never go "
                 "back. Distinct: how many different messages the calls of one run returned. "
                 + (f"Publisher pinned to CPU {pin['pub']}, reader to CPU {pin['latest']}.\n" if pin
                    else "Processes not pinned.\n"))
        rows = []
        for label, r in bench.latest.items():
            f = _failed(r)
            if f:
                rows.append([label, f, "", "", "", "", "", ""])
                continue
            floor = label.startswith("timer")
            rows.append([label, f"{r['p50_us']:.2f}", f"{r['p99_us']:.2f}", f"{r['p999_us']:.2f}",
                         f"{r['max_us']:.0f}", f"{r['calls']:,}", "–" if floor else f"{r['distinct']:,.0f}",
                         "–" if floor or "idle" in label else fmt_rate(r["pub_rate"])])
        P.append(md_table(["", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "calls/run", "distinct", "publisher msgs/s"],
                          rows) + "\n")

    P += skipped_and_failures(meta["skipped"], [f"{e['tag']}: {e['where']}: {last_line(e['error'])}"
                                                for e in bench.errors])
    P.append(load_line(meta, "section", bench.section_load))
    P += run_warnings(meta)
    return "\n".join(P)


# ---------------------------------------------------------------------------


def versions(families: list[str]) -> dict[str, str]:
    from importlib.metadata import version

    out: dict[str, str] = {}
    for fam in ["shmring"] + families:
        if fam in out:
            continue
        try:
            out[fam] = version(fam)
        except Exception:
            continue
        if fam == "pyzmq":
            try:
                import zmq

                out[fam] += f" (libzmq {zmq.zmq_version()})"
            except Exception:
                pass
    shmring_source_note(out, os.path.dirname(HERE))
    return out


def select(only: str | None) -> tuple[list[str], dict[str, str]]:
    fams = list(FAMILIES)
    if only:
        aliases = {"zmq": "pyzmq", "iox2": "iceoryx2"}
        want = [aliases.get(x.strip().lower(), x.strip().lower()) for x in only.split(",") if x.strip()]
        bad = [x for x in want if x not in FAMILIES]
        if bad:
            raise SystemExit(f"--only: unknown {bad}; known: {', '.join(FAMILIES)}")
        fams = [f for f in FAMILIES if f in want]
    skipped: dict[str, str] = {}
    for fam, module in (("shmring", "shmring"), ("shmring-many", "shmring"), ("pyzmq", "zmq"), ("iceoryx2", "iceoryx2")):
        try:
            __import__(module)
            if fam == "shmring":
                import shmring

                shmring.Topic  # noqa: B018
        except Exception as e:
            skipped[fam] = f"import failed: {type(e).__name__}: {e}"
            log(f"skipping {fam}: {skipped[fam]}")
    if "shmring" in skipped:
        raise SystemExit(f"shmring does not import: {skipped['shmring']}")
    return [f for f in fams if f not in skipped], skipped


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__, "a tenth of the messages, one run: a smoke test (~5-10 s)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    ap.add_argument("--runs", type=int, help="measured runs per cell; the median is reported (default 3)")
    ap.add_argument("--scale", type=float, help="multiply the messages/calls of every run (default 1; --quick 0.1)")
    ap.add_argument("--sizes", help="message sizes, >= 16 bytes, e.g. 64,1KiB (default 64,1024)")
    ap.add_argument("--subs", help="fan-out subscriber counts (default 1,2,4)")
    ap.add_argument("--only", help="fan-out peers: comma-separated of shmring, pyzmq, iceoryx2 (default all)")
    ap.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY,
                    help=f"shmring ring bytes (default {DEFAULT_CAPACITY}); iceoryx2 buffers capacity/size samples")
    ap.add_argument("--slow-sleep", type=float, default=SLOW_SLEEP,
                    help=f"overwrite: the slow subscriber's sleep after each message, seconds (default {SLOW_SLEEP})")
    ap.add_argument("--zmq-idle", type=float, default=10.0,
                    help="a pyzmq subscriber that gets nothing for this long counts the rest as dropped (default 10)")
    ap.add_argument("--no-pin", action="store_true",
                    help="overwrite, latest: leave the publisher and the fast subscriber / reader unpinned "
                         "(default: two different CPUs)")
    add_output_arguments(ap, 60.0, "declared a HANG", DEFAULT_MARKDOWN)
    opts = ap.parse_args(argv)

    quick_defaults(opts, runs=(1, 3), scale=(0.1, 1.0))
    opts.sizes = sizes("--sizes", opts.sizes, SIZES)
    opts.subs = [int(s) for s in opts.subs.split(",")] if opts.subs else list(SUBS)
    opts.sections = [s.strip() for s in opts.sections.split(",") if s.strip()]
    bad = [s for s in opts.sections if s not in SECTIONS]
    if bad:
        raise SystemExit(f"--sections: unknown {bad}; known: {', '.join(SECTIONS)}")
    if opts.runs < 1 or opts.scale <= 0 or any(n < 1 for n in opts.subs):
        raise SystemExit("--runs, --scale and --subs must be positive")
    if any(s < 16 for s in opts.sizes):
        raise SystemExit("--sizes: at least 16 bytes (seq at both ends)")

    sigterm_as_interrupt()  # SIGTERM ends the run like ^C: workers stopped, what was measured reported

    opts.families, skipped = select(opts.only)
    meta = run_meta(START_METHOD, opts, versions(opts.families), skipped, warnings=[])
    build = shmring_build()
    bench = Bench(opts)
    interrupted = run_measured(bench.run, meta, bench.cleanup)
    warn_if_rebuilt(build, meta, "sections")

    write_outputs(report(bench, meta), opts.markdown, opts.json,
                  {"meta": meta, "errors": bench.errors, "section_load_other_pct": bench.section_load,
                   "fanout": [{"family": k[0], "size": k[1], "subs": k[2], **v} for k, v in bench.fanout.items()],
                   "overwrite": bench.overwrite, "latest": bench.latest})
    return exit_status(meta, bench.errors, interrupted, "cell(s) FAILED", opts.markdown)


if __name__ == "__main__":
    sys.exit(main())
