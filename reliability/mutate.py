#!/usr/bin/env python3
"""Live mutation: real processes use a Channel, a Queue and a Topic while
another process (this one, the controller) writes random bytes and words at
random offsets of their live segments, through its own mmap of
/dev/shm/<name>.

It runs in rounds.  Each round the controller creates a fresh channel
(one producer, one consumer), queue (two producers, one consumer; a small
ring, so that overflow chunks come and go) and topic (one publisher, two
subscribers; policy "block" and "overwrite" in turn), tells the
participant processes to use them until the end of the round, and makes
one mutation in each segment (or in one of the queue's overflow chunks)
at a random moment, after a short warm-up; with ``--burst N``, N of them
at N random moments (then the outcome is that of the burst: what the
participants saw from its first write on).  Every tenth round is a control
round without mutations: what happens there is the baseline.

The participants are long-lived processes (started once, restarted after a
crash).  Every message carries a checksum and a sequence number, so a
reader tells intact data from a mismatch (a mutation of payload bytes is
allowed to pass unnoticed by shmring, and is counted).  Each participant
reports, per round, what it saw: messages, mismatches, and every exception
by type, with times, so that each outcome is attributed to the mutation
before it.

Outcomes of a mutation: no effect; a data mismatch (bytes or order); the
shmring exceptions it caused (CorruptedError ideally); the queue's
Empty/Full (its timeouts, which a mutation of the counters may cause); and
the failures: an exception of another class ("foreign"), a participant
killed by a signal (crash), a participant silent for HANG_SECONDS after the
end of a round while its calls use timeouts of 0.1 s (hang), a sanitizer
report in a participant's log.  The exit status is 1 if there was any
failure.

    .venv/bin/python reliability/mutate.py            # 60 s
    .venv/bin/python reliability/mutate.py --long     # 15 min
    .venv/bin/python reliability/mutate.py --asan     # against build/asan (make sanitize)
    .venv/bin/python reliability/mutate.py --burst 30 --seconds 3600   # ~100,000 writes

Results: build/mutate/summary.json (figures, histograms, failures with the
log of the process), build/mutate/mutations.jsonl (each mutation: where,
what, before, after, outcome), build/mutate/logs/ (participants' stderr).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "mutate"
HANG_SECONDS = 10.0  # a participant silent this long after its round ended has hung
CALL_TIMEOUT = 0.1  # every blocking call of a participant
WARMUP = 0.15  # seconds of a round before its mutations may come
ROUND = 0.6  # seconds of a round
CONTROL_EVERY = 10  # every tenth round is a control round, without mutations
PARTICIPANTS = [
    ("channel", "producer", 0), ("channel", "consumer", 0),
    ("queue", "producer", 0), ("queue", "producer", 1), ("queue", "consumer", 0),
    ("topic", "publisher", 0), ("topic", "subscriber", 0), ("topic", "subscriber", 1),
]
# Offsets of a segment: the header fields, the roster, the kind's control
# block, the rest (records); and how likely a mutation lands in each.
HEADER_FIELDS, HEADER_SIZE = 128, 4096
CONTROL_SIZE = {"channel": 640, "queue": 384, "topic": 512, "chunk": 64}
REGION_WEIGHTS = {"header": 10, "roster": 5, "control": 55, "records": 30}
# Findings reported and still open (docs/RELIABILITY.md): an exception of
# another class whose message says it is one of them, e.g.
# {"F2": "every process using it has left"}.  With --skip-known they are
# counted apart and do not fail the run.  None is open now.
KNOWN_FINDINGS: dict[str, str] = {}
# The header's state word: a write that leaves it REMOVED makes attaching
# fail as for a segment its last user removed (FileNotFoundError), by
# design; that outcome is "removed", not a failure.
STATE_OFFSET, STATE_REMOVED = 72, 1
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "Fatal Python error")

# -- messages -----------------------------------------------------------------

MESSAGE_HEAD = struct.Struct("<4sHHQI")  # magic, writer, 0, sequence number, body length
MAGIC = b"MUT1"


def make_message(rng: random.Random, writer: int, seq: int) -> bytes:
    body = rng.randbytes(rng.randrange(0, 300))
    data = MESSAGE_HEAD.pack(MAGIC, writer, 0, seq, len(body)) + body
    return data + struct.pack("<I", zlib.crc32(data))


def read_message(data: bytes) -> tuple[int, int] | None:
    """(writer, seq) of an intact message, None for a damaged one."""
    if len(data) < MESSAGE_HEAD.size + 4:
        return None
    magic, writer, _, seq, n = MESSAGE_HEAD.unpack_from(data)
    if magic != MAGIC or len(data) != MESSAGE_HEAD.size + n + 4:
        return None
    if struct.unpack_from("<I", data, len(data) - 4)[0] != zlib.crc32(data[:-4]):
        return None
    return writer, seq


# -- participants ----------------------------------------------------------------


class Events:
    """What a participant saw in one round: per label, how often, when first
    and when last (CLOCK_MONOTONIC, shared by every process)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = {}
        self.ops = 0
        self.detail: dict[str, str] = {}

    def add(self, label: str, detail: str = "") -> None:
        now = time.monotonic()
        entry = self.seen.setdefault(label, [0, now, now])
        entry[0] += 1
        entry[2] = now
        if detail and label not in self.detail:
            self.detail[label] = detail[:2000]

    def exception(self, where: str, exc: BaseException, shmring: Any) -> None:
        import queue
        import traceback

        name = type(exc).__name__
        if isinstance(exc, shmring.Error):
            label = name
        elif isinstance(exc, (queue.Empty, queue.Full)):
            label = name  # the queue's timeouts, as multiprocessing.Queue's
        else:
            label = f"foreign:{name}"
        self.add(f"{where}{label}", "".join(traceback.format_exception(exc)) if label.startswith("foreign") else "")


