/**
 * The Kubernetes credential store (`--store k8s`): the Secret `dapr-trust-bundle` (keys
 * `ca.crt`, `issuer.crt`, `issuer.key` — names from the `--issuer-*-filename` flags, as in
 * Dapr — plus `ca.key` when the root key is kept) and the ConfigMap `dapr-trust-bundle` whose
 * `ca.crt` carries the trust anchors to sidecars, in sentry's namespace.
 *
 * Beyond Dapr: absent or empty objects are created (POST, adopting the winner on 409
 * AlreadyExists, so replicas racing at first boot converge on one CA); updates carry the
 * resourceVersion read (409 Conflict: nothing written); a ConfigMap that differs from the
 * Secret is repaired from the Secret, never the other way round; trust anchors without a
 * Secret are refused instead of silently replaced by a new CA.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { type BundlePem, sameBundlePem } from "../ca/bundle.ts";
import {
  isAlreadyExists,
  isConflict,
  isNotFound,
  KubeApiError,
  type KubeClient,
  KubeRequestError,
} from "../kubernetes/client.ts";
import { watchObject } from "../kubernetes/object-watch.ts";
import type { Logger } from "../observability/logger.ts";
import {
  type CredentialStore,
  StoreConflictError,
  StoreError,
  StoreUnavailableError,
} from "./store.ts";

/** The name Dapr gives both objects. */
export const TRUST_BUNDLE_NAME = "dapr-trust-bundle";

/**
 * The store's port to the API server: the {@link KubeClient} methods it calls (GET / POST /
 * PUT one object; list + watch for {@link KubeCredentialStore.watch}). A KubeClient is one;
 * unit tests pass a small in-memory fake.
 */
export type KubeApi = Pick<KubeClient, "get" | "create" | "replace" | "list" | "watch">;

/** Where the objects are and what their keys are called. */
export interface KubeStoreOptions {
  client: KubeApi;
  namespace: string;
  /** Data keys (Dapr: the `--issuer-*-filename` values). */
  keys: { caCrt: string; issuerCrt: string; issuerKey: string };
  logger?: Logger;
}

interface KubeObject {
  metadata: { name: string; namespace?: string; resourceVersion?: string; [key: string]: unknown };
  data?: Record<string, string>;
  [key: string]: unknown;
}

const ROOT_KEY = "ca.key";

/** Maps API failures to store errors: outages are "unavailable", never "nothing stored". */
function storeError(error: unknown, what: string): never {
  if (error instanceof KubeRequestError) {
    throw new StoreUnavailableError(`${what}: ${error.message}`);
  }
  if (error instanceof KubeApiError) {
    if (error.status === 429 || error.status >= 500) {
      throw new StoreUnavailableError(`${what}: ${error.message}`);
    }
    throw new StoreError(`${what}: ${error.message}`);
  }
  throw error;
}

/** A trust bundle kept in a Secret, with its anchors published in a ConfigMap. */
export class KubeCredentialStore implements CredentialStore {
  readonly description: string;
  readonly names: { caCrt: string; issuerCrt: string; issuerKey: string };
  readonly #options: KubeStoreOptions;
  readonly #secretPath: string;
  readonly #configMapPath: string;
  /** resourceVersion of the Secret last read (undefined: it does not exist). */
  #secretVersion?: string;

  /** Nothing is sent until a method is called. */
  constructor(options: KubeStoreOptions) {
    this.#options = options;
    const ns = encodeURIComponent(options.namespace);
    this.#secretPath = `/api/v1/namespaces/${ns}/secrets`;
    this.#configMapPath = `/api/v1/namespaces/${ns}/configmaps`;
    this.description = `Secret ${options.namespace}/${TRUST_BUNDLE_NAME}`;
    const name = (key: string) => `Secret ${options.namespace}/${TRUST_BUNDLE_NAME} (${key})`;
    this.names = {
      caCrt: name(options.keys.caCrt),
      issuerCrt: name(options.keys.issuerCrt),
      issuerKey: name(options.keys.issuerKey),
    };
  }

