/* npvectors - checks npframe.c against the test vectors of docs/protocol.md section 8
 * (tests/test_examples_c.py feeds it every vector of tests/data/vectors.json).
 *
 *   npvectors encode text|binary PAYLOADHEX crc|nocrc [text|binary PAYLOADHEX crc|nocrc]...
 *       prints each frame as lowercase hex on a line of its own (the payload is
 *       given in hex, "" when empty, so that any text passes any command line)
 *   npvectors decode [--crc] [--max-size N] STREAMHEX...
 *       decodes each stream the way a socket could deliver it, in pieces of 1
 *       to 3 bytes, and prints a line per stream: the np_recv() results, joined
 *       by "; ", until the end of the stream or a fatal error. A result is
 *         text PAYLOADHEX | binary PAYLOADHEX | closed | <Error> fatal|nonfatal
 *   npvectors crc
 *       checks CRC-32 known values; built with -DNP_CHECK_ZLIB (and -lz), also
 *       compares np_crc32() with zlib's crc32() on pseudo-random data, whole
 *       and in pieces (npframe.c itself built without NP_HAVE_ZLIB, so its
 *       built-in table is what is checked)
 * Exit status: 0 when the command ran (and every check passed), 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npframe.h"

#ifdef NP_CHECK_ZLIB
#include <zlib.h>
#endif

static int unhex(const char *s, uint8_t **out, size_t *len)
{
    size_t n = strlen(s);
    if (n % 2) return -1;
    *out = (uint8_t *)malloc(n / 2 + 1);
    if (!*out) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
        (*out)[i] = (uint8_t)v;
    }
    *len = n / 2;
    return 0;
}

static void print_hex(const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) printf("%02x", p[i]);
}

/* A stream over a memory buffer that hands out 1, 2, 3, 1, 2, 3... bytes per read. */
typedef struct { const uint8_t *data; size_t len, pos; unsigned turn; } mem_stream;

static long mem_read(void *ctx, void *buf, size_t len)
{
    mem_stream *m = (mem_stream *)ctx;
    size_t n = 1 + (m->turn++ % 3);
    if (n > len) n = len;
    if (n > m->len - m->pos) n = m->len - m->pos;
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    return (long)n;
}

/* collects what np_send writes */
typedef struct { uint8_t buf[4096]; size_t len; } mem_sink;

static int mem_write(void *ctx, const void *buf, size_t len)
{
    mem_sink *s = (mem_sink *)ctx;
    if (len > sizeof s->buf - s->len) return -1;
    memcpy(s->buf + s->len, buf, len);
    s->len += len;
    return 0;
}

static int cmd_encode(int argc, char **argv)
{
    if (argc < 5 || (argc - 2) % 3) return 1;
    for (int i = 2; i < argc; i += 3) {
        uint8_t *payload;
        size_t len;
        unsigned flags;
        mem_sink sink = {{0}, 0};
        if (strcmp(argv[i], "text") == 0) flags = NP_FLAG_TEXT;
        else if (strcmp(argv[i], "binary") == 0) flags = 0;
        else return 1;
        if (strcmp(argv[i + 2], "crc") == 0) flags |= NP_FLAG_CRC;
        else if (strcmp(argv[i + 2], "nocrc") != 0) return 1;
        if (unhex(argv[i + 1], &payload, &len) != 0) return 1;
        np_status st = np_send(mem_write, &sink, flags, payload, len);
        if (st == NP_OK) print_hex(sink.buf, sink.len);
        else printf("%s", np_error_name(st));
        printf("\n");
        free(payload);
    }
    return 0;
}

static int cmd_decode(int argc, char **argv)
{
    np_recv_options opts = {NP_DEFAULT_MAX_MESSAGE_SIZE, 0};
    int i = 2;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--crc") == 0) opts.crc = 1;
        else if (strcmp(argv[i], "--max-size") == 0 && i + 1 < argc)
            opts.max_message_size = strtoull(argv[++i], NULL, 10);
        else return 1;
    }
    if (i >= argc) return 1;
    for (; i < argc; i++) { /* one stream per argument, one line per stream */
        mem_stream m = {NULL, 0, 0, 0};
        uint8_t *data;
        if (unhex(argv[i], &data, &m.len) != 0) return 1;
        m.data = data;
        for (const char *sep = "";; sep = "; ") {
            np_message msg;
            np_status st = np_recv(mem_read, &m, &opts, &msg);
            printf("%s", sep);
            if (st == NP_OK) {
                printf("%s ", (msg.flags & NP_FLAG_TEXT) ? "text" : "binary");
                print_hex(msg.payload, msg.length);
            } else if (st == NP_CLOSED) {
                printf("closed");
            } else {
                printf("%s %s", np_error_name(st), np_status_fatal(st) ? "fatal" : "nonfatal");
            }
            free(msg.payload);
            if (st != NP_OK && np_status_fatal(st)) break;
        }
        printf("\n");
        free(data);
    }
    return 0;
}

static int check(const char *what, uint32_t got, uint32_t want)
{
    if (got == want) return 0;
    printf("FAIL %s: 0x%08lx, expected 0x%08lx\n", what, (unsigned long)got, (unsigned long)want);
    return 1;
}

static int cmd_crc(void)
{
    int bad = 0;
    bad |= check("check value", np_crc32(0, "123456789", 9), UINT32_C(0xCBF43926));
    bad |= check("empty", np_crc32(0, "", 0), 0);
    bad |= check("Hello", np_crc32(0, "Hello", 5), UINT32_C(0xF7D18982));
    bad |= check("pieces", np_crc32(np_crc32(0, "1234", 4), "56789", 5), UINT32_C(0xCBF43926));
#ifdef NP_CHECK_ZLIB
    static uint8_t buf[70000];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    for (size_t len = 0; len < sizeof buf; len = len * 3 + 1) {
        for (size_t off = 0; off < 8; off++) {
            uint32_t want = (uint32_t)crc32(0, buf + off, (uInt)len);
            size_t cut = len / 3;
            bad |= check("vs zlib", np_crc32(0, buf + off, len), want);
            bad |= check("vs zlib, in pieces",
                         np_crc32(np_crc32(0, buf + off, cut), buf + off + cut, len - cut), want);
        }
    }
    printf("crc ok (compared with zlib %s)\n", zlibVersion());
#else
    printf("crc ok\n");
#endif
    return bad;
}

int main(int argc, char **argv)
{
    int rc = 1;
    if (argc >= 2 && strcmp(argv[1], "encode") == 0) rc = cmd_encode(argc, argv);
    else if (argc >= 3 && strcmp(argv[1], "decode") == 0) rc = cmd_decode(argc, argv);
    else if (argc == 2 && strcmp(argv[1], "crc") == 0) rc = cmd_crc();
    else fprintf(stderr, "usage: npvectors encode text|binary PAYLOADHEX crc|nocrc...\n"
                         "       npvectors decode [--crc] [--max-size N] STREAMHEX...\n"
                         "       npvectors crc\n");
    return rc;
}
