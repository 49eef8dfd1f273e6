/*
 * Net::Server's echo as a plain WASI command in C: what the Rust `echo`
 * handler answers, byte for byte, from a program that knows nothing of
 * netserver. Built with the distribution's clang, lld and wasi-libc for
 * WASI preview 1 (a core module); netserver-host adapts it to a component
 * when it loads it and serves it inetd-style: stdin and stdout are the
 * client, its addresses are in the environment (TCPREMOTEIP, PROTO, ...).
 *
 *   make                      # echo.wasm (see the Makefile)
 *   netserver-host --module echo.wasm
 *
 * A line ends at \n; that \n and one \r before it are not part of the
 * line. Each line is answered with `You said '<line>'\r\n`, flushed before
 * the next is read; after a line that contains `quit` the program ends.
 * A datagram (PROTO UDP or UNIXDGRAM) is answered with `You said "<data>"`
 * in one write: one reply datagram.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether `needle` occurs in the `len` bytes at `haystack` (which may hold
 * NUL bytes, so no strstr). */
static int contains(const char *haystack, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++) {
        if (memcmp(haystack + i, needle, n) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Reads all of stdin and answers it as one datagram. */
static int answer_datagram(void) {
    size_t cap = 4096, len = 0;
    char *data = malloc(cap);
    if (data == NULL) {
        return 1;
    }
    size_t got;
    while ((got = fread(data + len, 1, cap - len, stdin)) > 0) {
        len += got;
        if (len == cap) {
            cap *= 2;
            char *bigger = realloc(data, cap);
            if (bigger == NULL) {
                free(data);
                return 1;
            }
            data = bigger;
        }
    }
    size_t reply_len = len + 11;
    char *reply = malloc(reply_len);
    if (reply == NULL) {
        free(data);
        return 1;
    }
    memcpy(reply, "You said \"", 10);
    memcpy(reply + 10, data, len);
    reply[reply_len - 1] = '"';
    fwrite(reply, 1, reply_len, stdout);
    fflush(stdout);
    free(reply);
    free(data);
    return 0;
}

int main(void) {
    const char *proto = getenv("PROTO");
    if (proto != NULL && (strcmp(proto, "UDP") == 0 || strcmp(proto, "UNIXDGRAM") == 0)) {
        return answer_datagram();
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        size_t text = (size_t)len;
        if (text > 0 && line[text - 1] == '\n') {
            text--;
            if (text > 0 && line[text - 1] == '\r') {
                text--;
            }
        }
        fputs("You said '", stdout);
        fwrite(line, 1, text, stdout);
        fputs("'\r\n", stdout);
        if (fflush(stdout) != 0) {
            break;
        }
        if (contains(line, text, "quit")) {
            break;
        }
    }
    free(line);
    return 0;
}
