/**
 * Dapr `Configuration` documents (apiVersion dapr.io/v1alpha1): parsing and validation into an
 * immutable snapshot of the settings sentry uses (`spec.mtls`, docs/compatibility.md#configuration).
 *
 * @module
 */
import { parse as parseYaml } from "yaml";
import { durationSetting } from "../util/duration.ts";
import { isRecord } from "../util/records.ts";

/** Token validators a Configuration may list (the built-in ones are turned on by sentry). */
export const VALIDATOR_NAMES = ["jwks"] as const;
/** One of {@link VALIDATOR_NAMES}. */
export type ValidatorName = typeof VALIDATOR_NAMES[number];

/** One entry of `spec.mtls.tokenValidators`. */
export interface TokenValidatorConfig {
  readonly name: ValidatorName;
  readonly options: Readonly<Record<string, unknown>>;
}

/** The mTLS settings sentry acts on; a new snapshot replaces the old one as a whole. */
export interface MtlsSettings {
  readonly workloadCertTtlMs: number;
  readonly allowedClockSkewMs: number;
  readonly tokenValidators: readonly TokenValidatorConfig[];
  /** `spec.mtls.controlPlaneTrustDomain` (informational; `--trust-domain` wins). */
  readonly controlPlaneTrustDomain?: string;
}

/** Dapr's defaults: 24h certificates, 15m clock skew, no token validators configured. */
export const DEFAULT_SETTINGS: MtlsSettings = Object.freeze({
  workloadCertTtlMs: 24 * 3_600_000,
  allowedClockSkewMs: 15 * 60_000,
  tokenValidators: Object.freeze([]) as readonly TokenValidatorConfig[],
});

/** A Configuration that cannot be used; the message names the source and the problem. */
export class ConfigurationError extends Error {
  override name = "ConfigurationError";
}

/** Expands `$VAR` and `${VAR}` like Go's os.ExpandEnv (unset variables become empty). */
export function expandEnv(text: string, env: Record<string, string | undefined>): string {
  return text.replace(
    /\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (_, braced, bare) => env[braced ?? bare] ?? "",
  );
}

function durationField(
  mtls: Record<string, unknown>,
  field: string,
  fallback: number,
  source: string,
  allowZero: boolean,
): number {
  try {
    return durationSetting(mtls[field], { allowZero, example: "24h" }) ?? fallback;
  } catch (error) {
    throw new ConfigurationError(`${source}: spec.mtls.${field}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/** Validators sentry turns on by itself, which a Configuration may not list. */
const BUILT_IN_VALIDATORS = ["insecure", "kubernetes"];

function tokenValidatorsField(mtls: Record<string, unknown>, source: string) {
  const value = mtls.tokenValidators ?? [];
  if (!Array.isArray(value)) {
    throw new ConfigurationError(`${source}: spec.mtls.tokenValidators must be a list`);
  }
  return Object.freeze(value.map((entry, index): TokenValidatorConfig => {
    const where = `${source}: spec.mtls.tokenValidators[${index}]`;
    if (!isRecord(entry) || typeof entry.name !== "string") {
      throw new ConfigurationError(`${where} must have a name`);
    }
    const name = entry.name.toLowerCase();
    if (BUILT_IN_VALIDATORS.includes(name)) {
      // As in Dapr: INSECURE is on only when nothing is configured (self-hosted), KUBERNETES
      // only and always in Kubernetes mode. Listing either would let whoever edits the
      // Configuration switch token checks off.
      throw new ConfigurationError(
        `${where}: invalid token validator: the built-in 'kubernetes' and 'insecure' ` +
          `validators cannot be configured manually`,
      );
    }
    if (!(VALIDATOR_NAMES as readonly string[]).includes(name)) {
      throw new ConfigurationError(
        `${where}: unknown token validator ${JSON.stringify(entry.name)} ` +
          `(known: ${VALIDATOR_NAMES.join(", ")})`,
      );
    }
    if (entry.options !== undefined && !isRecord(entry.options)) {
      throw new ConfigurationError(`${where}.options must be a mapping`);
    }
    return Object.freeze({
      name: name as ValidatorName,
      options: Object.freeze({ ...(entry.options ?? {}) }),
    });
  }));
}

/**
 * Parses a Configuration document (YAML or JSON text) into settings. `source` names where the
 * text came from, for messages. Environment variables are expanded first, as Dapr does; an
 * empty document yields the defaults.
 */
export function parseConfiguration(
  text: string,
  source: string,
  env: Record<string, string | undefined> = {},
): MtlsSettings {
  let document: unknown;
  try {
    document = parseYaml(expandEnv(text, env));
  } catch (error) {
    const firstLine = (error as Error).message.split("\n")[0];
    throw new ConfigurationError(`${source}: not valid YAML: ${firstLine}`);
  }
  // An empty document (nothing, or only comments) means all defaults, as in Dapr.
  return settingsFromDocument(document ?? {}, source);
}

/**
 * Validates a Configuration object (parsed YAML, or the custom resource read from the
 * Kubernetes API) into settings; `source` names it in messages.
 */
export function settingsFromDocument(document: unknown, source: string): MtlsSettings {
  if (!isRecord(document)) {
    throw new ConfigurationError(`${source}: expected a Configuration object`);
  }
  if (document.kind !== undefined && document.kind !== "Configuration") {
    throw new ConfigurationError(
      `${source}: kind is ${JSON.stringify(document.kind)}, expected "Configuration"`,
    );
  }
  const spec = document.spec ?? {};
  if (!isRecord(spec)) throw new ConfigurationError(`${source}: spec must be a mapping`);
  const mtls = spec.mtls ?? {};
  if (!isRecord(mtls)) throw new ConfigurationError(`${source}: spec.mtls must be a mapping`);
  const controlPlaneTrustDomain = typeof mtls.controlPlaneTrustDomain === "string"
    ? mtls.controlPlaneTrustDomain
    : undefined;
  return Object.freeze({
    workloadCertTtlMs: durationField(
      mtls,
      "workloadCertTTL",
      DEFAULT_SETTINGS.workloadCertTtlMs,
      source,
      false,
    ),
    allowedClockSkewMs: durationField(
      mtls,
      "allowedClockSkew",
      DEFAULT_SETTINGS.allowedClockSkewMs,
      source,
      true,
    ),
    tokenValidators: tokenValidatorsField(mtls, source),
    ...(controlPlaneTrustDomain ? { controlPlaneTrustDomain } : {}),
  });
}
