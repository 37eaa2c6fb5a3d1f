"""The figure of ``shmring bench --plot FILE.png``: throughput against
message size for the channel, queue and topic workloads, and the round-trip
latency distribution.  Needs matplotlib (the ``plot`` extra); imported only
when a plot is asked for."""

from __future__ import annotations

from typing import Any

from .selfbench import usable_cpus, LATENCY_SIZE, WORKLOADS, Results, size_label

PANELS = (
    ("channel", "Channel: bytes, 1 -> 1 process"),
    ("queue", "Queue: objects, 1 -> 1 process"),
    ("topic", "Topic: 1 publisher -> 2 subscribers"),
)
# shmring's subjects in one colour family, the peers in greys and others.
COLOURS = {
    "shmring.Channel": "#d62728", "shmring.Queue": "#d62728", "shmring.Topic": "#d62728",
    "multiprocessing.Pipe": "#1f77b4", "multiprocessing.Queue": "#7f7f7f", "multiprocessing.Pipe x2": "#1f77b4",
    "faster_fifo.Queue": "#2ca02c", "pyzmq PUB/SUB": "#9467bd",
}
CDF_POINTS = 400


def _throughput_panel(ax: Any, results: Results, workload: str, title: str) -> None:
    for subject in WORKLOADS[workload]:
        points = sorted((t.size, t.rate * t.size / 1e6) for t in results.throughput
                        if t.workload == workload and t.subject == subject)
        if points:
            sizes, mbs = zip(*points)
            ax.plot(sizes, mbs, marker="o", label=subject, color=COLOURS.get(subject),
                    linewidth=2.5 if subject.startswith("shmring") else 1.5)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(results.settings.sizes), [size_label(s) for s in results.settings.sizes])
    ax.minorticks_off()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("message size")
    ax.set_ylabel("MB/s")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)


def _latency_panel(ax: Any, results: Results) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for lat in results.latency:
        n = len(lat.samples_ns)
        if not n:
            continue
        # The distribution at CDF_POINTS fractions (and the slowest one):
        # every sample would only make the file larger, not the curve finer.
        picks = sorted({min(n - 1, int(i * n / CDF_POINTS)) for i in range(CDF_POINTS)} | {n - 1})
        us = [lat.samples_ns[i] / 1000 for i in picks]
        fractions = [(i + 1) / n for i in picks]
        p50, p99 = lat.samples_ns[n // 2] / 1000, lat.samples_ns[min(n - 1, int(0.99 * n))] / 1000
        ax.step(us, fractions, where="post", color=COLOURS.get(lat.subject),
                label=f"{lat.subject}: p50 {p50:.1f} µs, p99 {p99:.1f} µs")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(f"Round trip of a {size_label(LATENCY_SIZE)} message (distribution)", fontsize=10)
    ax.set_xlabel("µs")
    ax.set_ylabel("fraction of round trips")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def draw(results: Results, path: str) -> None:
    """Write the figure to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (workload, title) in zip(axes.flat, PANELS):
        _throughput_panel(ax, results, workload, title)
    _latency_panel(axes.flat[3], results)
    s = results.settings
    checked = "every message checked" if results.all_checked and not results.failures else "NOT every message checked"
    fig.suptitle(f"shmring bench on {usable_cpus()} CPUs: median of {s.runs} run(s) per point, {checked}",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80, pil_kwargs={"optimize": True})
    plt.close(fig)
