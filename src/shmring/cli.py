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
from rich.markup import escape
from rich.table import Table

from . import _core
from ._errors import ForeignSegmentError, SegmentError, SegmentNotReadyError
from .channel import _WAIT_NAMES
from .bridge.cli import bridge_command
from .bridge.status import PREFIX as BRIDGE_PREFIX
from .bridge.status import BridgeStatus, bridged, bridges, marker
from .cli_stats import stats_command
from .observe import SHM_DIR, bridge_status_names, map_read_only, read_details, segment_files
from .segment import SegmentInfo, validate_name
from .selfbench_cli import bench_command
from .top import human_bytes, top_command


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
    in_use: bool | None  # does a process hold a lease on it (None: could not tell)
    mtime: float


def read_info(name: str) -> SegmentInfo:
    """Header (and roster) of segment ``name``, mapped read-only and unmapped again."""
    return read_details(name)[0]


def _in_use(name: str) -> bool | None:
    try:
        return _core.in_use(name)
    except (OSError, ValueError):
        return None


def scan() -> Iterator[Listing]:
    """Every shmring segment under /dev/shm that this user can read."""
    for entry, st in segment_files():
        try:
            info: SegmentInfo | None = read_info(entry.name)
            problem = None
        except (ForeignSegmentError, SegmentNotReadyError, OSError):
            continue  # not ours, still being created, unreadable or gone
        except SegmentError as exc:
            info, problem = None, str(exc)
        yield Listing(entry.name, info, problem, st.st_uid, stat.S_IMODE(st.st_mode), _in_use(entry.name), st.st_mtime)


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
    return human_bytes(n, " ")


def _users(item: Listing) -> str:
    """The USERS column: the live attached processes, or what the lease says."""
    assert item.info is not None
    pids = item.info.live_users
    extra = f" +{item.info.unlisted_users}" if item.info.unlisted_users else ""
    if pids:
        shown = ",".join(str(p) for p in pids[:4]) + ("..." if len(pids) > 4 else "")
        return f"{len(pids)} ({shown}){extra}"
    if item.in_use:
        return "in use" + extra  # attached read-only (not listed), or listed entries already gone
    if item.info.kind == "queue-chunk":
        return "(its queue)"
    return "none"


