/* npio.c - Unix domain sockets (POSIX) and named pipes (Windows) as a byte stream. See npio.h. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "npio.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *prog = "np";

/* ======================================================================= */
#ifdef _WIN32
/* ======================================================================= */
#include <windows.h>
#include <shellapi.h>
#include <fcntl.h>
#include <io.h>

#define PIPE_PREFIX "\\\\.\\pipe\\"
#define PIPE_BUFFER 65536
#define IO_CHUNK 0x40000000u /* a DWORD's worth, with room to spare */

struct np_conn { HANDLE h; int server; };
struct np_listener { HANDLE h; };

void npio_init(const char *progname, int *argc, char ***argv)
{
    int n = 0;
    prog = progname;
    _setmode(_fileno(stdout), _O_BINARY);
    /* main()'s argv is in the ANSI code page: rebuild it as UTF-8 */
    LPWSTR *wargv = CommandLineToArgvW(GetCommandLineW(), &n);
    if (!wargv) return;
    char **u = (char **)calloc((size_t)n + 1, sizeof *u);
    for (int i = 0; u && i < n; i++) {
        int size = WideCharToMultiByte(CP_UTF8, 0, wargv[i], -1, NULL, 0, NULL, NULL);
        u[i] = (char *)malloc(size > 0 ? (size_t)size : 1);
        if (!u[i]) return; /* keep the ANSI argv */
        if (size <= 0 || !WideCharToMultiByte(CP_UTF8, 0, wargv[i], -1, u[i], size, NULL, NULL))
            u[i][0] = 0;
    }
    LocalFree(wargv);
    if (!u) return;
    *argc = n;
    *argv = u; /* kept for the life of the process */
}

void npio_perror(const char *what)
{
    DWORD err = GetLastError();
    char msg[256] = "";
    FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, err, 0,
                   msg, sizeof msg, NULL);
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\r' || msg[len - 1] == '\n' || msg[len - 1] == ' '))
        msg[--len] = 0;
    fprintf(stderr, "%s: %s: %s (Windows error %lu)\n", prog, what, msg, (unsigned long)err);
}

/* "\\.\pipe\NAME" as given, or a bare NAME with the prefix added. */
static int pipe_path(const char *address, char *out, size_t size)
{
    const char *prefix = strncmp(address, "\\\\", 2) == 0 ? "" : PIPE_PREFIX;
    if (strlen(prefix) + strlen(address) + 1 > size || !*address) {
        fprintf(stderr, "%s: bad pipe name: %s\n", prog, address);
        return -1;
    }
    snprintf(out, size, "%s%s", prefix, address);
    return 0;
}

np_conn *npio_connect(const char *address)
{
    char path[300];
    HANDLE h;
    if (pipe_path(address, path, sizeof path) != 0) return NULL;
    for (int tries = 0;; tries++) {
        /* SECURITY_IDENTIFICATION: the server may identify us, not impersonate us */
        h = CreateFileA(path, GENERIC_READ | GENERIC_WRITE, 0, NULL, OPEN_EXISTING,
                        SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION, NULL);
        if (h != INVALID_HANDLE_VALUE) break;
        /* every instance is taken: wait (bounded) for one to be free, then retry */
        if (GetLastError() != ERROR_PIPE_BUSY || tries == 10 || !WaitNamedPipeA(path, 1000)) {
            npio_perror(path);
            return NULL;
        }
    }
    /* The pipe stays in byte read mode on this side: frames are a byte stream anyway. */
    np_conn *c = (np_conn *)malloc(sizeof *c);
    if (!c) { CloseHandle(h); return NULL; }
    c->h = h;
    c->server = 0;
    return c;
}

