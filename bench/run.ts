/**
 * The performance benchmark (not a test: it prints numbers and asserts nothing). One run
 * measures, on this machine and at this moment:
 *   1. the OpenSSL ceiling: `openssl speed ecdsap256 ed25519`, one core, turned into "verify
 *      one CSR and sign one certificate with a P-256 issuer" operations per second, for an
 *      ECDSA P-256 CSR and for an Ed25519 CSR;
 *   2. the in-process signing core (bench/signer.ts: decode and verify a CSR, build and sign
 *      the workload certificate with a P-256 issuer), one core, on the release binary's Node
 *      (scripts/node-runtime.ts) for both CSR types, and for reference on this machine's
 *      `node` and on Deno (P-256 CSR);
 *   3. SignCertificate end to end against the release binary (dist/sentry) and against Dapr's
 *      own sentry (the release tests/dapr/go.mod pins, built by tests/dapr/build.sh), both
 *      signing with the same issuer (ECDSA P-256, and Ed25519 in the full run: Dapr's sentry
 *      gets a copy of the bundle ours generated), at 1, 32 and 256 concurrent callers, with
 *      ECDSA P-256 and Ed25519 CSRs; and the same load on `cfssl serve` (Debian's golang-cfssl,
 *      installed here when missing) with an ECDSA P-256 CA, over plain HTTP (the reference the
 *      performance issue sets) and HTTPS. All of it from one load generator in its own process,
 *      tests/dapr/loadgen (grpc-go with Dapr's proto package, sentry verified by its SPIFFE ID as
 *      daprd does; CFSSL over net/http), so that every server carries the same client cost.
 *      Ratios: ours / Dapr's and ours / CFSSL;
 *   4. per core (bench/pinned.ts): the generator pinned to CPU 0, ours and Dapr's each pinned
 *      to CPU 1 alone and then to every CPU, 32 callers, both CSR types (P-256 issuer); and a
 *      cross-check at 32 callers with the Node load generator (bench/load.ts), the one earlier
 *      runs used, against all three;
 *   5. the peak RSS of both sentries after 100,000 certificates, and their time from start to
 *      a healthy /healthz on a new credentials directory;
 *   6. a burst of 10,000 callers at once on a fresh server of each (ours with its default
 *      --max-concurrent-requests), each retrying with backoff when told to (bench/load.ts): all
 *      served, how many retries, how long, and the peak RSS.
 * For ours it also reads the main thread's garbage-collection time per certificate from
 * /metrics (`nodejs_gc_duration_seconds_sum`; signing worker threads are not included).
 * It prints tables and writes bench/results.json (bench/results.quick.json for --quick),
 * including each target of the performance issue and whether this run met it.
 *
 * Usage: deno task bench [--quick] [--seconds N] [--certificates N]
 *   --quick         a smoke run for CI: one issuer, short phases, 5,000 certificates for the
 *                   RSS figure, a burst of 2,000
 *   --seconds N     measured seconds per load row (default 10; 1 with --quick)
 *   --certificates  certificates before reading the peak RSS (default 100,000)
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { daprBinaries } from "../tests/helpers/dapr_binaries.ts";
import { generateKey, makeCsr } from "../tests/helpers/openssl.ts";
import { type RunningSentry, startSentry, tempDir } from "../tests/helpers/sentry_process.ts";
import { bundleForNode } from "../scripts/node-bundle.ts";
import { pinnedNode, RELEASE_NODE } from "../scripts/node-runtime.ts";
import { ensureCfssl, startCfssl } from "./cfssl.ts";
import { copyBundle, daprVersion, startDaprSentry } from "./dapr_sentry.ts";
import type { BurstResult, LoadPlan, LoadResult } from "./load.ts";
import { type CsrKey, goLoad, type GoLoadPlan, type GoLoadResult } from "./loadgen.ts";
import { cpuSeconds, machineBusySeconds, peakRssMiB } from "./proc.ts";
import { type PinnedComparison, pinnedComparison, printPinned } from "./pinned.ts";

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
const CSR_KEYS: CsrKey[] = ["ecdsa-p256", "ed25519"];
/** Key algorithms of the issuer both sentries sign with (ours generates it: --key-algorithm). */
type IssuerKey = "ecdsa-p256" | "ed25519";
const ISSUERS: IssuerKey[] = QUICK ? ["ecdsa-p256"] : ["ecdsa-p256", "ed25519"];
const CROSS_CHECK_CALLERS = 32;
/** Share of the machine's CPU (%) used by others during a row above which it is flagged. */
const OTHER_CPU_WARNING = 5;
/** Both sentries' SPIFFE ID (default trust domain and namespace), as daprd checks it. */
const SENTRY_ID = `spiffe://localhost/ns/${Deno.env.get("NAMESPACE") ?? "default"}/dapr-sentry`;

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

