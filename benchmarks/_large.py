"""The "large" workload of bench_channel.py: what it measures, the memcpy
baseline measured in the same run, and its report.

Large messages (64 KiB, 1 MiB) go one way between two processes, each
message stamped by the sender with its sequence number in the first and
last 8 bytes and checked so by the receiver (``check_stamped``: the same
check for every transport and way of receiving).  The sender's source is
"hot" (one buffer, in the cache) or "cold" (a rotation over more memory than
the last-level cache).  The receiver takes each message one of these ways:

  recv        a fresh bytes per message: two copies (into the ring, out of it)
  recv_into   into the caller's buffer: two copies, no allocation
  peek        read in place through a loan: one copy (the sender's), the
              shape of iceoryx2's loan + memmove + receive

memcpy is the bound: one process copying buffers of the size from the same
sources into one destination (ctypes.memmove), timed in the parent.  The
1 MiB messages go through two ring sizes (CASES): the ring's size is how
much memory the copies cycle through.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from typing import Any

from _harness import KiB, MiB, fmt_num, fmt_ratio, md_table, size_label, spread_pct
from _workloads import large_sources

# (message size, ring bytes): 64 KiB in a 1 MiB ring as in the throughput
# workload; 1 MiB in a ring that stays in this machine's caches (4 MiB: room
# for 3) and in one that does not (16 MiB: room for 8, the throughput
# workload's rule), where messages are copied in with streaming stores.
CASES = [(64 * KiB, MiB), (MiB, 4 * MiB), (MiB, 16 * MiB)]
SOURCES = ("hot", "cold")
# The ways each transport is measured: shmring with its default strategy
# ("adaptive": spins 20 µs, then sleeps), and waiting like iceoryx2's
# busy-polling subscriber ("spin": collapses when the machine has more
# runnable processes than cores, each spinner burning the slice its peer needs).
MODES = {
    "shmring-adaptive": ("recv", "recv_into", "peek"),
    "shmring-spin": ("recv", "peek"),
    "iceoryx2": ("peek",),
}
COPIES = {"recv": "2 copies + a bytes", "recv_into": "2 copies", "peek": "1 copy"}


def variants(transport: str) -> list[tuple[str, str]]:
    """The (mode, source) pairs measured for a transport."""
    return [(mode, source) for mode in MODES.get(transport, ()) for source in SOURCES]


def memcpy_rate(size: int, source: str, seconds: float) -> float:
    """Bytes/s of one process copying ``size``-byte buffers from the
    workload's sources into one destination for about ``seconds``."""
    sources = large_sources(size, source)
    keep = [(ctypes.c_char * size).from_buffer(b) for b in sources]
    addrs = [ctypes.addressof(a) for a in keep]
    dst = (ctypes.c_char * size)()
    memmove, nb, clock = ctypes.memmove, len(addrs), time.perf_counter
    count = 16
    while True:
        t0 = clock()
        for i in range(count):
            memmove(dst, addrs[i % nb], size)
        elapsed = clock() - t0
        if elapsed >= seconds:
            del keep
            return count * size / elapsed
        count = int(count * min(16.0, max(2.0, 1.2 * seconds / max(elapsed, 1e-6))))


def memcpy_rows(size: int, capacity: int, seconds: float, repeat: int) -> list[dict[str, Any]]:
    """The memcpy baseline's rows for ``size`` (in the table of ``capacity``):
    median of ``repeat`` runs each."""
    rows = []
    for source in SOURCES:
        memcpy_rate(size, source, seconds / 4)  # warm-up
        rates = [memcpy_rate(size, source, seconds) for _ in range(repeat)]
        rows.append({"transport": "memcpy (1 process)", "mode": "memcpy", "source": source, "size": size,
                     "capacity": capacity,
                     "gb_per_s": statistics.median(rates) / 1e9, "spread_pct": spread_pct(rates),
                     "rx_cpu_us_per_msg": None})
    return rows


def _find(rows: list[dict[str, Any]], transport: str, mode: str, source: str) -> dict[str, Any] | None:
    for r in rows:
        if r["transport"] == transport and r["mode"] == mode and r["source"] == source and not r.get("failed"):
            return r
    return None


def report(rows: list[dict[str, Any]], repeat: int) -> str:
    """Section 3b of the report: a table per size, GB/s with hot and cold
    sources, and the ratios to memcpy and to iceoryx2 with the same source."""
    if not rows:
        return ""
    parts = ["## 3b. Large messages: send + recv / recv_into / peek, hot and cold sources\n",
             f"Medians of {repeat} runs, the variants of a transport interleaved run by run; every message "
             "checked (sequence number in its first and last 8 bytes, stamped by the sender). Hot: the "
             "sender sends one buffer again and again; cold: it rotates over 96 MiB of buffers (more than "
             "the last-level cache). memcpy: one process copying the same sources into one buffer. "
             "\"x memcpy\" and \"x iceoryx2\" compare with the same source in the same run.\n"]
    for size, capacity in dict.fromkeys((r["size"], r["capacity"]) for r in rows):
        table = []
        at_size = [r for r in rows if r["size"] == size and r["capacity"] == capacity]
        for transport, mode in dict.fromkeys((r["transport"], r["mode"]) for r in at_size):
            cells = [transport, "memcpy" if mode == "memcpy" else f"{mode} ({COPIES.get(mode, '')})"]
            gbs, vs_memcpy, vs_iox, cpu = [], [], [], []
            for source in SOURCES:
                r = _find(at_size, transport, mode, source)
                failed = next((x["failed"] for x in at_size if x["transport"] == transport
                               and x["mode"] == mode and x["source"] == source and x.get("failed")), "–")
                if r is None:
                    gbs.append(failed)
                    vs_memcpy.append("–")
                    vs_iox.append("–")
                    cpu.append("–")
                    continue
                m = _find(at_size, "memcpy (1 process)", "memcpy", source)
                i = _find(at_size, "iceoryx2", "peek", source)
                gbs.append(f"{fmt_num(r['gb_per_s'])} ±{r['spread_pct']:.0f}%")
                vs_memcpy.append(fmt_ratio(r["gb_per_s"] / m["gb_per_s"]) if m else "–")
                vs_iox.append(fmt_ratio(r["gb_per_s"] / i["gb_per_s"]) if i else "–")
                cpu.append(fmt_num(r["rx_cpu_us_per_msg"]) if r.get("rx_cpu_us_per_msg") is not None else "–")
            table.append(cells + gbs + vs_memcpy + vs_iox + cpu)
        parts.append(f"### {size_label(size)}, a {size_label(capacity)} ring\n")
        parts.append(md_table(["transport", "receive (copies)", "GB/s hot", "GB/s cold", "x memcpy hot",
                               "x memcpy cold", "x iceoryx2 hot", "x iceoryx2 cold", "recv CPU µs/msg hot",
                               "recv CPU µs/msg cold"], table) + "\n")
    return "\n".join(parts)
