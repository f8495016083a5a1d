/**
 * A fake Kubernetes API server for tests, faithful to the real REST semantics where sentry and
 * kubectl can observe them (docs/compatibility.md#kubernetes-mode and #token-validators):
 *
 * - HTTPS on 127.0.0.1 (a CA and a serving certificate for IP:127.0.0.1 / DNS:localhost made
 *   with the `openssl` CLI), or plain HTTP with `{ tls: false }`; bearer-token authentication
 *   (401 Status `Unauthorized` otherwise; off by default over plain HTTP, where client-go sends
 *   no token).
 * - Namespaced `secrets`, `configmaps`, `pods`, `serviceaccounts` (core v1), the custom
 *   resource `configurations.dapr.io/v1alpha1` and cluster-scoped `namespaces`: GET, LIST
 *   (label / field selectors, `limit` / `continue`), POST, PUT (optimistic concurrency on
 *   `metadata.resourceVersion`), PATCH (merge, strategic merge treated as merge, JSON patch,
 *   server-side apply treated as merge), DELETE and delete-collection, `dryRun=All`, with the
 *   real Status bodies for failures. Request bodies may be JSON, YAML or (for the kinds
 *   kubectl's typed clients send that way) Kubernetes protobuf; answers are always JSON.
 * - Watches (`?watch=1`) streaming newline-delimited events after a resourceVersion, with a
 *   bounded history: an older resourceVersion gets one ERROR event (410 Expired) and the end of
 *   the stream, as from the real watch cache; `timeoutSeconds` ends the stream.
 * - TokenReview (`authentication.k8s.io/v1`) for registered projected service-account tokens,
 *   with the real audience intersection rules.
 * - Discovery (`/version`, `/api`, `/api/v1`, `/apis`, …), server-side Table output and a
 *   minimal OpenAPI v3, enough for the real `kubectl` (get [-w] / create / apply [--server-side]
 *   / replace / patch / edit / delete / wait).
 * - Fault injection: {@link FakeKubeApiServer.failNext}, {@link FakeKubeApiServer.setLatency},
 *   {@link FakeKubeApiServer.dropWatches}, {@link FakeKubeApiServer.setDown},
 *   {@link FakeKubeApiServer.expireHistory}; and a request log.
 *
 * - RBAC for tokens given to {@link FakeKubeApiServer.restrictToken} (tests/fakes/kube-rbac.ts:
 *   the rules of Roles and ClusterRoles bound to a service account, with `resourceNames`);
 *   every other valid token may do everything.
 *
 * Not modelled: admission (a namespace is created
 * on first use instead of being required), managedFields and field ownership, schema
 * validation (`fieldValidation` is accepted and ignored), graceful deletion and finalizers,
 * subresources (`/status`, `/token`, …), strategic-merge list semantics (lists are replaced),
 * consistent snapshots for paginated lists, OpenAPI v2 (404; kubectl copes), protobuf answers.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { stringify as stringifyYaml } from "yaml";
import { opensslServerTls } from "../helpers/openssl.ts";
import { authorize, type RbacGrant } from "./kube-rbac.ts";
import {
  apiVersionOf,
  badRequest,
  decodeProtobuf,
  KubeApiError,
  type KubeObject,
  type KubeStatus,
  KubeStore,
  notFound,
  parseBody,
  parseFieldSelector,
  parseLabelSelector,
  type PatchType,
  RESOURCE_TYPES,
  type ResourceType,
  resourceType,
  type Selector,
  type StoreEvent,
} from "./kube-store.ts";

export type { KubeObject, KubeStatus, ObjectMeta, ResourceType } from "./kube-store.ts";
export { clone, KubeApiError, qualifiedName, RESOURCE_TYPES } from "./kube-store.ts";

/** Options of {@link FakeKubeApiServer.start}. */
export interface FakeKubeApiServerOptions {
  /** Serve HTTPS with a fresh CA (default true); false serves plain HTTP. */
  tls?: boolean;
  /** The valid bearer tokens (default: one random token, {@link FakeKubeApiServer.adminToken}). */
  tokens?: string[];
  /**
   * Whether requests need a valid bearer token (default: true over TLS; false over plain
   * HTTP, like the old insecure port, because client-go sends no bearer token over plain HTTP).
   */
  requireAuth?: boolean;
  /** How many past changes watches can resume from (default 100). */
  historyLimit?: number;
  /** The API server's own audiences (default `["https://kubernetes.default.svc.cluster.local"]`). */
  apiAudiences?: string[];
  /**
   * TokenReview also checks that the token's pod exists (with its uid) and its service account
   * exists, as the real server does for bound tokens (default false: registration suffices).
   */
  validateTokenBinding?: boolean;
  /** Port on 127.0.0.1 (default 0: a free one). */
  port?: number;
}

/** One request the server received. */
export interface LoggedRequest {
  /** Milliseconds since the epoch when it arrived. */
  time: number;
  method: string;
  /** URL path, e.g. `/api/v1/namespaces/default/secrets/x`. */
  path: string;
  /** Query parameters. */
  query: Record<string, string>;
  contentType: string | null;
  accept: string | null;
  /** The bearer token sent, if any. */
  token: string | null;
  /** The parsed request body, if any. */
  body?: unknown;
  /** The HTTP status answered (0 while a watch or a delayed request is still open). */
  status: number;
  /** Whether it was a watch. */
  watch: boolean;
}

/** Narrows {@link FakeKubeApiServer.failNext} to some requests. */
export interface RequestMatch {
  /** HTTP method (case-insensitive). */
  method?: string;
  /** Exact path, or a pattern tested against the path. */
  path?: string | RegExp;
  /** Only watches (true) or only non-watches (false). */
  watch?: boolean;
}

/** A projected service-account token's identity, for TokenReview. */
export interface ServiceAccountTokenInfo {
  namespace: string;
  serviceAccount: string;
  /** The service account's uid (random by default). */
  serviceAccountUid?: string;
  podName?: string;
  podUid?: string;
  nodeName?: string;
  /** Audiences the token was issued for (default: the API server's audiences). */
  audiences?: string[];
  /** When the token stops being accepted (never by default). */
  expiresAt?: Date;
  /** The token id, reported as the `authentication.kubernetes.io/credential-id` extra. */
  jti?: string;
}

