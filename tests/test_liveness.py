"""Process identity and liveness (``_core.process_start_time`` and
``process_alive``), on which lock takeover and the lifetime of every object
rest: a live process is never declared dead (even when /proc cannot be
read), and a dead one stays dead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from shmring import _core


def test_liveness_when_proc_cannot_be_read() -> None:
    """With no file descriptor left, /proc cannot be read: a live process
    must not be declared dead (that would hand its lock to another)."""
    script = textwrap.dedent(
        """
        import os, resource
        from shmring import _core
        start = _core.process_start_time(os.getppid())
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        fds = []
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        print(_core.process_alive(os.getppid(), start))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "True", out.stderr


def test_dead_process_is_still_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = _core.process_start_time(proc.pid)
    proc.wait()
    assert start is not None
    assert _core.process_alive(proc.pid, start) is False
    assert _core.process_alive(os.getpid(), _core.process_start_time(os.getpid()) or 0) is True
