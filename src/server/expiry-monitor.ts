/**
 * Expiry safety: warns (and keeps warning hourly) when the issuer or a trust anchor has less
 * than 30 days left, so that operators rotate before anything fails. The root's warning has
 * the text Dapr's documentation tells operators to alert on ("Dapr root certificate expiration
 * warning: certificate expires in 2 days and 15 hours", "... certificate has expired."); the
 * issuer's says "issuer" instead of "root"; the NotAfter time goes in a `not_after` field.
 * An issuer that outlives the root is warned about once per bundle loaded: its workload
 * certificates are clamped to the issuer, but every chain breaks when the root expires.
 * When the server drives root rotation, each expiry warning ends with what will happen, in
 * parentheses after Dapr's text ("... expires in 20 days and 0 hours (automatic root rotation
 * starts at 2030-01-01T00:00:00.000Z)"), so that it does not read as a call for manual action.
 *
 * @module
 */
import type { Logger } from "../observability/logger.ts";
import type { TrustBundle } from "../ca/bundle.ts";
import { viewBundle } from "../ca/root-rotation.ts";
import type { CaState } from "./ca-state.ts";

const DAY_MS = 86_400_000;

/** Options of the monitor. */
export interface ExpiryMonitorOptions {
  /** Warn when less than this is left (default 30 days). */
  warnBeforeMs?: number;
  /** How often to check (default one hour). */
  intervalMs?: number;
  /**
   * What the rotation driver will do next, in words (see RootRotationDriver.outlook), appended
   * to each expiry warning; undefined (or returning undefined): nothing is appended.
   */
  rotationOutlook?: () => string | undefined;
}

/**
 * The warning for a `what` ("root" or "issuer") certificate with `leftMs` of validity left, in
 * the words of Dapr's documentation: whole days and hours, or "has expired".
 */
export function expiryWarning(what: "root" | "issuer", leftMs: number): string {
  const prefix = `Dapr ${what} certificate expiration warning: certificate`;
  if (leftMs <= 0) return `${prefix} has expired.`;
  const hours = Math.floor(leftMs / 3_600_000);
  return `${prefix} expires in ${Math.floor(hours / 24)} days and ${hours % 24} hours`;
}

/**
 * The warning for an issuer whose NotAfter is after the (earliest) root's, or undefined when
 * the issuer expires with or before the root.
 */
export function issuerOutlivesRootWarning(
  issuerNotAfter: Date,
  rootNotAfter: Date,
): string | undefined {
  if (issuerNotAfter.getTime() <= rootNotAfter.getTime()) return undefined;
  return `issuer certificate outlives the root: issuer NotAfter ${issuerNotAfter.toISOString()} ` +
    `is after the root's ${rootNotAfter.toISOString()}; every certificate chain breaks when the ` +
    `root expires, so rotate the root (and issuer) before then`;
}

/**
 * NotAfter of the anchor the issuer chains to: during a root rotation the anchors also hold
 * the other root (the old one, once signing switched), whose earlier expiry is no reason to warn.
 */
function signingRootNotAfter(bundle: TrustBundle): Date {
  try {
    return viewBundle(bundle.pem).root.notAfter;
  } catch {
    return bundle.rootNotAfter; // validated bundles chain; keep the earliest anchor otherwise
  }
}

/** Periodic expiry checks of the bundle in use. */
export class ExpiryMonitor {
  readonly #warnBeforeMs: number;
  readonly #intervalMs: number;
  readonly #rotationOutlook?: () => string | undefined;
  #timer?: ReturnType<typeof setInterval>;
  /** The bundle last checked for an issuer outliving its root (warned once per bundle). */
  #orderChecked?: object;

  /** Nothing happens until {@link start} or {@link check}. */
  constructor(
    readonly state: CaState,
    readonly logger: Logger,
    readonly now: () => Date,
    options: ExpiryMonitorOptions = {},
  ) {
    this.#warnBeforeMs = options.warnBeforeMs ?? 30 * DAY_MS;
    this.#intervalMs = options.intervalMs ?? 3_600_000;
    this.#rotationOutlook = options.rotationOutlook;
  }

  /** Checks now and logs a warning per certificate that expires soon. Returns the warnings. */
  check(): string[] {
    const bundle = this.state.bundle;
    const now = this.now().getTime();
    const warnings: string[] = [];
    let outlook: string | undefined | null = null; // asked for at most once, when needed
    if (this.#orderChecked !== bundle) {
      this.#orderChecked = bundle;
      const rootNotAfter = signingRootNotAfter(bundle);
      const outlives = issuerOutlivesRootWarning(bundle.issuerNotAfter, rootNotAfter);
      if (outlives) {
        warnings.push(outlives);
        this.logger.warn(outlives, {
          issuer_not_after: bundle.issuerNotAfter.toISOString(),
          root_not_after: rootNotAfter.toISOString(),
        });
      }
    }
    for (
      const [what, notAfter] of [
        ["issuer", bundle.issuerNotAfter],
        ["root", bundle.rootNotAfter],
      ] as const
    ) {
      const left = notAfter.getTime() - now;
      if (left >= this.#warnBeforeMs) continue;
      if (outlook === null) outlook = this.#rotationOutlook?.();
      const message = expiryWarning(what, left) + (outlook ? ` (${outlook})` : "");
      warnings.push(message);
      this.logger.warn(message, { not_after: notAfter.toISOString() });
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
