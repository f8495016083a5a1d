/**
 * Dapr's own sentry as the benchmark's anchor: the release pinned in tests/dapr/go.mod, built
 * by tests/dapr/build.sh, run in standalone mode with its own flags on free loopback ports, as
 * Dapr's integration framework runs it (the same harness as ours: tests/helpers/sentry_process.ts).
 *
 * Standalone mode needs a Configuration file (without `--config` Dapr's sentry looks for a file
 * named `daprsystem` and exits): an empty spec, which leaves the INSECURE validator as the
 * default. On an empty credentials directory it generates an Ed25519 root and issuer, writes
 * them, and then, seeing its own files change, reloads its CA server (closing every connection)
 * once per file, about two seconds apart. So the load phases give it a copy of a bundle made
 * beforehand (it then never reloads); only the start-up figure is taken on an empty directory.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type RunningSentry, startSentry } from "../tests/helpers/sentry_process.ts";

const GO_MOD = fileURLToPath(new URL("../tests/dapr/go.mod", import.meta.url));

/** The files of a trust bundle, named as both sentries name them by default. */
const BUNDLE_FILES = ["ca.crt", "issuer.crt", "issuer.key"];

/** The Dapr release tests/dapr/go.mod pins (the one place that names it). */
export async function daprVersion(): Promise<string> {
  const text = await Deno.readTextFile(GO_MOD);
  // `require github.com/dapr/dapr vX` or a line of a `require (...)` block.
  return /^(?:require)?\s*github\.com\/dapr\/dapr (v\S+)/m.exec(text)?.[1] ?? "unknown";
}

/** Copies the trust bundle in `from` (ca.crt, issuer.crt, issuer.key) into a new `to`. */
export async function copyBundle(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true, mode: 0o700 });
  for (const file of BUNDLE_FILES) {
    await Deno.copyFile(join(from, file), join(to, file));
    await Deno.chmod(join(to, file), 0o600);
  }
}

/**
 * Starts Dapr's sentry at `binary` on the credentials directory `dir` (empty: it generates a
 * CA; see the module note) and waits until its /healthz answers 200.
 */
export async function startDaprSentry(binary: string, dir: string): Promise<RunningSentry> {
  const config = `${dir}.config.yaml`;
  await Deno.writeTextFile(
    config,
    "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\nspec: {}\n",
  );
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  return await startSentry({ command: [binary], dir, args: [`--config=${config}`] });
}
