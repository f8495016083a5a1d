/**
 * The HashiCorp Vault credential store (`--store vault`): one KV version 2 secret holding
 * `ca.crt`, `issuer.crt`, `issuer.key` (and `ca.key` only when the operator keeps the root
 * key; `jwt.key` and `jwks.json` once JWT issuing stored them; during a root rotation its parts,
 * named like Dapr's files: `rotation-state.json`, `rotation-ca.crt`, `rotation-issuer.crt`,
 * `rotation-issuer.key` and `rotation-ca.key` when root keys are kept), at `<mount>/data/<path>`.
 * Every write is a whole new version, so the check-and-set covers the rotation parts too and a
 * bundle without a rotation removes them.
 *
 * Safety rules: "nothing stored" is only a 404 for a secret that never had a version; a
 * deleted or destroyed latest version is refused (sentry will not write a new CA over an
 * operator's history). Vault being unreachable, sealed, on standby or refusing us is a
 * StoreUnavailableError, never "nothing stored". Creation uses `cas: 0` (create only), so
 * replicas racing at first boot converge on one CA; replacement uses `cas: <version read>`.
 * Changes are found by polling the metadata's `current_version`.
 *
 * @module
 */
import { type BundlePem, type JwtKeyPem, type RotationPem, sameBundlePem } from "../ca/bundle.ts";
import { DEFAULT_JWT_NAMES, type JwtNames } from "../ca/jwt-keys.ts";
import { ROTATION_FILE_NAMES } from "../ca/root-rotation.ts";
import { type VaultClient, VaultError, type VaultResponse } from "../vault/client.ts";
import {
  type CredentialStore,
  StoreConflictError,
  StoreError,
  StoreUnavailableError,
} from "./store.ts";

/**
 * The store's port to Vault: the {@link VaultClient} members it uses (`request`, which returns
 * 2xx and 404 answers and throws {@link VaultError} otherwise; `address` for messages; `close`).
 * A VaultClient is one; unit tests pass a small in-memory fake.
 */
export type VaultApi = Pick<VaultClient, "request" | "address" | "close">;

/** Where the secret lives. */
export interface VaultStoreOptions {
  client: VaultApi;
  mount: string;
  path: string;
  /** How often to poll for new versions (default 30 s). */
  pollIntervalMs?: number;
  /** Field names of the JWT key and JWKS (default `jwt.key`, `jwks.json`). */
  jwtKeys?: JwtNames;
}

const KEYS = {
  caCrt: "ca.crt",
  issuerCrt: "issuer.crt",
  issuerKey: "issuer.key",
  caKey: "ca.key",
} as const;

/** The rotation parts required while a rotation is in progress (the root key is optional). */
const REQUIRED_ROTATION_PARTS = ["caCrt", "issuerCrt", "issuerKey"] as const;

function unavailable(error: unknown): never {
  if (error instanceof VaultError) {
    if (error.transient) throw new StoreUnavailableError(error.message);
    throw new StoreError(error.message);
  }
  throw error;
}

/** A trust bundle kept in Vault's KV v2. */
export class VaultCredentialStore implements CredentialStore {
  readonly description: string;
  readonly names: { caCrt: string; issuerCrt: string; issuerKey: string };
  readonly jwtNames: JwtNames;
  readonly #jwtKeys: JwtNames;
  readonly #client: VaultApi;
  readonly #dataPath: string;
  readonly #metadataPath: string;
  readonly #pollIntervalMs: number;
  /** Version of the bundle last read or written, for compare-and-swap. */
  #version?: number;

