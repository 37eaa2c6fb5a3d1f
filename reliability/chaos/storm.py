"""The supervisor of a kill storm.

It creates the scenario's objects, forks every participant from itself
(shmring is imported and the objects are attached already, so a
replacement costs one fork), and then, until the kill budget is spent,
sleeps a random few milliseconds, SIGKILLs a random participant (now and
then two or three), waits for its death and forks its next incarnation.  Then it stops the producers
(a shared flag), lets the consumers empty the objects, forks one last
consumer that takes whatever is left, and leaves.  A group that delivers
nothing for ``wedge_s`` seconds, or a phase that does not end, is a wedge:
it is logged (``H``), with what can be seen of the stuck processes, and
the storm ends there.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import signal
import time
import traceback
from typing import Any

from .logformat import FINAL_STATS, SUPERVISOR, LogFile, line, slot_path, text_field
from .scenarios import Group, Scenario
from .workers import STOP_CONSUMERS, STOP_PRODUCERS, Worker, run_consumer, run_producer

DRAIN_SLOT = ".drain"  # the last consumer of a group is "<group>.drain"


def pause(rng: random.Random) -> float:
    """Seconds until the next kill: mostly a few milliseconds, sometimes a
    calm that lets queues fill up and rings wrap."""
    r = rng.random()
    if r < 0.7:
        return rng.uniform(0.001, 0.005)
    if r < 0.95:
        return rng.uniform(0.005, 0.03)
    return rng.uniform(0.05, 0.3)


class Storm:
    """One storm: its objects, its participants' processes, the kills."""

    def __init__(self, scenario: Scenario, directory: str, kills: int, seed: int, wedge_s: float = 10.0) -> None:
        self.scenario, self.directory, self.budget, self.wedge_s = scenario, directory, kills, wedge_s
        self.rng = random.Random(seed)
        self.seed = seed
        self.stop = mmap.mmap(-1, mmap.PAGESIZE)
        self.handles: dict[str, Any] = {}
        self.groups = {g.name: g for g in scenario.groups}
        self.roles: dict[str, tuple[Group, str]] = {s: (g, role) for g in scenario.groups for s, role in g.slots()}
        self.pids: dict[str, int] = {}
        self.incarnations: dict[str, int] = {}
        self.kills = 0
        self.wedged: list[str] = []
        self.unexpected = 0
        self.in_lock = 0  # kills of a queue's lock holder (seen holding it just before the kill)
        self.peaks: dict[str, int] = {}  # the most overflow chunks a queue held at once
        self.sup = LogFile(slot_path(directory, SUPERVISOR))
        self.offsets: dict[str, int] = {}  # how far the supervisor has read each consumer's log (progress)
        self.progress_at: dict[str, float] = {}

    # -- participants ---------------------------------------------------------------

    def spawn(self, slot: str, drain: bool = False) -> None:
        """Fork the slot's next incarnation."""
        group, role = self.roles[slot]
        inc = self.incarnations[slot] = self.incarnations.get(slot, 0) + 1
        pid = os.fork()
        if pid == 0:
            self._child(slot, group, role, inc, drain)
        self.pids[slot] = pid

    def _child(self, slot: str, group: Group, role: str, inc: int, drain: bool) -> None:
        code = 3
        log = None
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            log = LogFile(slot_path(self.directory, slot))
            log.write("\n" + line("S", inc, os.getpid(), time.monotonic_ns()))
            producers = self.scenario.producer_slots()
            worker = Worker(slot, producers.index(slot) if role == "producer" else 0, inc,
                            self.handles[group.name], group.puts if role == "producer" else group.gets,
                            group.sizes, group.batch, group.huge, producers, log, self.stop,
                            random.Random(f"{self.seed}/{slot}/{inc}"), drain)
            (run_producer if role == "producer" else run_consumer)(self.scenario.kind, worker)
            log.write(line("Q", inc, time.monotonic_ns()))
            code = 0
        except BaseException as exc:  # every way out of a worker ends the process here
            if log is not None:
                text = "".join(traceback.format_exception_only(type(exc), exc))
                log.write(line("E", inc, time.monotonic_ns(), text_field(text)))
        os._exit(code)

    def _ended(self, slot: str, status: int, killed: bool) -> None:
        """Note how an incarnation ended: by our SIGKILL, by a clean exit, or otherwise."""
        if killed and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            return
        if not killed and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return
        self.unexpected += 1
        self.sup.write(line("Z", 0, slot, self.incarnations[slot], self.pids[slot], status, time.monotonic_ns()))

    def kill(self, slot: str) -> None:
        """SIGKILL the slot's incarnation and wait for its death.  Every kill
        is logged, with the time of the death (known once waitpid returns:
        the victim runs on until the signal reaches it), which is when its
        last call stopped for sure."""
        pid = self.pids[slot]
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        self.sup.write(line("K", 0, slot, self.incarnations[slot], pid, time.monotonic_ns()))
        self._ended(slot, status, killed=True)
        del self.pids[slot]

    def reap(self, restart: bool) -> None:
        """Collect participants that ended by themselves (restarting them
        during the storm: an unexpected end is logged, not fatal)."""
        by_pid = {pid: slot for slot, pid in self.pids.items()}
        while by_pid:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            slot = by_pid.pop(pid, None)
            if slot is None:
                continue
            self._ended(slot, status, killed=False)
            del self.pids[slot]
            if restart:
                self.spawn(slot)

    # -- the storm ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        for group in self.scenario.groups:
            self.handles[group.name] = group.make()
        started = time.monotonic()
        try:
            for slot in self.roles:
                self.spawn(slot)
            self._rain()
            self._finish()
        finally:
            for slot in list(self.pids):  # left by a wedge (or an error of the supervisor)
                self.kill(slot)
            for name, handle in self.handles.items():
                segment_name = handle.name
                handle.close()
                self._left_behind(name, segment_name)
            self.sup.close()
        result = {"scenario": self.scenario.name, "kind": self.scenario.kind, "kills": self.kills,
                  "storm_s": round(time.monotonic() - started, 2), "wedged": self.wedged,
                  "unexpected_exits": self.unexpected, "kills_holding_lock": self.in_lock,
                  "overflow_chunks_peak": self.peaks, "seed": self.seed}
        with open(os.path.join(self.directory, "storm.json"), "w") as f:
            json.dump(result, f, indent=1)
        return result

    def _left_behind(self, group: str, name: str) -> None:
        """Once the supervisor, the last user, has left, nothing of the object
        may stay in /dev/shm (the object, or a queue's overflow chunks)."""
        for entry in os.listdir("/dev/shm"):
            if entry == name or entry.startswith(name + ".q"):
                self.sup.write(line("L", 0, group, time.monotonic_ns(), entry))

    def _rain(self) -> None:
        slots = list(self.roles)
        now = time.monotonic()
        self.progress_at = {g: now for g in self.groups}
        next_look = now
        while self.kills < self.budget:
            time.sleep(pause(self.rng))
            self.reap(restart=True)
            # Mostly one victim; now and then two or three at once (a death during another's recovery).
            victims = self.rng.sample(slots, 1 if self.rng.random() < 0.9 else min(len(slots), self.rng.randint(2, 3)))
            for victim in victims:
                if self.scenario.kind == "queue":
                    group = self.roles[victim][0].name
                    self.in_lock += self.handles[group].stats()["holder"] == self.pids[victim]
                self.kill(victim)
                self.kills += 1
            for victim in victims:
                self.spawn(victim)
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + 0.2
                self._sample()
                if self._stalled():
                    return

    def _sample(self) -> None:
        for name, handle in self.handles.items():
            if self.scenario.kind == "queue":
                chunks = int(handle.stats()["overflow_chunks"])
                self.peaks[name] = max(self.peaks.get(name, 0), chunks)

    def _stalled(self) -> bool:
        """Whether a group delivered nothing for wedge_s seconds (then it is logged as wedged)."""
        now = time.monotonic()
        for name, group in self.groups.items():
            count = sum(self._new_deliveries(slot) for slot, role in group.slots() if role == "consumer")
            if count:
                self.progress_at[name] = now
            elif now - self.progress_at[name] > self.wedge_s:
                self._wedge(name, f"no delivery for {now - self.progress_at[name]:.1f} s during the storm")
                return True
        return False

    def _new_deliveries(self, slot: str) -> int:
        path = slot_path(self.directory, slot)
        try:
            with open(path, "rb") as f:
                f.seek(self.offsets.get(slot, 0))
                data = f.read()
        except FileNotFoundError:
            return 0
        cut = data.rfind(b"\n") + 1  # count whole lines only; the rest is read next time
        self.offsets[slot] = self.offsets.get(slot, 0) + cut
        return data[:cut].count(b"\nG ") + data[:cut].startswith(b"G ")

    def _wedge(self, group: str, why: str) -> None:
        """Log a wedge with what can be seen of the stuck processes."""
        self.wedged.append(group)
        report = {"why": why, "stats": _safe_stats(self.handles[group]), "processes": {}}
        for slot, pid in self.pids.items():
            report["processes"][slot] = {"pid": pid, "wchan": _read(f"/proc/{pid}/wchan"),
                                         "state": _read(f"/proc/{pid}/stat").split(" ")[2:3],
                                         "log_tail": _tail(slot_path(self.directory, slot))}
        with open(os.path.join(self.directory, f"wedge-{group}.json"), "w") as f:
            json.dump(report, f, indent=1, default=str)
        self.sup.write(line("H", 0, group, time.monotonic_ns(), text_field(why)))

    # -- the end ----------------------------------------------------------------------

    def _finish(self) -> None:
        """Stop the producers, let the consumers empty the objects, then
        take what is left with one more consumer per group."""
        if self.wedged:
            return
        self.stop[0] = STOP_PRODUCERS
        if not self._wait_for(lambda s: self.roles[s][1] == "producer", 30.0, "the producers did not stop"):
            return
        self.stop[0] = STOP_CONSUMERS
        if not self._wait_for(lambda s: True, 60.0, "the consumers did not finish"):
            return
        if self.scenario.kind == "topic":
            return  # the subscribers that saw the end drained it: nothing is taken from a topic
        for name in self.groups:
            slot = name + DRAIN_SLOT
            self.roles[slot] = (self.groups[name], "consumer")
            self.spawn(slot, drain=True)
            if not self._wait_for(lambda s: s == slot, 60.0, "the final drain did not finish"):
                return
        with open(os.path.join(self.directory, FINAL_STATS), "w") as f:  # the counters, once empty
            json.dump({name: handle.stats() for name, handle in self.handles.items()}, f, indent=1)

    def _wait_for(self, which: Any, timeout: float, why: str) -> bool:
        deadline = time.monotonic() + timeout
        while any(which(s) for s in self.pids):
            if time.monotonic() > deadline:
                stuck = sorted(s for s in self.pids if which(s))
                self._wedge(stuck[0].split(".")[0], f"{why}: {' '.join(stuck)}")
                return False
            time.sleep(0.01)
            self.reap(restart=False)
        return True


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        return f"({exc.strerror})"


def _tail(path: str, n: int = 4) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-n:]
    except OSError:
        return []


def _safe_stats(handle: Any) -> Any:
    try:
        return handle.stats()
    except Exception as exc:  # a diagnostic only
        return repr(exc)
