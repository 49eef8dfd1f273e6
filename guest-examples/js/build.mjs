// Builds a JavaScript handler into a component with ComponentizeJS:
//   node build.mjs SOURCE.js OUT.wasm
// against the `js-handler` world of wit/js.wit (netserver:handler's
// `handler` world and the WASI stdio streams). No WASI feature of the
// engine is enabled: a handler gets no clocks, random, HTTP or console
// import it does not use (the host would refuse what it does not serve).
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const [source, out] = process.argv.slice(2);
if (!source || !out) {
  console.error("usage: node build.mjs SOURCE.js OUT.wasm");
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const { component } = await componentize({
  sourcePath: source,
  witPath: join(here, "wit"),
  worldName: "js-handler",
  disableFeatures: ["clocks", "http", "random", "stdio", "fetch-event"],
});
await writeFile(out, component);
