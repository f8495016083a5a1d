/**
 * The storage half of the fake Kubernetes API server (tests/fakes/kube-apiserver.ts): the
 * resource types it serves, objects kept as JSON with the metadata the real API server
 * maintains (uid, a global resourceVersion counter bumped on every write, creationTimestamp,
 * generation for custom resources), the write verbs with the real error Statuses (NotFound,
 * AlreadyExists, Conflict, Invalid, BadRequest), merge / strategic-merge / JSON / apply
 * patches, label and field selectors, and the bounded event history that watches resume from
 * (an older resourceVersion is "too old", 410 Expired, as with the real watch cache).
 *
 * Everything here is synchronous, so a write, its history entry and its delivery to watchers
 * happen in one step, as if under the real server's storage lock.
 *
 * @module
 */
import { parse as parseYaml } from "yaml";

/** Metadata of a stored object (the fields the fake maintains, plus anything else sent). */
export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

/** A Kubernetes object as JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [key: string]: unknown;
}

/** A served resource type (one entry of discovery). */
export interface ResourceType {
  /** Plural resource name, as in URLs: `secrets`. */
  plural: string;
  singular: string;
  kind: string;
  listKind: string;
  /** API group; "" for the core group. */
  group: string;
  version: string;
  namespaced: boolean;
  shortNames: string[];
  verbs: string[];
  /** Whether the object has `metadata.generation` (custom resources do; secrets do not). */
  hasGeneration: boolean;
  /** DELETE answers with the object (true) or with a Status Success (false). */
  deleteReturnsObject: boolean;
  /** Whether objects are stored at all (false for create-only reviews such as TokenReview). */
  stored: boolean;
}

const ALL_VERBS = [
  "create",
  "delete",
  "deletecollection",
  "get",
  "list",
  "patch",
  "update",
  "watch",
];

/** The resource types the fake serves. */
export const RESOURCE_TYPES: readonly ResourceType[] = [
  {
    plural: "secrets",
    singular: "secret",
    kind: "Secret",
    listKind: "SecretList",
    group: "",
    version: "v1",
    namespaced: true,
    shortNames: [],
    verbs: ALL_VERBS,
    hasGeneration: false,
    deleteReturnsObject: false,
    stored: true,
  },
  {
    plural: "configmaps",
    singular: "configmap",
    kind: "ConfigMap",
    listKind: "ConfigMapList",
    group: "",
    version: "v1",
    namespaced: true,
    shortNames: ["cm"],
    verbs: ALL_VERBS,
    hasGeneration: false,
    deleteReturnsObject: false,
    stored: true,
  },
  {
    plural: "pods",
    singular: "pod",
    kind: "Pod",
    listKind: "PodList",
    group: "",
    version: "v1",
    namespaced: true,
    shortNames: ["po"],
    verbs: ALL_VERBS,
    hasGeneration: false,
    deleteReturnsObject: true,
    stored: true,
  },
  {
    plural: "serviceaccounts",
    singular: "serviceaccount",
    kind: "ServiceAccount",
    listKind: "ServiceAccountList",
    group: "",
    version: "v1",
    namespaced: true,
    shortNames: ["sa"],
    verbs: ALL_VERBS,
    hasGeneration: false,
    deleteReturnsObject: false,
    stored: true,
  },
  {
    plural: "namespaces",
    singular: "namespace",
    kind: "Namespace",
    listKind: "NamespaceList",
    group: "",
    version: "v1",
    namespaced: false,
    shortNames: ["ns"],
    verbs: ["create", "delete", "get", "list", "patch", "update", "watch"],
    hasGeneration: false,
    deleteReturnsObject: true,
    stored: true,
  },
  {
    plural: "configurations",
    singular: "configuration",
    kind: "Configuration",
    listKind: "ConfigurationList",
    group: "dapr.io",
    version: "v1alpha1",
    namespaced: true,
    shortNames: [],
    verbs: ALL_VERBS,
    hasGeneration: true,
    deleteReturnsObject: true,
    stored: true,
  },
  {
    plural: "tokenreviews",
    singular: "tokenreview",
    kind: "TokenReview",
    listKind: "TokenReviewList",
    group: "authentication.k8s.io",
    version: "v1",
    namespaced: false,
    shortNames: [],
    verbs: ["create"],
    hasGeneration: false,
    deleteReturnsObject: false,
    stored: false,
  },
];

/** `v1` or `group/version`. */
export function apiVersionOf(type: ResourceType): string {
  return type.group ? `${type.group}/${type.version}` : type.version;
}

/** The name the real server uses in messages: `secrets`, `configurations.dapr.io`. */
export function qualifiedName(type: ResourceType): string {
  return type.group ? `${type.plural}.${type.group}` : type.plural;
}

/**
 * Finds a stored resource type by any name kubectl would accept: plural (`secrets`), singular,
 * kind (`Secret`), short name (`cm`) or qualified plural (`configurations.dapr.io`).
 */
