/*
 * shmring/base.h - what every other shmring header stands on: the feature
 * macros that must come before any system header, the compiler and atomic
 * checks, the static-assert macro, and the result codes of every shmring
 * function with shmring_strerror.
 *
 * Include "shmring.h" (all of shmring) or one of the headers of this folder;
 * each includes what it needs, this one first.
 */
#ifndef SHMRING_BASE_H
#define SHMRING_BASE_H

/* The POSIX and Linux declarations shmring needs (O_CLOEXEC, ftruncate,
 * posix_fallocate, clock_gettime, CLOCK_MONOTONIC, syscall, NAME_MAX...) are
 * hidden by a strict -std=c99/c11/c17 unless a feature-test macro asks for
 * them, and glibc reads those macros once, in <features.h>, when the first
 * libc header of the translation unit is included.  Defining
 * _DEFAULT_SOURCE here is enough when this header comes first; when a
 * program included <stdio.h> or <string.h> before it, <features.h> has
 * already decided, and a late #define changes nothing.  So, on glibc only,
 * when the features in force lack what we need, <features.h> is read again:
 * it starts by undefining every __USE_* macro ("a clean slate") and derives
 * them anew from the feature-test macros, now including _DEFAULT_SOURCE, so
 * every libc header included after this point declares the POSIX and Linux
 * API.  (The alternatives were worse: asking every user for -D_DEFAULT_SOURCE
 * is what the documented "include it after <stdio.h>" promise rules out, and
 * declaring the functions ourselves would clash with glibc's own declarations
 * and its 64-bit time_t redirections.)  Headers that the program included
 * before this one keep what they declared: what shmring needs from
 * <time.h> and <limits.h>, ISO C headers a program may well include first, is
 * supplied below if they hid it; a POSIX header (<unistd.h>, <fcntl.h>, ...)
 * included first under a strict -std= without a feature-test macro is
 * reported by an #error with the fix.  C++ compilers define _GNU_SOURCE, so
 * none of this happens there. */
#if !defined(_DEFAULT_SOURCE) && !defined(_GNU_SOURCE)
#define _DEFAULT_SOURCE 1
#endif
#if defined(__GLIBC__) && defined(_FEATURES_H) && (!defined(__USE_MISC) || !defined(__USE_XOPEN2K8))
#undef _FEATURES_H
#include <features.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#if defined(__GLIBC__) && !defined(O_CLOEXEC)
#error "shmring.h: a POSIX header (<fcntl.h>, <unistd.h>, ...) was included before it under a strict -std= without a feature-test macro; include shmring.h first, or compile with -D_DEFAULT_SOURCE"
#endif
#if !defined(NAME_MAX)
/* <limits.h> was included first under a strict -std=: take the kernel's. */
#include <linux/limits.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if !defined(CLOCK_MONOTONIC) && !defined(__cplusplus)
/* <time.h> was included first under a strict -std=, which hid its POSIX part.
 * The clock ids are the Linux ABI's; clock_gettime is declared as POSIX
 * does (only here, where glibc's own declaration was left out; a 32-bit
 * build with 64-bit time_t needs glibc's redirected one). */
#if defined(__USE_TIME_BITS64)
#error "shmring.h: include it before <time.h>, or compile with -D_DEFAULT_SOURCE"
#endif
#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
extern int clock_gettime(clockid_t clock_id, struct timespec *tp);
#endif

/* ------------------------------------------------------------------------ */
/* Portability helpers                                                       */
/* ------------------------------------------------------------------------ */

/* Compile-time assertions under every supported standard: C++11
 * static_assert, C11 _Static_assert, and for C99 a negative array size (in a
 * typedef named by __COUNTER__, unique across all the headers). */
#define SHMRING_CAT_(a, b) a##b
#define SHMRING_CAT(a, b) SHMRING_CAT_(a, b)
#if defined(__cplusplus)
#define SHMRING_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define SHMRING_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#else
#define SHMRING_STATIC_ASSERT(cond, msg) \
    typedef char SHMRING_CAT(shmring_static_assert_, __COUNTER__)[(cond) ? 1 : -1]
#endif

#if !defined(__GNUC__) && !defined(__clang__)
#error "shmring.h needs GCC or Clang (__atomic builtins)"
#endif

/* Only lock-free atomics are valid between processes: a lock-based fallback
 * would use a lock private to one process. */
#if __GCC_ATOMIC_LLONG_LOCK_FREE != 2 || __GCC_ATOMIC_INT_LOCK_FREE != 2
#error "shmring.h needs lock-free 32-bit and 64-bit atomics"
#endif

#define SHMRING_CACHE_LINE 64u

