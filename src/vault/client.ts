/**
 * A small HashiCorp Vault client over the shared HTTP client (net/http.ts): `X-Vault-Token`
 * and `X-Vault-Namespace` headers, TLS with a custom CA or verification off (Vault's
 * VAULT_CACERT / VAULT_SKIP_VERIFY), a deadline per request, and authentication by token
 * (VAULT_TOKEN or a token file re-read on every call, so an agent can rotate it) or by
 * Kubernetes service-account login (`auth/<mount>/login`), logging in again when the token
 * expires or is refused. Renewable tokens are renewed at two thirds of their TTL.
 *
 * @module
 */
import { readSmallFile } from "../util/bounded-read.ts";
import { fileErrorReason } from "../util/file-errors.ts";
import { httpRequest, type HttpResponse, HttpTransportError } from "../net/http.ts";
import type { Logger } from "../observability/logger.ts";
import { setSafeTimeout } from "../util/timers.ts";

/** How sentry authenticates to Vault. */
export type VaultAuth =
  | { kind: "token"; token?: string; tokenFile?: string }
  | { kind: "kubernetes"; role: string; mount: string; jwtFile: string };

/** Connection settings. */
export interface VaultClientOptions {
  /** Base address, e.g. `https://vault.example:8200`. */
  address: string;
  namespace?: string;
  /** PEM of the CA that signed Vault's certificate. */
  caCertPem?: string;
  skipVerify?: boolean;
  auth: VaultAuth;
  /** Per-request timeout: connection, answer and redirects (default 10 s). */
  timeoutMs?: number;
  logger?: Logger;
}

/** A Vault answer that is not a success, with Vault's own `errors` list. */
export class VaultError extends Error {
  override name = "VaultError";
  /** Creates an error for `status` (0 for connection failures) with Vault's messages. */
  constructor(
    readonly status: number,
    readonly errors: readonly string[],
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** Vault cannot answer now (down, sealed, standby, overloaded, refusing us): try later. */
  get transient(): boolean {
    return this.status === 0 || this.status === 403 || this.status === 412 || this.status === 429 ||
      this.status === 473 || this.status >= 500;
  }
}

/** A decoded response. */
export interface VaultResponse {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
}

interface TokenState {
  token: string;
  /** When to renew (ms since epoch), if renewable. */
  renewAt?: number;
  /** The TTL (s) a renewal should grant: the first one granted (login, lookup, renewal). */
  fullTtl?: number;
}

/**
 * Whether a Vault version string is Vault Community Edition, which has no namespaces: `1.x.y`
 * (with an optional `-pre` part) and no `+ent` build (Enterprise and HCP carry `+ent`).
 */
export function vaultWithoutNamespaces(version: string): boolean {
  return /^v?1\.\d+\.\d+(-[\w.]+)?$/.test(version.trim());
}

/** Most redirects followed for one request (standby to active node). */
const MAX_REDIRECTS = 2;
/** Default bound on one request. */
const DEFAULT_TIMEOUT_MS = 10_000;

/** One client per Vault address; {@link close} stops the renewal timer. */
export class VaultClient {
  readonly #options: VaultClientOptions;
  #token?: TokenState;
  #renewTimer?: ReturnType<typeof setTimeout>;
  #closed = false;
  /** Number of Kubernetes logins performed (for logs and tests). */
  logins = 0;
  /** Set once the server was found to honour `X-Vault-Namespace` (or none is configured). */
  #namespaceChecked: boolean;
  /** The token whose coming max TTL was already warned about. */
  #warnedMaxTtl?: string;

  /** Nothing is sent until the first request. */
  constructor(options: VaultClientOptions) {
    this.#options = options;
    this.#namespaceChecked = !options.namespace;
  }

  /** Where requests go, for messages. */
  get address(): string {
    return this.#options.address;
  }

