// The client connection, as the guest's WASI stdin and stdout: blocking
// reads and writes on the streams the host connects to the client during
// the connection hooks. Shared by the JavaScript handlers.
import { getStdin } from "wasi:cli/stdin@0.2.12";
import { getStdout } from "wasi:cli/stdout@0.2.12";
import { getStderr } from "wasi:cli/stderr@0.2.12";

const encoder = new TextEncoder();

// Bytes read but not yet handed out as a line.
let pending = new Uint8Array(0);
let eof = false;

function concat(a, b) {
  const both = new Uint8Array(a.length + b.length);
  both.set(a, 0);
  both.set(b, a.length);
  return both;
}

// The next chunk of stdin (waits for one), or null at end of input.
function readChunk(stdin) {
  try {
    return stdin.blockingRead(65536n);
  } catch (e) {
    // StreamError `closed` is the end of input; a failed read ends it too.
    return null;
  }
}

// The next line of stdin with its `\n`, or what is left before end of
// input (the last line may have none); null once everything was read.
export function readLine() {
  const stdin = getStdin();
  for (;;) {
    const nl = pending.indexOf(10);
    if (nl >= 0) {
      const line = pending.slice(0, nl + 1);
      pending = pending.slice(nl + 1);
      return line;
    }
    if (eof) {
      if (pending.length === 0) return null;
      const line = pending;
      pending = new Uint8Array(0);
      return line;
    }
    const chunk = readChunk(stdin);
    if (chunk === null) eof = true;
    else pending = concat(pending, chunk);
  }
}

// Everything left on stdin (a datagram).
export function readAll() {
  const stdin = getStdin();
  let all = pending;
  pending = new Uint8Array(0);
  for (;;) {
    const chunk = readChunk(stdin);
    if (chunk === null) return all;
    all = concat(all, chunk);
  }
}

// Writes `bytes` (a Uint8Array or a string) to `stream` and flushes, in
// pieces of at most 4096 bytes (what one blocking write may take).
function writeTo(stream, bytes) {
  const data = typeof bytes === "string" ? encoder.encode(bytes) : bytes;
  for (let at = 0; at < data.length || at === 0; at += 4096) {
    stream.blockingWriteAndFlush(data.subarray(at, at + 4096));
    if (data.length === 0) break;
  }
}

// Writes to the client; false when it is gone.
export function write(bytes) {
  try {
    writeTo(getStdout(), bytes);
    return true;
  } catch (e) {
    return false;
  }
}

// Writes a line to stderr, which the host logs.
export function writeStderr(text) {
  try {
    writeTo(getStderr(), text);
  } catch (e) {
    // The log is the host's: nothing to do if it refuses.
  }
}

// Forgets what a previous connection of the same instance left unread.
export function reset() {
  pending = new Uint8Array(0);
  eof = false;
}

// Net::Server's echo: each line answered with `You said '<line>'\r\n`
// until a line containing `quit` or the end of input.
export function serveEcho() {
  const quit = encoder.encode("quit");
  for (;;) {
    const line = readLine();
    if (line === null) return;
    let end = line.length;
    if (end > 0 && line[end - 1] === 10) {
      end--;
      if (end > 0 && line[end - 1] === 13) end--;
    }
    const text = line.subarray(0, end);
    const reply = concat(concat(encoder.encode("You said '"), text), encoder.encode("'\r\n"));
    if (!write(reply)) return;
    if (contains(text, quit)) return;
  }
}

// Net::Server's answer to a datagram: `You said "<data>"` in one write.
export function answerDatagram() {
  const data = readAll();
  write(concat(concat(encoder.encode('You said "'), data), encoder.encode('"')));
}

function contains(haystack, needle) {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}
