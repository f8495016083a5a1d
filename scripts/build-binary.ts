/**
 * Builds the release binary `dist/sentry`: a Node.js single executable application.
 * Steps: bundle main.ts into one CommonJS file (and the signing worker into another, embedded
 * as a SEA asset), turn them into a SEA blob with
 * `node --experimental-sea-config`, inject the blob into a copy of the release runtime's `node`
 * binary with postject, and write `dist/sentry.sha256`. The runtime is the official Node.js
 * release pinned in scripts/node-runtime.ts ({@link RELEASE_NODE}, fetched from the npm
 * registry and checked against its integrity on first use), never the build machine's `node`:
 * the blob must be made by the very binary it is injected into. Works offline once the runtime
 * and postject are cached.
 */
import { createHash } from "node:crypto";
import { chmod, copyFile, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SERVING_THREAD_BUNDLE, SIGNING_WORKER_BUNDLE } from "../src/server/worker-script.ts";
import { bundleForNode } from "./node-bundle.ts";
import { pinnedNode, RELEASE_NODE } from "./node-runtime.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const DIST = join(ROOT, "dist");
const BUNDLE = join(DIST, "sentry.cjs");
const WORKER_BUNDLE_FILE = join(DIST, SIGNING_WORKER_BUNDLE);
const SERVING_BUNDLE_FILE = join(DIST, SERVING_THREAD_BUNDLE);
const BLOB = join(DIST, "sentry.blob");
const SEA_CONFIG = join(DIST, "sea-config.json");
const BINARY = join(DIST, "sentry");
/** The fuse Node's SEA documentation names; postject flips it to enable the blob. */
const SEA_FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2";

async function step(description: string, program: string, args: string[]): Promise<void> {
  const output = await new Deno.Command(program, {
    args,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!output.success) {
    const text = new TextDecoder().decode(output.stderr) + new TextDecoder().decode(output.stdout);
    throw new Error(`${description} failed (${program} ${args.join(" ")}):\n${text}`);
  }
}

const node = await pinnedNode(RELEASE_NODE);
await bundleForNode("main.ts", BUNDLE);
await bundleForNode("src/server/signing-worker-main.ts", WORKER_BUNDLE_FILE);
await bundleForNode("src/server/serving-thread-main.ts", SERVING_BUNDLE_FILE);
await writeFile(
  SEA_CONFIG,
  JSON.stringify(
    {
      main: BUNDLE,
      output: BLOB,
      disableExperimentalSEAWarning: true,
      useCodeCache: true,
      // V8 sizes the old generation's growth by its limit: with the default limit (a share of
      // the machine's memory, gigabytes) the heap and the Buffers it keeps alive grow to ~180 MB
      // before a full collection; a 512 MB limit makes V8 collect earlier (peak RSS ~140 MB
      // after 10,000 certificates, same CPU per certificate; bench/binary.ts). Far above what
      // a burst of 10,000 callers needs (see the README's numbers).
      execArgv: ["--max-old-space-size=512"],
      // The worker threads' code (worker-script.ts): signing workers, serving threads.
      assets: {
        [SIGNING_WORKER_BUNDLE]: WORKER_BUNDLE_FILE,
        [SERVING_THREAD_BUNDLE]: SERVING_BUNDLE_FILE,
      },
    },
    null,
    2,
  ),
);
await step("preparing the SEA blob", node, ["--experimental-sea-config", SEA_CONFIG]);
await rm(BINARY, { force: true });
await copyFile(node, BINARY);
await chmod(BINARY, 0o755);
await step("injecting the blob with postject", "npx", [
  "-y",
  "postject@1.0.0-alpha.6",
  BINARY,
  "NODE_SEA_BLOB",
  BLOB,
  "--sentinel-fuse",
  SEA_FUSE,
]);
await rm(BLOB, { force: true });
await rm(SEA_CONFIG, { force: true });

const digest = createHash("sha256").update(await readFile(BINARY)).digest("hex");
await writeFile(`${BINARY}.sha256`, `${digest}  sentry\n`);
const size = (await stat(BINARY)).size;
console.log(`built ${BINARY} (${(size / 1048576).toFixed(1)} MiB, from ${node}), sha256 ${digest}`);
