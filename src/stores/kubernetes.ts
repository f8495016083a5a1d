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
 * A root rotation in progress lives in the Secret under the keys of Dapr's development branch
 * (PR dapr/dapr#9797): `rotation.phase`, `rotation.new-ca.crt`, `rotation.new-issuer.crt`,
 * `rotation.new-issuer.key`, `rotation.distributed-at`, `rotation.signing-at`,
 * `rotation.old-root-not-after` (RFC 3339 UTC, whole seconds; absent: no time), plus sentry's
 * `rotation.new-ca.key` (the new root's key, when root keys are kept) and
 * `rotation.sentry-state.json` (the whole `rotation-state.json`, so that sentry's own fields
 * survive). `rotation.phase` marks a rotation in progress (other rotation keys without it are
 * leftovers, ignored); a rotation that Dapr's sentry started (no sentry state, or one that no
 * longer matches Dapr's keys) is read from Dapr's keys and continued. A bundle without a
 * rotation removes all of them. {@link KubeCredentialStore.lagging} tells which namespaces'
 * copies of the trust anchors do not have a new root yet, as Dapr's sentry checks them.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { type BundlePem, type RotationPem, sameBundlePem } from "../ca/bundle.ts";
import { DEFAULT_JWT_NAMES, type JwtNames } from "../ca/jwt-keys.ts";
import {
  formatRotationState,
  parseRotationState,
  type RotationState,
} from "../ca/root-rotation.ts";
import { decodePem } from "../x509/pem.ts";
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

/**
 * Secret keys of a root rotation in progress: Dapr's (PR dapr/dapr#9797), then sentry's root
 * key and full state.
 */
export const ROTATION_KEYS = {
  phase: "rotation.phase",
  caCrt: "rotation.new-ca.crt",
  issuerCrt: "rotation.new-issuer.crt",
  issuerKey: "rotation.new-issuer.key",
  distributedAt: "rotation.distributed-at",
  signingAt: "rotation.signing-at",
  oldRootNotAfter: "rotation.old-root-not-after",
  caKey: "rotation.new-ca.key",
  stateJson: "rotation.sentry-state.json",
} as const;

/** The label Dapr's injector puts on pods that run a sidecar. */
export const SIDECAR_INJECTED_LABEL = "dapr.io/sidecar-injected";

/** The state times Dapr keeps under their own keys. */
const ROTATION_TIMES = ["distributedAt", "signingAt", "oldRootNotAfter"] as const;
/** Go's zero time, which means "no time" like an absent key. */
const GO_ZERO_TIME = "0001-01-01T00:00:00Z";
/** An RFC 3339 time, as Go's time.Parse(time.RFC3339, ...) accepts it. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i;

/** `date` as Dapr writes rotation times: RFC 3339 UTC, whole seconds. */
export function daprRotationTime(date: Date): string {
  return new Date(Math.floor(date.getTime() / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

/** Dapr's rotation keys for `state`: the phase and the times (a time absent: no key). */
function daprRotationFields(state: RotationState): Record<string, string | undefined> {
  const fields: Record<string, string | undefined> = { [ROTATION_KEYS.phase]: state.phase };
  for (const time of ROTATION_TIMES) {
    const date = state[time];
    fields[ROTATION_KEYS[time]] = date ? daprRotationTime(date) : undefined;
  }
  return fields;
}

/** Whether every certificate of `want` (PEM) is among those of `have` (PEM), by DER. */
function holdsCertificates(have: string, want: string): boolean {
  try {
    const held = decodePem(have).filter((block) => block.label === "CERTIFICATE");
    const wanted = decodePem(want).filter((block) => block.label === "CERTIFICATE");
    return wanted.length > 0 &&
      wanted.every((cert) => held.some((candidate) => candidate.der.equals(cert.der)));
  } catch {
    return false;
  }
}

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
  /** Warnings of {@link lagging} already logged. */
  readonly #warnedForbidden = new Set<string>();

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

  /**
   * {@link load}; `read.secret` is set to the Secret object this call read (the shared
   * `#secret` may be replaced meanwhile by a concurrent load, e.g. a watch-triggered reload).
   */
  async #load(mayRetry: boolean, read: { secret?: KubeObject } = {}): Promise<BundlePem | null> {
    const { keys, namespace } = this.#options;
    const secret = await this.#get(this.#secretPath, this.description);
    this.#secret = secret;
    read.secret = secret;
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
    const rotating = decode(ROTATION_KEYS.phase) !== "";
    const extras = [...jwtFound, ...(rotating ? [ROTATION_KEYS.phase] : [])];
    if (present.length === 0 && extras.length > 0) {
      throw new StoreError(
        `incomplete bundle in ${this.description}: it holds ${extras.join(", ")} but no ` +
          `trust bundle. sentry does not generate a CA beside a JWT key or a root rotation in ` +
          `progress: restore ${keys.caCrt}, ${keys.issuerCrt} and ${keys.issuerKey}, or remove ` +
          `${extras.length > 1 ? "those keys" : "that key"}`,
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
        if (mayRetry) return await this.#load(false, read);
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
    const rotation = rotating ? this.#rotationOf(decode) : undefined;
    return {
      ...parts,
      ...(rootKey ? { caKey: rootKey } : {}),
      ...(jwt ? { jwt } : {}),
      ...(rotation ? { rotation } : {}),
    };
  }

  /**
   * The rotation in progress (`rotation.phase` is set): the new root and issuer must be there
   * (StoreError naming the missing keys); the state is sentry's when it matches Dapr's keys,
   * else the one Dapr's keys describe (a rotation Dapr's sentry started or moved on).
   */
  #rotationOf(decode: (key: string) => string): RotationPem {
    const missing = (["caCrt", "issuerCrt", "issuerKey"] as const)
      .map((part) => ROTATION_KEYS[part]).filter((key) => decode(key) === "");
    if (missing.length > 0) {
      throw new StoreError(
        `incomplete root rotation in ${this.description}: ${ROTATION_KEYS.phase} says a ` +
          `rotation is in progress but ${missing.join(", ")} ${
            missing.length > 1 ? "are" : "is"
          } missing. sentry does not continue a rotation without its new root and issuer: ` +
          `restore the missing key(s), or remove ${ROTATION_KEYS.phase} to abandon the rotation`,
      );
    }
    const caKey = decode(ROTATION_KEYS.caKey);
    return {
      stateJson: this.#rotationStateOf(decode),
      caCrt: decode(ROTATION_KEYS.caCrt),
      issuerCrt: decode(ROTATION_KEYS.issuerCrt),
      issuerKey: decode(ROTATION_KEYS.issuerKey),
      ...(caKey ? { caKey } : {}),
    };
  }

  /** `rotation-state.json`: sentry's, if it agrees with Dapr's keys, else built from them. */
  #rotationStateOf(decode: (key: string) => string): string {
    const dapr = this.#daprRotationState(decode);
    const ours = decode(ROTATION_KEYS.stateJson);
    if (ours !== "") {
      try {
        const fields = daprRotationFields(parseRotationState(ours, ROTATION_KEYS.stateJson));
        const stored = daprRotationFields(dapr);
        if (Object.keys(stored).every((key) => fields[key] === stored[key])) return ours;
      } catch {
        // Unreadable: Dapr's keys say what the rotation is.
      }
    }
    return formatRotationState(dapr);
  }

  /** The state Dapr's rotation keys describe; StoreError naming a key that is not valid. */
  #daprRotationState(decode: (key: string) => string): RotationState {
    const invalid = (key: string, why: string) =>
      new StoreError(`invalid root rotation in ${this.description}: ${key} ${why}`);
    const phase = decode(ROTATION_KEYS.phase);
    if (phase !== "distributing" && phase !== "signing") {
      throw invalid(
        ROTATION_KEYS.phase,
        `is ${JSON.stringify(phase)}, not distributing or signing`,
      );
    }
    const time = (part: typeof ROTATION_TIMES[number], required: boolean) => {
      const key = ROTATION_KEYS[part];
      const text = decode(key);
      if (text === "" || text === GO_ZERO_TIME) {
        if (required) throw invalid(key, `is missing (the ${phase} phase needs it)`);
        return undefined;
      }
      const date = new Date(text);
      if (!RFC3339.test(text) || Number.isNaN(date.getTime())) {
        throw invalid(key, `is not an RFC 3339 time (${JSON.stringify(text)})`);
      }
      return date;
    };
    const signingAt = time("signingAt", phase === "signing");
    return {
      phase,
      distributedAt: time("distributedAt", true)!,
      ...(signingAt ? { signingAt } : {}),
      oldRootNotAfter: time("oldRootNotAfter", true)!,
    };
  }

  /** Sets the rotation keys of `data` for `rotation`, or removes them all without one. */
  #setRotationKeys(data: Record<string, string>, rotation: RotationPem | undefined): void {
    for (const key of Object.values(ROTATION_KEYS)) delete data[key];
    if (!rotation) return;
    let state: RotationState;
    try {
      state = parseRotationState(rotation.stateJson);
    } catch (error) {
      throw new StoreError(
        `cannot write ${this.description}: ${(error as Error).message}; nothing was written`,
        { cause: error },
      );
    }
    const encode = (text: string) => Buffer.from(text, "utf8").toString("base64");
    const texts: Record<string, string | undefined> = {
      ...daprRotationFields(state),
      [ROTATION_KEYS.caCrt]: rotation.caCrt,
      [ROTATION_KEYS.issuerCrt]: rotation.issuerCrt,
      [ROTATION_KEYS.issuerKey]: rotation.issuerKey,
      [ROTATION_KEYS.caKey]: rotation.caKey,
      [ROTATION_KEYS.stateJson]: rotation.stateJson,
    };
    for (const [key, text] of Object.entries(texts)) {
      if (text !== undefined) data[key] = encode(text);
    }
  }

  /**
   * The Secret to write for `bundle`: the one read, updated (its metadata, type and other data
   * keys kept, `ca.key` set or removed with the bundle, the JWT keys set when the bundle has
   * them, the rotation keys set or removed with the bundle), or a new one when none exists.
   */
  #secretBody(bundle: BundlePem, current: KubeObject | undefined = this.#secret): KubeObject {
    const { keys, namespace } = this.#options;
    const encode = (text: string) => Buffer.from(text, "utf8").toString("base64");
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
    this.#setRotationKeys(data, bundle.rotation);
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

  /**
   * Replaces the bundle if the Secret still holds `expected`, rotation parts included (PUT with
   * its resourceVersion); a `bundle` without `rotation` removes the rotation keys.
   */
  async replace(bundle: BundlePem, expected: BundlePem): Promise<BundlePem> {
    // The PUT carries the resourceVersion of the Secret compared here, never a newer one a
    // concurrent load cached meanwhile: that would write over another replica's change.
    const read: { secret?: KubeObject } = {};
    const current = await this.#load(true, read);
    const same = current !== null && sameBundlePem(current, expected);
    if (!same) {
      throw new StoreConflictError(
        `${this.description} changed since it was read; nothing was written: run again`,
      );
    }
    const withJwt = (pem: BundlePem) =>
      pem.jwt || !current.jwt ? pem : { ...pem, jwt: current.jwt };
    // New trust anchors reach the ConfigMap (what pods mount) before the Secret says they are
    // in force, as Dapr does; a failed Secret write puts back what the Secret holds.
    const anchorsChange = bundle.caCrt !== current.caCrt;
    if (anchorsChange) await this.publish(withJwt(bundle), { aheadOf: current.caCrt });
    try {
      await this.#options.client.replace(
        `${this.#secretPath}/${TRUST_BUNDLE_NAME}`,
        this.#secretBody(bundle, read.secret),
      );
    } catch (error) {
      if (anchorsChange) await this.#republishStored();
      if (isConflict(error)) {
        throw new StoreConflictError(
          `${this.description} changed while writing (409 Conflict); nothing was written: run again`,
        );
      }
      return storeError(error, `cannot write ${this.description}`);
    }
    await this.publish(withJwt(bundle));
    return bundle;
  }

  /** Publishes what the Secret holds now (after a failed write); failures are only logged. */
  async #republishStored(): Promise<void> {
    try {
      const stored = await this.load();
      if (stored) await this.publish(stored);
    } catch (error) {
      this.#options.logger?.warn(
        `cannot put back the trust anchors of ${this.description} in its ConfigMap: ` +
          `${(error as Error).message}`,
      );
    }
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
   * retries a few times on concurrent updates. The Secret is the source of truth; `aheadOf`: the
   * bundle is about to be written to it (new anchors go out first), replacing these anchors —
   * when the ConfigMap no longer holds them, another writer came first and nothing is written.
   */
  async publish(bundle: BundlePem, options: { aheadOf?: string } = {}): Promise<void> {
    const { client, keys, namespace, logger } = this.#options;
    const what = `ConfigMap ${namespace}/${TRUST_BUNDLE_NAME}`;
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.#get(this.#configMapPath, what);
      // Ahead of a Secret write, only over the anchors that write replaces: another writer got
      // there first, and its anchors stay (our Secret write will then fail its own check).
      if (options.aheadOf !== undefined && current?.data?.[keys.caCrt] !== options.aheadOf) return;
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
            : options.aheadOf !== undefined
            ? `published the new trust anchors in ${what} ahead of ${this.description}`
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

  /**
   * Namespaces whose copy of the trust anchors (ConfigMap `dapr-trust-bundle`) does not have
   * `newRootPem` yet (compared by DER), as Dapr's sentry checks them: sentry's namespace and
   * every namespace with a pod labelled `dapr.io/sidecar-injected=true`; a missing ConfigMap
   * lags. Where RBAC forbids listing pods or reading a ConfigMap (Dapr's chart grants neither
   * outside sentry's namespace), only what can be read is checked, with one warning naming the
   * missing permission. `ownNamespaceOnly`: sentry's own ConfigMap only (before signing
   * switches: the anchors sentry publishes must carry the new root; copies are checked before
   * the old root leaves).
   */
  async lagging(
    newRootPem: string,
    options: { ownNamespaceOnly?: boolean } = {},
  ): Promise<string[]> {
    const { client, namespace, keys } = this.#options;
    const forbidden: string[] = [];
    const namespaces = new Set([namespace]);
    if (!options.ownNamespaceOnly) {
      try {
        const pods = await client.list<KubeObject>("/api/v1/pods", {
          labelSelector: `${SIDECAR_INJECTED_LABEL}=true`,
        });
        for (const pod of pods.items) {
          const podNamespace = pod.metadata.namespace;
          if (pod.metadata.labels?.[SIDECAR_INJECTED_LABEL] === "true" && podNamespace) {
            namespaces.add(podNamespace);
          }
        }
      } catch (error) {
        if (!isForbidden(error)) return storeError(error, "cannot list the pods with sidecars");
        forbidden.push(`list pods in all namespaces (only ${namespace} was checked)`);
      }
    }
    const lagging: string[] = [];
    for (const at of [...namespaces].sort()) {
      const path = `/api/v1/namespaces/${encodeURIComponent(at)}/configmaps/${TRUST_BUNDLE_NAME}`;
      let configMap: KubeObject | undefined;
      try {
        configMap = await client.get<KubeObject>(path);
      } catch (error) {
        if (isForbidden(error)) {
          forbidden.push(`get configmaps in ${at}`);
          continue;
        }
        if (!isNotFound(error)) {
          return storeError(error, `cannot read ConfigMap ${at}/${TRUST_BUNDLE_NAME}`);
        }
      }
      if (!configMap || !holdsCertificates(configMap.data?.[keys.caCrt] ?? "", newRootPem)) {
        lagging.push(at);
      }
    }
    if (forbidden.length > 0) this.#warnForbidden(forbidden);
    return lagging;
  }

  /** Warns once per store about what RBAC keeps {@link lagging} from checking. */
  #warnForbidden(forbidden: string[]): void {
    const message = `cannot check that every namespace has the new trust anchors: RBAC ` +
      `forbids sentry to ${forbidden.join(", ")} (403 Forbidden). The rotation goes on; grant ` +
      `list on pods and get on configmaps cluster-wide to let sentry check`;
    if (this.#warnedForbidden.has(message)) return;
    this.#warnedForbidden.add(message);
    this.#options.logger?.warn(message);
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
