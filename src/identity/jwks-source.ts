/**
 * Where the JWKS token validator gets its keys (docs/compatibility.md#token-validators; Dapr's `jwkscache`): a JSON Web
 * Key Set loaded from the validator's `source` option, which is one of
 *
 * - an `http://` or `https://` URL, fetched with the shared HTTP client (net/http.ts;
 *   trusting `caCertificate` in addition to the system roots, each request bounded by
 *   `requestTimeout`, redirects followed but never from https to http), re-fetched on
 *   demand when a token names an unknown key and periodically (every `minRefreshInterval`, or
 *   the response's `Cache-Control: max-age` when longer), never more often than
 *   `minRefreshInterval`;
 * - a file path, read once and then watched (its directory, so that editors' save-by-rename
 *   and Kubernetes' `..data` symlink swaps are seen) so that a rotated set is used without a
 *   restart;
 * - the set itself as JSON, or the same base64-encoded.
 *
 * A set that cannot be loaded at start is an error; a later refresh that fails (network down,
 * broken file) is reported and the last good set stays in force.
 *
 * @module
 */
import { statSync } from "node:fs";
import { rootCertificates } from "node:tls";
import type { JSONWebKeySet } from "jose";
import { type FileWatch, watchFiles } from "../config/file-watcher.ts";
import {
  httpRequest,
  type HttpResponse,
  HttpTransportError,
  REDIRECT_STATUSES,
} from "../net/http.ts";
import { setSafeTimeout } from "../util/timers.ts";
import {
  decodeBase64Text,
  JwksSourceError,
  type JwksSourceOptions,
  loadCaCertificate,
  parseJwks,
} from "./jwks-options.ts";
import { fileErrorReason } from "../util/file-errors.ts";
import { readSmallFile } from "../util/bounded-read.ts";

/** Dapr's default for `requestTimeout`. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Dapr's default for `minRefreshInterval`. */
export const DEFAULT_MIN_REFRESH_INTERVAL_MS = 10 * 60_000;
/** The shortest `minRefreshInterval` honoured; shorter values are raised to this. */
export const MIN_REFRESH_FLOOR_MS = 1000;
/** Debounce for file change events. */
const FILE_DEBOUNCE_MS = 200;
/** Largest JWKS document accepted from a URL or file. */
const MAX_DOCUMENT_BYTES = 1024 * 1024;
/** Redirects followed when fetching a URL (Go's client follows up to 10). */
const MAX_REDIRECTS = 5;
/** What a source reports while it runs (all optional). */
export interface JwksSourceHandlers {
  /** A different key set is now in force (after a refresh or a file change). */
  onUpdate?(keySet: JSONWebKeySet, description: string): void;
  /** A refresh failed; the previous key set stays in force. */
  onError?(error: Error): void;
  /** Something works but is not advisable (an `http://` URL). */
  onWarning?(message: string): void;
}

/** Which kind of `source` a source was built from. */
export type JwksSourceKind = "url" | "file" | "inline";

/** A URL for messages, without credentials. */
function redactUrl(url: URL): string {
  if (url.username === "" && url.password === "") return url.href;
  const copy = new URL(url.href);
  copy.username = "***";
  copy.password = "";
  return copy.href;
}

/** The start of an inline value, for messages. */
function preview(text: string): string {
  return JSON.stringify(text.length > 40 ? text.slice(0, 40) + "…" : text);
}

/** `max-age` of a Cache-Control header, in ms. */
function maxAgeMs(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header.join(",") : header;
  const match = value ? /(?:^|[,\s])max-age\s*=\s*"?(\d+)"?/i.exec(value) : null;
  return match ? Number(match[1]) * 1000 : undefined;
}

interface Loaded {
  keySet: JSONWebKeySet;
  /** For a URL: how long the server says the set may be cached. */
  maxAgeMs?: number;
}

/**
 * A loaded JSON Web Key Set and the means to keep it current. Create with
 * {@link JwksSource.open}; `keySet` is always the last good set; `close()` stops watchers,
 * timers and in-flight requests.
 */
export class JwksSource {
  /** Which kind of source this is. */
  readonly kind: JwksSourceKind;
  /** For messages, e.g. `JWKS URL https://issuer.example/jwks.json` or `JWKS file /x.json`. */
  readonly description: string;
  readonly #handlers: JwksSourceHandlers;
  readonly #minRefreshMs: number;
  readonly #timeoutMs: number;
  readonly #url?: URL;
  readonly #path?: string;
  readonly #ca?: string[];
  #keySet: JSONWebKeySet = { keys: [] };
  #canonical = "";
  #version = 0;
  #lastAttempt = -Infinity;
  #inFlight?: Promise<boolean>;
  #timer?: ReturnType<typeof setTimeout>;
  #watch?: FileWatch;
  #lastReported?: string;
  #closed = false;
  readonly #cancels = new Set<() => void>();
  #inline?: string;

