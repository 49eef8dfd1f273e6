"""Net::Server's default echo server, as a netserver handler in Python.

Every line the client sends is answered with ``You said '<line>'``; a line
containing ``quit`` is answered and then ends the connection. A datagram is
answered with ``You said "<datagram>"``: what the Rust ``echo`` answers,
byte for byte.

Built with componentize-py against the ``handler`` world of
``wit/handler.wit`` (host/build.rs runs this when the toolchain is there)::

    componentize-py -d ../../../wit -w handler componentize app -o py-echo.wasm
    netserver-host --module py-echo.wasm
"""

import sys

from wit_world import exports
from wit_world.imports import client, hook_hints, log
from wit_world.imports.hook_hints import Hook


def write_all(stdout, data):
    """Writes all of ``data`` to the client: stdout is an unbuffered
    stream here (``FileIO``), one write of which may take only part of it
    (64 KiB at most)."""
    raw = getattr(stdout, "raw", stdout)
    if raw is not stdout:
        stdout.flush()
    view = memoryview(data)
    while view:
        written = raw.write(view)
        view = view[written or 0 :]


def serve(stdin, stdout):
    """Answers each line until end of input or a line containing quit."""
    while True:
        line = stdin.readline()
        if not line:
            return
        text = line
        if text.endswith(b"\n"):
            text = text[:-1]
            if text.endswith(b"\r"):
                text = text[:-1]
        write_all(stdout, b"You said '" + text + b"'\r\n")
        if b"quit" in text:
            return


def answer_datagram(stdin, stdout):
    """Reads the whole datagram and answers it in one flush: one reply."""
    data = stdin.read()
    write_all(stdout, b'You said "' + data + b'"')


class Hooks(exports.Hooks):
    """The hooks: those echo does not need tell the host so, once, and are
    not called again (as the Rust SDK's defaults do)."""

    def child_init_hook(self) -> None:
        hook_hints.does_nothing(Hook.CHILD_INIT_HOOK)

    def post_accept_hook(self) -> None:
        if not log.enabled(log.Level.INFO):
            return
        c = client.info()
        if c is not None:
            log.log(
                log.Level.INFO,
                f"echo serves {c.peer_addr}:{c.peer_port} on {c.local_addr}:{c.local_port}",
            )

    def allow_deny_hook(self) -> bool:
        hook_hints.does_nothing(Hook.ALLOW_DENY_HOOK)
        return True

    def request_denied_hook(self) -> None:
        hook_hints.does_nothing(Hook.REQUEST_DENIED_HOOK)

    def process_request(self) -> None:
        c = client.info()
        if c is not None and c.proto in ("udp", "unixdgram"):
            answer_datagram(sys.stdin.buffer, sys.stdout.buffer)
        else:
            serve(sys.stdin.buffer, sys.stdout.buffer)

    def post_process_request_hook(self) -> None:
        hook_hints.does_nothing(Hook.POST_PROCESS_REQUEST_HOOK)

    def post_client_connection_hook(self) -> None:
        hook_hints.does_nothing(Hook.POST_CLIENT_CONNECTION_HOOK)

    def child_finish_hook(self) -> None:
        hook_hints.does_nothing(Hook.CHILD_FINISH_HOOK)

    def dequeue(self) -> None:
        hook_hints.does_nothing(Hook.DEQUEUE)
