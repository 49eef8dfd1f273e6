"""A netserver handler in Python that uses every hook of the ``handler``
world: the same protocol as the Rust ``hook-trace`` guest, so that the
conformance kit of the test suite checks it the same way.

- every hook logs ``hook <name>`` at level notice (the ``log`` import);
- ``post-accept-hook`` tells the client who it is (``client.info``) and the
  ``greeting`` property (``properties.get``);
- ``allow-deny-hook`` refuses the client when property ``deny`` is ``yes``,
  and ``request-denied-hook`` then says ``denied``;
- ``process-request`` echoes as Net::Server does; it writes a line to
  stderr, which the host logs;
- ``post-process-request-hook`` says ``bye``.
"""

import sys

from wit_world import exports
from wit_world.imports import client, log, properties


def trace(name: str) -> None:
    log.log(log.Level.NOTICE, f"hook {name}")


def say(line: str) -> None:
    try:
        write_all(sys.stdout.buffer, line.encode() + b"\r\n")
    except OSError:
        # The client may be gone; nothing to do about it here.
        pass


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
    """Net::Server's echo: each line answered until quit or end of input."""
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


class Hooks(exports.Hooks):
    def child_init_hook(self) -> None:
        trace("child-init-hook")

    def post_accept_hook(self) -> None:
        trace("post-accept-hook")
        c = client.info()
        if c is not None:
            host = c.peer_host if c.peer_host is not None else "-"
            say(
                f"peer={c.peer_addr}:{c.peer_port} local={c.local_addr}:{c.local_port} "
                f"proto={c.proto} service={c.service} host={host}"
            )
        cred = client.credentials()
        if cred is not None:
            say(f"uid={cred.uid} gid={cred.gid} pid={cred.pid}")
        greeting = properties.get("greeting")
        say(f"prop greeting={greeting if greeting is not None else '-'}")

    def allow_deny_hook(self) -> bool:
        trace("allow-deny-hook")
        return properties.get("deny") != "yes"

    def request_denied_hook(self) -> None:
        trace("request-denied-hook")
        say("denied")

    def process_request(self) -> None:
        trace("process-request")
        sys.stderr.write("stderr from hook-trace\n")
        sys.stderr.flush()
        serve(sys.stdin.buffer, sys.stdout.buffer)

    def post_process_request_hook(self) -> None:
        trace("post-process-request-hook")
        say("bye")

    def post_client_connection_hook(self) -> None:
        trace("post-client-connection-hook")

    def child_finish_hook(self) -> None:
        trace("child-finish-hook")

    def dequeue(self) -> None:
        trace("dequeue")
