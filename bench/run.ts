/**
 * Benchmarks (not tests): prints numbers, asserts nothing.
 *   1. In-process signing core (bench/signer.ts) on Node (the release runtime) and on Deno:
 *      decode + verify an ECDSA P-256 CSR, build and sign a workload certificate, one core.
 *   2. End-to-end SignCertificate over TLS against a real sentry process (the Node bundle, or
 *      SENTRY_BIN), with 1 and 32 concurrent callers: certificates/s, p50 and p99, errors.
 * Usage: deno task bench [--seconds N]
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SentryClient } from "../tests/helpers/grpc_client.ts";
import { generateKey, makeCsr } from "../tests/helpers/openssl.ts";
import { sentryCommand, startSentry, tempDir } from "../tests/helpers/sentry_process.ts";

const secondsFlag = Deno.args.indexOf("--seconds");
const SECONDS = secondsFlag >= 0 ? Number(Deno.args[secondsFlag + 1]) : 5;
const HERE = fileURLToPath(new URL(".", import.meta.url));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function run(program: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(program, { args, stderr: "inherit" }).output();
  if (!output.success) throw new Error(`${program} ${args.join(" ")} failed`);
  return new TextDecoder().decode(output.stdout).trim();
}

async function benchInProcess(csrFile: string, work: string): Promise<void> {
  const bundle = join(work, "bench-signer.cjs");
  await run(Deno.execPath(), [
    "bundle",
    "--quiet",
    "--platform",
    "node",
    "--format",
    "cjs",
    "-o",
    bundle,
    join(HERE, "signer.ts"),
  ]);
  const runs = [
    ["node", [bundle, csrFile, String(SECONDS)]],
    [Deno.execPath(), ["run", "--allow-all", join(HERE, "signer.ts"), csrFile, String(SECONDS)]],
  ] as const;
  for (const [program, args] of runs) {
    const result = JSON.parse(await run(program, [...args]));
    console.log(
      `in-process signer on ${result.runtime} (one core, ECDSA P-256 CSR and issuer): ` +
        `${result.certificatesPerSecond} certificates/s (${result.count} in ${result.seconds} s)`,
    );
  }
}

async function benchEndToEnd(csrPem: string, work: string): Promise<void> {
  const sentry = await startSentry({ dir: join(work, "certs") });
  const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
  const [program, ...prefix] = sentryCommand();
  console.log(
    `end-to-end SignCertificate over TLS against ${await run(program, [...prefix, "--version"])}:`,
  );
  try {
    for (const callers of [1, 32]) {
      const client = new SentryClient(sentry.grpcPort, anchors);
      await client.sign({ id: "warm", namespace: "default", certificateSigningRequest: csrPem });
      const latencies: number[] = [];
      let errors = 0;
      const start = performance.now();
      const end = start + SECONDS * 1000;
      await Promise.all(Array.from({ length: callers }, async (_, worker) => {
        while (performance.now() < end) {
          const t0 = performance.now();
          try {
            await client.sign({
              id: `app${worker}`,
              namespace: "default",
              certificateSigningRequest: csrPem,
            });
            latencies.push(performance.now() - t0);
          } catch {
            errors++;
          }
        }
      }));
      const elapsed = (performance.now() - start) / 1000;
      client.close();
      latencies.sort((a, b) => a - b);
      console.log(
        `  ${String(callers).padStart(2)} caller(s): ${
          (latencies.length / elapsed).toFixed(0)
        } certificates/s, ` +
          `p50 ${percentile(latencies, 50).toFixed(2)} ms, p99 ${
            percentile(latencies, 99).toFixed(2)
          } ms, ` +
          `errors ${errors}`,
      );
    }
  } finally {
    await sentry.stop();
  }
}

const work = await tempDir("sentry-bench-");
const csrPem = await makeCsr(work, await generateKey("ec-p256"));
const csrFile = join(work, "bench.csr");
await Deno.writeTextFile(csrFile, csrPem);
await benchInProcess(csrFile, work);
await benchEndToEnd(csrPem, work);
await Deno.remove(work, { recursive: true });
