#!/usr/bin/env python3
"""Sends the same requests to two HTTP servers serving the same wasi:http
component and compares their responses byte for byte (bench/http).

    bench/http_compare.py 127.0.0.1:PORT_A 127.0.0.1:PORT_B

Each request goes on a connection of its own, asks the server to close it
(`connection: close`), and the whole response is read to the end. The only
bytes masked are the value of the `date` header, which every HTTP server
sets to its clock. Prints one line per request and `N identical, N
different`; exits 1 if any response differs. Loopback only; every socket
has a timeout.
"""

import re
import socket
import sys

TIMEOUT = 10

# (name, raw request): methods, headers, bodies, streaming, errors.
REQUESTS = [
    ("GET /", b"GET / HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n\r\n"),
    ("HEAD /", b"HEAD / HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n\r\n"),
    ("GET / over HTTP/1.0", b"GET / HTTP/1.0\r\nhost: bench.test\r\n\r\n"),
    (
        "PUT /echo with a body",
        b"PUT /echo HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n"
        b"content-type: application/json\r\ncontent-length: 13\r\n\r\n{\"a\": [1, 2]}",
    ),
    (
        "POST /echo with a chunked body",
        b"POST /echo HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n"
        b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ),
    (
        "POST /echo with a 100 KiB body",
        b"POST /echo HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n"
        b"content-length: 102400\r\n\r\n" + bytes(i % 251 for i in range(102400)),
    ),
    ("DELETE /echo", b"DELETE /echo HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n\r\n"),
    ("OPTIONS /echo", b"OPTIONS /echo HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n\r\n"),
    (
        "GET /headers with headers of its own",
        b"GET /headers HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n"
        b"x-one: 1\r\nx-two: two words\r\naccept: text/plain\r\n\r\n",
    ),
    ("GET /stream?n=200 (streamed, chunked)", b"GET /stream?n=200 HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n\r\n"),
    ("GET /status/404", b"GET /status/404 HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n\r\n"),
    ("GET /status/503", b"GET /status/503 HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n\r\n"),
    ("GET /no-such-route", b"GET /no-such-route HTTP/1.1\r\nhost: bench.test\r\nconnection: close\r\n\r\n"),
]

DATE = re.compile(rb"(?im)^(date:) [^\r\n]*")


def fetch(addr, raw):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return DATE.sub(rb"\1 (masked)", b"".join(chunks))


def main():
    a, b = sys.argv[1], sys.argv[2]
    same = differ = 0
    for name, raw in REQUESTS:
        ra, rb_ = fetch(a, raw), fetch(b, raw)
        status = ra.split(b"\r\n", 1)[0].decode(errors="replace")
        if ra == rb_:
            same += 1
            print(f"identical  {name}: {status}, {len(ra)} bytes")
        else:
            differ += 1
            print(f"DIFFERENT  {name}:\n  {a}: {ra[:300]!r}\n  {b}: {rb_[:300]!r}")
    print(f"{same} identical, {differ} different")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