export function resolveResourceType(ref: string): ResourceType | undefined {
  const lower = ref.toLowerCase();
  return RESOURCE_TYPES.find((type) =>
    type.plural === lower || type.singular === lower || type.kind.toLowerCase() === lower ||
    type.shortNames.includes(lower) || qualifiedName(type) === lower ||
    `${type.singular}.${type.group}` === lower
  );
}

/** Like {@link resolveResourceType}, but throws for an unknown name. */
export function resourceType(ref: string): ResourceType {
  const type = resolveResourceType(ref);
  if (!type || !type.stored) throw new Error(`fake kube-apiserver: unknown resource "${ref}"`);
  return type;
}

// ---------------------------------------------------------------------------------------------
// Statuses

/** A `kind: Status` failure, with the HTTP code it is sent with. */
export interface KubeStatus {
  kind: "Status";
  apiVersion: "v1";
  metadata: Record<string, unknown>;
  status: "Failure" | "Success";
  message?: string;
  reason?: string;
  details?: Record<string, unknown>;
  code: number;
}

/** An error that the server answers with its Status. */
export class KubeApiError extends Error {
  /** The Status body. */
  readonly status: KubeStatus;
  constructor(code: number, reason: string, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = "KubeApiError";
    this.status = {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message,
      reason,
      ...(details === undefined ? {} : { details }),
      code,
    };
  }
  /** The HTTP status code. */
  get code(): number {
    return this.status.code;
  }
}

function details(type: ResourceType, name: string, extra: Record<string, unknown> = {}) {
  return { name, ...(type.group ? { group: type.group } : {}), kind: type.plural, ...extra };
}

/** 404 `secrets "x" not found`. */
export function notFound(type: ResourceType, name: string): KubeApiError {
  return new KubeApiError(
    404,
    "NotFound",
    `${qualifiedName(type)} "${name}" not found`,
    details(type, name),
  );
}

/** 409 `secrets "x" already exists`. */
export function alreadyExists(type: ResourceType, name: string): KubeApiError {
  return new KubeApiError(
    409,
    "AlreadyExists",
    `${qualifiedName(type)} "${name}" already exists`,
    details(type, name),
  );
}

/** The message of an optimistic-concurrency conflict. */
export const MODIFIED_MESSAGE =
  "the object has been modified; please apply your changes to the latest version and try again";

/** 409 Conflict `Operation cannot be fulfilled on secrets "x": <why>`. */
export function conflict(type: ResourceType, name: string, why = MODIFIED_MESSAGE): KubeApiError {
  return new KubeApiError(
    409,
    "Conflict",
    `Operation cannot be fulfilled on ${qualifiedName(type)} "${name}": ${why}`,
    details(type, name),
  );
}

/** 400 BadRequest. */
export function badRequest(message: string): KubeApiError {
  return new KubeApiError(400, "BadRequest", message);
}

/** 422 Invalid, with one cause per field error. */
export function invalid(
  type: ResourceType,
  name: string,
  causes: { reason: string; message: string; field: string }[],
): KubeApiError {
  const text = causes.map((cause) => `${cause.field}: ${cause.message}`);
  return new KubeApiError(
    422,
    "Invalid",
    `${type.kind} "${name}" is invalid: ${text.length === 1 ? text[0] : `[${text.join(", ")}]`}`,
    {
      name,
      ...(type.group ? { group: type.group } : {}),
      kind: type.kind,
      causes,
    },
  );
}

/** 410 Expired `too old resource version: N (M)`. */
export function expired(requested: number, oldest: number): KubeApiError {
  return new KubeApiError(
    410,
    "Expired",
    `too old resource version: ${requested} (${oldest})`,
  );
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

/** A deep copy of a JSON value. */
export function clone<T>(value: T): T {
  return value === undefined ? value : JSON.parse(JSON.stringify(value));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Deep equality of JSON values (key order ignored). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, index) => jsonEqual(item, b[index]));
  }
  if (!isPlainObject(a) || !isPlainObject(b)) return false;
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const key of keys) {
    if (!jsonEqual(a[key], b[key])) return false;
  }
  return true;
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return clone(patch);
  const result: Record<string, unknown> = isPlainObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

/**
 * A strategic merge patch treated as a merge patch: the `$patch: replace|delete` directives on
 * maps are honoured and the list-ordering directives (`$setElementOrder/…`, `$retainKeys`,
 * `$deleteFromPrimitiveList/…`) are dropped. Lists are replaced, not merged by key.
 */
export function strategicMergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return clone(patch);
  if (patch["$patch"] === "replace") return stripDirectives(patch);
  const result: Record<string, unknown> = isPlainObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith("$")) continue;
    if (value === null || (isPlainObject(value) && value["$patch"] === "delete")) {
      delete result[key];
    } else {
      result[key] = strategicMergePatch(result[key], value);
    }
  }
  return result;
}

function stripDirectives(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(stripDirectives);
  if (!isPlainObject(value)) return value;
  return Object.fromEntries(
    Object.entries(value).filter(([key]) => !key.startsWith("$")).map((
      [key, item],
    ) => [key, stripDirectives(item)]),
  );
}

