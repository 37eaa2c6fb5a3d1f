"""The ``shmring bench`` command: runs shmring.selfbench and shows its tables
(or JSON), with progress bars on a terminal and an optional plot."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from .selfbench import usable_cpus, BASELINES, LATENCY_SIZE, WORKLOADS, Results, Settings, fmt_rate, plan, run_bench, size_label, steps

TITLES = {
    "channel": "Channel: bytes from one process to another",
    "queue": "Queue: objects (seq, payload) from one producer process to one consumer",
    "topic": "Topic: one publisher, 2 subscribers that each get every message",
    "latency": f"Latency: round trips of a {size_label(LATENCY_SIZE)} message between two processes",
}
SHORT = {"multiprocessing.Pipe": "Pipe", "multiprocessing.Queue": "mp.Queue", "multiprocessing.Pipe x2": "Pipe x2"}


def _fail(message: str) -> None:
    click.echo(f"shmring: {message}", err=True)
    sys.exit(1)


def _check_plot_path(path: str) -> None:
    """Refuse a plot path that cannot work before measuring anything, and a
    missing matplotlib (the plot extra)."""
    if not path.lower().endswith(".png"):
        _fail(f"--plot: {path!r} does not end in .png (the plot is a PNG image)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        _fail(f"--plot: no such folder: {folder!r}")
    if not os.access(folder, os.W_OK):
        _fail(f"--plot: cannot write into {folder!r}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _fail("--plot needs matplotlib: pip install 'shmring[plot]'")


@contextmanager
def _progress(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr while it is a terminal (none when piped):
    yields the function that starts each step."""
    console = Console(stderr=True)
    columns = (TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task("starting", total=total)
        begun = 0

        def step(text: str) -> None:
            nonlocal begun
            if begun:
                progress.advance(task)
            begun += 1
            progress.update(task, description=text)

        yield step
        progress.update(task, completed=total)


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "–"
    x = value / base
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def throughput_table(results: Results, workload: str) -> Table:
    baselines = BASELINES[workload]
    table = Table(box=None, header_style="bold")
    for column in ("size", "subject", "messages/s", "MB/s", *(f"x {SHORT[b]}" for b in baselines)):
        table.add_column(column, justify="left" if column in ("size", "subject") else "right", no_wrap=True)
    for size in results.settings.sizes:
        for n, subject in enumerate(WORKLOADS[workload]):
            label = size_label(size) if n == 0 else ""
            if subject in results.skipped:
                table.add_row(label, subject, results.skipped[subject].split(" (")[0], "", *("" for _ in baselines))
                continue
            rate = results.rate(workload, subject, size)
            if rate is None:
                table.add_row(label, subject, "[red]FAILED[/red]", "", *("" for _ in baselines))
                continue
            ratios = [_ratio(rate, results.rate(workload, b, size)) for b in baselines]
            table.add_row(label, subject, f"{fmt_rate(rate)}", f"{rate * size / 1e6:,.0f}", *ratios)
    return table


def latency_table(results: Results) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("subject", "p50", "p99", "x Pipe (p50)", "x Pipe (p99)"):
        table.add_column(column, justify="left" if column == "subject" else "right", no_wrap=True)
    by_subject = {lat.subject: lat for lat in results.latency}
    base = by_subject.get("multiprocessing.Pipe")
    for subject in WORKLOADS["latency"]:
        lat = by_subject.get(subject)
        if lat is None:
            table.add_row(subject, "[red]FAILED[/red]", "", "", "")
            continue
        p = lat.to_json()
        b = base.to_json() if base is not None else {}
        table.add_row(subject, f"{p['p50_us']:.1f} µs", f"{p['p99_us']:.1f} µs",
                      _ratio(b.get("p50_us"), p["p50_us"]), _ratio(b.get("p99_us"), p["p99_us"]))
    return table


def print_report(console: Console, results: Results) -> None:
    for workload in WORKLOADS:
        console.print(f"[bold]{TITLES[workload]}[/bold]")
        console.print(latency_table(results) if workload == "latency" else throughput_table(results, workload))
        console.print()
    s = results.settings
    console.print(f"Each figure: the median of {s.runs} run(s) of ~{s.target_s:g} s after a warm-up run; "
                  f"latency: {s.rounds:,} round trips after {s.warmup_rounds:,}. x NAME: this rate over NAME's "
                  f"(latency: NAME's time over this one's). {usable_cpus()} CPUs, {results.duration_s:.0f} s.")
    for subject, why in results.skipped.items():
        console.print(escape(f"skipped {subject}: {why}"))
    checked = results.all_checked
    if results.failures:
        for failure in results.failures:
            console.print("[red]FAILED[/red] " + escape(failure))
    elif checked:
        console.print("every message checked: [green]OK[/green]")
    else:
        console.print("[red]some messages were not checked[/red]")


@click.command("bench")
@click.option("--quick", is_flag=True, help="A few seconds: fewer sizes, one short run each (for CI).")
@click.option("--plot", "plot_path", metavar="FILE.png", help="Draw throughput against size and the latency "
              "distribution into FILE.png (needs matplotlib: pip install 'shmring[plot]').")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON for scripts.")
def bench_command(quick: bool, plot_path: str | None, as_json: bool) -> None:
    """Measure Channel, Queue and Topic against multiprocessing (and
    faster-fifo, pyzmq when installed) on this machine: real processes,
    every message checked; under a minute (--quick: a few seconds)."""
    if plot_path is not None:
        _check_plot_path(plot_path)
    settings = Settings.pick(quick)
    pairs, _ = plan(settings)
    with _progress(steps(settings, pairs)) as step:
        results = run_bench(settings, step)
    if as_json:
        click.echo(json.dumps(results.to_json(), indent=2))
    else:
        out = Console(highlight=False, width=None if sys.stdout.isatty() else 100)
        print_report(out, results)
    if plot_path is not None:
        from .selfbench_plot import draw

        draw(results, plot_path)
        click.echo(f"plot written to {plot_path}", err=True)
    if results.failures or not results.all_checked:
        sys.exit(1)
