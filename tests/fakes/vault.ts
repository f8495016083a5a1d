/**
 * A fake HashiCorp Vault server for tests: a real HTTP (or HTTPS, with `node:https`) server on
 * 127.0.0.1 that answers Vault's REST API the way Vault does, so that a Vault client can be
 * tested against the status codes and bodies it will meet in production.
 *
 * What it reproduces (written from Vault's sources: `http/logical.go`, `http/sys_health.go`, the
 * token store and expiration manager, the `vault-plugin-secrets-kv` and
 * `vault-plugin-auth-kubernetes` plugins; and checked against a real Vault v1.21.0 by
 * tests/e2e/vault_fake_conformance_test.ts, which sends the same raw requests to both):
 *
 * - Envelopes: successes are `{"request_id","lease_id":"","renewable":false,"lease_duration":0,
 *   "data","wrap_info":null,"warnings","auth","mount_type"}`; errors are `{"errors":[...]}` with
 *   Vault's texts: a missing token is 403 `permission denied`, an unknown, revoked or expired one
 *   403 `2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n`; an ACL denial is 403
 *   in go-multierror's format (`1 error occurred:\n\t* permission denied\n\n`); a read of nothing
 *   is 404 `{"errors":[]}`; an unknown mount is 404 `no handler for route "<path>". route entry
 *   not found.`; a known path that does not support the operation is 405 in multierror format
 *   (`unsupported operation`; plain on login paths). HEAD and OPTIONS are Vault's header
 *   operation (405 unsupported operation for the root token, an ACL denial for others); PATCH
 *   needs `Content-Type: application/merge-patch+json` (400 `mime: no media type`, else 415); a
 *   method Vault does not map is 405 `{"errors":[]}`; a path outside `/v1/` is Go's plain-text
 *   `404 page not found`. A body that is not JSON is 500, JSON that is not an object 400 `error
 *   parsing JSON: ...`; field errors carry Vault's `Field validation failed: error converting
 *   input for field ...` texts (`version`, `versions`, `increment`) and mapstructure's `'' expected
 *   a map, got 'string'` for `data`/`options`.
 * - KV version 2 (`secret/` and any `kvMounts`): `data/` read (`?version=N`), write with
 *   check-and-set (`options.cas`, `cas_required` per mount or per key) and `max_versions`
 *   trimming (default 10), PATCH (JSON merge patch, `patch` capability), soft delete; `delete/`,
 *   `undelete/`, `destroy/` of versions; `metadata/` read (with `created_by`, `deleted_by` and
 *   `last_updated_by`: the token's display name, the operation, an opaque client ID), list
 *   (`?list=true`), write and delete; `config`. A deleted or destroyed version reads as 404 whose
 *   body is the whole envelope (`mount_type: ""`) with `data: {"data": null, "metadata": {...}}`,
 *   as the plugin's `logical.RespondWithStatusCode` produces. Other paths in a KV v2 mount are 404
 *   with the plugin's "Invalid path for a versioned K/V secrets engine" warning.
 * - Tokens (`X-Vault-Token` or `Authorization: Bearer`): TTL, explicit max TTL, renewability,
 *   named policies plus the built-in `default` policy (lookup-self, renew-self, revoke-self), ACL
 *   rules with `*` (trailing glob) and `+` (one segment) and Vault's rule priority, create versus
 *   update decided by an existence check as Vault does for KV `data/` and `metadata/`.
 *   `auth/token/lookup-self` (the root token without `issue_time` and `renewable`, as `sys/init`
 *   makes it), `auth/token/renew-self` (`increment`, else the last TTL granted; whole seconds,
 *   capped by the max TTL with Vault's warning, `TTL of "1h" exceeded the effective max_ttl of
 *   "2m"; ...`) and `auth/token/revoke-self`.
 * - Kubernetes auth (`auth/<mount>/login`, default mount `kubernetes`): `missing role`,
 *   `missing jwt`, `invalid role name "x"` (400), a refused JWT is 403 `permission denied`.
 * - Namespaces (`X-Vault-Namespace`, Vault Enterprise; on by default): KV data, policies, roles and
 *   tokens belong to a namespace; a token works in its namespace and its children (ACL paths then
 *   relative to the token's namespace), never in a parent or a sibling (403). With
 *   `namespaces: false` it behaves as Vault OSS: the header is ignored and everything lives in
 *   the root namespace.
 * - `sys/health` (200 active, 429 standby, 473 performance standby, 503 sealed, reporting
 *   `standby: true` and unknown replication modes as Vault does, 501 not initialised, the `*code`
 *   and `standbyok`/`perfstandbyok` query parameters, HEAD) and `sys/seal-status`, both answered
 *   even while sealed.
 * - Faults: sealed (503 `Vault is sealed` for everything else), standby (429, or 473 for a
 *   performance standby, `Vault is in standby mode`, or a 307 redirect to an active node as Vault
 *   does without request forwarding), injected failures, latency, and connections destroyed
 *   without an answer.
 *
 * Not reproduced: the `LIST` HTTP verb and made-up methods (Node's HTTP parser refuses them with
 * 400; use `GET ?list=true` as Vault also allows), the exact text of Go's JSON decoder errors,
 * PATCH of `metadata/`, response wrapping, leases of dynamic secrets, `delete_version_after`,
 * `subkeys/`, namespaces given as a path prefix, entities and identity policies.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { Socket } from "node:net";

/** A capability in a policy rule, as in Vault's HCL policies. */
export type Capability =
  | "create"
  | "read"
  | "update"
  | "patch"
  | "delete"
  | "list"
  | "sudo"
  | "deny";

/**
 * One rule of a policy: `path` is a Vault path relative to the token's namespace, exact, or
 * ending in `*` (prefix glob), with `+` standing for one whole path segment.
 */
export interface PolicyRule {
  path: string;
  capabilities: Capability[];
}

/** A KV version 2 mount and its `config`. */
export interface KvMountOptions {
  /** Mount path without slashes, e.g. `secret`. */
  path: string;
  /** Every write must carry `options.cas` (mount-wide `cas_required`). */
  casRequired?: boolean;
  /** Versions kept per key (0: Vault's default of 10). */
  maxVersions?: number;
}

/** Options of {@link FakeVault.start}. */
export interface FakeVaultOptions {
  /** Serve HTTPS with this certificate chain and key (PEM). */
  tls?: { certPem: string; keyPem: string };
  /** KV v2 mounts in addition to `secret`. */
  kvMounts?: (string | KvMountOptions)[];
  /** Kubernetes auth mounts in addition to `kubernetes`. */
  kubernetesMounts?: string[];
  /** The root token (random `hvs.` token by default). */
  rootToken?: string;
  /**
   * Version reported by `sys/health` and `sys/seal-status`: default `1.17.0+ent` with
   * namespaces (an Enterprise build, as the header's honouring implies), `1.17.0` without.
   */
  version?: string;
  /**
   * Model Vault Enterprise namespaces (default true): `X-Vault-Namespace` selects the namespace
   * KV data, policies, roles and tokens belong to. With false the fake behaves as Vault OSS
   * (the conformance test's Vault v1.21.0): the header is ignored, every request lands in the
   * root namespace, and the `namespace` options of the helpers are ignored too.
   */
  namespaces?: boolean;
}

/** Options of {@link FakeVault.createToken}. */
export interface TokenOptions {
  /**
   * Seconds until the token expires (fractions allowed). 0 means never, as for root tokens.
   * Default: never for a `root` token, else Vault's default 768h.
   */
  ttl?: number;
  /** Explicit max TTL in seconds: renewals never go past issue time + this (default 768h). */
  maxTtl?: number;
  /** Whether renew-self works (default true). */
  renewable?: boolean;
  /**
   * Policy names (see {@link FakeVault.setPolicy}; `root` allows everything) and/or inline
   * rules, which become an anonymous policy. Default `["root"]`, as a child of the root token.
   */
  policies?: (string | PolicyRule)[];
  /** Do not attach the `default` policy. */
  noDefaultPolicy?: boolean;
  /** Namespace the token belongs to (root namespace by default). */
  namespace?: string;
  /** `display_name` (default `token`). */
  displayName?: string;
  /** `meta`. */
  meta?: Record<string, string>;
}

/** Options of {@link FakeVault.addKubernetesRole}. */
export interface KubernetesRoleOptions {
  /** The accepted service-account JWT, or a predicate deciding whether a JWT is accepted. */
  jwt: string | ((jwt: string) => boolean);
  /** Policies of issued tokens (names and/or inline rules), plus `default`. */
  policies?: (string | PolicyRule)[];
  /** Token TTL in seconds (default 768h). */
  ttl?: number;
  /** Token max TTL in seconds (default 768h). */
  maxTtl?: number;
  /** Auth mount (default `kubernetes`). */
  mount?: string;
  /** Namespace of the mount (root by default). */
  namespace?: string;
}