/* ------------------------------------------------------------------------ */
/* Results                                                                   */
/* ------------------------------------------------------------------------ */

/* What every shmring function returns (as an int): 0 for success; 1 to 11
 * why a segment cannot be used, or that a system call failed (errno says
 * why); 20 to 29 the outcomes of operations on a working object (would
 * block, closed, timed out, a lock's state...).  The values are part of the
 * API: the Python package maps them (src/shmring/_errors.py), and they
 * never change.  No shmring result is negative: the hooks of a sliced wait
 * (shmring/wait.h) may return negative values of their own. */
enum shmring_result {
    SHMRING_OK = 0,
    SHMRING_ERR_SYS = 1,       /* a system call failed; errno says why */
    SHMRING_ERR_FOREIGN = 2,   /* the object is not a shmring segment (bad magic) */
    SHMRING_ERR_NOT_READY = 3, /* empty or not yet published by its creator */
    SHMRING_ERR_TRUNCATED = 4, /* smaller than its header says it is */
    SHMRING_ERR_VERSION = 5,   /* a layout version this code does not speak */
    SHMRING_ERR_ABI = 6,       /* written by a different pointer size or byte order */
    SHMRING_ERR_CHECKSUM = 7,  /* header checksum mismatch: corrupted header */
    SHMRING_ERR_CORRUPT = 8,   /* header fields (or ring counters, records) inconsistent */
    SHMRING_ERR_OWNER = 9,     /* owned by another user */
    SHMRING_ERR_ARG = 10,      /* invalid argument (name, size, kind) */
    SHMRING_ERR_BUSY = 11,     /* held exclusively by another process for too long (being removed?) */

    SHMRING_AGAIN = 20,           /* nothing to read / no room now: wait and retry */
    SHMRING_CLOSED = 21,          /* the other end closed the channel */
    SHMRING_TOO_BIG = 22,         /* the message can never fit in this ring */
    SHMRING_TIMEOUT = 23,         /* a wait reached its deadline */
    SHMRING_ROLE_TAKEN = 24,      /* another live process (or handle) holds that end */
    SHMRING_PEER_GONE = 25,       /* the process at the other end died without closing */
    SHMRING_OWNER_DIED = 26,      /* lock granted, but its previous holder died holding it */
    SHMRING_NOT_RECOVERABLE = 27, /* a lock abandoned in an inconsistent state */
    SHMRING_NOT_OWNER = 28,       /* release of a lock this process does not hold */
    SHMRING_LAGGED = 29,          /* a topic subscriber fell behind an overwrite */
    SHMRING_GAP = 30              /* the next record of a topic is a gap marker (shmring/topic.h) */
};

static inline const char *shmring_strerror(int code)
{
    switch (code) {
    case SHMRING_OK: return "success";
    case SHMRING_ERR_SYS: return "system call failed";
    case SHMRING_ERR_FOREIGN: return "not a shmring segment (bad magic)";
    case SHMRING_ERR_NOT_READY: return "segment is empty or not yet initialised by its creator";
    case SHMRING_ERR_TRUNCATED: return "segment is smaller than its header says (truncated)";
    case SHMRING_ERR_VERSION: return "segment has an unsupported layout version";
    case SHMRING_ERR_ABI: return "segment was written with a different ABI (pointer size or byte order)";
    case SHMRING_ERR_CHECKSUM: return "segment header checksum mismatch (corrupted header)";
    case SHMRING_ERR_CORRUPT: return "segment header fields are inconsistent (corrupted header)";
    case SHMRING_ERR_OWNER: return "segment is owned by another user";
    case SHMRING_ERR_ARG: return "invalid argument";
    case SHMRING_ERR_BUSY:
        return "segment is locked exclusively by another process (being removed, or a tool holds it)";
    case SHMRING_AGAIN: return "would block: no message or no room now";
    case SHMRING_CLOSED: return "the other end closed the channel";
    case SHMRING_TOO_BIG: return "message too big";
    case SHMRING_TIMEOUT: return "timed out";
    case SHMRING_ROLE_TAKEN: return "that end of the channel is held by another live process";
    case SHMRING_PEER_GONE: return "the process at the other end died";
    case SHMRING_OWNER_DIED: return "the previous holder of the lock died holding it";
    case SHMRING_NOT_RECOVERABLE:
        return "the lock is not recoverable: a holder died and it was never marked consistent";
    case SHMRING_NOT_OWNER: return "the lock is not held by this process";
    case SHMRING_LAGGED: return "the subscriber fell behind: messages were overwritten";
    case SHMRING_GAP: return "messages were lost before they reached the topic (a gap marker)";
    default: return "unknown shmring error";
    }
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_BASE_H */
