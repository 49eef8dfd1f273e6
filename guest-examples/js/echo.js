// Net::Server's default echo server, as a netserver handler in JavaScript:
// what the Rust `echo` answers, byte for byte. Every line the client sends
// is answered with `You said '<line>'`; a line containing `quit` is
// answered and then ends the connection. A datagram is answered with
// `You said "<datagram>"`.
//
// Built with ComponentizeJS (jco componentize) against the world in
// wit/js.wit, which is `netserver:handler`'s `handler` world (host/build.rs
// runs this when node_modules is installed):
//
//   npx jco componentize echo.js --wit wit --world-name js-handler \
//       --disable all -o js-echo.wasm
import { info } from "netserver:handler/client@0.1.5";
import { log, enabled } from "netserver:handler/log@0.1.5";
import { doesNothing } from "netserver:handler/hook-hints@0.1.5";
import { answerDatagram, reset, serveEcho } from "./stdio.js";

// The hooks: those echo does not need tell the host so, once, and are not
// called again (as the Rust SDK's defaults do).
export const hooks = {
  childInitHook() {
    doesNothing("child-init-hook");
  },
  postAcceptHook() {
    if (!enabled("info")) return;
    const c = info();
    if (c !== undefined) {
      log("info", `echo serves ${c.peerAddr}:${c.peerPort} on ${c.localAddr}:${c.localPort}`);
    }
  },
  allowDenyHook() {
    doesNothing("allow-deny-hook");
    return true;
  },
  requestDeniedHook() {
    doesNothing("request-denied-hook");
  },
  processRequest() {
    reset();
    const c = info();
    if (c !== undefined && (c.proto === "udp" || c.proto === "unixdgram")) {
      answerDatagram();
    } else {
      serveEcho();
    }
  },
  postProcessRequestHook() {
    doesNothing("post-process-request-hook");
  },
  postClientConnectionHook() {
    doesNothing("post-client-connection-hook");
  },
  childFinishHook() {
    doesNothing("child-finish-hook");
  },
  dequeue() {
    doesNothing("dequeue");
  },
};
