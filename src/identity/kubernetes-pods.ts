/**
 * The pods and Dapr Configurations the KUBERNETES validator (kubernetes.ts) reads from the API
 * server, cached: the Dapr pod annotations it looks at, the parts of a pod and of a
 * Configuration it uses, and {@link PodLookup}, which fetches them (pods as Dapr's sentry does,
 * from the cluster-wide list narrowed to one pod) and keeps them for a while, concurrent
 * lookups of one object sharing one request. API failures are refusals to retry later
 * ({@link apiUnavailable}), never cached.
 *
 * @module
 */
import {
  isNotFound,
  KubeApiError,
  type KubeClient,
  type KubeList,
  KubeRequestError,
} from "../kubernetes/client.ts";
import type { Logger } from "../observability/logger.ts";
import { PromiseCache } from "../util/promise-cache.ts";
import { isRecord } from "../util/records.ts";
import { ValidationError } from "./validator.ts";

/** Pod annotation naming the app id. */
export const APP_ID_ANNOTATION = "dapr.io/app-id";
/** Pod annotation naming the pod's Dapr Configuration. */
export const CONFIG_ANNOTATION = "dapr.io/config";
/** Pod annotation marking a Dapr control-plane service. */
export const CONTROL_PLANE_ANNOTATION = "dapr.io/control-plane";
/** Control-plane services a `dapr.io/control-plane` annotation may name. */
export const CONTROL_PLANE_SERVICES: readonly string[] = [
  "operator",
  "placement",
  "injector",
  "sentry",
  "scheduler",
];
/** Default time pods and Configurations are cached. */
export const DEFAULT_CACHE_TTL_MS = 10_000;
/** Bound on each cache's size. */
export const MAX_CACHE_ENTRIES = 4096;
/** A Kubernetes object name (DNS-1123 subdomain). */
export const OBJECT_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** The parts of a pod the validator reads. */
export interface Pod {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    annotations?: Record<string, string>;
  };
  spec?: { serviceAccountName?: string; serviceAccount?: string };
}

/** The parts of a Dapr Configuration the validator reads. */
export interface Configuration {
  spec?: { accessControl?: { trustDomain?: unknown } };
}

/** A cached pod, with the token pod uids known not to be its uid even after a refetch. */
interface CachedPod {
  pod: Pod;
  otherUids: Set<string>;
}

/** `value` as JSON, for messages. */
export function quote(value: unknown): string {
  return JSON.stringify(value);
}

/**
 * An API failure reading `what` as a refusal to retry later (never INTERNAL), logged as a
 * warning.
 */
export function apiUnavailable(what: string, error: unknown, logger?: Logger): ValidationError {
  const reason = error instanceof KubeApiError || error instanceof KubeRequestError
    ? error.message
    : `${what}: ${(error as Error)?.message ?? String(error)}`;
  logger?.warn(`kubernetes token validator: cannot get ${what}: ${reason}`);
  return new ValidationError(`cannot verify the token now: ${reason}`);
}

/** Constructor options of {@link PodLookup}. */
export interface PodLookupOptions {
  /** Reads pods (list) and Configurations (get). */
  client: Pick<KubeClient, "list" | "get">;
  /** How long pods and Configurations are reused (0: not at all). */
  cacheTtlMs: number;
  /** API failures are logged as warnings. */
  logger?: Logger;
}

/** Pods and Configurations, fetched once per `cacheTtlMs` and shared by concurrent lookups. */
export class PodLookup {
  readonly #client: Pick<KubeClient, "list" | "get">;
  readonly #logger?: Logger;
  readonly #pods: PromiseCache<CachedPod>;
  readonly #configurations: PromiseCache<Configuration>;

  /** Nothing is fetched until the first lookup. */
  constructor(options: PodLookupOptions) {
    this.#client = options.client;
    this.#logger = options.logger;
    const ttl = Math.max(0, options.cacheTtlMs);
    this.#pods = new PromiseCache(() => ttl, MAX_CACHE_ENTRIES);
    this.#configurations = new PromiseCache(() => ttl, MAX_CACHE_ENTRIES);
  }

  /** Forgets every cached pod and Configuration. */
  clear(): void {
    this.#pods.clear();
    this.#configurations.clear();
  }

  /**
   * The pod, cached. When the token names a pod uid other than the cached pod's, the pod may
   * have been recreated under the same name since it was cached: it is fetched once more (a
   * uid that still does not match is then remembered, and the pod used as it is: as in Dapr,
   * the pod is identified by its name; the API server's TokenReview checks the binding).
   * Throws {@link ValidationError} when there is no such pod or it cannot be read now.
   */
  async pod(namespace: string, name: string, tokenUid: unknown): Promise<Pod> {
    const key = `${namespace}/${name}`;
    let fetched = false;
    const load = async (): Promise<CachedPod> => {
      fetched = true;
      return { pod: await this.#fetchPod(namespace, name), otherUids: new Set() };
    };
    const cached = await this.#pods.get(key, load);
    if (
      typeof tokenUid !== "string" || tokenUid === "" || cached.pod.metadata?.uid === tokenUid ||
      cached.otherUids.has(tokenUid)
    ) {
      return cached.pod;
    }
    if (fetched) {
      cached.otherUids.add(tokenUid);
      return cached.pod;
    }
    this.#pods.invalidate(key, cached);
    const fresh = await this.#pods.get(key, load);
    if (fresh.pod.metadata?.uid !== tokenUid) fresh.otherUids.add(tokenUid);
    return fresh.pod;
  }

  /**
   * The Configuration `name` in `namespace` (named by a pod's {@link CONFIG_ANNOTATION}),
   * cached; `where` names it in messages. Throws {@link ValidationError} when it does not
   * exist, is not an object, or cannot be read now.
   */
  configuration(namespace: string, name: string, where: string): Promise<Configuration> {
    return this.#configurations.get(
      `${namespace}/${name}`,
      () => this.#fetchConfiguration(namespace, name, where),
    );
  }

  /**
   * Reads the pod as Dapr's sentry does: from the cluster-wide pod list (the `list` verb its
   * ClusterRole grants), narrowed by a field selector to the one pod.
   */
  async #fetchPod(namespace: string, name: string): Promise<Pod> {
    const where = `pod "${namespace}/${name}"`;
    let list: KubeList<Pod>;
    try {
      list = await this.#client.list<Pod>("/api/v1/pods", {
        fieldSelector: `metadata.namespace=${namespace},metadata.name=${name}`,
      });
    } catch (error) {
      throw apiUnavailable(where, error, this.#logger);
    }
    const pod = (list.items ?? []).find((item: Pod | null) =>
      item?.metadata?.namespace === namespace && item.metadata.name === name
    );
    if (pod === undefined) {
      throw new ValidationError(`pod ${quote(name)} not found in namespace ${quote(namespace)}`);
    }
    return pod;
  }

  async #fetchConfiguration(
    namespace: string,
    name: string,
    where: string,
  ): Promise<Configuration> {
    const path = `/apis/dapr.io/v1alpha1/namespaces/${encodeURIComponent(namespace)}/` +
      `configurations/${encodeURIComponent(name)}`;
    try {
      const configuration = await this.#client.get<Configuration>(path);
      if (!isRecord(configuration)) throw new ValidationError(`${where}: not an object`);
      return configuration;
    } catch (error) {
      if (error instanceof ValidationError) throw error;
      if (isNotFound(error)) {
        throw new ValidationError(
          `${where}, named by the pod's ${CONFIG_ANNOTATION} annotation, does not exist`,
        );
      }
      throw apiUnavailable(where, error, this.#logger);
    }
  }
}
