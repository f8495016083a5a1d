/**
 * A small Kubernetes REST client over `node:https` / `node:http` (no client library): the
 * cluster CA or `insecure-skip-tls-verify`, client-certificate or bearer-token authentication
 * (a token file is re-read for every request, as the kubelet rotates service-account tokens),
 * JSON bodies, a timeout per attempt, and retries with exponential backoff and jitter on 429,
 * 5xx and connection failures (honouring `Retry-After`). Other 4xx answers are never retried:
 * a 409 Conflict or 404 NotFound is the caller's business.
 *
 * Errors (errors.ts, re-exported here): {@link KubeApiError} when the server answered with a failure (HTTP status, the
 * `Status` reason and the server's message quoted verbatim), {@link KubeRequestError} when it
 * could not be reached or did not answer in time. An aborted `signal` rejects with the
 * signal's reason (an `AbortError` DOMException unless one was given).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { readFile } from "node:fs/promises";
import {
  Agent as HttpAgent,
  type ClientRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request as httpRequest,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { formatDuration } from "../util/duration.ts";
import type { Logger } from "../observability/logger.ts";
import { VERSION } from "../util/version.ts";
import type { KubeConnection } from "./config.ts";
import { KubeRequestError, preview, statusError } from "./errors.ts";
import { isRecord } from "../util/records.ts";
import { Backoff } from "../util/backoff.ts";

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

/** Connection failures worth another attempt (TLS and DNS failures are not). */
const RETRYABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
]);

/** Query parameters; undefined values are left out. */
export type KubeQuery = Record<string, string | number | boolean | undefined>;

/** Options of {@link KubeClient.request}. */
export interface KubeRequestOptions {
  /** A value sent as JSON, or a string / bytes sent as they are. */
  body?: unknown;
  /** Default `application/json` when there is a body. */
  contentType?: string;
  query?: KubeQuery;
  signal?: AbortSignal;
  /** Overrides the client's timeout for each attempt of this request. */
  timeoutMs?: number;
}

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

/** One event of a watch stream (`ERROR` events are turned into errors, not delivered). */
export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK";
  object: T;
}

/** TLS options given to the agent and to each request. */
interface TlsSettings {
  minVersion?: "TLSv1.2";
  rejectUnauthorized?: boolean;
  ca?: string;
  cert?: string;
  key?: string;
  servername?: string;
}

interface Prepared {
  method: string;
  /** The method as messages show it (`WATCH` for watches). */
  label: string;
  /** The path without the query, for messages. */
  path: string;
  url: URL;
  body?: Uint8Array;
  contentType?: string;
  signal?: AbortSignal;
  timeoutMs: number;
  stream: boolean;
}

