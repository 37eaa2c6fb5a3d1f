"""The report of bench_sync.py: an "at a glance" table, then one section
per measurement (tables with ratio columns against the baselines), the
skipped peers and failures, and the machine's load.
"""

from __future__ import annotations

from typing import Any

from _harness import (
    fmt_num, fmt_rate, last_line, loads_text, machine_load_text, md_table, ratio_cells, results_table, run_warnings,
    skipped_and_failures,
)
from _sync_kit import START_METHOD

# Which row stands for each primitive in the summary table.
SUMMARY = [
    ("shmring.SpinLock", "shmring.SpinLock (polled)", "polled flag"),
    ("shmring.Mutex", "shmring.Mutex+Condition", "with Condition"),
    ("shmring.Semaphore", "shmring.Semaphore", ""),
    ("shmring.Event", "shmring.Event", ""),
    ("shmring.AtomicFlag", "shmring.AtomicFlag", ""),
    ("mp.Lock", "mp.Condition", "mp.Condition"),
    ("mp.Semaphore", "mp.Semaphore", ""),
    ("posix_ipc.Semaphore", "posix_ipc.Semaphore", ""),
]
BASELINES = ["mp.Lock", "mp.Semaphore", "posix_ipc.Semaphore"]
HANDOFF_BASELINES = ["mp.Semaphore", "posix_ipc.Semaphore", "mp.Condition"]


def fmt_ms(s: float) -> str:
    ms = s * 1000
    return f"{ms:.0f} ms" if ms >= 100 else (f"{ms:.1f} ms" if ms >= 1 else f"{ms * 1000:.0f} µs")


def kill_summary(r: dict[str, Any]) -> str:
    out = r["blocked_outcome"]
    if out == "timed out":
        return f"hangs (timed out after {r['blocked_waited_s']:.2f} s)"
    return f"{out} after {fmt_ms(r['blocked_detect_s'])} (max {fmt_ms(r['blocked_detect_max_s'])})"


def _kill_cells(r: dict[str, Any]) -> list[str]:
    """A lock's row of section 5 after its name."""
    if r["blocked_outcome"] == "timed out":
        det = f"never (waited its full {r['blocked_waited_s']:.2f} s)"
    else:
        det = f"{fmt_ms(r['blocked_detect_s'])} (max {fmt_ms(r['blocked_detect_max_s'])})"
    late = (f"never (waited its full {r['late_detect_s']:.2f} s)" if r["late_outcome"] == "timed out"
            else fmt_ms(r["late_detect_s"]))
    return [r["blocked_outcome"], det, r["blocked_after"] or "–", r["late_outcome"], late,
            r["late_unrepaired"] or "–"]


