/**
 * A small in-memory fake of the Kubernetes store's port ({@link KubeApi}): objects in a map
 * keyed by their path (`/api/v1/namespaces/<ns>/<plural>/<name>`), a global resourceVersion
 * counter bumped on every write, and the API server's answers as the real client reports them:
 * {@link KubeApiError} 404 NotFound, 409 AlreadyExists (POST of an existing name), 409 Conflict
 * (PUT with a stale resourceVersion). `list` + `watch` serve one collection with a
 * `metadata.name=` field selector, enough for the store's watch.
 *
 * Tests script races and outages with {@link FakeKubeApi.before} (run something just before
 * the next matching call: another replica's write, or a thrown error) and read what was sent
 * in {@link FakeKubeApi.calls}.
 *
 * @module
 */
import type { KubeApi } from "../../src/stores/kubernetes.ts";
import {
  KubeApiError,
  type KubeCallOptions,
  type KubeList,
  type KubeListOptions,
  KubeRequestError,
  type KubeWatchOptions,
  type WatchEvent,
} from "../../src/kubernetes/client.ts";

/** A stored object (JSON). */
export interface FakeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [key: string]: unknown;
  };
  data?: Record<string, string>;
  [key: string]: unknown;
}

/** One call the fake answered (or refused). */
export interface FakeCall {
  method: "GET" | "POST" | "PUT" | "LIST" | "WATCH";
  path: string;
  /** The body sent (a copy), for POST and PUT. */
  body?: FakeObject;
  /** Set when a scripted failure ({@link FakeKubeApi.before}) made the call throw. */
  refused?: boolean;
}

type Method = FakeCall["method"];

interface Hook {
  method: Method;
  path?: string | RegExp;
  run: (call: FakeCall) => void;
}

interface Watcher {
  collection: string;
  name?: string;
  onEvent: (event: WatchEvent<FakeObject>) => void | Promise<void>;
}

const SERVER = "https://kube.fake:6443";

/** Splits `/api/v1/namespaces/ns/secrets/name` into collection, plural and name. */
function split(path: string): { collection: string; plural: string; name: string } {
  const at = path.lastIndexOf("/");
  const collection = path.slice(0, at);
  return {
    collection,
    plural: collection.slice(collection.lastIndexOf("/") + 1),
    name: decodeURIComponent(path.slice(at + 1)),
  };
}

/** The API server's failure answer, as the real client throws it. */
export function apiError(
  method: string,
  path: string,
  status: number,
  reason: string,
  apiMessage: string,
): KubeApiError {
  return new KubeApiError({
    method,
    path,
    status,
    reason,
    apiMessage,
    statusObject: {
      kind: "Status",
      apiVersion: "v1",
      status: "Failure",
      message: apiMessage,
      reason,
      code: status,
    },
  });
}

/** The API server unreachable (connection refused), as the real client throws it. */
export function unreachable(method: string, path: string): KubeRequestError {
  return new KubeRequestError({
    method,
    path,
    server: SERVER,
    code: "ECONNREFUSED",
    detail: "connect ECONNREFUSED 127.0.0.1:6443",
    attempts: 5,
  });
}

/** The in-memory API server. Every answer is a copy: callers cannot change stored objects. */
export class FakeKubeApi implements KubeApi {
  /** Stored objects by path. */
  readonly objects = new Map<string, FakeObject>();
  /** Every call, in order. */
  readonly calls: FakeCall[] = [];
  #resourceVersion = 1000;
  #hooks: Hook[] = [];
  #watchers = new Set<Watcher>();

