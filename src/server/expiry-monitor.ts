/**
 * Expiry safety: warns (and keeps warning hourly) when the issuer or a trust anchor has less
 * than 30 days left, so that operators rotate before anything fails.
 *
 * @module
 */
import type { Logger } from "../observability/logger.ts";
import type { CaState } from "./ca-state.ts";

const DAY_MS = 86_400_000;

/** Options of the monitor. */
export interface ExpiryMonitorOptions {
  /** Warn when less than this is left (default 30 days). */
  warnBeforeMs?: number;
  /** How often to check (default one hour). */
  intervalMs?: number;
}

/** Periodic expiry checks of the bundle in use. */
export class ExpiryMonitor {
  readonly #warnBeforeMs: number;
  readonly #intervalMs: number;
  #timer?: ReturnType<typeof setInterval>;

  /** Nothing happens until {@link start} or {@link check}. */
  constructor(
    readonly state: CaState,
    readonly logger: Logger,
    readonly now: () => Date,
    options: ExpiryMonitorOptions = {},
  ) {
    this.#warnBeforeMs = options.warnBeforeMs ?? 30 * DAY_MS;
    this.#intervalMs = options.intervalMs ?? 3_600_000;
  }

  /** Checks now and logs a warning per certificate that expires soon. Returns the warnings. */
  check(): string[] {
    const bundle = this.state.bundle;
    const now = this.now().getTime();
    const warnings: string[] = [];
    for (
      const [what, notAfter] of [
        ["issuer certificate", bundle.issuerNotAfter],
        ["root certificate (trust anchor)", bundle.rootNotAfter],
      ] as const
    ) {
      const left = notAfter.getTime() - now;
      if (left >= this.#warnBeforeMs) continue;
      const message = left <= 0
        ? `the ${what} expired at ${notAfter.toISOString()}`
        : `the ${what} expires in ${
          (left / DAY_MS).toFixed(1)
        } days (${notAfter.toISOString()}): rotate it soon`;
      warnings.push(message);
      this.logger.warn(message);
    }
    return warnings;
  }

  /** Checks now and then every interval. */
  start(): void {
    this.check();
    this.#timer = setInterval(() => this.check(), this.#intervalMs);
    (this.#timer as { unref?: () => void }).unref?.();
  }

  /** Stops the periodic checks. */
  close(): void {
    clearInterval(this.#timer);
  }
}
