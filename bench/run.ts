/**
 * The performance benchmark (not a test: it prints numbers and asserts nothing). One run
 * measures, on this machine and at this moment:
 *   1. the OpenSSL ceiling: `openssl speed ecdsap256`, one core, turned into "verify one CSR
 *      and sign one certificate" operations per second;
 *   2. the in-process signing core (bench/signer.ts: decode and verify a P-256 CSR, build and
 *      sign the workload certificate), one core, on Node (the release binary's runtime) and
 *      on Deno;
 *   3. SignCertificate end to end over TLS against the release binary (dist/sentry) at 1, 32
 *      and 256 concurrent callers, load from a separate process (bench/load.ts);
 *   4. the same load shape against `cfssl serve` (Debian's golang-cfssl, installed here when
 *      missing) signing the same CSR with an ECDSA P-256 CA, and the ratio ours / CFSSL; CFSSL
 *      over plain HTTP is the reference (as the performance issue sets it), CFSSL over HTTPS
 *      is measured too, since sentry's gRPC is always TLS;
 *   5. the release binary's peak RSS after 100,000 certificates, and its time from start to
 *      a healthy /healthz on a new credentials directory;
 *   6. a burst of 10,000 callers at once on a fresh release binary (default
 *      --max-concurrent-requests), each retrying with backoff when told to: all served, how
 *      many retries, how long, and the peak RSS.
 * It prints a table and writes bench/results.json (bench/results.quick.json for --quick),
 * including each target of the performance issue and whether this run met it.
 *
 * Usage: deno task bench [--quick] [--seconds N] [--certificates N]
 *   --quick         a smoke run for CI: short phases, 5,000 certificates for the RSS figure
 *   --seconds N     measured seconds per load phase (default 10; 1 with --quick)
 *   --certificates  certificates before reading the peak RSS (default 100,000)
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { generateKey, makeCsr } from "../tests/helpers/openssl.ts";
import { startSentry, tempDir } from "../tests/helpers/sentry_process.ts";
import { bundleForNode } from "../scripts/node-bundle.ts";
import { ensureCfssl, startCfssl } from "./cfssl.ts";
import type { BurstResult, LoadPlan, LoadResult } from "./load.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const RELEASE_BINARY = join(ROOT, "dist/sentry");

function flag(name: string): string | undefined {
  const index = Deno.args.indexOf(name);
  return index >= 0 ? Deno.args[index + 1] : undefined;
}
const QUICK = Deno.args.includes("--quick");
const SECONDS = Number(flag("--seconds") ?? (QUICK ? 1 : 10));
const WARMUP_SECONDS = QUICK ? 0.5 : 2;
const RSS_CERTIFICATES = Number(flag("--certificates") ?? (QUICK ? 5_000 : 100_000));
const STARTS = QUICK ? 3 : 7;
const BURST_CALLERS = QUICK ? 2_000 : 10_000;
const CALLERS = [1, 32, 256];

async function run(program: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(program, { args, stderr: "piped" }).output();
  if (!output.success) {
    throw new Error(
      `${program} ${args.join(" ")} failed: ${new TextDecoder().decode(output.stderr)}`,
    );
  }
  return new TextDecoder().decode(output.stdout).trim();
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Bundles a benchmark module for Node into `work`. */
async function benchmarkProgram(source: string, work: string): Promise<string> {
  const out = join(work, source.replace(/\.ts$/, ".cjs"));
  await bundleForNode(join(ROOT, "bench", source), out);
  return out;
}

/** `openssl speed ecdsap256` on one core: signatures/s, verifications/s, and the ceiling. */
async function opensslCeiling() {
  const text = await run("openssl", ["speed", "-seconds", QUICK ? "1" : "3", "ecdsap256"]);
  const match = /256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)/.exec(text);
  if (!match) throw new Error(`cannot read openssl speed output:\n${text}`);
  const signPerSecond = Number(match[1]);
  const verifyPerSecond = Number(match[2]);
  return {
    version: await run("openssl", ["version"]),
    signPerSecond: Math.round(signPerSecond),
    verifyPerSecond: Math.round(verifyPerSecond),
    /** One verification plus one signature, back to back. */
    verifyAndSignPerSecond: Math.round(1 / (1 / signPerSecond + 1 / verifyPerSecond)),
  };
}

