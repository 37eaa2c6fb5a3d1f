"""What the benchmark scripts share: bench_channel.py, bench_sync.py,
bench_queue.py, bench_topic.py and bench_arrays.py import it (no bench
script imports another).

- Logging (``log``), size labels (from shmring.selfbench), and the errors a run reports: ``Mismatch``
  (a check of the data failed) in a worker, ``WorkerError`` in the parent,
  tagged FAILED, MISMATCH, HANG or NOT RUN (``record_failure`` logs and
  lists a failed cell).
- Worker processes: ``child_setup`` and ``send_error`` on the child's side;
  ``WorkerGroup`` (workers and their control pipes, the messages they send,
  stopping them) and ``stop_workers`` on the parent's.
- The run: the options every script has (``bench_parser``,
  ``add_output_arguments``), its metadata (``run_meta``: host, options,
  versions; shmring's build and where it was imported from), ^C and
  SIGTERM, the machine's load (``MachineLoad``, ``run_measured``), the last
  clean-up of what a run made.
- The report: number formats (``fmt_rate`` and ``percentiles`` come from
  shmring.selfbench, which ``shmring bench`` uses too), markdown tables (``results_table``: a row
  per result, failed ones blank), ratio cells, percentiles, spreads, the
  "Skipped"/"FAILURES" sections and the not-idle warning, and writing the
  outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

# Shared with `shmring bench` (the package's self-benchmark): one definition each.
from shmring.selfbench import KiB, MiB, fmt_rate, percentiles, size_label  # noqa: F401  (re-exported)

ResultT = TypeVar("ResultT")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# errors


class Mismatch(AssertionError):
    """A check of the data failed: a message or object was lost, duplicated,
    reordered or corrupted (the run fails with MISMATCH)."""


class WorkerError(Exception):
    """A measurement failed in the parent's view: tag FAILED, MISMATCH, HANG
    or NOT RUN (stopped after an earlier failure)."""

    def __init__(self, message: str, tag: str = "FAILED") -> None:
        super().__init__(message)
        self.tag = tag

    @property
    def mismatch(self) -> bool:
        return self.tag == "MISMATCH"


def is_mismatch(e: BaseException) -> bool:
    return isinstance(e, AssertionError) or type(e).__name__ == "Mismatch"


def _worker_error(msg: tuple[Any, ...]) -> WorkerError:
    """The WorkerError of a worker's ("error", text[, is_mismatch]) message."""
    return WorkerError(msg[1], "MISMATCH" if len(msg) > 2 and msg[2] else "FAILED")