def report(bench: Any, meta: dict[str, Any]) -> str:
    R, o = bench.results, bench.opts
    P = [f"# shmring synchronisation primitives vs multiprocessing and posix_ipc ({meta['host']['cpus']} CPUs, "
         f"Python {meta['python']}, start method {START_METHOD})\n"]
    P.append("Ratios (x NAME): how many times better than NAME — cost and latency: NAME's / this one's; "
             "throughput: this rate / NAME's rate. Above 1 is better than NAME.\n")

    # summary
    unc = {r["row"]: r for r in R["uncontended"] if not r.get("failed")}
    hof = {(r["row"], r["placement"]): r for r in R["handoff"] if not r.get("failed")}
    places = list(dict.fromkeys(r["placement"] for r in R["handoff"] if r.get("placement")))
    hof_failed = {(r["row"], r["placement"]) for r in R["handoff"] if r.get("failed") and r.get("placement")}
    wcpu = {r["row"]: r for r in R["waitcpu"] if not r.get("failed")}
    con = {(r["row"], r["procs"]): r for r in R["contention"] if not r.get("failed")}
    kil = {r["row"]: r for r in R["kill"] if not r.get("failed")}
    if any(R.values()):
        rows: list[list[str]] = []
        for prim, ho, via in SUMMARY:
            if not bench.want(prim) and not bench.want(ho):
                continue
            u = unc.get(prim)
            w = wcpu.get(prim) or wcpu.get(ho)
            cells = [prim + (f" ({via})" if via else ""), f"{u['ns']:.0f}" if u else "–"]
            for pl in places:
                h = hof.get((ho, pl))
                cells.append(f"{fmt_num(h['p50_us'])} / {fmt_num(h['p99_us'])}" if h
                             else ("FAILED" if (ho, pl) in hof_failed else "–"))
            cells.append(f"{w['cpu_pct']:.1f}%" if w else "–")
            for procs in o.procs:
                c = con.get((prim, procs))
                cells.append(fmt_rate(c["rate"]) if c else "–")
            k = kil.get(prim)
            cells.append(kill_summary(k) if k else ("n/a (not a lock)" if prim in ("shmring.Event", "shmring.AtomicFlag") else "–"))
            rows.append(cells)
        P.append("## At a glance\n")
        P.append("Hand-off: round trip between two processes pinned to two CPUs / to one CPU; for the locks it is "
                 "the row named in brackets (a lock is not a signalling primitive). CPU while waiting: % of a core.\n")
        P.append(md_table(["primitive", "uncontended ns/pair"] + [f"round trip p50 / p99 µs, {pl}" for pl in places]
                          + ["CPU while waiting"]
                          + [f"{p} proc{'s' if p > 1 else ''} acq/s" for p in o.procs]
                          + ["holder SIGKILLed: blocked waiter gets"], rows) + "\n")

    # 1
    if R["uncontended"]:
        rows_all = R["uncontended"]
        P.append("## 1. Uncontended cost, one process, tight loop\n")
        P.append(f"ns per iteration of the loop (median of {o.repeat_uncontended} repeats of ~{o.target_uncontended:g} s), "
                 "Python call overhead included — what a Python caller pays. The floor row is the same loop calling two "
                 "no-op C functions.\n")
        lock_base = {r["row"]: r["ns"] for r in rows_all if not r.get("failed") and r["row"] in BASELINES}
        sig_base = {r["row"].replace(" (signal)", ""): r["ns"] for r in rows_all
                    if not r.get("failed") and r["row"].endswith("(signal)")}
        names = [b for b in BASELINES if b in lock_base]
        table = []
        for r in rows_all:
            if r.get("failed"):
                table.append([r["row"], r["failed"]] + [""] * (4 + len(names)))
                continue
            base = sig_base if (r["row"].endswith("(signal)") or r["row"] in ("shmring.Event", "shmring.AtomicFlag")) else lock_base
            ratios = ["–"] * len(names) if r["row"].startswith("(") else ratio_cells(r["ns"], base, names, False)
            table.append([r["row"], r["op"], f"{r['ns']:.0f}", f"{r['min_ns']:.0f}", f"{r['spread_pct']:.0f}%"]
                         + ratios)
        P.append(md_table(["primitive", "operation", "ns (median)", "ns (min)", "spread"] + [f"x {b}" for b in names],
                          table) + "\n")
        P.append("Ratios of the signal rows (post + wait, Event, AtomicFlag) are against the same baselines used as "
                 "signals (release(); acquire() of a semaphore at 0); lock rows against acquire(); release().\n")

    # 2
    if R["handoff"]:
        P.append(f"## 2. Hand-off latency between two processes (up to {o.pingpong_n} round trips after "
                 f"{o.pingpong_warmup} unmeasured, at most {o.pingpong_max_s:g} s a row)\n")
        P.append("A posts, B (blocked) wakes and answers through a second primitive, A wakes: a round trip is two "
                 "hand-offs. Locks are not signalling primitives: the Mutex hands off through a Condition (its "
                 "natural partner), the SpinLock through a turn word it guards, polled (both processes spin), mp.Lock "
                 "through mp.Condition. The two processes are pinned: on **2 CPUs** every hand-off wakes a process "
                 "whose CPU went idle (a cross-CPU wake-up of an idle vCPU); on **1 CPU** a hand-off is a context "
                 "switch on that CPU. Unpinned, the scheduler picks one or the other from run to run.\n")
        for pl in places:
            rows_all = [r for r in R["handoff"] if r.get("placement") == pl]
            base = {r["row"]: r["p50_us"] for r in rows_all if not r.get("failed")}
            names = [b for b in HANDOFF_BASELINES if b in base]
            P.append(f"### {pl}\n")
            P.append(results_table(
                ["primitive", "how", "p50 µs", "p99 µs", "p99.9 µs", "CPU µs/rt A/B", "round trips"]
                + [f"x {b}" for b in names], rows_all,
                lambda r: [r["how"], fmt_num(r["p50_us"]), fmt_num(r["p99_us"]), fmt_num(r["p999_us"]),
                           f"{r['a_cpu_us_per_rt']:.1f}/{r['b_cpu_us_per_rt']:.1f}",
                           str(r["n"]) + (" (time limit)" if r.get("time_bound_hit") else "")]
                + ratio_cells(r["p50_us"], base, names, False)) + "\n")
        fails = [r for r in R["handoff"] if r.get("failed") and not r.get("placement")]
        if fails:
            P.append("\n".join(f"- {r['row']}: {r['failed']}" for r in fails) + "\n")

    # 3
    if R["waitcpu"]:
        P.append(f"## 3. CPU burned while waiting ({o.wait_seconds:g} s, until the wait's timeout)\n")
        P.append(results_table(
            ["primitive", "waiting in", "wall s", "CPU ms", "% of a core", "result"], R["waitcpu"],
            lambda r: [r["what"], f"{r['wall_s']:.3f}", f"{r['cpu_s'] * 1000:.1f}", f"{r['cpu_pct']:.2f}%",
                       "got through!" if r["got"] else "timed out"]) + "\n")
        if bench.notes["waitcpu"]:
            P.append("\n".join(f"- {n}" for n in bench.notes["waitcpu"]) + "\n")

    # 4
    if R["contention"]:
        P.append("## 4. Throughput under contention\n")
        P.append(f"N processes each do K cycles of acquire(); counter += 1; release() on one shared counter (a plain "
                 f"int64 in shared memory, read-modify-write in Python); the final count must be N x K. Acquisitions "
                 f"per second in total, median of {o.repeat} runs sized to ~{o.target_contention:g} s; 'cores busy' is the "
                 f"CPU time of all N processes over the run's wall time ({meta['host']['cpus']} CPUs here). 'first done at': "
                 f"when the first process finished its K, as a share of the run — 1/N means the processes took turns "
                 f"for whole time slices (the releaser re-takes the lock at once: high throughput, no fairness), 100% "
                 f"that they interleaved to the end. "
                 + ("Process i is pinned to CPU i mod the CPU count: up to that count each process has a CPU of its "
                    "own; beyond it, processes share CPUs (and a lock holder can be preempted)."
                    if o.pin else "Processes are not pinned (the scheduler may put several on one CPU).") + "\n")
        rows_names = list(dict.fromkeys(r["row"] for r in R["contention"]))
        summ = []
        for row in rows_names:
            cells = [row]
            for procs in o.procs:
                found = [x for x in R["contention"] if x["row"] == row and x.get("procs") == procs]
                if not found:
                    cells.append("–")
                elif found[0].get("failed"):
                    cells.append(found[0]["failed"])
                else:
                    ok = "" if found[0]["exact"] else (
                        " (count WRONG, as expected)" if row.startswith("unprotected") else " (count WRONG)")
                    cells.append(f"{fmt_rate(found[0]['rate'])}{ok}")
            summ.append(cells)
        P.append("Acquisitions/s:\n")
        P.append(md_table(["primitive"] + [f"{p} proc{'s' if p > 1 else ''}" for p in o.procs], summ) + "\n")
        for procs in o.procs:
            crows = [r for r in R["contention"] if r.get("procs") == procs]
            base = {r["row"]: r["rate"] for r in crows if not r.get("failed")}
            names = [b for b in BASELINES if b in base]
            table = []
            for r in crows:
                if r.get("failed"):
                    table.append([r["row"], r["failed"]] + [""] * (5 + len(names)))
                    continue
                cnt = "exact" if r["exact"] else "WRONG " + ", ".join(f"{c}/{t}" for c, t in r["counts"][:1])
                table.append([r["row"], fmt_rate(r["rate"]), f"{r['cores_busy']:.2f}", fmt_num(r["cpu_us_per_acq"]),
                              f"{r['first_done'] * 100:.0f}%" if procs > 1 else "–", cnt,
                              f"{r['spread_pct']:.0f}%", str(r["k"])] + ratio_cells(r["rate"], base, names, True))
            P.append(f"### {procs} process{'es' if procs > 1 else ''}\n")
            P.append(md_table(["primitive", "acq/s", "cores busy", "CPU µs/acq", "first done at", "count", "spread",
                               "K per proc"]
                              + [f"x {b}" for b in names], table) + "\n")

    # 5
    if R["kill"]:
        T = o.kill_timeout
        P.append("## 5. The holder is killed with SIGKILL while holding the lock\n")
        P.append(f"Blocked waiter: a second process is already blocked in acquire(timeout={T:g}) when the holder is "
                 "killed (0.20-0.25 s after it started waiting); the holder is left a zombie (not reaped) until the waiter "
                 f"answers. 'detected after' is the time from the kill to the waiter's answer (median and max of "
                 f"{o.kill_repeats} kills for the locks that detect it; one kill for the others). Late acquirer: the "
                 "holder was killed and reaped before acquire(timeout) is called. After OwnerDied the waiter repairs "
                 "(Mutex: mark_consistent()) and releases, then acquires again ('then'); the last column is what the "
                 "next acquirer gets when the late acquirer releases after OwnerDied *without* repairing.\n")
        P.append(results_table(["lock", "blocked waiter gets", "detected after", "then", "late acquirer gets",
                                "detected after", "released unrepaired: next gets"], R["kill"], _kill_cells) + "\n")

    P += skipped_and_failures(meta["skipped"], [f"{e['section']} {e['row']}: {last_line(e['error'])}"
                                                for e in bench.errors])
    P.append(f"Machine: {meta['host']['cpu_model'] or '?'}, {meta['host']['cpus']} CPUs, kernel {meta['host']['kernel']}; "
             f"load average {meta.get('loadavg_1min_at_start', -1):.2f} at start; {machine_load_text(meta)}; by section: "
             f"{loads_text(bench.section_load)}.\n")
    P += run_warnings(meta, "spinning and contention rows suffer most; ")
    P.append("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + "\n")
    return "\n".join(P)
