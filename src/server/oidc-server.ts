/**
 * The OIDC discovery server of Dapr's sentry (`--oidc-enabled`): a small HTTP(S) server that
 * lets third-party resource providers verify the JWT-SVIDs sentry issues. It answers two GET
 * endpoints under an optional path prefix, `/.well-known/openid-configuration` (the discovery
 * document) and `/jwks.json` (the key set, served byte for byte), and nothing else.
 *
 * Behaviour follows Dapr's `pkg/sentry/server/oidc/oidc.go` and the flags of
 * `cmd/sentry/options/options.go`:
 * - the allowed-hosts check runs first: the request host (`X-Forwarded-Host` when present) must
 *   be listed exactly, or its host part must be, or the list holds `*`; otherwise 403
 *   `Forbidden: unauthorized domain`. An empty list allows every host;
 * - then only GET is allowed (HEAD too is 405 `Method not allowed`), then an empty key set is
 *   404 (`JWKS not available` / `OIDC configuration not available`);
 * - with no fixed `--jwt-issuer` the issuer is `<scheme>://<host>`, where the scheme is `https`
 *   when TLS is served and `http` otherwise (`X-Forwarded-Proto` is ignored, as in Dapr) and the
 *   host is the request's; `X-Forwarded-Host` replaces it only when the allowed-hosts list is
 *   non-empty and has no `*` (it was then matched against a concrete entry: CWE-346);
 * - without `--oidc-jwks-uri`, `jwks_uri` is the JWKS path resolved against the issuer (or the
 *   request's base URL), so it carries the path prefix and drops the issuer's own path;
 * - both answers are `application/json` with `Cache-Control: public, max-age=3600`, Dapr's;
 * - other paths are 404 `404 page not found`, and non-canonical paths (`//`, `/./`, `/../`)
 *   are redirected (307) to their cleaned form, as Go's ServeMux (Go 1.26) does.
 *
 * Unlike Dapr, the key set can be replaced while serving ({@link OidcServer.setJwks}); the
 * next request sees it.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import type { ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { posix } from "node:path";
import type { Logger } from "../observability/logger.ts";
import { readSmallFileSync } from "../util/bounded-read.ts";

/** Dapr's JWKS endpoint. */
export const JWKS_ENDPOINT = "/jwks.json";
/** Dapr's OIDC discovery endpoint. */
export const DISCOVERY_ENDPOINT = "/.well-known/openid-configuration";
/** Dapr's `--oidc-server-listen-address` default. */
export const DEFAULT_OIDC_LISTEN_ADDRESS = "localhost";
/** Dapr's `--oidc-server-listen-port` default. */
export const DEFAULT_OIDC_PORT = 9080;
/** How often Dapr looks again for TLS files that are not there yet. */
export const DEFAULT_TLS_FILE_POLL_MS = 5_000;
/** Dapr's cache header on both endpoints. */
export const OIDC_CACHE_CONTROL = "public, max-age=3600";