np_listener *npio_listen(const char *address)
{
    char path[300];
    if (pipe_path(address, path, sizeof path) != 0) return NULL;
    /* duplex, message mode (docs/protocol.md section 6), one instance: one client.
     * Default security: see README.md. */
    HANDLE h = CreateNamedPipeA(path, PIPE_ACCESS_DUPLEX | FILE_FLAG_FIRST_PIPE_INSTANCE,
                                PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT |
                                    PIPE_REJECT_REMOTE_CLIENTS,
                                1, PIPE_BUFFER, PIPE_BUFFER, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        npio_perror(path);
        return NULL;
    }
    np_listener *l = (np_listener *)malloc(sizeof *l);
    if (!l) { CloseHandle(h); return NULL; }
    l->h = h;
    return l;
}

np_conn *npio_accept(np_listener *l)
{
    /* a client that opened the pipe before this call gives ERROR_PIPE_CONNECTED: fine */
    if (!ConnectNamedPipe(l->h, NULL) && GetLastError() != ERROR_PIPE_CONNECTED) {
        npio_perror("ConnectNamedPipe");
        return NULL;
    }
    np_conn *c = (np_conn *)malloc(sizeof *c);
    if (!c) return NULL;
    c->h = l->h; /* the instance is now the connection */
    c->server = 1;
    l->h = INVALID_HANDLE_VALUE;
    return c;
}

void npio_close_listener(np_listener *l)
{
    if (!l) return;
    if (l->h != INVALID_HANDLE_VALUE) CloseHandle(l->h);
    free(l);
}

long npio_read(void *conn, void *buf, size_t len)
{
    np_conn *c = (np_conn *)conn;
    DWORD want = len > IO_CHUNK ? IO_CHUNK : (DWORD)len, got = 0;
    for (;;) {
        if (ReadFile(c->h, buf, want, &got, NULL)) {
            if (got > 0) return (long)got;
            continue; /* a zero-length pipe message carries no bytes: read on */
        }
        switch (GetLastError()) {
        case ERROR_MORE_DATA: /* the buffer is full, the pipe message goes on: just bytes */
            if (got > 0) return (long)got;
            continue;
        case ERROR_BROKEN_PIPE:
        case ERROR_PIPE_NOT_CONNECTED:
        case ERROR_NO_DATA:
            return 0; /* the peer closed: end of stream */
        default:
            npio_perror("ReadFile");
            return -1;
        }
    }
}

int npio_write(void *conn, const void *buf, size_t len)
{
    np_conn *c = (np_conn *)conn;
    const char *p = (const char *)buf;
    while (len > 0) {
        DWORD n = len > IO_CHUNK ? IO_CHUNK : (DWORD)len, done = 0;
        if (!WriteFile(c->h, p, n, &done, NULL)) {
            npio_perror("WriteFile");
            return -1;
        }
        p += done;
        len -= done;
    }
    return 0;
}

void npio_close(np_conn *c)
{
    if (!c) return;
    /* CloseHandle only (DisconnectNamedPipe would discard what the peer has not read) */
    CloseHandle(c->h);
    free(c);
}

/* ======================================================================= */
#else /* POSIX */
/* ======================================================================= */
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

struct np_conn { int fd; };
struct np_listener { int fd; };

/* The socket file of the listener, removed on exit and by the signal handler. */
static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

void npio_init(const char *progname, int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    prog = progname;
    signal(SIGPIPE, SIG_IGN); /* a write to a closed socket: EPIPE, not death */
}

void npio_perror(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(errno));
}

static int make_addr(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa->sun_path) {
        fprintf(stderr, "%s: socket path too long (at most %u bytes): %s\n", prog,
                (unsigned)(sizeof sa->sun_path - 1), path);
        return -1;
    }
    strcpy(sa->sun_path, path);
    return 0;
}

