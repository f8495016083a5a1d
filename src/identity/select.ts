/**
 * Which validators are on, from the Configuration and the mode (compat spec §2): in
 * self-hosted mode with no `tokenValidators`, INSECURE is the default and only validator;
 * configuring any validator turns INSECURE off and makes UNKNOWN the default.
 *
 * @module
 */
import type { MtlsSettings } from "../config/configuration.ts";
import type { ValidatorSet } from "../server/ca-state.ts";
import { InsecureValidator } from "./insecure.ts";
import { type TokenValidator, WireValidator } from "./validator.ts";

/** A configured validator that cannot be used. */
export class ValidatorConfigError extends Error {
  override name = "ValidatorConfigError";
}

/** Facts about sentry that validators need (audiences name sentry's own SPIFFE ID). */
export interface ValidatorContext {
  sentryTrustDomain: string;
  sentryNamespace: string;
}

/**
 * Builds the validator set for self-hosted (standalone) mode. Validators that hold resources
 * (watchers, timers) are closed again if a later one fails.
 */
export function selectStandaloneValidators(
  settings: MtlsSettings,
  _context: ValidatorContext,
): Promise<ValidatorSet> {
  if (settings.tokenValidators.length === 0) {
    const insecure = new InsecureValidator();
    return Promise.resolve({
      defaultWire: WireValidator.INSECURE,
      enabled: new Map([[insecure.wire, insecure]]),
    });
  }
  const enabled = new Map<number, TokenValidator>();
  for (const config of settings.tokenValidators) {
    if (config.name === "insecure") {
      const insecure = new InsecureValidator();
      enabled.set(insecure.wire, insecure);
    } else {
      for (const validator of enabled.values()) validator.close?.();
      return Promise.reject(
        new ValidatorConfigError(
          `token validator ${
            JSON.stringify(config.name)
          } is not available in this version of sentry yet`,
        ),
      );
    }
  }
  return Promise.resolve({ defaultWire: WireValidator.UNKNOWN, enabled });
}
