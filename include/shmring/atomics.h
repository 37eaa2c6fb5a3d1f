/*
 * shmring/atomics.h - the memory-order vocabulary of shmring.
 *
 * Every atomic access in the shmring headers goes through one of these
 * names, so that each site says its order in its name, and the comment next
 * to it says what it pairs with ([S1] ... [S11] channel and segments,
 * [Q1] ... queue, [T1] ... topic, [Y1] ... sync primitives: the same label on
 * both sides of a pair).  They are implemented once, here, over the
 * GCC/Clang __atomic builtins, which work on plain integer fields (the
 * layout stays plain structs of uint32_t/uint64_t, shared with C++ and
 * Python) and are type-generic: each macro takes a pointer to a 32-bit or
 * 64-bit integer.
 *
 *   shmring_load_ORDER(p)              ORDER: relaxed, acquire, seq_cst
 *   shmring_store_ORDER(p, v)          ORDER: relaxed, release, seq_cst
 *   shmring_fetch_add_ORDER(p, v)      returns the old value; ORDER: relaxed,
 *   shmring_fetch_sub_ORDER(p, v)        release, acq_rel, seq_cst
 *   shmring_exchange_ORDER(p, v)       returns the old value
 *   shmring_cas_ORDER(p, &expected, desired)
 *   shmring_cas_weak_ORDER(p, &expected, desired)
 *       compare-and-swap, strong or weak (may fail spuriously: in loops
 *       only).  1 when swapped; else 0 with *expected set to the current
 *       value.  ORDER is the order on success; the failed load is relaxed,
 *       except after seq_cst (seq_cst), unless the name ends with the
 *       failure order: shmring_cas_acq_rel_acquire (acquire on failure),
 *       shmring_cas_weak_seq_cst_relaxed (relaxed on failure).
 *   shmring_fence_acquire() / _release() / _seq_cst()
 *                                      a thread fence (a CPU barrier)
 *   shmring_compiler_barrier()         orders the compiler only (a signal
 *                                      fence): the light half of the
 *                                      asymmetric barrier (shmring/os.h)
 */
#ifndef SHMRING_ATOMICS_H
#define SHMRING_ATOMICS_H

#include "base.h"

#define shmring_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define shmring_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define shmring_load_seq_cst(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)

#define shmring_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define shmring_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define shmring_store_seq_cst(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

#define shmring_fetch_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define shmring_fetch_add_release(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELEASE)
#define shmring_fetch_add_acq_rel(p, v) __atomic_fetch_add((p), (v), __ATOMIC_ACQ_REL)
#define shmring_fetch_add_seq_cst(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)

#define shmring_fetch_sub_relaxed(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELAXED)
#define shmring_fetch_sub_release(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELEASE)
#define shmring_fetch_sub_acq_rel(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_ACQ_REL)
#define shmring_fetch_sub_seq_cst(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_SEQ_CST)

#define shmring_exchange_acq_rel(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#define shmring_exchange_seq_cst(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)

#define shmring_cas_relaxed(p, e, d) \
    __atomic_compare_exchange_n((p), (e), (d), 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
#define shmring_cas_acquire(p, e, d) \
    __atomic_compare_exchange_n((p), (e), (d), 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)
#define shmring_cas_release(p, e, d) \
    __atomic_compare_exchange_n((p), (e), (d), 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)
#define shmring_cas_acq_rel(p, e, d) \
    __atomic_compare_exchange_n((p), (e), (d), 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)
#define shmring_cas_acq_rel_acquire(p, e, d) \
    __atomic_compare_exchange_n((p), (e), (d), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
#define shmring_cas_seq_cst(p, e, d) \
    __atomic_compare_exchange_n((p), (e), (d), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)

#define shmring_cas_weak_relaxed(p, e, d) \
    __atomic_compare_exchange_n((p), (e), (d), 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
#define shmring_cas_weak_acquire(p, e, d) \
    __atomic_compare_exchange_n((p), (e), (d), 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)
#define shmring_cas_weak_seq_cst(p, e, d) \
    __atomic_compare_exchange_n((p), (e), (d), 1, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)
#define shmring_cas_weak_seq_cst_relaxed(p, e, d) \
    __atomic_compare_exchange_n((p), (e), (d), 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)

#define shmring_fence_acquire() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define shmring_fence_release() __atomic_thread_fence(__ATOMIC_RELEASE)
#define shmring_fence_seq_cst() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define shmring_compiler_barrier() __atomic_signal_fence(__ATOMIC_SEQ_CST)

#endif /* SHMRING_ATOMICS_H */