def _listing_json(item: Listing, marks: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    data: dict[str, Any] = {"name": item.name, "uid": item.uid, "mode": oct(item.mode), "in_use": item.in_use}
    if item.info is not None:
        data.update(asdict(item.info))
        data["live_users"] = item.info.live_users
    data["problem"] = item.problem
    data["bridge"] = marks.get((item.info.kind, item.name)) if item.info is not None else None
    return data


def _kind_cell(item: Listing, marks: dict[tuple[str, str], list[dict[str, Any]]],
               statuses: dict[str, BridgeStatus]) -> str:
    """The KIND column: the kind, whether it is persistent, whether a bridge
    carries it (and which way), or whose status segment it is."""
    assert item.info is not None
    kind = item.info.kind + (" (persistent)" if item.info.persistent else "")
    entries = marks.get((item.info.kind, item.name))
    if entries:
        kind += f" ({marker(entries)})"
    status = statuses.get(item.name)
    if status is not None:
        kind += f" (bridge status{', ' + status.problem if status.problem else ''})"
    return escape(kind)


def _fail(message: str) -> None:
    click.echo(f"shmring: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shmring")
def main() -> None:
    """Shared-memory IPC: list, inspect and clean up shmring segments."""


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ls_command(as_json: bool) -> None:
    """List every shmring segment on this machine, with the processes
    attached to it (USERS) and its creator."""
    items = list(scan())
    statuses = bridges(i.name for i in items if i.info is not None)
    marks = bridged(statuses)
    by_segment = {s.segment: s for s in statuses}
    if as_json:
        click.echo(json.dumps([_listing_json(i, marks) for i in items], indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "KIND", "SIZE", "USERS", "PID", "CREATOR", "AGE", "MODE"):
        table.add_column(column, no_wrap=True)
    for item in items:
        if item.info is None:
            table.add_row(item.name, "?", "", "", "", f"[red]damaged: {item.problem}[/red]", "", oct(item.mode))
            continue
        i = item.info
        alive = "[green]alive[/green]" if i.alive else "[red]dead[/red]"
        kind = _kind_cell(item, marks, by_segment)
        table.add_row(
            i.name, kind, _human(i.size), _users(item), str(i.creator_pid), alive, _age(i.created_ns), oct(item.mode)
        )
    if items:
        out.print(table)
    else:
        out.print("no shmring segments")


@main.command("inspect")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (with --watch: a line per refresh).")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C (or q), with rates, as `shmring top` sees it.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between refreshes, with --watch.")
def inspect_command(name: str, as_json: bool, watch: bool, interval: float) -> None:
    """Show every header field of segment NAME, the processes attached to
    it, and for a channel its fill level, counters and both ends; for a
    queue its counters and who waits; for a topic its counters and each
    subscriber's lag; for a named primitive which one it is and its state
    (value, holder, waiters)."""
    if watch:
        from .top import watch_object

        sys.exit(watch_object(name, interval, as_json))
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
    data["users"] = [asdict(u) for u in info.users]
    data["live_users"] = info.live_users
    data["in_use"] = _in_use(bare)
    data["created"] = _dt.datetime.fromtimestamp(info.created_ns / 1e9).isoformat(timespec="seconds")
    data["age"] = _age(info.created_ns)
    data["uid"] = st.st_uid
    data["mode"] = oct(stat.S_IMODE(st.st_mode))
    if extra and info.kind == "channel":
        extra["wait"] = _WAIT_NAMES.get(extra["wait"], extra["wait"])
        extra["fill_percent"] = round(100 * extra["fill_bytes"] / extra["capacity"], 1)
    if extra:
        data[info.kind] = extra
    data.update(_bridge_details(info.kind, bare))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        if key == "bridge":
            _bridge_rows(table, value)
        elif key == "users":
            for n, user in enumerate(info.users):
                since = _dt.datetime.fromtimestamp(user.attached_ns / 1e9).isoformat(timespec="seconds")
                state = "alive" if user.alive else "dead"
                table.add_row(f"users.{n}", f"pid {user.pid} ({state}), attached {since}")
        elif isinstance(value, dict):
            for sub, subvalue in value.items():
                if sub == "subscriber_list":
                    for s in subvalue:
                        state = "alive" if s["alive"] else "dead"
                        table.add_row(f"{key}.subscribers.{s['slot']}", f"pid {s['pid']} ({state}), behind "
                                      f"{s['behind_messages']} messages ({s['behind_bytes']} bytes), lagged {s['lagged']}")
                else:
                    table.add_row(f"{key}.{sub}", str(subvalue))
        else:
            table.add_row(key, str(value))
    out.print(table)


def _bridge_details(kind: str, name: str) -> dict[str, Any]:
    """For `inspect`: what the running bridges say of object ``name``
    ("bridge"), or, for a bridge's status segment, its document."""
    statuses = bridges(bridge_status_names())
    for status in statuses:
        if status.segment == name:
            return {"bridge_status": {"pid": status.pid, "alive": status.alive, "problem": status.problem,
                                      "document": status.document}}
    entries = bridged(statuses).get((kind, name))
    return {"bridge": entries} if entries else {}


def _bridge_rows(table: Table, entries: list[dict[str, Any]]) -> None:
    def words(value: Any) -> str:
        return ",".join(map(str, value)) if isinstance(value, list) and value else "-"

    for n, e in enumerate(entries):
        peers = f"listen {words(e.get('listen'))}, connect {words(e.get('connect'))}"
        problem = f" [{e['problem']}]" if e.get("problem") else ""
        table.add_row(f"bridge.{n}", escape(f"pid {e.get('pid')}, {e.get('direction')}, {peers}{problem}"))
        table.add_row(f"bridge.{n}.link", escape(f"{e.get('link')} (by {e.get('link_by')}; "
                                                 f"{e.get('link_changes')} changes)"))
        counters, detail, error = e.get("counters"), e.get("detail"), e.get("last_error")
        if isinstance(counters, dict):
            table.add_row(f"bridge.{n}.counters", escape(", ".join(f"{k} {v}" for k, v in sorted(counters.items()))))
        for key, value in sorted(detail.items()) if isinstance(detail, dict) else ():
            table.add_row(f"bridge.{n}.{key}", escape(str(value)))
        if error:
            table.add_row(f"bridge.{n}.last_error", escape(str(error.get("message") if isinstance(error, dict) else error)))


def _chunk_is_stale(name: str) -> str | None:
    """Why overflow chunk ``name`` no longer belongs to a live queue, or None
    if it may: its queue (the object stamped in the chunk, whatever its name
    is now) has no process attached, or the chunk fell out of its queue's
    chain (a consumer was killed between moving the chain and unlinking)."""
    stamp = _core.chunk_stamp(name)
    if stamp is None:
        return None  # not a published chunk: judged as an unfinished segment
    queue_id, index, queue_dev, queue_ino = stamp
    queue = name.rpartition(".q")[0]
    try:
        st = os.stat(os.path.join(SHM_DIR, queue))
        named = (st.st_dev, st.st_ino) == (queue_dev, queue_ino)
    except (OSError, ValueError):
        named = False
    if named:
        try:
            mapping = map_read_only(queue)
            try:
                counters = _core.queue_info(mapping)
            finally:
                mapping.close()
        except (SegmentError, OSError, ValueError):
            return None  # cannot tell: keep it
        if counters["queue_id"] == queue_id and index < counters["chunk_head"]:
            return f"already drained from {queue!r}"
        return None  # its queue lives under its name: the queue's own lifetime decides
    if _core.object_locked(queue_dev, queue_ino) is False:
        return "no process is attached to its queue"
    return None  # its queue (unlinked) is still in use, or /proc/locks cannot tell


# A segment whose maker has not published it within this time was left by a
# process that died while making it.
_UNFINISHED_AGE_S = 10.0


@main.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Also remove objects in use, or that are not shmring segments.")
def rm_command(names: tuple[str, ...], force: bool) -> None:
    """Remove segments by name.  A segment that processes are attached to is
    refused without --force; with it, only the name goes (POSIX semantics:
    the attached processes keep using it, and the last of them removes the
    rest).  A queue's overflow chunks go with it."""
    failed = False
    for name in names:
        try:
            bare = validate_name(name)
            info = None
            if not force:
                try:
                    info = read_info(bare)
                except (ForeignSegmentError, SegmentNotReadyError):
                    _fail(f"{name!r} is not a shmring segment (or not yet initialised); not removed (use --force)")
                    failed = True
                    continue
                except SegmentError:
                    pass  # ours but damaged: removing it is what the user wants
                if info is not None and info.kind == "queue-chunk" and _chunk_is_stale(bare) is None:
                    _fail(f"{name!r} is an overflow chunk of a live queue; remove the queue instead (or use --force)")
                    failed = True
                    continue
            if not _core.remove_unused(bare, True):  # somebody is attached
                if not force:
                    users = ", ".join(str(p) for p in info.live_users) if info is not None else ""
                    _fail(
                        f"{name!r} is in use" + (f" by process(es) {users}" if users else "")
                        + "; not removed (use --force to remove its name anyway)"
                    )
                    failed = True
                    continue
                _core.unlink(bare)  # POSIX: they keep it; the last of them removes the rest
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


@dataclass(frozen=True)
class _Victim:
    """A segment `shmring gc` removes, and why."""

    name: str
    reason: str
    by_lease: bool  # removed only if still nobody is attached (else it has no lease to ask: unlinked)


def _gc_victim(item: Listing) -> _Victim | None:
    if item.info is None or (item.uid != os.geteuid() and os.geteuid() != 0):
        return None  # damaged (only `shmring rm` removes it), or another user's
    if item.info.kind == "queue-chunk":
        why = _chunk_is_stale(item.name)
        return None if why is None else _Victim(item.name, why, by_lease=False)
    if item.info.persistent or item.in_use is not False:
        return None
    return _Victim(item.name, "no process is attached to it", by_lease=True)


def _unfinished() -> Iterator[_Victim]:
    """Segments provably ours that their maker never published (it died
    creating them): their header fields are written and checksummed, their
    magic is still 0, and they are old enough.  Anything else that merely
    looks empty (an object of another program) is left alone."""
    now = time.time()
    for entry, st in segment_files():
        if now - st.st_mtime >= _UNFINISHED_AGE_S and (st.st_uid == os.geteuid() or os.geteuid() == 0):
            if _core.unpublished(entry.name) and not _in_use(entry.name):
                yield _Victim(entry.name, "never finished: its maker died while creating it", by_lease=False)


@main.command("gc")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc_command(dry_run: bool) -> None:
    """Remove segments that no live process is attached to (left by
    processes that crashed), except persistent ones; overflow chunks whose
    queue nobody uses any more; and segments whose maker died while
    creating them.  Nothing a live process uses is ever removed."""
    victims = [v for item in scan() if (v := _gc_victim(item)) is not None] + list(_unfinished())
    failed = False
    for victim in victims:
        if dry_run:
            out.print(f"would remove {victim.name} ({victim.reason})")
            continue
        try:
            if victim.by_lease:
                if not _core.remove_unused(victim.name):
                    continue  # somebody attached meanwhile: kept
            else:
                _core.unlink(victim.name)
            out.print(f"removed {victim.name} ({victim.reason})")
        except FileNotFoundError:
            pass  # somebody else removed it meanwhile
        except OSError as exc:
            _fail(str(exc))
            failed = True
    if not victims:
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


main.add_command(stats_command)
main.add_command(bench_command)
main.add_command(bridge_command)
main.add_command(top_command)
