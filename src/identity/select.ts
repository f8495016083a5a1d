/**
 * Which validators are on, from the Configuration and the mode (docs/compatibility.md#token-validators): in
 * self-hosted mode with no `tokenValidators`, INSECURE is the default and only validator;
 * configuring any validator turns INSECURE off and makes UNKNOWN the default (callers must
 * name one).
 *
 * @module
 */
import type { MtlsSettings, TokenValidatorConfig } from "../config/configuration.ts";
import type { Logger } from "../observability/logger.ts";
import { InsecureValidator } from "./insecure.ts";
import { JwksValidator } from "./jwks.ts";
import { type TokenValidator, type ValidatorSet, WireValidator } from "./validator.ts";

/** A configured validator that cannot be used. */
export class ValidatorConfigError extends Error {
  override name = "ValidatorConfigError";
}

/** Facts about sentry that validators need (audiences name sentry's own SPIFFE ID). */
export interface ValidatorContext {
  sentryTrustDomain: string;
  sentryNamespace: string;
  /** Where validators report background events (key set refreshes and their failures). */
  logger?: Logger;
  /** The clock tokens are checked against (default: the system clock). */
  now?: () => Date;
  /**
   * Kubernetes mode: makes the KUBERNETES validator, which is then always on and the default
   * (as in Dapr). Absent in self-hosted mode.
   */
  createKubernetesValidator?: () => TokenValidator;
}

async function createValidator(
  config: TokenValidatorConfig,
  context: ValidatorContext,
): Promise<TokenValidator> {
  switch (config.name) {
    case "jwks":
      return await JwksValidator.create(config.options, {
        sentryTrustDomain: context.sentryTrustDomain,
        sentryNamespace: context.sentryNamespace,
        now: context.now,
        onUpdate: (_, description) =>
          context.logger?.info(`JWKS key set loaded from ${description}`),
        onError: (error) => context.logger?.warn(`JWKS key set not refreshed: ${error.message}`),
        onWarning: (message) => context.logger?.warn(message),
      });
  }
}

/**
 * Adds the configured validators to `enabled` (a later entry for the same wire value replaces,
 * and closes, an earlier one). If one cannot be created, every validator in `enabled` is
 * closed and the error names it.
 */
async function addConfigured(
  enabled: Map<number, TokenValidator>,
  settings: MtlsSettings,
  context: ValidatorContext,
): Promise<void> {
  try {
    for (const config of settings.tokenValidators) {
      const validator = await createValidator(config, context);
      enabled.get(validator.wire)?.close?.();
      enabled.set(validator.wire, validator);
    }
  } catch (error) {
    for (const validator of enabled.values()) validator.close?.();
    throw new ValidatorConfigError(`token validator: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * Builds the validator set: in Kubernetes mode (the context can make the KUBERNETES
 * validator) KUBERNETES, always on and the default, plus the configured ones; in self-hosted
 * mode INSECURE alone when nothing is configured, else only the configured ones, with no
 * default. If one validator cannot be created, those already created are closed again and
 * the error names the validator.
 */
export async function selectValidators(
  settings: MtlsSettings,
  context: ValidatorContext,
): Promise<ValidatorSet> {
  if (context.createKubernetesValidator) {
    const kubernetes = context.createKubernetesValidator();
    const enabled = new Map<number, TokenValidator>([[kubernetes.wire, kubernetes]]);
    await addConfigured(enabled, settings, context);
    return { defaultWire: kubernetes.wire, enabled };
  }
  if (settings.tokenValidators.length === 0) {
    const insecure = new InsecureValidator();
    return { defaultWire: WireValidator.INSECURE, enabled: new Map([[insecure.wire, insecure]]) };
  }
  const enabled = new Map<number, TokenValidator>();
  await addConfigured(enabled, settings, context);
  return { defaultWire: WireValidator.UNKNOWN, enabled };
}
