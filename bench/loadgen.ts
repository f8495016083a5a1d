/**
 * The benchmark's side of the grpc-go load generator (tests/dapr/loadgen, built by
 * tests/dapr/build.sh): what to ask it for and what it answers. One generator puts the same
 * client cost on every server it loads: our sentry and Dapr's own (SignCertificate over TLS,
 * the server verified by its SPIFFE ID as daprd does), and CFSSL's sign endpoint.
 *
 * @module
 */
import type { LoadResult } from "./load.ts";

/** CSR key types the generator makes (a pool of them, before it measures). */
export type CsrKey = "ecdsa-p256" | "ed25519" | "rsa2048";

/** One run of the generator. */
export interface GoLoadPlan {
  /** `grpc`: a Dapr sentry; `cfssl`: `POST /api/v1/cfssl/sign`. */
  protocol: "grpc" | "cfssl";
  port: number;
  /** Trust anchors file: sentry's (`ca.crt`), or CFSSL's TLS certificate for HTTPS. */
  caFile?: string;
  key: CsrKey;
  callers: number;
  /** Connections the callers share round-robin (default min(callers, 32)). */
  connections?: number;
  /** Measured seconds; with `count`, the most to wait for it. */
  seconds: number;
  warmupSeconds: number;
  /** Stop after this many certificates. */
  count?: number;
  /** CPUs to run the generator on (`taskset -c` list, e.g. `0`); any when unset. */
  cpus?: string;
}

/** What the generator measured ({@link LoadResult}, plus what it sent). */
export interface GoLoadResult extends LoadResult {
  protocol: "grpc" | "cfssl";
  key: CsrKey;
  /** Every certificate received, warm-up and first calls included. */
  allCertificates: number;
  /** The generator's own CPU time (user + system) per certificate: the same for every server. */
  clientCpuUsPerCertificate: number;
  /** The server's CPU time per certificate over the whole run (added by the caller). */
  serverCpuUsPerCertificate?: number;
  /**
   * Our server only: its main thread's garbage-collection time per certificate (from its
   * /metrics; added by the caller).
   */
  mainThreadGcUsPerCertificate?: number;
  /**
   * Share of the machine's CPU (%) that neither the server nor the generator used during the
   * run: other processes, or the hypervisor's steal (added by the caller).
   */
  otherCpuPercent?: number;
}

/**
 * Runs the generator at `binary` with `plan`; resolves with its result, or rejects with its
 * own explanation when it cannot start (a server refusing the CSR's key type, for example).
 */
export async function goLoad(binary: string, plan: GoLoadPlan): Promise<GoLoadResult> {
  const args = [
    `-protocol=${plan.protocol}`,
    `-addr=127.0.0.1:${plan.port}`,
    `-key=${plan.key}`,
    `-callers=${plan.callers}`,
    `-duration=${plan.seconds}s`,
    `-warmup=${plan.warmupSeconds}s`,
  ];
  // Sentry's SPIFFE ID: the default trust domain, and the namespace both sentries take from
  // NAMESPACE.
  args.push(`-sentry-namespace=${Deno.env.get("NAMESPACE") ?? "default"}`);
  if (plan.caFile) args.push(`-ca=${plan.caFile}`);
  if (plan.connections) args.push(`-conns=${plan.connections}`);
  if (plan.count) args.push(`-count=${plan.count}`);
  const [program, programArgs] = plan.cpus
    ? ["taskset", ["-c", plan.cpus, binary, ...args]]
    : [binary, args];
  const output = await new Deno.Command(program, {
    args: programArgs,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (!output.success) throw new Error(decoder.decode(output.stderr).trim());
  return JSON.parse(decoder.decode(output.stdout));
}