function pointer(path: string): string[] {
  if (path === "") return [];
  if (!path.startsWith("/")) throw badRequest(`invalid JSON pointer: "${path}"`);
  return path.slice(1).split("/").map((part) => part.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function walk(doc: unknown, parts: string[], op: string): unknown {
  let node = doc;
  for (const part of parts) {
    if (Array.isArray(node)) node = node[Number(part)];
    else if (isPlainObject(node)) node = node[part];
    else node = undefined;
    if (node === undefined) {
      throw new KubeApiError(
        422,
        "Invalid",
        `jsonpatch ${op} operation does not apply: doc is missing path: "/${parts.join("/")}"`,
      );
    }
  }
  return node;
}

/** RFC 6902 JSON patch (add, remove, replace, move, copy, test). */
export function jsonPatch(document: unknown, operations: unknown): unknown {
  if (!Array.isArray(operations)) throw badRequest("json patch must be an array of operations");
  let doc = clone(document);
  const readPath = (parts: string[], op: string) => walk(doc, parts, op);
  const remove = (parts: string[], op: string) => {
    const parent = walk(doc, parts.slice(0, -1), op);
    const last = parts[parts.length - 1];
    if (Array.isArray(parent)) {
      const index = Number(last);
      if (!(index >= 0 && index < parent.length)) walk(doc, parts, op);
      return parent.splice(index, 1)[0];
    }
    const record = parent as Record<string, unknown>;
    if (!(last in record)) walk(doc, parts, op);
    const old = record[last];
    delete record[last];
    return old;
  };
  const add = (parts: string[], value: unknown, op: string, replace: boolean) => {
    if (parts.length === 0) {
      doc = clone(value);
      return;
    }
    const parent = walk(doc, parts.slice(0, -1), op);
    const last = parts[parts.length - 1];
    if (Array.isArray(parent)) {
      const index = last === "-" ? parent.length : Number(last);
      if (replace) parent[index] = clone(value);
      else parent.splice(index, 0, clone(value));
    } else if (isPlainObject(parent)) {
      parent[last] = clone(value);
    } else {
      walk(doc, parts, op);
    }
  };
  for (const operation of operations) {
    if (!isPlainObject(operation)) throw badRequest("invalid json patch operation");
    const op = String(operation.op);
    const path = pointer(String(operation.path ?? ""));
    switch (op) {
      case "add":
        add(path, operation.value, op, false);
        break;
      case "replace":
        readPath(path, op);
        add(path, operation.value, op, true);
        break;
      case "remove":
        remove(path, op);
        break;
      case "move": {
        const value = remove(pointer(String(operation.from ?? "")), op);
        add(path, value, op, false);
        break;
      }
      case "copy":
        add(path, readPath(pointer(String(operation.from ?? "")), op), op, false);
        break;
      case "test":
        if (!jsonEqual(readPath(path, op), operation.value)) {
          throw new KubeApiError(
            422,
            "Invalid",
            `testing value ${operation.path} failed: test failed`,
          );
        }
        break;
      default:
        throw badRequest(`Unexpected kind: ${op}`);
    }
  }
  return doc;
}

// ---------------------------------------------------------------------------------------------
// Selectors

/** A compiled label or field selector. */
export type Selector = (object: KubeObject) => boolean;

function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const char of text) {
    if (char === "(") depth++;
    if (char === ")") depth--;
    if (char === "," && depth === 0) {
      parts.push(current);
      current = "";
    } else {
      current += char;
    }
  }
  parts.push(current);
  return parts.map((part) => part.trim()).filter((part) => part !== "");
}

/**
 * Parses a label selector: `a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`,
 * comma-separated (all must hold).
 */
export function parseLabelSelector(text: string | null): Selector {
  if (!text) return () => true;
  const requirements = splitTopLevel(text).map((part): Selector => {
    const labels = (object: KubeObject) => object.metadata?.labels ?? {};
    let match = part.match(/^(\S+)\s+(in|notin)\s+\((.*)\)$/);
    if (match) {
      const [, key, op, list] = match;
      const values = list.split(",").map((value) => value.trim());
      return op === "in"
        ? (object) => key in labels(object) && values.includes(labels(object)[key])
        : (object) => !(key in labels(object)) || !values.includes(labels(object)[key]);
    }
    match = part.match(/^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/);
    if (match) {
      const [, key, op, value] = match;
      return op === "!="
        ? (object) => labels(object)[key] !== value
        : (object) => labels(object)[key] === value;
    }
    if (part.startsWith("!")) {
      const key = part.slice(1).trim();
      return (object) => !(key in labels(object));
    }
    if (/^[^=!\s(),]+$/.test(part)) return (object) => part in labels(object);
    throw badRequest(
      `unable to parse requirement: found '${part}', expected: in, notin, =, ==, !=`,
    );
  });
  return (object) => requirements.every((requirement) => requirement(object));
}

