/* npclient - an npipes v1 client, written from docs/protocol.md.
 *
 *   npclient [--no-crc] ADDRESS MESSAGE...
 *   npclient [--no-crc] --binary-size N ADDRESS
 *
 * First form: sends each MESSAGE as a text frame (UTF-8), reads one reply per
 * message and prints it on a line of its own (a binary reply is printed as
 * "binary:" and its hex). Second form: sends one N-byte binary message, byte i
 * being i % 251, and checks that the reply is the same bytes; prints
 * "ok: N bytes". By default every frame sent carries a CRC-32 and every reply
 * must carry one (npipes' crc=True); --no-crc sends none and requires none
 * (a CRC that is present is still verified).
 * Exit status: 0 on success, 1 on any error (message on stderr), 2 for usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npframe.h"
#include "npio.h"

static int usage(void)
{
    fprintf(stderr, "usage: npclient [--no-crc] ADDRESS MESSAGE...\n"
                    "       npclient [--no-crc] --binary-size N ADDRESS\n");
    return 2;
}

/* Sends one message and receives the reply into *reply. 0 on success. */
static int round_trip(np_conn *conn, const np_recv_options *opts, unsigned flags,
                      const void *data, uint64_t len, np_message *reply)
{
    np_status st = np_send(npio_write, conn, flags, data, len);
    if (st != NP_OK) {
        fprintf(stderr, "npclient: send: %s: %s\n", np_error_name(st), np_strerror(st));
        return -1;
    }
    st = np_recv(npio_read, conn, opts, reply);
    if (st != NP_OK) {
        fprintf(stderr, "npclient: receive: %s: %s\n", np_error_name(st), np_strerror(st));
        free(reply->payload);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    np_recv_options opts = {NP_DEFAULT_MAX_MESSAGE_SIZE, 1};
    unsigned crc_flag = NP_FLAG_CRC;
    unsigned long long binary_size = 0;
    int binary = 0, i = 1, status = 0;

    npio_init("npclient", &argc, &argv);
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "--no-crc") == 0) {
            crc_flag = 0;
            opts.crc = 0;
        } else if (strcmp(argv[i], "--binary-size") == 0 && i + 1 < argc) {
            char *end;
            binary_size = strtoull(argv[++i], &end, 10);
            if (*end || !*argv[i]) return usage();
            binary = 1;
        } else {
            return usage();
        }
    }
    if (i >= argc || (binary && i + 1 != argc)) return usage();
    const char *address = argv[i++];

    /* a string that is not UTF-8 cannot be sent as text: check before connecting */
    for (int k = i; k < argc; k++) {
        if (!np_utf8_valid(argv[k], strlen(argv[k]))) {
            fprintf(stderr, "npclient: argument %d is not valid UTF-8\n", k);
            return 1;
        }
    }

    np_conn *conn = npio_connect(address);
    if (!conn) return 1;

    if (binary) {
        if (binary_size > (unsigned long long)SIZE_MAX) {
            fprintf(stderr, "npclient: --binary-size too large\n");
            status = 1;
        } else {
            size_t n = (size_t)binary_size;
            uint8_t *data = (uint8_t *)malloc(n ? n : 1);
            np_message reply = {0, 0, NULL};
            if (!data) {
                fprintf(stderr, "npclient: out of memory\n");
                status = 1;
            } else {
                for (size_t k = 0; k < n; k++) data[k] = (uint8_t)(k % 251);
                if (round_trip(conn, &opts, crc_flag, data, n, &reply) != 0) {
                    status = 1;
                } else if (reply.flags & NP_FLAG_TEXT) {
                    fprintf(stderr, "npclient: the reply is text, not binary\n");
                    status = 1;
                } else if (reply.length != n) {
                    fprintf(stderr, "npclient: the reply has %llu bytes, not %llu\n",
                            (unsigned long long)reply.length, binary_size);
                    status = 1;
                } else if (n && memcmp(reply.payload, data, n) != 0) {
                    size_t k = 0;
                    while (reply.payload[k] == data[k]) k++;
                    fprintf(stderr, "npclient: the reply differs at byte %llu\n",
                            (unsigned long long)k);
                    status = 1;
                } else {
                    printf("ok: %llu bytes\n", binary_size);
                }
                free(reply.payload);
                free(data);
            }
        }
    }

    for (; !binary && i < argc && status == 0; i++) {
        np_message reply;
        if (round_trip(conn, &opts, NP_FLAG_TEXT | crc_flag, argv[i], strlen(argv[i]), &reply) !=
            0) {
            status = 1;
            break;
        }
        if (reply.flags & NP_FLAG_TEXT) {
            fwrite(reply.payload, 1, (size_t)reply.length, stdout);
        } else {
            fputs("binary:", stdout);
            for (uint64_t k = 0; k < reply.length; k++) printf("%02x", reply.payload[k]);
        }
        fputc('\n', stdout);
        free(reply.payload);
    }

    npio_close(conn);
    if (fflush(stdout) != 0) status = 1;
    return status;
}
