/**
 * The mTLS settings of Kubernetes mode: the `configurations.dapr.io/v1alpha1` custom resource
 * named by `--config` in sentry's namespace, read at start and watched afterwards, so that
 * `kubectl edit configurations/<name>` takes effect without restarting anything.
 *
 * @module
 */
import { isNotFound, type KubeClient } from "../kubernetes/client.ts";
import { KubeApiError, KubeRequestError } from "../kubernetes/errors.ts";
import { Backoff } from "../util/backoff.ts";
import { StartupAbortedError } from "../util/startup-aborted.ts";
import { delay } from "../util/timers.ts";
import { type ObjectWatch, watchObject } from "../kubernetes/object-watch.ts";
import type { Logger } from "../observability/logger.ts";
import { ConfigurationError, type MtlsSettings, settingsFromDocument } from "./configuration.ts";
import type { SettingsHandlers, SettingsSource } from "./settings-source.ts";

/** The Configuration Dapr's Helm chart installs, and the one older installs and the guide use. */
export const DEFAULT_CONFIGURATION_NAMES = ["daprsystem", "default"] as const;

/** How {@link KubeSettingsSource.load} waits for an API server that does not answer. */
export interface StartupWait {
  /** Longest pause between tries (default 10 s; the first is 250 ms, doubling). */
  maxDelayMs?: number;
  /** Waits between tries (default {@link delay}; tests pass a fast one). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/** The API server could not be reached or is overloaded / failing (worth waiting for). */
function isOutage(error: unknown): boolean {
  if (error instanceof KubeRequestError) return true;
  return error instanceof KubeApiError && (error.status === 429 || error.status >= 500);
}

/** A Configuration resource, watched through the Kubernetes API. */
export class KubeSettingsSource implements SettingsSource {
  #name: string;
  readonly #client: KubeClient;
  readonly #namespace: string;
  readonly #candidates: readonly string[];
  readonly #logger?: Logger;
  #handlers?: SettingsHandlers;
  #watch?: ObjectWatch;
  #lastText?: string;
  readonly #wait: StartupWait;
  /** Ends a start-up wait for the API server ({@link close}). */
  readonly #closed = new AbortController();

  /**
   * `names` are tried in order at start (the first that exists is used); with one name, it
   * must exist.
   */
  constructor(
    client: KubeClient,
    namespace: string,
    names: readonly string[],
    logger?: Logger,
    wait: StartupWait = {},
  ) {
    this.#wait = wait;
    this.#client = client;
    this.#namespace = namespace;
    this.#candidates = names;
    this.#name = names[0];
    this.#logger = logger;
  }

  /** For logs, e.g. `Configuration dapr-system/daprsystem`. */
  get description(): string {
    return `Configuration ${this.#namespace}/${this.#name}`;
  }

  get #collection(): string {
    return `/apis/dapr.io/v1alpha1/namespaces/${
      encodeURIComponent(this.#namespace)
    }/configurations`;
  }

  async #read(name: string): Promise<unknown | undefined> {
    try {
      return await this.#client.get(`${this.#collection}/${encodeURIComponent(name)}`);
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw new ConfigurationError(
        `cannot read Configuration ${this.#namespace}/${name}: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  /**
   * Reads the first existing candidate; ConfigurationError when none exists or it is invalid.
   * While the API server cannot be reached (or answers 429/5xx), waits for it with backoff, for
   * as long as it takes (one warning per distinct reason); {@link close} ends the wait.
   */
  async load(): Promise<MtlsSettings> {
    const backoff = new Backoff({ initialMs: 250, maxMs: this.#wait.maxDelayMs ?? 10_000 });
    const sleep = this.#wait.sleep ?? ((ms: number, signal: AbortSignal) => delay(ms, signal));
    let lastReason: string | undefined;
    while (true) {
      try {
        return await this.#loadOnce();
      } catch (error) {
        const cause = (error as Error).cause;
        if (!(error instanceof ConfigurationError) || !isOutage(cause)) throw error;
        const reason = (cause as Error).message;
        if (reason !== lastReason) {
          lastReason = reason;
          this.#logger?.warn(
            `waiting for the Kubernetes API to read the Configuration (retrying with backoff ` +
              `until it answers): ${reason}`,
          );
        }
        if (this.#closed.signal.aborted) break;
        try {
          await sleep(backoff.next(), this.#closed.signal);
        } catch {
          // closed: below
        }
        if (this.#closed.signal.aborted) break;
      }
    }
    throw new StartupAbortedError("stopped while waiting for the Kubernetes API");
  }

  async #loadOnce(): Promise<MtlsSettings> {
    for (const name of this.#candidates) {
      const document = await this.#read(name);
      if (document === undefined) continue;
      this.#name = name;
      if (this.#candidates.length > 1) this.#logger?.info(`using ${this.description}`);
      this.#lastText = JSON.stringify((document as { spec?: unknown }).spec ?? {});
      return settingsFromDocument(document, this.description);
    }
    throw new ConfigurationError(
      `no Configuration ${this.#candidates.join(" or ")} in namespace ${this.#namespace} ` +
        `(kubectl get configurations -n ${this.#namespace}): create it, name another with --config, ` +
        `or pass --config "" to use the built-in defaults`,
    );
  }

  /** Starts watching the chosen Configuration. */
  watch(handlers: SettingsHandlers): { close(): void } {
    this.#handlers = handlers;
    this.#watch = watchObject(this.#client, {
      listPath: this.#collection,
      name: this.#name,
      onChange: () => void this.#check(false),
      logger: this.#logger,
    });
    return { close: () => this.close() };
  }

  /** Re-reads now (SIGHUP). */
  reload(): Promise<void> {
    return this.#check(true);
  }

  async #check(force: boolean): Promise<void> {
    const handlers = this.#handlers;
    if (!handlers) return;
    try {
      const document = await this.#read(this.#name);
      if (document === undefined) {
        handlers.onError(new ConfigurationError(`${this.description} was deleted`));
        return;
      }
      const text = JSON.stringify((document as { spec?: unknown }).spec ?? {});
      if (!force && text === this.#lastText) return;
      this.#lastText = text;
      handlers.onUpdate(settingsFromDocument(document, this.description));
    } catch (error) {
      handlers.onError(error as Error);
    }
  }

  /** Stops watching (and a start-up wait for the API server). */
  close(): void {
    this.#closed.abort();
    this.#watch?.close();
  }
}
