"""``shmring top``: a live, full-screen view of every shmring object of this
user, and ``shmring inspect NAME --watch``: one object, refreshed.

Everything shown comes from :mod:`shmring.observe`, which maps each segment
read-only and never attaches, takes a lock or writes a byte: watching a
production system changes nothing in it.  Rates are the counters' deltas
between two snapshots.

The pieces are separate so that other views can reuse them:
:func:`build_rows` turns two snapshots into :class:`Row` objects,
:func:`select_rows` filters and sorts them, :func:`render_table` draws them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from . import observe
from ._errors import SegmentError
from .bridge.status import marker
from .segment import validate_name

# A ring at least this full is shown in yellow: its producers wait soon.
FULL_AT = 0.9
SORT_COLUMNS = ("name", "kind", "size", "fill", "msgs_in", "msgs_out", "bytes_in", "bytes_out", "procs")
KIND_FILTERS: tuple[str | None, ...] = (None, "channel", "queue", "topic", "sync", "segment", "queue-chunk", "damaged")
KEYS_HELP = "q quit  s sort  r reverse  / filter  k kind  p processes"


@dataclass(frozen=True)
class SubscriberRow:
    """A topic subscription and how fast it reads (None: not in the previous snapshot)."""

    subscriber: observe.Subscriber
    messages_per_s: float | None


@dataclass(frozen=True)
class Row:
    """One object as ``top`` shows it: its view and its rates over the last interval."""

    view: observe.ObjectView
    rates: dict[str, float]  # messages_in, messages_out, bytes_in, bytes_out per second; {} on the first look
    subscribers: tuple[SubscriberRow, ...] = ()

    @property
    def full(self) -> bool:
        return self.view.fill is not None and self.view.fill >= FULL_AT

    @property
    def owner_died(self) -> bool:
        lock = self.view.lock
        return lock is not None and lock.owner_died_pending

    @property
    def dead_holder(self) -> bool:
        lock = self.view.lock
        return lock is not None and lock.holder_pid != 0 and not lock.holder_alive

    @property
    def alarm(self) -> bool:
        """Something a person should look at: a dead process, a lock its holder died with, damage."""
        return bool(self.view.dead_processes or self.dead_holder or self.owner_died or self.view.problem)

    def sort_value(self, column: str) -> Any:
        if column == "name":
            return self.view.name
        if column == "kind":
            return (self.view.kind, self.view.name)
        if column == "size":
            return self.view.size
        if column == "fill":
            return -1.0 if self.view.fill is None else self.view.fill
        if column == "procs":
            return len(self.view.processes)
        return self.rates.get(column.replace("msgs_", "messages_"), -1.0)


def build_rows(before: observe.Snapshot | None, after: observe.Snapshot) -> list[Row]:
    """One row per object of ``after``, with its rates since ``before``
    (none for the first snapshot or for an object new since)."""
    rates = observe.rates(before, after) if before is not None else {}
    old = before.by_key() if before is not None else {}
    elapsed = after.time - before.time if before is not None else 0.0
    rows = []
    for view in after.objects:
        prev = old.get(view.key)
        subs = tuple(SubscriberRow(s, _subscriber_rate(prev, s, elapsed)) for s in view.subscribers)
        rows.append(Row(view, rates.get(view.key, {}), subs))
    return rows


def _subscriber_rate(prev: observe.ObjectView | None, sub: observe.Subscriber, elapsed: float) -> float | None:
    if prev is None or elapsed <= 0:
        return None
    for old in prev.subscribers:
        if (old.slot, old.pid) == (sub.slot, sub.pid) and sub.received >= old.received:
            missed = max(0, sub.lagged - old.lagged)  # skipped, not read
            return max(0, sub.received - old.received - missed) / elapsed
    return None


def select_rows(rows: list[Row], name_filter: str = "", kind: str | None = None, sort: str = "name",
                reverse: bool = False) -> list[Row]:
    """The rows whose name contains ``name_filter`` and of kind ``kind``, sorted by ``sort``."""
    chosen = [r for r in rows if name_filter in r.view.name and (kind is None or r.view.kind == kind)]
    return sorted(chosen, key=lambda r: r.sort_value(sort), reverse=reverse)


# -- text of the cells -----------------------------------------------------------------


def human_bytes(n: float, sep: str = "") -> str:
    """``n`` bytes in B, KiB, MiB or GiB (``sep`` between number and unit)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{sep}{unit}" if unit == "B" else f"{size:.1f}{sep}{unit}"
        size /= 1024
    return f"{n:.0f}{sep}B"


