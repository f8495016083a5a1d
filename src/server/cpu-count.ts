/**
 * How many CPUs this process can really use, for sizing the signing worker pool: the CPUs it
 * may run on (`os.availableParallelism()`, which honours CPU affinity) or, when smaller, the
 * container's CPU quota — cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`.
 * A Kubernetes CPU limit becomes such a quota, which `availableParallelism()` does not see: a
 * pod limited to one CPU on a 64-core node would otherwise start 63 workers.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

/** Reads a file as text, or returns undefined (tests pass their own). */
export type TextReader = (path: string) => string | undefined;

function readIfPresent(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** The CPU quota of this process's cgroup, in CPUs (fractional), or undefined when unlimited. */
export function cgroupCpuQuota(read: TextReader = readIfPresent): number | undefined {
  const v2 = read("/sys/fs/cgroup/cpu.max")?.trim().split(/\s+/);
  if (v2 && v2.length === 2) {
    const [quota, period] = v2;
    if (quota === "max") return undefined;
    const cpus = Number(quota) / Number(period);
    return cpus > 0 ? cpus : undefined;
  }
  const quota = Number(read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?.trim());
  const period = Number(read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?.trim());
  return quota > 0 && period > 0 ? quota / period : undefined;
}

/** The CPUs this process can use: affinity and cgroup quota (rounded up), at least 1. */
export function effectiveCpuCount(
  read: TextReader = readIfPresent,
  cpus: number = availableParallelism(),
): number {
  const quota = cgroupCpuQuota(read);
  return Math.max(1, quota === undefined ? cpus : Math.min(cpus, Math.ceil(quota)));
}

/**
 * Default number of signing workers: one CPU is left to the event loop (TLS, HTTP/2, gRPC),
 * and two workers already sign faster than one event loop can feed them (measured: ~230 µs
 * of event-loop time and ~250 µs of worker time per certificate), so at most two.
 */
export function defaultSigningWorkers(cpus: number = effectiveCpuCount()): number {
  return Math.min(2, Math.max(1, cpus - 1));
}