interface SignerResult {
  runtime: string;
  certificatesPerSecond: number;
}

async function inProcess(csrFile: string, signerBundle: string): Promise<SignerResult[]> {
  const seconds = String(QUICK ? 1 : 5);
  return [
    JSON.parse(await run("node", [signerBundle, csrFile, seconds])),
    JSON.parse(
      await run(Deno.execPath(), [
        "run",
        "--allow-all",
        join(ROOT, "bench/signer.ts"),
        csrFile,
        seconds,
      ]),
    ),
  ];
}

/** Runs the load generator as its own Node process. */
async function load(loadBundle: string, plan: LoadPlan): Promise<LoadResult> {
  return JSON.parse(await run("node", [loadBundle, JSON.stringify(plan)]));
}

/** Runs the load generator in burst mode. */
async function burst(loadBundle: string, plan: LoadPlan): Promise<BurstResult> {
  return JSON.parse(await run("node", [loadBundle, JSON.stringify({ ...plan, burst: true })]));
}

/** Peak resident set size (VmHWM) of a process, in MiB. */
function peakRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) / 1024;
}

function errorSummary(result: LoadResult): string {
  const entries = Object.entries(result.errors);
  return entries.length === 0 ? "0" : entries.map(([why, n]) => `${n} ${why}`).join(", ");
}

// ---------------------------------------------------------------------------------------------

try {
  Deno.statSync(RELEASE_BINARY);
} catch {
  console.error(`${RELEASE_BINARY} is missing: run 'deno task build' (deno task bench does)`);
  Deno.exit(1);
}

const work = await tempDir("sentry-bench-");
const csrPem = await makeCsr(work, await generateKey("ec-p256"));
const csrFile = join(work, "bench.csr");
await Deno.writeTextFile(csrFile, csrPem);
const [loadBundle, signerBundle] = [
  await benchmarkProgram("load.ts", work),
  await benchmarkProgram("signer.ts", work),
];
const cfsslMissing = await ensureCfssl();

console.log(
  `sentry benchmark${QUICK ? " (--quick)" : ""}: ${cpus().length} cores, ${cpus()[0]?.model}`,
);
const ceiling = await opensslCeiling();
console.log(
  `OpenSSL ceiling (${ceiling.version}, one core): ${ceiling.signPerSecond} sign/s, ` +
    `${ceiling.verifyPerSecond} verify/s -> ${ceiling.verifyAndSignPerSecond} verify+sign/s`,
);

const signers = await inProcess(csrFile, signerBundle);
for (const signer of signers) {
  const share = signer.certificatesPerSecond / ceiling.verifyAndSignPerSecond;
  console.log(
    `in-process signer on ${signer.runtime}, one core: ${signer.certificatesPerSecond} ` +
      `certificates/s (${(share * 100).toFixed(0)}% of the OpenSSL ceiling)`,
  );
}

const version = await run(RELEASE_BINARY, ["--version"]);
const sentry = await startSentry({ command: [RELEASE_BINARY], dir: join(work, "sentry-certs") });
const cfssl = cfsslMissing ? undefined : await startCfssl(join(work, "cfssl"), csrPem);
const cfsslTls = cfsslMissing
  ? undefined
  : await startCfssl(join(work, "cfssl-tls"), csrPem, { tls: true });
