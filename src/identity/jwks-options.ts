/**
 * What the JWKS token validator's options and key-set documents mean: the options record
 * (`source`, `caCertificate`, `minRefreshInterval`, `requestTimeout`), a JWKS document's
 * checks (public keys only), base64-encoded inline sets and the `caCertificate` value. No I/O
 * beyond reading a `caCertificate` file.
 *
 * @module
 */
import { X509Certificate } from "node:crypto";
import type { JSONWebKeySet, JWK } from "jose";
import { durationSetting } from "../util/duration.ts";
import { isRecord } from "../util/records.ts";
import { fileErrorReason } from "../util/file-errors.ts";
import { readSmallFileSync } from "../util/bounded-read.ts";

/** A JWKS source that cannot be configured, loaded or parsed; the message names the source. */
export class JwksSourceError extends Error {
  override name = "JwksSourceError";
}

/** Members that only private or symmetric keys have. */
const SECRET_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"];

/** Settings of a JWKS source, as parsed from the validator's options. */
export interface JwksSourceOptions {
  /** URL, file path, or JWKS JSON (optionally base64-encoded). */
  source: string;
  /** PEM certificate(s), or the path of a PEM file, trusted for an https `source`. */
  caCertificate?: string;
  /** Lower bound between two fetches of a URL source (default 10 min, at least 1 s). */
  minRefreshIntervalMs?: number;
  /** Bound on each HTTP request, including redirects and the body (default 30 s). */
  requestTimeoutMs?: number;
}

function durationOption(
  options: Readonly<Record<string, unknown>>,
  name: string,
): number | undefined {
  try {
    return durationSetting(options[name], { allowZero: true, example: "10m" }) || undefined;
  } catch (error) {
    throw new JwksSourceError(
      `jwks token validator: option "${name}": ${(error as Error).message}`,
    );
  }
}

/**
 * Reads the JWKS validator's options record (`spec.mtls.tokenValidators[].options`): `source`
 * (required), `caCertificate`, `minRefreshInterval` and `requestTimeout` (Go durations; empty
 * or zero means the default). Other keys are ignored, as Dapr ignores them.
 */
export function parseJwksSourceOptions(
  options: Readonly<Record<string, unknown>>,
): JwksSourceOptions {
  const source = options.source;
  if (typeof source !== "string" || source.trim() === "") {
    throw new JwksSourceError(
      `jwks token validator: option "source" is required (a URL, a file path, or the JWKS ` +
        `as JSON, optionally base64-encoded)`,
    );
  }
  const caCertificate = options.caCertificate;
  if (caCertificate !== undefined && caCertificate !== null && typeof caCertificate !== "string") {
    throw new JwksSourceError(
      `jwks token validator: option "caCertificate" must be a PEM certificate or a file path`,
    );
  }
  const result: JwksSourceOptions = { source: source.trim() };
  if (caCertificate) result.caCertificate = caCertificate;
  const minRefreshIntervalMs = durationOption(options, "minRefreshInterval");
  if (minRefreshIntervalMs !== undefined) result.minRefreshIntervalMs = minRefreshIntervalMs;
  const requestTimeoutMs = durationOption(options, "requestTimeout");
  if (requestTimeoutMs !== undefined) result.requestTimeoutMs = requestTimeoutMs;
  return result;
}

/**
 * Parses and checks a JWKS document: a JSON object with a `keys` array of JWK objects, each
 * with a string `kty` and no private or symmetric key material. `description` names the
 * source in messages.
 */
export function parseJwks(text: string, description: string): JSONWebKeySet {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new JwksSourceError(`${description}: not valid JSON: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (!isRecord(document) || !Array.isArray(document.keys)) {
    throw new JwksSourceError(
      `${description}: not a JSON Web Key Set: expected an object with a "keys" array`,
    );
  }
  const keys = document.keys as unknown[];
  keys.forEach((key, index) => {
    const where = `${description}: key ${index}`;
    if (!isRecord(key)) throw new JwksSourceError(`${where} is not a JSON object`);
    if (typeof key.kty !== "string" || key.kty === "") {
      throw new JwksSourceError(`${where} has no "kty" (key type)`);
    }
    if (key.kid !== undefined && typeof key.kid !== "string") {
      throw new JwksSourceError(`${where} has a "kid" that is not a string`);
    }
    const secret = SECRET_MEMBERS.find((member) => Object.hasOwn(key, member));
    if (secret !== undefined) {
      const kid = typeof key.kid === "string" ? ` (kid ${JSON.stringify(key.kid)})` : "";
      throw new JwksSourceError(
        `${where}${kid} holds private or secret key material ("${secret}"); a JWKS for ` +
          `token validation must contain public keys only`,
      );
    }
  });
  return { keys: keys as JWK[] };
}

/** Decodes standard or URL-safe base64 (padding and line breaks optional); undefined if not. */
export function decodeBase64Text(text: string): string | undefined {
  const compact = text.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(compact)) return undefined;
  const standard = compact.replace(/=+$/, "").replace(/-/g, "+").replace(/_/g, "/");
  if (standard.length % 4 === 1) return undefined;
  try {
    const binary = atob(standard + "=".repeat((4 - (standard.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

/** Reads `caCertificate`: PEM text, or a file holding PEM text; checks the first certificate. */
export function loadCaCertificate(value: string): string {
  let pem = value;
  if (!value.includes("-----BEGIN")) {
    try {
      pem = readSmallFileSync(value);
    } catch (error) {
      const reason = fileErrorReason(error);
      throw new JwksSourceError(
        `jwks token validator: option "caCertificate" is neither a PEM certificate nor a ` +
          `readable file (${reason})`,
      );
    }
  }
  try {
    new X509Certificate(pem);
  } catch (error) {
    throw new JwksSourceError(
      `jwks token validator: option "caCertificate" is not a valid PEM certificate: ${
        (error as Error).message
      }`,
    );
  }
  return pem;
}