/** Options of {@link FakeKubeApiServer.serviceAccountJwt}. */
export interface ServiceAccountJwtOptions extends ServiceAccountTokenInfo {
  /** `iss` (default `https://kubernetes.default.svc.cluster.local`). */
  issuer?: string;
  /** Lifetime in seconds from now (default 3600); sets `exp` and {@link expiresAt}. */
  expirationSeconds?: number;
}

/** The claims of a projected service-account token. */
export interface ServiceAccountClaims {
  iss: string;
  sub: string;
  aud: string[];
  exp: number;
  iat: number;
  nbf: number;
  jti: string;
  "kubernetes.io": {
    namespace: string;
    node?: { name: string; uid: string };
    pod?: { name: string; uid: string };
    serviceaccount: { name: string; uid: string };
  };
}

const DEFAULT_AUDIENCES = ["https://kubernetes.default.svc.cluster.local"];
const ADMIN_USER = "kubernetes-admin";

function base64url(bytes: Uint8Array | string): string {
  return Buffer.from(bytes).toString("base64url");
}

/**
 * Encodes `claims` as a well-formed but unsigned-in-effect JWT (`header.payload.signature`,
 * base64url; header `{"alg":"RS256","kid":…}`, signature random bytes). The fake's TokenReview
 * recognises tokens by registration, not by signature.
 */
export function makeServiceAccountJwt(claims: ServiceAccountClaims): string {
  const header = { alg: "RS256", kid: "fake-kube-apiserver" };
  return [
    base64url(JSON.stringify(header)),
    base64url(JSON.stringify(claims)),
    base64url(crypto.getRandomValues(new Uint8Array(256))),
  ].join(".");
}

/** Go's `%q` of a string slice: `["a" "b"]`. */
function goQuoteList(values: string[]): string {
  return `[${values.map((value) => JSON.stringify(value)).join(" ")}]`;
}

/** A request body: Kubernetes protobuf, YAML or JSON, by content type. */
function decodeBody(raw: Uint8Array, contentType: string): unknown {
  if (contentType.includes("protobuf")) return decodeProtobuf(raw);
  return parseBody(new TextDecoder().decode(raw), contentType);
}

function jsonResponse(code: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status: code,
    headers: {
      "content-type": "application/json",
      "cache-control": "no-cache, private",
      ...headers,
    },
  });
}

function statusResponse(status: KubeStatus, headers: Record<string, string> = {}): Response {
  return jsonResponse(status.code, status, headers);
}

const REASONS: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  405: "MethodNotAllowed",
  409: "Conflict",
  410: "Expired",
  415: "UnsupportedMediaType",
  422: "Invalid",
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServiceUnavailable",
  504: "Timeout",
};

const NOT_FOUND_PATH = new KubeApiError(
  404,
  "NotFound",
  "the server could not find the requested resource",
  {},
);

const METHOD_NOT_ALLOWED = new KubeApiError(
  405,
  "MethodNotAllowed",
  "the server does not allow this method on the requested resource",
  {},
);

