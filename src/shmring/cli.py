"""The ``shmring`` command: list, inspect and clean up segments; run the demo.

Expected failures (a missing name, a foreign segment) print one line on
stderr and exit with status 1; there are no tracebacks for them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import _core
from ._errors import ForeignSegmentError, SegmentError, SegmentNotReadyError
from .channel import _WAIT_NAMES
from .segment import SegmentInfo, validate_name

SHM_DIR = "/dev/shm"

# Piped output keeps every column and never wraps: scripts read it line by line.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 100_000)


@dataclass(frozen=True)
class Listing:
    """One shmring segment found under /dev/shm: its header, or why it is damaged."""

    name: str
    info: SegmentInfo | None
    problem: str | None  # set for a segment with our magic whose header fails a check
    uid: int
    mode: int


def read_info(name: str) -> SegmentInfo:
    """Header of segment ``name``, mapped read-only and unmapped again."""
    return read_details(name)[0]


def read_details(name: str) -> tuple[SegmentInfo, dict[str, Any]]:
    """Header of segment ``name`` and, for a channel, its counters and ends."""
    mapping = _core.open(validate_name(name), True, True)
    try:
        info = SegmentInfo.from_header(mapping.header())
        readers = {"channel": _core.channel_info, "queue": _core.queue_info, "topic": _core.topic_info}
        reader = readers.get(info.kind)
        extra = reader(mapping) if reader is not None else {}
        return info, extra
    finally:
        mapping.close()


def scan() -> Iterator[Listing]:
    """Every shmring segment under /dev/shm that this user can read."""
    try:
        entries = sorted(os.scandir(SHM_DIR), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            validate_name(entry.name)
            st = entry.stat(follow_symlinks=False)
        except (ValueError, OSError):
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        try:
            info: SegmentInfo | None = read_info(entry.name)
            problem = None
        except (ForeignSegmentError, SegmentNotReadyError, OSError):
            continue  # not ours, still being created, unreadable or gone
        except SegmentError as exc:
            info, problem = None, str(exc)
        yield Listing(entry.name, info, problem, st.st_uid, stat.S_IMODE(st.st_mode))


def _age(created_ns: int) -> str:
    seconds = max(0.0, time.time() - created_ns / 1e9)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _listing_json(item: Listing) -> dict[str, Any]:
    data: dict[str, Any] = {"name": item.name, "uid": item.uid, "mode": oct(item.mode)}
    if item.info is not None:
        data.update(asdict(item.info))
    data["problem"] = item.problem
    return data


def _fail(message: str) -> None:
    click.echo(f"shmring: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shmring")
def main() -> None:
    """Shared-memory IPC: list, inspect and clean up shmring segments."""


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ls_command(as_json: bool) -> None:
    """List every shmring segment on this machine."""
    items = list(scan())
    if as_json:
        click.echo(json.dumps([_listing_json(i) for i in items], indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "KIND", "SIZE", "PID", "CREATOR", "AGE", "MODE"):
        table.add_column(column, no_wrap=True)
    for item in items:
        if item.info is None:
            table.add_row(item.name, "?", "", "", f"[red]damaged: {item.problem}[/red]", "", oct(item.mode))
            continue
        i = item.info
        alive = "[green]alive[/green]" if i.alive else "[red]dead[/red]"
        table.add_row(i.name, i.kind, _human(i.size), str(i.creator_pid), alive, _age(i.created_ns), oct(item.mode))
    if items:
        out.print(table)
    else:
        out.print("no shmring segments")


@main.command("inspect")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def inspect_command(name: str, as_json: bool) -> None:
    """Show every header field of segment NAME (for a channel: its fill level,
    counters and the processes at both ends; for a queue or a topic: its
    counters)."""
    try:
        bare = validate_name(name)
        st = os.stat(os.path.join(SHM_DIR, bare))
        info, extra = read_details(bare)
    except FileNotFoundError:
        _fail(f"no such segment: {name!r}")
        sys.exit(1)
    except (ValueError, SegmentError, OSError) as exc:
        _fail(str(exc))
        sys.exit(1)
    data = asdict(info)
    data["created"] = _dt.datetime.fromtimestamp(info.created_ns / 1e9).isoformat(timespec="seconds")
    data["age"] = _age(info.created_ns)
    data["uid"] = st.st_uid
    data["mode"] = oct(stat.S_IMODE(st.st_mode))
    if extra and info.kind == "channel":
        extra["wait"] = _WAIT_NAMES.get(extra["wait"], extra["wait"])
        extra["fill_percent"] = round(100 * extra["fill_bytes"] / extra["capacity"], 1)
    if extra:
        data[info.kind] = extra
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                table.add_row(f"{key}.{sub}", str(subvalue))
        else:
            table.add_row(key, str(value))
    out.print(table)


def _chunk_parent(name: str) -> str:
    """``queue`` for an overflow chunk named ``queue.q<N>``."""
    return name.rpartition(".q")[0]


def _queue_chunks(name: str) -> list[str]:
    prefix = name + ".q"
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    return [e for e in entries if e.startswith(prefix) and e[len(prefix) :].isdigit()]


@main.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Also remove objects that are not shmring segments.")
def rm_command(names: tuple[str, ...], force: bool) -> None:
    """Remove segments by name (processes that have them mapped keep them)."""
    failed = False
    for name in names:
        try:
            bare = validate_name(name)
            if not force:
                try:
                    read_info(bare)
                except (ForeignSegmentError, SegmentNotReadyError):
                    _fail(f"{name!r} is not a shmring segment (or not yet initialised); not removed (use --force)")
                    failed = True
                    continue
                except SegmentError:
                    pass  # ours but damaged: removing it is what the user wants
            _core.unlink(bare)
            for chunk in _queue_chunks(bare):
                _core.unlink(chunk)
        except FileNotFoundError:
            _fail(f"no such segment: {name!r}")
            failed = True
        except (ValueError, OSError) as exc:
            _fail(str(exc))
            failed = True
        else:
            out.print(f"removed {bare}")
    if failed:
        sys.exit(1)


@main.command("gc")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc_command(dry_run: bool) -> None:
    """Remove segments whose creating process has died."""
    listed = list(scan())
    names = {item.name for item in listed}
    # A queue's overflow chunk lives as long as its queue, whoever made it.
    dead = [
        item
        for item in listed
        if item.info is not None
        and not item.info.alive
        and not (item.info.kind == "queue-chunk" and _chunk_parent(item.name) in names)
    ]
    failed = False
    for item in dead:
        if dry_run:
            out.print(f"would remove {item.name} (creator pid {item.info.creator_pid} is dead)")  # type: ignore[union-attr]
            continue
        try:
            _core.unlink(item.name)
            out.print(f"removed {item.name}")
        except FileNotFoundError:
            pass  # somebody else removed it meanwhile
        except OSError as exc:
            _fail(str(exc))
            failed = True
    if not dead:
        out.print("nothing to remove")
    if failed:
        sys.exit(1)


@main.command("demo")
@click.option("--messages", default=200_000, show_default=True, help="Messages to stream.")
@click.option("--size", default=256, show_default=True, help="Bytes per message (at least 8).")
@click.option("--rounds", default=5_000, show_default=True, help="Ping-pong round trips to time.")
def demo_command(messages: int, size: int, rounds: int) -> None:
    """Stream checked messages between two processes, against multiprocessing.Queue."""
    from .demo import run_demo

    sys.exit(run_demo(out, messages=messages, size=size, rounds=rounds))