/* A bare name, where npipes puts it (docs/protocol.md section 6). */
static int bare_name_path(const char *name, char *out, size_t size)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR"), *tmp = getenv("TMPDIR");
    struct stat st;
    int n;
    if (xdg && xdg[0] == '/' && stat(xdg, &st) == 0 && S_ISDIR(st.st_mode) &&
        st.st_uid == getuid() && access(xdg, W_OK | X_OK) == 0)
        n = snprintf(out, size, "%s/npipes/%s.sock", xdg, name);
    else
        n = snprintf(out, size, "%s/npipes-%lu/%s.sock", tmp && *tmp ? tmp : "/tmp",
                     (unsigned long)getuid(), name);
    return n > 0 && (size_t)n < size ? 0 : -1;
}

np_conn *npio_connect(const char *address)
{
    struct sockaddr_un sa;
    char path[sizeof sa.sun_path + 1];
    if (strchr(address, '/')) {
        snprintf(path, sizeof path, "%s", address);
    } else if (bare_name_path(address, path, sizeof path) != 0) {
        fprintf(stderr, "%s: socket path for %s is too long\n", prog, address);
        return NULL;
    }
    if (make_addr(path, &sa) != 0) return NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) { npio_perror("socket"); return NULL; }
    while (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno == EINTR) continue;
        npio_perror(path);
        close(fd);
        return NULL;
    }
    np_conn *c = (np_conn *)malloc(sizeof *c);
    if (!c) { close(fd); return NULL; }
    c->fd = fd;
    return c;
}

static void on_signal(int sig)
{
    if (sock_path[0]) unlink(sock_path); /* async-signal-safe */
    _exit(128 + sig);
}

np_listener *npio_listen(const char *address)
{
    struct sockaddr_un sa;
    if (!strchr(address, '/')) {
        fprintf(stderr, "%s: give a socket path (containing a '/'), not %s\n", prog, address);
        return NULL;
    }
    if (make_addr(address, &sa) != 0) return NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) { npio_perror("socket"); return NULL; }
    /* the socket file is 0600 from the moment it exists: no window for others to connect */
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc != 0) {
        npio_perror(address); /* EADDRINUSE: the file exists (a live or stale server) */
        close(fd);
        return NULL;
    }
    strcpy(sock_path, address);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
    if (listen(fd, 1) != 0) {
        npio_perror("listen");
        unlink(sock_path);
        sock_path[0] = 0;
        close(fd);
        return NULL;
    }
    np_listener *l = (np_listener *)malloc(sizeof *l);
    if (!l) { unlink(sock_path); sock_path[0] = 0; close(fd); return NULL; }
    l->fd = fd;
    return l;
}

np_conn *npio_accept(np_listener *l)
{
    int fd;
    while ((fd = accept(l->fd, NULL, NULL)) < 0) {
        if (errno == EINTR) continue;
        npio_perror("accept");
        return NULL;
    }
    np_conn *c = (np_conn *)malloc(sizeof *c);
    if (!c) { close(fd); return NULL; }
    c->fd = fd;
    return c;
}

void npio_close_listener(np_listener *l)
{
    if (!l) return;
    close(l->fd);
    if (sock_path[0]) unlink(sock_path);
    sock_path[0] = 0;
    free(l);
}

long npio_read(void *conn, void *buf, size_t len)
{
    np_conn *c = (np_conn *)conn;
    for (;;) {
        ssize_t r = read(c->fd, buf, len);
        if (r >= 0) return (long)r; /* a short read is normal: the caller loops */
        if (errno == EINTR) continue;
        if (errno == ECONNRESET) return 0; /* the peer is gone */
        npio_perror("read");
        return -1;
    }
}

int npio_write(void *conn, const void *buf, size_t len)
{
    np_conn *c = (np_conn *)conn;
    const char *p = (const char *)buf;
    while (len > 0) {
        ssize_t r = write(c->fd, p, len);
        if (r < 0) {
            if (errno == EINTR) continue;
            npio_perror("write");
            return -1;
        }
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

void npio_close(np_conn *c)
{
    if (!c) return;
    close(c->fd);
    free(c);
}
#endif