  async #get(collection: string, what: string): Promise<KubeObject | undefined> {
    try {
      return await this.#options.client.get<KubeObject>(`${collection}/${TRUST_BUNDLE_NAME}`);
    } catch (error) {
      if (isNotFound(error)) return undefined;
      return storeError(error, `cannot read ${what}`);
    }
  }

  /**
   * Reads the Secret. Null when it is absent or empty (Helm creates it empty); StoreError when
   * it is partial, or when it is missing while the ConfigMap already holds trust anchors.
   */
  async load(): Promise<BundlePem | null> {
    return await this.#load(true);
  }

  async #load(mayRetry: boolean): Promise<BundlePem | null> {
    const { keys, namespace } = this.#options;
    const secret = await this.#get(this.#secretPath, this.description);
    this.#secretVersion = secret?.metadata.resourceVersion;
    const data = secret?.data ?? {};
    const decode = (key: string) =>
      typeof data[key] === "string" ? Buffer.from(data[key], "base64").toString("utf8") : "";
    const parts = {
      caCrt: decode(keys.caCrt),
      issuerCrt: decode(keys.issuerCrt),
      issuerKey: decode(keys.issuerKey),
    };
    const present = Object.entries(parts).filter(([, value]) => value !== "");
    if (present.length === 0) {
      const configMap = await this.#get(
        this.#configMapPath,
        `ConfigMap ${namespace}/${TRUST_BUNDLE_NAME}`,
      );
      if (configMap?.data?.[keys.caCrt]?.trim()) {
        // Another replica may have created the Secret (then the ConfigMap) between the two
        // reads at first boot: read the Secret again once before refusing.
        if (mayRetry) return await this.#load(false);
        throw new StoreError(
          `ConfigMap ${namespace}/${TRUST_BUNDLE_NAME} holds trust anchors but ${this.description} ` +
            `${
              secret ? "is empty" : "does not exist"
            }: the issuer that sidecars trust is gone. sentry will ` +
            `not replace an existing CA silently: restore the Secret, or empty the ConfigMap's ${keys.caCrt} ` +
            `to let sentry create a new CA`,
        );
      }
      return null;
    }
    if (present.length < 3) {
      const missing = Object.entries(parts).filter(([, value]) => value === "")
        .map(([part]) => keys[part as keyof typeof keys]);
      throw new StoreError(
        `incomplete bundle in ${this.description}: missing ${missing.join(", ")}. sentry never ` +
          `completes or overwrites part of a bundle: fill in all three keys`,
      );
    }
    const rootKey = decode(ROOT_KEY);
    return { ...parts, ...(rootKey ? { caKey: rootKey } : {}) };
  }

  #secretBody(bundle: BundlePem, resourceVersion?: string): KubeObject {
    const { keys, namespace } = this.#options;
    const encode = (text: string) => Buffer.from(text, "utf8").toString("base64");
    return {
      apiVersion: "v1",
      kind: "Secret",
      type: "Opaque",
      metadata: {
        name: TRUST_BUNDLE_NAME,
        namespace,
        labels: { "app.kubernetes.io/managed-by": "dapr-sentry" },
        ...(resourceVersion ? { resourceVersion } : {}),
      },
      data: {
        [keys.caCrt]: encode(bundle.caCrt),
        [keys.issuerCrt]: encode(bundle.issuerCrt),
        [keys.issuerKey]: encode(bundle.issuerKey),
        ...(bundle.caKey ? { [ROOT_KEY]: encode(bundle.caKey) } : {}),
      },
    };
  }

  /**
   * Stores `bundle` when the Secret is absent (POST) or empty (PUT with its resourceVersion).
   * When another replica got there first (409), returns what it stored.
   */
  async create(bundle: BundlePem): Promise<BundlePem> {
    const { client } = this.#options;
    try {
      if (this.#secretVersion === undefined) {
        await client.create(this.#secretPath, this.#secretBody(bundle));
      } else {
        await client.replace(
          `${this.#secretPath}/${TRUST_BUNDLE_NAME}`,
          this.#secretBody(bundle, this.#secretVersion),
        );
      }
    } catch (error) {
      if (!isAlreadyExists(error) && !isConflict(error)) {
        return storeError(error, `cannot write ${this.description}`);
      }
      const winner = await this.load();
      if (winner) return winner;
      // The winner wrote an empty Secret (a Helm-style placeholder): try once more with PUT.
      return await this.create(bundle);
    }
    await this.publish(bundle);
    return bundle;
  }

  /** Replaces the bundle if the Secret still holds `expected` (PUT with its resourceVersion). */
  async replace(bundle: BundlePem, expected: BundlePem): Promise<BundlePem> {
    const current = await this.load();
    const same = current !== null && sameBundlePem(current, expected);
    if (!same) {
      throw new StoreConflictError(
        `${this.description} changed since it was read; nothing was written: run again`,
      );
    }
    try {
      await this.#options.client.replace(
        `${this.#secretPath}/${TRUST_BUNDLE_NAME}`,
        this.#secretBody(bundle, this.#secretVersion),
      );
    } catch (error) {
      if (isConflict(error)) {
        throw new StoreConflictError(
          `${this.description} changed while writing (409 Conflict); nothing was written: run again`,
        );
      }
      return storeError(error, `cannot write ${this.description}`);
    }
    await this.publish(bundle);
    return bundle;
  }

  /**
   * Makes the ConfigMap's trust anchors equal to the bundle's (creating the ConfigMap when
   * absent); retries a few times on concurrent updates. The Secret is the source of truth.
   */
  async publish(bundle: BundlePem): Promise<void> {
    const { client, keys, namespace, logger } = this.#options;
    const what = `ConfigMap ${namespace}/${TRUST_BUNDLE_NAME}`;
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.#get(this.#configMapPath, what);
      if (current?.data?.[keys.caCrt] === bundle.caCrt) return;
      const body: KubeObject = {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: {
          name: TRUST_BUNDLE_NAME,
          namespace,
          labels: { "app.kubernetes.io/managed-by": "dapr-sentry" },
          ...(current?.metadata.resourceVersion
            ? { resourceVersion: current.metadata.resourceVersion }
            : {}),
        },
        data: { ...(current?.data ?? {}), [keys.caCrt]: bundle.caCrt },
      };
      try {
        if (current) await client.replace(`${this.#configMapPath}/${TRUST_BUNDLE_NAME}`, body);
        else await client.create(this.#configMapPath, body);
        logger?.info(
          current
            ? `repaired ${what}: its ${keys.caCrt} differed from ${this.description}`
            : `created ${what} with the trust anchors`,
        );
        return;
      } catch (error) {
        if (isConflict(error) || isAlreadyExists(error)) continue;
        return storeError(error, `cannot write ${what}`);
      }
    }
    throw new StoreError(`cannot update ${what}: it kept changing (409 Conflict)`);
  }

  /** Watches the Secret (list + watch, relist on 410). */
  watch(onChange: () => void): { close(): void } {
    return watchObject(
      this.#options.client,
      this.#secretPath,
      TRUST_BUNDLE_NAME,
      onChange,
      this.#options.logger,
    );
  }
}