def record_failure(where: str, e: BaseException, errors: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A failed cell, from its ``except`` block: logged with its tag (a
    WorkerError's, else FAILED, with the traceback) and added to ``errors``
    as ``fields`` + tag + error text, unless it is NOT RUN (a consequence of
    a failure already reported: one line in the log).  Returns the cell's
    result: {"failed": tag, "error": text}."""
    tag = e.tag if isinstance(e, WorkerError) else "FAILED"
    text = str(e).rstrip() if isinstance(e, WorkerError) else traceback.format_exc().rstrip()
    if tag == "NOT RUN":
        log(f"{where}: {text}")
    else:
        log(f"!!! {tag}: {where}\n{text}\n")
        errors.append({**fields, "tag": tag, "error": text})
    return {"failed": tag, "error": text}


# ---------------------------------------------------------------------------
# worker processes: the child's side


def child_setup(stacks_on_sigusr1: bool = False) -> None:
    """First thing in a worker process (of every benchmark): die with the
    parent rather than linger (Linux only; best effort), and leave ^C to the
    parent, which stops the workers.  ``stacks_on_sigusr1``: print every
    thread's stack on SIGUSR1 (the parent sends it on a hang)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops us
    if stacks_on_sigusr1:
        import faulthandler

        faulthandler.register(signal.SIGUSR1, all_threads=True)


def orders(conn: Any) -> Iterator[tuple[Any, ...]]:
    """The messages a worker gets from the parent, until ("stop",)."""
    while True:
        msg: tuple[Any, ...] = conn.recv()
        if msg[0] == "stop":
            return
        yield msg


def send_error(conn: Any, who: str, mismatch: bool) -> None:
    """A failed worker's last word, from its ``except`` block: ("error",
    "<who> (pid N): <traceback>", mismatch)."""
    try:
        conn.send(("error", f"{who} (pid {os.getpid()}): " + traceback.format_exc(), mismatch))
    except Exception:
        pass


# ---------------------------------------------------------------------------
# worker processes: the parent's side


def stop_workers(conns: list[Any], procs: list[Any]) -> bool:
    """Stop worker processes: ("stop",) on each control pipe, join (5 s for
    all), then SIGTERM, then SIGKILL; close the pipes.  True if any worker
    had to be signalled."""
    for conn in conns:
        try:
            conn.send(("stop",))
        except Exception:
            pass
    deadline = time.monotonic() + 5.0
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    signalled = False
    for p in procs:
        if p.is_alive():
            signalled = True
            p.terminate()
            p.join(2.0)
        if p.is_alive():
            p.kill()
            p.join(2.0)
    for conn in conns:
        try:
            conn.close()
        except Exception:
            pass
    return signalled


class WorkerGroup:
    """Worker processes and their control pipes: conns[i] and procs[i] are
    worker i, names[i] its name in messages ("the tx worker", "worker 0",
    "producer 0", "sub 2", ...).

    A worker sends tuples whose first item is a tag ("ready", "done", ...),
    and ("error", traceback_text[, is_mismatch]) when it fails (``send_error``).
    A subclass starts its workers with ``_spawn``, talks to them with
    ``_send`` and ``_expect``; a run's results come back through ``_collect``
    (its own messages through ``_on_message``), guarded by ``_guard``.
    ``close`` (also on leaving the ``with`` block) stops them: "stop", join,
    SIGTERM, SIGKILL."""

    def __init__(self, ctx: Any, opts: Any, names: list[str]) -> None:
        self.ctx, self.opts = ctx, opts
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.stash: list[deque[tuple[Any, ...]]] = []  # messages read while waiting for another worker
        self.names = names
        self.broken: WorkerError | None = None  # after a failure: no more runs

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop_workers()

    def _stop_workers(self) -> bool:
        """Stop the workers ("stop", join, SIGTERM, SIGKILL); True if any had to be signalled."""
        killed = stop_workers(self.conns, self.procs)
        self.procs, self.conns, self.stash = [], [], []
        return killed

    def _spawn(self, target: Callable[..., None], args: tuple[Any, ...], name: str,
               kwargs: dict[str, Any] | None = None, conn_arg: str = "conn") -> None:
        """Start one worker: target(*args, <conn_arg>=<its end of the pipe>, **kwargs)."""
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        p = self.ctx.Process(target=target, args=args, kwargs={conn_arg: child_end, **(kwargs or {})},
                             name=name, daemon=True)
        p.start()
        child_end.close()  # so that a dead child reads as EOF here
        self.procs.append(p)
        self.conns.append(parent_end)
        self.stash.append(deque())

    def _send(self, i: int, msg: tuple[Any, ...]) -> None:
        try:
            self.conns[i].send(msg)
        except (BrokenPipeError, ConnectionError, EOFError, OSError):
            # The child is gone: report its own error message if it left one.
            conn = self.conns[i]
            try:
                while conn.poll(0.5):
                    m = conn.recv()
                    if m[0] == "error":
                        raise _worker_error(m) from None
            except (EOFError, OSError):
                pass
            self.procs[i].join(1.0)
            raise WorkerError(f"{self.names[i]} is gone (exit code {self.procs[i].exitcode})") from None

    def _recv(self, i: int) -> tuple[Any, ...]:
        try:
            msg: tuple[Any, ...] = self.conns[i].recv()
        except (EOFError, OSError):
            self.procs[i].join(1.0)
            raise WorkerError(f"{self.names[i]} exited (exit code {self.procs[i].exitcode})") from None
        if msg[0] == "error":
            raise _worker_error(msg)
        return msg

    def _expect(self, i: int, tag: str, timeout: float) -> tuple[Any, ...]:
        """The next message of worker i, which must be `tag`; an error from
        any worker, an exit, or the timeout raises WorkerError."""
        from multiprocessing.connection import wait

        deadline = time.monotonic() + timeout
        by_conn = {c: j for j, c in enumerate(self.conns)}
        while True:
            if self.stash[i]:
                msg = self.stash[i].popleft()
                if msg[0] != tag:
                    raise WorkerError(f"{self.names[i]}: expected {tag!r}, got {msg!r}")
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"timeout: no {tag!r} from {self.names[i]} after {timeout:.0f} s", "HANG")
            for conn in wait(self.conns, timeout=min(left, 1.0)):
                j = by_conn[conn]
                self.stash[j].append(self._recv(j))

    def _not_run_message(self, broken: WorkerError) -> str:
        return f"not run: the workers were stopped after an earlier {broken.tag}"

    def _guard(self, run: Callable[[], ResultT]) -> ResultT:
        """`run()`, unless an earlier run failed.  On a failure the workers,
        stuck or out of step, are stopped now (they would burn CPU under the
        other groups' runs) and nothing more runs here."""
        if self.broken:
            raise WorkerError(self._not_run_message(self.broken), "NOT RUN")
        try:
            return run()
        except BaseException as e:
            self.broken = e if isinstance(e, WorkerError) else WorkerError(str(e))
            self.close()
            raise

    def _on_message(self, i: int, msg: tuple[Any, ...]) -> None:
        """A message other than "done" during a run."""
        raise WorkerError(f"{self.names[i]}: unexpected {msg!r}")

    def _collect(self) -> dict[int, dict[str, Any]]:
        """Every worker's "done" result of the run just started; past
        opts.run_timeout, `_diagnose_hang`."""
        from multiprocessing.connection import wait

        results: dict[int, dict[str, Any]] = {}

        def take(i: int, msg: tuple[Any, ...]) -> None:
            if msg[0] == "done":
                results[i] = msg[1]
            else:
                self._on_message(i, msg)

        for i, stashed in enumerate(self.stash):
            while stashed:
                take(i, stashed.popleft())
        deadline = time.monotonic() + self.opts.run_timeout
        by_conn = {c: i for i, c in enumerate(self.conns)}
        while len(results) < len(self.conns):
            left = deadline - time.monotonic()
            if left <= 0:
                self._diagnose_hang(results)
            for conn in wait([c for i, c in enumerate(self.conns) if i not in results], timeout=min(left, 1.0)):
                i = by_conn[conn]
                take(i, self._recv(i))
        return results

    def _diagnose_hang(self, results: dict[int, dict[str, Any]]) -> None:
        """Say who is stuck and where, then raise WorkerError(..., "HANG")."""
        raise NotImplementedError

    def _waiting(self, results: dict[int, dict[str, Any]]) -> list[str]:
        return [self.names[i] for i in range(len(self.conns)) if i not in results]

    def _dump_stacks(self, results: dict[int, dict[str, Any]]) -> None:
        """Every worker without a result prints its stacks (faulthandler on SIGUSR1) to the shared stderr."""
        for i, p in enumerate(self.procs):
            if i not in results and p.is_alive() and p.pid:
                log(f"--- {self.names[i]} (pid {p.pid}):")
                os.kill(p.pid, signal.SIGUSR1)
                time.sleep(0.3)  # one at a time: their stacks share our stderr

    @staticmethod
    def _safe(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:
            return f"<{type(e).__name__}: {e}>"


# ---------------------------------------------------------------------------
# the run


def bench_parser(doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """A benchmark script's command line: its docstring as the description,
    then --quick (``quick_help`` says what it runs)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    return ap


def add_output_arguments(ap: argparse.ArgumentParser, run_timeout: float, stuck: str,
                         markdown: str | None = None) -> None:
    """The last options of every benchmark: --run-timeout (seconds before a
    stuck run is ``stuck``), --json, and --markdown (by default ``markdown``,
    a file of benchmarks/results/, when given)."""
    ap.add_argument("--run-timeout", type=float, default=run_timeout, help=f"seconds before a stuck run is {stuck}")
    ap.add_argument("--json", metavar="PATH", help="write every result and the run's metadata")
    if markdown is None:
        ap.add_argument("--markdown", metavar="PATH", help="also write the tables to this file")
    else:
        ap.add_argument("--markdown", metavar="PATH", default=markdown,
                        help=f"also write the tables to this file (default benchmarks/results/"
                             f"{os.path.basename(markdown)}; '' for none)")


def chosen(option: str, text: str | None, known: list[str]) -> list[str]:
    """The comma-separated names ``text`` gave ``option`` (all of ``known``
    when it gave none); an unknown name ends the run."""
    if not text:
        return list(known)
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in known]
    if bad:
        raise SystemExit(f"{option}: unknown {bad}; known: {','.join(known)}")
    return names


def sizes(option: str, text: str | None, default: Iterable[int]) -> list[int]:
    """The comma-separated sizes ``text`` gave ``option`` (``default`` when
    it gave none): bytes, or with a suffix B, K/KiB, M/MiB (``64,1KiB,1MiB``);
    anything else ends the run with one line naming it."""
    if not text:
        return list(default)
    out = []
    for item in (x.strip() for x in text.split(",")):
        word = item.upper().replace(" ", "")
        number, mul = word, 1
        for suffix, m in (("KIB", KiB), ("MIB", MiB), ("K", KiB), ("M", MiB), ("B", 1)):
            if word.endswith(suffix):
                number, mul = word[: -len(suffix)], m
                break
        try:
            value = int(float(number) * mul)
        except ValueError:
            raise SystemExit(f"{option}: {item!r} is not a size (e.g. 64, 1KiB, 1MiB)") from None
        if value <= 0:
            raise SystemExit(f"{option}: {item!r} is not a positive size")
        out.append(value)
    return out


def quick_defaults(opts: Any, **values: tuple[Any, Any]) -> None:
    """Each option named in ``values`` that the command line left unset (or
    zero) takes its value for this run: ``(with --quick, without)``."""
    for name, (quick, full) in values.items():
        setattr(opts, name, getattr(opts, name, None) or (quick if opts.quick else full))


def run_meta(start_method: str, opts: Any, versions: dict[str, Any], skipped: dict[str, str],
             **more: Any) -> dict[str, Any]:
    """A run's metadata: ``run_context``, the options, the versions (Python's
    first), the skipped subjects and why, then ``more``."""
    return {**run_context(start_method), "options": dict(vars(opts)),
            "versions": {"python": platform.python_version(), **versions}, "skipped": skipped, **more}


def run_context(start_method: str) -> dict[str, Any]:
    """Python, start method, date and host of a benchmark run."""
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "start_method": start_method,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "cpu_model": cpu_model, "kernel": platform.release(),
                 "machine": platform.machine()},
    }


def git_note(root: str) -> str:
    """What to append to shmring's version: ' (git <rev>)', with ', src/include
    modified' when those differ from it, for the checkout at `root`; '' when
    that cannot be told."""
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src", "include"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""
    return f" (git {rev}{', src/include modified' if dirty else ''})" if rev else ""


def shmring_source_note(versions: dict[str, str], root: str) -> None:
    """Say where shmring was imported from (a build of another commit on
    PYTHONPATH), else which commit the checkout is at."""
    try:
        import shmring

        where = os.path.dirname(os.path.abspath(shmring.__file__ or ""))
        if where != os.path.join(root, "src", "shmring"):
            versions["shmring"] = versions.get("shmring", "?") + f" (imported from {where})"
        elif "shmring" in versions:
            versions["shmring"] += git_note(root)
    except Exception:
        pass


def shmring_build() -> str | None:
    """A fingerprint of the shmring extension the workers import: every group
    spawns fresh interpreters, so a rebuild in the middle of a run would give
    the later cells another build."""
    try:
        import hashlib

        import shmring._core as core

        with open(core.__file__ or "", "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:12]
    except Exception:
        return None


def loadavg_1min() -> float | None:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


def sigterm_as_interrupt() -> None:
    """SIGTERM ends the run like ^C: KeyboardInterrupt, through the finally blocks."""

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)


class MachineLoad:
    """How busy the machine was with other work during the run: /proc/stat's
    busy and steal time minus the CPU time of this process and its children."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.steal0, self.ours0 = time.monotonic(), *self._stat(), self._ours()

    @staticmethod
    def _stat() -> tuple[float, float]:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return 0.0, 0.0
        hz = os.sysconf("SC_CLK_TCK")
        user, nice, system, idle, iowait, irq, softirq = v[:7]
        steal = v[7] if len(v) > 7 else 0
        return (user + nice + system + irq + softirq) / hz, steal / hz

    @staticmethod
    def _ours() -> float:
        import resource

        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def summary(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        busy, steal = self._stat()
        cores = os.cpu_count() or 1
        other = max(0.0, (busy - self.busy0) - (self._ours() - self.ours0))
        load1 = loadavg_1min()
        return {
            "other_processes_pct_of_machine": other / (wall * cores) * 100 if wall > 0 else 0.0,
            "steal_pct_of_machine": (steal - self.steal0) / (wall * cores) * 100 if wall > 0 else 0.0,
            "loadavg_1min_at_end": -1.0 if load1 is None else load1,
        }


def run_measured(run: Callable[[], None], meta: dict[str, Any],
                 cleanup: Callable[[], list[str]] | None = None) -> bool:
    """Call `run()`, recording in `meta` the load average at the start, the
    duration and how busy the machine was with other work; ^C stops it.
    `cleanup()` (when given) runs last whatever happens and returns what it
    removed.  True if interrupted."""
    load1 = loadavg_1min()
    if load1 is not None:
        meta["loadavg_1min_at_start"] = load1
    load = MachineLoad()
    t_start = time.monotonic()
    interrupted = False
    leftovers: list[str] = []
    try:
        run()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping workers and cleaning up")
    finally:
        if cleanup is not None:
            leftovers = cleanup()
            for x in leftovers:
                log(f"cleanup: removed leftover {x}")
    meta["duration_s"] = time.monotonic() - t_start
    if cleanup is not None:
        meta["leftovers_removed"] = leftovers
    meta["machine_load"] = load.summary()
    return interrupted


def warn_if_rebuilt(build: str | None, meta: dict[str, Any], parts: str) -> None:
    """After the run: a warning in meta["warnings"] when the shmring extension
    the workers import (``shmring_build()`` before the run: ``build``) changed
    during it, so that ``parts`` of the report may mix two builds."""
    if build and shmring_build() != build:
        meta["warnings"].append(f"the shmring extension was rebuilt during the run: {parts} may mix two builds; rerun")
        log(f"!!! {meta['warnings'][-1]}")


def exit_status(meta: dict[str, Any], errors: list[Any], interrupted: bool, failed: str,
                markdown: str | None = None) -> int:
    """Say where the tables went, how long the run took and how many
    ``failed`` (e.g. "measurement(s) FAILED"); the exit status: 1 after a
    failure, 130 when interrupted, else 0."""
    if markdown:
        log(f"tables written to {markdown}")
    log(f"total {meta['duration_s']:.0f} s")
    if errors:
        log(f"\n!!! {len(errors)} {failed}; see above")
        return 1
    return 130 if interrupted else 0


def remove_leftovers(paths: Iterable[str]) -> list[str]:
    """Unlink each of ``paths`` that still exists; returns those that did."""
    left = []
    for path in paths:
        if os.path.exists(path):
            left.append(path)
            try:
                os.unlink(path)
            except OSError:
                pass
    return left


def clean_up_run(shm_names: Iterable[str], tmpdir: str, iceoryx2_killed: bool) -> list[str]:
    """Last line of defence: nothing of this run may stay behind.  Removes the
    run's shared-memory objects still there (returned), what iceoryx2 nodes
    killed by a timeout left, and the run's temporary folder."""
    left = remove_leftovers(os.path.join("/dev/shm", name.lstrip("/")) for name in shm_names)
    if iceoryx2_killed:
        from _transports import cleanup_iceoryx2

        log(f"iceoryx2 dead-node cleanup after killed workers: {cleanup_iceoryx2()}")
    shutil.rmtree(tmpdir, ignore_errors=True)
    return left


# ---------------------------------------------------------------------------
# the report


def fmt_num(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def results_table(header: list[str], results: Iterable[dict[str, Any]],
                  cells: Callable[[dict[str, Any]], list[str]], name: str = "row") -> str:
    """A markdown table, a row per result: its ``name`` field, then
    ``cells(result)``; a failed result shows its tag, then blank cells."""
    rows = [[r[name], r["failed"]] + [""] * (len(header) - 2) if r.get("failed") else [r[name]] + cells(r)
            for r in results]
    return md_table(header, rows)


def ratio_cells(value: float | None, baselines: dict[str, float], names: list[str], higher_is_better: bool) -> list[str]:
    """The "x NAME" cells of a row: how many times better than each baseline
    (rate / NAME's rate, or NAME's cost / this cost); "–" where either is missing."""
    out = []
    for b in names:
        base = baselines.get(b)
        if not base or not value:
            out.append("–")
        else:
            out.append(fmt_ratio(value / base if higher_is_better else base / value))
    return out


def spread_pct(xs: list[float]) -> float:
    """(max - min) / median of a measurement's runs, in %."""
    med = float(statistics.median(xs))
    return (max(xs) - min(xs)) / med * 100 if med else 0.0


def last_line(error: str) -> str:
    """The last line of an error's text (a traceback's message), or ""."""
    return error.strip().splitlines()[-1] if error.strip() else ""


def skipped_and_failures(skipped: dict[str, str], failures: list[str]) -> list[str]:
    """The "Skipped" and "FAILURES" sections of a report (none when empty)."""
    parts = []
    if skipped:
        parts.append("## Skipped\n")
        parts.append("\n".join(f"- {k}: {v}" for k, v in skipped.items()) + "\n")
    if failures:
        parts.append("## FAILURES\n")
        parts.append("\n".join(f"- {f}" for f in failures) + "\n")
    return parts


def machine_load_pcts(meta: dict[str, Any]) -> tuple[float, float]:
    """% of the machine used by other processes, and stolen, during the run."""
    ml = meta.get("machine_load", {})
    return ml.get("other_processes_pct_of_machine", 0.0), ml.get("steal_pct_of_machine", 0.0)


def machine_load_text(meta: dict[str, Any]) -> str:
    """How busy the machine was with other work during the run, as a report says it."""
    other, steal = machine_load_pcts(meta)
    return (f"other processes used {other:.1f}% of the machine during the run, steal {steal:.1f}% "
            f"(run took {meta.get('duration_s', 0):.0f} s)")


def loads_text(loads: dict[str, float]) -> str:
    """The % of the machine other processes used during each part of the run."""
    return ", ".join(f"{k} {v:.0f}%" for k, v in loads.items())


def run_line(meta: dict[str, Any]) -> str:
    """A report's line saying when and where it ran, and the versions of what it measured."""
    host = meta["host"]
    return (f"Run {meta['date']} on {host['cpu_model'] or '?'} ({host['cpus']} CPUs, {host['machine']}, kernel "
            f"{host['kernel']}), Python {meta['python']}, start method {meta['start_method']}; versions: "
            + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + ".\n")


def load_line(meta: dict[str, Any], parts: str, loads: dict[str, float]) -> str:
    """A report's line on the machine's load: the load average at the start,
    other processes' share during the run and during each of its ``parts``."""
    return (f"Load: average {meta.get('loadavg_1min_at_start', -1):.2f} at start; {machine_load_text(meta)}; "
            f"by {parts}: {loads_text(loads)}.\n")


def run_warnings(meta: dict[str, Any], who_suffers: str = "") -> list[str]:
    """The warnings at the end of a report: the run's own (meta["warnings"]),
    then the machine's load above 5 %."""
    return [f"**WARNING: {w}.**\n" for w in meta.get("warnings", [])] + not_idle_warning(
        *machine_load_pcts(meta), who_suffers)


def not_idle_warning(other: float, steal: float, who_suffers: str = "") -> list[str]:
    if other > 5 or steal > 5:
        return [f"**WARNING: the machine was not idle ({other:.0f}% used by other processes, {steal:.0f}% steal): "
                f"{who_suffers}rerun on a quiet machine.**\n"]
    return []


def write_outputs(text: str, markdown: str | None, json_path: str | None, payload: dict[str, Any]) -> None:
    """Print the report; write it to `markdown` (making its folder) and
    `payload` to `json_path`, each when given."""
    print(text)
    if markdown:
        os.makedirs(os.path.dirname(os.path.abspath(markdown)), exist_ok=True)
        with open(markdown, "w") as f:
            f.write(text)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(payload, f, indent=1, default=str)
