/**
 * Sizing the signing worker pool: the container's CPU quota (cgroup v2 and v1) caps what
 * `availableParallelism()` reports, and the default worker count follows.
 */
import assert from "node:assert/strict";
import {
  cgroupCpuQuota,
  defaultSigningWorkers,
  effectiveCpuCount,
} from "../../src/server/cpu-count.ts";

function files(entries: Record<string, string>) {
  return (path: string) => entries[path];
}

Deno.test("cgroup v2 cpu.max: a quota, or max for none", () => {
  assert.equal(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu.max": "150000 100000\n" })), 1.5);
  assert.equal(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu.max": "max 100000\n" })), undefined);
});

Deno.test("cgroup v1 cfs quota and period; -1 is no limit", () => {
  const v1 = (quota: string) =>
    files({
      "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": quota,
      "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
    });
  assert.equal(cgroupCpuQuota(v1("50000\n")), 0.5);
  assert.equal(cgroupCpuQuota(v1("-1\n")), undefined);
  assert.equal(cgroupCpuQuota(files({})), undefined);
});

Deno.test("a quota caps the CPU count (rounded up); without one the CPU count stands", () => {
  const limited = files({ "/sys/fs/cgroup/cpu.max": "100000 100000" });
  assert.equal(effectiveCpuCount(limited, 64), 1);
  assert.equal(effectiveCpuCount(files({ "/sys/fs/cgroup/cpu.max": "250000 100000" }), 64), 3);
  assert.equal(effectiveCpuCount(files({}), 8), 8);
  assert.equal(effectiveCpuCount(files({ "/sys/fs/cgroup/cpu.max": "50000 100000" }), 8), 1);
});

Deno.test("default workers: one CPU for the event loop, at least one, at most two", () => {
  assert.equal(defaultSigningWorkers(1), 1);
  assert.equal(defaultSigningWorkers(2), 1);
  assert.equal(defaultSigningWorkers(3), 2);
  assert.equal(defaultSigningWorkers(64), 2);
});