const anchorsPem = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
interface EndToEndRow {
  callers: number;
  sentry: LoadResult;
  cfssl?: LoadResult;
  /** sentry / CFSSL over plain HTTP (the reference). */
  ratio?: number;
  cfsslHttps?: LoadResult;
  /** sentry / CFSSL over HTTPS. */
  ratioHttps?: number;
}
const endToEnd: EndToEndRow[] = [];
console.log(`\nSignCertificate end to end, ${SECONDS} s per row, load from a separate process:`);
console.log(`  ours: ${version}; reference: ${cfssl ? "cfssl serve" : cfsslMissing}`);
console.log(
  "  callers | sentry cert/s  p50 ms  p99 ms  errors | cfssl cert/s  p50 ms  p99 ms  errors | ratio" +
    " | cfssl https cert/s  p99 ms | ratio",
);
try {
  for (const callers of CALLERS) {
    const shape = { csrPem, callers, seconds: SECONDS, warmupSeconds: WARMUP_SECONDS };
    // Alternate the two servers row by row so that drift in the machine's speed hits both.
    const ours = await load(loadBundle, {
      ...shape,
      target: "sentry",
      port: sentry.grpcPort,
      anchorsPem,
    });
    const theirs = cfssl
      ? await load(loadBundle, { ...shape, target: "cfssl", port: cfssl.port })
      : undefined;
    const theirsHttps = cfsslTls
      ? await load(loadBundle, {
        ...shape,
        target: "cfssl",
        port: cfsslTls.port,
        anchorsPem: cfsslTls.anchorsPem,
      })
      : undefined;
    const ratioTo = (reference?: LoadResult) =>
      reference
        ? Number((ours.certificatesPerSecond / reference.certificatesPerSecond).toFixed(2))
        : undefined;
    const ratio = ratioTo(theirs);
    const ratioHttps = ratioTo(theirsHttps);
    endToEnd.push({
      callers,
      sentry: ours,
      cfssl: theirs,
      ratio,
      cfsslHttps: theirsHttps,
      ratioHttps,
    });
    const cells = (r?: LoadResult) =>
      r
        ? `${String(r.certificatesPerSecond).padStart(12)}  ${r.p50Ms.toFixed(2).padStart(6)}  ${
          r.p99Ms.toFixed(2).padStart(6)
        }  ${errorSummary(r).padStart(6)}`
        : "                    n/a";
    const https = theirsHttps
      ? `${String(theirsHttps.certificatesPerSecond).padStart(18)}  ${
        theirsHttps.p99Ms.toFixed(2).padStart(6)
      }`
      : "                       n/a";
    console.log(
      `  ${String(callers).padStart(7)} | ${cells(ours)} | ${cells(theirs)} | ${
        String(ratio ?? "n/a").padStart(5)
      } | ${https} | ${ratioHttps ?? "n/a"}`,
    );
  }
} finally {
  await sentry.stop();
  await cfssl?.stop();
  await cfsslTls?.stop();
}

/**
 * Runs `use` against a fresh release binary on a new credentials directory, then stops it;
 * adds the server's peak RSS to what `use` returns.
 */
async function onFreshServer<T>(
  name: string,
  use: (port: number, anchorsPem: string) => Promise<T>,
): Promise<T & { peakRssMiB: number }> {
  const server = await startSentry({ command: [RELEASE_BINARY], dir: join(work, name) });
  try {
    const result = await use(server.grpcPort, await Deno.readTextFile(join(server.dir, "ca.crt")));
    return { ...result, peakRssMiB: Number(peakRssMiB(server.child.pid).toFixed(1)) };
  } finally {
    await server.stop();
  }
}

// Footprint: RSS_CERTIFICATES certificates, then the peak RSS.
const rss = await onFreshServer("rss-certs", async (port, anchorsPem) => {
  const result = await load(loadBundle, {
    target: "sentry",
    port,
    anchorsPem,
    csrPem,
    callers: 32,
    seconds: 0,
    count: RSS_CERTIFICATES,
    warmupSeconds: 0,
  });
  return { certificates: result.certificates, errors: result.errors };
});
console.log(
  `\npeak RSS of the release binary after ${rss.certificates} certificates: ${rss.peakRssMiB} MiB`,
);

// A burst: every caller at once, one certificate each, retrying with backoff when busy.
const burstResult = await onFreshServer("burst-certs", (port, anchorsPem) =>
  burst(loadBundle, {
    target: "sentry",
    port,
    anchorsPem,
    csrPem,
    callers: BURST_CALLERS,
    connections: 100,
    seconds: 0,
  }));
console.log(
  `burst of ${burstResult.callers} callers over ${burstResult.connections} connections: ` +
    `${burstResult.served} served in ${burstResult.seconds} s (p50 ${burstResult.p50Ms} ms, ` +
    `p99 ${burstResult.p99Ms} ms to a certificate), ${burstResult.retries} busy answers retried, ` +
    `other errors ${JSON.stringify(burstResult.errors)}, peak RSS ${burstResult.peakRssMiB} MiB`,
);