def open_end(kind: str, role: str, name: str, shmring: Any) -> tuple[Any, list[Any]]:
    """The handle a participant works with, and everything to close after."""
    if kind == "channel":
        ch = shmring.Channel.open(name)
        return ch, [ch]
    if kind == "queue":
        q = shmring.Queue.open(name)
        return q, [q]
    topic = shmring.Topic.open(name)
    try:
        end = topic.publisher() if role == "publisher" else topic.subscribe()
    except BaseException:
        topic.close()
        raise
    return (topic, end), [end, topic]


class Reader:
    """Checks what a reader receives: intact, and in order per writer (a
    gap is allowed once after a damaged message, and after a topic
    subscriber was told it lagged)."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self.last: dict[int, int] = {}
        self.gaps_allowed = False

    def check(self, data: Any) -> None:
        got = read_message(bytes(data))
        if got is None:
            self.events.add("mismatch:bytes")
            self.gaps_allowed = True  # the damaged message's number is unknown
            return
        writer, seq = got
        last = self.last.get(writer)
        if last is not None and (seq <= last or (seq != last + 1 and not self.gaps_allowed)):
            self.events.add("mismatch:order")
        self.last[writer] = seq
        self.gaps_allowed = False


def step(kind: str, role: str, index: int, end: Any, state: dict[str, Any]) -> None:
    """One operation of a participant (raises what shmring raises)."""
    rng: random.Random = state["rng"]
    n = state["n"]
    if role in ("producer", "publisher"):
        msg = make_message(rng, index, state["seq"])
        if kind == "channel" and n % 4 == 3:
            with end.reserve(len(msg), timeout=CALL_TIMEOUT) as buf:
                buf[:] = msg
        elif kind == "channel":
            end.send(msg, timeout=CALL_TIMEOUT)
        elif kind == "queue":
            end.put_bytes(msg, timeout=CALL_TIMEOUT)
        else:
            end[1].send(msg, timeout=CALL_TIMEOUT)
            time.sleep(0.0005)  # subscribers keep up: Lagged stays rare without mutations
        state["seq"] += 1
        return
    reader: Reader = state["reader"]
    if kind == "channel" and n % 4 == 3:
        with end.peek(timeout=CALL_TIMEOUT) as buf:
            data = bytes(buf)
    elif kind == "channel":
        data = end.recv(timeout=CALL_TIMEOUT)
    elif kind == "queue":
        data = end.get_bytes(timeout=CALL_TIMEOUT)
    else:
        if n % 16 == 15:
            newest = end[0].latest()  # the observer's look at the newest record
            if newest is not None:
                reader.events.add("ok" if read_message(bytes(newest)) else "mismatch:bytes")
        try:
            data = end[1].recv_bytes(timeout=CALL_TIMEOUT)
        except state["lagged"]:
            reader.gaps_allowed = True  # overwritten before read: a gap is expected once
            raise
    reader.check(data)


def participant_round(kind: str, role: str, index: int, cmd: dict[str, Any], shmring: Any) -> dict[str, Any]:
    events = Events()
    state: dict[str, Any] = {"rng": random.Random(cmd["seed"]), "n": 0, "seq": 0, "lagged": shmring.Lagged,
                             "reader": Reader(events)}
    until = cmd["until"]
    try:
        end, handles = open_end(kind, role, cmd["name"], shmring)
    except Exception as exc:  # noqa: BLE001 - classified, reported
        events.exception("open:", exc, shmring)
        return {"events": events.seen, "detail": events.detail, "ops": 0}
    while time.monotonic() < until:
        try:
            step(kind, role, index, end, state)
            events.ops += 1
        except Exception as exc:  # noqa: BLE001 - classified, reported
            events.exception("", exc, shmring)
            time.sleep(0.005)
        state["n"] += 1
    # Every call has returned (timeouts of CALL_TIMEOUT) before any end
    # closes: a writer's close is not mistaken by a reader for an effect.
    time.sleep(max(0.0, until + 2 * CALL_TIMEOUT - time.monotonic()))
    for h in handles:
        try:
            h.close()
        except Exception as exc:  # noqa: BLE001
            events.exception("close:", exc, shmring)
    if index == 0 and role in ("consumer", "subscriber"):
        reopen(kind, cmd["name"], events, shmring)
    return {"events": events.seen, "detail": events.detail, "ops": events.ops}


def reopen(kind: str, name: str, events: Events, shmring: Any) -> None:
    """A process attaching after the mutation: the header and the config
    are read again."""
    cls = {"channel": shmring.Channel, "queue": shmring.Queue, "topic": shmring.Topic}[kind]
    try:
        cls.open(name).close()
    except Exception as exc:  # noqa: BLE001 - classified, reported
        events.exception("reopen:", exc, shmring)


def participant_main(kind: str, role: str, index: int) -> None:
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    import shmring

    print(json.dumps({"ready": shmring.__file__}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("op") == "exit":
            return
        print(json.dumps(participant_round(kind, role, index, cmd, shmring)), flush=True)


# -- the controller ----------------------------------------------------------------


class Participant:
    def __init__(self, kind: str, role: str, index: int, env: dict[str, str]) -> None:
        self.kind, self.role, self.index, self.env = kind, role, index, env
        self.log = OUT / "logs" / f"{kind}-{role}-{index}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.log_seen = 0

    @property
    def label(self) -> str:
        return f"{self.kind}-{self.role}-{self.index}"

    def start(self) -> None:
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--participant", self.kind, self.role, str(self.index)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=self.env, bufsize=1)
        ready = self.read_line(time.monotonic() + 60)
        if ready is None or "ready" not in ready:
            raise RuntimeError(f"participant {self.label} did not start (see {self.log})")
        self.module = ready["ready"]

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def read_line(self, deadline: float) -> dict[str, Any] | None:
        """The next report, or None when the process died or stayed silent until deadline."""
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            line = self.proc.stdout.readline()
            if not line:
                return None
            try:
                report: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue  # something a library printed: not ours
            return report

    def new_log(self) -> str:
        """What the process wrote to its log since the last look."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        new, self.log_seen = text[self.log_seen:], len(text)
        return new

    def stop(self, dump: bool) -> int:
        """Kill the process (after a traceback dump if it hung); its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None and dump:
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(0.5)
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()


def create_objects(core: Any, names: dict[str, str], k: int) -> dict[str, Any]:
    """This round's channel, queue and topic (the controller's attachments)."""
    waits = (core.WAIT_ADAPTIVE, core.WAIT_BLOCK, core.WAIT_SEMAPHORE, core.WAIT_YIELD)
    policy = core.TOPIC_OVERWRITE if k % 2 else core.TOPIC_BLOCK
    return {
        "channel": core.create_channel(names["channel"], 4096, waits[k % len(waits)], 20000, 0o600),
        "queue": core.create_queue(names["queue"], 4096, 0, 0, 20000, 0o600),
        "topic": core.create_topic(names["topic"], 4096, policy, 4, 20000, 0o600),
    }


def segments_of(name: str) -> list[str]:
    """The segment of an object and, for a queue, its overflow chunks now."""
    try:
        return [f for f in os.listdir("/dev/shm") if f == name or f.startswith(name + ".q")]
    except OSError:
        return []


VALUES = [0, 1, 7, 8, 16, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**63 - 1, 2**63, 2**64 - 8, 2**64 - 1]


def mutate(rng: random.Random, kind: str, name: str) -> dict[str, Any] | None:
    """One write at a random offset of the object's segment (or of a chunk)."""
    files = segments_of(name)
    if not files:
        return None
    chunks = [f for f in files if f != name]
    target = rng.choice(chunks) if chunks and rng.random() < 0.3 else name
    part = "chunk" if target != name else kind
    import mmap

    try:
        fd = os.open(f"/dev/shm/{target}", os.O_RDWR)
    except OSError:
        return None  # removed meanwhile
    try:
        size = os.fstat(fd).st_size
        if size <= HEADER_SIZE:
            return None
        with mmap.mmap(fd, size) as m:
            bounds = {"header": (0, HEADER_FIELDS), "roster": (HEADER_FIELDS, HEADER_SIZE),
                      "control": (HEADER_SIZE, min(size, HEADER_SIZE + CONTROL_SIZE[part])),
                      "records": (min(size, HEADER_SIZE + CONTROL_SIZE[part]), size)}
            region = rng.choices(list(REGION_WEIGHTS), weights=list(REGION_WEIGHTS.values()))[0]
            lo, hi = bounds[region]
            if hi - lo < 8:
                region, (lo, hi) = "control", bounds["control"]
            how = rng.choice(["byte", "word32", "word64", "value", "delta", "bitflip"])
            width = {"byte": 1, "bitflip": 1, "word32": 4}.get(how, 8)
            offset = rng.randrange(lo, hi - width + 1) & ~(width - 1)
            old = m[offset:offset + width]
            if how == "bitflip":
                new = bytes([old[0] ^ (1 << rng.randrange(8))])
            elif how == "value":
                new = struct.pack("<Q", rng.choice(VALUES))
            elif how == "delta":
                new = struct.pack("<Q", (struct.unpack("<Q", old)[0] + 8 * rng.randint(-64, 64)) % 2**64)
            else:
                new = rng.randbytes(width)
            m[offset:offset + width] = new
            state = struct.unpack_from("<I", m, STATE_OFFSET)[0]
    finally:
        os.close(fd)
    return {"kind": kind, "segment": part, "region": region, "offset": offset, "how": how,
            "old": old.hex(), "new": new.hex(), "time": time.monotonic(), "state": state}