/** Operations per second of one back-to-back pair (a verification, then a signature). */
const pairPerSecond = (a: number, b: number) => Math.round(1 / (1 / a + 1 / b));

/**
 * `openssl speed ecdsap256 ed25519` on one core: signatures/s and verifications/s of each, and
 * the ceilings of "verify the CSR, sign with a P-256 issuer" for both CSR types.
 */
async function opensslCeiling() {
  const text = await run("openssl", [
    "speed",
    "-seconds",
    QUICK ? "1" : "3",
    "ecdsap256",
    "ed25519",
  ]);
  const ecdsa = /256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)/.exec(text);
  const eddsa = /253 bits EdDSA \(Ed25519\)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)/.exec(text);
  if (!ecdsa || !eddsa) throw new Error(`cannot read openssl speed output:\n${text}`);
  const [signPerSecond, verifyPerSecond] = [Number(ecdsa[1]), Number(ecdsa[2])];
  const [ed25519SignPerSecond, ed25519VerifyPerSecond] = [Number(eddsa[1]), Number(eddsa[2])];
  return {
    version: await run("openssl", ["version"]),
    signPerSecond: Math.round(signPerSecond),
    verifyPerSecond: Math.round(verifyPerSecond),
    ed25519SignPerSecond: Math.round(ed25519SignPerSecond),
    ed25519VerifyPerSecond: Math.round(ed25519VerifyPerSecond),
    /** A P-256 CSR verified, then a P-256 signature, back to back. */
    verifyAndSignPerSecond: pairPerSecond(verifyPerSecond, signPerSecond),
    /** An Ed25519 CSR verified, then a P-256 signature (the issuer), back to back. */
    ed25519VerifyAndSignPerSecond: pairPerSecond(ed25519VerifyPerSecond, signPerSecond),
  };
}

interface SignerResult {
  runtime: string;
  /** Whose runtime: the release binary's (pinned), this machine's `node`, or Deno. */
  role: "release" | "machine" | "deno";
  csrKey: CsrKey;
  certificatesPerSecond: number;
  /** The OpenSSL ceiling for this CSR type (verify + sign), and the share of it reached. */
  ceiling?: number;
  shareOfCeiling?: number;
}

async function inProcess(
  csrFiles: Record<"ecdsa-p256" | "ed25519", string>,
  signerBundle: string,
): Promise<SignerResult[]> {
  const seconds = String(QUICK ? 1 : 5);
  const releaseNode = await pinnedNode(RELEASE_NODE);
  const results: SignerResult[] = [];
  const measureOn = async (
    role: SignerResult["role"],
    command: string[],
    csrKey: "ecdsa-p256" | "ed25519",
  ) => {
    const [program, ...args] = command;
    const result = JSON.parse(await run(program, [...args, csrFiles[csrKey], seconds]));
    results.push({ ...result, role, csrKey });
  };
  for (const csrKey of ["ecdsa-p256", "ed25519"] as const) {
    await measureOn("release", [releaseNode, signerBundle], csrKey);
  }
  await measureOn("machine", ["node", signerBundle], "ecdsa-p256");
  await measureOn(
    "deno",
    [Deno.execPath(), "run", "--allow-all", join(ROOT, "bench/signer.ts")],
    "ecdsa-p256",
  );
  return results;
}

/** Runs the Node load generator as its own Node process. */
async function nodeLoad(loadBundle: string, plan: LoadPlan): Promise<LoadResult> {
  return JSON.parse(await run("node", [loadBundle, JSON.stringify(plan)]));
}

/** Runs the Node load generator in burst mode. */
async function burst(loadBundle: string, plan: LoadPlan): Promise<BurstResult> {
  return JSON.parse(await run("node", [loadBundle, JSON.stringify({ ...plan, burst: true })]));
}

function errorSummary(result?: LoadResult): string {
  if (!result) return "n/a";
  const entries = Object.entries(result.errors);
  return entries.length === 0 ? "0" : entries.map(([why, n]) => `${n} ${why}`).join(", ");
}

/** Prints one table line: cells padded to `widths` (negative: left-aligned). */
function line(cells: (string | number | undefined)[], widths: number[]): void {
  console.log(
    "  " + cells.map((cell, i) => {
      const text = String(cell ?? "n/a");
      return widths[i] < 0 ? text.padEnd(-widths[i]) : text.padStart(widths[i]);
    }).join("  "),
  );
}

const ms = (value?: number) => value?.toFixed(2);
const ratio = (a: number, b?: number, digits = 2) =>
  b ? Number((a / b).toFixed(digits)) : undefined;

// ---------------------------------------------------------------------------------------------