def human_rate(value: float | None) -> str:
    if value is None:
        return ""
    if value < 10_000:
        return f"{value:.0f}"
    for suffix in ("k", "M", "G"):
        value /= 1000
        if value < 1000 or suffix == "G":
            return f"{value:.1f}{suffix}"
    return ""


def _kind_text(view: observe.ObjectView) -> str:
    if view.kind == "sync" and view.primitive:
        return str(view.primitive.get("primitive", "sync"))
    return view.kind


def _fill_text(view: observe.ObjectView) -> str:
    return "" if view.fill is None else f"{100 * view.fill:.0f}%"


def _waiting_text(view: observe.ObjectView) -> str:
    return ", ".join(f"{n} {who if n > 1 else who[:-1]}" for who, n in view.waiting.items() if n)


def _procs_text(view: observe.ObjectView) -> Text:
    dead = view.dead_processes
    return Text(f"{len(view.processes)}" + (f" ({dead} dead)" if dead else ""), style="red" if dead else "")


def state_text(view: observe.ObjectView) -> Text:
    """The STATE cell: a lock's holder, a primitive's value, a topic's slowest reader, whether a bridge
    carries it, damage."""
    if view.problem:
        return Text(f"damaged: {view.problem}", style="bold red")
    lock = view.lock
    if lock is not None and lock.owner_died_pending:
        return Text(f"OWNER DIED (holder {lock.holder_pid} dead)", style="bold red")
    if lock is not None and lock.holder_pid:
        if not lock.holder_alive:
            return Text(f"held by {lock.holder_pid} (dead)", style="bold red")
        return Text(f"held by {lock.holder_pid}")
    prim = view.primitive or {}
    parts = [marker(view.bridge)] if view.bridge else []
    parts += [f"{k} {prim[k]}" for k in ("value", "set", "state", "waiters") if k in prim and prim[k] is not None]
    if view.subscribers:
        slowest = max(view.subscribers, key=lambda s: s.behind_messages)
        parts.append(f"{len(view.subscribers)} subscribers, max lag {slowest.behind_messages}")
    return Text(", ".join(parts))


# -- the table -------------------------------------------------------------------------

COLUMNS = ("NAME", "KIND", "SIZE", "FILL", "ITEMS", "IN msg/s", "OUT msg/s", "IN B/s", "OUT B/s", "WAITING",
           "PROCS", "STATE")


# Below this many columns of terminal, only the columns that matter most.
WIDE_AT = 150
NARROW_COLUMNS = ("NAME", "KIND", "FILL", "IN msg/s", "OUT msg/s", "PROCS", "STATE")
MIN_WIDTHS = {"NAME": 8, "KIND": 7, "PROCS": 10, "STATE": 12}


def _object_cells(row: Row) -> list[str | Text]:
    v, r = row.view, row.rates
    rate_bytes = {k: human_bytes(r[k]) for k in ("bytes_in", "bytes_out") if k in r}
    fill = Text(_fill_text(v), style="yellow" if row.full else "")
    return [
        v.name, _kind_text(v), human_bytes(v.size) if v.size else "", fill, "" if v.items is None else str(v.items),
        human_rate(r.get("messages_in")), human_rate(r.get("messages_out")), rate_bytes.get("bytes_in", ""),
        rate_bytes.get("bytes_out", ""), _waiting_text(v), _procs_text(v), state_text(v),
    ]


def _by_process(processes: tuple[observe.Process, ...]) -> list[tuple[observe.Process, int]]:
    """Each process once, with its number of attachments (a process may open an object more than once)."""
    counts: dict[tuple[int, bool], list[Any]] = {}
    for proc in processes:
        entry = counts.setdefault((proc.pid, proc.alive), [proc, 0])
        entry[1] += 1
    return [(proc, n) for proc, n in counts.values()]


