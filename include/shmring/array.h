/*
 * shmring/array.h - the array message: an n-dimensional array (numpy's
 * model: a dtype, a shape, C or Fortran order) in one message of a channel
 * or a topic, as Channel.send_array / recv_array write and read it
 * (docs/PROTOCOL.md section 7).  Plain bytes in a message: no atomics.
 *
 *   offset  size       field
 *   0       4          magic "SHNA"
 *   4       1          version (1)
 *   5       1          ndim, 0 to 32
 *   6       1          order: 'C' (row-major) or 'F' (column-major)
 *   7       1          0
 *   8       8          typestr: numpy's array-interface type string, ASCII,
 *                      NUL-padded ("<f4", "|u1", "<M8[ns]", "<U5", ...)
 *   16      8          data offset: shmring_array_data_offset(ndim)
 *   24      8          nbytes: the product of the shape times the itemsize
 *   32      8 * ndim   shape
 *   ...                zeros up to the data offset (a multiple of 16)
 *   data    nbytes     the elements, in the order named
 *
 * Integers in native byte order, as everywhere in shmring.  The message is
 * exactly data offset + nbytes bytes long.  A reader checks every field
 * against the others and against the message's length before it uses any
 * (shmring_array_check): the message came through shared memory.
 */
#ifndef SHMRING_ARRAY_H
#define SHMRING_ARRAY_H

#include "base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHMRING_ARRAY_VERSION 1u
#define SHMRING_ARRAY_MAX_NDIM 32u
#define SHMRING_ARRAY_ALIGN 16u /* the data starts at a multiple of this */

typedef struct shmring_array_header {
    char magic[4];       /* "SHNA" */
    uint8_t version;     /* SHMRING_ARRAY_VERSION */
    uint8_t ndim;        /* <= SHMRING_ARRAY_MAX_NDIM */
    uint8_t order;       /* 'C' or 'F' */
    uint8_t reserved;    /* 0 */
    char typestr[8];     /* NUL-padded */
    uint64_t data_offset;
    uint64_t nbytes;
    /* uint64_t shape[ndim] follows */
} shmring_array_header;
SHMRING_STATIC_ASSERT(sizeof(shmring_array_header) == 32, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_array_header, typestr) == 8, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_array_header, data_offset) == 16, "layout");
SHMRING_STATIC_ASSERT(offsetof(shmring_array_header, nbytes) == 24, "layout");

/* Where the elements start in the message of an `ndim`-dimensional array. */
static inline uint64_t shmring_array_data_offset(unsigned ndim)
{
    uint64_t end = sizeof(shmring_array_header) + 8u * (uint64_t)ndim;
    return (end + SHMRING_ARRAY_ALIGN - 1u) / SHMRING_ARRAY_ALIGN * SHMRING_ARRAY_ALIGN;
}

/* The bytes of one element of the type string `ts` (up to 8 characters, NUL
 * padded): a byte-order character ('<', '>', '|' or '='), a kind letter, a
 * size; 'U' strings count characters of 4 bytes; datetimes ('M', 'm') may
 * end in a "[unit]" of letters and digits ("[ns]", "[D]", "[2s]").  0 for a type string this reader does not take. */
static inline uint64_t shmring_array_itemsize(const char ts[8])
{
    uint64_t n = 0;
    unsigned i = 2, digits = 0;
    char kind;
    if (ts[0] != '<' && ts[0] != '>' && ts[0] != '|' && ts[0] != '=')
        return 0;
    kind = ts[1];
    if (kind != 'b' && kind != 'i' && kind != 'u' && kind != 'f' && kind != 'c' && kind != 'm' && kind != 'M' &&
        kind != 'S' && kind != 'U')
        return 0;
    for (; i < 8 && ts[i] >= '0' && ts[i] <= '9'; i++, digits++)
        n = n * 10u + (uint64_t)(ts[i] - '0'); /* at most 6 digits: no overflow */
    if (digits == 0 || n == 0)
        return 0;
    if (i < 8 && ts[i] == '[') {
        if (kind != 'm' && kind != 'M')
            return 0;
        for (i++; i < 8 && ts[i] != ']'; i++) /* a unit, maybe with a multiple: [ns], [D], [2s] */
            if (!((ts[i] >= 'a' && ts[i] <= 'z') || (ts[i] >= 'A' && ts[i] <= 'Z') || (ts[i] >= '0' && ts[i] <= '9')))
                return 0;
        if (i == 8)
            return 0;
        i++;
    }
    for (; i < 8; i++)
        if (ts[i] != '\0')
            return 0;
    return kind == 'U' ? n * 4u : n;
}