type Outcome =
  | { kind: "complete"; status: number; headers: IncomingHttpHeaders; text: string }
  | { kind: "stream"; request: ClientRequest; response: IncomingMessage };

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The operation was aborted", "AbortError");
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
  readonly #https: boolean;
  readonly #agent: HttpAgent;
  readonly #tls: TlsSettings;
  readonly #timeoutMs: number;
  readonly #maxAttempts: number;
  readonly #initialBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #userAgent: string;
  readonly #logger?: Logger;
  readonly #cancels = new Set<() => void>();
  #closed = false;

  /** Nothing is sent until the first request. */
  constructor(connection: KubeConnection, options: KubeClientOptions = {}) {
    this.connection = connection;
    this.#base = new URL(connection.server);
    this.#https = this.#base.protocol === "https:";
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS));
    this.#initialBackoffMs = options.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS;
    this.#maxBackoffMs = options.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
    this.#userAgent = options.userAgent ?? `sentry/${VERSION}`;
    this.#logger = options.logger;
    this.#tls = this.#https
      ? {
        minVersion: "TLSv1.2" as const,
        rejectUnauthorized: !connection.insecureSkipTlsVerify,
        ...(connection.caPem ? { ca: connection.caPem } : {}),
        ...(connection.clientCertPem
          ? { cert: connection.clientCertPem, key: connection.clientKeyPem }
          : {}),
        ...(connection.tlsServerName ? { servername: connection.tlsServerName } : {}),
      }
      : {};
    this.#agent = this.#https
      ? new HttpsAgent({ keepAlive: true, ...this.#tls })
      : new HttpAgent({ keepAlive: true });
  }

  /** The namespace of the connection settings (context or pod namespace), if any. */
  get namespace(): string | undefined {
    return this.connection.namespace;
  }

  /** Cancels requests, watches and retry waits in flight and closes idle connections. */
  close(): void {
    this.#closed = true;
    for (const cancel of [...this.#cancels]) cancel();
    this.#agent.destroy();
  }

  /**
   * Sends `method path` (path starting with `/`, e.g. `/api/v1/namespaces/x/secrets/y`) and
   * returns the decoded JSON answer (undefined when the body is empty). Retries 429, 5xx and
   * connection failures; throws {@link KubeApiError} or {@link KubeRequestError}.
   */
  async request<T>(method: string, path: string, options: KubeRequestOptions = {}): Promise<T> {
    const prepared = this.#prepare(method, path, options, false);
    const outcome = await this.#perform(prepared);
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
  async watch<T>(
    path: string,
    options: KubeWatchOptions,
    onEvent: (event: WatchEvent<T>) => void | Promise<void>,
  ): Promise<void> {
    const { signal } = options;
    const prepared = this.#prepare("GET", path, {
      signal,
      query: {
        watch: "true",
        resourceVersion: options.resourceVersion,
        fieldSelector: options.fieldSelector,
        labelSelector: options.labelSelector,
        timeoutSeconds: options.timeoutSeconds,
        allowWatchBookmarks: options.allowWatchBookmarks,
      },
    }, true);
    const outcome = await this.#perform(prepared);
    if (outcome.kind !== "stream") throw new Error("unreachable: expected a stream");
    const { request, response } = outcome;

    let stopped: unknown;
    let finished = false;
    const stop = (reason: unknown) => {
      if (stopped !== undefined || finished) return;
      stopped = reason;
      response.destroy();
      request.destroy();
    };
    const onAbort = () => stop(abortReason(signal as AbortSignal));
    const cancel = () => stop(this.#requestError(prepared, "ECLOSED", "client closed"));
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#cancels.add(cancel);
    let guard: ReturnType<typeof setTimeout> | undefined;
    if (options.timeoutSeconds !== undefined) {
      const limitMs = options.timeoutSeconds * 1000 + this.#timeoutMs;
      guard = setTimeout(() =>
        stop(this.#requestError(
          prepared,
          "ETIMEDOUT",
          `watch stream still open ${formatDuration(limitMs)} after it started, although ` +
            `timeoutSeconds=${options.timeoutSeconds} was asked for`,
        )), limitMs);
    }
    if (signal?.aborted) onAbort();

    const handle = async (line: string) => {
      const trimmed = line.trim();
      if (trimmed === "") return;
      const event = parseJson(trimmed);
      if (!isRecord(event) || typeof event.type !== "string") {
        throw this.#requestError(
          prepared,
          "EBADRESPONSE",
          `malformed watch event: ${preview(trimmed, 120)}`,
        );
      }
      if (event.type === "ERROR") {
        const status = isRecord(event.object) ? event.object : {};
        const code = typeof status.code === "number" ? status.code : 500;
        throw statusError(prepared.label, prepared.path, code, status, trimmed, 1);
      }
      await onEvent(event as unknown as WatchEvent<T>);
    };

    const iterator = response[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>;
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      while (true) {
        let next: IteratorResult<Uint8Array>;
        try {
          next = await iterator.next();
        } catch (error) {
          if (stopped !== undefined) throw stopped;
          const code = (error as { code?: string }).code ?? "ECONNRESET";
          throw this.#requestError(
            prepared,
            code,
            `watch stream broke: ${(error as Error).message}`,
          );
        }
        if (stopped !== undefined) throw stopped;
        if (next.done) break;
        buffer += decoder.decode(next.value, { stream: true });
        let newline: number;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          await handle(line);
          if (stopped !== undefined) throw stopped;
        }
      }
      buffer += decoder.decode();
      await handle(buffer);
      if (stopped !== undefined) throw stopped;
      finished = true;
    } catch (error) {
      finished = true;
      response.destroy();
      request.destroy();
      throw error;
    } finally {
      clearTimeout(guard);
      signal?.removeEventListener("abort", onAbort);
      this.#cancels.delete(cancel);
    }
  }

  #prepare(
    method: string,
    path: string,
    options: KubeRequestOptions,
    stream: boolean,
  ): Prepared {
    if (!path.startsWith("/")) {
      throw new TypeError(`kubernetes API path must start with "/": ${path}`);
    }
    const url = new URL(this.#base.href);
    url.pathname = this.#base.pathname.replace(/\/+$/, "") + path.replace(/\?.*$/, "");
    const search = new URLSearchParams(path.includes("?") ? path.slice(path.indexOf("?")) : "");
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) search.set(key, String(value));
    }
    url.search = search.toString();
    let body: Uint8Array | undefined;
    let contentType = options.contentType;
    if (options.body !== undefined) {
      if (options.body instanceof Uint8Array) body = options.body;
      else if (typeof options.body === "string") body = new TextEncoder().encode(options.body);
      else body = new TextEncoder().encode(JSON.stringify(options.body));
      contentType ??= "application/json";
    }
    return {
      method: method.toUpperCase(),
      label: stream ? "WATCH" : method.toUpperCase(),
      path: path.replace(/\?.*$/, ""),
      url,
      body,
      contentType,
      signal: options.signal,
      timeoutMs: options.timeoutMs ?? this.#timeoutMs,
      stream,
    };
  }

  #requestError(prepared: Prepared, code: string, detail: string): KubeRequestError {
    return new KubeRequestError({
      method: prepared.label,
      path: prepared.path,
      server: this.connection.server,
      code,
      detail,
    });
  }

  /** The attempts of one request: retries 429, 5xx and retryable connection failures. */
  async #perform(prepared: Prepared): Promise<Outcome> {
    const backoff = new Backoff({
      initialMs: this.#initialBackoffMs,
      maxMs: this.#maxBackoffMs,
      jitter: true,
    });
    for (let attempt = 1;; attempt++) {
      let outcome: Outcome;
      try {
        outcome = await this.#attempt(prepared);
      } catch (error) {
        if (prepared.signal?.aborted) throw abortReason(prepared.signal);
        if (!(error instanceof KubeRequestError)) throw error;
        const final = attempt > 1 ? error.withAttempts(attempt) : error;
        if (!RETRYABLE_CODES.has(error.code) || attempt >= this.#maxAttempts || this.#closed) {
          throw final;
        }
        await this.#pause(prepared, attempt, backoff.next(), error);
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
      await this.#pause(prepared, attempt, delayMs, error);
    }
  }

  /**
   * Waits `delayMs` before attempt `attempt + 1` (the server's `Retry-After`, capped, else
   * the request's backoff), unless the request is aborted or the client closed.
   */
  async #pause(
    prepared: Prepared,
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
    await new Promise<void>((resolve, reject) => {
      const signal = prepared.signal;
      const done = (failure?: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.#cancels.delete(cancel);
        if (failure !== undefined) reject(failure);
        else resolve();
      };
      const timer = setTimeout(() => done(), delayMs);
      const onAbort = () => done(abortReason(signal as AbortSignal));
      const cancel = () => done(this.#requestError(prepared, "ECLOSED", "client closed"));
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#cancels.add(cancel);
      if (signal?.aborted) onAbort();
    });
  }

  /** The bearer token: fixed, or read from its file now. */
  async #token(prepared: Prepared): Promise<string | undefined> {
    const { token, tokenFile } = this.connection;
    if (token) return token;
    if (!tokenFile) return undefined;
    let text: string;
    try {
      text = await readFile(tokenFile, "utf8");
    } catch (error) {
      const code = (error as { code?: string }).code;
      const reason = code === "ENOENT" ? "file not found" : (error as Error).message;
      throw this.#requestError(
        prepared,
        "ETOKEN",
        `cannot read token file ${tokenFile}: ${reason}`,
      );
    }
    const value = text.trim();
    if (value === "") {
      throw this.#requestError(prepared, "ETOKEN", `token file ${tokenFile} is empty`);
    }
    return value;
  }

  /** One attempt, bounded by the timeout; a stream resolves at the response headers. */
  async #attempt(prepared: Prepared): Promise<Outcome> {
    if (this.#closed) throw this.#requestError(prepared, "ECLOSED", "client closed");
    if (prepared.signal?.aborted) throw abortReason(prepared.signal);
    const token = await this.#token(prepared);
    const headers: Record<string, string | number> = {
      accept: "application/json",
      "user-agent": this.#userAgent,
    };
    if (token) headers.authorization = `Bearer ${token}`;
    if (prepared.body !== undefined) {
      headers["content-type"] = prepared.contentType ?? "application/json";
      headers["content-length"] = prepared.body.byteLength;
    }
    const { url } = prepared;
    const send = this.#https ? httpsRequest : httpRequest;
    return await new Promise<Outcome>((resolve, reject) => {
      let settled = false;
      let request: ClientRequest | undefined;
      const cleanup = () => {
        settled = true;
        clearTimeout(timer);
        prepared.signal?.removeEventListener("abort", onAbort);
        this.#cancels.delete(cancel);
      };
      const fail = (error: unknown) => {
        if (settled) return;
        cleanup();
        request?.destroy();
        reject(error);
      };
      const onAbort = () => fail(abortReason(prepared.signal as AbortSignal));
      const cancel = () => fail(this.#requestError(prepared, "ECLOSED", "client closed"));
      const timer = setTimeout(
        () =>
          fail(this.#requestError(
            prepared,
            "ETIMEDOUT",
            `no answer within ${formatDuration(prepared.timeoutMs)}`,
          )),
        prepared.timeoutMs,
      );
      prepared.signal?.addEventListener("abort", onAbort, { once: true });
      this.#cancels.add(cancel);
      try {
        request = send({
          ...this.#tls,
          protocol: url.protocol,
          hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"),
          port: url.port || (this.#https ? 443 : 80),
          path: url.pathname + url.search,
          method: prepared.method,
          headers,
          agent: this.#agent,
        });
      } catch (error) {
        return fail(this.#requestError(prepared, "EREQUEST", (error as Error).message));
      }
      request.on("error", (error: Error & { code?: string }) => {
        const code = error.code ?? "EREQUEST";
        const target = `${url.protocol}//${url.host}`;
        const message = error.message.replace(/\s+/g, " ").trim();
        const detail = RETRYABLE_CODES.has(code) || code === "ENOTFOUND"
          ? `cannot reach ${target}: ${message}`
          : /CERT|SSL|TLS|VERIFY/.test(code)
          ? `TLS connection to ${target} failed: ${message}`
          : message;
        fail(this.#requestError(prepared, code, detail));
      });
      request.on("response", (response: IncomingMessage) => {
        const status = response.statusCode ?? 0;
        if (settled) {
          response.destroy();
          return;
        }
        if (prepared.stream && status >= 200 && status < 300) {
          cleanup();
          resolve({ kind: "stream", request: request as ClientRequest, response });
          return;
        }
        const chunks: Uint8Array[] = [];
        let complete = false;
        response.on("data", (chunk: Uint8Array) => chunks.push(chunk));
        response.on(
          "error",
          (error: Error & { code?: string }) =>
            fail(this.#requestError(prepared, error.code ?? "ECONNRESET", error.message)),
        );
        response.on("end", () => {
          complete = true;
          if (settled) return;
          cleanup();
          resolve({
            kind: "complete",
            status,
            headers: response.headers,
            text: Buffer.concat(chunks).toString("utf8"),
          });
        });
        response.on("close", () => {
          if (!complete) {
            fail(this.#requestError(
              prepared,
              "ECONNRESET",
              "connection closed before the answer was complete",
            ));
          }
        });
      });
      request.end(prepared.body);
    });
  }
}