def _process_cells(proc: observe.Process, attachments: int) -> list[str | Text]:
    alive = Text("alive", style="green") if proc.alive else Text("DEAD", style="bold red")
    command = (proc.command or "?") + (f" x{attachments}" if attachments > 1 else "")
    return ["  pid " + str(proc.pid), command, "", "", "", "", "", "", "", "", "", alive]


def _subscriber_cells(sub_row: SubscriberRow) -> list[str | Text]:
    s = sub_row.subscriber
    lag = f"lag {s.behind_messages} msgs / {human_bytes(s.behind_bytes)}" + (f", missed {s.lagged}" if s.lagged else "")
    if not s.alive:
        state = Text(lag + " (DEAD)", style="bold red")
    elif sub_row.messages_per_s == 0 and s.behind_messages:
        state = Text(lag + " (stalled)", style="yellow")
    else:
        state = Text(lag)
    return [f"  sub {s.slot} pid {s.pid}", s.command or "?", "", "", "", "", human_rate(sub_row.messages_per_s), "",
            "", "", "", state]


def render_table(rows: list[Row], show_processes: bool = True, width: int | None = None) -> Table:
    """The rows as a table: an object per row, with its processes and
    subscribers below it; on a terminal narrower than ``WIDE_AT``
    (``width``), the columns of ``NARROW_COLUMNS`` only."""
    columns = COLUMNS if width is None or width >= WIDE_AT else NARROW_COLUMNS
    keep = [COLUMNS.index(c) for c in columns]
    table = Table(box=None, header_style="bold reverse", pad_edge=False, expand=False)
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=MIN_WIDTHS.get(column, len(column)),
                         max_width=max(16, width // 3) if column == "NAME" and width else None)
    for row in rows:
        style = "red" if row.alarm else ("yellow" if row.full else "")
        lines = [(_object_cells(row), style)]
        if show_processes:
            lines += [(_process_cells(proc, n), "" if proc.alive else "red") for proc, n in _by_process(row.view.processes)]
            lines += [(_subscriber_cells(sub_row), "") for sub_row in row.subscribers]
        for cells, line_style in lines:
            table.add_row(*[cells[i] for i in keep], style=line_style)
    return table


# -- what the user chose ---------------------------------------------------------------


@dataclass
class ViewState:
    """Sort, filters and mode of the live view, changed by keys."""

    sort: str = "name"
    reverse: bool = False
    name_filter: str = ""
    kind: str | None = None
    show_processes: bool = True
    editing: str | None = None  # the filter being typed after "/", until Enter
    done: bool = False

    def press(self, key: str) -> None:
        if self.editing is not None:
            self._edit(key)
        elif key in ("q", "Q"):
            self.done = True
        elif key == "s":
            self.sort = SORT_COLUMNS[(SORT_COLUMNS.index(self.sort) + 1) % len(SORT_COLUMNS)]
        elif key == "r":
            self.reverse = not self.reverse
        elif key == "/":
            self.editing = ""
        elif key == "k":
            self.kind = KIND_FILTERS[(KIND_FILTERS.index(self.kind) + 1) % len(KIND_FILTERS)]
        elif key == "p":
            self.show_processes = not self.show_processes

    def _edit(self, key: str) -> None:
        assert self.editing is not None
        if key == "enter":
            self.name_filter, self.editing = self.editing, None
        elif key == "esc":
            self.editing = None
        elif key == "backspace":
            self.editing = self.editing[:-1]
        elif len(key) == 1 and key.isprintable():
            self.editing += key

    def footer(self) -> Text:
        if self.editing is not None:
            return Text(f"filter name: {self.editing}_   (Enter: apply, Esc: cancel)", style="bold")
        order = " (reversed)" if self.reverse else ""
        return Text(f"{KEYS_HELP}   sort: {self.sort}{order}   filter: {self.name_filter or '-'}   "
                    f"kind: {self.kind or 'all'}", style="reverse")


def parse_keys(data: str) -> list[str]:
    """Keys of the terminal's input: characters, "enter", "backspace", "esc";
    other escape sequences (arrows, function keys) are dropped."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        ch = data[i]
        if ch == "\x1b" and i + 1 < len(data) and data[i + 1] in "[O":
            i += 2
            while i < len(data) and not (data[i].isalpha() or data[i] == "~"):
                i += 1
        elif ch == "\x1b":
            keys.append("esc")
        elif ch in "\r\n":
            keys.append("enter")
        elif ch in "\x7f\x08":
            keys.append("backspace")
        else:
            keys.append(ch)
        i += 1
    return keys


class KeyReader:
    """Keys from the terminal on stdin, in cbreak mode (each key at once,
    no echo; Ctrl-C still interrupts) while the ``with`` block lasts; the
    terminal's settings are restored on exit, however it is left.  Without
    a terminal it only waits."""

    def __init__(self) -> None:
        self.fd: int | None = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
        self._saved: list[Any] | None = None

    def __enter__(self) -> KeyReader:
        if self.fd is not None:
            import termios
            import tty

            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def read(self, timeout: float) -> list[str]:
        """The keys pressed within ``timeout`` seconds (returns at the first ones)."""
        if self.fd is None:
            time.sleep(max(0.0, timeout))
            return []
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return []
        data = os.read(self.fd, 1024)
        if not data:  # the terminal went away: no more keys, keep refreshing
            self.fd = None
        return parse_keys(data.decode("utf-8", errors="replace"))


# -- the live view ---------------------------------------------------------------------


@dataclass
class Screen:
    """The latest snapshot of the live view and its rows."""

    interval: float
    previous: observe.Snapshot | None = None
    rows: list[Row] = field(default_factory=list)

    def refresh(self) -> None:
        now = observe.snapshot()
        self.rows = build_rows(self.previous, now)
        self.previous = now

    def render(self, state: ViewState, width: int | None = None) -> RenderableType:
        shown = select_rows(self.rows, state.name_filter, state.kind, state.sort, state.reverse)
        title = Text(f"shmring top   {len(shown)} of {len(self.rows)} objects   "
                     f"{time.strftime('%H:%M:%S')}   every {self.interval:g}s", style="bold")
        return Group(title, render_table(shown, state.show_processes, width), Text(""), state.footer())


def run_live(screen: Screen, state: ViewState, console: Console) -> None:
    """Refresh ``screen`` every interval on the terminal's alternate screen until q or Ctrl-C."""
    with KeyReader() as keys, Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                                   redirect_stderr=False) as live:
        next_refresh = time.monotonic()
        while not state.done:
            if time.monotonic() >= next_refresh:
                screen.refresh()
                next_refresh = max(next_refresh + screen.interval, time.monotonic())
            live.update(screen.render(state, console.width), refresh=True)
            for key in keys.read(next_refresh - time.monotonic()):
                state.press(key)


