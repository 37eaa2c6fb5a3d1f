"""Bridge shmring objects between machines over Zenoh (docs/BRIDGE.md).

A :class:`Bridge` is one Zenoh session that exports local objects to the
network and imports remote ones into local objects; ``shmring bridge`` runs
one.  Topics, channels and queues are bridged.  Needs the ``zenoh`` extra
(``pip install shmring[zenoh]``); importing this module does not."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..segment import validate_name
from .channel import DEFAULT_REPLAY_BYTES, ChannelExporter, ChannelImporter
from .queue import DEFAULT_LEASE_S, DEFAULT_WINDOW, QueueExporter, QueueImporter
from .status import StatusPublisher
from .topic import ObjectSpec, TopicExporter, TopicImporter
from .wire import Header, topic_key

if TYPE_CHECKING:
    import zenoh

__all__ = ["Bridge", "BridgeError", "ObjectSpec", "Header", "parse_object", "topic_key", "zenoh_config"]

log = logging.getLogger("shmring.bridge")
KINDS = ("topic", "channel", "queue")
POLICIES = ("block", "overwrite")
# The longest poll an exporter may be given (µs): a topic's own limit.
MAX_SPIN_US = 50_000


class BridgeError(Exception):
    """Bad bridge options, or Zenoh missing: the message is one line."""


def require_zenoh() -> Any:
    try:
        import zenoh
    except ImportError:
        raise BridgeError("the bridge needs Zenoh: pip install shmring[zenoh]") from None
    return zenoh


def parse_object(text: str, policy: str = "block", capacity: int = 1 << 20) -> ObjectSpec:
    """``"topic:NAME"``, ``"channel:NAME"`` or ``"queue:NAME"`` -> an :class:`ObjectSpec`."""
    kind, sep, name = text.partition(":")
    if not sep or kind not in ("topic", "channel", "queue"):
        raise BridgeError(f"object {text!r}: expected KIND:NAME with KIND one of topic, channel, queue")
    if policy not in POLICIES:
        raise BridgeError(f"object {text!r}: policy must be block or overwrite, not {policy!r}")
    try:
        name = validate_name(name)
    except ValueError as e:
        raise BridgeError(f"object {text!r}: {e}") from None
    return ObjectSpec(kind, name, policy, capacity)


def _spec_from_config(entry: Any) -> ObjectSpec:
    if isinstance(entry, str):
        return parse_object(entry)
    if isinstance(entry, dict) and isinstance(entry.get("object"), str):
        return parse_object(entry["object"], str(entry.get("policy", "block")), int(entry.get("capacity", 1 << 20)))
    raise BridgeError(f"config: an object is \"KIND:NAME\" or {{\"object\": ..., \"policy\": ..., \"capacity\": ...}}, not {entry!r}")


def load_config(path: str) -> dict[str, Any]:
    """A JSON (or, from Python 3.11, TOML: a name ending in .toml) file of
    listen, connect, export and import lists."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".toml"):
            import tomllib  # type: ignore[import-not-found, unused-ignore]

            data = tomllib.loads(raw.decode())
        else:
            data = json.loads(raw)
    except (OSError, ValueError, ImportError) as e:
        raise BridgeError(f"config {path}: {e}") from None
    if not isinstance(data, dict):
        raise BridgeError(f"config {path}: expected an object of listen, connect, export, import")
    unknown = set(data) - {"listen", "connect", "export", "import", "trust_pickle", "window", "lease_timeout",
                           "batch", "replay_bytes", "spin_us"}
    if unknown:
        raise BridgeError(f"config {path}: unknown key(s) {sorted(unknown)}")
    return {
        "listen": [str(e) for e in data.get("listen", [])],
        "connect": [str(e) for e in data.get("connect", [])],
        "export": [_spec_from_config(e) for e in data.get("export", [])],
        "imports": [_spec_from_config(e) for e in data.get("import", [])],
        "trust_pickle": bool(data.get("trust_pickle", False)),
        "window": int(data.get("window", DEFAULT_WINDOW)),
        "lease_timeout": float(data.get("lease_timeout", DEFAULT_LEASE_S)),
        "batch": bool(data.get("batch", True)),
        "replay_bytes": int(data.get("replay_bytes", DEFAULT_REPLAY_BYTES)),
        "spin_us": None if data.get("spin_us") is None else int(data["spin_us"]),
    }


def zenoh_config(listen: Sequence[str], connect: Sequence[str]) -> zenoh.Config:
    """A Zenoh peer that listens on and connects to the endpoints given,
    and to nothing else (no multicast scouting)."""
    zenoh = require_zenoh()
    config = zenoh.Config()
    config.insert_json5("mode", '"peer"')
    config.insert_json5("scouting/multicast/enabled", "false")
    try:
        config.insert_json5("listen/endpoints", json.dumps(list(listen)))
        config.insert_json5("connect/endpoints", json.dumps(list(connect)))
    except zenoh.ZError as e:
        raise BridgeError(f"bad endpoint: {e}") from None
    return config  # type: ignore[no-any-return]