  /** Nothing is sent until a method is called. */
  constructor(options: VaultStoreOptions) {
    const path = options.path.replace(/^\/+|\/+$/g, "");
    this.#client = options.client;
    this.#dataPath = `${options.mount}/data/${path}`;
    this.#metadataPath = `${options.mount}/metadata/${path}`;
    this.#pollIntervalMs = options.pollIntervalMs ?? 30_000;
    this.description = `Vault secret ${options.mount}/${path} at ${options.client.address}`;
    const name = (key: string) => `${options.mount}/${path} (${key})`;
    this.names = {
      caCrt: name(KEYS.caCrt),
      issuerCrt: name(KEYS.issuerCrt),
      issuerKey: name(KEYS.issuerKey),
    };
    this.#jwtKeys = options.jwtKeys ?? DEFAULT_JWT_NAMES;
    this.jwtNames = { key: name(this.#jwtKeys.key), jwks: name(this.#jwtKeys.jwks) };
  }

  async #request(method: string, path: string, body?: unknown): Promise<VaultResponse> {
    try {
      return await this.#client.request(method, path, body);
    } catch (error) {
      return unavailable(error);
    }
  }

  /** Reads the latest version; null only when the secret never existed. */
  async load(): Promise<BundlePem | null> {
    return await this.#load(true);
  }

  /**
   * {@link load}; `read.version` is set to the version this call read (the shared `#version`
   * may be replaced meanwhile by a concurrent load, e.g. a watch-triggered reload).
   */
  async #load(mayRetry: boolean, read: { version?: number } = {}): Promise<BundlePem | null> {
    const response = await this.#request("GET", this.#dataPath);
    if (response.status === 404) {
      const metadata = response.body?.data?.metadata;
      if (metadata) return this.#refuseGone(metadata.version, metadata.destroyed);
      // Never written, unless the metadata says otherwise. A version may also have been
      // written between the two reads (replicas racing at first boot): read the data again
      // once before concluding that every version was destroyed.
      const meta = await this.#request("GET", this.#metadataPath);
      const current = meta.status === 200 ? Number(meta.body?.data?.current_version ?? 0) : 0;
      if (current > 0) {
        return mayRetry ? await this.#load(false, read) : this.#refuseGone(current, true);
      }
      this.#version = 0;
      read.version = 0;
      return null;
    }
    const data = response.body?.data?.data;
    const version = Number(response.body?.data?.metadata?.version);
    if (!data || typeof data !== "object") {
      throw new StoreError(`${this.description}: the latest version holds no data`);
    }
    const missing = [KEYS.caCrt, KEYS.issuerCrt, KEYS.issuerKey].filter((key) =>
      typeof data[key] !== "string" || data[key] === ""
    );
    if (missing.length > 0) {
      throw new StoreError(
        `incomplete bundle in ${this.description} (version ${version}): missing ${
          missing.join(", ")
        }. ` +
          `sentry never completes or overwrites part of a bundle: write all three keys`,
      );
    }
    const jwt = this.#jwtOf(data, version);
    const rotation = this.#rotationOf(data, version);
    this.#version = version;
    read.version = version;
    return {
      caCrt: data[KEYS.caCrt],
      issuerCrt: data[KEYS.issuerCrt],
      issuerKey: data[KEYS.issuerKey],
      ...(typeof data[KEYS.caKey] === "string" ? { caKey: data[KEYS.caKey] } : {}),
      ...(jwt ? { jwt } : {}),
      ...(rotation ? { rotation } : {}),
    };
  }

