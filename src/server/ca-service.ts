/**
 * The `dapr.proto.sentry.v1.CA/SignCertificate` handler: pick the validator, validate, decode
 * the CSR, sign; in that order, with Dapr's status codes (docs/compatibility.md#request-checks-and-status-codes).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { status } from "@grpc/grpc-js";
import { CsrError, decodeCsr, decodeCsrAsync } from "../x509/csr.ts";
import type { TrustBundle } from "../ca/bundle.ts";
import {
  issueWorkloadCertificate,
  issueWorkloadCertificateAsync,
  SigningError,
  type WorkloadTiming,
} from "../ca/signer.ts";
import { SpiffeId, SpiffeIdError } from "../ca/spiffe.ts";
import type { SignRequest } from "../identity/validator.ts";
import { ValidationError, WireValidator } from "../identity/validator.ts";
import type { Logger } from "../observability/logger.ts";
import type { FailureReason, SentryMetrics } from "../observability/metrics.ts";
import type { CaState } from "./ca-state.ts";
import type { IdentityRateLimiter } from "./identity-rate-limit.ts";
import { PoolSigningError, type SigningPool } from "./signing-pool.ts";

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
   * Whether this request should verify and sign off the event loop — on {@link signingPool}
   * when there is one, else with OpenSSL's work on node:crypto's thread pool — so that the
   * event loop keeps serving other requests; or inline (a lone request: no hand-over between
   * threads, lowest latency). Default: off the event loop.
   */
  useThreadPool?: () => boolean;
  /** Worker threads that verify and sign requests that arrive in batches, when available. */
  signingPool?: SigningPool;
  /** The per-identity limit (`--identity-rate-limit`), when set. */
  rateLimiter?: IdentityRateLimiter;
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

  const now = deps.now();
  if (deps.rateLimiter && !deps.rateLimiter.tryTake(id.toString(), now.getTime())) {
    throw new SignFailure(
      status.RESOURCE_EXHAUSTED,
      `too many requests for ${id}: at most ${deps.rateLimiter.perMinute} a minute; ` +
        "retry with backoff",
      "rate_limited",
    );
  }

  const bundle = state.bundle;
  const settings = state.settings;
  const timing = { ttlMs: settings.workloadCertTtlMs, skewMs: settings.allowedClockSkewMs };
  let issued: Issued;
  if (offload && deps.signingPool?.available) {
    issued = await issueOnPool(deps.signingPool, bundle, id, request.csr, timing, now);
    deps.metrics.signedOnWorkers.inc();
  } else {
    issued = await issueHere(bundle, id, request.csr, timing, now, offload);
  }
  if (deps.logger.enabled("debug")) {
    deps.logger.debug(`signed certificate for ${id}`, { expiry: issued.notAfter.toISOString() });
  }
  return {
    workloadCertificate: Buffer.from(issued.chainPem),
    trustChainCertificates: [Buffer.from(bundle.anchorsPem)],
    validUntil: { seconds: String(Math.floor(issued.notAfter.getTime() / 1000)), nanos: 0 },
  };
}

/** The certificate chain and its NotAfter, however it was issued. */
interface Issued {
  chainPem: string;
  notAfter: Date;
}

function signingFailure(error: unknown, signerMessage: boolean): SignFailure {
  const message = signerMessage
    ? (error as Error).message
    : `failed to sign certificate: ${(error as Error).message}`;
  return new SignFailure(status.INTERNAL, message, "cert_sign_failed");
}

/**
 * Verifies the CSR and signs on this thread: entirely inline, or with OpenSSL's work on
 * node:crypto's thread pool when `offload` is set.
 */
async function issueHere(
  bundle: TrustBundle,
  id: SpiffeId,
  csrPem: Uint8Array,
  timing: WorkloadTiming,
  now: Date,
  offload: boolean,
): Promise<Issued> {
  let spki: Uint8Array;
  try {
    spki = (offload ? await decodeCsrAsync(csrPem) : decodeCsr(csrPem)).subjectPublicKeyInfo;
  } catch (error) {
    if (error instanceof CsrError) {
      throw new SignFailure(status.INVALID_ARGUMENT, error.message, "invalid_csr");
    }
    throw error;
  }
  try {
    return offload
      ? await issueWorkloadCertificateAsync(bundle, id, spki, timing, now)
      : issueWorkloadCertificate(bundle, id, spki, timing, now);
  } catch (error) {
    throw signingFailure(error, error instanceof SigningError);
  }
}

/** Verifies the CSR and signs on a worker thread of `pool`. */
async function issueOnPool(
  pool: SigningPool,
  bundle: TrustBundle,
  id: SpiffeId,
  csrPem: Uint8Array,
  timing: WorkloadTiming,
  now: Date,
): Promise<Issued> {
  try {
    return await pool.sign(bundle, id, csrPem, timing, now);
  } catch (error) {
    if (error instanceof PoolSigningError && error.kind === "csr") {
      throw new SignFailure(status.INVALID_ARGUMENT, error.message, "invalid_csr");
    }
    throw signingFailure(error, error instanceof PoolSigningError && error.kind === "signing");
  }
}
