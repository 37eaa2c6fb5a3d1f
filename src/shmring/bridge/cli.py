"""``shmring bridge``: carry shmring objects to and from other machines over
Zenoh (docs/BRIDGE.md).  Runs until SIGINT or SIGTERM, logging on stderr."""

from __future__ import annotations

import ctypes
import json
import logging
import signal
import sys
import threading
from typing import Any

import click

from . import MAX_SPIN_US, Bridge, BridgeError, load_config, parse_object

_LOG_FORMAT = "shmring bridge: %(message)s"
# glibc's mallopt parameters, and what the bridge's process sets them to:
# freed memory is handed back to the kernel only past 64 MiB at the top of
# the heap (128 KiB by default), and blocks up to 32 MiB come from the heap.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD, _MMAP_THRESHOLD = 64 << 20, 32 << 20


def _keep_freed_memory() -> None:
    """Keep the memory the bridge frees for its next messages.  A large
    message (64 KiB) crosses the bridge in buffers allocated and freed
    message by message (the exporter's copy out of the ring, Zenoh's, the
    importer's); with glibc's defaults the freed top of the heap goes back
    to the kernel, and the next messages fault their pages in again, tens
    of µs of CPU per 64 KiB message (docs/BENCHMARKS.md section 9).  Only
    in the bridge's own process (this command), never in a program that
    uses the API; elsewhere than glibc, nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def _options(export: tuple[str, ...], imports: tuple[str, ...], listen: tuple[str, ...], connect: tuple[str, ...],
             config: str | None, policy: str, capacity: int, trust_pickle: bool, window: int | None,
             lease_timeout: float | None, no_batch: bool = False, replay_bytes: int | None = None,
             spin_us: int | None = None) -> dict[str, Any]:
    """The bridge's arguments: the config file's, then the command line's added."""
    options: dict[str, Any] = {"listen": [], "connect": [], "export": [], "imports": [], "trust_pickle": False}
    if config is not None:
        options = load_config(config)
    options["listen"] += list(listen)
    options["connect"] += list(connect)
    options["export"] += [parse_object(o, policy, capacity) for o in export]
    options["imports"] += [parse_object(o, policy, capacity) for o in imports]
    options["trust_pickle"] = options["trust_pickle"] or trust_pickle
    if window is not None:
        options["window"] = window
    if lease_timeout is not None:
        options["lease_timeout"] = lease_timeout
    if no_batch:
        options["batch"] = False
    if replay_bytes is not None:
        options["replay_bytes"] = replay_bytes
    if spin_us is not None:
        options["spin_us"] = spin_us
    return options


@click.command("bridge")
@click.option("--export", "export", multiple=True, metavar="KIND:NAME",
              help="Send this local object's traffic to the network (topic:NAME, channel:NAME, queue:NAME).")
@click.option("--import", "imports", multiple=True, metavar="KIND:NAME",
              help="Publish what the network carries for this object into the local one.")
@click.option("--listen", multiple=True, metavar="ENDPOINT", help="Zenoh endpoint to listen on (tcp/0.0.0.0:7447).")
@click.option("--connect", multiple=True, metavar="ENDPOINT", help="Zenoh endpoint to connect to (tcp/10.0.0.2:7447).")
@click.option("--config", type=click.Path(dir_okay=False), help="JSON (or .toml) file of listen, connect, export, import.")
@click.option("--policy", type=click.Choice(["block", "overwrite"]), default="block", show_default=True,
              help="Policy of a topic the bridge has to create.")
@click.option("--capacity", type=click.IntRange(128), default=1 << 20, show_default=True,
              help="Ring bytes of a topic the bridge has to create.")
@click.option("--trust-pickle", is_flag=True, help="Publish pickled messages from peers (unpickling runs their code).")
@click.option("--window", type=click.IntRange(1), default=None, metavar="ITEMS",
              help="Items an imported queue is kept topped up to (default 256).")
@click.option("--lease-timeout", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
              help="Seconds before an exported queue item not acknowledged is sent again (default 10).")
@click.option("--no-batch", is_flag=True,
              help="Send one Zenoh sample per exported topic message (for plain Zenoh subscribers), not batches.")
@click.option("--replay-bytes", type=click.IntRange(1), default=None, metavar="BYTES",
              help="Bytes an exported channel keeps until acknowledged, to send again after a link failure "
                   "(default 16 MiB).")
@click.option("--spin-us", type=click.IntRange(0, MAX_SPIN_US), default=None, metavar="MICROSECONDS",
              help="How long an exported topic's reader polls before it sleeps: less latency, that much CPU "
                   "after each message (default: the topic's own, 20 µs).")
@click.option("--status-interval", type=click.FloatRange(0), default=0, show_default=True, metavar="SECONDS",
              help="Log every object's counters this often (0: only when the bridge stops).")
def bridge_command(export: tuple[str, ...], imports: tuple[str, ...], listen: tuple[str, ...],
                   connect: tuple[str, ...], config: str | None, policy: str, capacity: int,
                   trust_pickle: bool, window: int | None, lease_timeout: float | None,
                   no_batch: bool, replay_bytes: int | None, spin_us: int | None, status_interval: float) -> None:
    """Bridge topics, channels and queues between machines over Zenoh: one bridge per host, e.g.
    `--export topic:prices --connect tcp/10.0.0.2:7447` on one and
    `--import topic:prices --listen tcp/0.0.0.0:7447` on the other.
    Gaps (messages lost on the way) are logged with their count.  A queue
    is pulled by its importers: an item is leased, and sent again unless
    acknowledged within --lease-timeout (at least once).  A channel is
    sent again from a replay buffer after a link failure; a gap it cannot
    fill closes the remote channel (logged with its count).  Needs
    `pip install shmring[zenoh]`."""
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT, stream=sys.stderr)
    _keep_freed_memory()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        bridge = Bridge(**_options(export, imports, listen, connect, config, policy, capacity, trust_pickle,
                                   window, lease_timeout, no_batch, replay_bytes, spin_us)).start()
    except (BridgeError, ValueError, OSError) as e:
        click.echo(f"shmring: {e}", err=True)
        sys.exit(1)
    log = logging.getLogger("shmring.bridge")
    try:
        while not stop.wait(status_interval or None):
            log.info("status %s", json.dumps(bridge.status(), sort_keys=True))
    finally:
        status = bridge.status()
        bridge.close()
        log.info("stopped; status %s", json.dumps(status, sort_keys=True))