/* The bytes of an array of `ndim` dimensions `shape` and elements of
 * `itemsize` bytes, into *nbytes: SHMRING_OK, or SHMRING_ERR_ARG when a
 * dimension, or the product of the item size and the non-zero dimensions,
 * exceeds INT64_MAX, the largest an array index (numpy's npy_intp) holds
 * (numpy refuses those shapes even when a zero dimension empties them). */
static inline int shmring_array_nbytes(uint64_t itemsize, unsigned ndim, const uint64_t *shape, uint64_t *nbytes)
{
    uint64_t total = itemsize;
    int empty = 0;
    unsigned i;
    for (i = 0; i < ndim; i++) {
        if (shape[i] > (uint64_t)INT64_MAX)
            return SHMRING_ERR_ARG;
        if (shape[i] == 0)
            empty = 1;
        else if (total > (uint64_t)INT64_MAX / shape[i])
            return SHMRING_ERR_ARG;
        else
            total *= shape[i];
    }
    *nbytes = empty ? 0 : total;
    return SHMRING_OK;
}

/* Check the array message of `len` bytes at `msg` (untrusted: read with
 * memcpy, any alignment) and copy out its header and shape (`shape` holds
 * SHMRING_ARRAY_MAX_NDIM entries).  SHMRING_OK, or SHMRING_ERR_CORRUPT when
 * a field is impossible or the fields do not add up to `len`. */
static inline int shmring_array_check(const void *msg, uint64_t len, shmring_array_header *h, uint64_t *shape)
{
    const unsigned char *p = (const unsigned char *)msg;
    uint64_t itemsize, total;
    if (len < sizeof *h)
        return SHMRING_ERR_CORRUPT;
    memcpy(h, p, sizeof *h);
    if (memcmp(h->magic, "SHNA", 4) != 0 || h->version != SHMRING_ARRAY_VERSION ||
        h->ndim > SHMRING_ARRAY_MAX_NDIM || (h->order != 'C' && h->order != 'F') || h->reserved != 0)
        return SHMRING_ERR_CORRUPT;
    if (h->data_offset != shmring_array_data_offset(h->ndim) || h->data_offset > len ||
        h->nbytes != len - h->data_offset)
        return SHMRING_ERR_CORRUPT;
    itemsize = shmring_array_itemsize(h->typestr);
    if (itemsize == 0)
        return SHMRING_ERR_CORRUPT;
    memcpy(shape, p + sizeof *h, 8u * (size_t)h->ndim);
    return shmring_array_nbytes(itemsize, h->ndim, shape, &total) == SHMRING_OK && total == h->nbytes
               ? SHMRING_OK
               : SHMRING_ERR_CORRUPT;
}

/* Write the header of an array message at `dst` (the first
 * shmring_array_data_offset(ndim) bytes of a message of that plus `nbytes`
 * bytes): `typestr` as shmring_array_itemsize takes it, `order` 'C' or 'F'.
 * SHMRING_OK, or SHMRING_ERR_ARG when the arguments do not add up. */
static inline int shmring_array_write_header(void *dst, const char *typestr, char order, unsigned ndim,
                                             const uint64_t *shape)
{
    shmring_array_header h;
    uint64_t total;
    size_t n = strlen(typestr);
    if (n > sizeof h.typestr || ndim > SHMRING_ARRAY_MAX_NDIM || (order != 'C' && order != 'F'))
        return SHMRING_ERR_ARG;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, "SHNA", 4);
    memcpy(h.typestr, typestr, n);
    total = shmring_array_itemsize(h.typestr);
    if (total == 0 || shmring_array_nbytes(total, ndim, shape, &total) != SHMRING_OK)
        return SHMRING_ERR_ARG;
    h.version = (uint8_t)SHMRING_ARRAY_VERSION;
    h.ndim = (uint8_t)ndim;
    h.order = (uint8_t)order;
    h.data_offset = shmring_array_data_offset(ndim);
    h.nbytes = total;
    memcpy(dst, &h, sizeof h);
    if (ndim > 0) /* shape may be NULL for a 0-dimensional array */
        memcpy((unsigned char *)dst + sizeof h, shape, 8u * (size_t)ndim);
    memset((unsigned char *)dst + sizeof h + 8u * ndim, 0, (size_t)(h.data_offset - sizeof h - 8u * ndim));
    return SHMRING_OK;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMRING_ARRAY_H */