try {
  Deno.statSync(RELEASE_BINARY);
} catch {
  console.error(`${RELEASE_BINARY} is missing: run 'deno task build' (deno task bench does)`);
  Deno.exit(1);
}

// Dapr's sentry and the grpc-go load generator (tests/dapr/build.sh; cached once built).
const dapr = await daprBinaries();
const DAPR = `Dapr's sentry ${await daprVersion()}`;

const work = await tempDir("sentry-bench-");
const csrPem = await makeCsr(work, await generateKey("ec-p256"));
const csrFile = join(work, "bench.csr");
await Deno.writeTextFile(csrFile, csrPem);
const ed25519CsrFile = join(work, "bench-ed25519.csr");
await Deno.writeTextFile(ed25519CsrFile, await makeCsr(work, await generateKey("ed25519")));
const [loadBundle, signerBundle] = [
  await benchmarkProgram("load.ts", work),
  await benchmarkProgram("signer.ts", work),
];
const cfsslMissing = await ensureCfssl();

const loadAverage = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
const loadAtStart = loadAverage();
console.log(
  `sentry benchmark${QUICK ? " (--quick)" : ""}: ${cpus().length} cores, ${cpus()[0]?.model}, ` +
    `load average ${loadAtStart}`,
);
const ceiling = await opensslCeiling();
console.log(
  `OpenSSL ceiling (${ceiling.version}, one core): ${ceiling.signPerSecond} sign/s, ` +
    `${ceiling.verifyPerSecond} verify/s -> ${ceiling.verifyAndSignPerSecond} verify+sign/s`,
);

console.log(
  `  Ed25519 CSRs: ${ceiling.ed25519VerifyPerSecond} Ed25519 verify/s -> ` +
    `${ceiling.ed25519VerifyAndSignPerSecond} verify+sign/s with a P-256 issuer`,
);

const signers = await inProcess({ "ecdsa-p256": csrFile, ed25519: ed25519CsrFile }, signerBundle);
for (const signer of signers) {
  signer.ceiling = signer.csrKey === "ed25519"
    ? ceiling.ed25519VerifyAndSignPerSecond
    : ceiling.verifyAndSignPerSecond;
  signer.shareOfCeiling = Number((signer.certificatesPerSecond / signer.ceiling).toFixed(2));
  console.log(
    `in-process signer on ${signer.runtime} (${signer.role}), ${signer.csrKey} CSR, one core: ` +
      `${signer.certificatesPerSecond} certificates/s ` +
      `(${(signer.shareOfCeiling * 100).toFixed(0)}% of the OpenSSL ceiling)`,
  );
}

// -- End to end: ours, Dapr's and CFSSL under the grpc-go load generator --------------------

const version = await run(RELEASE_BINARY, ["--version"]);

/** ours / Dapr's: above 1, ours serves more per second; below 1, ours answers faster. */
interface Ratios {
  certificatesPerSecond?: number;
  p50Ms?: number;
  p99Ms?: number;
}
interface EndToEndRow {
  /** Key algorithm of the issuer both sentries sign with (CFSSL's CA is always P-256). */
  issuer: IssuerKey;
  /** Key type of the CSRs. */
  csrKey: CsrKey;
  callers: number;
  sentry?: GoLoadResult;
  dapr?: GoLoadResult;
  /** ours / Dapr's certificates per second, p50 and p99 latency. */
  daprRatio?: Ratios;
  cfssl?: GoLoadResult;
  /** ours / CFSSL over plain HTTP (the issue's reference), certificates per second. */
  ratio?: number;
  cfsslHttps?: GoLoadResult;
  /** ours / CFSSL over HTTPS. */
  ratioHttps?: number;
  /** Servers the load generator could not load, with its explanation. */
  failures?: Record<string, string>;
}

/**
 * Seconds the main thread of our server has spent in garbage collection so far (prom-client's
 * `nodejs_gc_duration_seconds_sum`, all kinds).
 */
async function gcSeconds(metricsPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  let sum = 0;
  for (const match of text.matchAll(/^nodejs_gc_duration_seconds_sum\{[^}]*\} (\S+)$/gm)) {
    sum += Number(match[1]);
  }
  return sum;
}

/**
 * Runs the grpc-go generator against the server of process `pid`, and adds the server's CPU
 * time per certificate; a refusal (say, a key type CFSSL does not sign) is recorded in the row.
 */
