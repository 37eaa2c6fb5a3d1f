"""Finding F3 of the live mutation (docs/RELIABILITY.md, "Fuzzing").

A queue whose chain of overflow chunks says it holds chunks that do not
exist (its `ovf_tail` counter, payload offset 192, moved by a stray write)
makes put raise a bare OSError ("overflow chunk N is gone (removed by
hand?)", put_start in src/shmring/_core/queue_ops.c) instead of a shmring
error: a corrupted counter is reported as if somebody had removed a file.
(The recount after a dead holder, shmring_queue_recount, counts such chunks
as lost and goes on.)

Fixed on main by eeae8f6 ("an overflow chain naming a missing newest chunk
... reported as damage"), found there independently: put now raises
CorruptedError ("corrupted ovf_tail (its newest chunk does not exist)").
Kept as a check that it stays so.

    .venv/bin/python reliability/fuzz/findings/missing_chunk_raises_oserror.py
"""

import mmap
import os
import struct

import shmring

OVF_TAIL = 4096 + 192  # header page, then shmring_queue_ctrl.ovf_tail

q = shmring.Queue()
q.put_bytes(b"x")
fd = os.open(f"/dev/shm/{q.name}", os.O_RDWR)
with mmap.mmap(fd, 8192) as m:
    tail = struct.unpack_from("<Q", m, OVF_TAIL)[0]
    struct.pack_into("<Q", m, OVF_TAIL, tail + 5)  # five chunks nobody made
os.close(fd)
try:
    q.put_bytes(b"y", timeout=0.1)
    print("put passed")
except shmring.Error as exc:
    print("a shmring error (as it should be):", type(exc).__name__, exc)
except OSError as exc:
    print(f"finding F3: {type(exc).__name__} (not a shmring error): {exc}")
finally:
    q.close()