def outcome_label(label: str, burst: list[dict[str, Any]] | None) -> str:
    """An event's label, "removed" for the documented answer to a state word
    set to REMOVED by one of the burst's writes."""
    if burst and any(m["state"] == STATE_REMOVED for m in burst) and label.endswith("foreign:FileNotFoundError"):
        return "removed"
    return label


SEVERITY = ["crash", "sanitizer", "hang", "foreign", "CorruptedError", "shmring", "mismatch", "leftover", "flow",
            "no effect"]
FLOW = {"Empty", "Full", "Timeout", "Lagged", "removed"}


def classify(label: str) -> str:
    bare = label.split(":", 1)[1] if label.startswith(("open:", "close:", "reopen:")) else label
    if label in ("crash", "sanitizer", "hang"):
        return label
    if label == "leftover":
        return label
    if bare.startswith("foreign:"):
        return "foreign"
    if bare.startswith("mismatch"):
        return "mismatch"
    if bare == "CorruptedError":
        return "CorruptedError"
    return "flow" if bare in FLOW else "shmring"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--participant", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    ap.add_argument("--long", action="store_true", help="run 15 minutes")
    ap.add_argument("--burst", type=int, default=1,
                    help="writes into each object per round (default 1: each mutation has its own outcome)")
    ap.add_argument("--asan", action="store_true", help="use the ASan+UBSan build of `make sanitize` (build/asan)")
    ap.add_argument("--seed", type=int, default=None, help="random seed of the mutations (default: from the time)")
    ap.add_argument("--skip-known", action="store_true", help="do not fail on the open findings (KNOWN_FINDINGS)")
    args = ap.parse_args()
    if args.participant:
        kind, role, index = args.participant
        participant_main(kind, role, int(index))
        return 0
    env = sanitizer_env() if args.asan else dict(os.environ)
    if args.asan and os.environ.get("SHMRING_MUTATE_ASAN") != "1":
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)  # the controller too
    seconds = 900.0 if args.long else args.seconds
    seed = args.seed if args.seed is not None else int(time.time())
    if args.burst < 1:
        ap.error("--burst must be at least 1")
    return run(seconds, seed, env, args.asan, args.skip_known, args.burst)