async function measure(
  row: EndToEndRow,
  server: string,
  pid: number,
  plan: Omit<GoLoadPlan, "key" | "callers" | "seconds" | "warmupSeconds">,
  metricsPort?: number,
): Promise<GoLoadResult | undefined> {
  try {
    const gcBefore = metricsPort === undefined ? 0 : await gcSeconds(metricsPort);
    const [cpuBefore, busyBefore, started] = [cpuSeconds(pid), machineBusySeconds(), Date.now()];
    const result = await goLoad(dapr.loadgen, {
      ...plan,
      key: row.csrKey,
      callers: row.callers,
      seconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
    });
    const cpu = cpuSeconds(pid) - cpuBefore;
    result.serverCpuUsPerCertificate = Math.round(cpu * 1e6 / result.allCertificates);
    if (metricsPort !== undefined) {
      const gc = await gcSeconds(metricsPort) - gcBefore;
      result.mainThreadGcUsPerCertificate = Math.round(gc * 1e6 / result.allCertificates);
    }
    // What neither the server nor the generator used: other processes, or the hypervisor.
    const client = result.clientCpuUsPerCertificate * result.allCertificates / 1e6;
    const other = machineBusySeconds() - busyBefore - cpu - client;
    const capacity = (Date.now() - started) / 1000 * cpus().length;
    result.otherCpuPercent = Math.max(0, Math.round(other / capacity * 100));
    return result;
  } catch (error) {
    row.failures = { ...row.failures, [server]: (error as Error).message };
    return undefined;
  }
}

const cfssl = cfsslMissing ? undefined : await startCfssl(join(work, "cfssl"), csrPem);
const cfsslTls = cfsslMissing
  ? undefined
  : await startCfssl(join(work, "cfssl-tls"), csrPem, { tls: true });
const cfsslTlsCa = join(work, "cfssl-tls", "tls.crt");
const endToEnd: EndToEndRow[] = [];
/** Reasons a server could not be loaded, printed once each. */
const notes = new Set<string>();
const underLoadRss: { issuer: IssuerKey; sentry: number; dapr: number }[] = [];
let pinned: PinnedComparison | undefined;
let nodeCrossCheck:
  | { callers: number; sentry: LoadResult; dapr: LoadResult; cfssl?: LoadResult }
  | undefined;