class Bridge:
    """One Zenoh session carrying ``export`` objects out and ``imports``
    in.  ``start()`` opens it and starts a thread per object; ``status()``
    says what each carried and lost; ``close()`` ends it all.  ``batch``:
    exported topics send several messages per Zenoh sample when several
    are waiting (False: one sample per message, for plain Zenoh readers).
    ``publish_status``: keep the status in a shared-memory segment for
    ``shmring ls`` and ``shmring inspect`` (docs/BRIDGE.md "Status").
    ``spin_us``: how long an exported topic's reader polls its ring before
    it sleeps (None: the topic's own setting, 20 µs unless made otherwise):
    a message that comes within it is sent without a thread wake-up, at the
    price of that much CPU after each message (docs/BRIDGE.md)."""

    def __init__(self, listen: Iterable[str] = (), connect: Iterable[str] = (), export: Iterable[ObjectSpec] = (),
                 imports: Iterable[ObjectSpec] = (), trust_pickle: bool = False, window: int = DEFAULT_WINDOW,
                 lease_timeout: float = DEFAULT_LEASE_S, batch: bool = True,
                 replay_bytes: int = DEFAULT_REPLAY_BYTES, publish_status: bool = True,
                 spin_us: int | None = None) -> None:
        self.listen, self.connect = list(listen), list(connect)
        self.export, self.imports = list(export), list(imports)
        both = {(s.kind, s.name) for s in self.export} & {(s.kind, s.name) for s in self.imports}
        if both:
            kind, name = sorted(both)[0]
            raise BridgeError(f"{kind}:{name} is both exported and imported (it would echo its own messages)")
        if not (self.export or self.imports):
            raise BridgeError("nothing to bridge: name an object with --export or --import")
        if window < 1 or not lease_timeout > 0:
            raise BridgeError("a queue's window must be at least 1 item and its lease timeout above 0 s")
        if replay_bytes < 1:
            raise BridgeError("a channel's replay buffer must hold at least 1 byte")
        if spin_us is not None and not 0 <= spin_us <= MAX_SPIN_US:
            raise BridgeError(f"an exporter's spin must be between 0 and {MAX_SPIN_US} µs, not {spin_us}")
        self.spin_us = spin_us
        self.trust_pickle = trust_pickle
        self.batch = batch
        self.replay_bytes = replay_bytes
        self.window, self.lease_timeout = window, lease_timeout
        self.publish_status = publish_status
        self._session: zenoh.Session | None = None
        self._ends: list[Any] = []
        self._status: StatusPublisher | None = None

    def start(self) -> Bridge:
        zenoh = require_zenoh()
        config = zenoh_config(self.listen, self.connect)
        try:
            self._session = zenoh.open(config)
        except zenoh.ZError as e:
            raise BridgeError(f"cannot open the Zenoh session: {e}") from None
        try:
            for spec in self.imports:
                self._ends.append(self._importer(self._session, spec))
            for spec in self.export:
                self._ends.append(self._exporter(self._session, spec))
        except BaseException:
            self.close()
            raise
        for end in self._ends:
            end.start()
        if self.publish_status:
            self._publish_status()
        log.info("bridge up: listen %s, connect %s", self.listen or "-", self.connect or "-")
        return self

    def _publish_status(self) -> None:
        header = {"pid": os.getpid(), "listen": self.listen, "connect": self.connect}
        try:
            self._status = StatusPublisher(self.status, header, len(self._ends))
        except OSError as e:  # no room in /dev/shm: the bridge works without it
            log.warning("bridge: no status segment (%s); shmring ls will not show this bridge", e)
            return
        self._status.start()
        log.info("bridge: status in segment %s", self._status.writer.name)

    @property
    def status_segment(self) -> str | None:
        """The name of the segment the status is published in (None: none)."""
        return None if self._status is None else self._status.writer.name

    def _importer(self, session: zenoh.Session, spec: ObjectSpec) -> Any:
        if spec.kind == "queue":
            return QueueImporter(session, spec, self.window, self.trust_pickle)
        if spec.kind == "channel":
            return ChannelImporter(session, spec)
        return TopicImporter(session, spec, self.trust_pickle)

    def _exporter(self, session: zenoh.Session, spec: ObjectSpec) -> Any:
        if spec.kind == "queue":
            return QueueExporter(session, spec, self.lease_timeout)
        if spec.kind == "channel":
            return ChannelExporter(session, spec, self.replay_bytes)
        return TopicExporter(session, spec, self.batch, None if self.spin_us is None else self.spin_us * 1000)

    def status(self) -> dict[str, Any]:
        """Per object (``"topic:NAME"``): the counters of its exporter or importer."""
        return {f"{e.spec.kind}:{e.spec.name}": e.status() for e in self._ends}

    def close(self) -> None:
        if self._status is not None:  # first: it reads the objects' status
            self._status.close()
            self._status = None
        # The session first: a put waiting for the network and a recv
        # waiting for a sample both return once it is closed.
        if self._session is not None:
            self._session.close()  # type: ignore[no-untyped-call]
            self._session = None
        for end in self._ends:
            end.close()
        self._ends.clear()

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
