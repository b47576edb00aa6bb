/* npframe.h - the npipes v1 frame, written only from docs/protocol.md.
 *
 * A frame: 16-byte header (magic "NP", version 1, flags, u32 reserved = 0,
 * u64 payload length N), the N payload bytes, then a u32 CRC-32 of the payload
 * when flag 0x01 is set. Every integer is little-endian on the wire; this code
 * reads and writes them byte by byte, so it is right on any host.
 *
 * This file has no I/O of its own: np_recv() and np_send() move bytes through
 * the read/write callbacks you give them (see npio.h for sockets and pipes).
 * Portable C99.
 */
#ifndef NPFRAME_H
#define NPFRAME_H

#include <stddef.h>
#include <stdint.h>

#define NP_HEADER_SIZE 16
#define NP_TRAILER_SIZE 4
#define NP_VERSION 1
#define NP_FLAG_CRC 0x01u
#define NP_FLAG_TEXT 0x02u
#define NP_FLAGS_RESERVED 0xFCu
#define NP_DEFAULT_MAX_MESSAGE_SIZE UINT64_C(1073741824) /* 1 GiB */
#define NP_NO_LIMIT UINT64_MAX                           /* max_message_size "unlimited" */

/* Results. The comments name the error npipes raises for the same condition. */
typedef enum {
    NP_OK = 0,
    NP_CLOSED,          /* ConnectionClosedError: clean end of stream between frames */
    NP_E_INCOMPLETE,    /* IncompleteMessageError: stream ended inside a frame (fatal) */
    NP_E_MAGIC,         /* ProtocolError: magic is not "NP" (fatal) */
    NP_E_VERSION,       /* ProtocolError: version is not 1 (fatal) */
    NP_E_FLAGS,         /* ProtocolError: a reserved flag bit (0xFC) is set (fatal) */
    NP_E_RESERVED,      /* ProtocolError: reserved field is not 0 (fatal) */
    NP_E_TOO_LARGE,     /* MessageTooLargeError: N > max_message_size (fatal) */
    NP_E_CHECKSUM,      /* ChecksumError: CRC mismatch (frame consumed, non-fatal) */
    NP_E_CRC_MISSING,   /* ChecksumError: crc required but absent (non-fatal) */
    NP_E_UTF8,          /* ProtocolError: TEXT payload is not valid UTF-8 (non-fatal) */
    NP_E_IO,            /* the transport failed (errno / GetLastError) */
    NP_E_NOMEM          /* the payload buffer could not be allocated */
} np_status;

/* Name of the npipes error for a status ("ProtocolError", ...), and a description. */
const char *np_error_name(np_status st);
const char *np_strerror(np_status st);
/* 1 when the connection must be closed after this status (framing is lost). */
int np_status_fatal(np_status st);

/* Little-endian integers, byte by byte. */
void np_put_u32le(uint8_t *p, uint32_t v);
void np_put_u64le(uint8_t *p, uint64_t v);
uint32_t np_get_u32le(const uint8_t *p);
uint64_t np_get_u64le(const uint8_t *p);

/* CRC-32/ISO-HDLC, the value of zlib's crc32(). Start with crc = 0 and feed
 * the payload in any number of pieces: np_crc32(np_crc32(0, a, na), b, nb).
 * Uses zlib when compiled with -DNP_HAVE_ZLIB, a built-in table otherwise. */
uint32_t np_crc32(uint32_t crc, const void *data, size_t len);

/* 1 when data is strict UTF-8 (RFC 3629: no overlongs, surrogates or code
 * points above U+10FFFF, no truncated sequences), 0 otherwise. */
int np_utf8_valid(const void *data, size_t len);

/* The 16 header bytes for a frame with these flags and payload length. */
void np_encode_header(uint8_t out[NP_HEADER_SIZE], unsigned flags, uint64_t length);

/* Validates 16 header bytes in the spec's order (magic, version, flags,
 * reserved, length) and returns the first failure, or NP_OK with *flags and
 * *length set. max_message_size: NP_NO_LIMIT for unlimited. */
np_status np_decode_header(const uint8_t in[NP_HEADER_SIZE], uint64_t max_message_size,
                           unsigned *flags, uint64_t *length);

/* Transport callbacks. read: up to len bytes into buf; returns the count
 * (> 0), 0 at end of stream, -1 on error. write: all len bytes; 0 or -1. */
typedef long (*np_read_fn)(void *ctx, void *buf, size_t len);
typedef int (*np_write_fn)(void *ctx, const void *buf, size_t len);

/* Receiver settings (docs/protocol.md 5.2). */
typedef struct {
    uint64_t max_message_size; /* NP_DEFAULT_MAX_MESSAGE_SIZE, or NP_NO_LIMIT */
    int crc;                   /* 1: every received frame must carry a CRC */
} np_recv_options;

/* One received message. payload is malloc'ed (free it with free(); it holds
 * length bytes plus a terminating 0 so text can be printed as a C string). */
typedef struct {
    unsigned flags;    /* as on the wire: NP_FLAG_TEXT for a string, NP_FLAG_CRC */
    uint64_t length;
    uint8_t *payload;
} np_message;

/* Reads one message, following the decoding algorithm of docs/protocol.md 5.3:
 * reads exactly the bytes of one frame (the stream may deliver them in any
 * pieces), validates the header before allocating anything, verifies a CRC
 * whenever one is present, and checks UTF-8 for TEXT frames. On the non-fatal
 * errors (NP_E_CHECKSUM, NP_E_CRC_MISSING, NP_E_UTF8) the whole frame has been
 * consumed and msg still holds it (free msg->payload). On every other error
 * msg->payload is NULL. opts may be NULL for the defaults. */
np_status np_recv(np_read_fn rd, void *ctx, const np_recv_options *opts, np_message *msg);

/* Sends one frame: header, payload, then the CRC trailer when flags has
 * NP_FLAG_CRC (computed here). flags must not have reserved bits set. The
 * three pieces go out as three writes, one after the other: the stream stays
 * contiguous as long as one thread writes at a time. */
np_status np_send(np_write_fn wr, void *ctx, unsigned flags, const void *payload, uint64_t length);

#endif /* NPFRAME_H */
