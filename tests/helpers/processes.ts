/**
 * Stopping the child processes tests start (sentry, daprd, Dapr's control plane): SIGTERM, then
 * SIGKILL if the process has not exited within a grace period.
 *
 * @module
 */

/**
 * Sends SIGTERM to `child` (if it still runs), SIGKILL after `graceMs`, and resolves to its exit
 * status. Safe to call on a process that has already exited.
 */
export async function terminate(
  child: Deno.ChildProcess,
  graceMs = 10_000,
): Promise<Deno.CommandStatus> {
  const signal = (name: Deno.Signal) => {
    try {
      child.kill(name);
    } catch {
      // already gone
    }
  };
  signal("SIGTERM");
  const timer = setTimeout(() => signal("SIGKILL"), graceMs);
  try {
    return await child.status;
  } finally {
    clearTimeout(timer);
  }
}
