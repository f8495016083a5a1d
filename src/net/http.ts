/**
 * The one HTTP(S) client under sentry's Kubernetes, Vault and JWKS clients, over `node:http` /
 * `node:https`. {@link httpRequest} sends a request and reads the whole answer within one total
 * deadline (connection, headers and body, across redirects), with an optional bound on the
 * body's size and optional redirect following; {@link openStream} sends a request and hands the
 * answer over at its headers, the body as a stream of chunks (a Kubernetes watch), the deadline
 * bounding only the wait for the headers. Both take TLS settings (CA, client certificate,
 * verification, SNI name) and an optional agent, and stop at once when their `signal` aborts,
 * rejecting with the signal's reason.
 *
 * An answer, whatever its HTTP status, is a result. Everything else that goes wrong on the way
 * (a refused or reset connection, a TLS failure, the deadline, a body too large, a refused
 * redirect) is an {@link HttpTransportError} with a `code` and the underlying error as `cause`,
 * which each client turns into its own error type.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import {
  type Agent,
  type ClientRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request as sendHttp,
} from "node:http";
import { request as sendHttps } from "node:https";
import { formatDuration } from "../util/duration.ts";
import { setSafeTimeout } from "../util/timers.ts";

/** Statuses {@link httpRequest} follows by default when `maxRedirects` allows. */
export const REDIRECT_STATUSES: readonly number[] = [301, 302, 303, 307, 308];

/**
 * A request that got no (complete) answer. `code` is Node's error code (`ECONNREFUSED`,
 * `ECONNRESET`, `ENOTFOUND`, a TLS code such as `DEPTH_ZERO_SELF_SIGNED_CERT`, ...) or one of
 * this module's: `EDEADLINE` (the deadline passed), `ETOOLARGE` (the body is larger than
 * allowed), `EREDIRECT` (a redirect that cannot be followed), `EREQUEST` (the request could not
 * be made). `cause` is the underlying error, when there is one.
 */
export class HttpTransportError extends Error {
  override name = "HttpTransportError";
  readonly code: string;