  /**
   * One HTTP exchange. A standby Vault without request forwarding answers 307 (or 308) with
   * the active node's address: the request goes there, as Vault's own client does, at most
   * {@link MAX_REDIRECTS} times (to a plain-http address too, as before). A connection that
   * fails or an answer that does not come within the timeout is a {@link VaultError} 0.
   */
  async #send(
    method: string,
    path: string,
    body: unknown,
    token: string | undefined,
    withNamespace = true,
  ): Promise<VaultResponse> {
    const url = new URL(`/v1/${path.replace(/^\/+/, "")}`, this.#options.address);
    const headers: Record<string, string> = { accept: "application/json" };
    if (token) headers["x-vault-token"] = token;
    if (withNamespace && this.#options.namespace) {
      headers["x-vault-namespace"] = this.#options.namespace;
    }
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: HttpResponse;
    try {
      response = await httpRequest(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        tls: { ca: this.#options.caCertPem, rejectUnauthorized: !this.#options.skipVerify },
        timeoutMs: this.#options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        maxRedirects: MAX_REDIRECTS,
        redirectStatuses: [307, 308],
        allowDowngrade: true,
      });
    } catch (error) {
      if (!(error instanceof HttpTransportError)) throw error;
      const reason = error.code === "EDEADLINE" ? "request timed out" : error.message;
      throw new VaultError(
        0,
        [],
        `Vault at ${this.#options.address} is unreachable: ${reason}`,
        { cause: error },
      );
    }
    const text = response.body.toString("utf8");
    let parsed: unknown = undefined;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = { errors: [text.slice(0, 200)] };
    }
    return { status: response.status, body: parsed };
  }