def sanitizer_env() -> dict[str, str]:
    build = ROOT / "build" / "asan"
    if not list((build / "shmring").glob("_core*.so")):
        sys.exit(f"mutate: no ASan build in {build}: run `make sanitize` first")

    def lib(name: str) -> str:
        return subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True,
                              check=True).stdout.strip()

    env = dict(os.environ)
    env.update({
        "LD_PRELOAD": f"{lib('libasan.so')} {lib('libubsan.so')}",
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:abort_on_error=1:print_stacktrace=1",
        "PYTHONPATH": str(build),
        "SHMRING_MUTATE_ASAN": "1",
    })
    return env


def known_finding(failure: dict[str, Any]) -> str | None:
    detail = failure.get("detail", "")
    return next((name for name, mark in KNOWN_FINDINGS.items() if mark in detail), None)


def run(seconds: float, seed: int, env: dict[str, str], asan: bool, skip_known: bool, burst: int) -> int:
    import shmring._core as core

    rng = random.Random(seed)
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    for old in (OUT / "logs").glob("*.log"):
        old.unlink()
    people = [Participant(kind, role, index, env) for kind, role, index in PARTICIPANTS]
    for p in people:
        p.start()
    print(f"mutate: seed {seed}, {seconds:.0f} s, participants use {people[0].module}", flush=True)
    log = (OUT / "mutations.jsonl").open("w")
    outcomes: Counter[str] = Counter()  # per burst (a mutation when --burst 1): its most severe outcome
    labels: Counter[str] = Counter()  # per burst: every label it produced
    baseline: Counter[str] = Counter()  # per label: control rounds x objects in which it came
    failures: list[dict[str, Any]] = []
    rounds = mutations = bursts = control = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            k = rounds
            rounds += 1
            names = {kind: f"shmring-mutate-{os.getpid()}-{k}-{kind}" for kind in ("channel", "queue", "topic")}
            owned = create_objects(core, names, k)
            start = time.monotonic()
            until = start + ROUND
            for p in people:
                p.send({"name": names[p.kind], "until": until, "seed": rng.getrandbits(32)})
            done: dict[str, list[dict[str, Any]]] = {}  # per object, its writes in time order
            is_control = k % CONTROL_EVERY == CONTROL_EVERY - 1
            if not is_control:
                times = sorted((rng.uniform(start + WARMUP, until - 0.1), kind) for kind in names for _ in range(burst))
                for t, kind in times:
                    time.sleep(max(0.0, t - time.monotonic()))
                    m = mutate(rng, kind, names[kind])
                    if m is not None:
                        done.setdefault(kind, []).append(m)
            reports = collect(people, until, failures, k)
            for kind, mapping in owned.items():
                try:
                    mapping.leave()
                except Exception as exc:  # noqa: BLE001
                    reports.setdefault(kind, []).append({"events": {f"close:{type(exc).__name__}": [1, 0, 1e18]}})
            for kind, name in names.items():
                left = segments_of(name)  # left behind: the last to leave did not remove them
                if left:
                    reports.setdefault(kind, []).append({"events": {"leftover": [len(left), 0, 1e18]}})
                for seg in left:
                    try:
                        os.unlink(f"/dev/shm/{seg}")
                    except OSError:
                        pass
            if is_control:
                control += 1
                for kind in names:
                    baseline.update({lab for r in reports.get(kind, []) for lab in r["events"] if lab != "ok"}
                                    or {"no effect"})
                continue
            for f in failures:
                kind = f["participant"].split("-")[0]
                if f["round"] == k and outcome_label(f["what"], done.get(kind)) == "removed":
                    f["expected"] = "the write left the state word REMOVED: attaching fails as after a removal"
            for kind, writes in done.items():
                seen = sorted({outcome_label(lab, writes) for r in reports.get(kind, [])
                               for lab, (_, _, last) in r["events"].items()
                               if last >= writes[0]["time"] and lab != "ok"})
                bursts += 1
                mutations += len(writes)
                labels.update(seen or ["no effect"])
                worst = min((classify(lab) for lab in seen), key=SEVERITY.index, default="no effect")
                outcomes[worst] += 1
                for i, m in enumerate(writes):
                    m.update(outcome=seen or ["no effect"], round=k, write=i)
                    log.write(json.dumps(m) + "\n")
    finally:
        for p in people:
            if p.proc is not None and p.proc.poll() is None:
                try:
                    p.send({"op": "exit"})
                except OSError:
                    pass
                try:
                    p.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.proc.kill()
        log.close()
    for f in failures:
        f["known"] = known_finding(f)
    fatal = [f for f in failures if not (f.get("expected") or (skip_known and f["known"]))]
    summary = {
        "seed": seed, "seconds": seconds, "asan": asan, "rounds": rounds, "control_rounds": control,
        "mutations": mutations, "burst": burst, "bursts": bursts, "outcomes": dict(outcomes.most_common()), "labels": dict(labels.most_common()),
        "control_labels": dict(baseline.most_common()),
        "failures": failures,
        "known_findings": dict(Counter(f["known"] for f in failures if f["known"])),
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"mutate: {mutations} mutations" + (f" in {bursts} bursts of {burst}" if burst > 1 else "")
          + f" in {rounds} rounds ({control} control rounds), "
          f"{len(fatal)} failures" + (f" ({len(failures) - len(fatal)} more: documented outcomes"
                                      + (" or known findings" if skip_known else "") + ")"
                                      if len(failures) > len(fatal) else ""))
    for f in failures[:20]:
        print(f"  failure: round {f['round']}, {f['participant']}: {f['what']}"
              + (f" (known finding {f['known']})" if f["known"] else "")
              + (f" ({f['expected']})" if f.get("expected") else ""))
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more failures")
    if burst > 1:
        print(f"  outcomes per burst ({burst} writes into one object in one round):")
    for name in SEVERITY:
        print(f"  {name:15} {outcomes.get(name, 0)}")
    print("  by label: " + ", ".join(f"{k} {v}" for k, v in labels.most_common()))
    print(f"  control rounds ({3 * control} objects unmutated): "
          + ", ".join(f"{k} {v}" for k, v in baseline.most_common()))
    print(f"  summary: {OUT / 'summary.json'}, mutations: {OUT / 'mutations.jsonl'}")
    return 1 if fatal else 0


