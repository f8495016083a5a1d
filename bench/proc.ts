/**
 * What the benchmark reads about processes and the machine from /proc: a process's CPU time
 * and peak RSS, the machine's busy time. Linux only, like the benchmark.
 *
 * @module
 */
import { readFileSync } from "node:fs";

const CLOCK_TICKS = Number(
  new TextDecoder().decode(
    (await new Deno.Command("getconf", { args: ["CLK_TCK"] }).output()).stdout,
  )
    .trim(),
);

/** CPU time (user + system, all threads) a process has used so far, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/**
 * Busy CPU time of the whole machine so far, all cores, in seconds (/proc/stat: user, nice,
 * system, irq, softirq and steal).
 */
export function machineBusySeconds(): number {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/)
    .slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = fields;
  return (user + nice + system + irq + softirq + (steal ?? 0)) / CLOCK_TICKS;
}

/** Peak resident set size (VmHWM) of a process, in MiB. */
export function peakRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number((Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) / 1024).toFixed(1));
}
