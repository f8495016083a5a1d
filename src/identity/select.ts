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

/** A configured validator that this build cannot run yet. */
export class ValidatorConfigError extends Error {
  override name = "ValidatorConfigError";
}

/** Builds the validator set for self-hosted (standalone) mode. */
export function selectStandaloneValidators(settings: MtlsSettings): ValidatorSet {
  if (settings.tokenValidators.length === 0) {
    const insecure = new InsecureValidator();
    return { defaultWire: WireValidator.INSECURE, enabled: new Map([[insecure.wire, insecure]]) };
  }
  const enabled = new Map<number, TokenValidator>();
  for (const config of settings.tokenValidators) {
    if (config.name === "insecure") {
      const insecure = new InsecureValidator();
      enabled.set(insecure.wire, insecure);
    } else {
      throw new ValidatorConfigError(
        `token validator ${
          JSON.stringify(config.name)
        } is not available in this version of sentry yet`,
      );
    }
  }
  return { defaultWire: WireValidator.UNKNOWN, enabled };
}