@click.command("top")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--filter", "name_filter", default="", help="Show only objects whose name contains this.")
@click.option("--kind", type=click.Choice([k for k in KIND_FILTERS if k]), default=None, help="Show only this kind.")
@click.option("--sort", type=click.Choice(SORT_COLUMNS), default="name", show_default=True, help="Sort column.")
@click.option("--reverse", is_flag=True, help="Sort in reverse order.")
@click.option("--once", is_flag=True, help="Print the table once (rates over one interval) and exit.")
@click.option("--json", "as_json", is_flag=True,
              help="With --once: print the JSON document of docs/OBSERVE.md (its schema: top.schema.json).")
def top_command(interval: float, name_filter: str, kind: str | None, sort: str, reverse: bool, once: bool,
                as_json: bool) -> None:
    """A live view of every shmring object: fill level, messages and bytes
    per second in and out, who waits, the attached processes, topic
    subscribers and their lag, lock holders.  Reads shared memory only:
    safe to run against a production system.  Keys: q quit, s sort column,
    r reverse, / filter by name, k kind, p show/hide processes."""
    if as_json:
        if not once:
            raise click.UsageError("--json goes with --once (a stream of one object: shmring inspect NAME --watch --json)")
        first = observe.snapshot()
        time.sleep(interval)
        second = observe.snapshot()
        chosen = select_rows(build_rows(first, second), name_filter, kind, sort, reverse)
        report = observe.report(first, observe.Snapshot(second.time, tuple(r.view for r in chosen)))
        click.echo(json.dumps(report, indent=2, default=str))
        return
    state = ViewState(sort=sort, reverse=reverse, name_filter=name_filter, kind=kind)
    screen = Screen(interval)
    if once:
        screen.refresh()
        time.sleep(interval)
        screen.refresh()
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 400)
        width = console.width if console.is_terminal else None
        console.print(render_table(select_rows(screen.rows, name_filter, kind, sort, reverse), width=width))
        return
    if not sys.stdout.isatty():
        click.echo("shmring: top needs a terminal (use `shmring top --once`, or "
                   "`shmring inspect NAME --watch --json` for scripts)", err=True)
        sys.exit(1)
    _terminate_as_interrupt()
    with contextlib.suppress(KeyboardInterrupt):
        run_live(screen, state, Console(highlight=False))


