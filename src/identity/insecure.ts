/**
 * The INSECURE validator: no token check, only the common request checks. Dapr's default in
 * self-hosted mode when no token validators are configured.
 *
 * @module
 */
import {
  type SignRequest,
  type TokenValidator,
  validateCommon,
  type ValidatedIdentity,
  WireValidator,
} from "./validator.ts";

/** Accepts any caller that passes the common checks; trust domain defaults to `public`. */
export class InsecureValidator implements TokenValidator {
  readonly wire = WireValidator.INSECURE;

  /** Runs the common checks and echoes the requested identity. */
  validate(request: SignRequest): Promise<ValidatedIdentity> {
    validateCommon(request);
    return Promise.resolve({
      trustDomain: request.trustDomain || "public",
      namespace: request.namespace,
      appId: request.id,
    });
  }
}
