/**
 * Benchmarks (not tests): prints numbers, asserts nothing.
 *   1. In-process signing core: decode + verify a CSR, build and sign a workload certificate.
 *   2. End-to-end SignCertificate over TLS against a real sentry process, with 1 and 32
 *      concurrent callers: certificates/s, p50 and p99 latency, errors.
 * Usage: deno task bench [--seconds N]   (SENTRY_BIN=dist/sentry benchmarks a binary)
 */
import { join } from "node:path";
import { generateBundle, validateBundle } from "../src/ca/bundle.ts";
import { decodeCsr } from "../src/ca/csr.ts";
import { issueWorkloadCertificate } from "../src/ca/signer.ts";
import { SpiffeId } from "../src/ca/spiffe.ts";
import { SentryClient } from "../tests/helpers/grpc_client.ts";
import { generateKey, makeCsr } from "../tests/helpers/openssl.ts";
import { sentryCommand, startSentry, tempDir } from "../tests/helpers/sentry_process.ts";

const secondsFlag = Deno.args.indexOf("--seconds");
const SECONDS = secondsFlag >= 0 ? Number(Deno.args[secondsFlag + 1]) : 5;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function benchInProcess(csrPem: string): void {
  const now = new Date();
  const bundle = validateBundle(
    generateBundle({
      trustDomain: "cluster.local",
      namespace: "default",
      algorithm: "ecdsa-p256",
      now,
      ttlMs: 365 * 86_400_000,
      skewMs: 900_000,
    }),
    now,
  );
  const id = SpiffeId.forWorkload("public", "default", "bench");
  const csr = new TextEncoder().encode(csrPem);
  let count = 0;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  while (performance.now() < end) {
    for (let i = 0; i < 50; i++) {
      const { subjectPublicKeyInfo } = decodeCsr(csr);
      issueWorkloadCertificate(bundle, id, subjectPublicKeyInfo, {
        ttlMs: 86_400_000,
        skewMs: 900_000,
      }, new Date());
    }
    count += 50;
  }
  const elapsed = (performance.now() - start) / 1000;
  console.log(
    `in-process signer (deno ${Deno.version.deno}, one core, ECDSA P-256 CSR + issuer): ` +
      `${(count / elapsed).toFixed(0)} certificates/s (${count} in ${elapsed.toFixed(1)} s)`,
  );
}

async function benchEndToEnd(csrPem: string, work: string): Promise<void> {
  const sentry = await startSentry({ dir: join(work, "certs") });
  const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
  const runtime = (await new Deno.Command(sentryCommand()[0], {
    args: [...sentryCommand().slice(1), "--version"],
  }).output()).stdout;
  console.log(`end-to-end against: ${new TextDecoder().decode(runtime).trim()}`);
  try {
    for (const callers of [1, 32]) {
      const client = new SentryClient(sentry.grpcPort, anchors);
      await client.sign({ id: "warm", namespace: "default", certificateSigningRequest: csrPem });
      const latencies: number[] = [];
      let errors = 0;
      const end = performance.now() + SECONDS * 1000;
      const start = performance.now();
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
benchInProcess(csrPem);
await benchEndToEnd(csrPem, work);
await Deno.remove(work, { recursive: true });
