/**
 * What the CA is serving with right now: the trust bundle, the mTLS settings and the token
 * validators. Each is an immutable snapshot replaced as a whole, so a request that read one
 * keeps a consistent view while a reload swaps in the next.
 *
 * @module
 */
import type { TrustBundle } from "../ca/bundle.ts";
import type { MtlsSettings } from "../config/configuration.ts";
import type { ValidatorSet } from "../identity/validator.ts";

/** Listener for bundle swaps (e.g. to re-issue the serving certificate). */
export type BundleListener = (bundle: TrustBundle) => void;

/** The live state of one CA server. */
export class CaState {
  #bundle: TrustBundle;
  #settings: MtlsSettings;
  #validators: ValidatorSet;
  readonly #bundleListeners = new Set<BundleListener>();

  /** Starts with a validated bundle, settings and validators. */
  constructor(bundle: TrustBundle, settings: MtlsSettings, validators: ValidatorSet) {
    this.#bundle = bundle;
    this.#settings = settings;
    this.#validators = validators;
  }

  /** The bundle to sign with. */
  get bundle(): TrustBundle {
    return this.#bundle;
  }

  /** The current mTLS settings. */
  get settings(): MtlsSettings {
    return this.#settings;
  }

  /** The current validators. */
  get validators(): ValidatorSet {
    return this.#validators;
  }

  /** Replaces the bundle and tells listeners. */
  setBundle(bundle: TrustBundle): void {
    this.#bundle = bundle;
    for (const listener of this.#bundleListeners) listener(bundle);
  }

  /** Replaces settings and validators together. */
  setSettings(settings: MtlsSettings, validators: ValidatorSet): void {
    this.#settings = settings;
    this.#validators = validators;
  }

  /** Calls `listener` after every bundle swap; returns a function that unsubscribes. */
  onBundle(listener: BundleListener): () => void {
    this.#bundleListeners.add(listener);
    return () => this.#bundleListeners.delete(listener);
  }
}