  /** Stores `object` at `path` as an out-of-band writer would (kubectl, Helm, another replica). */
  put(path: string, object: FakeObject): FakeObject {
    const stored = structuredClone(object);
    stored.metadata.resourceVersion = String(++this.#resourceVersion);
    const existed = this.objects.has(path);
    this.objects.set(path, stored);
    this.#notify(path, existed ? "MODIFIED" : "ADDED", stored);
    return structuredClone(stored);
  }

  /** The object at `path` (a copy), or undefined. */
  read(path: string): FakeObject | undefined {
    const object = this.objects.get(path);
    return object === undefined ? undefined : structuredClone(object);
  }

  /** The POSTs and PUTs the fake accepted (stored), in order; not {@link put}'s writes. */
  readonly accepted: FakeCall[] = [];

  /**
   * Runs `run` once, just before the next `method` call whose path matches (`path` a string:
   * exactly; a RegExp: tested). `run` may write (a racing writer) or throw (an outage: the
   * call then fails with that error, and nothing is stored).
   */
  before(method: Method, path: string | RegExp | undefined, run: (call: FakeCall) => void): void {
    this.#hooks.push({ method, path, run });
  }

  /** Makes every call matching `method` (all methods if undefined) throw `error()`, always. */
  failAlways(method: Method | undefined, error: (call: FakeCall) => Error): void {
    const hook: Hook = {
      method: method ?? "GET",
      run: (call) => {
        this.#hooks.push(hook); // re-armed: fails every time
        throw error(call);
      },
    };
    if (method === undefined) {
      for (const m of ["GET", "POST", "PUT", "LIST", "WATCH"] as const) {
        this.failAlways(m, error);
      }
      return;
    }
    this.#hooks.push(hook);
  }

  #enter(call: FakeCall): void {
    this.calls.push(call);
    const index = this.#hooks.findIndex((hook) =>
      hook.method === call.method &&
      (hook.path === undefined ||
        (typeof hook.path === "string" ? hook.path === call.path : hook.path.test(call.path)))
    );
    if (index < 0) return;
    const [hook] = this.#hooks.splice(index, 1);
    try {
      hook.run(call);
    } catch (error) {
      call.refused = true;
      throw error;
    }
  }

  #notify(path: string, type: WatchEvent<FakeObject>["type"], object: FakeObject): void {
    const { collection, name } = split(path);
    for (const watcher of this.#watchers) {
      if (watcher.collection !== collection) continue;
      if (watcher.name !== undefined && watcher.name !== name) continue;
      void watcher.onEvent({ type, object: structuredClone(object) });
    }
  }

  /** GET one object: NotFound when absent. */
  get<T>(path: string, _options?: KubeCallOptions): Promise<T> {
    return Promise.resolve().then(() => {
      this.#enter({ method: "GET", path });
      const object = this.objects.get(path);
      if (!object) {
        const { plural, name } = split(path);
        throw apiError("GET", path, 404, "NotFound", `${plural} "${name}" not found`);
      }
      return structuredClone(object) as T;
    });
  }

  /** POST to a collection: AlreadyExists when the name is taken. */
  create<T>(collection: string, body: unknown, _options?: KubeCallOptions): Promise<T> {
    return Promise.resolve().then(() => {
      const object = structuredClone(body) as FakeObject;
      this.#enter({ method: "POST", path: collection, body: structuredClone(object) });
      const name = object.metadata.name;
      const path = `${collection}/${encodeURIComponent(name)}`;
      const plural = collection.slice(collection.lastIndexOf("/") + 1);
      if (this.objects.has(path)) {
        throw apiError(
          "POST",
          collection,
          409,
          "AlreadyExists",
          `${plural} "${name}" already exists`,
        );
      }
      if (object.metadata.resourceVersion) {
        throw apiError(
          "POST",
          collection,
          500,
          "InternalError",
          "resourceVersion should not be set on objects to be created",
        );
      }
      this.accepted.push({ method: "POST", path: collection, body: structuredClone(object) });
      return this.put(path, object) as T;
    });
  }

  /** PUT one object: NotFound when absent, Conflict when its resourceVersion is stale. */
  replace<T>(path: string, body: unknown, _options?: KubeCallOptions): Promise<T> {
    return Promise.resolve().then(() => {
      const object = structuredClone(body) as FakeObject;
      this.#enter({ method: "PUT", path, body: structuredClone(object) });
      const current = this.objects.get(path);
      const { plural, name } = split(path);
      if (!current) {
        throw apiError("PUT", path, 404, "NotFound", `${plural} "${name}" not found`);
      }
      const sent = object.metadata.resourceVersion;
      if (sent !== undefined && sent !== current.metadata.resourceVersion) {
        throw apiError(
          "PUT",
          path,
          409,
          "Conflict",
          `Operation cannot be fulfilled on ${plural} "${name}": the object has been modified; ` +
            `please apply your changes to the latest version and try again`,
        );
      }
      this.accepted.push({ method: "PUT", path, body: structuredClone(object) });
      return this.put(path, object) as T;
    });
  }

  /** Lists a collection (honouring a `metadata.name=` field selector). */
  list<T>(collection: string, options: KubeListOptions = {}): Promise<KubeList<T>> {
    return Promise.resolve().then(() => {
      this.#enter({ method: "LIST", path: collection });
      const name = options.fieldSelector?.match(/^metadata\.name=(.*)$/)?.[1];
      const items = [...this.objects].filter(([path]) =>
        split(path).collection === collection && (name === undefined || split(path).name === name)
      ).map(([, object]) => structuredClone(object));
      return {
        kind: "List",
        metadata: { resourceVersion: String(this.#resourceVersion) },
        items: items as T[],
      };
    });
  }

  /** Streams later writes of the collection until `options.signal` aborts. */
  watch<T>(
    collection: string,
    options: KubeWatchOptions,
    onEvent: (event: WatchEvent<T>) => void | Promise<void>,
  ): Promise<void> {
    return Promise.resolve().then(() => {
      this.#enter({ method: "WATCH", path: collection });
      const { signal } = options;
      return new Promise<void>((resolve, reject) => {
        const watcher: Watcher = {
          collection,
          name: options.fieldSelector?.match(/^metadata\.name=(.*)$/)?.[1],
          onEvent: onEvent as Watcher["onEvent"],
        };
        this.#watchers.add(watcher);
        const stop = () => {
          this.#watchers.delete(watcher);
          reject(signal?.reason ?? new DOMException("aborted", "AbortError"));
        };
        if (signal?.aborted) stop();
        signal?.addEventListener("abort", stop, { once: true });
        if (!signal) resolve();
      });
    });
  }

  /** Number of watches open. */
  get watching(): number {
    return this.#watchers.size;
  }
}