  /**
   * The rotation in progress, when the version has `rotation-state.json` (as Dapr's files, other
   * rotation fields without it are ignored); without the new root or issuer it is partial.
   */
  #rotationOf(data: Record<string, unknown>, version: number): RotationPem | undefined {
    const field = (part: keyof RotationPem) => {
      const value = data[ROTATION_FILE_NAMES[part]];
      return typeof value === "string" && value !== "" ? value : undefined;
    };
    const stateJson = field("stateJson");
    if (stateJson === undefined) return undefined;
    const missing = REQUIRED_ROTATION_PARTS.filter((part) => field(part) === undefined)
      .map((part) => ROTATION_FILE_NAMES[part]);
    if (missing.length > 0) {
      throw new StoreError(
        `incomplete root rotation in ${this.description} (version ${version}): ` +
          `${ROTATION_FILE_NAMES.stateJson} says a rotation is in progress but ` +
          `${missing.join(", ")} ${missing.length > 1 ? "are" : "is"} missing. sentry does not ` +
          `continue a rotation without its new root and issuer: restore the missing field(s), ` +
          `or write a version without ${ROTATION_FILE_NAMES.stateJson} to abandon the rotation`,
      );
    }
    const caKey = field("caKey");
    return {
      stateJson,
      caCrt: field("caCrt")!,
      issuerCrt: field("issuerCrt")!,
      issuerKey: field("issuerKey")!,
      ...(caKey !== undefined ? { caKey } : {}),
    };
  }

  /** The JWT fields of a version: both or neither (one alone is refused as partial). */
  #jwtOf(data: Record<string, unknown>, version: number): JwtKeyPem | undefined {
    const { key, jwks } = this.#jwtKeys;
    const found = [key, jwks].filter((field) => typeof data[field] === "string" && data[field]);
    if (found.length === 0) return undefined;
    if (found.length === 1) {
      throw new StoreError(
        `incomplete JWT key material in ${this.description} (version ${version}): missing ` +
          `${found[0] === key ? jwks : key}. sentry never completes or overwrites part of it: ` +
          `write it, or remove ${found[0]} to let sentry generate a new JWT signing key`,
      );
    }
    return { keyPem: data[key] as string, jwksJson: data[jwks] as string };
  }

  #refuseGone(version: number, destroyed: boolean): never {
    throw new StoreError(
      `the latest version (${version}) of ${this.description} was ${
        destroyed ? "destroyed" : "deleted"
      }: ` +
        `sentry will not generate a new CA over it. Restore it (vault kv undelete / rollback) or ` +
        `remove the secret's metadata to start from nothing`,
    );
  }

  /**
   * The version to write: `bundle`, with the stored JWT fields kept when it has none, and its
   * rotation fields only when it has a rotation (a bundle without one ends it).
   */
  #payload(bundle: BundlePem, cas: number, storedJwt?: JwtKeyPem) {
    const jwt = bundle.jwt ?? storedJwt;
    const rotation = Object.entries(bundle.rotation ?? {})
      .filter(([, text]) => text !== undefined)
      .map(([part, text]) => [ROTATION_FILE_NAMES[part as keyof RotationPem], text]);
    return {
      options: { cas },
      data: {
        [KEYS.caCrt]: bundle.caCrt,
        [KEYS.issuerCrt]: bundle.issuerCrt,
        [KEYS.issuerKey]: bundle.issuerKey,
        ...(bundle.caKey ? { [KEYS.caKey]: bundle.caKey } : {}),
        ...(jwt ? { [this.#jwtKeys.key]: jwt.keyPem, [this.#jwtKeys.jwks]: jwt.jwksJson } : {}),
        ...Object.fromEntries(rotation),
      },
    };
  }

  async #write(bundle: BundlePem, cas: number, storedJwt?: JwtKeyPem): Promise<boolean> {
    try {
      const response = await this.#client.request(
        "POST",
        this.#dataPath,
        this.#payload(bundle, cas, storedJwt),
      );
      // The client hands 404 answers back; a write must come back as a new KV v2 version,
      // or nothing was stored (a mount that does not exist, or one that is not KV v2).
      const version = response.body?.data?.version;
      if (response.status === 404 || typeof version !== "number") {
        const why = response.status === 404
          ? `Vault answered 404 (${vaultErrors(response.body)})`
          : `Vault's answer (HTTP ${response.status}) names no new version`;
        throw new StoreError(
          `${this.description}: nothing was stored: ${why}; check that --vault-mount names ` +
            `a KV version 2 secrets engine`,
        );
      }
      this.#version = version;
      return true;
    } catch (error) {
      if (error instanceof StoreError) throw error;
      if (
        error instanceof VaultError && error.status === 400 &&
        error.errors.some((e) => /check-and-set/.test(e))
      ) {
        return false;
      }
      return unavailable(error);
    }
  }

  /** Writes version 1 with `cas: 0`; if another replica won, returns its bundle. */
  async create(bundle: BundlePem): Promise<BundlePem> {
    if (await this.#write(bundle, 0)) return bundle;
    const winner = await this.load();
    if (!winner) throw new StoreError(`${this.description}: create refused, yet nothing is stored`);
    return winner;
  }

  /**
   * Writes a new version with `cas: <version read>` if the store still holds `expected`
   * (rotation parts included); a `bundle` without `rotation` removes the stored one.
   */
  async replace(bundle: BundlePem, expected: BundlePem): Promise<BundlePem> {
    // Check-and-set against the version compared here, never a newer one a concurrent load
    // cached meanwhile: that would write over another replica's change.
    const read: { version?: number } = {};
    const current = await this.#load(true, read);
    const same = current !== null && sameBundlePem(current, expected);
    if (!same || read.version === undefined) {
      throw new StoreConflictError(
        `${this.description} changed since it was read; nothing was written: run again`,
      );
    }
    if (!(await this.#write(bundle, read.version, current.jwt))) {
      throw new StoreConflictError(
        `${this.description} changed while writing (check-and-set); nothing was written: run again`,
      );
    }
    return bundle;
  }

  /** Polls `current_version`; a change (or a failed poll) calls `onChange`. */
  watch(
    onChange: () => void,
    onProblem?: (problem: string | undefined) => void,
  ): { close(): void } {
    let known: number | undefined = this.#version;
    let polling = false;
    let failing = false;
    const poll = async () => {
      if (polling) return;
      polling = true;
      try {
        const response = await this.#client.request("GET", this.#metadataPath);
        const current = response.status === 200
          ? Number(response.body?.data?.current_version ?? 0)
          : 0;
        if (failing) onProblem?.(undefined);
        failing = false;
        if (known !== undefined && current !== known) onChange();
        known = current;
      } catch (error) {
        // Said even when the data itself still reads (a policy without the metadata rule):
        // new versions would otherwise go unseen without a word.
        failing = true;
        onProblem?.(
          `cannot look for new versions of ${this.description} (${this.#metadataPath}): ${
            (error as Error).message
          }`,
        );
        onChange(); // the reloader's load() reports what Vault says of the data
      } finally {
        polling = false;
      }
    };
    void poll();
    const timer = setInterval(() => void poll(), this.#pollIntervalMs);
    (timer as { unref?: () => void }).unref?.();
    return { close: () => clearInterval(timer) };
  }

  /** Stops token renewal. */
  close(): void {
    this.#client.close();
  }
}

/** Vault's `errors` list of an answer, as text. */
function vaultErrors(body: unknown): string {
  const errors = (body as { errors?: unknown } | undefined)?.errors;
  return Array.isArray(errors) && errors.length > 0 ? errors.join("; ") : "no errors given";
}