const WIDTHS = [-10, -10, 7, 1, 6, 6, 6, 4, 1, 6, 6, 6, 4, 1, 5, 5, 5, 1, 7, 6, 4, 4, 1, 7, 6, 4];
console.log(
  `\nSignCertificate end to end, ${SECONDS} s per row after ${WARMUP_SECONDS} s of warm-up, ` +
    `load from tests/dapr/loadgen (grpc-go; callers over min(callers, 32) connections):`,
);
console.log(`  ours: ${version}; ${DAPR}; reference: ${cfssl ? "cfssl serve" : cfsslMissing}`);
console.log(
  "  issuer: both sentries sign with it (CFSSL's CA is P-256; CFSSL is HTTP/1.1 JSON, TLS = " +
    "over HTTPS); latencies in ms;\n  cpu = the server's CPU time per certificate, µs; " +
    "o/D = ours/Dapr's (cert/s above 1, latency below 1 favour ours); o/C = ours/CFSSL cert/s",
);
line(
  [
    "issuer",
    "CSR",
    "callers",
    "|",
    "ours/s",
    "p50",
    "p99",
    "cpu",
    "|",
    "Dapr/s",
    "p50",
    "p99",
    "cpu",
    "|",
    "o/D/s",
    "p50",
    "p99",
    "|",
    "CFSSL/s",
    "p99",
    "cpu",
    "o/C",
    "|",
    "TLS/s",
    "p99",
    "o/C",
  ],
  WIDTHS,
);
try {
  for (const issuer of ISSUERS) {
    const ours = await startSentry({
      command: [RELEASE_BINARY],
      dir: join(work, `sentry-${issuer}`),
      args: [`--key-algorithm=${issuer}`],
    });
    await copyBundle(ours.dir, join(work, `dapr-${issuer}`));
    let theirs: RunningSentry | undefined;
    try {
      theirs = await startDaprSentry(dapr.sentry, join(work, `dapr-${issuer}`));
      const withCfssl = issuer === "ecdsa-p256";
      for (const csrKey of CSR_KEYS) {
        for (const callers of CALLERS) {
          const row: EndToEndRow = { issuer, csrKey, callers };
          // Each server in turn, row by row, so that drift in the machine's speed hits all.
          row.sentry = await measure(row, "sentry", ours.child.pid, {
            protocol: "grpc",
            port: ours.grpcPort,
            caFile: join(ours.dir, "ca.crt"),
          }, ours.metricsPort);
          row.dapr = await measure(row, "dapr", theirs.child.pid, {
            protocol: "grpc",
            port: theirs.grpcPort,
            caFile: join(theirs.dir, "ca.crt"),
          });
          if (withCfssl && cfssl && cfsslTls) {
            row.cfssl = await measure(row, "cfssl", cfssl.pid, {
              protocol: "cfssl",
              port: cfssl.port,
            });
            row.cfsslHttps = await measure(row, "cfsslHttps", cfsslTls.pid, {
              protocol: "cfssl",
              port: cfsslTls.port,
              caFile: cfsslTlsCa,
            });
          }
          const mine = row.sentry;
          if (mine) {
            row.daprRatio = row.dapr && {
              certificatesPerSecond: ratio(
                mine.certificatesPerSecond,
                row.dapr.certificatesPerSecond,
              ),
              p50Ms: ratio(mine.p50Ms, row.dapr.p50Ms),
              p99Ms: ratio(mine.p99Ms, row.dapr.p99Ms),
            };
            row.ratio = ratio(mine.certificatesPerSecond, row.cfssl?.certificatesPerSecond);
            row.ratioHttps = ratio(
              mine.certificatesPerSecond,
              row.cfsslHttps?.certificatesPerSecond,
            );
          }
          endToEnd.push(row);
          const refused = (server: string) => row.failures?.[server] ? "refused" : undefined;
          const cfsslCells = withCfssl
            ? [
              row.cfssl?.certificatesPerSecond ?? refused("cfssl"),
              ms(row.cfssl?.p99Ms),
              row.cfssl?.serverCpuUsPerCertificate,
              row.ratio,
              "|",
              row.cfsslHttps?.certificatesPerSecond ?? refused("cfsslHttps"),
              ms(row.cfsslHttps?.p99Ms),
              row.ratioHttps,
            ]
            : ["", "", "", "", "|", "", "", ""];
          line([
            issuer,
            csrKey,
            callers,
            "|",
            row.sentry?.certificatesPerSecond,
            ms(row.sentry?.p50Ms),
            ms(row.sentry?.p99Ms),
            row.sentry?.serverCpuUsPerCertificate,
            "|",
            row.dapr?.certificatesPerSecond,
            ms(row.dapr?.p50Ms),
            ms(row.dapr?.p99Ms),
            row.dapr?.serverCpuUsPerCertificate,
            "|",
            row.daprRatio?.certificatesPerSecond,
            row.daprRatio?.p50Ms,
            row.daprRatio?.p99Ms,
            "|",
            ...cfsslCells,
          ], WIDTHS);
          const others: string[] = [];
          for (const server of ["sentry", "dapr", "cfssl", "cfsslHttps"] as const) {
            const result = row[server];
            if (result && Object.keys(result.errors).length) {
              console.log(`      ${server}: failed calls ${errorSummary(result)}`);
            }
            const other = result?.otherCpuPercent ?? 0;
            if (other > OTHER_CPU_WARNING) others.push(`${server} ${other}%`);
          }
          if (others.length) {
            console.log(
              `      other processes (or the hypervisor) took part of the CPU during this row: ` +
                `${others.join(", ")} of the machine; these figures are suspect`,
            );
          }
          for (const [server, why] of Object.entries(row.failures ?? {})) {
            // Said once per server and reason (CFSSL refuses every Ed25519 CSR, for one).
            const note = `${server} not measured: ${why.split("\n")[0].slice(0, 200)}`;
            if (!notes.has(note)) console.log(`      ${note}`);
            notes.add(note);
          }
        }
      }
      if (issuer === "ecdsa-p256") {
        pinned = await pinnedComparison(dapr.loadgen, [
          {
            name: "sentry",
            pid: ours.child.pid,
            port: ours.grpcPort,
            caFile: join(ours.dir, "ca.crt"),
          },
          {
            name: "dapr",
            pid: theirs.child.pid,
            port: theirs.grpcPort,
            caFile: join(theirs.dir, "ca.crt"),
          },
        ], {
          csrKeys: QUICK ? ["ecdsa-p256"] : CSR_KEYS,
          callers: CROSS_CHECK_CALLERS,
          seconds: SECONDS,
          warmupSeconds: WARMUP_SECONDS,
        });
        // The Node load generator of earlier runs, at one caller count, P-256 CSR.
        const shape = {
          csrPem,
          callers: CROSS_CHECK_CALLERS,
          seconds: SECONDS,
          warmupSeconds: WARMUP_SECONDS,
          spiffeId: SENTRY_ID,
        };
        nodeCrossCheck = {
          callers: CROSS_CHECK_CALLERS,
          sentry: await nodeLoad(loadBundle, {
            ...shape,
            target: "sentry",
            port: ours.grpcPort,
            anchorsPem: await Deno.readTextFile(join(ours.dir, "ca.crt")),
          }),
          dapr: await nodeLoad(loadBundle, {
            ...shape,
            target: "sentry",
            port: theirs.grpcPort,
            anchorsPem: await Deno.readTextFile(join(theirs.dir, "ca.crt")),
          }),
          cfssl: cfssl
            ? await nodeLoad(loadBundle, { ...shape, target: "cfssl", port: cfssl.port })
            : undefined,
        };
      }
    } finally {
      underLoadRss.push({
        issuer,
        sentry: peakRssMiB(ours.child.pid),
        dapr: theirs ? peakRssMiB(theirs.child.pid) : NaN,
      });
      await ours.stop();
      await theirs?.stop();
    }
  }
} finally {
  await cfssl?.stop();
  await cfsslTls?.stop();
}
const clientCost = (server: "sentry" | "dapr" | "cfssl" | "cfsslHttps") => {
  const values = endToEnd.flatMap((row) => row[server]?.clientCpuUsPerCertificate ?? []);
  return values.length ? `${Math.min(...values)}-${Math.max(...values)}` : "n/a";
};
console.log(
  `  the load generator's own CPU per certificate (µs, min-max over the rows): against ours ` +
    `${clientCost("sentry")}, Dapr's ${clientCost("dapr")}, CFSSL ${clientCost("cfssl")}, ` +
    `CFSSL over HTTPS ${clientCost("cfsslHttps")}`,
);
for (const { issuer, sentry, dapr } of underLoadRss) {
  console.log(
    `  peak RSS over the ${issuer} issuer rows: ours ${sentry} MiB, Dapr's ${dapr} MiB`,
  );
}
console.log(
  "  ours' main-thread GC per certificate (µs; share of the server's CPU): " +
    endToEnd.map((row) => {
      const gc = row.sentry?.mainThreadGcUsPerCertificate;
      const cpu = row.sentry?.serverCpuUsPerCertificate;
      return `${row.issuer}/${row.csrKey}/${row.callers} ${gc ?? "n/a"}` +
        (gc !== undefined && cpu ? ` (${Math.round(gc / cpu * 100)}%)` : "");
    }).join(", "),
);
if (pinned) printPinned(pinned);
if (nodeCrossCheck) {
  const { sentry, dapr, cfssl } = nodeCrossCheck;
  const cells = (r?: LoadResult) =>
    r ? `${r.certificatesPerSecond}/s p50 ${ms(r.p50Ms)} p99 ${ms(r.p99Ms)} ms` : "n/a";
  console.log(
    `\ncross-check with the Node load generator (bench/load.ts), ${CROSS_CHECK_CALLERS} callers, ` +
      `P-256 issuer and CSR:\n  ours ${cells(sentry)} (errors ${errorSummary(sentry)}); ` +
      `Dapr's ${cells(dapr)} (errors ${errorSummary(dapr)}); CFSSL ${cells(cfssl)}; ` +
      `ours/Dapr ${ratio(sentry.certificatesPerSecond, dapr.certificatesPerSecond)}, ` +
      `ours/CFSSL ${ratio(sentry.certificatesPerSecond, cfssl?.certificatesPerSecond) ?? "n/a"}`,
  );
}

