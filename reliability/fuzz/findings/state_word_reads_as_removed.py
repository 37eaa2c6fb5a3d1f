"""Finding F2 of the live mutation (docs/RELIABILITY.md, "Fuzzing").

The segment header's `state` word (offset 72, one of the mutable fields the
checksum does not cover) is read by every attach: any value but LIVE (0)
makes the attach fail as for a segment its last user removed
(shmring_segment_map_checked_ in include/shmring/segment.h: SHMRING_ERR_SYS
with errno ENOENT), which Python raises as FileNotFoundError ("no shmring
segment ...: it was never made, or every process using it has left"), not
as a shmring error.  The segment is alive and in use meanwhile, and a value
no remover writes (2 and up) is taken as REMOVED rather than refused as
corrupt.

Fixed by d1d8221 for the values no remover writes: a state above 1 is
refused as corrupt (CorruptedError), which this script now prints.  A state
of exactly 1 (REMOVED) still makes attaching fail as after a removal, by
design (a stray write of that value cannot be told from a removal).

    .venv/bin/python reliability/fuzz/findings/state_word_reads_as_removed.py
"""

import mmap
import os

import shmring

ch = shmring.Channel.create(capacity=4096)  # its creator stays attached throughout
fd = os.open(f"/dev/shm/{ch.name}", os.O_RDWR)
with mmap.mmap(fd, 4096) as m:
    m[72:76] = (0xE0D40C5E).to_bytes(4, "little")  # a stray write: not REMOVED (1), not LIVE (0)
os.close(fd)
try:
    shmring.Channel.open(ch.name)
except shmring.Error as exc:
    print("a shmring error (as it should be):", type(exc).__name__, exc)
except OSError as exc:
    print(f"finding F2: {type(exc).__name__} (not a shmring error) for a live segment: {exc}")
finally:
    ch.close()  # the last user leaves: the segment goes
