/* npframe.c - the npipes v1 frame, written only from docs/protocol.md. See npframe.h. */
#include "npframe.h"

#include <stdlib.h>

#ifdef NP_HAVE_ZLIB
#include <zlib.h>
#endif

const char *np_error_name(np_status st)
{
    switch (st) {
    case NP_OK: return "OK";
    case NP_CLOSED: return "ConnectionClosedError";
    case NP_E_INCOMPLETE: return "IncompleteMessageError";
    case NP_E_MAGIC:
    case NP_E_VERSION:
    case NP_E_FLAGS:
    case NP_E_RESERVED:
    case NP_E_UTF8: return "ProtocolError";
    case NP_E_TOO_LARGE: return "MessageTooLargeError";
    case NP_E_CHECKSUM:
    case NP_E_CRC_MISSING: return "ChecksumError";
    case NP_E_IO: return "IOError";
    case NP_E_NOMEM: return "MemoryError";
    }
    return "UnknownError";
}

const char *np_strerror(np_status st)
{
    switch (st) {
    case NP_OK: return "no error";
    case NP_CLOSED: return "the peer closed the connection";
    case NP_E_INCOMPLETE: return "the stream ended in the middle of a frame";
    case NP_E_MAGIC: return "bad magic (not \"NP\")";
    case NP_E_VERSION: return "unknown frame version (not 1)";
    case NP_E_FLAGS: return "a reserved flag bit (0xFC) is set";
    case NP_E_RESERVED: return "the reserved header field is not 0";
    case NP_E_TOO_LARGE: return "the message is larger than max_message_size";
    case NP_E_CHECKSUM: return "CRC-32 mismatch";
    case NP_E_CRC_MISSING: return "a CRC is required but the frame has none";
    case NP_E_UTF8: return "a text message is not valid UTF-8";
    case NP_E_IO: return "transport error";
    case NP_E_NOMEM: return "out of memory";
    }
    return "unknown error";
}

int np_status_fatal(np_status st)
{
    return !(st == NP_OK || st == NP_E_CHECKSUM || st == NP_E_CRC_MISSING || st == NP_E_UTF8);
}

/* ---- little-endian integers ------------------------------------------- */

void np_put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void np_put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t np_get_u32le(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

uint64_t np_get_u64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ---- CRC-32/ISO-HDLC (docs/protocol.md section 3) --------------------- */

#ifdef NP_HAVE_ZLIB
uint32_t np_crc32(uint32_t crc, const void *data, size_t len)
{
    const Bytef *p = (const Bytef *)data;
    uLong c = crc;
    while (len > 0) { /* zlib takes a uInt length: feed it in pieces */
        uInt n = len > 0x40000000u ? 0x40000000u : (uInt)len;
        c = crc32(c, p, n);
        p += n;
        len -= n;
    }
    return (uint32_t)c;
}
#else
/* The table-driven form of the spec's bitwise reference: reflected polynomial
 * 0xEDB88320, init 0xFFFFFFFF, xorout 0xFFFFFFFF. The table is built on first
 * use (these example programs are single-threaded). */
static uint32_t crc_table[256];
static int crc_table_ready;

static void crc_make_table(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ UINT32_C(0xEDB88320) : c >> 1;
        crc_table[n] = c;
    }
    crc_table_ready = 1;
}

uint32_t np_crc32(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    if (!crc_table_ready) crc_make_table();
    crc ^= UINT32_C(0xFFFFFFFF); /* like zlib: the running value is kept post-xorout */
    while (len--) crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc ^ UINT32_C(0xFFFFFFFF);
}
#endif

/* ---- strict UTF-8 (RFC 3629) ------------------------------------------ */

int np_utf8_valid(const void *data, size_t len)
{
    const uint8_t *s = (const uint8_t *)data;
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        size_t more;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the first continuation byte */
        if (b < 0x80) { i++; continue; }
        else if (b >= 0xC2 && b <= 0xDF) more = 1;
        else if (b == 0xE0) { more = 2; lo = 0xA0; }          /* no overlongs */
        else if (b == 0xED) { more = 2; hi = 0x9F; }          /* no surrogates */
        else if (b >= 0xE1 && b <= 0xEF) more = 2;
        else if (b == 0xF0) { more = 3; lo = 0x90; }          /* no overlongs */
        else if (b >= 0xF1 && b <= 0xF3) more = 3;
        else if (b == 0xF4) { more = 3; hi = 0x8F; }          /* <= U+10FFFF */
        else return 0;                                         /* 80..C1, F5..FF */
        if (len - i - 1 < more) return 0;                      /* truncated */
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (size_t k = 2; k <= more; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return 0;
        i += 1 + more;
    }
    return 1;
}

/* ---- header ----------------------------------------------------------- */

void np_encode_header(uint8_t out[NP_HEADER_SIZE], unsigned flags, uint64_t length)
{
    out[0] = 0x4E; /* 'N' */
    out[1] = 0x50; /* 'P' */
    out[2] = NP_VERSION;
    out[3] = (uint8_t)flags;
    np_put_u32le(out + 4, 0); /* reserved */
    np_put_u64le(out + 8, length);
}

