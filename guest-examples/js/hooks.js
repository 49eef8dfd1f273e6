// A netserver handler in JavaScript that uses every hook of the `handler`
// world: the same protocol as the Rust `hook-trace` guest, so that the
// conformance kit of the test suite checks it the same way.
//
// - every hook logs `hook <name>` at level notice (the `log` import);
// - `post-accept-hook` tells the client who it is (`client.info`) and the
//   `greeting` property (`properties.get`);
// - `allow-deny-hook` refuses the client when property `deny` is `yes`,
//   and `request-denied-hook` then says `denied`;
// - `process-request` echoes as Net::Server does; it writes a line to
//   stderr, which the host logs;
// - `post-process-request-hook` says `bye`.
import { info, credentials } from "netserver:handler/client@0.1.5";
import { log } from "netserver:handler/log@0.1.5";
import { get } from "netserver:handler/properties@0.1.5";
import { reset, serveEcho, write, writeStderr } from "./stdio.js";

function trace(name) {
  log("notice", `hook ${name}`);
}

function say(line) {
  write(`${line}\r\n`);
}

export const hooks = {
  childInitHook() {
    trace("child-init-hook");
  },
  postAcceptHook() {
    trace("post-accept-hook");
    reset();
    const c = info();
    if (c !== undefined) {
      const host = c.peerHost ?? "-";
      say(
        `peer=${c.peerAddr}:${c.peerPort} local=${c.localAddr}:${c.localPort} ` +
          `proto=${c.proto} service=${c.service} host=${host}`,
      );
    }
    const cred = credentials();
    if (cred !== undefined) {
      say(`uid=${cred.uid} gid=${cred.gid} pid=${cred.pid}`);
    }
    say(`prop greeting=${get("greeting") ?? "-"}`);
  },
  allowDenyHook() {
    trace("allow-deny-hook");
    return get("deny") !== "yes";
  },
  requestDeniedHook() {
    trace("request-denied-hook");
    say("denied");
  },
  processRequest() {
    trace("process-request");
    writeStderr("stderr from hook-trace\n");
    serveEcho();
  },
  postProcessRequestHook() {
    trace("post-process-request-hook");
    say("bye");
  },
  postClientConnectionHook() {
    trace("post-client-connection-hook");
  },
  childFinishHook() {
    trace("child-finish-hook");
  },
  dequeue() {
    trace("dequeue");
  },
};