/** Options of {@link startOidcServer}; each mirrors a flag of Dapr's sentry. */
export interface OidcServerOptions {
  /** `--oidc-server-listen-address`; default `localhost` (its first IPv4 address, as Go). */
  listenAddress?: string;
  /** `--oidc-server-listen-port`; default 9080; 0 picks a free port. */
  port?: number;
  /**
   * `--oidc-server-tls-enabled`, default true. When true, a certificate and a key (files or
   * PEM) are required, as Dapr's flag validation requires both files. As in Dapr, TLS is
   * served whenever both are given, even with this set to false.
   */
  tlsEnabled?: boolean;
  /** `--oidc-server-tls-cert-file`: waited for (polled) until it exists, as Dapr does. */
  tlsCertFile?: string;
  /** `--oidc-server-tls-key-file`: waited for like the certificate. */
  tlsKeyFile?: string;
  /** The certificate (chain) as PEM text, instead of a file. */
  tlsCertPem?: string;
  /** The private key as PEM text, instead of a file. */
  tlsKeyPem?: string;
  /** Poll interval while TLS files are missing; default 5 s (Dapr's). */
  tlsFilePollMs?: number;
  /** The key set served at `jwks.json`, as JSON text or bytes; empty or absent: 404. */
  jwks?: string | Uint8Array;
  /** The JWT signing algorithm, e.g. `RS256` (Dapr refuses to start without one). */
  signingAlgorithm: string;
  /** `--jwt-issuer`; absent or empty: derived from each request's host. */
  jwtIssuer?: string;
  /** `--oidc-jwks-uri`; when given (even empty) it is served as `jwks_uri` verbatim. */
  jwksUri?: string;
  /** `--oidc-path-prefix`; `/` or empty means none; one trailing `/` is dropped. */
  pathPrefix?: string;
  /** `--oidc-allowed-hosts`; empty allows any host; `*` allows any; `host` or `host:port`. */
  allowedHosts?: readonly string[];
  /** Where start-up and refusals are logged. */
  logger?: Logger;
  /** Aborts the wait for TLS files (start-up then fails). */
  signal?: AbortSignal;
}

/** A running OIDC server. */
export interface OidcServer {
  /** The bound port (the real one when 0 was asked for). */
  readonly port: number;
  /** The address actually listened on. */
  readonly address: string;
  /** True when serving HTTPS. */
  readonly tls: boolean;
  /** Replaces the served key set; the next request sees it. Empty: both endpoints 404. */
  setJwks(jwks: string | Uint8Array | undefined): void;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
}

/** The discovery document, fields in Dapr's order (`authorization_endpoint` is never set). */
interface DiscoveryDocument {
  issuer: string;
  jwks_uri: string;
  response_types_supported: string[];
  subject_types_supported: string[];
  id_token_signing_alg_values_supported: string[];
  scopes_supported: string[];
  claims_supported: string[];
}

/** The request-independent configuration a handler needs. */
interface Routes {
  jwksPath: string;
  discoveryPath: string;
  issuer: string;
  jwksUri?: string;
  allowedHosts: readonly string[];
  scheme: "http" | "https";
  signingAlgorithm: string;
}

