/**
 * A small gRPC client for sentry's `SignCertificate`, verifying the server the way daprd
 * does: TLS trusting only the given anchors, no hostname check, and instead exactly one URI
 * SAN equal to sentry's SPIFFE ID `spiffe://<control-plane td>/ns/<namespace>/dapr-sentry` on
 * a non-CA leaf. Uses the embedded service definition, so it reads no `.proto` file.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import * as der from "../x509/der.ts";
import { isCa, parseCertificate, type ParsedCertificate } from "../x509/parse.ts";
import { CA_SERVICE, sentryPackageDefinition } from "../proto/sentry-proto.ts";

/** What a daprd-like client sends (field names as in the embedded definition). */
export interface SignCertificateRequest {
  /** The app id. */
  id: string;
  token: string;
  /** Empty lets the server choose (`public` unless a validator decides otherwise). */
  trustDomain: string;
  namespace: string;
  /** PEM `CERTIFICATE REQUEST`. */
  csrPem: string;
  /** `SignCertificateRequest.TokenValidator` value (see WireValidator). */
  tokenValidator: number;
  jwtAudiences?: readonly string[];
}

/** What sentry answers. */
export interface SignCertificateResponse {
  /** PEM: the leaf, then the issuer chain. */
  workloadCertificate: Buffer;
  /** PEM trust anchors (sentry sends one element holding all of them). */
  trustChainCertificates: Buffer[];
  /** The leaf's NotAfter, when the server sent it. */
  validUntil?: Date;
}

/** Where sentry is and how to recognize it. */
export interface SentryClientOptions {
  /** gRPC target, e.g. `localhost:50001`. */
  address: string;
  /** PEM trust anchors: the only roots the TLS handshake accepts. */
  anchorsPem: string | Uint8Array;
  /** The SPIFFE ID sentry's serving certificate must carry. */
  sentrySpiffeId: string;
  /** Deadline of the whole call, connection included. */
  timeoutMs: number;
}

/** The call failed; `code` is the gRPC status when there was one. */
export class SignCertificateError extends Error {
  override name = "SignCertificateError";
  /** Wraps a failure with its gRPC status code. */
  constructor(message: string, readonly code?: grpc.status) {
    super(message);
  }
}

/** The URI subject alternative names of a certificate, in order. */
export function uriSans(cert: ParsedCertificate): string[] {
  const extension = cert.extensions.get("2.5.29.17");
  if (!extension) return [];
  const value = extension.value;
  const names = der.children(value, der.expectElement(value, der.Tag.SEQUENCE));
  return names
    .filter((name) => name.tag === 0x86) // [6] uniformResourceIdentifier, IA5String
    .map((name) => Buffer.from(der.contentOf(value, name)).toString("latin1"));
}

/**
 * URIs in Node's `subjectaltname` string (`DNS:a, URI:spiffe://...`; values with special
 * characters are JSON-quoted). Only used when the peer certificate has no raw DER.
 */
