/**
 * The credential store interface: where a trust bundle lives (a directory, a Kubernetes
 * Secret, Vault). The CA core never knows which store it has; stores never validate
 * certificates (the caller does, with src/ca/bundle.ts).
 *
 * @module
 */
import type { BundlePem } from "../ca/bundle.ts";
import type { JwtNames } from "../ca/jwt-keys.ts";

/** The store's content cannot be used as it is (partial, unreadable); nothing was changed. */
export class StoreError extends Error {
  override name = "StoreError";
}

/**
 * The store cannot be reached or refuses to answer right now (network, a sealed or standby
 * Vault, a Kubernetes API outage). Never "nothing stored": callers retry or keep what they
 * have, and never generate a new CA because of it.
 */
export class StoreUnavailableError extends StoreError {
  override name = "StoreUnavailableError";
}

/**
 * The store is empty but shows that it held a trust bundle before (a Kubernetes Secret emptied
 * while its trust-anchor ConfigMap, its root key or its fingerprint annotation remains): the CA
 * that sidecars trust is gone. Nothing is generated silently; replacing the CA on purpose is
 * `sentry init --force`, which accepts this state.
 */
export class StoreEmptiedError extends StoreError {
  override name = "StoreEmptiedError";
}

/** A compare-and-swap write found the store changed since it was read; nothing was written. */
export class StoreConflictError extends StoreError {
  override name = "StoreConflictError";
}

/** A place that holds one trust bundle. */
export interface CredentialStore {
  /** Where the bundle lives, for logs and messages (e.g. `directory /var/run/...`). */
  readonly description: string;
  /** File names used for the three parts, for messages about their content. */
  readonly names: { caCrt: string; issuerCrt: string; issuerKey: string };
  /** Names of the JWT key and JWKS parts, for messages (stores that keep them). */
  readonly jwtNames?: JwtNames;
  /**
   * Reads the stored bundle. Returns null when nothing is stored at all; throws
   * {@link StoreError} when the content is partial or unreadable (never "nothing stored").
   * The JWT key and JWKS are returned as `jwt` when both are stored; one without the other, or
   * JWT parts without the X.509 parts, is partial. The parts of a root rotation in progress are
   * returned as `rotation` when its state is stored; the state without the new root, issuer
   * certificate or issuer key (or without the X.509 parts) is partial.
   */
  load(): Promise<BundlePem | null>;
  /**
   * Stores `bundle` only if nothing is stored yet, never overwriting. If another writer got
   * there first, returns what that writer stored instead.
   */
  create(bundle: BundlePem): Promise<BundlePem>;
  /**
   * Replaces the stored bundle with `bundle` only if the store still holds `expected`
   * (compare-and-swap, rotation parts included); throws {@link StoreConflictError} otherwise,
   * writing nothing. A `bundle` without `jwt` leaves stored JWT parts as they are; a `bundle`
   * without `rotation` removes stored rotation parts (that is how a rotation ends or is
   * abandoned), all together with the other changes.
   */
  replace(bundle: BundlePem, expected: BundlePem): Promise<BundlePem>;
  /**
   * Calls `onChange` when the stored bundle (rotation parts included) may have changed
   * (debounced; spurious calls are allowed: the caller re-loads and compares). Stores that poll
   * call `onProblem` with what went wrong when a look for changes fails (then `onChange` too, so
   * the caller re-loads), and with undefined when looking works again. Returns a handle that
   * stops watching.
   */
  watch(onChange: () => void, onProblem?: (problem: string | undefined) => void): { close(): void };
  /**
   * Brings derived copies in line with `bundle` (the Kubernetes trust-anchor ConfigMap, with
   * the JWKS when `bundle.jwt` is given, without it otherwise). Called after start-up and after
   * every swap; stores without copies omit it.
   */
  publish?(bundle: BundlePem): Promise<void>;
  /**
   * Namespaces whose copy of the trust anchors does not have this root yet; the rotation does
   * not complete while any lag. Stores without copies in other places omit it.
   */
  lagging?(newRootPem: string, options?: { ownNamespaceOnly?: boolean }): Promise<string[]>;
  /** Releases connections and timers (token renewal, polling). */
  close?(): void;
}

/** Store kinds selectable with `--store`. */
export const STORE_KINDS = ["fs", "k8s", "vault"] as const;
/** One of {@link STORE_KINDS}. */
export type StoreKind = typeof STORE_KINDS[number];