/** Starts the server; resolves once it listens (after the TLS files exist, when files). */
export async function startOidcServer(options: OidcServerOptions): Promise<OidcServer> {
  const routes = buildRoutes(options);
  const tls = await loadTls(options);
  routes.scheme = tls ? "https" : "http";
  let jwks = toBytes(options.jwks);
  const handler = (request: IncomingMessage, response: ServerResponse) =>
    handleRequest(routes, jwks, request, response, options.logger);
  const server: Server = tls
    ? createHttpsServer({ cert: tls.cert, key: tls.key, minVersion: "TLSv1.2" }, handler)
    : createHttpServer(handler);
  server.headersTimeout = 10_000; // Dapr's ReadHeaderTimeout
  const address = await resolveListenAddress(options.listenAddress ?? DEFAULT_OIDC_LISTEN_ADDRESS);
  const port = await listen(server, address, options.port ?? DEFAULT_OIDC_PORT);
  logStart(options, routes, address, port);
  return {
    port,
    address,
    tls: tls !== undefined,
    setJwks: (next) => {
      jwks = toBytes(next);
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Validates the options into routes; throws on what Dapr refuses (or would misbehave on). */
function buildRoutes(options: OidcServerOptions): Routes {
  if (!options.signingAlgorithm) throw new Error("signature algorithm is required");
  const issuer = options.jwtIssuer ? normaliseUrl(options.jwtIssuer, "JWT issuer") : "";
  const jwksUri = options.jwksUri === undefined
    ? undefined
    : normaliseUrl(options.jwksUri, "JWKS URI");
  const prefix = normalisePrefix(options.pathPrefix);
  return {
    jwksPath: posix.join(prefix, JWKS_ENDPOINT),
    discoveryPath: posix.join(prefix, DISCOVERY_ENDPOINT),
    issuer,
    jwksUri,
    allowedHosts: [...(options.allowedHosts ?? [])],
    scheme: "http",
    signingAlgorithm: options.signingAlgorithm,
  };
}

/**
 * `--oidc-path-prefix`: none for absent, empty or `/`; one trailing `/` dropped. A prefix not
 * starting with `/` is refused: Dapr turns it into a host-matching ServeMux pattern (or panics
 * on an empty one), which is never what was meant.
 */
function normalisePrefix(prefix: string | undefined): string {
  if (prefix === undefined || prefix === "" || prefix === "/") return "/";
  if (!prefix.startsWith("/")) {
    throw new Error(`invalid OIDC path prefix ${JSON.stringify(prefix)}: must start with "/"`);
  }
  return prefix.endsWith("/") ? prefix.slice(0, -1) : prefix;
}

/** Checks `value` the way Go's url.Parse would refuse it, and lower-cases its scheme. */
function normaliseUrl(value: string, what: string): string {
  const problem = urlProblem(value);
  if (problem) throw new Error(`invalid ${what} ${JSON.stringify(value)}: ${problem}`);
  return value.replace(/^[A-Za-z][A-Za-z0-9+.-]*:/, (scheme) => scheme.toLowerCase());
}

/** Why Go's url.Parse would refuse `value`, or undefined: control bytes, bad escapes, ports. */
function urlProblem(value: string): string | undefined {
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(value)) return "invalid control character in URL";
  if (/%(?![0-9A-Fa-f]{2})/.test(value)) return "invalid URL escape";
  const authority = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(value)?.[1];
  return authority === undefined ? undefined : authorityProblem(authority);
}

/** Why Go would refuse `authority` (`[userinfo@]host[:port]`) as a URL host, or undefined. */
function authorityProblem(authority: string): string | undefined {
  const host = authority.slice(authority.lastIndexOf("@") + 1);
  let port = "";
  if (host.startsWith("[")) {
    const close = host.indexOf("]");
    if (close < 0) return "missing ']' in host";
    port = host.slice(close + 1);
  } else {
    const colon = host.lastIndexOf(":");
    if (colon >= 0) port = host.slice(colon);
    const name = colon >= 0 ? host.slice(0, colon) : host;
    if (/[^A-Za-z0-9\-_.~!$&'()*+,;=:<>"%\u0080-\uffff]/.test(name)) {
      return "invalid character in host name";
    }
  }
  if (port !== "" && !/^:[0-9]*$/.test(port)) return `invalid port ${JSON.stringify(port)}`;
  return undefined;
}

/** The certificate and key to serve, or undefined for plain HTTP (Dapr's rules). */
async function loadTls(
  options: OidcServerOptions,
): Promise<{ cert: string; key: string } | undefined> {
  const cert = options.tlsCertPem ?? options.tlsCertFile;
  const key = options.tlsKeyPem ?? options.tlsKeyFile;
  if (options.tlsEnabled ?? true) {
    if (cert === undefined) {
      throw new Error(
        "oidc-server-tls-cert-file is required when OIDC HTTP server is enabled (unless oidc-server-tls-enabled is false)",
      );
    }
    if (key === undefined) {
      throw new Error(
        "oidc-server-tls-key-file is required when OIDC HTTP server is enabled (unless oidc-server-tls-enabled is false)",
      );
    }
  }
  if (cert === undefined || key === undefined) return undefined;
  await waitForFiles(options);
  try {
    const pair = {
      cert: options.tlsCertPem ?? readSmallFileSync(options.tlsCertFile!),
      key: options.tlsKeyPem ?? readSmallFileSync(options.tlsKeyFile!),
    };
    // Go's tls.LoadX509KeyPair parses both and checks they belong together; the TLS server
    // would only fail later, at each handshake.
    if (!new X509Certificate(pair.cert).checkPrivateKey(createPrivateKey(pair.key))) {
      throw new Error("private key does not match public key");
    }
    return pair;
  } catch (error) {
    throw new Error(`failed to load TLS certificate and key: ${(error as Error).message}`);
  }
}

/** Polls until the TLS files given as paths exist, as Dapr does; abortable. */
async function waitForFiles(options: OidcServerOptions): Promise<void> {
  const paths = [options.tlsCertFile, options.tlsKeyFile].filter((path, i) =>
    path !== undefined && (i === 0 ? options.tlsCertPem : options.tlsKeyPem) === undefined
  ) as string[];
  const interval = options.tlsFilePollMs ?? DEFAULT_TLS_FILE_POLL_MS;
  while (!paths.every((path) => existsSync(path))) {
    options.logger?.warn("Waiting for OIDC TLS certificate and key files to be available", {
      files: paths.join(","),
    });
    await abortableSleep(interval, options.signal);
  }
}

/** Sleeps `ms`, rejecting early when `signal` aborts. */
function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new Error("stopped waiting for the OIDC TLS files"));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Error("stopped waiting for the OIDC TLS files"));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Go listens on a host name's first IPv4 address (else its first address); so do we. */
async function resolveListenAddress(address: string): Promise<string> {
  if (address === "" || isIP(address.replace(/^\[|\]$/g, ""))) {
    return address.replace(/^\[|\]$/g, "");
  }
  const found = await lookup(address, { all: true });
  const chosen = found.find((entry) => entry.family === 4) ?? found[0];
  if (!chosen) throw new Error(`cannot resolve OIDC listen address ${address}`);
  return chosen.address;
}

/** Listens and resolves the bound port; a bind failure names the address. */
async function listen(server: Server, address: string, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once(
      "error",
      (error) =>
        reject(new Error(`failed to listen on ${address}:${port} for OIDC: ${error.message}`)),
    );
    if (address === "") server.listen(port, () => resolve());
    else server.listen(port, address, () => resolve());
  });
  const bound = server.address();
  return typeof bound === "object" && bound ? bound.port : port;
}

