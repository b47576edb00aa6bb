/* npio.h - the byte stream under the frames: a Unix domain socket (POSIX) or a
 * Windows named pipe, with read/write functions that fit np_recv()/np_send().
 *
 * Addresses (docs/protocol.md section 6):
 *   POSIX:   a socket path containing a '/', e.g. /tmp/demo.sock. The client
 *            also takes a bare name (e.g. "jobs") and looks for it where
 *            npipes puts it: $XDG_RUNTIME_DIR/npipes/NAME.sock, or
 *            $TMPDIR (else /tmp)/npipes-<uid>/NAME.sock.
 *   Windows: \\.\pipe\NAME, or a bare NAME (the \\.\pipe\ prefix is added).
 *
 * Every function that fails prints why to stderr, prefixed with the program
 * name set by npio_init().
 */
#ifndef NPIO_H
#define NPIO_H

#include <stddef.h>

typedef struct np_conn np_conn;
typedef struct np_listener np_listener;

/* Call first: remembers the program name for messages, makes stdout binary on
 * Windows (replies are printed byte for byte) and, on Windows, replaces argv
 * with its UTF-8 form (from GetCommandLineW), so text arguments survive
 * whatever the ANSI code page is. POSIX: argv bytes are used as they are. */
void npio_init(const char *progname, int *argc, char ***argv);

/* Prints "progname: what: <reason>" for the last OS error (errno or GetLastError). */
void npio_perror(const char *what);

/* Client: connect to a listening server. NULL on failure (message printed). */
np_conn *npio_connect(const char *address);

/* Server: listen on address, one client. On POSIX the socket file is created
 * with mode 0600 and removed by npio_close_listener() (and on SIGINT, SIGTERM,
 * SIGHUP); an existing file at the path is an error. NULL on failure. */
np_listener *npio_listen(const char *address);
/* Waits for the client. NULL on failure. */
np_conn *npio_accept(np_listener *l);
void npio_close_listener(np_listener *l);

/* np_read_fn / np_write_fn for a connection (pass the np_conn * as ctx).
 * read: > 0 bytes, 0 at end of stream, -1 on error. write: 0 or -1. */
long npio_read(void *conn, void *buf, size_t len);
int npio_write(void *conn, const void *buf, size_t len);
void npio_close(np_conn *c);

#endif /* NPIO_H */
