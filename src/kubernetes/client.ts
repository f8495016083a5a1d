/**
 * The Kubernetes REST client sentry uses (no client library): get, create, replace, merge
 * patch, paged lists and watches of JSON objects, over requests that are retried with
 * exponential backoff and jitter on 429, 5xx and connection failures (honouring
 * `Retry-After`). Other 4xx answers are never retried: a 409 Conflict or 404 NotFound is the
 * caller's business. Each attempt goes through transport.ts (TLS, the bearer token, a deadline
 * per attempt); watch streams are read by watch-stream.ts.
 *
 * Errors (errors.ts, re-exported here): {@link KubeApiError} when the server answered with a
 * failure (HTTP status, the `Status` reason and the server's message quoted verbatim),
 * {@link KubeRequestError} when it could not be reached or did not answer in time. An aborted
 * `signal` rejects with the signal's reason (an `AbortError` DOMException unless one was given).
 *
 * @module
 */
import { formatDuration } from "../util/duration.ts";
import type { Logger } from "../observability/logger.ts";
import { VERSION } from "../util/version.ts";
import type { KubeConnection } from "./config.ts";
import { KubeRequestError, preview, statusError } from "./errors.ts";
import {
  type KubeRequestOptions,
  KubeTransport,
  type Outcome,
  type PreparedRequest,
  prepareRequest,
  RETRYABLE_CODES,
} from "./transport.ts";
import { readWatchStream, type WatchEvent } from "./watch-stream.ts";
import { isRecord } from "../util/records.ts";
import { Backoff } from "../util/backoff.ts";
import { delay } from "../util/timers.ts";

export {
  isAlreadyExists,
  isConflict,
  isForbidden,
  isGone,
  isNotFound,
  KubeApiError,
  type KubeApiErrorInit,
  KubeRequestError,
  type KubeRequestErrorInit,
  type KubeStatus,
} from "./errors.ts";
export type { KubeQuery, KubeRequestOptions } from "./transport.ts";
export type { WatchEvent } from "./watch-stream.ts";

/** Default bound on each attempt (connection, headers and body; for a watch, until the headers). */
export const DEFAULT_TIMEOUT_MS = 10_000;
/** Default number of attempts of a request (the first one included). */
export const DEFAULT_MAX_ATTEMPTS = 5;
/** Default delay before the first retry; it doubles with each retry. */
export const DEFAULT_INITIAL_BACKOFF_MS = 200;
/** Default upper bound on the delay between two attempts. */
export const DEFAULT_MAX_BACKOFF_MS = 5_000;
/** Longest `Retry-After` honoured; longer requests are shortened to this. */
export const MAX_RETRY_AFTER_MS = 30_000;

/** Options of the helpers that take no body. */
export type KubeCallOptions = Pick<KubeRequestOptions, "query" | "signal" | "timeoutMs">;

/** Client settings. */
export interface KubeClientOptions {
  /** Bound on each attempt (default 10 s). */
  timeoutMs?: number;
  /** Attempts per request, the first included (default 5; 1 disables retries). */
  maxAttempts?: number;
  /** Delay before the first retry, doubling after each (default 200 ms). */
  initialBackoffMs?: number;
  /** Upper bound of the delay between attempts (default 5 s). */
  maxBackoffMs?: number;
  /** Default `sentry/<version>`. */
  userAgent?: string;
  /** Retries are logged at debug level. */
  logger?: Logger;
}

/** A list answer (`ConfigMapList`, ...). */
export interface KubeList<T> {
  apiVersion?: string;
  kind?: string;
  metadata: { resourceVersion?: string; continue?: string; remainingItemCount?: number };
  items: T[];
}

/** Options of {@link KubeClient.list}. */
export interface KubeListOptions {
  labelSelector?: string;
  fieldSelector?: string;
  /** Page size; further pages are fetched (`continue`) and their items appended. */
  limit?: number;
  resourceVersion?: string;
  signal?: AbortSignal;
}

/** Options of {@link KubeClient.watch}. */
export interface KubeWatchOptions {
  resourceVersion?: string;
  fieldSelector?: string;
  labelSelector?: string;
  /** Asks the server to end the stream after this many seconds. */
  timeoutSeconds?: number;
  allowWatchBookmarks?: boolean;
  signal?: AbortSignal;
}

