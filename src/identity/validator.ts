/**
 * Token validators: how sentry decides who is asking (docs/compatibility.md#request-checks-and-status-codes). A validator checks a
 * request and answers with the identity to certify; the CA core never sees tokens.
 *
 * @module
 */
import { validateTrustDomain } from "../ca/spiffe.ts";

/** Validator names as they appear on the wire (`SignCertificateRequest.TokenValidator`). */
export const WireValidator = {
  UNKNOWN: 0,
  INSECURE: 1,
  KUBERNETES: 2,
  JWKS: 3,
} as const;

/** A signing request as decoded from the wire. */
export interface SignRequest {
  id: string;
  token: string;
  trustDomain: string;
  namespace: string;
  csr: Uint8Array;
  tokenValidator: number;
  jwtAudiences: readonly string[];
}

/** Who the caller is, once validated. */
export interface ValidatedIdentity {
  trustDomain: string;
  namespace: string;
  appId: string;
}

/** The request is not allowed; the message is returned to the caller (PERMISSION_DENIED). */
export class ValidationError extends Error {
  override name = "ValidationError";
}

/** One way of authenticating callers. */
export interface TokenValidator {
  /** The wire value that selects this validator. */
  readonly wire: number;
  /** Checks `request` and returns the identity to certify, or throws ValidationError. */
  validate(request: SignRequest): Promise<ValidatedIdentity>;
  /** Releases watchers and timers when the validator is replaced (configuration reload). */
  close?(): void;
}

const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]*$/;

/**
 * Checks every validator applies first, as Dapr does: app id present, without '.', at most
 * 64 bytes; CSR present; namespace present (all failures reported together, with Dapr's
 * wording, behind "invalid request: "); then the trust domain's characters.
 */
export function validateCommon(request: SignRequest): void {
  const problems: string[] = [];
  if (request.id === "") problems.push("parameter app-id cannot be empty");
  if (request.id.includes(".")) problems.push("parameter app-id cannot contain dots");
  if (new TextEncoder().encode(request.id).length > 64) {
    problems.push("app ID must be 64 characters or less");
  }
  if (request.csr.length === 0) problems.push("CSR is required");
  if (request.namespace === "") problems.push("namespace is required");
  if (problems.length > 0) throw new ValidationError(`invalid request: ${problems.join("; ")}`);
  if (!TRUST_DOMAIN_CHARS.test(request.trustDomain)) {
    throw new ValidationError(
      `trust domain ${JSON.stringify(request.trustDomain)} may only contain ` +
        `lowercase letters, digits, '.', '_' and '-'`,
    );
  }
  if (request.trustDomain === "") return;
  try {
    validateTrustDomain(request.trustDomain); // and the rest of the SPIFFE rules ('.', '..')
  } catch (error) {
    throw new ValidationError((error as Error).message, { cause: error });
  }
}

/** The enabled validators and the one used when a request names none. */
export interface ValidatorSet {
  /** Wire value used when the request's `token_validator` is UNKNOWN (0 = none). */
  readonly defaultWire: number;
  readonly enabled: ReadonlyMap<number, TokenValidator>;
}
