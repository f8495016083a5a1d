/**
 * Exponential backoff for retry loops: each delay doubles from `initialMs` up to `maxMs`,
 * optionally with jitter (a delay drawn from the upper half of the current step), and goes
 * back to `initialMs` after a success.
 *
 * @module
 */

/** Options of {@link Backoff}. */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** Spread retries of many clients: each delay is drawn from [step/2, step]. */
  jitter?: boolean;
  /** The random source for the jitter (tests pass a fixed one). */
  random?: () => number;
}

/**
 * The delays of one retry loop.
 *
 * @example
 * ```ts
 * const backoff = new Backoff({ initialMs: 500, maxMs: 30_000 });
 * backoff.next(); // 500
 * backoff.next(); // 1000
 * backoff.reset();
 * backoff.next(); // 500
 * ```
 */
export class Backoff {
  readonly #options: BackoffOptions;
  #attempt = 0;

  /** Starts at the first step. */
  constructor(options: BackoffOptions) {
    this.#options = options;
  }

  /** The delay before the next retry, in ms. */
  next(): number {
    const { initialMs, maxMs, jitter, random = Math.random } = this.#options;
    const step = Math.min(maxMs, initialMs * 2 ** this.#attempt);
    this.#attempt++;
    return jitter ? step / 2 + random() * (step / 2) : step;
  }

  /** Back to the first step (after a success). */
  reset(): void {
    this.#attempt = 0;
  }
}
