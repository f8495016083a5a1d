/**
 * The cost of JWT-SVIDs: SignCertificate throughput and latency of our sentry (the Node bundle)
 * with `--jwt-enabled` (a token for the trust domain plus one per requested audience, signed
 * with the generated RSA-2048 key) against the same server without it, under the Node load
 * generator (bench/load.ts, its own process). Prints numbers, asserts nothing.
 *
 * Usage: deno run -A bench/jwt.ts [--seconds N] [--callers N] [--audiences a,b]
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { bundleForNode } from "../scripts/node-bundle.ts";
import { generateKey, makeCsr } from "../tests/helpers/openssl.ts";
import { startSentry, tempDir } from "../tests/helpers/sentry_process.ts";
import type { LoadPlan, LoadResult } from "./load.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

function flag(name: string, fallback: string): string {
  const at = Deno.args.indexOf(`--${name}`);
  return at >= 0 ? Deno.args[at + 1] : fallback;
}

const SECONDS = Number(flag("seconds", "5"));
const CALLERS = Number(flag("callers", "32"));
const AUDIENCES = flag("audiences", "aud1").split(",").filter(Boolean);

const work = await tempDir("bench-jwt-");
const loadBundle = join(work, "load.cjs");
await bundleForNode(join(ROOT, "bench", "load.ts"), loadBundle);
const csrPem = await makeCsr(work, await generateKey("ec-p256"));

/** One measured run against a fresh sentry started with `args`. */
async function measure(args: string[]): Promise<LoadResult> {
  const sentry = await startSentry({ args });
  try {
    const plan: LoadPlan = {
      target: "sentry",
      port: sentry.grpcPort,
      csrPem,
      anchorsPem: await Deno.readTextFile(join(sentry.dir, "ca.crt")),
      callers: CALLERS,
      seconds: SECONDS,
      jwtAudiences: AUDIENCES,
      // Verified as daprd does: sentry's SPIFFE ID (default trust domain and namespace).
      spiffeId: "spiffe://localhost/ns/default/dapr-sentry",
    };
    const output = await new Deno.Command("node", {
      args: [loadBundle, JSON.stringify(plan)],
      stderr: "inherit",
    }).output();
    if (!output.success) throw new Error(`load generator failed (exit ${output.code})`);
    return JSON.parse(new TextDecoder().decode(output.stdout));
  } finally {
    await sentry.stop();
  }
}

const off = await measure([]);
const on = await measure(["--jwt-enabled"]);
const row = (name: string, r: LoadResult) =>
  `  ${name.padEnd(10)} ${String(Math.round(r.certificatesPerSecond)).padStart(7)}/s  p50 ${
    r.p50Ms.toFixed(2)
  } ms  p99 ${r.p99Ms.toFixed(2)} ms  errors ${JSON.stringify(r.errors)}`;
console.log(
  `SignCertificate with and without JWT-SVIDs (${CALLERS} callers, ${SECONDS} s, audiences ` +
    `${AUDIENCES.join(",") || "none"} + the trust domain; Node bundle, P-256 CSR):\n` +
    `${row("JWT off", off)}\n${row("JWT on", on)}\n` +
    `  JWT on / off: ${(on.certificatesPerSecond / off.certificatesPerSecond).toFixed(2)}`,
);
await Deno.remove(work, { recursive: true });