  private constructor(
    kind: JwksSourceKind,
    description: string,
    options: JwksSourceOptions,
    handlers: JwksSourceHandlers,
    extra: { url?: URL; path?: string; inline?: string },
  ) {
    this.kind = kind;
    this.description = description;
    this.#handlers = handlers;
    this.#minRefreshMs = Math.max(
      MIN_REFRESH_FLOOR_MS,
      options.minRefreshIntervalMs ?? DEFAULT_MIN_REFRESH_INTERVAL_MS,
    );
    this.#timeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#url = extra.url;
    this.#path = extra.path;
    this.#inline = extra.inline;
    if (extra.url?.protocol === "https:" && options.caCertificate) {
      this.#ca = [...rootCertificates, loadCaCertificate(options.caCertificate)];
    }
  }

  /**
   * Works out what `options.source` is, loads the initial key set and starts keeping it
   * current. Throws JwksSourceError, naming the source, when no usable set can be loaded.
   */
  static async open(
    options: JwksSourceOptions,
    handlers: JwksSourceHandlers = {},
  ): Promise<JwksSource> {
    const text = options.source.trim();
    let source: JwksSource;
    if (/^https?:\/\//i.test(text)) {
      let url: URL;
      try {
        url = new URL(text);
      } catch {
        throw new JwksSourceError(`JWKS URL ${preview(text)} is not a valid URL`);
      }
      source = new JwksSource("url", `JWKS URL ${redactUrl(url)}`, options, handlers, { url });
      if (url.protocol === "http:") {
        handlers.onWarning?.(
          `${source.description}: loading a JWKS over plain HTTP (without TLS) is not ` +
            `recommended in production`,
        );
      }
    } else if (text.startsWith("{")) {
      source = new JwksSource("inline", "inline JWKS", options, handlers, { inline: text });
    } else {
      let isFile = false;
      try {
        const stat = statSync(text);
        if (stat.isDirectory()) {
          throw new JwksSourceError(`JWKS file ${text}: is a directory, not a file`);
        }
        isFile = true;
      } catch (error) {
        if (error instanceof JwksSourceError) throw error;
      }
      if (isFile) {
        source = new JwksSource("file", `JWKS file ${text}`, options, handlers, { path: text });
      } else {
        const decoded = decodeBase64Text(text);
        if (decoded === undefined || !decoded.trim().startsWith("{")) {
          throw new JwksSourceError(
            `JWKS source ${preview(text)}: no such file, and not an http(s) URL or a JWKS ` +
              `as JSON (optionally base64-encoded)`,
          );
        }
        source = new JwksSource("inline", "inline JWKS (base64)", options, handlers, {
          inline: decoded,
        });
      }
    }
    await source.#start();
    return source;
  }

  /** The key set in force (the last one that loaded successfully). */
  get keySet(): JSONWebKeySet {
    return this.#keySet;
  }

  /** Increases every time a different key set comes into force. */
  get version(): number {
    return this.#version;
  }

  /** The effective minimum interval between two fetches, in ms. */
  get minRefreshIntervalMs(): number {
    return this.#minRefreshMs;
  }

  async #start(): Promise<void> {
    if (this.#inline !== undefined) {
      this.#apply(parseJwks(this.#inline, this.description));
      this.#inline = undefined;
      return;
    }
    this.#lastAttempt = performance.now();
    const loaded = await this.#load();
    this.#apply(loaded.keySet);
    if (this.#path !== undefined) {
      this.#watch = watchFiles([this.#path], () => void this.#reloadFile(), {
        debounceMs: FILE_DEBOUNCE_MS,
      });
    } else {
      this.#schedule(Math.max(this.#minRefreshMs, loaded.maxAgeMs ?? 0));
    }
  }

  /**
   * Asks for a fresh copy (used when a token names a key the set does not hold). Fetches a URL
   * or re-reads a file unless the last attempt was less than `minRefreshInterval` ago;
   * concurrent callers share one attempt. Resolves true when a different set is now in force;
   * never rejects (failures are reported through `onError`).
   */
  refresh(): Promise<boolean> {
    if (this.#closed || this.kind === "inline") return Promise.resolve(false);
    if (this.#inFlight) return this.#inFlight;
    if (performance.now() - this.#lastAttempt < this.#minRefreshMs) return Promise.resolve(false);
    return this.#refreshNow();
  }

  /** Stops watching, cancels timers and aborts any request in flight. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#watch?.close();
    this.#watch = undefined;
    for (const cancel of [...this.#cancels]) cancel();
  }

  #refreshNow(): Promise<boolean> {
    this.#lastAttempt = performance.now();
    const attempt = (async () => {
      let delay = this.#minRefreshMs;
      try {
        const loaded = await this.#load();
        if (this.#closed) return false;
        delay = Math.max(this.#minRefreshMs, loaded.maxAgeMs ?? 0);
        this.#lastReported = undefined;
        return this.#apply(loaded.keySet);
      } catch (error) {
        if (!this.#closed) this.#report(error as Error);
        return false;
      } finally {
        this.#inFlight = undefined;
        if (this.#url && !this.#closed) this.#schedule(delay);
      }
    })();
    this.#inFlight = attempt;
    return attempt;
  }

  #schedule(delayMs: number): void {
    clearTimeout(this.#timer);
    if (this.#closed) return;
    // The delay may come from the server's Cache-Control max-age: safe for a timer.
    this.#timer = setSafeTimeout(() => {
      this.#timer = undefined;
      if (this.#inFlight === undefined) void this.#refreshNow();
    }, delayMs);
  }

  async #reloadFile(): Promise<void> {
    if (this.#closed || this.#inFlight) return;
    try {
      const loaded = await this.#load();
      if (this.#closed) return;
      this.#lastReported = undefined;
      this.#apply(loaded.keySet);
    } catch (error) {
      if (!this.#closed) this.#report(error as Error);
    }
  }

  /** Reports a failure once until it changes (the file poll would repeat it). */
  #report(error: Error): void {
    if (error.message === this.#lastReported) return;
    this.#lastReported = error.message;
    this.#handlers.onError?.(error);
  }

  /** Puts `keySet` in force; true when it differs from the current one. */
  #apply(keySet: JSONWebKeySet): boolean {
    const canonical = JSON.stringify(keySet);
    if (canonical === this.#canonical) return false;
    const first = this.#version === 0;
    this.#keySet = keySet;
    this.#canonical = canonical;
    this.#version++;
    if (!first) this.#handlers.onUpdate?.(keySet, this.description);
    return true;
  }

  #load(): Promise<Loaded> {
    return this.#url ? this.#fetch(this.#url) : this.#readFile(this.#path as string);
  }

  async #readFile(path: string): Promise<Loaded> {
    let text: string;
    try {
      text = await readSmallFile(path, { maxBytes: MAX_DOCUMENT_BYTES });
    } catch (error) {
      const reason = fileErrorReason(error);
      throw new JwksSourceError(`${this.description}: ${reason}`);
    }
    return { keySet: parseJwks(text, this.description) };
  }

  async #fetch(url: URL): Promise<Loaded> {
    const fail = (reason: string, cause?: HttpTransportError) =>
      new JwksSourceError(`${this.description}: ${reason}`, cause && { cause });
    if (this.#closed) throw fail("source closed");
    const controller = new AbortController();
    const cancel = () => controller.abort(fail("source closed"));
    this.#cancels.add(cancel);
    let response: HttpResponse;
    try {
      response = await httpRequest(url, {
        agent: false,
        headers: { accept: "application/json, application/jwk-set+json", connection: "close" },
        tls: { minVersion: "TLSv1.2", ...(this.#ca ? { ca: this.#ca } : {}) },
        timeoutMs: this.#timeoutMs,
        signal: controller.signal,
        maxBodyBytes: MAX_DOCUMENT_BYTES,
        maxRedirects: MAX_REDIRECTS,
      });
    } catch (error) {
      if (error instanceof HttpTransportError) throw fail(error.message, error);
      throw error;
    } finally {
      this.#cancels.delete(cancel);
    }
    const { status, statusMessage, headers } = response;
    if (REDIRECT_STATUSES.includes(status) && headers.location) {
      throw fail(`more than ${MAX_REDIRECTS} redirects`);
    }
    if (status !== 200) throw fail(`HTTP ${status}${statusMessage ? " " + statusMessage : ""}`);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(response.body);
    } catch {
      throw fail("response is not UTF-8 text");
    }
    return {
      keySet: parseJwks(text, this.description),
      maxAgeMs: maxAgeMs(headers["cache-control"]),
    };
  }
}