/** One request as received (before any fault was applied). */
export interface RecordedRequest {
  method: string;
  /** URL path including `/v1/`, without the query. */
  path: string;
  /** Query string without `?` ("" if none). */
  query: string;
  /** `X-Vault-Namespace`, normalised ("" for the root namespace). */
  namespace: string;
  /** The token sent, if any. */
  token: string | undefined;
  /** The JSON body, parsed (undefined if there was none or it was not JSON). */
  // deno-lint-ignore no-explicit-any
  body?: any;
  /** Status answered; undefined while pending or when the connection was dropped. */
  status?: number;
}

/** One Kubernetes login attempt. */
export interface KubernetesLogin {
  mount: string;
  role: string;
  namespace: string;
  jwt: string;
  /** Whether a token was issued. */
  ok: boolean;
}

/** Where a KV secret lives, for the direct-access helpers. */
export interface KvLocation {
  /** KV v2 mount (default `secret`). */
  mount?: string;
  /** Namespace (root by default). */
  namespace?: string;
}

/** The data of a KV secret version (JSON values; strings in sentry's case). */
// deno-lint-ignore no-explicit-any
export type KvData = Record<string, any>;

/** One version of a KV secret, as the helpers return it. */
export interface KvVersion {
  version: number;
  /** The data (a copy); empty once destroyed (see {@link destroyed}). */
  data: KvData;
  createdTime: string;
  /** RFC 3339 time of the soft delete, "" if not deleted. */
  deletionTime: string;
  destroyed: boolean;
}

/** A KV secret's metadata, as the helpers return it. */
export interface KvMetadata {
  currentVersion: number;
  oldestVersion: number;
  maxVersions: number;
  casRequired: boolean;
  createdTime: string;
  updatedTime: string;
  versions: Record<number, { createdTime: string; deletionTime: string; destroyed: boolean }>;
}

/** What the server knows about a token, for assertions. */
export interface TokenInfo {
  token: string;
  accessor: string;
  namespace: string;
  policies: string[];
  renewable: boolean;
  /** Remaining seconds (0 for tokens that never expire). */
  ttl: number;
  /** TTL at creation or last renewal, in seconds. */
  creationTtl: number;
  /** null if the token never expires. */
  expireTime: Date | null;
  /** Successful renew-self calls. */
  renewals: number;
  expired: boolean;
}

/** Which requests a fault applies to. */
export interface FaultFilter {
  /** Vault path (after `/v1/`) prefix, or a pattern tested against it. */
  path?: string | RegExp;
  /** HTTP method. */
  method?: string;
}

type Json = Record<string, unknown>;
type Operation = "read" | "list" | "create" | "update" | "delete" | "patch" | "header";

/** The plugin's `created_by`/`deleted_by`/`last_updated_by`: who, and by which operation. */
interface Actor {
  actor: string;
  operation: string;
  client_id: string;
}

interface VersionState {
  data: Json | null;
  created: string;
  deletion: string;
  destroyed: boolean;
  createdBy: Actor | null;
  deletedBy: Actor | null;
}

interface KeyState {
  current: number;
  oldest: number;
  maxVersions: number;
  casRequired: boolean;
  created: string;
  updated: string;
  custom: Record<string, string> | null;
  lastUpdatedBy: Actor | null;
  versions: Map<number, VersionState>;
}

interface KvTable {
  config: { casRequired: boolean; maxVersions: number };
  keys: Map<string, KeyState>;
}

interface TokenState {
  id: string;
  accessor: string;
  namespace: string;
  policies: string[];
  renewable: boolean;
  /** Seconds at creation (`creation_ttl`); 0 = never expires. */
  ttl: number;
  /** Seconds of the last issue or renewal: what a renewal without increment asks for. */
  leaseTtl: number;
  maxTtl: number;
  issuedAt: number;
  lastRenewal?: number;
  expireAt: number | null;
  displayName: string;
  meta: Record<string, string> | null;
  path: string;
  renewals: number;
  orphan: boolean;
}

interface RoleState {
  jwt: string | ((jwt: string) => boolean);
  policies: string[];
  ttl: number;
  maxTtl: number;
}

interface Fault {
  remaining: number;
  filter?: FaultFilter;
  status?: number;
  message?: string;
}

interface Call {
  req: IncomingMessage;
  res: ServerResponse;
  record: RecordedRequest;
  requestId: string;
  vaultPath: string;
  namespace: string;
  tokenId: string | undefined;
  op: Operation;
  query: URLSearchParams;
  body: Json;
  token?: TokenState;
}

interface Route {
  /** Operations the path supports (others: 405 unsupported operation). */
  ops: Operation[];
  /** For create-or-update paths: whether the resource exists (update) or not (create). */
  exists?: () => boolean;
  /** Paths that need no token. */
  unauthenticated?: boolean;
  handle: (call: Call) => void;
}

/** Vault's default system max TTL and default token TTL: 768h. */
const SYSTEM_MAX_TTL = 768 * 3600;
const ACL_DENIED = "1 error occurred:\n\t* permission denied\n\n";
const UNSUPPORTED_OPERATION = "1 error occurred:\n\t* unsupported operation\n\n";
/** An unknown, revoked or expired token (a missing one is plain `permission denied`). */
const INVALID_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n";
const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const DEFAULT_POLICY: PolicyRule[] = [
  { path: "auth/token/lookup-self", capabilities: ["read"] },
  { path: "auth/token/renew-self", capabilities: ["update"] },
  { path: "auth/token/revoke-self", capabilities: ["update"] },
  { path: "sys/capabilities-self", capabilities: ["update"] },
];

function randomString(length: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(length));
  return Array.from(bytes, (b) => BASE62[b % 62]).join("");
}

/** Go's RFC 3339 with nanoseconds (trailing zeros trimmed), in UTC, as protobuf timestamps print. */
function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(
    /\.(\d*?)0*Z$/,
    (_m, digits: string) => digits ? `.${digits}Z` : "Z",
  );
}

/**
 * A duration of whole seconds as Vault v1.21's TTL warnings print it: Go's units without the
 * zero ones (`1h`, `2m`, `3m20s`, `775h58m1s`, `0s`).
 */
function vaultDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  const text = `${h ? `${h}h` : ""}${m ? `${m}m` : ""}${rest ? `${rest}s` : ""}`;
  return text || "0s";
}

/** Vault's `parseutil.ParseDurationSecond`: seconds as a number or string, or a Go duration. */
function parseDurationSeconds(value: unknown): number | undefined {
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value !== "string") return undefined;
  const text = value.trim();
  if (text === "") return 0;
  if (/^-?\d+$/.test(text)) return Number(text);
  const units: Record<string, number> = {
    ns: 1e-9,
    us: 1e-6,
    "µs": 1e-6,
    ms: 1e-3,
    s: 1,
    m: 60,
    h: 3600,
    d: 86400,
  };
  const part = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)/y;
  let total = 0;
  let index = 0;
  while (index < text.length) {
    part.lastIndex = index;
    const match = part.exec(text);
    if (!match) return undefined;
    total += Number(match[1]) * units[match[2]];
    index = part.lastIndex;
  }
  return total;
}

/** Go's `strconv.ParseBool`. */
function parseBool(text: string): boolean | undefined {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(text)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(text)) return false;
  return undefined;
}

/** mapstructure's weak decoding of a string (`TypeString`): numbers, booleans as `1`/`0`. */
function weakString(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "number") return String(value);
  if (typeof value === "boolean") return value ? "1" : "0";
  return "";
}

/** mapstructure's weak decoding of an integer (`cas`, versions). */
function weakInt(value: unknown): number | undefined {
  if (typeof value === "number" && Number.isInteger(value)) return value;
  if (typeof value === "string" && /^-?\d+$/.test(value.trim())) return Number(value.trim());
  if (typeof value === "boolean") return value ? 1 : 0;
  return undefined;
}

/**
 * Vault's `TypeCommaIntSlice`: `[1,2]`, `"1,2"` or `3`; a string is mapstructure's error for the
 * first item that is not an integer.
 */