  /** An error with `code` and `message`. */
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** TLS settings of an `https:` request (not used for `http:`). */
export interface HttpTlsOptions {
  /** Trusted CA certificates (PEM), instead of the system roots. */
  ca?: string | string[];
  /** Client certificate (PEM), with its `key`. */
  cert?: string;
  key?: string;
  /** false: any server certificate is accepted (default true). */
  rejectUnauthorized?: boolean;
  /** Name for SNI and the certificate check, instead of the URL's host. */
  servername?: string;
  /** Lowest TLS version accepted (default: Node's). */
  minVersion?: "TLSv1.2" | "TLSv1.3";
}

/** Options of {@link openStream} (and of {@link httpRequest}). */
export interface HttpStreamOptions {
  /** Default `GET`. */
  method?: string;
  headers?: Record<string, string>;
  /** Sent as it is, with its `content-length`. */
  body?: Uint8Array | string;
  tls?: HttpTlsOptions;
  /** The connection pool (keep-alive agents); false: a connection of its own; default Node's. */
  agent?: Agent | false;
  /** Deadline in ms: for the headers ({@link openStream}), for everything ({@link httpRequest}). */
  timeoutMs?: number;
  /** Aborts the request and its body; the promise (or iteration) rejects with the reason. */
  signal?: AbortSignal;
}

/** Options of {@link httpRequest}. */
export interface HttpRequestOptions extends HttpStreamOptions {
  /** A larger body fails with `ETOOLARGE` (default: no limit). */
  maxBodyBytes?: number;
  /** Redirects followed (default 0); the answer after the last one allowed is returned as is. */
  maxRedirects?: number;
  /** Statuses that are redirects to follow (default {@link REDIRECT_STATUSES}). */
  redirectStatuses?: readonly number[];
  /** Follow a redirect from `https:` to `http:` (default: refused with `EREDIRECT`). */
  allowDowngrade?: boolean;
}

/** An answer read whole. */
export interface HttpResponse {
  status: number;
  statusMessage: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Where the answer came from (after redirects). */
  url: URL;
}

/** Options of {@link HttpStream.read}. */
export interface HttpReadOptions {
  /** A larger body fails with `ETOOLARGE`. */
  maxBytes?: number;
  /** Fails with `EDEADLINE` when the body has not ended within this many ms. */
  timeoutMs?: number;
}

/**
 * An answer whose body is still coming. Iterate `body` to its end, `read()` it, or `close()`
 * the stream: until then the connection stays open.
 */
export interface HttpStream {
  status: number;
  statusMessage: string;
  headers: IncomingHttpHeaders;
  url: URL;
  /**
   * The body's chunks as they arrive (iterate once). Ends when the body does, or quietly after
   * `close()`; throws an {@link HttpTransportError} when the connection breaks, or the
   * signal's reason when it aborts.
   */
  body: AsyncIterable<Uint8Array>;
  /** The rest of the body as one buffer. */
  read(options?: HttpReadOptions): Promise<Buffer>;
  /** Drops the connection; what is not read yet is lost. */
  close(): void;
}

/** The error of a deadline of `ms`. */
function deadlineError(ms: number): HttpTransportError {
  return new HttpTransportError("EDEADLINE", `request timed out after ${formatDuration(ms)}`);
}

/** `error` (from Node) as an {@link HttpTransportError}, `fallback` when it has no code. */
function transportError(error: unknown, fallback: string): HttpTransportError {
  if (error instanceof HttpTransportError) return error;
  const code = (error as { code?: unknown } | undefined)?.code;
  if (code === "ERR_STREAM_PREMATURE_CLOSE") {
    return new HttpTransportError(
      "ECONNRESET",
      "connection closed before the answer was complete",
      { cause: error },
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  return new HttpTransportError(
    typeof code === "string" ? code : fallback,
    message.replace(/\s+/g, " ").trim(),
    { cause: error },
  );
}

/**
 * A signal that aborts when `parent` does (with its reason) or when `timeoutMs` has passed
 * (with an `EDEADLINE` error). `dispose()` stops the clock and lets go of `parent`.
 */
class Deadline {
  readonly #controller = new AbortController();
  readonly #parent?: AbortSignal;
  readonly #timer?: ReturnType<typeof setTimeout>;

  constructor(parent: AbortSignal | undefined, timeoutMs: number | undefined) {
    this.#parent = parent;
    parent?.addEventListener("abort", this.#follow, { once: true });
    if (parent?.aborted) this.#follow();
    if (timeoutMs !== undefined && Number.isFinite(timeoutMs) && !this.signal.aborted) {
      this.#timer = setSafeTimeout(
        () => this.#controller.abort(deadlineError(timeoutMs)),
        timeoutMs,
        true,
      );
    }
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  #follow = () => this.#controller.abort(this.#parent?.reason);

  dispose(): void {
    clearTimeout(this.#timer);
    this.#parent?.removeEventListener("abort", this.#follow);
  }
}

/** A started request and its answer's headers. */
interface Exchange {
  request: ClientRequest;
  response: IncomingMessage;
}

/** Sends one request and waits for the answer's headers, or for `signal` to abort. */
function exchange(url: URL, options: HttpStreamOptions, signal: AbortSignal): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const https = url.protocol === "https:";
    if (!https && url.protocol !== "http:") {
      return reject(new HttpTransportError("EREQUEST", `unsupported URL scheme ${url.protocol}`));
    }
    let request: ClientRequest | undefined;
    let settled = false;
    const settle = () => {
      settled = true;
      signal.removeEventListener("abort", onAbort);
    };
    const fail = (error: unknown) => {
      if (settled) return;
      settle();
      request?.destroy();
      reject(error);
    };
    const onAbort = () => fail(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    const body = typeof options.body === "string" ? Buffer.from(options.body) : options.body;
    const headers = { ...options.headers };
    if (body !== undefined) headers["content-length"] = String(body.byteLength);
    try {
      request = (https ? sendHttps : sendHttp)(url, {
        ...(https ? options.tls : {}),
        method: options.method ?? "GET",
        headers,
        agent: options.agent,
      });
    } catch (error) {
      return fail(transportError(error, "EREQUEST"));
    }
    // Stays on after the headers: a later failure also reaches the body's reader.
    request.on("error", (error) => fail(transportError(error, "EREQUEST")));
    request.on("response", (response: IncomingMessage) => {
      if (settled) {
        response.destroy();
        return;
      }
      settle();
      resolve({ request: request as ClientRequest, response });
    });
    request.end(body);
  });
}

/** The body of an answer, read as it arrives; stopped by `signal`, `close()` or a failure. */
class ResponseStream implements HttpStream {
  readonly status: number;
  readonly statusMessage: string;
  readonly headers: IncomingHttpHeaders;
  readonly url: URL;
  readonly body: AsyncIterable<Uint8Array>;
  readonly #exchange: Exchange;
  readonly #signal?: AbortSignal;
  #stopped = false;
  /** Why the body was stopped; undefined after `close()`. */
  #failure?: unknown;

  constructor(url: URL, exchange: Exchange, signal: AbortSignal | undefined) {
    const { response } = exchange;
    this.status = response.statusCode ?? 0;
    this.statusMessage = response.statusMessage ?? "";
    this.headers = response.headers;
    this.url = url;
    this.#exchange = exchange;
    this.#signal = signal;
    this.body = this.#chunks();
    signal?.addEventListener("abort", this.#onAbort, { once: true });
    if (signal?.aborted) this.#onAbort();
  }

  #onAbort = () => this.#stop(this.#signal?.reason);

  #stop(failure: unknown): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#failure = failure;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#exchange.response.destroy();
    this.#exchange.request.destroy();
  }

  close(): void {
    this.#stop(undefined);
  }

  async *#chunks(): AsyncGenerator<Uint8Array> {
    const { response } = this.#exchange;
    try {
      for await (const chunk of response as AsyncIterable<Uint8Array>) {
        if (this.#stopped) break;
        yield chunk;
      }
    } catch (error) {
      if (!this.#stopped) throw transportError(error, "ECONNRESET");
    } finally {
      this.#signal?.removeEventListener("abort", this.#onAbort);
    }
    if (this.#stopped) {
      if (this.#failure !== undefined) throw this.#failure;
      return;
    }
    if (!response.complete) {
      throw new HttpTransportError(
        "ECONNRESET",
        "connection closed before the answer was complete",
      );
    }
  }

  async read(options: HttpReadOptions = {}): Promise<Buffer> {
    const { maxBytes = Infinity, timeoutMs } = options;
    const timer = timeoutMs === undefined
      ? undefined
      : setSafeTimeout(() => this.#stop(deadlineError(timeoutMs)), timeoutMs, true);
    try {
      const chunks: Uint8Array[] = [];
      let size = 0;
      for await (const chunk of this.body) {
        size += chunk.byteLength;
        if (size > maxBytes) {
          const error = new HttpTransportError(
            "ETOOLARGE",
            `response larger than ${maxBytes} bytes`,
          );
          this.#stop(error);
          throw error;
        }
        chunks.push(chunk);
      }
      return Buffer.concat(chunks);
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Sends a request and resolves at the answer's headers (any status), its body still to come.
 * `timeoutMs` bounds the wait for the headers only; `signal` aborts the request and, later,
 * the body. No redirect is followed. Rejects with an {@link HttpTransportError}, or with the
 * signal's reason.
 *
 * @example
 * ```ts
 * const stream = await openStream("https://kube:6443/api/v1/pods?watch=true", { timeoutMs: 10_000 });
 * for await (const chunk of stream.body) handle(chunk);
 * ```
 */
export async function openStream(
  url: URL | string,
  options: HttpStreamOptions = {},
): Promise<HttpStream> {
  const target = new URL(url);
  const deadline = new Deadline(options.signal, options.timeoutMs);
  try {
    const started = await exchange(target, options, deadline.signal);
    return new ResponseStream(target, started, options.signal);
  } finally {
    deadline.dispose();
  }
}

/**
 * Where an answer redirects to, or undefined when it is not a redirect to follow. Throws
 * `EREDIRECT` for a redirect that cannot be followed.
 */
function redirectTarget(
  from: URL,
  stream: HttpStream,
  options: HttpRequestOptions,
): URL | undefined {
  const { status } = stream;
  const location = stream.headers.location;
  if (!location || !(options.redirectStatuses ?? REDIRECT_STATUSES).includes(status)) {
    return undefined;
  }
  let next: URL;
  try {
    next = new URL(location, from);
  } catch (error) {
    throw new HttpTransportError("EREDIRECT", `HTTP ${status} redirect to an invalid URL`, {
      cause: error,
    });
  }
  if (next.protocol !== "https:" && next.protocol !== "http:") {
    throw new HttpTransportError(
      "EREDIRECT",
      `HTTP ${status} redirect to unsupported URL scheme ${next.protocol}`,
    );
  }
  if (from.protocol === "https:" && next.protocol === "http:" && !options.allowDowngrade) {
    throw new HttpTransportError(
      "EREDIRECT",
      `HTTP ${status} redirect from https to plain http refused`,
    );
  }
  return next;
}

/**
 * Sends a request and reads the whole answer (any status), all within `timeoutMs`. Follows up
 * to `maxRedirects` redirects: 307 and 308 repeat the method and body, 301, 302 and 303 turn
 * anything but GET and HEAD into a GET without a body; headers are sent again as they are.
 * Rejects with an {@link HttpTransportError}, or with the signal's reason.
 *
 * @example
 * ```ts
 * const answer = await httpRequest("https://issuer.example/jwks.json", {
 *   timeoutMs: 30_000,
 *   maxBodyBytes: 1 << 20,
 *   maxRedirects: 5,
 * });
 * answer.status; // 200
 * answer.body.toString("utf8");
 * ```
 */
export async function httpRequest(
  url: URL | string,
  options: HttpRequestOptions = {},
): Promise<HttpResponse> {
  const deadline = new Deadline(options.signal, options.timeoutMs);
  let target = new URL(url);
  let hop: HttpStreamOptions = options;
  try {
    for (let redirects = 0;; redirects++) {
      const stream = new ResponseStream(
        target,
        await exchange(target, hop, deadline.signal),
        deadline.signal,
      );
      let next: URL | undefined;
      try {
        if (redirects < (options.maxRedirects ?? 0)) next = redirectTarget(target, stream, options);
      } catch (error) {
        stream.close();
        throw error;
      }
      if (next === undefined) {
        const body = await stream.read({ maxBytes: options.maxBodyBytes });
        const { status, statusMessage, headers } = stream;
        return { status, statusMessage, headers, body, url: target };
      }
      stream.close();
      target = next;
      const method = (hop.method ?? "GET").toUpperCase();
      if ([301, 302, 303].includes(stream.status) && method !== "GET" && method !== "HEAD") {
        const { "content-type": _dropped, ...headers } = hop.headers ?? {};
        hop = { ...hop, method: "GET", body: undefined, headers };
      }
    }
  } finally {
    deadline.dispose();
  }
}
