/**
 * The Kubernetes credential store (`--store k8s`): the Secret `dapr-trust-bundle` (keys
 * `ca.crt`, `issuer.crt`, `issuer.key` — names from the `--issuer-*-filename` flags, as in
 * Dapr — plus `ca.key` when the root key is kept, and `jwt.key` and `jwks.json` when JWT
 * issuing stored them) and the ConfigMap `dapr-trust-bundle` whose `ca.crt` carries the trust
 * anchors to sidecars (and `jwks.json` the JWT verification keys while JWT issuing is on, as in
 * Dapr), in sentry's namespace.
 *
 * As Dapr's sentry, writes update the objects as read: Helm's labels and annotations and any
 * other data keys stay. Beyond Dapr: absent objects are created
 * (POST, adopting the winner on 409 AlreadyExists, so replicas racing at first boot converge on
 * one CA; where RBAC does not grant `create`, as under Dapr's chart, the error says so); updates
 * carry the resourceVersion read (409 Conflict: nothing written); a ConfigMap that differs from
 * the Secret is repaired from the Secret, never the other way round (Dapr generates a new CA);
 * an emptied Secret that held a CA before (its ConfigMap still has anchors, `ca.key` remains,
 * or our fingerprint annotation is still on it — what `helm upgrade` without `--reuse-values`
 * leaves) is refused with {@link StoreEmptiedError} instead of silently replaced by a new CA;
 * the Secret is watched, or polled with GET where RBAC grants no list/watch.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { type BundlePem, sameBundlePem } from "../ca/bundle.ts";
import { DEFAULT_JWT_NAMES, type JwtNames } from "../ca/jwt-keys.ts";
import {
  isAlreadyExists,
  isConflict,
  isForbidden,
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
  StoreEmptiedError,
  StoreError,
  StoreUnavailableError,
} from "./store.ts";

/** The name Dapr gives both objects. */
export const TRUST_BUNDLE_NAME = "dapr-trust-bundle";

/**
 * Annotation written on the Secret with the SHA-256 of the trust anchors stored. Helm's
 * three-way merge keeps it when an upgrade empties the data, so an emptied Secret is known to
 * have held a CA.
 */
export const ANCHORS_ANNOTATION = "sentry.dapr-tools.io/trust-anchors-sha256";

/** Labels of objects this store creates (Helm-created objects keep their own). */
const CREATED_LABELS = { app: "dapr-sentry", "app.kubernetes.io/managed-by": "dapr-sentry" };

/**
 * The store's port to the API server: the {@link KubeClient} methods it calls (GET / POST /
 * PUT one object; list + watch for {@link KubeCredentialStore.watch}). A KubeClient is one;
 * unit tests pass a small in-memory fake.
 */
export type KubeApi = Pick<KubeClient, "get" | "create" | "replace" | "list" | "watch">;

/** Hex SHA-256 of the trust anchors' PEM text, for {@link ANCHORS_ANNOTATION}. */
export function anchorsFingerprint(caCrt: string): string {
  return createHash("sha256").update(caCrt, "utf8").digest("hex");
}

/** Where the objects are and what their keys are called. */
export interface KubeStoreOptions {
  client: KubeApi;
  namespace: string;
  /** Data keys (Dapr: the `--issuer-*-filename` values). */
  keys: { caCrt: string; issuerCrt: string; issuerKey: string };
  /** Data keys of the JWT key and JWKS (Dapr: the `--jwt-key-filename`, `--jwks-filename` base names). */
  jwtKeys?: JwtNames;
  logger?: Logger;
  /** How often the Secret is read when RBAC allows no watch (default 10 s). */
  pollIntervalMs?: number;
  /** Sentry's trust domain, for the recovery command in messages (omitted when unknown). */
  trustDomain?: string;
}