def collect(people: list[Participant], until: float, failures: list[dict[str, Any]], k: int
            ) -> dict[str, list[dict[str, Any]]]:
    """Every participant's report of round k; a crash, a hang or a
    sanitizer report becomes a failure (and an event of its object), and the
    process is started again."""
    reports: dict[str, list[dict[str, Any]]] = {}
    for p in people:
        report = p.read_line(until + HANG_SECONDS)
        problem = None
        if report is None:
            assert p.proc is not None
            hung = p.proc.poll() is None
            status = p.stop(dump=hung)
            problem = "hang" if hung else "crash" if status < 0 else "exit"
            report = {"events": {}, "ops": 0}
            report["events"][problem if problem != "exit" else "crash"] = [1, 0.0, 1e18]
        text = p.new_log()
        if any(mark in text for mark in SANITIZER_MARKS):
            report["events"]["sanitizer"] = [1, 0.0, 1e18]
            problem = problem or "sanitizer"
        for label, detail in report.get("detail", {}).items():
            if "foreign:" in label:
                failures.append({"round": k, "participant": p.label, "what": label, "detail": detail})
        if problem is not None:
            failures.append({"round": k, "participant": p.label, "what": problem, "status": p.proc.returncode
                             if p.proc else None, "log": text[-6000:]})
            p.start()
        reports.setdefault(p.kind, []).append(report)
    return reports


if __name__ == "__main__":
    sys.exit(main())
