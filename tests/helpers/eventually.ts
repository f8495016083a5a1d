/**
 * Polling for an expected state in end-to-end tests (reloads and watches take effect
 * asynchronously).
 *
 * @module
 */

/** Polls `probe` every 100 ms until it returns true; throws naming `what` after `timeoutMs`. */
export async function eventually(
  what: string,
  probe: () => Promise<boolean> | boolean,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