function urisFromAltNameString(text: string): string[] {
  const uris: string[] = [];
  const entry = /\s*([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:,|$)/g;
  for (const match of text.matchAll(entry)) {
    if (match[0] === "") break;
    if (match[1].trim() !== "URI") continue;
    uris.push(match[2].startsWith('"') ? JSON.parse(match[2]) : match[2]);
  }
  return uris;
}

/**
 * daprd's check of sentry's serving certificate (after the chain verified against the
 * anchors): a non-CA leaf with exactly one URI SAN, equal to `expected`. Returns the reason
 * as an Error, or undefined when it passes.
 */
export function checkSentryIdentity(cert: PeerCertificate, expected: string): Error | undefined {
  let uris: string[];
  let ca = false;
  try {
    if (cert.raw && cert.raw.length > 0) {
      const parsed = parseCertificate(cert.raw);
      uris = uriSans(parsed);
      ca = isCa(parsed);
    } else {
      uris = urisFromAltNameString(cert.subjectaltname ?? "");
      ca = (cert as PeerCertificate & { ca?: boolean }).ca === true;
    }
  } catch (error) {
    return new Error(`cannot read sentry's serving certificate: ${(error as Error).message}`);
  }
  if (uris.length !== 1) {
    const found = uris.length === 0 ? "none" : uris.join(", ");
    return new Error(
      `sentry's serving certificate must carry exactly one URI SAN (${expected}); found ${found}`,
    );
  }
  if (uris[0] !== expected) {
    return new Error(
      `SPIFFE ID mismatch: sentry presented ${uris[0]}, expected ${expected} ` +
        `(see --control-plane-trust-domain and --control-plane-namespace)`,
    );
  }
  if (ca) return new Error("sentry's serving certificate is a CA certificate");
  return undefined;
}

/** The host part of a gRPC target (`host:port`, `[v6]:port`, `dns:///host:port`). */
function targetHost(address: string): string {
  const authority = address.replace(/^[a-z0-9+.-]+:\/\/[^/]*\//i, "").replace(/^dns:/i, "");
  const bracketed = /^\[([^\]]+)\]/.exec(authority);
  if (bracketed) return bracketed[1];
  return authority.replace(/:\d*$/, "");
}

type CaClient = grpc.Client & {
  SignCertificate(
    request: unknown,
    options: grpc.CallOptions,
    callback: (error: grpc.ServiceError | null, response?: WireResponse) => void,
  ): void;
};

interface WireResponse {
  workloadCertificate: Buffer;
  trustChainCertificates: Buffer[];
  validUntil: { seconds: string; nanos: number } | null;
}

function toDate(timestamp: WireResponse["validUntil"]): Date | undefined {
  if (!timestamp) return undefined;
  const seconds = Number(timestamp.seconds);
  if (!Number.isFinite(seconds) || seconds === 0) return undefined;
  return new Date(seconds * 1000 + Math.floor((timestamp.nanos ?? 0) / 1e6));
}

/** Certificate verification failures reported by Node's TLS (as opposed to network errors). */
const TLS_FAILURE = /certificate|self[- ]signed|CERT_|unable to (get|verify)/i;

/**
 * The cause inside grpc-js's connection failure text
 * (`No connection established. Last error: Error: <cause>. Resolution note: <note>`).
 */
function connectionReason(details: string): string {
  const match = /Last error: (?:[A-Za-z]*Error: )?(.*?)(?:\. Resolution note: (.*))?$/s.exec(
    details,
  );
  if (!match) return details;
  const note = match[2]?.trim();
  return note ? `${match[1]} (${note})` : match[1];
}

/** A readable message for a failed call. */
function describeFailure(
  error: grpc.ServiceError,
  options: SentryClientOptions,
  identityError: Error | undefined,
): SignCertificateError {
  const name = grpc.status[error.code] ?? String(error.code);
  const details = error.details || error.message;
  if (error.code === grpc.status.UNAVAILABLE && identityError) {
    return new SignCertificateError(
      `refusing sentry at ${options.address}: ${identityError.message}`,
      error.code,
    );
  }
  if (error.code === grpc.status.UNAVAILABLE) {
    const reason = connectionReason(details);
    if (TLS_FAILURE.test(reason)) {
      return new SignCertificateError(
        `sentry at ${options.address} is not trusted: ${reason} ` +
          `(--anchors must hold the trust anchors sentry's certificate chains to)`,
        error.code,
      );
    }
    return new SignCertificateError(
      `cannot reach sentry at ${options.address} (UNAVAILABLE): ${reason}`,
      error.code,
    );
  }
  if (error.code === grpc.status.DEADLINE_EXCEEDED) {
    return new SignCertificateError(
      `no answer from sentry at ${options.address} within ${options.timeoutMs / 1000}s ` +
        `(DEADLINE_EXCEEDED)`,
      error.code,
    );
  }
  return new SignCertificateError(`SignCertificate failed: ${name}: ${details}`, error.code);
}

/**
 * Calls SignCertificate once on a fresh channel (closed afterwards). Rejects with a
 * {@link SignCertificateError}: `SignCertificate failed: PERMISSION_DENIED: <details>` when
 * sentry refused, or a connection message (unreachable, wrong SPIFFE ID, untrusted chain).
 */
export function signCertificate(
  options: SentryClientOptions,
  request: SignCertificateRequest,
): Promise<SignCertificateResponse> {
  let identityError: Error | undefined;
  const credentials = grpc.credentials.createSsl(Buffer.from(options.anchorsPem), null, null, {
    // Like daprd: no hostname check; the SPIFFE ID is the server's identity.
    checkServerIdentity: (_host: string, cert: PeerCertificate) => {
      const failure = checkSentryIdentity(cert, options.sentrySpiffeId);
      if (failure) identityError = failure;
      return failure;
    },
  });
  const channelOptions: grpc.ChannelOptions = {};
  // An IP address is not a valid TLS server name (RFC 6066; Node warns): send a name instead.
  if (isIP(targetHost(options.address))) {
    channelOptions["grpc.ssl_target_name_override"] = "dapr-sentry";
  }
  const definition = sentryPackageDefinition()[CA_SERVICE] as grpc.ServiceDefinition;
  const Client = grpc.makeGenericClientConstructor(definition, "CA");
  const client = new Client(options.address, credentials, channelOptions) as unknown as CaClient;
  const wire = {
    id: request.id,
    token: request.token,
    trustDomain: request.trustDomain,
    namespace: request.namespace,
    certificateSigningRequest: Buffer.from(request.csrPem),
    tokenValidator: request.tokenValidator,
    jwtAudiences: [...(request.jwtAudiences ?? [])],
  };
  return new Promise<SignCertificateResponse>((resolve, reject) => {
    client.SignCertificate(
      wire,
      { deadline: new Date(Date.now() + options.timeoutMs) },
      (error, response) => {
        if (error) {
          reject(describeFailure(error, options, identityError));
          return;
        }
        if (!response) {
          reject(new SignCertificateError("SignCertificate returned no response"));
          return;
        }
        resolve({
          workloadCertificate: Buffer.from(response.workloadCertificate ?? []),
          trustChainCertificates: (response.trustChainCertificates ?? []).map((b) =>
            Buffer.from(b)
          ),
          validUntil: toDate(response.validUntil),
        });
      },
    );
  }).finally(() => client.close());
}