// -- Footprint, bursts and start-up: ours and Dapr's, each on a fresh server ----------------

/**
 * Runs `use` against a fresh release binary on a new credentials directory, then against a
 * fresh Dapr sentry on a copy of the bundle ours generated; stops each and adds its peak RSS
 * to what `use` returns.
 */
async function onFreshServers<T>(
  name: string,
  use: (server: RunningSentry) => Promise<T>,
): Promise<{ sentry: T & { peakRssMiB: number }; dapr: T & { peakRssMiB: number } }> {
  const measureOn = async (server: RunningSentry) => {
    try {
      const result = await use(server);
      return { ...result, peakRssMiB: peakRssMiB(server.child.pid) };
    } finally {
      await server.stop();
    }
  };
  const oursDir = join(work, `${name}-sentry`);
  const sentry = await measureOn(
    await startSentry({ command: [RELEASE_BINARY], dir: oursDir }),
  );
  await copyBundle(oursDir, join(work, `${name}-dapr`));
  const theirs = await measureOn(
    await startDaprSentry(dapr.sentry, join(work, `${name}-dapr`)),
  );
  return { sentry, dapr: theirs };
}

// Footprint: RSS_CERTIFICATES certificates at 32 callers (P-256 CSRs), then the peak RSS.
const rss = await onFreshServers("rss", async (server) => {
  const result = await goLoad(dapr.loadgen, {
    protocol: "grpc",
    port: server.grpcPort,
    caFile: join(server.dir, "ca.crt"),
    key: "ecdsa-p256",
    callers: 32,
    seconds: 600,
    warmupSeconds: 0,
    count: RSS_CERTIFICATES,
  });
  return { certificates: result.certificates, errors: result.errors };
});

// A burst: every caller at once, one certificate each, retrying with backoff when busy.
const bursts = await onFreshServers("burst", async (server) =>
  burst(loadBundle, {
    target: "sentry",
    port: server.grpcPort,
    anchorsPem: await Deno.readTextFile(join(server.dir, "ca.crt")),
    spiffeId: SENTRY_ID,
    csrPem,
    callers: BURST_CALLERS,
    connections: 100,
    seconds: 0,
  }));