/** Milliseconds a `Retry-After` header (seconds or an HTTP date) asks for. */
export function parseRetryAfter(value: string | string[] | undefined): number | undefined {
  const text = (Array.isArray(value) ? value[0] : value)?.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * A client for one API server. Requests share keep-alive connections; {@link close} ends them
 * and cancels whatever is in flight.
 */
export class KubeClient {
  /** The settings this client was made from. */
  readonly connection: KubeConnection;
  readonly #base: URL;
  readonly #transport: KubeTransport;
  readonly #timeoutMs: number;
  readonly #maxAttempts: number;
  readonly #initialBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #logger?: Logger;
  readonly #cancels = new Set<() => void>();
  #closed = false;

  /** Nothing is sent until the first request. */
  constructor(connection: KubeConnection, options: KubeClientOptions = {}) {
    this.connection = connection;
    this.#base = new URL(connection.server);
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS));
    this.#initialBackoffMs = options.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS;
    this.#maxBackoffMs = options.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    this.#logger = options.logger;
    this.#transport = new KubeTransport(connection, options.userAgent ?? `sentry/${VERSION}`);
  }

  /** The namespace of the connection settings (context or pod namespace), if any. */
  get namespace(): string | undefined {
    return this.connection.namespace;
  }

  /** Cancels requests, watches and retry waits in flight and closes idle connections. */
  close(): void {
    this.#closed = true;
    for (const cancel of [...this.#cancels]) cancel();
    this.#transport.close();
  }

  /**
   * Sends `method path` (path starting with `/`, e.g. `/api/v1/namespaces/x/secrets/y`) and
   * returns the decoded JSON answer (undefined when the body is empty). Retries 429, 5xx and
   * connection failures; throws {@link KubeApiError} or {@link KubeRequestError}.
   */
  async request<T>(method: string, path: string, options: KubeRequestOptions = {}): Promise<T> {
    const prepared = this.#prepare(method, path, options, false);
    const outcome = await this.#cancellable(prepared, (signal) => this.#perform(prepared, signal));
    if (outcome.kind !== "complete") throw new Error("unreachable: unexpected stream");
    if (outcome.text.trim() === "") return undefined as T;
    try {
      return JSON.parse(outcome.text) as T;
    } catch {
      throw this.#requestError(
        prepared,
        "EBADRESPONSE",
        `${outcome.status} answer is not JSON: ${preview(outcome.text, 120)}`,
      );
    }
  }

  /** GET one object. */
  get<T>(path: string, options: KubeCallOptions = {}): Promise<T> {
    return this.request<T>("GET", path, options);
  }

  /** POST `body` to a collection (create); a 409 AlreadyExists is thrown, not retried. */
  create<T>(path: string, body: unknown, options: KubeCallOptions = {}): Promise<T> {
    return this.request<T>("POST", path, { ...options, body });
  }

  /** PUT `body` (replace; carry `metadata.resourceVersion` for optimistic concurrency). */
  replace<T>(path: string, body: unknown, options: KubeCallOptions = {}): Promise<T> {
    return this.request<T>("PUT", path, { ...options, body });
  }

  /** PATCH with a JSON merge patch (`application/merge-patch+json`). */
  mergePatch<T>(path: string, patch: unknown, options: KubeCallOptions = {}): Promise<T> {
    return this.request<T>("PATCH", path, {
      ...options,
      body: patch,
      contentType: "application/merge-patch+json",
    });
  }

  /**
   * GET a collection. With `limit`, follows `continue` tokens and appends every page's items;
   * the result carries the first page's metadata (its `resourceVersion` is the one to watch
   * from).
   */
  async list<T>(path: string, options: KubeListOptions = {}): Promise<KubeList<T>> {
    let result: KubeList<T> | undefined;
    let next: string | undefined;
    do {
      const page = await this.request<KubeList<T>>("GET", path, {
        signal: options.signal,
        query: {
          labelSelector: options.labelSelector,
          fieldSelector: options.fieldSelector,
          limit: options.limit,
          resourceVersion: next === undefined ? options.resourceVersion : undefined,
          continue: next,
        },
      });
      if (!isRecord(page) || (page.items !== null && !Array.isArray(page.items))) {
        throw new KubeRequestError({
          method: "GET",
          path,
          server: this.connection.server,
          code: "EBADRESPONSE",
          detail: "the answer is not a list (no items)",
        });
      }
      const items = page.items ?? [];
      const metadata = isRecord(page.metadata) ? page.metadata : {};
      if (result === undefined) result = { ...page, metadata: { ...metadata }, items: [...items] };
      else result.items.push(...items);
      next = typeof metadata.continue === "string" && metadata.continue !== ""
        ? metadata.continue
        : undefined;
    } while (next !== undefined);
    delete result.metadata.continue;
    delete result.metadata.remainingItemCount;
    return result;
  }

  /**
   * Watches a collection (`path` is the list path, e.g. `/api/v1/namespaces/x/configmaps`):
   * calls `onEvent` for each event in order (awaiting it when it returns a promise, which
   * holds back further events), and resolves when the server ends the stream. Rejects with a
   * {@link KubeApiError} for an `ERROR` event (status 410 / reason `Expired` or `Gone` when
   * the resourceVersion is too old: list again), with a {@link KubeRequestError} when the
   * stream breaks (or, given `timeoutSeconds`, stays open longer than that plus the client's
   * timeout), with the error `onEvent` throws, or with the signal's reason when aborted.
   * Opening the stream is retried like any request.
   */
  watch<T>(
    path: string,
    options: KubeWatchOptions,
    onEvent: (event: WatchEvent<T>) => void | Promise<void>,
  ): Promise<void> {
    const prepared = this.#prepare("GET", path, {
      signal: options.signal,
      query: {
        watch: "true",
        resourceVersion: options.resourceVersion,
        fieldSelector: options.fieldSelector,
        labelSelector: options.labelSelector,
        timeoutSeconds: options.timeoutSeconds,
        allowWatchBookmarks: options.allowWatchBookmarks,
      },
    }, true);
    const { timeoutSeconds } = options;
    const limitMs = timeoutSeconds === undefined ? 0 : timeoutSeconds * 1000 + this.#timeoutMs;
    return this.#cancellable(prepared, async (signal) => {
      const outcome = await this.#perform(prepared, signal);
      if (outcome.kind !== "stream") throw new Error("unreachable: expected a stream");
      await readWatchStream(outcome.stream, {
        label: prepared.label,
        path: prepared.path,
        signal,
        limit: timeoutSeconds === undefined ? undefined : {
          ms: limitMs,
          error: () =>
            this.#requestError(
              prepared,
              "ETIMEDOUT",
              `watch stream still open ${formatDuration(limitMs)} after it started, although ` +
                `timeoutSeconds=${timeoutSeconds} was asked for`,
            ),
        },
        requestError: (code, detail, cause) => this.#requestError(prepared, code, detail, cause),
      }, onEvent);
    });
  }

  #prepare(
    method: string,
    path: string,
    options: KubeRequestOptions,
    stream: boolean,
  ): PreparedRequest {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    return prepareRequest(this.#base, method, path, { ...options, timeoutMs }, stream);
  }

  #requestError(
    prepared: PreparedRequest,
    code: string,
    detail: string,
    cause?: unknown,
  ): KubeRequestError {
    return this.#transport.requestError(prepared, code, detail, cause);
  }

  /**
   * Runs `work` with a signal that aborts with the caller's reason when the caller's signal
   * does, and with a {@link KubeRequestError} `ECLOSED` when the client is closed.
   */
  async #cancellable<T>(
    prepared: PreparedRequest,
    work: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const controller = new AbortController();
    const caller = prepared.signal;
    const onAbort = () => controller.abort(caller?.reason);
    const cancel = () => controller.abort(this.#requestError(prepared, "ECLOSED", "client closed"));
    caller?.addEventListener("abort", onAbort, { once: true });
    this.#cancels.add(cancel);
    if (caller?.aborted) onAbort();
    try {
      return await work(controller.signal);
    } finally {
      caller?.removeEventListener("abort", onAbort);
      this.#cancels.delete(cancel);
    }
  }

  /** The attempts of one request: retries 429, 5xx and retryable connection failures. */
  async #perform(prepared: PreparedRequest, signal: AbortSignal): Promise<Outcome> {
    const backoff = new Backoff({
      initialMs: this.#initialBackoffMs,
      maxMs: this.#maxBackoffMs,
      jitter: true,
    });
    for (let attempt = 1;; attempt++) {
      let outcome: Outcome;
      try {
        outcome = await this.#attempt(prepared, signal);
      } catch (error) {
        signal.throwIfAborted();
        if (!(error instanceof KubeRequestError)) throw error;
        const final = attempt > 1 ? error.withAttempts(attempt) : error;
        if (!RETRYABLE_CODES.has(error.code) || attempt >= this.#maxAttempts || this.#closed) {
          throw final;
        }
        await this.#pause(prepared, signal, attempt, backoff.next(), error);
        continue;
      }
      if (outcome.kind === "stream" || (outcome.status >= 200 && outcome.status < 300)) {
        return outcome;
      }
      const body = parseJson(outcome.text);
      const error = statusError(
        prepared.label,
        prepared.path,
        outcome.status,
        body,
        outcome.text,
        attempt,
      );
      const retryable = outcome.status === 429 || outcome.status >= 500;
      if (!retryable || attempt >= this.#maxAttempts || this.#closed) throw error;
      let retryAfterMs = parseRetryAfter(outcome.headers["retry-after"]);
      const seconds = error.statusObject?.details?.retryAfterSeconds;
      if (retryAfterMs === undefined && typeof seconds === "number" && seconds > 0) {
        retryAfterMs = seconds * 1000;
      }
      const delayMs = retryAfterMs === undefined
        ? backoff.next()
        : Math.min(retryAfterMs, MAX_RETRY_AFTER_MS);
      await this.#pause(prepared, signal, attempt, delayMs, error);
    }
  }

  /**
   * Waits `delayMs` before attempt `attempt + 1` (the server's `Retry-After`, capped, else
   * the request's backoff); rejects with the signal's reason when it aborts meanwhile.
   */
  async #pause(
    prepared: PreparedRequest,
    signal: AbortSignal,
    attempt: number,
    delayMs: number,
    error: Error,
  ): Promise<void> {
    this.#logger?.debug("kubernetes API request failed; retrying", {
      method: prepared.label,
      path: prepared.path,
      attempt,
      delay: formatDuration(Math.round(delayMs)),
      error: error.message,
    });
    await delay(delayMs, signal);
    signal.throwIfAborted();
  }

  /** One attempt, unless the client is closed. */
  async #attempt(prepared: PreparedRequest, signal: AbortSignal): Promise<Outcome> {
    if (this.#closed) throw this.#requestError(prepared, "ECLOSED", "client closed");
    signal.throwIfAborted();
    return await this.#transport.send(prepared, signal);
  }
}