np_status np_decode_header(const uint8_t in[NP_HEADER_SIZE], uint64_t max_message_size,
                           unsigned *flags, uint64_t *length)
{
    /* exactly the order of docs/protocol.md 5.3 */
    if (in[0] != 0x4E || in[1] != 0x50) return NP_E_MAGIC;
    if (in[2] != NP_VERSION) return NP_E_VERSION;
    if (in[3] & NP_FLAGS_RESERVED) return NP_E_FLAGS;
    if (np_get_u32le(in + 4) != 0) return NP_E_RESERVED;
    uint64_t n = np_get_u64le(in + 8);
    if (max_message_size != NP_NO_LIMIT && n > max_message_size) return NP_E_TOO_LARGE;
    *flags = in[3];
    *length = n;
    return NP_OK;
}

/* ---- receive ---------------------------------------------------------- */

/* Reads until len bytes are in buf or the stream ends; *got says how many
 * arrived. Read boundaries mean nothing: only the count matters. */
static np_status read_exact(np_read_fn rd, void *ctx, uint8_t *buf, size_t len, size_t *got)
{
    *got = 0;
    while (*got < len) {
        size_t want = len - *got;
        if (want > 0x40000000u) want = 0x40000000u; /* fits a long everywhere */
        long r = rd(ctx, buf + *got, want);
        if (r < 0) return NP_E_IO;
        if (r == 0) return NP_E_INCOMPLETE;
        *got += (size_t)r;
    }
    return NP_OK;
}

np_status np_recv(np_read_fn rd, void *ctx, const np_recv_options *opts, np_message *msg)
{
    static const np_recv_options defaults = {NP_DEFAULT_MAX_MESSAGE_SIZE, 0};
    uint8_t header[NP_HEADER_SIZE], trailer[NP_TRAILER_SIZE];
    size_t got;
    unsigned flags;
    uint64_t n;
    np_status st;

    if (!opts) opts = &defaults;
    msg->flags = 0;
    msg->length = 0;
    msg->payload = NULL;

    /* header */
    st = read_exact(rd, ctx, header, NP_HEADER_SIZE, &got);
    if (st == NP_E_INCOMPLETE && got == 0) return NP_CLOSED; /* clean close, between frames */
    if (st != NP_OK) return st;
    st = np_decode_header(header, opts->max_message_size, &flags, &n);
    if (st != NP_OK) return st; /* fatal, decided from the header alone */

    /* body: payload, then the trailer when the CRC flag is set */
    if (n > (uint64_t)(SIZE_MAX - 1)) return NP_E_NOMEM;
    uint8_t *payload = (uint8_t *)malloc((size_t)n + 1);
    if (!payload) return NP_E_NOMEM;
    st = read_exact(rd, ctx, payload, (size_t)n, &got);
    if (st == NP_OK && (flags & NP_FLAG_CRC))
        st = read_exact(rd, ctx, trailer, NP_TRAILER_SIZE, &got);
    if (st != NP_OK) {
        free(payload);
        return st; /* NP_E_INCOMPLETE or NP_E_IO: fatal */
    }
    payload[n] = 0;
    msg->flags = flags;
    msg->length = n;
    msg->payload = payload;

    /* the whole frame is consumed: what follows is not fatal */
    if (flags & NP_FLAG_CRC) {
        if (np_get_u32le(trailer) != np_crc32(0, payload, (size_t)n)) return NP_E_CHECKSUM;
    } else if (opts->crc) {
        return NP_E_CRC_MISSING;
    }
    if ((flags & NP_FLAG_TEXT) && !np_utf8_valid(payload, (size_t)n)) return NP_E_UTF8;
    return NP_OK;
}

/* ---- send ------------------------------------------------------------- */

np_status np_send(np_write_fn wr, void *ctx, unsigned flags, const void *payload, uint64_t length)
{
    uint8_t header[NP_HEADER_SIZE], trailer[NP_TRAILER_SIZE];

    if (flags & ~(NP_FLAG_CRC | NP_FLAG_TEXT)) return NP_E_FLAGS;
    if (length > (uint64_t)SIZE_MAX) return NP_E_TOO_LARGE;
    /* a string that is not UTF-8 is an error on the sending side: nothing is sent */
    if ((flags & NP_FLAG_TEXT) && !np_utf8_valid(payload, (size_t)length)) return NP_E_UTF8;

    np_encode_header(header, flags, length);
    if (wr(ctx, header, NP_HEADER_SIZE) != 0) return NP_E_IO;
    if (length > 0 && wr(ctx, payload, (size_t)length) != 0) return NP_E_IO;
    if (flags & NP_FLAG_CRC) {
        np_put_u32le(trailer, np_crc32(0, payload, (size_t)length));
        if (wr(ctx, trailer, NP_TRAILER_SIZE) != 0) return NP_E_IO;
    }
    return NP_OK;
}