/** Dapr's start-up lines. */
function logStart(options: OidcServerOptions, routes: Routes, address: string, port: number) {
  const log = options.logger;
  if (!log) return;
  if (routes.allowedHosts.length > 0) {
    log.info("OIDC server will only accept requests for hosts", {
      hosts: routes.allowedHosts.join(","),
    });
  } else log.info("OIDC server will accept requests for any host");
  log.info(`Starting OIDC HTTP server${routes.scheme === "http" ? " (insecure)" : ""}`, {
    address,
    port,
    prefix: routes.discoveryPath.slice(0, -DISCOVERY_ENDPOINT.length) || "/",
  });
}

/** JSON text or bytes as bytes (empty for none). */
function toBytes(jwks: string | Uint8Array | undefined): Uint8Array {
  if (jwks === undefined) return new Uint8Array();
  return typeof jwks === "string" ? new TextEncoder().encode(jwks) : jwks.slice();
}

/** The parts of a request target Go's server and ServeMux look at. */
interface Target {
  /** The path as sent (escaped). */
  rawPath: string;
  /** The path's segments, each unescaped (Go's ServeMux matches segment by segment). */
  segments: string[];
  rawQuery: string;
  /** From an absolute-form target (`GET https://host/path`), as Go's `r.URL.Scheme`. */
  scheme?: string;
  /** From an absolute-form target: Go then takes the host from the URL, not the header. */
  host?: string;
}

/** Parses the request target, or undefined when Go would answer 400. */
function parseTarget(url: string): Target | undefined {
  let rest = url;
  let scheme: string | undefined;
  let host: string | undefined;
  const absolute = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)/.exec(url);
  if (absolute) {
    scheme = absolute[1].toLowerCase();
    host = absolute[2].slice(absolute[2].lastIndexOf("@") + 1);
    rest = url.slice(absolute[0].length) || "/";
  }
  if (!rest.startsWith("/")) return undefined;
  const query = rest.indexOf("?");
  const rawPath = query < 0 ? rest : rest.slice(0, query);
  try {
    const segments = rawPath.split("/").map((segment) => decodeURIComponent(segment));
    return { rawPath, segments, rawQuery: query < 0 ? "" : rest.slice(query + 1), scheme, host };
  } catch {
    return undefined;
  }
}

