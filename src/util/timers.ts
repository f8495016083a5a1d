/**
 * Timers that are safe with delays from the outside world. Node's `setTimeout` turns any delay
 * above 2^31-1 ms (about 24.8 days) into 1 ms, with only a warning: a cache lifetime, a token
 * TTL or a `Cache-Control: max-age` of a month would then fire at once, and keep firing. Every
 * delay that comes from input goes through {@link safeDelayMs}: via {@link setSafeTimeout},
 * {@link delay}, or directly.
 *
 * @module
 */

/** The longest delay Node's timers honour. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * `ms` made safe for a timer: at least 0, at most {@link MAX_TIMER_MS} (a timer that fires
 * early re-checks and waits again; one that fires at once would spin). NaN becomes 0.
 *
 * @example
 * ```ts
 * safeDelayMs(365 * 86_400_000); // 2147483647
 * ```
 */
export function safeDelayMs(ms: number): number {
  if (!(ms > 0)) return 0;
  return Math.min(ms, MAX_TIMER_MS);
}

/**
 * `setTimeout` with the delay made safe; the timer does not keep the process alive unless
 * `keepAlive` is set.
 */
export function setSafeTimeout(
  callback: () => void,
  ms: number,
  keepAlive = false,
): ReturnType<typeof setTimeout> {
  const timer = setTimeout(callback, safeDelayMs(ms));
  if (!keepAlive) (timer as { unref?: () => void }).unref?.();
  return timer;
}

/** Resolves after `ms` (made safe), or at once when `signal` aborts (it never rejects). */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, safeDelayMs(ms));
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}
