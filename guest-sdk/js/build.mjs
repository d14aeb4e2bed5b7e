#!/usr/bin/env node
// Builds a JavaScript step into a WebAssembly component of the world `step`.
//
//   node build.mjs [--engine quickjs|spidermonkey] [--wit DIR] STEP.js OUT.wasm
//
// The step imports the SDK as "wasaga"; the build bundles it (rolldown) and
// hands the module to the engine's componentizer, which pre-initializes the
// engine with the module loaded (a Wizer snapshot), so a call starts warm.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { rolldown } from "rolldown";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const [, value] = args.splice(at, 2);
  return value;
};
const engine = option("--engine", "quickjs");
const wit = resolve(option("--wit", join(here, "..", "..", "wit")));
const [entry, out] = args;
if (!entry || !out || !["quickjs", "spidermonkey"].includes(engine)) {
  console.error("usage: node build.mjs [--engine quickjs|spidermonkey] [--wit DIR] STEP.js OUT.wasm");
  process.exit(2);
}

const bundle = await rolldown({
  input: resolve(entry),
  external: [/^wasaga:/, /^wasi:/],
  platform: "neutral",
  resolve: {
    alias: {
      wasaga: join(here, "wasaga.js"),
      // Outbound HTTP links only on SpiderMonkey (see http-unavailable.js).
      "wasaga-http": join(here, engine === "spidermonkey" ? "http.js" : "http-unavailable.js"),
    },
  },
  logLevel: "warn",
});
const { output } = await bundle.generate({ format: "esm" });
const source = output[0].code;

let component;
if (engine === "quickjs") {
  const { componentize } = await import("componentize-qjs");
  ({ component } = await componentize({ witPath: wit, jsSource: source, world: "step", sync: true }));
} else {
  const { componentize } = await import("@bytecodealliance/componentize-js");
  ({ component } = await componentize(source, {
    witPath: wit,
    // `step` with wasi:http/outgoing-handler, which the SDK's http.js uses.
    worldName: "step-http",
    // No fetch: the engine's own HTTP would bypass nothing (the host checks
    // every request), but steps use the SDK's synchronous client.
    disableFeatures: ["http", "fetch-event"],
  }));
}
mkdirSync(dirname(resolve(out)), { recursive: true });
writeFileSync(out, component);
console.error(`built ${out} (${engine}, ${(component.length / 1024).toFixed(0)} KiB)`);
