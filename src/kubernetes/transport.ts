/**
 * One attempt of a request to a Kubernetes API server, over the shared HTTP client
 * (net/http.ts): the request's URL and body ({@link prepareRequest}), TLS (the cluster CA or
 * `insecure-skip-tls-verify`, a client certificate) on keep-alive connections, the bearer
 * token (a token file is re-read for every attempt, as the kubelet rotates service-account
 * tokens), and connection failures as {@link KubeRequestError}s naming the server. Retrying is
 * the client's business (client.ts).
 *
 * @module
 */
import { readSmallFile } from "../util/bounded-read.ts";
import { Agent as HttpAgent, type IncomingHttpHeaders } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import {
  httpRequest,
  type HttpStream,
  type HttpStreamOptions,
  type HttpTlsOptions,
  HttpTransportError,
  openStream,
} from "../net/http.ts";
import { formatDuration } from "../util/duration.ts";
import type { KubeConnection } from "./config.ts";
import { KubeRequestError } from "./errors.ts";
import { fileErrorReason } from "../util/file-errors.ts";

/** Connection failures worth another attempt (TLS and DNS failures are not). */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set([
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

/** Options of a request (`KubeClient.request`). */
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

/** A request ready to be sent, as {@link prepareRequest} makes it. */
export interface PreparedRequest {
  method: string;
  /** The method as messages show it (`WATCH` for watches). */
  label: string;
  /** The path without the query, for messages. */
  path: string;
  url: URL;
  body?: Uint8Array;
  contentType?: string;
  signal?: AbortSignal;
  /** Bound on each attempt. */
  timeoutMs: number;
  /** A watch: the answer is handed over at its headers. */
  stream: boolean;
}

/** What one attempt got: an answer read whole, or the stream of a watch that started (2xx). */
export type Outcome =
  | { kind: "complete"; status: number; headers: IncomingHttpHeaders; text: string }
  | { kind: "stream"; stream: HttpStream };

/**
 * `method path` (path starting with `/`, possibly with a query, to which `options.query` is
 * added) against the server at `base`, with the body encoded (JSON unless a string or bytes).
 */
export function prepareRequest(
  base: URL,
  method: string,
  path: string,
  options: KubeRequestOptions & { timeoutMs: number },
  stream: boolean,
): PreparedRequest {
  if (!path.startsWith("/")) {
    throw new TypeError(`kubernetes API path must start with "/": ${path}`);
  }
  const url = new URL(base.href);
  url.pathname = base.pathname.replace(/\/+$/, "") + path.replace(/\?.*$/, "");
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
    timeoutMs: options.timeoutMs,
    stream,
  };
}

/** Sends attempts to one API server on keep-alive connections; {@link close} drops them. */
export class KubeTransport {
  readonly #connection: KubeConnection;
  readonly #userAgent: string;
  readonly #tls: HttpTlsOptions;
  readonly #agent: HttpAgent;

  /** Nothing is sent until the first attempt. */
  constructor(connection: KubeConnection, userAgent: string) {
    this.#connection = connection;
    this.#userAgent = userAgent;
    const https = new URL(connection.server).protocol === "https:";
    this.#tls = https
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
    this.#agent = https
      ? new HttpsAgent({ keepAlive: true, ...this.#tls })
      : new HttpAgent({ keepAlive: true });
  }

  /** Closes the connections (in flight ones included). */
  close(): void {
    this.#agent.destroy();
  }

  /** A {@link KubeRequestError} of `prepared`, naming the server. */
  requestError(
    prepared: PreparedRequest,
    code: string,
    detail: string,
    cause?: unknown,
  ): KubeRequestError {
    return new KubeRequestError({
      method: prepared.label,
      path: prepared.path,
      server: this.#connection.server,
      code,
      detail,
      cause,
    });
  }

  /**
   * One attempt within the request's timeout: the whole answer, or for a watch the answer's
   * headers (a failure answer to a watch is read whole within what is left of the timeout).
   * Rejects with a {@link KubeRequestError}, or with the signal's reason.
   */
  async send(prepared: PreparedRequest, signal: AbortSignal): Promise<Outcome> {
    const token = await this.#token(prepared);
    const headers: Record<string, string> = {
      accept: "application/json",
      "user-agent": this.#userAgent,
    };
    if (token) headers.authorization = `Bearer ${token}`;
    if (prepared.body !== undefined) {
      headers["content-type"] = prepared.contentType ?? "application/json";
    }
    const options: HttpStreamOptions = {
      method: prepared.method,
      headers,
      body: prepared.body,
      tls: this.#tls,
      agent: this.#agent,
      timeoutMs: prepared.timeoutMs,
      signal,
    };
    const started = performance.now();
    try {
      if (!prepared.stream) {
        const { status, headers, body } = await httpRequest(prepared.url, options);
        return { kind: "complete", status, headers, text: body.toString("utf8") };
      }
      const stream = await openStream(prepared.url, options);
      if (stream.status >= 200 && stream.status < 300) return { kind: "stream", stream };
      const left = prepared.timeoutMs - (performance.now() - started);
      const body = await stream.read({ timeoutMs: Math.max(0, left) });
      return { kind: "complete", status: stream.status, headers: stream.headers, text: `${body}` };
    } catch (error) {
      if (!(error instanceof HttpTransportError)) throw error;
      throw this.#transportError(prepared, error);
    }
  }

  /** The bearer token: fixed, or read from its file now. */
  async #token(prepared: PreparedRequest): Promise<string | undefined> {
    const { token, tokenFile } = this.#connection;
    if (token) return token;
    if (!tokenFile) return undefined;
    let text: string;
    try {
      text = await readSmallFile(tokenFile);
    } catch (error) {
      const reason = fileErrorReason(error);
      throw this.requestError(
        prepared,
        "ETOKEN",
        `cannot read token file ${tokenFile}: ${reason}`,
        error,
      );
    }
    const value = text.trim();
    if (value === "") {
      throw this.requestError(prepared, "ETOKEN", `token file ${tokenFile} is empty`);
    }
    return value;
  }

  /** A failure of the connection, said the way the client's messages say it. */
  #transportError(prepared: PreparedRequest, error: HttpTransportError): KubeRequestError {
    const { code, message } = error;
    if (code === "EDEADLINE") {
      const detail = `no answer within ${formatDuration(prepared.timeoutMs)}`;
      return this.requestError(prepared, "ETIMEDOUT", detail, error);
    }
    const target = `${prepared.url.protocol}//${prepared.url.host}`;
    const detail = RETRYABLE_CODES.has(code) || code === "ENOTFOUND"
      ? `cannot reach ${target}: ${message}`
      : /CERT|SSL|TLS|VERIFY/.test(code)
      ? `TLS connection to ${target} failed: ${message}`
      : message;
    return this.requestError(prepared, code, detail, error);
  }
}