function intSlice(value: unknown): number[] | string {
  if (value === undefined || value === null) return [];
  const items = Array.isArray(value)
    ? value
    : typeof value === "string"
    ? value.split(",").filter((s) => s.trim() !== "")
    : [value];
  const out: number[] = [];
  for (const [index, item] of items.entries()) {
    const n = weakInt(item);
    if (n === undefined) {
      return `cannot parse '[${index}]' as int: strconv.ParseInt: parsing ${
        JSON.stringify(String(item))
      }: invalid syntax`;
    }
    out.push(n);
  }
  return out;
}

/** mapstructure's kind of a JSON value as Vault decodes it (numbers are `json.Number` strings). */
function goKind(value: unknown): string {
  if (typeof value === "boolean") return "bool";
  if (Array.isArray(value)) return "slice";
  if (value !== null && typeof value === "object") return "map";
  return "string";
}

/**
 * mapstructure's error decoding `value` into a map for `field`, or undefined when it decodes
 * (objects; a list decodes item by item, `'[i]' expected a map`).
 */
function mapError(field: string, value: unknown): string | undefined {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) return undefined;
  let where = "";
  let got = value;
  if (Array.isArray(value)) {
    const index = value.findIndex((item) => goKind(item) !== "map");
    if (index < 0) return undefined;
    where = `[${index}]`;
    got = value[index];
  }
  return `error converting input for field "${field}": '${where}' expected a map, got '${
    goKind(got)
  }'`;
}

function normalizeNamespace(namespace: string | undefined): string {
  return (namespace ?? "").trim().replace(/^\/+|\/+$/g, "");
}

function trimSlashes(path: string): string {
  return path.replace(/^\/+|\/+$/g, "");
}

function matchesFilter(filter: FaultFilter | undefined, method: string, vaultPath: string) {
  if (!filter) return true;
  if (filter.method && filter.method.toUpperCase() !== method) return false;
  if (filter.path === undefined) return true;
  return typeof filter.path === "string"
    ? vaultPath.startsWith(trimSlashes(filter.path))
    : filter.path.test(vaultPath);
}

/** Whether a rule's path pattern matches `path` (`+` one segment, trailing `*` any suffix). */
function patternMatches(pattern: string, path: string): boolean {
  const glob = pattern.endsWith("*");
  const body = glob ? pattern.slice(0, -1) : pattern;
  const source = body.split("/").map((segment) =>
    segment === "+" ? "[^/]*" : segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
  ).join("/");
  return new RegExp(`^${source}${glob ? "[\\s\\S]*" : ""}$`).test(path);
}

/** Vault's ACL priority between two non-exact matching patterns: > 0 when `a` wins. */
function comparePriority(a: string, b: string): number {
  const firstWild = (p: string) => {
    const indices = [p.indexOf("+"), p.indexOf("*")].filter((i) => i >= 0);
    return indices.length ? Math.min(...indices) : p.length;
  };
  // 1. The first wildcard or glob occurring earlier means lower priority.
  if (firstWild(a) !== firstWild(b)) return firstWild(a) - firstWild(b);
  // 2. Ending in * means lower priority.
  const aGlob = a.endsWith("*"), bGlob = b.endsWith("*");
  if (aGlob !== bGlob) return aGlob ? -1 : 1;
  // 3. More + segments means lower priority.
  const plus = (p: string) => p.split("/").filter((s) => s === "+").length;
  if (plus(a) !== plus(b)) return plus(b) - plus(a);
  // 4. Shorter means lower priority.
  if (a.length !== b.length) return a.length - b.length;
  // 5. Lexicographically smaller means lower priority.
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Capabilities Vault's ACL grants on `path` from `rules` (exact rule first, then priority). */
function capabilitiesOf(rules: PolicyRule[], path: string, list: boolean): Set<string> {
  const merged = new Map<string, Set<string>>();
  for (const rule of rules) {
    const set = merged.get(rule.path) ?? new Set<string>();
    for (const capability of rule.capabilities) set.add(capability);
    merged.set(rule.path, set);
  }
  const isExact = (p: string) => !p.endsWith("*") && !p.split("/").includes("+");
  let chosen = merged.get(path);
  if (!chosen || !isExact(path)) chosen = undefined;
  if (!chosen && list && path.endsWith("/")) {
    const bare = merged.get(path.slice(0, -1));
    if (bare && isExact(path.slice(0, -1))) chosen = bare;
  }
  if (!chosen) {
    let best: string | undefined;
    for (const pattern of merged.keys()) {
      if (isExact(pattern) || !patternMatches(pattern, path)) continue;
      if (best === undefined || comparePriority(pattern, best) > 0) best = pattern;
    }
    if (best !== undefined) chosen = merged.get(best);
  }
  if (!chosen || chosen.has("deny")) return new Set();
  return chosen;
}

/** RFC 7386 JSON merge patch of `patch` into `target` (a new value; null members delete). */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) {
    return structuredClone(patch);
  }
  const out: Json = target !== null && typeof target === "object" && !Array.isArray(target)
    ? structuredClone(target as Json)
    : {};
  for (const [name, value] of Object.entries(patch as Json)) {
    if (value === null) delete out[name];
    else out[name] = mergePatch(out[name], value);
  }
  return out;
}

/** Claims of a JWT, or an empty object when it is not one. */
function jwtClaims(jwt: string): Json {
  try {
    const payload = jwt.split(".")[1] ?? "";
    const parsed = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
    return parsed && typeof parsed === "object" ? parsed : {};
  } catch {
    return {};
  }
}

/**
 * A fake Vault server. Start it with {@link FakeVault.start}, point the client under test at
 * {@link url} with {@link rootToken} or a token from {@link createToken}, and {@link close} it at
 * the end of the test.
 */
export class FakeVault {
  /** Base address, e.g. `http://127.0.0.1:40123` (no trailing slash). */
  readonly url: string;
  /** The root token: root namespace, `root` policy, never expires. */
  readonly rootToken: string;
  /** Every request received, in order. */
  readonly requests: RecordedRequest[] = [];
  /** Every Kubernetes login attempt, in order (see {@link kubernetesLogins} for the count). */
  readonly loginAttempts: KubernetesLogin[] = [];

  readonly #server: ReturnType<typeof createHttpServer>;
  readonly #sockets = new Set<Socket>();
  readonly #timers = new Set<{ timer: ReturnType<typeof setTimeout>; resolve: () => void }>();
  readonly #version: string;
  readonly #namespaces: boolean;
  readonly #kvMounts = new Map<string, KvMountOptions>();
  readonly #kubernetesMounts = new Set<string>(["kubernetes"]);
  readonly #kv = new Map<string, KvTable>();
  readonly #tokens = new Map<string, TokenState>();
  readonly #policies = new Map<string, Map<string, PolicyRule[]>>();
  readonly #roles = new Map<string, RoleState>();
  readonly #namespaceIds = new Map<string, string>();
  readonly #clusterId = crypto.randomUUID();
  #inlinePolicies = 0;
  #sealed = false;
  #initialized = true;
  #standby: { performance: boolean; redirectTo?: string } | undefined;
  #latencyMs = 0;
  #failures: Fault[] = [];
  #drops: Fault[] = [];
  #closed = false;