/** `kubectl`'s human age: `42s`, `5m10s`, `3h`, `2d`. */
function age(timestamp: string | undefined): string {
  if (!timestamp) return "<unknown>";
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(timestamp)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h`;
  return `${Math.floor(hours / 24)}d`;
}

interface Column {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
  cell: (object: KubeObject) => unknown;
}

function columns(type: ResourceType): Column[] {
  const column = (
    name: string,
    kind: string,
    cell: (object: KubeObject) => unknown,
    format = "",
  ): Column => ({ name, type: kind, format, description: name, priority: 0, cell });
  const name = column("Name", "string", (object) => object.metadata?.name, "name");
  const created = column("Age", "string", (object) => age(object.metadata?.creationTimestamp));
  const count = (value: unknown) =>
    typeof value === "object" && value !== null ? Object.keys(value).length : 0;
  switch (type.kind) {
    case "Secret":
      return [
        name,
        column("Type", "string", (object) => object.type),
        column("Data", "integer", (object) => count(object.data)),
        created,
      ];
    case "ConfigMap":
      return [
        name,
        column("Data", "integer", (object) => count(object.data) + count(object.binaryData)),
        created,
      ];
    case "Pod": {
      const containers = (object: KubeObject) => {
        const spec = object.spec as { containers?: unknown[] } | undefined;
        return spec?.containers?.length ?? 0;
      };
      return [
        name,
        column("Ready", "string", (object) => `0/${containers(object)}`),
        column("Status", "string", (object) => {
          const status = object.status as { phase?: string } | undefined;
          return status?.phase ?? "Pending";
        }),
        column("Restarts", "string", () => "0"),
        created,
      ];
    }
    case "Namespace":
      return [
        name,
        column("Status", "string", (object) => {
          const status = object.status as { phase?: string } | undefined;
          return status?.phase ?? "Active";
        }),
        created,
      ];
    case "ServiceAccount":
      return [name, column("Secrets", "integer", (object) => count(object.secrets)), created];
    default:
      // A custom resource without additionalPrinterColumns: Name and a date column.
      return [
        name,
        column("Age", "date", (object) => age(object.metadata?.creationTimestamp)),
      ];
  }
}

/** A `meta.k8s.io/v1` Table of `objects`, as kubectl's default output requests. */
function toTable(
  type: ResourceType,
  objects: KubeObject[],
  includeObject: string | null,
  listMeta: Record<string, unknown>,
): Record<string, unknown> {
  const defs = columns(type);
  return {
    kind: "Table",
    apiVersion: "meta.k8s.io/v1",
    metadata: listMeta,
    columnDefinitions: defs.map(({ cell: _cell, ...definition }) => definition),
    rows: objects.map((object) => ({
      cells: defs.map((definition) => definition.cell(object)),
      object: includeObject === "None" ? undefined : includeObject === "Object" ? object : {
        kind: "PartialObjectMetadata",
        apiVersion: "meta.k8s.io/v1",
        metadata: object.metadata,
      },
    })),
  };
}

/**
 * A minimal OpenAPI v3 (`/openapi/v3` and `/openapi/v3/<api/v1|apis/G/V>`): for each stored
 * resource only the PATCH operation of `…/namespaces/{namespace}/<plural>/{name}`, tagged with
 * `x-kubernetes-group-version-kind` and listing the `fieldValidation` query parameter. That is
 * what kubectl's `--validate` (on by default for create -f / apply / replace) looks for to
 * leave validation to the server instead of downloading schemas; without it kubectl refuses
 * ("failed to download openapi"). No schemas and no strategic-merge content type, so kubectl
 * computes strategic patches from its built-in types and merge patches for custom resources.
 */
function openApiV3(parts: string[]): unknown {
  const groupVersions = [...new Set(RESOURCE_TYPES.map((type) => apiVersionOf(type)))];
  const pathOf = (gv: string) => (gv.includes("/") ? `apis/${gv}` : `api/${gv}`);
  if (parts.length === 2) {
    return {
      paths: Object.fromEntries(
        groupVersions.map((gv) => [pathOf(gv), {
          serverRelativeURL: `/openapi/v3/${pathOf(gv)}?hash=FAKE${gv.replace(/\W/g, "")}`,
        }]),
      ),
    };
  }
  const wanted = parts.slice(2).join("/");
  const gv = groupVersions.find((candidate) => pathOf(candidate) === wanted);
  if (!gv) throw NOT_FOUND_PATH;
  const queryParameter = (name: string) => ({
    name,
    in: "query",
    schema: { type: "string", uniqueItems: true },
  });
  const content = Object.fromEntries(
    ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
      .map((type) => [type, { schema: { type: "object" } }]),
  );
  return {
    openapi: "3.0.0",
    info: { title: "Kubernetes", version: "v1.32.0-fake" },
    paths: Object.fromEntries(
      RESOURCE_TYPES.filter((type) => type.stored && apiVersionOf(type) === gv).map((type) => [
        type.namespaced
          ? `/${pathOf(gv)}/namespaces/{namespace}/${type.plural}/{name}`
          : `/${pathOf(gv)}/${type.plural}/{name}`,
        {
          patch: {
            operationId: `patch${type.kind}`,
            parameters: ["dryRun", "fieldManager", "fieldValidation", "force"].map(
              queryParameter,
            ),
            requestBody: { content },
            responses: { "200": { description: "OK" } },
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {
              group: type.group,
              version: type.version,
              kind: type.kind,
            },
          },
        },
      ]),
    ),
    components: { schemas: {} },
  };
}

/** Items of a list as the real server sends them: built-in types without kind/apiVersion. */
function listItem(type: ResourceType, object: KubeObject): KubeObject {
  if (type.group === "dapr.io") return object;
  const { kind: _kind, apiVersion: _apiVersion, ...rest } = object;
  return rest;
}

interface Watcher {
  type: ResourceType;
  close(): void;
}

interface FailureRule {
  remaining: number;
  status: number;
  reason: string;
  message: string;
  match?: RequestMatch;
}

/** A running fake Kubernetes API server. */
export class FakeKubeApiServer {
  /** `https://127.0.0.1:PORT` (or `http://…` without TLS). */
  readonly url: string;
  /** The port on 127.0.0.1. */
  readonly port: number;
  /** The CA certificate (PEM) that issued the serving certificate; "" without TLS. */
  readonly caPem: string;
  /** The first valid bearer token. */
  readonly adminToken: string;
  /** The API server's own audiences (for TokenReviews without audiences). */
  readonly apiAudiences: string[];
  /** Whether TokenReview checks that the bound pod and service account exist. */
  validateTokenBinding: boolean;
  /** Whether API requests need a valid bearer token. */
  requireAuth: boolean;
  /** The objects; for direct inspection beyond the helpers. */
  readonly store: KubeStore;

  #tls?: { cert: string; key: string };
  #tokens: Set<string>;
  readonly #grants = new Map<string, RbacGrant>();
  #serviceAccountTokens = new Map<string, ServiceAccountTokenInfo>();
  #server?: Deno.HttpServer;
  #log: LoggedRequest[] = [];
  #failures: FailureRule[] = [];
  #latencyMs = 0;
  #down: false | "refuse" | "unavailable" = false;
  #watchers = new Set<Watcher>();
  #sleeps = new Set<{ timer: ReturnType<typeof setTimeout>; resolve: () => void }>();
  #closed = false;

  private constructor(
    port: number,
    options: FakeKubeApiServerOptions,
    tls: { cert: string; key: string; ca: string } | undefined,
  ) {
    this.store = new KubeStore(options.historyLimit ?? 100);
    const tokens = options.tokens?.length ? options.tokens : [`fake-admin-${crypto.randomUUID()}`];
    this.#tokens = new Set(tokens);
    this.adminToken = tokens[0];
    this.apiAudiences = options.apiAudiences ?? [...DEFAULT_AUDIENCES];
    this.validateTokenBinding = options.validateTokenBinding ?? false;
    this.requireAuth = options.requireAuth ?? tls !== undefined;
    this.#tls = tls;
    this.caPem = tls?.ca ?? "";
    this.port = port;
    this.#serve(port);
    this.port = (this.#server!.addr as Deno.NetAddr).port;
    this.url = `${tls ? "https" : "http"}://127.0.0.1:${this.port}`;
  }

  /** Makes the TLS material (if wanted) and starts serving on 127.0.0.1. */
  static async start(options: FakeKubeApiServerOptions = {}): Promise<FakeKubeApiServer> {
    const tls = options.tls === false ? undefined : await makeTlsMaterial();
    return new FakeKubeApiServer(options.port ?? 0, options, tls);
  }

  #serve(port: number): void {
    const base = {
      hostname: "127.0.0.1",
      port,
      onListen: () => {},
      onError: (error: unknown) =>
        statusResponse(new KubeApiError(500, "InternalError", String(error)).status),
    };
    this.#server = this.#tls
      ? Deno.serve({ ...base, cert: this.#tls.cert, key: this.#tls.key }, this.#handle)
      : Deno.serve(base, this.#handle);
  }

  async #stopListening(): Promise<void> {
    this.dropWatches();
    for (const sleep of this.#sleeps) {
      clearTimeout(sleep.timer);
      sleep.resolve();
    }
    this.#sleeps.clear();
    const server = this.#server;
    this.#server = undefined;
    // Graceful: the ended watch streams are flushed before connections close.
    await server?.shutdown();
    await server?.finished;
  }

  /** Ends all watches and stops the server. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#stopListening();
  }

  /** {@link close} for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // -------------------------------------------------------------------------------------------
  // Client configuration

  /**
   * Writes a kubeconfig for this server to `path`: cluster `fake` (with
   * `certificate-authority-data` over TLS), user `fake-user` with a bearer token (default
   * {@link adminToken}), context `fake` (with `namespace` if given) as current-context.
   */
  async writeKubeconfig(
    path: string,
    options: { token?: string; namespace?: string } = {},
  ): Promise<string> {
    const config = {
      apiVersion: "v1",
      kind: "Config",
      preferences: {},
      clusters: [{
        name: "fake",
        cluster: {
          server: this.url,
          // Standard base64, as kubectl expects for the *-data fields.
          ...(this.caPem
            ? { "certificate-authority-data": Buffer.from(this.caPem).toString("base64") }
            : {}),
        },
      }],
      users: [{ name: "fake-user", user: { token: options.token ?? this.adminToken } }],
      contexts: [{
        name: "fake",
        context: {
          cluster: "fake",
          user: "fake-user",
          ...(options.namespace ? { namespace: options.namespace } : {}),
        },
      }],
      "current-context": "fake",
    };
    await Deno.writeTextFile(path, stringifyYaml(config));
    return path;
  }

  /**
   * Writes what a pod sees in `/var/run/secrets/kubernetes.io/serviceaccount`: `token`
   * (default {@link adminToken}), `ca.crt` and `namespace` (default `default`) into `dir`.
   */
  async writeServiceAccountDir(
    dir: string,
    options: { token?: string; namespace?: string } = {},
  ): Promise<string> {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(join(dir, "token"), options.token ?? this.adminToken);
    await Deno.writeTextFile(join(dir, "ca.crt"), this.caPem);
    await Deno.writeTextFile(join(dir, "namespace"), options.namespace ?? "default");
    return dir;
  }

  /** `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT` of an in-cluster client. */
  inClusterEnv(): Record<string, string> {
    return { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(this.port) };
  }

  /**
   * Accepts `token` as a bearer token limited to what `grant` allows (RBAC; see
   * tests/fakes/kube-rbac.ts): other requests get the real 403 Forbidden Status.
   */
  restrictToken(token: string, grant: RbacGrant): void {
    this.#tokens.add(token);
    this.#grants.set(token, grant);
  }

  /** Accepts `token` as a bearer token for API requests. */
  addToken(token: string): void {
    this.#tokens.add(token);
  }

  /** Stops accepting `token` for API requests. */
  removeToken(token: string): void {
    this.#tokens.delete(token);
  }

  // -------------------------------------------------------------------------------------------
  // Observation and fault injection

  /** The requests received so far, oldest first. */
  get requests(): readonly LoggedRequest[] {
    return this.#log;
  }

  /** Forgets the logged requests. */
  clearRequests(): void {
    this.#log = [];
  }

  /** Waits until a logged request satisfies `predicate` and returns it. */
  async waitForRequest(
    predicate: (request: LoggedRequest) => boolean,
    timeoutMs = 10_000,
  ): Promise<LoggedRequest> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const found = this.#log.find(predicate);
      if (found) return found;
      if (Date.now() > deadline) throw new Error("fake kube-apiserver: no matching request");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /**
   * Answers the next `n` requests (matching `match`, default all; discovery included) with a
   * Status of HTTP `status` and `reason` (default the usual one for the code, e.g. 500
   * InternalError, 503 ServiceUnavailable, 429 TooManyRequests with `Retry-After: 1`).
   */
  failNext(n: number, status: number, reason?: string, match?: RequestMatch): void {
    this.#failures.push({
      remaining: n,
      status,
      reason: reason ?? REASONS[status] ?? "Unknown",
      message: `fake kube-apiserver: injected failure ${status}`,
      match,
    });
  }

  /** Delays every response (watches: the start of the stream) by `ms` milliseconds. */
  setLatency(ms: number): void {
    this.#latencyMs = ms;
  }

  /** The number of open watch streams. */
  get watchCount(): number {
    return this.#watchers.size;
  }

  /** Waits until at least `n` watch streams are open (of `resource`, if given). */
  async waitForWatches(n = 1, resource?: string, timeoutMs = 10_000): Promise<void> {
    const type = resource === undefined ? undefined : resourceType(resource);
    const deadline = Date.now() + timeoutMs;
    while (
      [...this.#watchers].filter((watcher) => !type || watcher.type === type).length < n
    ) {
      if (Date.now() > deadline) throw new Error(`fake kube-apiserver: fewer than ${n} watches`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Ends every open watch stream cleanly (as an API server restart does); returns how many. */
  dropWatches(): number {
    const watchers = [...this.#watchers];
    for (const watcher of watchers) watcher.close();
    return watchers.length;
  }

  /**
   * Takes the server down or brings it back. `refuse` (default) ends all watches and stops
   * listening, so connections are refused; bringing it back listens on the same port again.
   * `unavailable` keeps listening but answers everything 503 ServiceUnavailable (and ends all
   * watches).
   */
  async setDown(down: boolean, mode: "refuse" | "unavailable" = "refuse"): Promise<void> {
    if (this.#closed) throw new Error("fake kube-apiserver: closed");
    if (down) {
      if (this.#down === "refuse") return;
      this.#down = mode;
      if (mode === "refuse") await this.#stopListening();
      else this.dropWatches();
      return;
    }
    if (this.#down === "refuse") this.#serve(this.port);
    this.#down = false;
  }

  /** Forgets the watch history: resuming from any earlier resourceVersion gets 410 Expired. */
  expireHistory(): void {
    this.store.expireHistory();
  }

  /** The current resourceVersion. */
  get resourceVersion(): string {
    return String(this.store.resourceVersion);
  }

  // -------------------------------------------------------------------------------------------
  // Direct access (no HTTP)

  /** A copy of an object (`kind`: `secrets`, `Secret`, `cm`, `configurations.dapr.io`, …). */
  get(kind: string, namespace: string, name: string): KubeObject | undefined {
    return this.store.get(resourceType(kind), namespace, name);
  }

  /**
   * Creates or replaces `object` (its `metadata.name`) unconditionally, bumping the
   * resourceVersion and emitting a watch event like an API write (none when nothing changed).
   */
  put(kind: string, namespace: string, object: KubeObject): KubeObject {
    return this.store.put(resourceType(kind), namespace, object);
  }

  /** Copies of the objects of `kind` in `namespace` (all namespaces if omitted). */
  list(kind: string, namespace?: string): KubeObject[] {
    return this.store.list(resourceType(kind), namespace);
  }

  /** Deletes an object (emitting DELETED); true if it existed. */
  remove(kind: string, namespace: string, name: string): boolean {
    return this.store.remove(resourceType(kind), namespace, name);
  }

  // -------------------------------------------------------------------------------------------
  // TokenReview

  /** Registers `token` so that TokenReview authenticates it as the given service account. */
  addServiceAccountToken(token: string, info: ServiceAccountTokenInfo): void {
    this.#serviceAccountTokens.set(token, {
      ...info,
      serviceAccountUid: info.serviceAccountUid ?? crypto.randomUUID(),
      audiences: info.audiences ?? [...this.apiAudiences],
    });
  }

  /** Makes TokenReview reject `token` from now on. */
  removeServiceAccountToken(token: string): void {
    this.#serviceAccountTokens.delete(token);
  }

  /**
   * Makes a projected service-account JWT (`iss`, `sub: system:serviceaccount:NS:SA`, `aud`,
   * `exp`, `iat`, `nbf`, `jti` and the `kubernetes.io` claims with namespace, pod and service
   * account) and registers it for TokenReview. Not verifiably signed.
   */
  serviceAccountJwt(options: ServiceAccountJwtOptions): string {
    const now = Math.floor(Date.now() / 1000);
    const exp = options.expiresAt
      ? Math.floor(options.expiresAt.getTime() / 1000)
      : now + (options.expirationSeconds ?? 3600);
    const info: ServiceAccountTokenInfo = {
      ...options,
      serviceAccountUid: options.serviceAccountUid ?? crypto.randomUUID(),
      audiences: options.audiences ?? [...this.apiAudiences],
      expiresAt: new Date(exp * 1000),
      jti: options.jti ?? crypto.randomUUID(),
    };
    const token = makeServiceAccountJwt({
      aud: info.audiences!,
      exp,
      iat: now,
      iss: options.issuer ?? DEFAULT_AUDIENCES[0],
      jti: info.jti!,
      "kubernetes.io": {
        namespace: info.namespace,
        ...(info.nodeName ? { node: { name: info.nodeName, uid: crypto.randomUUID() } } : {}),
        ...(info.podName
          ? { pod: { name: info.podName, uid: info.podUid ?? crypto.randomUUID() } }
          : {}),
        serviceaccount: { name: info.serviceAccount, uid: info.serviceAccountUid! },
      },
      nbf: now,
      sub: `system:serviceaccount:${info.namespace}:${info.serviceAccount}`,
    });
    this.addServiceAccountToken(token, info);
    return token;
  }

  #reviewToken(spec: Record<string, unknown>): Record<string, unknown> {
    const token = String(spec.token);
    const requested = Array.isArray(spec.audiences) && spec.audiences.length > 0
      ? spec.audiences.map(String)
      : this.apiAudiences;
    const fail = (why: string) => ({ user: {}, error: `[invalid bearer token, ${why}]` });
    let user: Record<string, unknown>;
    let audiences: string[];
    const info = this.#serviceAccountTokens.get(token);
    if (info) {
      if (info.expiresAt && info.expiresAt.getTime() <= Date.now()) {
        return fail("service account token has expired");
      }
      if (this.validateTokenBinding) {
        const pod = info.podName
          ? this.store.get(resourceType("pods"), info.namespace, info.podName)
          : undefined;
        const account = this.store.get(
          resourceType("serviceaccounts"),
          info.namespace,
          info.serviceAccount,
        );
        if (
          !account || (info.podName && (!pod || (info.podUid && pod.metadata?.uid !== info.podUid)))
        ) {
          return fail("service account token has been invalidated");
        }
      }
      const extra: Record<string, string[]> = {};
      if (info.jti) extra["authentication.kubernetes.io/credential-id"] = [`JTI=${info.jti}`];
      if (info.nodeName) extra["authentication.kubernetes.io/node-name"] = [info.nodeName];
      if (info.podName) extra["authentication.kubernetes.io/pod-name"] = [info.podName];
      if (info.podUid) extra["authentication.kubernetes.io/pod-uid"] = [info.podUid];
      user = {
        username: `system:serviceaccount:${info.namespace}:${info.serviceAccount}`,
        uid: info.serviceAccountUid,
        groups: [
          "system:serviceaccounts",
          `system:serviceaccounts:${info.namespace}`,
          "system:authenticated",
        ],
        ...(Object.keys(extra).length ? { extra } : {}),
      };
      audiences = info.audiences ?? this.apiAudiences;
    } else if (this.#tokens.has(token)) {
      // Static tokens are audience-agnostic: valid for the API server's own audiences only.
      user = { username: ADMIN_USER, groups: ["system:masters", "system:authenticated"] };
      audiences = this.apiAudiences;
    } else {
      return fail("token lookup failed");
    }
    const intersection = audiences.filter((audience) => requested.includes(audience));
    if (intersection.length === 0) {
      return fail(
        `token audiences ${goQuoteList(audiences)} is invalid for the target audiences ${
          goQuoteList(requested)
        }`,
      );
    }
    return { authenticated: true, user, audiences: intersection };
  }

  // -------------------------------------------------------------------------------------------
  // HTTP

  async #sleep(ms: number): Promise<void> {
    if (ms <= 0) return;
    await new Promise<void>((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          this.#sleeps.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      this.#sleeps.add(entry);
    });
  }

  #handle = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const query = Object.fromEntries(url.searchParams);
    const auth = request.headers.get("authorization");
    const entry: LoggedRequest = {
      time: Date.now(),
      method: request.method,
      path: url.pathname,
      query,
      contentType: request.headers.get("content-type"),
      accept: request.headers.get("accept"),
      token: auth?.match(/^Bearer\s+(.+)$/i)?.[1] ?? null,
      status: 0,
      watch: query.watch === "1" || query.watch === "true",
    };
    this.#log.push(entry);
    let response: Response;
    try {
      response = await this.#dispatch(request, url, entry);
    } catch (error) {
      response = error instanceof KubeApiError
        ? statusResponse(error.status)
        : statusResponse(new KubeApiError(500, "InternalError", String(error)).status);
    }
    entry.status = response.status;
    return response;
  };

  /** Throws the real 403 when the request's token is restricted and RBAC does not allow it. */
  #authorize(
    entry: LoggedRequest,
    type: ResourceType,
    namespace: string,
    name: string | undefined,
    params: URLSearchParams,
  ): void {
    const grant = entry.token ? this.#grants.get(entry.token) : undefined;
    if (!grant) return;
    const collectionVerbs: Record<string, string> = {
      GET: entry.watch ? "watch" : "list",
      POST: "create",
      DELETE: "deletecollection",
    };
    const objectVerbs: Record<string, string> = {
      GET: "get",
      PUT: "update",
      PATCH: "patch",
      DELETE: "delete",
      POST: "create",
    };
    const verb = name === undefined ? collectionVerbs[entry.method] : objectVerbs[entry.method];
    if (!verb) return;
    const selected = /(?:^|,)metadata\.name=([^,]+)/.exec(params.get("fieldSelector") ?? "")?.[1];
    const refusal = authorize(grant, {
      verb,
      group: type.group,
      resource: type.plural,
      namespace,
      name: name ?? (verb === "list" || verb === "watch" ? selected : undefined),
    });
    if (refusal) {
      throw new KubeApiError(403, "Forbidden", refusal, {
        name: name ?? selected ?? "",
        group: type.group,
        kind: type.plural,
      });
    }
  }

  #injectedFailure(entry: LoggedRequest): Response | undefined {
    const rule = this.#failures.find((candidate) => {
      if (candidate.remaining <= 0) return false;
      const match = candidate.match;
      if (!match) return true;
      if (match.method && match.method.toUpperCase() !== entry.method) return false;
      if (match.watch !== undefined && match.watch !== entry.watch) return false;
      if (typeof match.path === "string" && match.path !== entry.path) return false;
      if (match.path instanceof RegExp && !match.path.test(entry.path)) return false;
      return true;
    });
    if (!rule) return undefined;
    rule.remaining--;
    this.#failures = this.#failures.filter((candidate) => candidate.remaining > 0);
    const error = new KubeApiError(rule.status, rule.reason, rule.message);
    if (rule.status === 429 || rule.status === 503) {
      error.status.details = { retryAfterSeconds: 1 };
      return statusResponse(error.status, { "retry-after": "1" });
    }
    return statusResponse(error.status);
  }

  async #dispatch(request: Request, url: URL, entry: LoggedRequest): Promise<Response> {
    const method = request.method;
    const raw = method === "GET" || method === "HEAD"
      ? new Uint8Array()
      : new Uint8Array(await request.arrayBuffer());
    if (raw.length > 0) {
      try {
        entry.body = decodeBody(raw, entry.contentType ?? "");
      } catch {
        entry.body = new TextDecoder().decode(raw);
      }
    }
    await this.#sleep(this.#latencyMs);
    if (this.#down) {
      return statusResponse(
        new KubeApiError(
          503,
          "ServiceUnavailable",
          "the server is currently unable to handle the request",
        ).status,
      );
    }
    const injected = this.#injectedFailure(entry);
    if (injected) return injected;

    const parts = url.pathname.split("/").filter((part) => part !== "");
    const open = ["version", "healthz", "livez", "readyz"];
    if (this.requireAuth && !(parts.length === 1 && open.includes(parts[0]))) {
      if (!entry.token || !this.#tokens.has(entry.token)) {
        return statusResponse(new KubeApiError(401, "Unauthorized", "Unauthorized").status);
      }
    }

    if (parts.length === 1 && parts[0] === "version") return jsonResponse(200, this.#version());
    if (parts.length === 1 && open.includes(parts[0])) {
      return new Response("ok", { headers: { "content-type": "text/plain" } });
    }
    if (parts[0] === "api" && parts.length === 1) {
      return jsonResponse(200, {
        kind: "APIVersions",
        versions: ["v1"],
        serverAddressByClientCIDRs: [{
          clientCIDR: "0.0.0.0/0",
          serverAddress: `127.0.0.1:${this.port}`,
        }],
      });
    }
    if (parts[0] === "api" && parts[1] === "v1") {
      if (parts.length === 2) return jsonResponse(200, this.#resourceList("", "v1"));
      return this.#resource(request, url, entry, "", "v1", parts.slice(2), raw);
    }
    if (parts[0] === "openapi" && parts[1] === "v3") return jsonResponse(200, openApiV3(parts));
    if (parts[0] === "apis") {
      if (parts.length === 1) return jsonResponse(200, this.#groupList());
      const group = this.#groupList().groups.find((candidate) => candidate.name === parts[1]);
      if (!group) throw NOT_FOUND_PATH;
      if (parts.length === 2) {
        return jsonResponse(200, { kind: "APIGroup", apiVersion: "v1", ...group });
      }
      if (!group.versions.some((version) => version.version === parts[2])) throw NOT_FOUND_PATH;
      if (parts.length === 3) return jsonResponse(200, this.#resourceList(parts[1], parts[2]));
      return this.#resource(
        request,
        url,
        entry,
        parts[1],
        parts[2],
        parts.slice(3),
        raw,
      );
    }
    throw NOT_FOUND_PATH;
  }

  #version(): Record<string, string> {
    return {
      major: "1",
      minor: "32",
      gitVersion: "v1.32.0-fake",
      gitCommit: "0000000000000000000000000000000000000000",
      gitTreeState: "clean",
      buildDate: "2025-01-01T00:00:00Z",
      goVersion: "go1.23.4",
      compiler: "gc",
      platform: "linux/amd64",
    };
  }

  #groupList() {
    const groups = [...new Set(RESOURCE_TYPES.map((type) => type.group))].filter(Boolean).sort();
    return {
      kind: "APIGroupList",
      apiVersion: "v1",
      groups: groups.map((name) => {
        const version = RESOURCE_TYPES.find((type) => type.group === name)!.version;
        const groupVersion = { groupVersion: `${name}/${version}`, version };
        return { name, versions: [groupVersion], preferredVersion: groupVersion };
      }),
    };
  }

  #resourceList(group: string, version: string) {
    return {
      kind: "APIResourceList",
      apiVersion: "v1",
      groupVersion: group ? `${group}/${version}` : version,
      resources: RESOURCE_TYPES.filter((type) => type.group === group && type.version === version)
        .map((type) => ({
          name: type.plural,
          singularName: type.singular,
          namespaced: type.namespaced,
          kind: type.kind,
          verbs: type.verbs,
          ...(type.shortNames.length ? { shortNames: type.shortNames } : {}),
        })),
    };
  }

  #resource(
    request: Request,
    url: URL,
    entry: LoggedRequest,
    group: string,
    version: string,
    rest: string[],
    raw: Uint8Array,
  ): Response {
    const bodyText = new TextDecoder().decode(raw);
    const find = (plural: string) =>
      RESOURCE_TYPES.find((type) =>
        type.group === group && type.version === version && type.plural === plural
      );
    let type: ResourceType | undefined;
    let namespace: string | undefined;
    let name: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3 && rest.length <= 4) {
      [, namespace, , name] = rest;
      type = find(rest[2]);
      if (!type?.namespaced) throw NOT_FOUND_PATH;
    } else if (rest.length === 1) {
      // A namespaced type across all namespaces (list / watch), or a cluster-scoped collection.
      type = find(rest[0]);
      if (type && !type.namespaced) namespace = "";
    } else if (rest.length === 2) {
      type = find(rest[0]);
      if (type?.namespaced) throw NOT_FOUND_PATH;
      namespace = "";
      name = rest[1];
    }
    if (!type) throw NOT_FOUND_PATH;
    const method = request.method;
    const params = url.searchParams;
    const dryRun = params.getAll("dryRun").includes("All");
    const body = () => decodeBody(raw, entry.contentType ?? "");
    this.#authorize(entry, type, namespace ?? "", name, params);

    if (type.plural === "tokenreviews") {
      if (method !== "POST" || name !== undefined) throw METHOD_NOT_ALLOWED;
      const review = body() as Record<string, unknown>;
      const spec = (review?.spec ?? {}) as Record<string, unknown>;
      if (!spec.token) throw badRequest("token is required for TokenReview in authentication");
      return jsonResponse(201, {
        kind: "TokenReview",
        apiVersion: "authentication.k8s.io/v1",
        metadata: { creationTimestamp: null },
        spec,
        status: this.#reviewToken(spec),
      });
    }

    const table = (entry.accept ?? "").includes("as=Table")
      ? params.get("includeObject")
      : undefined;
    if (name === undefined) {
      // Collection: list, watch, create, delete-collection.
      if (method === "GET" && entry.watch) return this.#watch(type, namespace, params, table);
      if (method === "GET") return this.#list(type, namespace, params, table);
      if (namespace === undefined) throw METHOD_NOT_ALLOWED;
      if (method === "POST") {
        const created = this.store.create(type, namespace, body() as KubeObject, { dryRun });
        return jsonResponse(201, created);
      }
      if (method === "DELETE" && type.verbs.includes("deletecollection")) {
        const label = parseLabelSelector(params.get("labelSelector"));
        const field = parseFieldSelector(params.get("fieldSelector"));
        const deleted = this.store.list(type, namespace)
          .filter((object) => label(object) && field(object))
          .map((object) =>
            this.store.delete(type!, namespace!, object.metadata!.name!, {}, { dryRun })
          );
        return jsonResponse(200, {
          kind: type.listKind,
          apiVersion: apiVersionOf(type),
          metadata: { resourceVersion: this.resourceVersion },
          items: deleted.map((object) => listItem(type!, object)),
        });
      }
      throw METHOD_NOT_ALLOWED;
    }
    if (namespace === undefined) throw NOT_FOUND_PATH;

    switch (method) {
      case "GET": {
        const object = this.store.get(type, namespace, name);
        if (!object) throw notFound(type, name);
        if (table !== undefined) {
          return jsonResponse(
            200,
            toTable(type, [object], table, { resourceVersion: object.metadata?.resourceVersion }),
          );
        }
        return jsonResponse(200, object);
      }
      case "PUT":
        return jsonResponse(
          200,
          this.store.update(type, namespace, name, body() as KubeObject, { dryRun }),
        );
      case "PATCH": {
        const contentType = (entry.contentType ?? "").split(";")[0].trim().toLowerCase();
        const patchTypes: Record<string, PatchType> = {
          "application/merge-patch+json": "merge",
          "application/strategic-merge-patch+json": "strategic",
          "application/json-patch+json": "json",
          "application/apply-patch+yaml": "apply",
          "application/apply-patch+cbor": "apply",
        };
        const patchType = patchTypes[contentType];
        if (!patchType || contentType.endsWith("cbor")) {
          throw new KubeApiError(
            415,
            "UnsupportedMediaType",
            `the body of the request was in an unknown format - accepted media types include: ` +
              `application/json-patch+json, application/merge-patch+json, ` +
              `application/apply-patch+yaml, application/strategic-merge-patch+json`,
          );
        }
        if (patchType === "apply" && !params.get("fieldManager")) {
          throw badRequest("PATCH requests: fieldManager is required for apply requests");
        }
        const parsed = parseBody(bodyText, patchType === "apply" ? "yaml" : "json");
        const { object, created } = this.store.patch(type, namespace, name, patchType, parsed, {
          dryRun,
        });
        return jsonResponse(created ? 201 : 200, object);
      }
      case "DELETE": {
        const options = (bodyText.trim() ? body() : {}) as {
          preconditions?: { uid?: string; resourceVersion?: string };
          dryRun?: string[];
        };
        const deleted = this.store.delete(type, namespace, name, options.preconditions, {
          dryRun: dryRun || (options.dryRun ?? []).includes("All"),
        });
        if (type.deleteReturnsObject) return jsonResponse(200, deleted);
        return jsonResponse(200, {
          kind: "Status",
          apiVersion: "v1",
          metadata: {},
          status: "Success",
          details: {
            name,
            ...(type.group ? { group: type.group } : {}),
            kind: type.plural,
            uid: deleted.metadata?.uid,
          },
        });
      }
      default:
        throw METHOD_NOT_ALLOWED;
    }
  }

  #list(
    type: ResourceType,
    namespace: string | undefined,
    params: URLSearchParams,
    table: string | null | undefined,
  ): Response {
    const label = parseLabelSelector(params.get("labelSelector"));
    const field = parseFieldSelector(params.get("fieldSelector"));
    let objects = this.store.list(type, namespace).filter((object) =>
      label(object) && field(object)
    );
    const key = (object: KubeObject) => `${object.metadata?.namespace}/${object.metadata?.name}`;
    const token = params.get("continue");
    if (token) {
      let start: string;
      try {
        start = JSON.parse(atob(token)).start;
      } catch {
        throw badRequest(`continue key is not valid: ${token}`);
      }
      objects = objects.filter((object) => key(object) > start);
    }
    const limit = Number(params.get("limit") ?? 0);
    const metadata: Record<string, unknown> = { resourceVersion: this.resourceVersion };
    if (limit > 0 && objects.length > limit) {
      metadata.continue = btoa(JSON.stringify({ start: key(objects[limit - 1]) }));
      metadata.remainingItemCount = objects.length - limit;
      objects = objects.slice(0, limit);
    }
    if (table !== undefined) return jsonResponse(200, toTable(type, objects, table, metadata));
    return jsonResponse(200, {
      kind: type.listKind,
      apiVersion: apiVersionOf(type),
      metadata,
      items: objects.map((object) => listItem(type, object)),
    });
  }

  #watch(
    type: ResourceType,
    namespace: string | undefined,
    params: URLSearchParams,
    table: string | null | undefined,
  ): Response {
    const label = parseLabelSelector(params.get("labelSelector"));
    const field = parseFieldSelector(params.get("fieldSelector"));
    const selected: Selector = (object) =>
      (namespace === undefined || (object.metadata?.namespace ?? "") === namespace) &&
      label(object) &&
      field(object);
    const rvParam = params.get("resourceVersion") ?? "";
    let since: number | undefined;
    if (rvParam !== "" && rvParam !== "0") {
      since = Number(rvParam);
      if (!Number.isSafeInteger(since) || since < 0) {
        throw badRequest(`resourceVersion: Invalid value: "${rvParam}": invalid resource version`);
      }
    }
    const timeoutSeconds = Number(params.get("timeoutSeconds") ?? 0);
    const encoder = new TextEncoder();
    const render = (object: KubeObject) =>
      table !== undefined
        ? toTable(type, [object], table, { resourceVersion: object.metadata?.resourceVersion })
        : object;
    const translate = (event: StoreEvent): { type: string; object: KubeObject } | undefined => {
      if (event.resource !== type) return undefined;
      const now = selected(event.object);
      const before = event.previous ? selected(event.previous) : false;
      switch (event.type) {
        case "ADDED":
          return now ? { type: "ADDED", object: event.object } : undefined;
        case "DELETED":
          return now ? { type: "DELETED", object: event.object } : undefined;
        case "MODIFIED":
          if (now && before) return { type: "MODIFIED", object: event.object };
          if (now) return { type: "ADDED", object: event.object };
          if (before) return { type: "DELETED", object: event.object };
          return undefined;
      }
    };

    let watcher: Watcher | undefined;
    let unsubscribe = () => {};
    let timer: ReturnType<typeof setTimeout> | undefined;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      unsubscribe();
      if (timer !== undefined) clearTimeout(timer);
      if (watcher) this.#watchers.delete(watcher);
    };
    const stream = new ReadableStream<Uint8Array>({
      start: (controller) => {
        const send = (eventType: string, object: unknown) =>
          controller.enqueue(encoder.encode(`${JSON.stringify({ type: eventType, object })}\n`));
        const end = () => {
          if (finished) return;
          finish();
          try {
            controller.close();
          } catch {
            // already closed by the client
          }
        };
        let backlog: StoreEvent[] = [];
        if (since === undefined) {
          for (const object of this.store.list(type, namespace)) {
            if (selected(object)) send("ADDED", render(object));
          }
        } else {
          try {
            backlog = this.store.eventsSince(since);
          } catch (error) {
            if (!(error instanceof KubeApiError)) throw error;
            send("ERROR", error.status);
            finished = true;
            controller.close();
            return;
          }
        }
        for (const event of backlog) {
          const out = translate(event);
          if (out) send(out.type, render(out.object));
        }
        unsubscribe = this.store.subscribe((event) => {
          if (since !== undefined && event.rv <= since) return;
          const out = translate(event);
          if (out) send(out.type, render(out.object));
        });
        watcher = { type, close: end };
        this.#watchers.add(watcher);
        if (timeoutSeconds > 0) timer = setTimeout(end, timeoutSeconds * 1000);
      },
      cancel: () => finish(),
    });
    return new Response(stream, {
      status: 200,
      headers: {
        "content-type": "application/json",
        "cache-control": "no-cache, private",
      },
    });
  }
}

/** A CA and a serving certificate for 127.0.0.1 / localhost, made with the openssl CLI. */
async function makeTlsMaterial(): Promise<{ cert: string; key: string; ca: string }> {
  const tls = await opensslServerTls("fake-kube-apiserver-ca");
  return { cert: tls.certPem, key: tls.keyPem, ca: tls.caPem };
}