/** Go's path.Clean with a trailing slash kept (ServeMux's cleanPath). */
function cleanPath(path: string): string {
  const cleaned = posix.normalize(path).replace(/(.)\/$/, "$1");
  return path.endsWith("/") && cleaned !== "/" ? cleaned + "/" : cleaned;
}

/** The first value of header `name` (Go's `Header.Get`), from the raw header list. */
function firstHeader(request: IncomingMessage, name: string): string | undefined {
  const raw = request.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].toLowerCase() === name) return raw[i + 1];
  }
  return undefined;
}

/** How many times header `name` appears. */
function headerCount(request: IncomingMessage, name: string): number {
  let count = 0;
  for (let i = 0; i < request.rawHeaders.length; i += 2) {
    if (request.rawHeaders[i].toLowerCase() === name) count++;
  }
  return count;
}

/** Go's `http.Error`: plain text, `nosniff`, message and a newline. */
function sendError(response: ServerResponse, status: number, message: string): void {
  const body = message + "\n";
  response.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "x-content-type-options": "nosniff",
    "content-length": Buffer.byteLength(body),
  });
  response.end(body);
}

/** A JSON answer with Dapr's headers. */
function sendJson(response: ServerResponse, body: Uint8Array | string): void {
  response.writeHead(200, {
    "content-type": "application/json",
    "cache-control": OIDC_CACHE_CONTROL,
    "content-length": typeof body === "string" ? Buffer.byteLength(body) : body.byteLength,
  });
  response.end(body);
}

/** Go's `http.Redirect` with 307, as ServeMux (Go 1.22+) answers a non-canonical path. */
function sendRedirect(request: IncomingMessage, response: ServerResponse, location: string) {
  const headers: Record<string, string | number> = { location };
  if (request.method === "GET" || request.method === "HEAD") {
    headers["content-type"] = "text/html; charset=utf-8";
  }
  const body = request.method === "GET"
    ? `<a href="${escapeHtml(location)}">Temporary Redirect</a>.\n\n`
    : "";
  headers["content-length"] = Buffer.byteLength(body);
  response.writeHead(307, headers);
  response.end(body);
}

