/**
 * The `dapr.proto.sentry.v1.CA/SignCertificate` handler: pick the validator, validate, decode
 * the CSR, sign; in that order, with Dapr's status codes (compat spec §2).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { status } from "@grpc/grpc-js";
import { CsrError, decodeCsr, decodeCsrAsync } from "../ca/csr.ts";
import {
  issueWorkloadCertificate,
  issueWorkloadCertificateAsync,
  SigningError,
} from "../ca/signer.ts";
import { SpiffeId, SpiffeIdError } from "../ca/spiffe.ts";
import type { SignRequest } from "../identity/validator.ts";
import { ValidationError, WireValidator } from "../identity/validator.ts";
import type { Logger } from "../observability/logger.ts";
import type { FailureReason, SentryMetrics } from "../observability/metrics.ts";
import type { CaState } from "./ca-state.ts";

/** A failed request: the gRPC status, the message for the caller, the metric reason. */
export class SignFailure extends Error {
  override name = "SignFailure";
  /** Creates a failure with a gRPC status code and a metrics reason. */
  constructor(readonly code: status, message: string, readonly reason: FailureReason) {
    super(message);
  }
}

/** The response fields, before protobuf encoding. */
export interface SignResponse {
  workloadCertificate: Buffer;
  trustChainCertificates: Buffer[];
  validUntil: { seconds: string; nanos: number };
}

/** Dependencies of the handler. */
export interface CaServiceDeps {
  state: CaState;
  metrics: SentryMetrics;
  logger: Logger;
  /** The clock; tests move it. */
  now: () => Date;
  /**
   * Whether this request should verify and sign on node:crypto's thread pool (true when other
   * requests are in progress: the event loop keeps serving them) or inline (a lone request:
   * no thread hand-over, lowest latency). Default: always the thread pool.
   */
  useThreadPool?: () => boolean;
}

/** Runs one request through validation, CSR decoding and signing. */
export async function signCertificate(
  request: SignRequest,
  deps: CaServiceDeps,
): Promise<SignResponse> {
  const { state } = deps;
  const offload = deps.useThreadPool?.() ?? true;
  const validators = state.validators;
  const wire = request.tokenValidator !== WireValidator.UNKNOWN
    ? request.tokenValidator
    : validators.defaultWire;
  if (wire === WireValidator.UNKNOWN) {
    throw new SignFailure(
      status.INVALID_ARGUMENT,
      "a validator name must be specified in this environment",
      "invalid_validator",
    );
  }
  const validator = validators.enabled.get(wire);
  if (!validator) {
    throw new SignFailure(
      status.INVALID_ARGUMENT,
      "the requested validator is not enabled",
      "invalid_validator",
    );
  }

  let id: SpiffeId;
  try {
    const identity = await validator.validate(request);
    id = SpiffeId.forWorkload(identity.trustDomain, identity.namespace, identity.appId);
  } catch (error) {
    if (error instanceof ValidationError || error instanceof SpiffeIdError) {
      throw new SignFailure(status.PERMISSION_DENIED, error.message, "token_validation_failed");
    }
    throw error;
  }

  let spki: Uint8Array;
  try {
    const csr = offload ? await decodeCsrAsync(request.csr) : decodeCsr(request.csr);
    spki = csr.subjectPublicKeyInfo;
  } catch (error) {
    if (error instanceof CsrError) {
      throw new SignFailure(status.INVALID_ARGUMENT, error.message, "invalid_csr");
    }
    throw error;
  }

  const bundle = state.bundle;
  const settings = state.settings;
  try {
    const timing = { ttlMs: settings.workloadCertTtlMs, skewMs: settings.allowedClockSkewMs };
    const issued = offload
      ? await issueWorkloadCertificateAsync(bundle, id, spki, timing, deps.now())
      : issueWorkloadCertificate(bundle, id, spki, timing, deps.now());
    if (deps.logger.enabled("debug")) {
      deps.logger.debug(`signed certificate for ${id}`, { expiry: issued.notAfter.toISOString() });
    }
    return {
      workloadCertificate: Buffer.from(issued.chainPem),
      trustChainCertificates: [Buffer.from(bundle.anchorsPem)],
      validUntil: { seconds: String(Math.floor(issued.notAfter.getTime() / 1000)), nanos: 0 },
    };
  } catch (error) {
    const message = error instanceof SigningError
      ? error.message
      : `failed to sign certificate: ${(error as Error).message}`;
    throw new SignFailure(status.INTERNAL, message, "cert_sign_failed");
  }
}