/** Parses a field selector: `metadata.name=x`, `metadata.namespace!=y`, `type=Opaque`, …. */
export function parseFieldSelector(text: string | null): Selector {
  if (!text) return () => true;
  const requirements = splitTopLevel(text).map((part): Selector => {
    const match = part.match(/^([^=!]+?)\s*(==|=|!=)\s*(.*)$/);
    if (!match) throw badRequest(`invalid selector: '${text}'; can't understand '${part}'`);
    const [, path, op, value] = match;
    const read = (object: KubeObject) => {
      let node: unknown = object;
      for (const key of path.split(".")) node = isPlainObject(node) ? node[key] : undefined;
      return node === undefined || node === null ? "" : String(node);
    };
    return op === "!=" ? (object) => read(object) !== value : (object) => read(object) === value;
  });
  return (object) => requirements.every((requirement) => requirement(object));
}

// ---------------------------------------------------------------------------------------------
// Validation and normalisation

const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const SUBDOMAIN_MESSAGE =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or " +
  "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used " +
  "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function validateName(type: ResourceType, name: string | undefined): void {
  if (!name) {
    throw invalid(type, "", [{
      reason: "FieldValueRequired",
      message: "Required value: name or generateName is required",
      field: "metadata.name",
    }]);
  }
  if (name.length > 253 || !SUBDOMAIN.test(name)) {
    throw invalid(type, name, [{
      reason: "FieldValueInvalid",
      message: `Invalid value: "${name}": ${SUBDOMAIN_MESSAGE}`,
      field: "metadata.name",
    }]);
  }
}