interface KubeObject {
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

const ROOT_KEY = "ca.key";

/** Maps API failures to store errors: outages are "unavailable", never "nothing stored". */
function storeError(error: unknown, what: string): never {
  if (error instanceof KubeRequestError) {
    throw new StoreUnavailableError(`${what}: ${error.message}`, { cause: error });
  }
  if (error instanceof KubeApiError) {
    if (error.status === 429 || error.status >= 500) {
      throw new StoreUnavailableError(`${what}: ${error.message}`, { cause: error });
    }
    throw new StoreError(`${what}: ${error.message}`, { cause: error });
  }
  throw error;
}

/** A trust bundle kept in a Secret, with its anchors published in a ConfigMap. */
export class KubeCredentialStore implements CredentialStore {
  readonly description: string;
  readonly names: { caCrt: string; issuerCrt: string; issuerKey: string };
  readonly jwtNames: JwtNames;
  readonly #jwtKeys: JwtNames;
  readonly #options: KubeStoreOptions;
  readonly #secretPath: string;
  readonly #configMapPath: string;
  /** The Secret as last read (undefined: it does not exist); writes start from it. */
  #secret?: KubeObject;

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
    this.#jwtKeys = options.jwtKeys ?? DEFAULT_JWT_NAMES;
    this.jwtNames = { key: name(this.#jwtKeys.key), jwks: name(this.#jwtKeys.jwks) };
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
    this.#secret = secret;
    const data = secret?.data ?? {};
    const decode = (key: string) =>
      typeof data[key] === "string" ? Buffer.from(data[key], "base64").toString("utf8") : "";
    const parts = {
      caCrt: decode(keys.caCrt),
      issuerCrt: decode(keys.issuerCrt),
      issuerKey: decode(keys.issuerKey),
    };
    const present = Object.entries(parts).filter(([, value]) => value !== "");
    const jwtKeys = [this.#jwtKeys.key, this.#jwtKeys.jwks];
    const jwtFound = jwtKeys.filter((key) => decode(key) !== "");
    if (present.length === 0 && jwtFound.length > 0) {
      throw new StoreError(
        `incomplete bundle in ${this.description}: it holds ${jwtFound.join(", ")} but no ` +
          `trust bundle. sentry does not generate a CA beside a JWT key: restore ` +
          `${keys.caCrt}, ${keys.issuerCrt} and ${keys.issuerKey}, or remove the JWT keys`,
      );
    }
    if (present.length === 0) {
      const emptied = (reason: string) =>
        new StoreEmptiedError(
          `${this.description} ${secret ? "is empty" : "does not exist"} but ${reason}: the CA ` +
            `that sidecars trust is gone (a 'helm upgrade' without --reuse-values, or a deleted ` +
            `Secret). sentry does not replace a CA silently: restore the Secret, or create a new ` +
            `CA on purpose (every sidecar then needs the new trust anchors) with: ` +
            `sentry init --store k8s --namespace ${namespace}` +
            (this.#options.trustDomain ? ` --trust-domain ${this.#options.trustDomain}` : "") +
            ` --force`,
        );
      if (decode(ROOT_KEY) !== "") throw emptied(`its ${ROOT_KEY} (a root key) is still there`);
      if (secret?.metadata.annotations?.[ANCHORS_ANNOTATION]) {
        throw emptied(`its annotation ${ANCHORS_ANNOTATION} shows that it held a CA`);
      }
      const configMap = await this.#get(
        this.#configMapPath,
        `ConfigMap ${namespace}/${TRUST_BUNDLE_NAME}`,
      );
      if (configMap?.data?.[keys.caCrt]?.trim()) {
        // Another replica may have created the Secret (then the ConfigMap) between the two
        // reads at first boot: read the Secret again once before refusing.
        if (mayRetry) return await this.#load(false);
        throw emptied(
          `ConfigMap ${namespace}/${TRUST_BUNDLE_NAME} holds trust anchors (${keys.caCrt})`,
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
    if (jwtFound.length === 1) {
      throw new StoreError(
        `incomplete JWT key material in ${this.description}: missing ` +
          `${jwtKeys.find((key) => !jwtFound.includes(key))}. sentry never completes or ` +
          `overwrites part of it: restore it, or remove ${jwtFound[0]} to let sentry generate a ` +
          `new JWT signing key`,
      );
    }
    const rootKey = decode(ROOT_KEY);
    const jwt = jwtFound.length === 2
      ? { keyPem: decode(this.#jwtKeys.key), jwksJson: decode(this.#jwtKeys.jwks) }
      : undefined;
    return { ...parts, ...(rootKey ? { caKey: rootKey } : {}), ...(jwt ? { jwt } : {}) };
  }

  /**
   * The Secret to write for `bundle`: the one read, updated (its metadata, type and other data
   * keys kept, `ca.key` set or removed with the bundle, the JWT keys set when the bundle has
   * them), or a new one when none exists.
   */
  #secretBody(bundle: BundlePem): KubeObject {
    const { keys, namespace } = this.#options;
    const encode = (text: string) => Buffer.from(text, "utf8").toString("base64");
    const current = this.#secret;
    const data: Record<string, string> = {
      ...(current?.data ?? {}),
      [keys.caCrt]: encode(bundle.caCrt),
      [keys.issuerCrt]: encode(bundle.issuerCrt),
      [keys.issuerKey]: encode(bundle.issuerKey),
    };
    if (bundle.caKey) data[ROOT_KEY] = encode(bundle.caKey);
    else delete data[ROOT_KEY];
    if (bundle.jwt) {
      data[this.#jwtKeys.key] = encode(bundle.jwt.keyPem);
      data[this.#jwtKeys.jwks] = encode(bundle.jwt.jwksJson);
    }
    const annotations = {
      ...(current?.metadata.annotations ?? {}),
      [ANCHORS_ANNOTATION]: anchorsFingerprint(bundle.caCrt),
    };
    if (current) {
      return { ...current, metadata: { ...current.metadata, annotations }, data };
    }
    return {
      apiVersion: "v1",
      kind: "Secret",
      type: "Opaque",
      metadata: { name: TRUST_BUNDLE_NAME, namespace, labels: { ...CREATED_LABELS }, annotations },
      data,
    };
  }

  /**
   * Stores `bundle` when the Secret is absent (POST) or empty (PUT with its resourceVersion).
   * When another replica got there first (409), returns what it stored.
   */
  async create(bundle: BundlePem): Promise<BundlePem> {
    const { client } = this.#options;
    try {
      if (this.#secret === undefined) {
        await client.create(this.#secretPath, this.#secretBody(bundle));
      } else {
        await client.replace(`${this.#secretPath}/${TRUST_BUNDLE_NAME}`, this.#secretBody(bundle));
      }
    } catch (error) {
      if (this.#secret === undefined && isForbidden(error)) {
        throw new StoreError(
          `cannot write ${this.description}: it does not exist and sentry may not create it (403 Forbidden: ` +
            `Dapr's chart grants get and update only, and creates the Secret itself). Install ` +
            `Dapr's chart, create it with 'kubectl -n ${this.#options.namespace} create secret ` +
            `generic ${TRUST_BUNDLE_NAME}', or grant create on secrets: ${
              (error as Error).message
            }`,
          { cause: error },
        );
      }
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
        this.#secretBody(bundle),
      );
    } catch (error) {
      if (isConflict(error)) {
        throw new StoreConflictError(
          `${this.description} changed while writing (409 Conflict); nothing was written: run again`,
        );
      }
      return storeError(error, `cannot write ${this.description}`);
    }
    await this.publish(bundle.jwt || !current.jwt ? bundle : { ...bundle, jwt: current.jwt });
    return bundle;
  }

  /** The ConfigMap data for `bundle`: `current` with its anchors and JWKS brought in line. */
  #configMapData(current: Record<string, string> | undefined, bundle: BundlePem) {
    const data = { ...(current ?? {}), [this.#options.keys.caCrt]: bundle.caCrt };
    if (bundle.jwt) data[this.#jwtKeys.jwks] = bundle.jwt.jwksJson;
    else delete data[this.#jwtKeys.jwks];
    return data;
  }

  /**
   * Makes the ConfigMap's trust anchors equal to the bundle's, and its `jwks.json` the bundle's
   * JWKS (removed when the bundle has none, as Dapr does), creating the ConfigMap when absent;
   * retries a few times on concurrent updates. The Secret is the source of truth.
   */
  async publish(bundle: BundlePem): Promise<void> {
    const { client, keys, namespace, logger } = this.#options;
    const what = `ConfigMap ${namespace}/${TRUST_BUNDLE_NAME}`;
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.#get(this.#configMapPath, what);
      const jwksInLine = current?.data?.[this.#jwtKeys.jwks] === bundle.jwt?.jwksJson;
      if (current?.data?.[keys.caCrt] === bundle.caCrt && jwksInLine) return;
      // Update the ConfigMap as read (Helm's metadata and other keys kept), or create one.
      const data = this.#configMapData(current?.data, bundle);
      const body: KubeObject = current ? { ...current, data } : {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: TRUST_BUNDLE_NAME, namespace, labels: { ...CREATED_LABELS } },
        data,
      };
      try {
        if (current) await client.replace(`${this.#configMapPath}/${TRUST_BUNDLE_NAME}`, body);
        else await client.create(this.#configMapPath, body);
        logger?.info(
          !current
            ? `created ${what} with the trust anchors`
            : current.data?.[keys.caCrt] !== bundle.caCrt
            ? `repaired ${what}: its ${keys.caCrt} differed from ${this.description}`
            : `${bundle.jwt ? "published" : "removed"} ${this.#jwtKeys.jwks} in ${what}`,
        );
        return;
      } catch (error) {
        if (isConflict(error) || isAlreadyExists(error)) continue;
        return storeError(error, `cannot write ${what}`);
      }
    }
    throw new StoreError(`cannot update ${what}: it kept changing (409 Conflict)`);
  }

  /** Watches the Secret (list + watch, relist on 410; GET polling where RBAC forbids it). */
  watch(onChange: () => void): { close(): void } {
    return watchObject(this.#options.client, {
      listPath: this.#secretPath,
      name: TRUST_BUNDLE_NAME,
      onChange,
      logger: this.#options.logger,
      pollIntervalMs: this.#options.pollIntervalMs,
    });
  }
}