  #error(method: string, path: string, response: VaultResponse): VaultError {
    const errors: string[] = Array.isArray(response.body?.errors)
      ? response.body.errors.map(String)
      : [];
    const said = errors.length > 0
      ? errors.join("; ").replace(/\s+/g, " ").trim()
      : "no error message";
    return new VaultError(
      response.status,
      errors,
      `Vault ${method} /v1/${path}: ${response.status}: ${said}`,
    );
  }

  async #currentToken(): Promise<string> {
    const auth = this.#options.auth;
    if (auth.kind === "token") {
      if (auth.tokenFile) {
        try {
          return (await readSmallFile(auth.tokenFile)).trim();
        } catch (error) {
          throw new VaultError(
            0,
            [],
            `cannot read the Vault token file ${auth.tokenFile}: ${fileErrorReason(error)}`,
          );
        }
      }
      if (this.#token) return this.#token.token;
      if (!auth.token) {
        throw new VaultError(
          0,
          [],
          "no Vault token: set VAULT_TOKEN, --vault-token-file or --vault-k8s-role",
        );
      }
      this.#token = { token: auth.token };
      await this.#scheduleRenewalFromLookup();
      return auth.token;
    }
    if (!this.#token) await this.#login();
    return this.#token!.token;
  }

  async #login(): Promise<void> {
    const auth = this.#options.auth;
    if (auth.kind !== "kubernetes") return;
    let jwt: string;
    try {
      jwt = (await readSmallFile(auth.jwtFile)).trim();
    } catch (error) {
      throw new VaultError(
        0,
        [],
        `cannot read the service-account token ${auth.jwtFile}: ${fileErrorReason(error)}`,
      );
    }
    const path = `auth/${auth.mount}/login`;
    const response = await this.#send("POST", path, { role: auth.role, jwt }, undefined);
    if (response.status !== 200 || !response.body?.auth?.client_token) {
      throw this.#error("POST", path, response);
    }
    this.logins++;
    const { client_token: token, lease_duration: ttl, renewable } = response.body.auth;
    this.#setToken(token, Number(ttl), Boolean(renewable));
    this.#options.logger?.info(
      `logged in to Vault at ${this.#options.address} with Kubernetes role ${auth.role}`,
    );
  }

  #setToken(token: string, ttlSeconds: number, renewable: boolean, fullTtl?: number): void {
    clearTimeout(this.#renewTimer);
    this.#token = { token, fullTtl: fullTtl ?? (ttlSeconds > 0 ? ttlSeconds : undefined) };
    if (!renewable || !(ttlSeconds > 0) || this.#closed) return;
    const delay = Math.max(1000, (ttlSeconds * 1000 * 2) / 3);
    this.#token.renewAt = Date.now() + delay;
    // A token TTL can exceed what a timer honours: the renewal is scheduled safely.
    this.#renewTimer = setSafeTimeout(() => void this.#renew(), delay);
  }

  async #scheduleRenewalFromLookup(): Promise<void> {
    const token = this.#token?.token;
    if (!token) return;
    try {
      const response = await this.#send("GET", "auth/token/lookup-self", undefined, token);
      if (response.status === 200 && response.body?.data) {
        const data = response.body.data;
        this.#setToken(
          token,
          Number(data.ttl),
          Boolean(data.renewable),
          Number(data.creation_ttl) > 0 ? Number(data.creation_ttl) : undefined,
        );
      }
    } catch {
      // Vault unreachable now: the first real request reports it.
    }
  }

  async #renew(): Promise<void> {
    const token = this.#token?.token;
    if (!token || this.#closed) return;
    try {
      const response = await this.#send("POST", "auth/token/renew-self", {}, token);
      if (response.status === 200 && response.body?.auth) {
        const granted = Number(response.body.auth.lease_duration);
        const fullTtl = this.#token?.fullTtl;
        if (fullTtl !== undefined && granted < fullTtl) {
          this.#nearMaxTtl(granted);
          if (this.#options.auth.kind === "kubernetes") return;
        }
        this.#setToken(token, granted, Boolean(response.body.auth.renewable), fullTtl);
        this.#options.logger?.debug("renewed the Vault token");
        return;
      }
      this.#options.logger?.warn(
        `could not renew the Vault token: ${
          this.#error("POST", "auth/token/renew-self", response).message
        }`,
      );
    } catch (error) {
      this.#options.logger?.warn(`could not renew the Vault token: ${(error as Error).message}`);
    }
    // Kubernetes auth: forget the token so that the next request logs in again.
    if (this.#options.auth.kind === "kubernetes") this.#token = undefined;
  }

  /**
   * A renewal granted less than the token's TTL: it is capped by its max TTL and will expire in
   * `granted` seconds whatever sentry does. With Kubernetes auth the token is dropped, so the
   * next request logs in afresh (while the old token is still valid); a token given by the
   * operator cannot be replaced by sentry, so that is said, once per token.
   */
  #nearMaxTtl(granted: number): void {
    if (this.#options.auth.kind === "kubernetes") {
      this.#options.logger?.info(
        `the Vault token reaches its max TTL in ${granted}s: logging in again at the next request`,
      );
      this.#token = undefined;
      return;
    }
    const token = this.#token?.token;
    if (token === undefined || this.#warnedMaxTtl === token) return;
    this.#warnedMaxTtl = token;
    this.#options.logger?.warn(
      `the Vault token reaches its max TTL in ${granted}s and cannot be renewed past it: give ` +
        `sentry a new token before then (--vault-token-file lets an agent replace it)`,
    );
  }

  /**
   * Sends a request with the current token. A 403 with Kubernetes auth logs in again once and
   * retries (the token may have expired). Returns 2xx and 404 responses; throws VaultError for
   * anything else.
   */
  async request(method: string, path: string, body?: unknown): Promise<VaultResponse> {
    if (!this.#namespaceChecked) await this.#checkNamespaceSupport();
    let response = await this.#send(method, path, body, await this.#currentToken());
    if (response.status === 403 && this.#options.auth.kind === "kubernetes") {
      this.#token = undefined;
      response = await this.#send(method, path, body, await this.#currentToken());
    }
    if ((response.status >= 200 && response.status < 300) || response.status === 404) {
      return response;
    }
    throw this.#error(method, path, response);
  }

  /**
   * With a namespace configured, refuses a server that would ignore it: Vault Community Edition
   * (a `1.x` version without `+ent`) has no namespaces and silently serves every request from
   * the root namespace, so the bundle would be read and written where another sentry's may live.
   * The version comes from `sys/seal-status` (no token needed). Other servers (Enterprise,
   * OpenBao) are trusted to honour the header. Asked once; a failed ask is retried next time.
   */
  async #checkNamespaceSupport(): Promise<void> {
    const namespace = this.#options.namespace;
    const status = await this.#send("GET", "sys/seal-status", undefined, undefined, false);
    if (status.status !== 200) throw this.#error("GET", "sys/seal-status", status);
    const version = String(status.body?.version ?? "");
    if (vaultWithoutNamespaces(version)) {
      throw new VaultError(
        400,
        [],
        `Vault at ${this.#options.address} is version ${version}, which has no namespaces ` +
          `(an Enterprise feature): it would ignore X-Vault-Namespace "${namespace}" and keep ` +
          `the bundle in the root namespace. Remove --vault-namespace (and $VAULT_NAMESPACE), ` +
          `or point --vault-addr at a server with namespaces`,
      );
    }
    this.#namespaceChecked = true;
  }

  /** Stops renewing the token. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#renewTimer);
  }
}
