/*
 * shmring/value.h - the value encoding of a queue item (record tag
 * SHMRING_REC_VALUE, 'V'): the common immutable Python values (None,
 * booleans, 64-bit integers, floats, bytes, str and tuples of these) in a
 * compact form that is much cheaper to write and read than a pickle.  A
 * queue without dumps/loads of its own writes an item so when the whole
 * item is made of these (exact types: a subclass, a larger int or a deeper
 * tuple is pickled as before); docs/PROTOCOL.md section 5.2.
 *
 * A record's payload is exactly one value:
 *
 *   'N'                         None
 *   'T' / 'F'                   True / False
 *   'i' int64                   an int in [-2**63, 2**63)
 *   'd' float64                 a float (IEEE 754 binary64, every bit kept)
 *   'b' u32 n, n bytes          bytes
 *   's' u32 n, n bytes          str, as UTF-8 (strict: no surrogates)
 *   't' u32 n, n values         a tuple, nested at most
 *                               SHMRING_VALUE_MAX_DEPTH tuples deep
 *
 * Integers in native byte order, no alignment (read with memcpy).  Plain
 * bytes in a record: no atomics.  A reader checks every length against
 * what is left before it uses it (shmring_value_next).
 */
#ifndef SHMRING_VALUE_H
#define SHMRING_VALUE_H

#include "base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHMRING_VALUE_MAX_DEPTH 16u /* tuples inside tuples, the outermost included */

/* One value read from an encoding: its kind letter and what it holds. */
typedef struct shmring_value {
    char kind;                 /* 'N', 'T', 'F', 'i', 'd', 'b', 's' or 't' */
    int64_t i;                 /* 'i' */
    double d;                  /* 'd' */
    const unsigned char *data; /* 'b', 's': the bytes */
    uint32_t n;                /* 'b', 's': their count; 't': the tuple's length */
} shmring_value;

/* Read the value at *p (before `end`) into *v and move *p past it: past the
 * whole of a scalar, bytes or str, past only the header of a tuple (its n
 * values follow).  SHMRING_OK, or SHMRING_ERR_CORRUPT for an unknown kind
 * or a length that runs past `end` (a tuple's n is checked against the
 * bytes left: each of its values takes one at least). */
static inline int shmring_value_next(const unsigned char **p, const unsigned char *end, shmring_value *v)
{
    const unsigned char *q = *p;
    uint64_t left = (uint64_t)(end - q);
    memset(v, 0, sizeof *v);
    if (left < 1)
        return SHMRING_ERR_CORRUPT;
    v->kind = (char)*q++;
    left--;
    switch (v->kind) {
    case 'N':
    case 'T':
    case 'F':
        break;
    case 'i':
    case 'd':
        if (left < 8)
            return SHMRING_ERR_CORRUPT;
        if (v->kind == 'i')
            memcpy(&v->i, q, 8);
        else
            memcpy(&v->d, q, 8);
        q += 8;
        break;
    case 'b':
    case 's':
    case 't':
        if (left < 4)
            return SHMRING_ERR_CORRUPT;
        memcpy(&v->n, q, 4);
        q += 4;
        left -= 4;
        if (v->n > left)
            return SHMRING_ERR_CORRUPT; /* bytes: too long; tuple: more values than bytes left */
        if (v->kind != 't') {
            v->data = q;
            q += v->n;
        }
        break;
    default:
        return SHMRING_ERR_CORRUPT;
    }
    *p = q;
    return SHMRING_OK;
}

/* Check that the `len` bytes at `payload` are exactly one value, tuples
 * nested at most SHMRING_VALUE_MAX_DEPTH deep (UTF-8 is not checked here:
 * the reader that makes a str checks it).  SHMRING_OK or
 * SHMRING_ERR_CORRUPT. */
static inline int shmring_value_check(const void *payload, uint64_t len)
{
    const unsigned char *p = (const unsigned char *)payload, *end = p + len;
    uint32_t pending[SHMRING_VALUE_MAX_DEPTH]; /* values still to read in each open tuple */
    unsigned depth = 0;
    shmring_value v;
    do {
        while (depth > 0 && pending[depth - 1] == 0)
            depth--; /* that tuple is complete */
        if (depth > 0)
            pending[depth - 1]--;
        if (shmring_value_next(&p, end, &v) != SHMRING_OK)
            return SHMRING_ERR_CORRUPT;
        if (v.kind == 't') {
            if (depth == SHMRING_VALUE_MAX_DEPTH)
                return SHMRING_ERR_CORRUPT;
            pending[depth++] = v.n;
        }
        while (depth > 0 && pending[depth - 1] == 0)
            depth--;
    } while (depth > 0);
    return p == end ? SHMRING_OK : SHMRING_ERR_CORRUPT;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_VALUE_H */