/** Go's htmlEscape. */
function escapeHtml(text: string): string {
  const named: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;" };
  return text.replace(/[&<>"']/g, (c) => named[c] ?? `&#${c.charCodeAt(0)};`);
}

/** True when the unescaped `segments` are exactly those of `path`. */
function samePath(segments: readonly string[], path: string): boolean {
  const wanted = path.split("/");
  return wanted.length === segments.length && wanted.every((part, i) => part === segments[i]);
}

/** Routes one request the way Dapr's server (Go's ServeMux and Dapr's handlers) does. */
function handleRequest(
  routes: Routes,
  jwks: Uint8Array,
  request: IncomingMessage,
  response: ServerResponse,
  logger?: Logger,
): void {
  const url = request.url ?? "/";
  if (url === "*" && request.method === "OPTIONS") {
    response.writeHead(200, { "content-length": 0 }).end(); // Go's global OPTIONS answer
    return;
  }
  const target = parseTarget(url);
  if (!target || headerCount(request, "host") > 1) {
    sendError(response, 400, "Bad Request");
    return;
  }
  const cleaned = cleanPath(target.rawPath);
  if (cleaned !== target.rawPath) {
    const query = target.rawQuery ? `?${target.rawQuery}` : "";
    sendRedirect(request, response, encodeURI(cleaned) + query);
    return;
  }
  const endpoint = samePath(target.segments, routes.jwksPath)
    ? "jwks"
    : samePath(target.segments, routes.discoveryPath)
    ? "discovery"
    : undefined;
  if (!endpoint) {
    sendError(response, 404, "404 page not found");
    return;
  }
  const host = target.host ?? request.headers.host ?? "";
  const forwardedHost = firstHeader(request, "x-forwarded-host") || undefined;
  if (!hostAllowed(routes.allowedHosts, forwardedHost ?? host)) {
    logger?.warn("Request from unauthorized domain", { host: forwardedHost ?? host });
    sendError(response, 403, "Forbidden: unauthorized domain");
    return;
  }
  if (request.method !== "GET") {
    sendError(response, 405, "Method not allowed");
    return;
  }
  if (jwks.byteLength === 0) {
    logger?.error("JWKS not available in bundle");
    sendError(
      response,
      404,
      endpoint === "jwks" ? "JWKS not available" : "OIDC configuration not available",
    );
    return;
  }
  if (endpoint === "jwks") {
    sendJson(response, jwks);
    return;
  }
  const trusted = forwardedHost !== undefined && routes.allowedHosts.length > 0 &&
      !routes.allowedHosts.includes("*")
    ? forwardedHost
    : host;
  const document = discoveryDocument(routes, target.scheme ?? routes.scheme, trusted);
  if (!document) {
    sendError(response, 400, "Invalid host");
    return;
  }
  sendJson(response, goJson(document) + "\n");
}

/**
 * Dapr's allowed-hosts check: an empty list allows all; `*` allows all; otherwise `host` must
 * be listed exactly, or its host part (Go's net.SplitHostPort) must be.
 */
export function hostAllowed(allowedHosts: readonly string[], host: string): boolean {
  if (allowedHosts.length === 0 || allowedHosts.includes("*")) return true;
  if (allowedHosts.includes(host)) return true;
  const name = splitHostPort(host);
  return name !== undefined && allowedHosts.includes(name);
}

/** The host part of `host:port` / `[v6]:port` as Go's net.SplitHostPort, or undefined. */
export function splitHostPort(hostport: string): string | undefined {
  const colon = hostport.lastIndexOf(":");
  if (colon < 0) return undefined; // missing port
  if (hostport.startsWith("[")) {
    const close = hostport.indexOf("]");
    if (close < 0 || close + 1 !== colon) return undefined;
    const inner = hostport.slice(1, close);
    return /[[\]]/.test(hostport.slice(close + 1)) ? undefined : inner;
  }
  const name = hostport.slice(0, colon);
  if (name.includes(":") || /[[\]]/.test(hostport)) return undefined; // too many colons
  return name;
}

/** The discovery document for one request, or undefined when the host makes no URL. */
function discoveryDocument(
  routes: Routes,
  scheme: string,
  host: string,
): DiscoveryDocument | undefined {
  let issuer = routes.issuer;
  let jwksUri = routes.jwksUri;
  if (!issuer || jwksUri === undefined) {
    const requestBase = `${scheme}://${host}`;
    if (urlProblem(requestBase)) return undefined;
    if (!issuer) issuer = requestBase;
    jwksUri ??= resolveAbsolutePath(issuer, routes.jwksPath);
  }
  return {
    issuer,
    jwks_uri: jwksUri,
    response_types_supported: ["id_token"],
    subject_types_supported: ["public"],
    id_token_signing_alg_values_supported: [routes.signingAlgorithm],
    scopes_supported: ["openid"],
    claims_supported: ["sub", "iss", "aud", "exp", "iat", "nbf", "use"],
  };
}

/** An absolute path resolved against `base` (RFC 3986): base's scheme and authority only. */
function resolveAbsolutePath(base: string, path: string): string {
  const origin = /^(?:[A-Za-z][A-Za-z0-9+.-]*:)?(?:\/\/[^/?#]*)?/.exec(base)?.[0] ?? "";
  return origin + encodeURI(path);
}

/** JSON as Go's encoding/json writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped. */
function goJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