  private constructor(
    server: ReturnType<typeof createHttpServer>,
    url: string,
    options: FakeVaultOptions,
  ) {
    this.#server = server;
    this.url = url;
    this.#namespaces = options.namespaces ?? true;
    this.#version = options.version ?? (this.#namespaces ? "1.17.0+ent" : "1.17.0");
    for (const mount of ["secret", ...(options.kvMounts ?? [])]) {
      const config = typeof mount === "string" ? { path: mount } : mount;
      this.#kvMounts.set(trimSlashes(config.path), { ...config, path: trimSlashes(config.path) });
    }
    for (const mount of options.kubernetesMounts ?? []) {
      this.#kubernetesMounts.add(trimSlashes(mount));
    }
    this.rootToken = options.rootToken ?? `hvs.${randomString(24)}`;
    this.#tokens.set(this.rootToken, {
      id: this.rootToken,
      accessor: randomString(24),
      namespace: "",
      policies: ["root"],
      renewable: false,
      ttl: 0,
      leaseTtl: 0,
      maxTtl: 0,
      issuedAt: Date.now(),
      expireAt: null,
      displayName: "root",
      meta: null,
      path: "auth/token/root",
      renewals: 0,
      orphan: true,
    });
  }

  /** Starts a fake Vault on 127.0.0.1 on a free port (HTTPS when `options.tls` is given). */
  static async start(options: FakeVaultOptions = {}): Promise<FakeVault> {
    const server = options.tls
      ? createHttpsServer({ cert: options.tls.certPem, key: options.tls.keyPem })
      : createHttpServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const address = server.address();
    const port = typeof address === "object" && address ? address.port : 0;
    const vault = new FakeVault(
      server as ReturnType<typeof createHttpServer>,
      `${options.tls ? "https" : "http"}://127.0.0.1:${port}`,
      options,
    );
    server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      void vault.#handle(req, res);
    });
    server.on("connection", (socket: Socket) => {
      vault.#sockets.add(socket);
      socket.on("close", () => vault.#sockets.delete(socket));
    });
    return vault;
  }

  /** Stops the server, destroying open connections and pending (delayed) answers. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const pending of this.#timers) {
      clearTimeout(pending.timer);
      pending.resolve();
    }
    this.#timers.clear();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    (this.#server as { closeAllConnections?: () => void }).closeAllConnections?.();
    for (const socket of this.#sockets) socket.destroy();
    await closed;
  }

  // ---------------------------------------------------------------- tokens and policies

  /** Creates a token (a `hvs.` service token) and returns it. See {@link TokenOptions}. */
  createToken(options: TokenOptions = {}): string {
    const namespace = this.#ns(options.namespace);
    const policies = this.#policyNames(options.policies ?? ["root"], namespace, {
      noDefault: options.noDefaultPolicy,
    });
    const root = policies.includes("root");
    const ttl = options.ttl ?? (root ? 0 : SYSTEM_MAX_TTL);
    return this.#issueToken({
      namespace,
      policies,
      ttl,
      maxTtl: options.maxTtl ?? SYSTEM_MAX_TTL,
      renewable: options.renewable ?? true,
      displayName: options.displayName ?? "token",
      meta: options.meta ?? null,
      path: "auth/token/create",
      orphan: false,
    }).id;
  }

  /** Makes `token` expire now (it then gets 403 `permission denied`, as in Vault). */
  expireToken(token: string): void {
    const state = this.#tokens.get(token);
    if (!state) throw new Error(`FakeVault: unknown token ${token}`);
    state.expireAt = Date.now() - 1;
  }

  /** Makes every token but the root token expire now. */
  expireAllTokens(): void {
    const now = Date.now();
    for (const state of this.#tokens.values()) {
      if (state.id !== this.rootToken) state.expireAt = now - 1;
    }
  }

  /** Revokes `token` (removed: later use gets 403). */
  revokeToken(token: string): void {
    this.#tokens.delete(token);
  }

  /** What the server knows about `token`, or undefined if it does not exist. */
  lookupToken(token: string): TokenInfo | undefined {
    const state = this.#tokens.get(token);
    if (!state) return undefined;
    const now = Date.now();
    return {
      token: state.id,
      accessor: state.accessor,
      namespace: state.namespace,
      policies: [...state.policies],
      renewable: state.renewable,
      ttl: state.expireAt === null ? 0 : Math.max(0, Math.floor((state.expireAt - now) / 1000)),
      creationTtl: state.ttl,
      expireTime: state.expireAt === null ? null : new Date(state.expireAt),
      renewals: state.renewals,
      expired: state.expireAt !== null && state.expireAt <= now,
    };
  }

  /** Defines (or replaces) the named policy `name` in a namespace (root by default). */
  setPolicy(name: string, rules: PolicyRule[], options: { namespace?: string } = {}): void {
    const namespace = this.#ns(options.namespace);
    const table = this.#policies.get(namespace) ?? new Map<string, PolicyRule[]>();
    table.set(name.toLowerCase(), rules.map((r) => ({ ...r, path: r.path.replace(/^\/+/, "") })));
    this.#policies.set(namespace, table);
  }

  /** Configures a Kubernetes auth role `name`. */
  addKubernetesRole(name: string, options: KubernetesRoleOptions): void {
    const mount = trimSlashes(options.mount ?? "kubernetes");
    const namespace = this.#ns(options.namespace);
    this.#kubernetesMounts.add(mount);
    this.#roles.set(`${namespace}\0${mount}\0${name}`, {
      jwt: options.jwt,
      policies: this.#policyNames(options.policies ?? [], namespace, {}),
      ttl: options.ttl ?? SYSTEM_MAX_TTL,
      maxTtl: options.maxTtl ?? SYSTEM_MAX_TTL,
    });
  }

  /** Number of successful Kubernetes logins (tokens issued) so far. */
  get kubernetesLogins(): number {
    return this.loginAttempts.filter((login) => login.ok).length;
  }

  // ---------------------------------------------------------------- faults

  /** Seals Vault: every request but `sys/health` and `sys/seal-status` gets 503. */
  seal(): void {
    this.#sealed = true;
  }

  /** Unseals Vault. */
  unseal(): void {
    this.#sealed = false;
  }

  /** Marks Vault (not) initialised: `sys/health` says 501, other requests 503 (sealed). */
  setInitialized(initialized: boolean): void {
    this.#initialized = initialized;
  }

  /**
   * Makes this node a standby (`performance` for a performance standby). Requests other than
   * `sys/health`/`sys/seal-status` then get 429 (473 for a performance standby) `Vault is in
   * standby mode`, or, with `redirectTo`, a 307 redirect to that active node's address.
   */
  setStandby(
    standby: boolean,
    options: { performance?: boolean; redirectTo?: string } = {},
  ): void {
    this.#standby = standby
      ? { performance: options.performance ?? false, redirectTo: options.redirectTo }
      : undefined;
  }

  /**
   * The next `count` requests (matching `filter`) get `status` with `{"errors":[message]}`
   * (`{"errors":[]}` without a message), before any other processing.
   */
  failNext(count: number, status: number, message?: string, filter?: FaultFilter): void {
    this.#failures.push({ remaining: count, status, message, filter });
  }

  /** Delays every answer by `ms` milliseconds (0 to stop). */
  setLatency(ms: number): void {
    this.#latencyMs = ms;
  }

  /** Destroys the connection of the next `count` requests (matching `filter`) without answering. */
  dropConnections(count: number, filter?: FaultFilter): void {
    this.#drops.push({ remaining: count, filter });
  }

  /** Removes pending failures, drops, latency, standby and seal. */
  clearFaults(): void {
    this.#failures = [];
    this.#drops = [];
    this.#latencyMs = 0;
    this.#standby = undefined;
    this.#sealed = false;
  }

  // ---------------------------------------------------------------- direct KV access

  /**
   * A version (latest by default) of a KV secret, bypassing HTTP and policies; deleted and
   * destroyed versions are returned too. Undefined if the secret or version does not exist.
   */
  read(path: string, options: KvLocation & { version?: number } = {}): KvVersion | undefined {
    const key = this.#kvKey(path, options);
    if (!key) return undefined;
    const version = options.version ?? key.current;
    const state = key.versions.get(version);
    if (!state) return undefined;
    return {
      version,
      data: state.data === null ? {} : structuredClone(state.data),
      createdTime: state.created,
      deletionTime: state.deletion,
      destroyed: state.destroyed,
    };
  }

  /**
   * Writes a new version of a KV secret as an operator would (bypassing HTTP and policies, but
   * not check-and-set: `cas` is enforced if given). Returns the new version number.
   */
  write(
    path: string,
    data: Record<string, unknown>,
    options: KvLocation & { cas?: number } = {},
  ): number {
    const table = this.#table(options);
    const name = trimSlashes(path);
    const key = table.keys.get(name) ?? this.#newKey();
    if (options.cas !== undefined && options.cas !== key.current) {
      throw new Error("check-and-set parameter did not match the current version");
    }
    table.keys.set(name, key);
    const by = this.#actor(this.#tokens.get(this.rootToken)!, key.current ? "update" : "create");
    return this.#addVersion(table, key, structuredClone(data), by).version;
  }

  /** The metadata of a KV secret, or undefined if it has none. */
  readMetadata(path: string, options: KvLocation = {}): KvMetadata | undefined {
    const key = this.#kvKey(path, options);
    if (!key) return undefined;
    const versions: KvMetadata["versions"] = {};
    for (const [n, v] of key.versions) {
      versions[n] = { createdTime: v.created, deletionTime: v.deletion, destroyed: v.destroyed };
    }
    return {
      currentVersion: key.current,
      oldestVersion: key.oldest,
      maxVersions: key.maxVersions,
      casRequired: key.casRequired,
      createdTime: key.created,
      updatedTime: key.updated,
      versions,
    };
  }

  /** Soft-deletes the latest version (as `vault kv delete`). Returns false if nothing changed. */
  deleteLatest(path: string, options: KvLocation = {}): boolean {
    const key = this.#kvKey(path, options);
    const latest = key?.versions.get(key.current);
    if (!latest || latest.destroyed || latest.deletion !== "") return false;
    latest.deletion = rfc3339(Date.now());
    latest.deletedBy = key!.lastUpdatedBy = this.#actor(
      this.#tokens.get(this.rootToken)!,
      "delete",
    );
    return true;
  }

  /** Destroys the latest version (as `vault kv destroy`). Returns false if nothing changed. */
  destroyLatest(path: string, options: KvLocation = {}): boolean {
    const key = this.#kvKey(path, options);
    const latest = key?.versions.get(key.current);
    if (!latest || latest.destroyed) return false;
    latest.destroyed = true;
    latest.data = null;
    return true;
  }

  // ---------------------------------------------------------------- internals: state

  /** `created_by`/`deleted_by`/`last_updated_by` of a request made with `token`. */
  #actor(token: TokenState, operation: string): Actor {
    return {
      actor: token.displayName,
      operation,
      client_id: createHash("sha256").update(token.accessor).digest("base64"),
    };
  }

  /** The namespace a request or helper option selects ("" = root; always root without namespaces). */
  #ns(namespace: string | undefined): string {
    return this.#namespaces ? normalizeNamespace(namespace) : "";
  }

  #policyNames(
    policies: (string | PolicyRule)[],
    namespace: string,
    options: { noDefault?: boolean },
  ): string[] {
    const names: string[] = [];
    const inline: PolicyRule[] = [];
    for (const policy of policies) {
      if (typeof policy === "string") names.push(policy.toLowerCase());
      else inline.push(policy);
    }
    if (inline.length > 0) {
      const name = `inline-${++this.#inlinePolicies}`;
      this.setPolicy(name, inline, { namespace });
      names.push(name);
    }
    if (!names.includes("root") && !options.noDefault) names.push("default");
    return [...new Set(names)].sort();
  }

  #issueToken(fields: {
    namespace: string;
    policies: string[];
    ttl: number;
    maxTtl: number;
    renewable: boolean;
    displayName: string;
    meta: Record<string, string> | null;
    path: string;
    orphan: boolean;
  }): TokenState {
    let suffix = "";
    if (fields.namespace !== "") {
      let id = this.#namespaceIds.get(fields.namespace);
      if (!id) {
        id = randomString(5);
        this.#namespaceIds.set(fields.namespace, id);
      }
      suffix = `.${id}`;
    }
    const now = Date.now();
    const state: TokenState = {
      ...fields,
      leaseTtl: fields.ttl,
      id: `hvs.${randomString(24)}${suffix}`,
      accessor: `${randomString(24)}${suffix}`,
      issuedAt: now,
      expireAt: fields.ttl > 0 ? now + fields.ttl * 1000 : null,
      renewals: 0,
    };
    this.#tokens.set(state.id, state);
    return state;
  }

  #table(location: KvLocation): KvTable {
    const mount = trimSlashes(location.mount ?? "secret");
    const options = this.#kvMounts.get(mount);
    if (!options) throw new Error(`FakeVault: no KV v2 mount ${mount}`);
    const id = `${this.#ns(location.namespace)}\0${mount}`;
    let table = this.#kv.get(id);
    if (!table) {
      table = {
        config: {
          casRequired: options.casRequired ?? false,
          maxVersions: options.maxVersions ?? 0,
        },
        keys: new Map(),
      };
      this.#kv.set(id, table);
    }
    return table;
  }

  #kvKey(path: string, location: KvLocation): KeyState | undefined {
    return this.#table(location).keys.get(trimSlashes(path));
  }

  #newKey(): KeyState {
    return {
      current: 0,
      oldest: 0,
      maxVersions: 0,
      casRequired: false,
      created: "",
      updated: "",
      custom: null,
      lastUpdatedBy: null,
      versions: new Map(),
    };
  }

  /** The plugin's `KeyMetadata.AddVersion`, with its sliding window of max versions. */
  #addVersion(
    table: KvTable,
    key: KeyState,
    data: Json,
    by: Actor,
  ): { version: number; state: VersionState } {
    const created = rfc3339(Date.now());
    const state: VersionState = {
      data,
      created,
      deletion: "",
      destroyed: false,
      createdBy: by,
      deletedBy: null,
    };
    key.lastUpdatedBy = by;
    key.current++;
    key.versions.set(key.current, state);
    key.updated = created;
    if (key.created === "") key.created = created;
    const max = Math.max(key.maxVersions, table.config.maxVersions) || 10;
    if (key.current - key.oldest >= max) {
      const toDelete = key.current - max;
      for (let i = key.oldest; i < toDelete + 1; i++) key.versions.delete(i);
      key.oldest = toDelete + 1;
    }
    return { version: key.current, state };
  }

  // ---------------------------------------------------------------- internals: HTTP

  #delay(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const pending = {
        timer: setTimeout(() => {
          this.#timers.delete(pending);
          resolve();
        }, ms),
        resolve,
      };
      this.#timers.add(pending);
    });
  }

  #takeFault(faults: Fault[], method: string, vaultPath: string): Fault | undefined {
    const fault = faults.find((f) => f.remaining > 0 && matchesFilter(f.filter, method, vaultPath));
    if (fault) fault.remaining--;
    return fault;
  }

  #send(call: { res: ServerResponse; record: RecordedRequest }, status: number, body?: unknown) {
    call.record.status = status;
    if (call.res.headersSent || call.res.destroyed) return;
    const headers: Record<string, string> = { "cache-control": "no-store" };
    if (body === undefined) {
      call.res.writeHead(status, headers);
      call.res.end();
      return;
    }
    const text = typeof body === "string" ? body : `${JSON.stringify(body)}\n`;
    headers["content-type"] = "application/json";
    call.res.writeHead(status, headers);
    call.res.end(text);
  }

  #error(
    call: { res: ServerResponse; record: RecordedRequest },
    status: number,
    ...errors: string[]
  ) {
    this.#send(call, status, { errors });
  }

  #envelope(
    call: Call,
    fields: { data?: unknown; auth?: unknown; warnings?: string[] | null; mountType?: string },
  ): Json {
    return {
      request_id: call.requestId,
      lease_id: "",
      renewable: false,
      lease_duration: 0,
      data: fields.data ?? null,
      wrap_info: null,
      warnings: fields.warnings ?? null,
      auth: fields.auth ?? null,
      mount_type: fields.mountType ?? "",
    };
  }

  /** `logical.RespondWithStatusCode`: the envelope (with an empty mount_type) as a raw body. */
  #raw(call: Call, status: number, fields: { data?: unknown; warnings?: string[] }) {
    this.#send(call, status, JSON.stringify(this.#envelope(call, { ...fields, mountType: "" })));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const method = (req.method ?? "GET").toUpperCase();
    const header = (name: string) => {
      const value = req.headers[name];
      return Array.isArray(value) ? value[0] : value;
    };
    let tokenId = header("x-vault-token") || undefined;
    const authorization = header("authorization");
    if (!tokenId && authorization && /^bearer\s+/i.test(authorization)) {
      tokenId = authorization.replace(/^bearer\s+/i, "").trim() || undefined;
    }
    const namespace = normalizeNamespace(header("x-vault-namespace"));
    const record: RecordedRequest = {
      method,
      path: url.pathname,
      query: url.search.replace(/^\?/, ""),
      namespace,
      token: tokenId,
    };
    this.requests.push(record);
    const reply = { res, record };
    try {
      const chunks: Uint8Array[] = [];
      for await (const chunk of req) chunks.push(chunk as Uint8Array);
      const rawBody = Buffer.concat(chunks).toString("utf8");
      if (rawBody.trim() !== "") {
        try {
          record.body = JSON.parse(rawBody);
        } catch {
          // not JSON: answered below as Vault does
        }
      }
      let vaultPath = url.pathname.startsWith("/v1/") ? url.pathname.slice(4) : "";
      try {
        vaultPath = decodeURIComponent(vaultPath);
      } catch {
        // keep it encoded
      }

      if (this.#latencyMs > 0) await this.#delay(this.#latencyMs);
      if (this.#closed) return;
      if (this.#takeFault(this.#drops, method, vaultPath)) {
        req.socket.destroy();
        return;
      }
      const failure = this.#takeFault(this.#failures, method, vaultPath);
      if (failure) {
        return failure.message === undefined
          ? this.#error(reply, failure.status!)
          : this.#error(reply, failure.status!, failure.message);
      }
      if (!url.pathname.startsWith("/v1/")) {
        // Vault's HTTP mux: Go's http.NotFound.
        record.status = 404;
        res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
        res.end("404 page not found\n");
        return;
      }

      if (vaultPath === "sys/health") return this.#health(reply, method, url.searchParams);
      if (vaultPath === "sys/seal-status") {
        if (method !== "GET") return this.#error(reply, 405);
        return this.#sealStatus(reply);
      }
      if (this.#sealed || !this.#initialized) return this.#error(reply, 503, "Vault is sealed");
      if (this.#standby) {
        if (this.#standby.redirectTo) {
          res.setHeader("location", `${this.#standby.redirectTo.replace(/\/+$/, "")}${req.url}`);
          return this.#send(reply, 307);
        }
        return this.#error(
          reply,
          this.#standby.performance ? 473 : 429,
          "Vault is in standby mode",
        );
      }

      let op: Operation;
      switch (method) {
        case "GET": {
          op = "read";
          const list = url.searchParams.get("list");
          if (list !== null && list !== "") {
            const value = parseBool(list);
            if (value === undefined) return this.#error(reply, 400);
            if (value) op = "list";
          }
          break;
        }
        case "LIST":
          op = "list";
          break;
        case "POST":
        case "PUT":
          op = "update";
          break;
        case "DELETE":
          op = "delete";
          break;
        case "PATCH": {
          op = "patch";
          // Vault checks the media type before anything else (mime.ParseMediaType).
          const type = (header("content-type") ?? "").split(";")[0].trim().toLowerCase();
          if (type === "") return this.#error(reply, 400, "mime: no media type");
          if (type !== "application/merge-patch+json") {
            return this.#error(
              reply,
              415,
              `PATCH requires Content-Type of application/merge-patch+json, provided ${type}`,
            );
          }
          break;
        }
        case "OPTIONS":
        case "HEAD":
          // Vault's HeaderOperation: no route supports it, no policy grants it.
          op = "header";
          break;
        default:
          return this.#error(reply, 405);
      }
      if (op === "list" && !vaultPath.endsWith("/")) vaultPath += "/";

      let body: Json = {};
      if ((op === "update" || op === "patch") && rawBody.trim() !== "") {
        let parsed: unknown;
        try {
          parsed = JSON.parse(rawBody);
        } catch {
          // Go's decoder error text differs from JavaScript's; the status is Vault's.
          const bad = rawBody.trim().replace(/^[{\s]+/, "").charAt(0);
          return this.#error(
            reply,
            500,
            `invalid character '${bad}' looking for beginning of value`,
          );
        }
        if (parsed !== null && (typeof parsed !== "object" || Array.isArray(parsed))) {
          const kind = Array.isArray(parsed) ? "array" : typeof parsed;
          return this.#error(
            reply,
            400,
            `error parsing JSON: failed to parse JSON input: json: cannot unmarshal ${kind} into Go value of type map[string]interface {}`,
          );
        }
        body = (parsed ?? {}) as Json;
      }

      const call: Call = {
        req,
        res,
        record,
        requestId: crypto.randomUUID(),
        vaultPath,
        namespace: this.#ns(namespace),
        tokenId,
        op,
        query: url.searchParams,
        body,
      };
      this.#dispatch(call);
    } catch (error) {
      this.#error(reply, 500, (error as Error).message);
    }
  }

  #dispatch(call: Call): void {
    const route = this.#route(call);
    if (!route?.unauthenticated) {
      if (!call.tokenId) return this.#error(call, 403, "permission denied");
      const token = this.#tokens.get(call.tokenId);
      const now = Date.now();
      if (!token || (token.expireAt !== null && token.expireAt <= now)) {
        return this.#error(call, 403, INVALID_TOKEN);
      }
      if (
        !(token.namespace === "" || call.namespace === token.namespace ||
          call.namespace.startsWith(`${token.namespace}/`))
      ) {
        return this.#error(call, 403, "permission denied");
      }
      call.token = token;
      if (route?.exists && call.op === "update") call.op = route.exists() ? "update" : "create";
      if (!this.#allowed(token, call)) return this.#error(call, 403, ACL_DENIED);
    } else if (!route.ops.includes(call.op)) {
      // Unauthenticated paths (logins) answer without go-multierror's wrapping.
      return this.#error(call, 405, "unsupported operation");
    }
    if (!route) {
      return this.#error(
        call,
        404,
        `no handler for route ${JSON.stringify(call.vaultPath)}. route entry not found.`,
      );
    }
    if (!route.ops.includes(call.op)) return this.#error(call, 405, UNSUPPORTED_OPERATION);
    route.handle(call);
  }

  #allowed(token: TokenState, call: Call): boolean {
    if (token.policies.includes("root")) return true;
    const relative = call.namespace === token.namespace
      ? call.vaultPath
      : `${
        call.namespace.slice(token.namespace ? token.namespace.length + 1 : 0)
      }/${call.vaultPath}`;
    const table = this.#policies.get(token.namespace);
    const rules: PolicyRule[] = [];
    for (const name of token.policies) {
      const policy = table?.get(name) ?? (name === "default" ? DEFAULT_POLICY : undefined);
      if (policy) rules.push(...policy);
    }
    return capabilitiesOf(rules, relative, call.op === "list").has(call.op);
  }

  #route(call: Call): Route | undefined {
    const path = call.vaultPath;
    if (path === "auth/token/lookup-self") {
      return { ops: ["read"], handle: (c) => this.#lookupSelf(c) };
    }
    if (path === "auth/token/renew-self") {
      return { ops: ["update"], handle: (c) => this.#renewSelf(c) };
    }
    if (path === "auth/token/revoke-self") {
      return {
        ops: ["update"],
        handle: (c) => {
          this.#tokens.delete(c.token!.id);
          this.#send(c, 204);
        },
      };
    }
    const login = /^auth\/(.+)\/login$/.exec(path);
    if (login && this.#kubernetesMounts.has(login[1])) {
      return { ops: ["update"], unauthenticated: true, handle: (c) => this.#login(c, login[1]) };
    }
    const slash = path.indexOf("/");
    const mount = slash < 0 ? path : path.slice(0, slash);
    if (this.#kvMounts.has(mount)) {
      return this.#kvRoute(call, mount, slash < 0 ? "" : path.slice(slash + 1));
    }
    return undefined;
  }

  // ---------------------------------------------------------------- sys

  #health(
    reply: { res: ServerResponse; record: RecordedRequest },
    method: string,
    query: URLSearchParams,
  ) {
    if (method !== "GET" && method !== "HEAD") return this.#error(reply, 405);
    const flag = (name: string): boolean | null => {
      if (!query.has(name)) return false;
      const value = parseBool(query.get(name) ?? "");
      return value === undefined ? null : value;
    };
    const code = (name: string, fallback: number): number | null => {
      if (!query.has(name)) return fallback;
      const value = Number.parseInt(query.get(name) ?? "", 10);
      return Number.isNaN(value) ? null : value;
    };
    const standbyOk = flag("standbyok");
    const perfStandbyOk = flag("perfstandbyok");
    const codes = {
      uninit: code("uninitcode", 501),
      sealed: code("sealedcode", 503),
      standby: code("standbycode", 429),
      active: code("activecode", 200),
      perf: code("performancestandbycode", 473),
    };
    if (standbyOk === null || perfStandbyOk === null || Object.values(codes).includes(null)) {
      return this.#error(reply, 400);
    }
    const sealed = this.#sealed || !this.#initialized;
    const standby = this.#standby !== undefined;
    const perfStandby = this.#standby?.performance ?? false;
    let status = codes.active!;
    if (!this.#initialized) status = codes.uninit!;
    else if (sealed) status = codes.sealed!;
    else if (perfStandby) status = perfStandbyOk ? status : codes.perf!;
    else if (standby) status = standbyOk ? status : codes.standby!;
    const body: Json = {
      initialized: this.#initialized,
      sealed,
      // A sealed Vault reports itself standby, and its replication modes unknown.
      standby: standby || sealed,
      performance_standby: perfStandby,
      replication_performance_mode: sealed ? "unknown" : "disabled",
      replication_dr_mode: sealed ? "unknown" : "disabled",
      server_time_utc: Math.floor(Date.now() / 1000),
      version: this.#version,
      enterprise: false,
      ...(sealed ? {} : { cluster_name: "vault-cluster-fake", cluster_id: this.#clusterId }),
      echo_duration_ms: 0,
      clock_skew_ms: 0,
      replication_primary_canary_age_ms: 0,
    };
    if (method === "HEAD") {
      reply.res.setHeader("content-type", "application/json");
      return this.#send(reply, status);
    }
    this.#send(reply, status, body);
  }

  #sealStatus(reply: { res: ServerResponse; record: RecordedRequest }) {
    const sealed = this.#sealed || !this.#initialized;
    this.#send(reply, 200, {
      type: "shamir",
      initialized: this.#initialized,
      sealed,
      t: 1,
      n: 1,
      progress: 0,
      nonce: "",
      version: this.#version,
      build_date: "2024-06-10T10:11:34Z",
      migration: false,
      ...(sealed ? {} : { cluster_name: "vault-cluster-fake", cluster_id: this.#clusterId }),
      recovery_seal: false,
      storage_type: "inmem",
    });
  }

  // ---------------------------------------------------------------- token store

  #authBlock(token: TokenState, leaseDuration: number): Json {
    return {
      client_token: token.id,
      accessor: token.accessor,
      policies: [...token.policies],
      token_policies: [...token.policies],
      metadata: token.meta,
      lease_duration: leaseDuration,
      renewable: token.renewable,
      entity_id: "",
      token_type: "service",
      orphan: token.orphan,
      mfa_requirement: null,
      num_uses: 0,
    };
  }

  #lookupSelf(call: Call): void {
    const token = call.token!;
    const root = token.path === "auth/token/root";
    const now = Date.now();
    this.#send(
      call,
      200,
      this.#envelope(call, {
        mountType: "token",
        data: {
          accessor: token.accessor,
          creation_time: Math.floor(token.issuedAt / 1000),
          creation_ttl: token.ttl,
          display_name: token.displayName,
          entity_id: "",
          expire_time: token.expireAt === null ? null : rfc3339(token.expireAt),
          explicit_max_ttl: token.maxTtl === SYSTEM_MAX_TTL || token.ttl === 0 ? 0 : token.maxTtl,
          id: token.id,
          // The root token made by sys/init has neither issue_time nor renewable.
          ...(root ? {} : { issue_time: rfc3339(token.issuedAt) }),
          ...(token.lastRenewal === undefined ? {} : {
            last_renewal: rfc3339(token.lastRenewal),
            last_renewal_time: Math.floor(token.lastRenewal / 1000),
          }),
          meta: token.meta,
          num_uses: 0,
          orphan: token.orphan,
          path: token.path,
          policies: [...token.policies],
          ...(root ? {} : { renewable: token.renewable }),
          ttl: token.expireAt === null ? 0 : Math.max(0, Math.floor((token.expireAt - now) / 1000)),
          type: "service",
        },
      }),
    );
  }

  #renewSelf(call: Call): void {
    const token = call.token!;
    if (token.expireAt === null) return this.#error(call, 400, "invalid lease ID");
    if (!token.renewable) return this.#error(call, 400, "lease is not renewable");
    let increment = 0;
    const raw = call.body.increment;
    if (raw !== undefined && raw !== null) {
      const parsed = parseDurationSeconds(raw);
      const invalid = (why: string) =>
        this.#error(
          call,
          400,
          `Field validation failed: error converting input for field "increment": ${why}`,
        );
      if (parsed === undefined) {
        return invalid(`time: invalid duration ${JSON.stringify(String(raw))}`);
      }
      if (parsed < 0) return invalid(`cannot provide negative value '${String(raw)}'`);
      increment = Math.floor(parsed);
    }
    // sdk/logical CalculateTTL: whole seconds (now and issue time truncated), the max TTL is the
    // explicit one if lower than the system's, no increment renews for the lease's last TTL.
    const now = Date.now();
    const nowSeconds = Math.floor(now / 1000);
    const maxTtl = Math.min(SYSTEM_MAX_TTL, token.maxTtl > 0 ? token.maxTtl : SYSTEM_MAX_TTL);
    let ttl = increment > 0 ? increment : token.leaseTtl > 0 ? token.leaseTtl : SYSTEM_MAX_TTL;
    const maxValid = Math.floor(token.issuedAt / 1000) + maxTtl - nowSeconds;
    if (maxValid < 0) return this.#error(call, 400, "past the max TTL, cannot renew");
    const warnings: string[] = [];
    if (maxValid - ttl < 0) {
      warnings.push(
        `TTL of ${JSON.stringify(vaultDuration(ttl))} exceeded the effective max_ttl of ${
          JSON.stringify(vaultDuration(maxValid))
        }; TTL value is capped accordingly`,
      );
      ttl = maxValid;
    }
    token.leaseTtl = ttl;
    token.expireAt = now + ttl * 1000;
    token.lastRenewal = now;
    token.renewals++;
    this.#send(
      call,
      200,
      this.#envelope(call, {
        mountType: "token",
        auth: this.#authBlock(token, Math.floor(ttl)),
        warnings: warnings.length ? warnings : null,
      }),
    );
  }

  // ---------------------------------------------------------------- Kubernetes auth

  #login(call: Call, mount: string): void {
    const role = weakString(call.body.role);
    const jwt = weakString(call.body.jwt);
    const attempt: KubernetesLogin = { mount, role, namespace: call.namespace, jwt, ok: false };
    this.loginAttempts.push(attempt);
    if (role === "") return this.#error(call, 400, "missing role");
    if (jwt === "") return this.#error(call, 400, "missing jwt");
    const state = this.#roles.get(`${call.namespace}\0${mount}\0${role}`);
    if (!state) return this.#error(call, 400, `invalid role name ${JSON.stringify(role)}`);
    const accepted = typeof state.jwt === "string" ? state.jwt === jwt : state.jwt(jwt);
    if (!accepted) return this.#error(call, 403, "permission denied");
    const claims = jwtClaims(jwt);
    const k8s = (claims["kubernetes.io"] ?? {}) as Json;
    const sa = (k8s.serviceaccount ?? {}) as Json;
    const saName = String(
      sa.name ?? claims["kubernetes.io/serviceaccount/service-account.name"] ?? "",
    );
    const saNamespace = String(
      k8s.namespace ?? claims["kubernetes.io/serviceaccount/namespace"] ?? "",
    );
    const saUid = String(
      sa.uid ?? claims["kubernetes.io/serviceaccount/service-account.uid"] ?? "",
    );
    const token = this.#issueToken({
      namespace: call.namespace,
      policies: state.policies.includes("default")
        ? state.policies
        : [...state.policies, "default"].sort(),
      ttl: state.ttl,
      maxTtl: state.maxTtl,
      renewable: true,
      displayName: `${mount}-${saNamespace}-${saName}`,
      meta: {
        role,
        service_account_name: saName,
        service_account_namespace: saNamespace,
        service_account_secret_name: "",
        service_account_uid: saUid,
      },
      path: `auth/${mount}/login`,
      orphan: true,
    });
    attempt.ok = true;
    this.#send(
      call,
      200,
      this.#envelope(call, { auth: this.#authBlock(token, state.ttl) }),
    );
  }

  // ---------------------------------------------------------------- KV version 2

  #kvRoute(call: Call, mount: string, sub: string): Route {
    const table = this.#table({ mount, namespace: call.namespace });
    const match = /^(data|metadata|delete|undelete|destroy)\/([\s\S]*)$/.exec(sub);
    const api = match?.[1];
    const key = match?.[2] ?? "";
    const ok = (c: Call, data: unknown) =>
      this.#send(c, 200, this.#envelope(c, { data, mountType: "kv" }));
    if (sub === "config") {
      return {
        ops: ["read", "update"],
        handle: (c) => {
          if (c.op === "read") {
            return ok(c, {
              cas_required: table.config.casRequired,
              delete_version_after: "0s",
              max_versions: table.config.maxVersions,
            });
          }
          if (c.body.cas_required !== undefined) {
            table.config.casRequired = Boolean(c.body.cas_required);
          }
          const max = weakInt(c.body.max_versions);
          if (max !== undefined) table.config.maxVersions = max;
          this.#send(c, 204);
        },
      };
    }
    if (api === "data" && key !== "" && !key.endsWith("/")) {
      return {
        ops: ["read", "create", "update", "delete", "patch"],
        exists: () => table.keys.has(key),
        handle: (c) => {
          if (c.op === "read") return this.#kvRead(c, table, key);
          if (c.op === "delete") {
            const state = table.keys.get(key);
            const latest = state?.versions.get(state.current);
            if (latest && !latest.destroyed && latest.deletion === "") {
              latest.deletion = rfc3339(Date.now());
              latest.deletedBy = state!.lastUpdatedBy = this.#actor(c.token!, "delete");
            }
            return this.#send(c, 204);
          }
          if (c.op === "patch") return this.#kvPatch(c, table, key);
          this.#kvWrite(c, table, key);
        },
      };
    }
    if (api === "metadata") {
      return {
        ops: ["read", "list", "create", "update", "delete"],
        exists: () => table.keys.has(key),
        handle: (c) => {
          const state = table.keys.get(key);
          switch (c.op) {
            case "read":
              if (!state) return this.#error(c, 404);
              return ok(c, this.#metadataBody(state));
            case "list": {
              const keys = new Set<string>();
              for (const name of table.keys.keys()) {
                if (!name.startsWith(key)) continue;
                const rest = name.slice(key.length);
                const cut = rest.indexOf("/");
                keys.add(cut < 0 ? rest : rest.slice(0, cut + 1));
              }
              keys.delete("");
              if (keys.size === 0) return this.#error(c, 404);
              return ok(c, { keys: [...keys].sort() });
            }
            case "delete":
              table.keys.delete(key);
              return this.#send(c, 204);
            default:
              return this.#metadataWrite(c, table, key);
          }
        },
      };
    }
    if (api === "delete" || api === "undelete" || api === "destroy") {
      return {
        ops: ["update"],
        handle: (c) => {
          const versions = intSlice(c.body.versions);
          if (typeof versions === "string") {
            return this.#error(
              c,
              400,
              `Field validation failed: error converting input for field "versions": 1 error(s) decoding:\n\n* ${versions}`,
            );
          }
          if (versions.length === 0) {
            return this.#error(
              c,
              400,
              api === "destroy" ? "no version number provided" : "No version number provided",
            );
          }
          const state = table.keys.get(key);
          if (!state) return this.#send(c, 204);
          const now = Date.now();
          for (const n of versions) {
            const v = state.versions.get(n);
            if (!v || v.destroyed) continue;
            if (api === "destroy") {
              v.destroyed = true;
              v.data = null;
            } else if (api === "undelete") {
              v.deletion = "";
              v.deletedBy = null;
              state.lastUpdatedBy = this.#actor(c.token!, "undelete");
            } else if (v.deletion === "" || Date.parse(v.deletion) > now) {
              v.deletion = rfc3339(now);
              v.deletedBy = state.lastUpdatedBy = this.#actor(c.token!, c.op);
            }
          }
          this.#send(c, 204);
        },
      };
    }
    // The plugin's catch-all path.
    return {
      ops: ["read", "list", "create", "update", "delete"],
      handle: (c) => {
        if (["metadata", "data", "delete", "undelete", "destroy"].includes(sub)) {
          return this.#raw(c, 404, {
            warnings: ["Non-listing operations on the root of a K/V v2 mount are not supported."],
          });
        }
        const verb = ({
          read: "get",
          list: "list",
          create: "put",
          update: "put",
          delete: "delete",
          patch: "patch",
        } as Record<string, string>)[c.op];
        this.#raw(c, 404, {
          warnings: [
            "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the Vault CLI, use 'vault kv " +
            `${verb}' for this operation.`,
          ],
        });
      },
    };
  }

  #versionMetadata(state: KeyState, version: number, v: VersionState): Json {
    return {
      created_time: v.created,
      custom_metadata: state.custom,
      deletion_time: v.deletion,
      destroyed: v.destroyed,
      version,
    };
  }

  #kvRead(call: Call, table: KvTable, key: string): void {
    const state = table.keys.get(key);
    if (!state) return this.#error(call, 404);
    let version = state.current;
    const param = call.query.get("version");
    if (param !== null && param !== "") {
      const n = weakInt(param);
      if (n === undefined) {
        return this.#error(
          call,
          400,
          `Field validation failed: error converting input for field "version": cannot parse '' as int: strconv.ParseInt: parsing ${
            JSON.stringify(param)
          }: invalid syntax`,
        );
      }
      if (n > 0) version = n;
    }
    const v = state.versions.get(version);
    if (!v) return this.#error(call, 404);
    const metadata = this.#versionMetadata(state, version, v);
    if ((v.deletion !== "" && Date.parse(v.deletion) <= Date.now()) || v.destroyed) {
      return this.#raw(call, 404, { data: { data: null, metadata } });
    }
    this.#send(
      call,
      200,
      this.#envelope(call, { data: { data: structuredClone(v.data), metadata }, mountType: "kv" }),
    );
  }

  /** `data` and `options` of a write or patch body, or the error Vault answers (400). */
  #kvBody(call: Call): { data: Json; cas: unknown } | string {
    let data = call.body.data;
    if (data === undefined || data === null) return "no data provided";
    const dataError = mapError("data", data);
    if (dataError) return dataError;
    if (Array.isArray(data)) data = Object.assign({}, ...data);
    const options = call.body.options;
    if (options !== undefined && options !== null) {
      const optionsError = mapError("options", options);
      if (optionsError) return optionsError;
    }
    const merged = Array.isArray(options) ? Object.assign({}, ...options) : options;
    const cas = merged && "cas" in (merged as Json) ? (merged as Json).cas : undefined;
    return { data: data as Json, cas };
  }

  /** The check-and-set error for writing over `state`, if any. */
  #casError(table: KvTable, state: KeyState, cas: unknown): string | undefined {
    if (cas !== undefined) {
      const n = weakInt(cas);
      if (n === undefined) return "error parsing check-and-set parameter";
      if (n !== state.current) return "check-and-set parameter did not match the current version";
    } else if (table.config.casRequired || state.casRequired) {
      return "check-and-set parameter required for this call";
    }
    return undefined;
  }

  #kvWrite(call: Call, table: KvTable, key: string): void {
    const parsed = this.#kvBody(call);
    if (typeof parsed === "string") return this.#error(call, 400, parsed);
    const state = table.keys.get(key) ?? this.#newKey();
    const casError = this.#casError(table, state, parsed.cas);
    if (casError) return this.#error(call, 400, casError);
    table.keys.set(key, state);
    this.#kvWritten(call, table, state, structuredClone(parsed.data));
  }

  /** PATCH (JSON merge patch, RFC 7386) of the current version's data into a new version. */
  #kvPatch(call: Call, table: KvTable, key: string): void {
    const parsed = this.#kvBody(call);
    if (typeof parsed === "string") return this.#error(call, 400, parsed);
    const state = table.keys.get(key);
    if (!state || state.current === 0) return this.#send(call, 404);
    const casError = this.#casError(table, state, parsed.cas);
    if (casError) return this.#error(call, 400, casError);
    const current = state.versions.get(state.current);
    if (!current || current.destroyed || current.deletion !== "") {
      return this.#raw(call, 404, {
        data: current ? this.#versionMetadata(state, state.current, current) : null,
      });
    }
    this.#kvWritten(call, table, state, mergePatch(current.data ?? {}, parsed.data) as Json);
  }

  #kvWritten(call: Call, table: KvTable, state: KeyState, data: Json): void {
    const by = this.#actor(call.token!, call.op);
    const { version, state: v } = this.#addVersion(table, state, data, by);
    this.#send(
      call,
      200,
      this.#envelope(call, {
        data: {
          created_time: v.created,
          custom_metadata: state.custom,
          deletion_time: v.deletion,
          destroyed: v.destroyed,
          version,
        },
        mountType: "kv",
      }),
    );
  }

  #metadataBody(state: KeyState): Json {
    const versions: Json = {};
    for (const [n, v] of [...state.versions].sort((a, b) => a[0] - b[0])) {
      versions[String(n)] = {
        created_by: v.createdBy,
        created_time: v.created,
        deleted_by: v.deletedBy,
        deletion_time: v.deletion,
        destroyed: v.destroyed,
      };
    }
    return {
      cas_required: state.casRequired,
      created_time: state.created,
      current_version: state.current,
      custom_metadata: state.custom,
      delete_version_after: "0s",
      last_updated_by: state.lastUpdatedBy,
      max_versions: state.maxVersions,
      oldest_version: state.oldest,
      updated_time: state.updated,
      versions,
    };
  }

  #metadataWrite(call: Call, table: KvTable, key: string): void {
    if (key === "") return this.#error(call, 400, "missing path");
    const { max_versions: max, cas_required: cas, custom_metadata: custom } = call.body;
    if (max === undefined && cas === undefined && custom === undefined) {
      return this.#send(call, 204);
    }
    let state = table.keys.get(key);
    if (!state) {
      const now = rfc3339(Date.now());
      state = { ...this.#newKey(), created: now, updated: now };
      table.keys.set(key, state);
    }
    if (max !== undefined) state.maxVersions = weakInt(max) ?? 0;
    if (cas !== undefined) state.casRequired = Boolean(cas);
    if (custom !== undefined && custom !== null && typeof custom === "object") {
      state.custom = Object.fromEntries(
        Object.entries(custom as Json).map(([k, v]) => [k, String(v)]),
      );
    }
    this.#send(call, 204);
  }
}