def _terminate_as_interrupt() -> None:
    """SIGTERM ends a view as Ctrl-C does: through the ``with`` blocks that give the terminal back."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


# -- one object: `shmring inspect NAME --watch` -----------------------------------------


def watch_record(row: Row, wall_time: float) -> dict[str, Any]:
    """One line of ``inspect --watch --json``: the object, and its rates over the last interval."""
    data = row.view.to_json()
    data["time"] = wall_time
    data["rates"] = row.rates
    data["subscriber_rates"] = [{"slot": s.subscriber.slot, "pid": s.subscriber.pid, "messages_per_s": s.messages_per_s}
                                for s in row.subscribers]
    return data


def render_object(row: Row, interval: float, width: int | None = None) -> RenderableType:
    """One object in full: its row (processes and subscribers below) and its raw counters."""
    view = row.view
    fields = Table(box=None, show_header=False, pad_edge=False)
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column()
    fields.add_row("created by", f"pid {view.creator_pid}" + (", persistent" if view.persistent else ""))
    for key, value in view.detail.items():
        if not isinstance(value, (list, tuple, dict)):
            fields.add_row(key, str(value))
    title = Text(f"shmring inspect {view.name}   {time.strftime('%H:%M:%S')}   every {interval:g}s", style="bold")
    return Group(title, render_table([row], width=width), Text(""), fields)


class _Gone(Exception):
    """The watched object is no longer there."""


def _one(name: str, previous: observe.Snapshot) -> tuple[Row, observe.Snapshot]:
    now = observe.snapshot([name])
    if not now.objects:
        raise _Gone(name)
    return build_rows(previous, now)[0], now


def _watch_json(name: str, interval: float, previous: observe.Snapshot) -> None:
    while True:
        time.sleep(interval)
        row, previous = _one(name, previous)
        sys.stdout.write(json.dumps(watch_record(row, time.time()), default=str) + "\n")
        sys.stdout.flush()


def _watch_text(name: str, interval: float, previous: observe.Snapshot) -> None:
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 400)
    row, previous = _one(name, previous)
    if not console.is_terminal:  # piped: one block per refresh
        while True:
            console.print(render_object(row, interval))
            console.print()
            time.sleep(interval)
            row, previous = _one(name, previous)
    state = ViewState()
    with KeyReader() as keys, Live(render_object(row, interval, console.width), console=console,
                                   auto_refresh=False) as live:
        next_refresh = time.monotonic() + interval
        while not state.done:
            for key in keys.read(next_refresh - time.monotonic()):
                state.press(key)
            if time.monotonic() >= next_refresh:
                row, previous = _one(name, previous)
                next_refresh = max(next_refresh + interval, time.monotonic())
                live.update(render_object(row, interval, console.width), refresh=True)


def watch_object(name: str, interval: float, as_json: bool) -> int:
    """``shmring inspect NAME --watch``: the object refreshed every
    ``interval`` seconds until Ctrl-C (or q on a terminal); with
    ``as_json``, one JSON object per line per refresh.  Returns the exit status."""
    try:
        bare = validate_name(name)
        observe.look(bare)
        first = observe.snapshot([bare])
        if not first.objects:
            raise FileNotFoundError(bare)
    except FileNotFoundError:
        click.echo(f"shmring: no such segment: {name!r}", err=True)
        return 1
    except (ValueError, SegmentError, OSError) as exc:
        click.echo(f"shmring: {exc}", err=True)
        return 1
    _terminate_as_interrupt()
    try:
        if as_json:
            _watch_json(bare, interval, first)
        else:
            _watch_text(bare, interval, first)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader left: nothing more to say, and nothing for the exit's flush to fail on.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except _Gone:
        click.echo(f"shmring: {name!r} was removed", err=True)
        return 1
    return 0
