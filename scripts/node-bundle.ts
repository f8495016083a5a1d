/**
 * Bundles a TypeScript entry point into one CommonJS file for Node (`deno bundle --platform
 * node`): how the release binary, the signing worker and the benchmark's Node programs are
 * built.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** Bundles `entry` (relative to the repository root, or absolute) into `out`. */
export async function bundleForNode(entry: string, out: string): Promise<void> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "node", "--format", "cjs", "-o", out, entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    const text = new TextDecoder().decode(output.stderr) + new TextDecoder().decode(output.stdout);
    throw new Error(`bundling ${entry} failed:\n${text}`);
  }
}