// Start to healthy on a new credentials directory, ours and Dapr's in turn.
const startups = { sentry: [] as number[], dapr: [] as number[] };
for (let i = 0; i < STARTS; i++) {
  const ours = await startSentry({ command: [RELEASE_BINARY], dir: join(work, `start-${i}`) });
  startups.sentry.push(Number(ours.startupMs.toFixed(0)));
  await ours.stop();
  const theirs = await startDaprSentry(dapr.sentry, join(work, `start-dapr-${i}`));
  startups.dapr.push(Number(theirs.startupMs.toFixed(0)));
  await theirs.stop();
}
const startupMs = Number(median(startups.sentry).toFixed(0));
const daprStartupMs = Number(median(startups.dapr).toFixed(0));

const FOOT = [-52, 18, 18];
console.log("");
line(["footprint and bursts", "ours", "Dapr's"], FOOT);
line([
  `peak RSS after ${RSS_CERTIFICATES} certificates (MiB)`,
  rss.sentry.peakRssMiB,
  rss.dapr.peakRssMiB,
], FOOT);
line([
  "  certificates served, errors",
  ...[rss.sentry, rss.dapr].map((r) =>
    `${r.certificates}, ${Object.keys(r.errors).length ? JSON.stringify(r.errors) : "none"}`
  ),
], FOOT);
line([
  `start to healthy, new directory (median of ${STARTS}, ms)`,
  startupMs,
  daprStartupMs,
], FOOT);
line([`burst of ${BURST_CALLERS} callers over 100 connections`, "", ""], FOOT);
line(
  ["  served in (s)", ...[bursts.sentry, bursts.dapr].map((b) => `${b.served} in ${b.seconds}`)],
  FOOT,
);
line([
  "  p50 / p99 to a certificate (ms)",
  ...[bursts.sentry, bursts.dapr].map((b) => `${b.p50Ms} / ${b.p99Ms}`),
], FOOT);
line(["  busy answers retried", bursts.sentry.retries, bursts.dapr.retries], FOOT);
line([
  "  other errors",
  ...[bursts.sentry, bursts.dapr].map((b) =>
    Object.keys(b.errors).length ? JSON.stringify(b.errors) : "none"
  ),
], FOOT);
line(["  peak RSS (MiB)", bursts.sentry.peakRssMiB, bursts.dapr.peakRssMiB], FOOT);

// The targets of the performance issue (round 2), judged on this run's own numbers (grpc-go
// generator, P-256 issuer; CFSSL over plain HTTP, P-256 CSRs only: it refuses Ed25519).
const row = (callers: number, csrKey: CsrKey) =>
  endToEnd.find((entry) =>
    entry.callers === callers && entry.issuer === "ecdsa-p256" && entry.csrKey === csrKey
  )!;
const at256 = row(256, "ecdsa-p256");
const onlyBusy = (errors: Record<string, number>) =>
  Object.keys(errors).every((why) => why === "RESOURCE_EXHAUSTED");
