"""Parent side of a group of benchmark worker processes, shared by
bench_queue.py and bench_topic.py.

Each worker is a `multiprocessing` Process with a duplex control Pipe; the
worker sends ("ready",) once started, ("done", result) after each run and
("error", traceback_text, is_mismatch) when it fails.  A subclass starts its
workers in `__enter__` (with `_spawn`), runs them (`_guard` around its `_run`,
which collects the results with `_collect`) and releases what it made in
`close` (after `_stop_workers`).  Leaving the `with` block calls `close`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bench_channel import log, stop_workers

R = TypeVar("R")


class WorkerError(Exception):
    def __init__(self, message: str, tag: str = "FAILED") -> None:
        super().__init__(message)
        self.tag = tag  # FAILED, MISMATCH, HANG or NOT RUN


class WorkerGroup:
    """Worker processes and their control pipes: conns[i] and procs[i] are
    worker i, names[i] its name in messages ("producer 0", "sub 2", ...)."""

    def __init__(self, ctx: Any, opts: Any, names: list[str]) -> None:
        self.ctx, self.opts = ctx, opts
        self.procs: list[Any] = []
        self.conns: list[Any] = []
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
        self.procs, self.conns = [], []
        return killed

    def _spawn(self, target: Callable[..., None], args: tuple[Any, ...], name: str,
               kwargs: dict[str, Any] | None = None) -> None:
        """Start one worker: target(*args, conn=<its end of the pipe>, **kwargs)."""
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        p = self.ctx.Process(target=target, args=args, kwargs={"conn": child_end, **(kwargs or {})},
                             name=name, daemon=True)
        p.start()
        child_end.close()  # so that a dead child reads as EOF here
        self.procs.append(p)
        self.conns.append(parent_end)

    def _recv(self, i: int) -> tuple[Any, ...]:
        try:
            msg: tuple[Any, ...] = self.conns[i].recv()
        except (EOFError, OSError):
            self.procs[i].join(1.0)
            raise WorkerError(f"{self.names[i]} exited (exit code {self.procs[i].exitcode})") from None
        if msg[0] == "error":
            raise WorkerError(msg[1], "MISMATCH" if msg[2] else "FAILED")
        return msg

    def _expect(self, i: int, tag: str, timeout: float) -> tuple[Any, ...]:
        if not self.conns[i].poll(timeout):
            raise WorkerError(f"timeout: no {tag!r} from {self.names[i]} after {timeout:.0f} s", "HANG")
        msg = self._recv(i)
        if msg[0] != tag:
            raise WorkerError(f"{self.names[i]}: expected {tag!r}, got {msg!r}")
        return msg

    def _not_run_message(self, broken: WorkerError) -> str:
        return f"not run: the workers were stopped after an earlier {broken.tag}"

    def _guard(self, run: Callable[[], R]) -> R:
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
        deadline = time.monotonic() + self.opts.run_timeout
        by_conn = {c: i for i, c in enumerate(self.conns)}
        while len(results) < len(self.conns):
            left = deadline - time.monotonic()
            if left <= 0:
                self._diagnose_hang(results)
            for conn in wait([c for i, c in enumerate(self.conns) if i not in results], timeout=min(left, 1.0)):
                i = by_conn[conn]
                msg = self._recv(i)
                if msg[0] == "done":
                    results[i] = msg[1]
                else:
                    self._on_message(i, msg)
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