function utf8ToBase64(text: string): string {
  let binary = "";
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** What the real server does on every write of a type: defaults and data normalisation. */
function normalise(type: ResourceType, object: KubeObject): void {
  if (type.kind === "Secret") {
    if (isPlainObject(object.stringData)) {
      const data = isPlainObject(object.data) ? object.data : {};
      for (const [key, value] of Object.entries(object.stringData)) {
        data[key] = utf8ToBase64(String(value));
      }
      object.data = data;
    }
    delete object.stringData;
    if (object.type === undefined || object.type === "") object.type = "Opaque";
    for (const [key, value] of Object.entries(isPlainObject(object.data) ? object.data : {})) {
      if (typeof value !== "string" || !BASE64.test(value)) {
        throw badRequest(
          `Secret in version "v1" cannot be handled as a Secret: illegal base64 data at ` +
            `input for key "${key}"`,
        );
      }
    }
  }
  if (type.kind === "Namespace") {
    const spec = isPlainObject(object.spec) ? object.spec : (object.spec = {});
    if (!Array.isArray(spec.finalizers)) spec.finalizers = ["kubernetes"];
    object.status = { phase: "Active" };
    const labels = object.metadata?.labels ?? {};
    labels["kubernetes.io/metadata.name"] = object.metadata?.name ?? "";
    if (object.metadata) object.metadata.labels = labels;
  }
  if (type.kind === "Pod") {
    const spec = isPlainObject(object.spec) ? object.spec : (object.spec = {});
    if (!spec.serviceAccountName) spec.serviceAccountName = spec.serviceAccount ?? "default";
    spec.serviceAccount = spec.serviceAccountName;
    if (!isPlainObject(object.status)) object.status = { phase: "Pending" };
  }
}

function immutableCheck(type: ResourceType, old: KubeObject, next: KubeObject): void {
  if ((type.kind !== "Secret" && type.kind !== "ConfigMap") || old.immutable !== true) return;
  for (const field of ["data", "binaryData", "immutable"]) {
    if (!jsonEqual(old[field], next[field])) {
      throw invalid(type, old.metadata?.name ?? "", [{
        reason: "FieldValueForbidden",
        message: "Forbidden: field is immutable when `immutable` is set",
        field,
      }]);
    }
  }
}

function withoutMetadataAndStatus(object: KubeObject): KubeObject {
  const { metadata: _metadata, status: _status, ...rest } = object;
  return rest;
}

// ---------------------------------------------------------------------------------------------
// The store

/** One change, as recorded in the history and delivered to watchers. */
export interface StoreEvent {
  type: "ADDED" | "MODIFIED" | "DELETED";
  /** The resourceVersion the change produced. */
  rv: number;
  resource: ResourceType;
  /** The object after the change (for DELETED: the last state, at the delete's version). */
  object: KubeObject;
  /** The object before the change (MODIFIED only), for selector-filtered watches. */
  previous?: KubeObject;
}

/** Options of the write verbs. */
export interface WriteOptions {
  /** `dryRun=All`: validate and answer, but store nothing. */
  dryRun?: boolean;
}

/** The patch content types the server accepts. */
export type PatchType = "merge" | "strategic" | "json" | "apply";

/** The random five-character suffix of `generateName`. */
function nameSuffix(): string {
  const alphabet = "bcdfghjklmnpqrstvwxz2456789";
  let suffix = "";
  for (let index = 0; index < 5; index++) {
    suffix += alphabet[Math.floor(Math.random() * alphabet.length)];
  }
  return suffix;
}

/** Objects by type, namespace and name, plus the bounded history of changes. */
export class KubeStore {
  /** How many past events are kept for watches to resume from. */
  historyLimit: number;
  #rv: number;
  /** Watches may resume from any resourceVersion >= this one. */
  #oldest: number;
  #objects = new Map<ResourceType, Map<string, KubeObject>>();
  #history: StoreEvent[] = [];
  #listeners = new Set<(event: StoreEvent) => void>();

  constructor(historyLimit = 100, initialResourceVersion = 100) {
    this.historyLimit = historyLimit;
    this.#rv = initialResourceVersion;
    this.#oldest = initialResourceVersion;
    for (const name of ["default", "kube-node-lease", "kube-public", "kube-system"]) {
      this.#ensureNamespace(name);
    }
  }

  /** The current (latest) resourceVersion. */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** The oldest resourceVersion a watch can still resume from. */
  get oldestResourceVersion(): number {
    return this.#oldest;
  }

  /** The storage key: `namespace/name`, or `/name` for cluster-scoped types. */
  #key(type: ResourceType, namespace: string, name: string): string {
    return `${type.namespaced ? namespace : ""}/${name}`;
  }

  #bucket(type: ResourceType): Map<string, KubeObject> {
    let bucket = this.#objects.get(type);
    if (!bucket) this.#objects.set(type, bucket = new Map());
    return bucket;
  }

  /** A copy of one object, or undefined. */
  get(type: ResourceType, namespace: string, name: string): KubeObject | undefined {
    return clone(this.#bucket(type).get(this.#key(type, namespace, name)));
  }

  /** Copies of the objects of a type, in one namespace or all, ordered by namespace and name. */
  list(type: ResourceType, namespace?: string): KubeObject[] {
    return [...this.#bucket(type).entries()]
      .filter(([key]) =>
        namespace === undefined || key.startsWith(`${type.namespaced ? namespace : ""}/`)
      )
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, object]) => clone(object));
  }

  /** Calls `listener` for each committed change until the returned function is called. */
  subscribe(listener: (event: StoreEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * The retained events after `rv`, or an Expired error when `rv` is older than the history.
   */
  eventsSince(rv: number): StoreEvent[] {
    if (rv < this.#oldest) throw expired(rv, this.#oldest);
    return this.#history.filter((event) => event.rv > rv).map((event) => ({
      ...event,
      object: clone(event.object),
      previous: clone(event.previous),
    }));
  }

  /** Forgets all history: watches from any resourceVersion before now get 410 Expired. */
  expireHistory(): void {
    this.#history = [];
    this.#oldest = this.#rv;
  }

  #commit(
    type: ResourceType,
    eventType: StoreEvent["type"],
    object: KubeObject,
    previous?: KubeObject,
  ): KubeObject {
    const rv = ++this.#rv;
    const metadata = object.metadata!;
    metadata.resourceVersion = String(rv);
    const key = `${metadata.namespace ?? ""}/${metadata.name}`;
    if (eventType === "DELETED") this.#bucket(type).delete(key);
    else this.#bucket(type).set(key, clone(object));
    const event: StoreEvent = {
      type: eventType,
      rv,
      resource: type,
      object: clone(object),
      ...(previous ? { previous: clone(previous) } : {}),
    };
    this.#history.push(event);
    while (this.#history.length > Math.max(0, this.historyLimit)) {
      const dropped = this.#history.shift()!;
      this.#oldest = dropped.rv;
    }
    for (const listener of [...this.#listeners]) listener(event);
    return clone(object);
  }

  /** POST: creates `body` in `namespace`. */
  create(
    type: ResourceType,
    namespace: string,
    body: KubeObject,
    options: WriteOptions = {},
  ): KubeObject {
    if (!isPlainObject(body)) throw badRequest("the request body must be a JSON object");
    const object = clone(body);
    const metadata: ObjectMeta = isPlainObject(object.metadata) ? object.metadata : {};
    object.metadata = metadata;
    if (type.namespaced && metadata.namespace && metadata.namespace !== namespace) {
      throw badRequest(
        "the namespace of the provided object does not match the namespace sent on the request",
      );
    }
    if (!type.namespaced) namespace = "";
    if (metadata.resourceVersion) {
      throw badRequest("resourceVersion should not be set on objects to be created");
    }
    if (!metadata.name && metadata.generateName) {
      metadata.name = `${metadata.generateName}${nameSuffix()}`;
    }
    validateName(type, metadata.name);
    const name = metadata.name!;
    if (this.#bucket(type).has(this.#key(type, namespace, name))) throw alreadyExists(type, name);
    object.apiVersion = apiVersionOf(type);
    object.kind = type.kind;
    normalise(type, object);
    object.metadata = {
      ...metadata,
      name,
      ...(type.namespaced ? { namespace } : {}),
      uid: crypto.randomUUID(),
      ...(type.hasGeneration ? { generation: 1 } : {}),
      creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    };
    if (options.dryRun) return object;
    if (type.namespaced) this.#ensureNamespace(namespace);
    return this.#commit(type, "ADDED", object);
  }

  /**
   * The NamespaceLifecycle admission of the real server refuses writes into a missing
   * namespace; the fake instead creates the namespace on first use, so tests need no setup.
   */
  #ensureNamespace(namespace: string): void {
    const namespaces = resourceType("namespaces");
    if (this.#bucket(namespaces).has(`/${namespace}`)) return;
    this.create(namespaces, "", { metadata: { name: namespace } });
  }

  /**
   * PUT: replaces `name` with `body`. A `metadata.resourceVersion` in the body must be the
   * current one (else 409 Conflict); an absent one updates unconditionally. An update that
   * changes nothing keeps the resourceVersion and emits no event, as on the real server.
   */
  update(
    type: ResourceType,
    namespace: string,
    name: string,
    body: KubeObject,
    options: WriteOptions = {},
  ): KubeObject {
    if (!isPlainObject(body)) throw badRequest("the request body must be a JSON object");
    const existing = this.#bucket(type).get(this.#key(type, namespace, name));
    const metadata: ObjectMeta = isPlainObject(body.metadata) ? body.metadata : {};
    if (metadata.name !== undefined && metadata.name !== name) {
      throw badRequest(
        `the name of the object (${metadata.name}) does not match the name on the URL (${name})`,
      );
    }
    if (type.namespaced && metadata.namespace && metadata.namespace !== namespace) {
      throw badRequest(
        "the namespace of the provided object does not match the namespace sent on the request",
      );
    }
    if (!existing) throw notFound(type, name);
    return this.#replace(type, existing, clone(body), options);
  }

  #replace(
    type: ResourceType,
    existing: KubeObject,
    object: KubeObject,
    options: WriteOptions,
  ): KubeObject {
    const old = existing.metadata!;
    const metadata: ObjectMeta = isPlainObject(object.metadata) ? object.metadata : {};
    if (metadata.resourceVersion && metadata.resourceVersion !== old.resourceVersion) {
      throw conflict(type, old.name!);
    }
    if (metadata.uid && metadata.uid !== old.uid) {
      throw conflict(
        type,
        old.name!,
        `Precondition failed: UID in precondition: ${metadata.uid}, UID in object meta: ${old.uid}`,
      );
    }
    object.apiVersion = apiVersionOf(type);
    object.kind = type.kind;
    normalise(type, object);
    immutableCheck(type, existing, object);
    const generation = (old.generation ?? 1) +
      (type.hasGeneration &&
          !jsonEqual(withoutMetadataAndStatus(existing), withoutMetadataAndStatus(object))
        ? 1
        : 0);
    object.metadata = {
      ...metadata,
      name: old.name,
      ...(type.namespaced ? { namespace: old.namespace } : {}),
      uid: old.uid,
      resourceVersion: old.resourceVersion,
      ...(type.hasGeneration ? { generation } : {}),
      creationTimestamp: old.creationTimestamp,
    };
    if (!type.hasGeneration) delete object.metadata.generation;
    if (jsonEqual(object, existing) || options.dryRun) return clone(object);
    return this.#commit(type, "MODIFIED", object, existing);
  }

  /**
   * PATCH `name` with `patch` of a type. `apply` (server-side apply) creates an absent object
   * and is otherwise a merge patch (no field ownership, so never a conflict between managers).
   */
  patch(
    type: ResourceType,
    namespace: string,
    name: string,
    patchType: PatchType,
    patch: unknown,
    options: WriteOptions = {},
  ): { object: KubeObject; created: boolean } {
    const existing = this.#bucket(type).get(this.#key(type, namespace, name));
    if (patchType === "apply") {
      if (!isPlainObject(patch)) throw badRequest("apply patch must be an object");
      const metadata = isPlainObject(patch.metadata) ? patch.metadata : {};
      if (metadata.name !== name) {
        throw badRequest(
          `the name of the object (${metadata.name}) does not match the name on the URL (${name})`,
        );
      }
      if (!existing) {
        return {
          object: this.create(type, namespace, patch as KubeObject, options),
          created: true,
        };
      }
    }
    if (!existing) throw notFound(type, name);
    let result: unknown;
    switch (patchType) {
      case "merge":
      case "apply":
        result = mergePatch(existing, patch);
        break;
      case "strategic":
        result = strategicMergePatch(existing, patch);
        break;
      case "json":
        result = jsonPatch(existing, patch);
        break;
    }
    if (!isPlainObject(result)) throw badRequest("the patch must produce an object");
    const patched = result as KubeObject;
    const metadata: ObjectMeta = isPlainObject(patched.metadata) ? patched.metadata : {};
    if (metadata.name !== name) {
      throw badRequest(
        `the name of the object (${metadata.name}) does not match the name on the URL (${name})`,
      );
    }
    // The existing resourceVersion stays unless the patch sets one: only then is it a
    // precondition (409 Conflict when stale).
    patched.metadata = metadata;
    return { object: this.#replace(type, existing, patched, options), created: false };
  }

  /** DELETE `name`, honouring `preconditions.uid` / `preconditions.resourceVersion`. */
  delete(
    type: ResourceType,
    namespace: string,
    name: string,
    preconditions: { uid?: string; resourceVersion?: string } = {},
    options: WriteOptions = {},
  ): KubeObject {
    const existing = this.#bucket(type).get(this.#key(type, namespace, name));
    if (!existing) throw notFound(type, name);
    const metadata = existing.metadata!;
    if (preconditions.uid && preconditions.uid !== metadata.uid) {
      throw conflict(
        type,
        name,
        `Precondition failed: UID in precondition: ${preconditions.uid}, UID in object meta: ${metadata.uid}`,
      );
    }
    if (
      preconditions.resourceVersion && preconditions.resourceVersion !== metadata.resourceVersion
    ) {
      throw conflict(
        type,
        name,
        `Precondition failed: ResourceVersion in precondition: ${preconditions.resourceVersion}, ` +
          `ResourceVersion in object meta: ${metadata.resourceVersion}`,
      );
    }
    if (options.dryRun) return clone(existing);
    if (type.kind === "Namespace") {
      // The namespace controller's work, done at once: everything in it goes first.
      for (const [contained, bucket] of this.#objects) {
        for (const key of [...bucket.keys()]) {
          if (contained.namespaced && key.startsWith(`${name}/`)) {
            this.#commit(contained, "DELETED", clone(bucket.get(key)!));
          }
        }
      }
    }
    return this.#commit(type, "DELETED", clone(existing));
  }

  /**
   * Test helper: creates or replaces `object` unconditionally (no resourceVersion check),
   * bumping the resourceVersion and notifying watchers as a write through the API would.
   */
  put(type: ResourceType, namespace: string, object: KubeObject): KubeObject {
    const name = object.metadata?.name;
    const body = clone(object);
    if (body.metadata) {
      delete body.metadata.resourceVersion;
      delete body.metadata.uid;
      if (type.namespaced) body.metadata.namespace = namespace;
      else delete body.metadata.namespace;
    }
    const existing = name === undefined
      ? undefined
      : this.#bucket(type).get(this.#key(type, namespace, name));
    if (!existing) return this.create(type, namespace, body);
    return this.#replace(type, existing, body, {});
  }

  /** Test helper: deletes `name` if present; true when it was. */
  remove(type: ResourceType, namespace: string, name: string): boolean {
    if (!this.#bucket(type).has(this.#key(type, namespace, name))) return false;
    this.delete(type, namespace, name);
    return true;
  }
}

/** Parses a request body: JSON, or YAML for `application/yaml` and apply patches. */
export function parseBody(text: string, contentType: string): unknown {
  if (text.trim() === "") throw badRequest("the request body is empty");
  try {
    if (/yaml/i.test(contentType)) return parseYaml(text);
    return JSON.parse(text);
  } catch (error) {
    throw badRequest(`the body of the request could not be decoded: ${(error as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Protobuf request bodies

/**
 * kubectl's typed clients (`kubectl create secret|configmap|serviceaccount|namespace`) send
 * `application/vnd.kubernetes.protobuf`: the magic `k8s\0`, then a `runtime.Unknown` message
 * (typeMeta = 1 {apiVersion = 1, kind = 2}, raw = 2) whose raw bytes are the object. This
 * decodes the few kinds the fake stores as core v1 protobuf; others get 415.
 */
export function decodeProtobuf(bytes: Uint8Array): KubeObject {
  const magic = [0x6b, 0x38, 0x73, 0x00];
  if (bytes.length < 4 || magic.some((byte, index) => bytes[index] !== byte)) {
    throw badRequest("the protobuf body does not start with the k8s magic");
  }
  const unknown = fields(bytes.subarray(4));
  const typeMeta = fields(unknown.bytes(1) ?? new Uint8Array());
  const apiVersion = typeMeta.string(1) ?? "";
  const kind = typeMeta.string(2) ?? "";
  const raw = fields(unknown.bytes(2) ?? new Uint8Array());
  const object: KubeObject = { apiVersion, kind };
  const metadata = raw.bytes(1);
  if (metadata) object.metadata = objectMeta(fields(metadata));
  const base64 = (value: Uint8Array) => {
    let binary = "";
    for (const byte of value) binary += String.fromCharCode(byte);
    return btoa(binary);
  };
  switch (`${apiVersion}/${kind}`) {
    case "v1/Secret":
      setIf(object, "data", raw.map(2, base64));
      setIf(object, "type", raw.string(3));
      setIf(object, "stringData", raw.map(4, utf8));
      setIf(object, "immutable", raw.bool(5));
      break;
    case "v1/ConfigMap":
      setIf(object, "data", raw.map(2, utf8));
      setIf(object, "binaryData", raw.map(3, base64));
      setIf(object, "immutable", raw.bool(4));
      break;
    case "v1/ServiceAccount": {
      const secrets = raw.all(2).map((entry) => {
        const reference = fields(entry);
        const names = ["kind", "namespace", "name", "uid", "apiVersion", "resourceVersion"];
        return Object.fromEntries(
          names.map((name, index) => [name, reference.string(index + 1)])
            .filter(([, value]) => value !== undefined),
        );
      });
      if (secrets.length) object.secrets = secrets;
      const pullSecrets = raw.all(3).map((entry) => ({ name: fields(entry).string(1) }));
      if (pullSecrets.length) object.imagePullSecrets = pullSecrets;
      setIf(object, "automountServiceAccountToken", raw.bool(4));
      break;
    }
    case "v1/Namespace": {
      const spec = raw.bytes(2);
      const finalizers = spec ? fields(spec).all(1).map(utf8) : [];
      if (finalizers.length) object.spec = { finalizers };
      break;
    }
    default:
      throw new KubeApiError(
        415,
        "UnsupportedMediaType",
        `the fake kube-apiserver decodes protobuf only for v1 Secret, ConfigMap, ` +
          `ServiceAccount and Namespace, not ${apiVersion}/${kind}; send application/json`,
      );
  }
  return object;
}

function utf8(value: Uint8Array): string {
  return new TextDecoder().decode(value);
}

function setIf(object: Record<string, unknown>, key: string, value: unknown): void {
  if (value !== undefined) object[key] = value;
}

function objectMeta(meta: ProtoFields): ObjectMeta {
  const result: ObjectMeta = {};
  const strings: [number, string][] = [
    [1, "name"],
    [2, "generateName"],
    [3, "namespace"],
    [5, "uid"],
    [6, "resourceVersion"],
  ];
  for (const [number, name] of strings) {
    // Go marshals unset strings as "" where JSON would omit them.
    const value = meta.string(number);
    if (value) result[name] = value;
  }
  setIf(result, "labels", meta.map(11, utf8));
  setIf(result, "annotations", meta.map(12, utf8));
  const finalizers = meta.all(14).map(utf8);
  if (finalizers.length) result.finalizers = finalizers;
  const owners = meta.all(13).map((entry) => {
    const owner = fields(entry);
    const reference: Record<string, unknown> = {};
    setIf(reference, "apiVersion", owner.string(5));
    setIf(reference, "kind", owner.string(1));
    setIf(reference, "name", owner.string(3));
    setIf(reference, "uid", owner.string(4));
    setIf(reference, "controller", owner.bool(6));
    setIf(reference, "blockOwnerDeletion", owner.bool(7));
    return reference;
  });
  if (owners.length) result.ownerReferences = owners;
  return result;
}

interface ProtoFields {
  bytes(number: number): Uint8Array | undefined;
  string(number: number): string | undefined;
  bool(number: number): boolean | undefined;
  all(number: number): Uint8Array[];
  map<T>(number: number, value: (bytes: Uint8Array) => T): Record<string, T> | undefined;
}

/** Splits a protobuf message into its fields (varints as numbers, the rest as bytes). */
function fields(message: Uint8Array): ProtoFields {
  const found = new Map<number, (Uint8Array | number)[]>();
  let offset = 0;
  const varint = (): number => {
    let result = 0;
    let scale = 1;
    while (true) {
      if (offset >= message.length) throw badRequest("truncated protobuf body");
      const byte = message[offset++];
      result += (byte & 0x7f) * scale;
      scale *= 128;
      if (byte < 0x80) return result;
    }
  };
  while (offset < message.length) {
    const key = varint();
    const number = Math.floor(key / 8);
    let value: Uint8Array | number;
    switch (key & 7) {
      case 0:
        value = varint();
        break;
      case 1:
        value = message.subarray(offset, offset += 8);
        break;
      case 2: {
        const length = varint();
        value = message.subarray(offset, offset += length);
        break;
      }
      case 5:
        value = message.subarray(offset, offset += 4);
        break;
      default:
        throw badRequest(`unsupported protobuf wire type ${key & 7}`);
    }
    const list = found.get(number) ?? [];
    list.push(value);
    found.set(number, list);
  }
  const last = (number: number) => found.get(number)?.at(-1);
  const all = (number: number) =>
    (found.get(number) ?? []).filter((value): value is Uint8Array => value instanceof Uint8Array);
  return {
    bytes: (number) => {
      const value = last(number);
      return value instanceof Uint8Array ? value : undefined;
    },
    string: (number) => {
      const value = last(number);
      return value instanceof Uint8Array ? utf8(value) : undefined;
    },
    bool: (number) => {
      const value = last(number);
      return typeof value === "number" ? value !== 0 : undefined;
    },
    all,
    map: (number, decode) => {
      const entries = all(number);
      if (entries.length === 0) return undefined;
      return Object.fromEntries(entries.map((entry) => {
        const pair = fields(entry);
        return [pair.string(1) ?? "", decode(pair.bytes(2) ?? new Uint8Array())];
      }));
    },
  };
}