const percent = (share: number) => `${Math.round(share * 100)}%`;
/** The target "ours serves at least as many certificates per second as `other`". */
const throughputAtLeast = (
  where: string,
  whose: string,
  ours?: GoLoadResult,
  other?: GoLoadResult,
) => ({
  target: `${where}: throughput >= ${whose}`,
  measured: `${ours?.certificatesPerSecond ?? "n/a"}/s vs ${
    other?.certificatesPerSecond ?? "n/a"
  }/s, ratio ${ratio(ours?.certificatesPerSecond ?? 0, other?.certificatesPerSecond, 3) ?? "n/a"}`,
  met: !!ours && !!other && ours.certificatesPerSecond >= other.certificatesPerSecond,
});
const targets = [
  ...signers.filter((signer) => signer.role === "release").map((signer) => ({
    target: `in-process signing on the release runtime >= 50% of the OpenSSL per-core ceiling ` +
      `(${signer.csrKey} CSR)`,
    measured: `${signer.certificatesPerSecond} / ${signer.ceiling} = ${
      percent(signer.shareOfCeiling!)
    } (${signer.runtime})`,
    met: signer.shareOfCeiling! >= 0.5,
  })),
  ...CSR_KEYS.flatMap((csrKey) => {
    const { sentry, dapr, cfssl } = row(32, csrKey);
    const checks = [
      throughputAtLeast(`32 callers, ${csrKey} CSRs`, "Dapr's sentry's", sentry, dapr),
      {
        target: `32 callers, ${csrKey} CSRs: p99 <= Dapr's, zero errors`,
        measured: `${sentry?.p99Ms ?? "n/a"} ms vs ${dapr?.p99Ms ?? "n/a"} ms, errors ${
          errorSummary(sentry)
        }`,
        met: !!sentry && !!dapr && sentry.p99Ms <= dapr.p99Ms &&
          Object.keys(sentry.errors).length === 0,
      },
      {
        target: `32 callers, ${csrKey} CSRs: server CPU per certificate <= Dapr's`,
        measured: `${sentry?.serverCpuUsPerCertificate ?? "n/a"} µs vs ${
          dapr?.serverCpuUsPerCertificate ?? "n/a"
        } µs`,
        met: !!sentry && !!dapr &&
          sentry.serverCpuUsPerCertificate! <= dapr.serverCpuUsPerCertificate!,
      },
    ];
    if (csrKey === "ecdsa-p256") {
      checks.push(throughputAtLeast("32 callers, ecdsa-p256 CSRs", "CFSSL's", sentry, cfssl));
    }
    return checks;
  }),
  {
    target: "256 callers: zero errors or only RESOURCE_EXHAUSTED",
    measured: `errors ${errorSummary(at256.sentry)}, p99 ${at256.sentry?.p99Ms ?? "n/a"} ms`,
    met: at256.sentry !== undefined && onlyBusy(at256.sentry.errors),
  },
  {
    target: "peak RSS < 150 MB after 100,000 certificates",
    measured: `${rss.sentry.peakRssMiB} MiB after ${rss.sentry.certificates}`,
    met: rss.sentry.peakRssMiB < 150 && rss.sentry.certificates >= 100_000,
  },
  {
    target: `burst of ${BURST_CALLERS} callers: all served or told to retry, none lost`,
    measured: `${bursts.sentry.served} served, ${bursts.sentry.retries} retries, errors ${
      JSON.stringify(bursts.sentry.errors)
    }, peak RSS ${bursts.sentry.peakRssMiB} MiB`,
    met: bursts.sentry.served === bursts.sentry.callers &&
      Object.keys(bursts.sentry.errors).length === 0,
  },
  {
    target: "healthy within 1 s on a new directory",
    measured: `${startupMs} ms`,
    met: startupMs < 1000,
  },
];
const disturbed = endToEnd.flatMap((row) =>
  (["sentry", "dapr", "cfssl", "cfsslHttps"] as const).flatMap((server) =>
    (row[server]?.otherCpuPercent ?? 0) > OTHER_CPU_WARNING ? [row[server]!.otherCpuPercent!] : []
  )
);
console.log(
  `\nload average at the start ${loadAtStart}, at the end ${loadAverage()}; ` +
    (disturbed.length
      ? `${disturbed.length} load runs shared the machine with others (up to ${
        Math.max(...disturbed)
      }% of its CPU): compare figures with care`
      : `no load run lost more than ${OTHER_CPU_WARNING}% of the CPU to other processes`),
);
console.log("\ntargets (this run):");
for (const { target, measured, met } of targets) {
  console.log(`  ${met ? "met   " : "MISSED"}  ${target}: ${measured}`);
}

const results = {
  date: new Date().toISOString(),
  quick: QUICK,
  machine: {
    cores: cpus().length,
    model: cpus()[0]?.model,
    /** /proc/loadavg (1, 5, 15 minutes) before and after the run. */
    loadAverage: { start: loadAtStart, end: loadAverage() },
  },
  sentry: version,
  dapr: DAPR,
  opensslCeiling: ceiling,
  inProcess: signers,
  endToEnd: {
    loadGenerator: "tests/dapr/loadgen (grpc-go; CFSSL over net/http, HTTP/1.1)",
    connections: "min(callers, 32)",
    secondsPerRow: SECONDS,
    warmupSeconds: WARMUP_SECONDS,
    reference: cfssl ? "cfssl serve" : cfsslMissing,
    rows: endToEnd,
    /** Peak RSS of each server over all the rows of one issuer. */
    peakRssMiB: underLoadRss,
    nodeCrossCheck,
    /** The same servers pinned: the generator on one CPU, each server on one CPU and on all. */
    pinned,
  },
  footprint: {
    certificates: rss.sentry.certificates,
    errors: rss.sentry.errors,
    peakRssMiB: rss.sentry.peakRssMiB,
    startupMs,
    startups: startups.sentry,
    dapr: { ...rss.dapr, startupMs: daprStartupMs, startups: startups.dapr },
  },
  burst: { ...bursts.sentry, dapr: bursts.dapr },
  targets,
};
// A quick run never replaces the full run's record.
const resultsFile = QUICK ? "bench/results.quick.json" : "bench/results.json";
await Deno.writeTextFile(join(ROOT, resultsFile), JSON.stringify(results, null, 2) + "\n");
console.log(`\nwritten: ${resultsFile}`);
await Deno.remove(work, { recursive: true });