const startups: number[] = [];
for (let i = 0; i < STARTS; i++) {
  const started = await startSentry({ command: [RELEASE_BINARY], dir: join(work, `start-${i}`) });
  startups.push(started.startupMs);
  await started.stop();
}
const startupMs = Number(median(startups).toFixed(0));
console.log(
  `start to healthy on a new credentials directory (median of ${STARTS}): ${startupMs} ms`,
);

// The targets of the performance issue, judged on this run's own numbers.
const node = signers[0];
const row = (callers: number) => endToEnd.find((entry) => entry.callers === callers)!;
const at32 = row(32);
const at256 = row(256);
const onlyBusy = (errors: Record<string, number>) =>
  Object.keys(errors).every((why) => why === "RESOURCE_EXHAUSTED");
const targets = [
  {
    target: "in-process signing >= 50% of the OpenSSL per-core ceiling",
    measured: `${node.certificatesPerSecond} / ${ceiling.verifyAndSignPerSecond} = ${
      (node.certificatesPerSecond / ceiling.verifyAndSignPerSecond * 100).toFixed(0)
    }%`,
    met: node.certificatesPerSecond >= 0.5 * ceiling.verifyAndSignPerSecond,
  },
  {
    target: "32 callers: throughput >= CFSSL's",
    measured: `ratio ${at32.ratio ?? "n/a"}`,
    met: at32.ratio !== undefined && at32.ratio >= 1,
  },
  {
    target: "32 callers: p99 <= CFSSL's p99, zero errors",
    measured: `${at32.sentry.p99Ms} ms vs ${at32.cfssl?.p99Ms ?? "n/a"} ms, errors ${
      errorSummary(at32.sentry)
    }`,
    met: at32.cfssl !== undefined && at32.sentry.p99Ms <= at32.cfssl.p99Ms &&
      Object.keys(at32.sentry.errors).length === 0,
  },
  {
    target: "256 callers: zero errors or only RESOURCE_EXHAUSTED",
    measured: `errors ${errorSummary(at256.sentry)}, p99 ${at256.sentry.p99Ms} ms`,
    met: onlyBusy(at256.sentry.errors),
  },
  {
    target: "peak RSS < 150 MB after 100,000 certificates",
    measured: `${rss.peakRssMiB} MiB after ${rss.certificates}`,
    met: rss.peakRssMiB < 150 && rss.certificates >= 100_000,
  },
  {
    target: `burst of ${burstResult.callers} callers: all served or told to retry, none lost`,
    measured: `${burstResult.served} served, ${burstResult.retries} retries, errors ${
      JSON.stringify(burstResult.errors)
    }`,
    met: burstResult.served === burstResult.callers &&
      Object.keys(burstResult.errors).length === 0,
  },
  {
    target: "healthy within 1 s on a new directory",
    measured: `${startupMs} ms`,
    met: startupMs < 1000,
  },
];
console.log("\ntargets (this run):");
for (const { target, measured, met } of targets) {
  console.log(`  ${met ? "met   " : "MISSED"}  ${target}: ${measured}`);
}

const results = {
  date: new Date().toISOString(),
  quick: QUICK,
  machine: { cores: cpus().length, model: cpus()[0]?.model },
  sentry: version,
  opensslCeiling: ceiling,
  inProcess: signers,
  endToEnd: {
    secondsPerRow: SECONDS,
    reference: cfssl ? "cfssl serve" : cfsslMissing,
    rows: endToEnd,
  },
  footprint: { ...rss, startupMs, startups: startups.map((ms) => Number(ms.toFixed(0))) },
  burst: burstResult,
  targets,
};
// A quick run never replaces the full run's record.
const resultsFile = QUICK ? "bench/results.quick.json" : "bench/results.json";
await Deno.writeTextFile(join(ROOT, resultsFile), JSON.stringify(results, null, 2) + "\n");
console.log(`\nwritten: ${resultsFile}`);
await Deno.remove(work, { recursive: true });
