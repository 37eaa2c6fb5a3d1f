/*
 * shmring.h - the shmring shared-memory protocol, header-only.
 *
 * The binary layout of every shmring segment and every operation that
 * touches shared memory, so that the CPython extension, C programs and C++
 * programs speak exactly the same protocol.  docs/PROTOCOL.md describes the
 * same layout in prose; the static asserts in these headers are the
 * authority.
 *
 * This file includes all of it; each part is a short header of its own in
 * shmring/, which includes what it needs and may be included alone:
 *
 *   shmring/base.h          feature macros, compiler checks, results, strerror
 *   shmring/atomics.h       the memory-order vocabulary (load_acquire, ...)
 *   shmring/os.h            process identity and tokens, clocks, futex, barriers
 *   shmring/wait.h          the one sliced wait every blocking call uses
 *   shmring/watch.h         waiting outside the calls: one thread, many futex words
 *   shmring/segment.h       the segment header, roster, leases; create, attach
 *   shmring/record.h        the record header and tags shared by the rings
 *   shmring/value.h         the value encoding of queue items (tag 'V')
 *   shmring/oob.h           a queue record's stream and out-of-band buffers (tag 'M')
 *   shmring/sync.h          semaphore, spin lock, robust mutex, event, condition
 *   shmring/siphash.h       SipHash-2-4, the keyed hash of the chunks' names
 *   shmring/channel.h       SPSC channel: control block, ends, ring steps
 *   shmring/channel_wait.h  channel waits; blocking send/recv for C and C++
 *   shmring/queue.h         MPMC queue: ring, counters, overflow chunks, recount
 *   shmring/queue_wait.h    blocking put/get for C and C++
 *   shmring/lifetime.h      leaving and removing segments; tools (in use? gc)
 *   shmring/topic.h         broadcast topic: publish, subscribe, read
 *   shmring/array.h         the array message's header (dtype, shape, order)
 *
 * Requirements: C99 or C++11 and later, GCC or Clang (__atomic builtins),
 * Linux (futex, /proc).  Under a strict -std=c99/c11/c17 it may come first or
 * after any ISO C header (<stdio.h>, <string.h>, <time.h>...); a POSIX header
 * included before it then needs -D_DEFAULT_SOURCE (see shmring/base.h).
 *
 * Conventions
 * - Functions return 0 on success.  System failures return SHMRING_ERR_SYS
 *   with errno set; other failures and outcomes return one of the positive
 *   codes of enum shmring_result (shmring/base.h; see shmring_strerror).
 * - Everything read from shared memory is untrusted: another process can
 *   write anything into the mapping, so every field is validated before it
 *   is used to index memory.
 * - Every atomic names its memory order (shmring/atomics.h) and, in a
 *   comment, the operation it pairs with, using labels of the form [S1].
 * - Names ending in an underscore are internal steps (of a sliced wait),
 *   not API.
 */
#ifndef SHMRING_H
#define SHMRING_H

#include "shmring/base.h"
#include "shmring/atomics.h"
#include "shmring/os.h"
#include "shmring/wait.h"
#include "shmring/watch.h"
#include "shmring/segment.h"
#include "shmring/record.h"
#include "shmring/copy.h"
#include "shmring/value.h"
#include "shmring/oob.h"
#include "shmring/sync.h"
#include "shmring/siphash.h"
#include "shmring/channel.h"
#include "shmring/channel_wait.h"
#include "shmring/queue.h"
#include "shmring/queue_wait.h"
#include "shmring/lifetime.h"
#include "shmring/topic.h"
#include "shmring/array.h"

#endif /* SHMRING_H */
