"""``shmring stats``: every object's counters for a monitoring system."""

from __future__ import annotations

import json
import sys
import threading
from typing import TYPE_CHECKING

import click

from . import observe

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

_MISSING = "shmring: `shmring stats --prometheus/--serve` needs prometheus-client: pip install 'shmring[metrics]'"


@click.command("stats")
@click.option("--prometheus", "fmt", flag_value="prometheus", default=True,
              help="Print the metrics once, in the OpenMetrics text format (the default).")
@click.option("--json", "fmt", flag_value="json", help="Print every object's cumulative counters as JSON.")
@click.option("--serve", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve the metrics over HTTP at /metrics on PORT (0: any free port) until interrupted.")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to serve on.")
def stats_command(fmt: str, serve: int | None, bind: str) -> None:
    """The counters of every shmring object of this user, read from shared
    memory without a lock: for Prometheus (OpenMetrics text, once or served
    over HTTP) or as JSON.  Metric names: docs/OBSERVE.md."""
    if fmt == "json" and serve is not None:
        raise click.UsageError("--json and --serve cannot be combined: --serve serves the OpenMetrics text")
    if fmt == "json":
        click.echo(json.dumps([v.to_json() for v in observe.snapshot().objects], indent=2))
        return
    try:
        from . import metrics
    except ImportError:
        click.echo(_MISSING, err=True)
        sys.exit(1)
    if serve is None:
        click.echo(metrics.exposition(), nl=False)
        return
    _serve(metrics.registry(), bind, serve)


def _serve(registry: CollectorRegistry, bind: str, port: int) -> None:
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=bind, registry=registry)
    except OSError as exc:
        click.echo(f"shmring: cannot serve on {bind}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    click.echo(f"serving shmring metrics on http://{bind}:{server.server_port}/metrics (Ctrl-C to stop)", err=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(timeout=5)
