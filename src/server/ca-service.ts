/**
 * The `dapr.proto.sentry.v1.CA/SignCertificate` handler: pick the validator, validate, decode
 * the CSR, sign; in that order, with Dapr's status codes (docs/compatibility.md#request-checks-and-status-codes).
 * With JWT issuing on, the response also carries the workload's JWT-SVIDs, signed on this
 * thread right after the certificate: `jwt` for the trust domain plus the requested audiences,
 * and one token per audience in `per_audience_jwts`.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { status } from "@grpc/grpc-js";
import { CsrError } from "../x509/csr.ts";
import { SigningError } from "../ca/signer.ts";
import { controlPlaneDnsNames } from "../ca/control-plane.ts";
import { SpiffeId, SpiffeIdError } from "../ca/spiffe.ts";
import type { TrustBundle } from "../ca/bundle.ts";
import type { JwtSigningKey } from "../ca/jwt-keys.ts";
import { jwtKeyAt } from "../ca/jwt-rotation.ts";
import {
  daprJwtAudiences,
  type JwtSvidRequest,
  signJwtSvid,
  signPerAudienceJwtSvids,
} from "../ca/jwt-svid.ts";
import type { SignRequest } from "../identity/validator.ts";
import { ValidationError, WireValidator } from "../identity/validator.ts";
import type { Logger } from "../observability/logger.ts";
import type { FailureReason, SentryMetrics } from "../observability/metrics.ts";
import type { CaState } from "./ca-state.ts";
import type { IdentityRateLimiter } from "./identity-rate-limit.ts";
import type { IssuedChain, WorkloadIssuer } from "./workload-issuer.ts";

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
  /** The JWT-SVID for every audience (a google.protobuf.StringValue), when JWT issuing is on. */
  jwt?: { value: string };
  /** One JWT-SVID per audience, when JWT issuing is on. */
  perAudienceJwts?: Record<string, { value: string }>;
}

/** How JWT-SVIDs are issued (`--jwt-ttl`, `--jwt-issuer`); the key comes with the bundle. */
export interface JwtIssuing {
  ttlMs: number;
  /** The `iss` claim; omitted when undefined. */
  issuer?: string;
}

/** Dependencies of the handler. */
export interface CaServiceDeps {
  state: CaState;
  metrics: SentryMetrics;
  logger: Logger;
  /** The clock; tests move it. */
  now: () => Date;
  /** Verifies CSRs and signs them, on whichever thread it picks. */
  issuer: WorkloadIssuer;
  /** Sentry's namespace: its control-plane services get DNS names (see control-plane.ts). */
  namespace: string;
  /** The cluster domain of the scheduler's DNS names. */
  clusterDomain: string;
  /** The per-identity limit (`--identity-rate-limit`), when set. */
  rateLimiter?: IdentityRateLimiter;
  /** Set when JWT issuing is on (`--jwt-enabled`). */
  jwt?: JwtIssuing;
}

/** Each bundle's trust anchors as response bytes, encoded once per loaded bundle. */
const anchorsBytesByBundle = new WeakMap<TrustBundle, Buffer>();

function anchorsBytes(bundle: TrustBundle): Buffer {
  let bytes = anchorsBytesByBundle.get(bundle);
  if (!bytes) {
    bytes = Buffer.from(bundle.anchorsPem);
    anchorsBytesByBundle.set(bundle, bytes);
  }
  return bytes;
}

/** Runs one request through validation, CSR decoding and signing. */
export async function signCertificate(
  request: SignRequest,
  deps: CaServiceDeps,
): Promise<SignResponse> {
  const { state } = deps;
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
  let dnsNames: string[];
  let identity: { trustDomain: string; namespace: string; appId: string };
  try {
    identity = await validator.validate(request);
    id = SpiffeId.forWorkload(identity.trustDomain, identity.namespace, identity.appId);
    dnsNames = controlPlaneDnsNames(
      identity.appId,
      identity.namespace,
      deps.namespace,
      deps.clusterDomain,
    );
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
  let issued: IssuedChain;
  try {
    issued = await deps.issuer.issue({ bundle, id, csrPem: request.csr, timing, now, dnsNames });
  } catch (error) {
    throw issueFailure(error);
  }
  if (deps.logger.enabled("debug")) {
    deps.logger.debug(`signed certificate for ${id}`, { expiry: issued.notAfter.toISOString() });
  }
  const response: SignResponse = {
    workloadCertificate: Buffer.from(
      issued.chain.buffer,
      issued.chain.byteOffset,
      issued.chain.byteLength,
    ),
    trustChainCertificates: [anchorsBytes(bundle)],
    validUntil: { seconds: String(Math.floor(issued.notAfter.getTime() / 1000)), nanos: 0 },
  };
  if (!deps.jwt) return response;
  const tokenRequest: JwtSvidRequest = {
    trustDomain: id.trustDomain,
    namespace: identity.namespace,
    appId: identity.appId,
    audiences: daprJwtAudiences(id.trustDomain, request.jwtAudiences),
  };
  const tokens = await signJwtSvids(bundle.jwt && jwtKeyAt(bundle.jwt, now), tokenRequest, {
    ttlMs: deps.jwt.ttlMs,
    issuer: deps.jwt.issuer,
    allowedClockSkewMs: settings.allowedClockSkewMs,
    now,
  });
  return { ...response, ...tokens };
}

/** Signs the response's tokens, as Dapr does; a failure answers INTERNAL. */
async function signJwtSvids(
  key: JwtSigningKey | undefined,
  request: JwtSvidRequest,
  options: Parameters<typeof signJwtSvid>[2],
): Promise<Pick<SignResponse, "jwt" | "perAudienceJwts">> {
  try {
    if (!key) throw new Error("JWT issuing is enabled but no JWT signing key is loaded");
    const [jwt, perAudience] = await Promise.all([
      signJwtSvid(key, request, options),
      signPerAudienceJwtSvids(key, request, options),
    ]);
    return {
      jwt: { value: jwt },
      perAudienceJwts: Object.fromEntries(
        [...perAudience].map(([audience, token]) => [audience, { value: token }]),
      ),
    };
  } catch (error) {
    throw new SignFailure(
      status.INTERNAL,
      `failed to generate JWT: ${(error as Error)?.message ?? String(error)}`,
      "cert_sign_failed",
    );
  }
}

/**
 * How a failure that crossed the issuing seam answers the caller: a bad CSR is the caller's
 * error; a CA that cannot sign, or a fault, is INTERNAL.
 */
function issueFailure(error: unknown): SignFailure {
  const message = (error as Error)?.message ?? String(error);
  if (error instanceof CsrError) {
    return new SignFailure(status.INVALID_ARGUMENT, message, "invalid_csr");
  }
  if (error instanceof SigningError) {
    return new SignFailure(status.INTERNAL, message, "cert_sign_failed");
  }
  return new SignFailure(
    status.INTERNAL,
    `failed to sign certificate: ${message}`,
    "cert_sign_failed",
  );
}
