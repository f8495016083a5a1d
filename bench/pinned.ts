/**
 * Per-core comparison for the benchmark: the grpc-go load generator runs on CPU 0 alone
 * (`taskset`), and each server is pinned first to CPU 1 alone (what one core of it serves)
 * and then to every CPU (on a 2-core machine it then shares CPU 0 with the generator). Pinned
 * runs are steadier than the free-running rows, and the one-core row compares what the two
 * servers cost per certificate without the scheduler moving the generator onto the server's
 * core. Needs `taskset` and at least 2 CPUs; otherwise it says why and measures nothing.
 *
 * @module
 */
import { cpus } from "node:os";
import { type CsrKey, goLoad } from "./loadgen.ts";
import { cpuSeconds } from "./proc.ts";

/** A running server to load. */
export interface PinnedServer {
  name: "sentry" | "dapr";
  pid: number;
  port: number;
  /** Its trust anchors file. */
  caFile: string;
}

/** One server's figures in one pinned run. */
export interface PinnedResult {
  certificatesPerSecond: number;
  p99Ms: number;
  /** The server's CPU time per certificate, µs. */
  serverCpuUsPerCertificate: number;
  /** The generator's CPU time per certificate, µs. */
  clientCpuUsPerCertificate: number;
  errors: Record<string, number>;
}

/** Both servers with one CSR type on one set of CPUs. */
export interface PinnedRow {
  csrKey: CsrKey;
  /** The servers' CPUs (`taskset` list). */
  serverCpus: string;
  sentry?: PinnedResult;
  dapr?: PinnedResult;
  /** ours / Dapr's certificates per second. */
  ratio?: number;
}

/** The comparison, or why it was not made. */
export type PinnedComparison =
  | { generatorCpus: string; callers: number; rows: PinnedRow[] }
  | { skipped: string };

const GENERATOR_CPUS = "0";

async function taskset(args: string[]): Promise<void> {
  const output = await new Deno.Command("taskset", { args, stdout: "null", stderr: "piped" })
    .output();
  if (!output.success) {
    throw new Error(`taskset ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
  }
}

/** Moves every thread of `pid` (and the threads it starts later) onto `cpuList`. */
function pin(pid: number, cpuList: string): Promise<void> {
  return taskset(["-a", "-p", "-c", cpuList, String(pid)]);
}

/**
 * Loads each of `servers` in turn, row by row (so that drift in the machine's speed hits
 * both), for every CSR type, on one core and on all; leaves the servers on every CPU again.
 */
export async function pinnedComparison(
  loadgen: string,
  servers: PinnedServer[],
  plan: { csrKeys: CsrKey[]; callers: number; seconds: number; warmupSeconds: number },
): Promise<PinnedComparison> {
  const count = cpus().length;
  if (count < 2) return { skipped: `${count} CPU: pinning needs two` };
  try {
    await taskset(["-c", GENERATOR_CPUS, "true"]);
  } catch (error) {
    return { skipped: `taskset does not work here: ${(error as Error).message.trim()}` };
  }
  const all = `0-${count - 1}`;
  const rows: PinnedRow[] = [];
  try {
    for (const csrKey of plan.csrKeys) {
      for (const serverCpus of ["1", all]) {
        const row: PinnedRow = { csrKey, serverCpus };
        for (const server of servers) {
          await pin(server.pid, serverCpus);
          const before = cpuSeconds(server.pid);
          const result = await goLoad(loadgen, {
            protocol: "grpc",
            port: server.port,
            caFile: server.caFile,
            key: csrKey,
            callers: plan.callers,
            seconds: plan.seconds,
            warmupSeconds: plan.warmupSeconds,
            cpus: GENERATOR_CPUS,
          });
          const cpu = cpuSeconds(server.pid) - before;
          row[server.name] = {
            certificatesPerSecond: result.certificatesPerSecond,
            p99Ms: result.p99Ms,
            serverCpuUsPerCertificate: Math.round(cpu * 1e6 / result.allCertificates),
            clientCpuUsPerCertificate: result.clientCpuUsPerCertificate,
            errors: result.errors,
          };
        }
        if (row.sentry && row.dapr) {
          row.ratio = Number(
            (row.sentry.certificatesPerSecond / row.dapr.certificatesPerSecond).toFixed(2),
          );
        }
        rows.push(row);
      }
    }
  } finally {
    for (const server of servers) await pin(server.pid, all).catch(() => {});
  }
  return { generatorCpus: GENERATOR_CPUS, callers: plan.callers, rows };
}

/** Prints the comparison: one line per row, then how each server scaled from 1 core to all. */
export function printPinned(comparison: PinnedComparison): void {
  if ("skipped" in comparison) {
    console.log(`\nper-core comparison skipped: ${comparison.skipped}`);
    return;
  }
  const cell = (r?: PinnedResult) =>
    r
      ? `${r.certificatesPerSecond}/s p99 ${
        r.p99Ms.toFixed(1)
      } ms cpu ${r.serverCpuUsPerCertificate} µs ` +
        `(client ${r.clientCpuUsPerCertificate} µs${
          Object.keys(r.errors).length ? `, errors ${JSON.stringify(r.errors)}` : ""
        })`
      : "n/a";
  console.log(
    `\nper core: load generator pinned to CPU ${comparison.generatorCpus}, ` +
      `${comparison.callers} callers; each server pinned to the CPUs shown:`,
  );
  for (const row of comparison.rows) {
    console.log(
      `  ${row.csrKey.padEnd(10)} CPUs ${row.serverCpus.padEnd(4)} ours ${cell(row.sentry)}\n` +
        `  ${"".padEnd(10)}      ${"".padEnd(4)} Dapr ${cell(row.dapr)}  ours/Dapr ${
          row.ratio ?? "n/a"
        }`,
    );
  }
  for (const server of ["sentry", "dapr"] as const) {
    const scaling = comparison.rows.filter((row) => row.serverCpus === "1").map((one) => {
      const all = comparison.rows.find((row) =>
        row.csrKey === one.csrKey && row.serverCpus !== "1"
      );
      const [a, b] = [one[server]?.certificatesPerSecond, all?.[server]?.certificatesPerSecond];
      return `${one.csrKey} ${a && b ? (b / a).toFixed(2) : "n/a"}x`;
    });
    console.log(
      `  ${server === "sentry" ? "ours" : "Dapr's"}: all CPUs / one CPU = ${scaling.join(", ")}`,
    );
  }
}
