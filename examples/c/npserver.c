/* npserver - an npipes v1 echo server for one client, written from docs/protocol.md.
 *
 *   npserver [--crc] [--max-size N] ADDRESS
 *
 * Listens on ADDRESS (POSIX: a socket path, created 0600 and removed on exit;
 * Windows: \\.\pipe\NAME or NAME), prints "ready" once a client can connect,
 * accepts one client and sends every message back as it came (same flags:
 * text stays text, a CRC is answered with a CRC). A CRC present in a frame is
 * always verified; --crc also requires one on every frame. Exit status: 0 when
 * the client closed the connection cleanly between frames; 1 on any error
 * (bad CRC, bad frame, the client dying mid-frame, I/O), with a message on
 * stderr; 2 for a usage error.
 *
 * The npipes library would report a bad CRC or bad UTF-8 for that message and
 * carry on; this example stops instead, so that a test sees the error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "npframe.h"
#include "npio.h"

static int usage(void)
{
    fprintf(stderr, "usage: npserver [--crc] [--max-size N] ADDRESS\n");
    return 2;
}

int main(int argc, char **argv)
{
    np_recv_options opts = {NP_DEFAULT_MAX_MESSAGE_SIZE, 0};
    const char *address = NULL;
    unsigned long long count = 0;
    int status = 1;

    npio_init("npserver", &argc, &argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--crc") == 0) {
            opts.crc = 1;
        } else if (strcmp(argv[i], "--max-size") == 0 && i + 1 < argc) {
            char *end;
            opts.max_message_size = strtoull(argv[++i], &end, 10);
            if (*end || !*argv[i]) return usage();
        } else if (argv[i][0] == '-' || address) {
            return usage();
        } else {
            address = argv[i];
        }
    }
    if (!address) return usage();

    np_listener *listener = npio_listen(address);
    if (!listener) return 1;
    printf("ready\n");
    fflush(stdout);

    np_conn *conn = npio_accept(listener);
    while (conn) {
        np_message msg;
        np_status st = np_recv(npio_read, conn, &opts, &msg);
        if (st == NP_CLOSED) {
            status = 0; /* the client is done */
            break;
        }
        if (st != NP_OK) {
            fprintf(stderr, "npserver: message %llu: %s: %s%s\n", count + 1, np_error_name(st),
                    np_strerror(st), np_status_fatal(st) ? "" : " (frame consumed; stopping)");
            free(msg.payload);
            break;
        }
        count++;
        st = np_send(npio_write, conn, msg.flags, msg.payload, msg.length);
        free(msg.payload);
        if (st != NP_OK) {
            fprintf(stderr, "npserver: sending reply %llu: %s\n", count, np_strerror(st));
            break;
        }
    }
    npio_close(conn);
    npio_close_listener(listener); /* removes the socket file (POSIX) */
    return status;
}
