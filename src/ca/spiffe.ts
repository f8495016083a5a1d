/**
 * SPIFFE IDs as a validated type (like go-spiffe's spiffeid.ID), so that a string that could
 * not be a workload identity never reaches the signer.
 *
 * Rules (SPIFFE standard, as enforced by Dapr): trust domain `[a-z0-9._-]+`; path segments
 * `[A-Za-z0-9._-]+`, never `.` or `..`; the whole ID at most 2048 bytes. Stricter than Dapr
 * and go-spiffe: the trust domain is never `.` or `..` either (a dot segment where the URI's
 * authority belongs; docs/compatibility.md).
 *
 * @module
 */

/** A SPIFFE ID that cannot be formed from the given parts. */
export class SpiffeIdError extends Error {
  override name = "SpiffeIdError";
}

const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;
const MAX_LENGTH = 2048;

/** Throws unless `trustDomain` is a valid SPIFFE trust domain name. */
export function validateTrustDomain(trustDomain: string): void {
  const invalid = `trust domain ${JSON.stringify(trustDomain)} is invalid`;
  if (trustDomain === "") throw new SpiffeIdError(`${invalid}: it is empty`);
  if (trustDomain === "." || trustDomain === "..") {
    throw new SpiffeIdError(`${invalid}: it cannot be '.' or '..'`);
  }
  if (!TRUST_DOMAIN.test(trustDomain)) {
    throw new SpiffeIdError(
      `${invalid}: it may only contain ` +
        `lowercase letters, digits, '.', '_' and '-'`,
    );
  }
}

/** A validated `spiffe://<trust-domain>/<path>` identity. */
export class SpiffeId {
  private constructor(
    /** The trust domain name. */
    readonly trustDomain: string,
    /** The path, starting with `/`. */
    readonly path: string,
  ) {}

  /** Builds an ID from a trust domain and path segments, validating every part. */
  static fromSegments(trustDomain: string, ...segments: string[]): SpiffeId {
    validateTrustDomain(trustDomain);
    if (segments.length === 0) throw new SpiffeIdError("a workload SPIFFE ID needs a path");
    for (const segment of segments) {
      if (!SEGMENT.test(segment) || segment === "." || segment === "..") {
        throw new SpiffeIdError(
          `path segment ${JSON.stringify(segment)} is invalid: it must be non-empty, ` +
            `contain only letters, digits, '.', '_' and '-', and not be '.' or '..'`,
        );
      }
    }
    const id = new SpiffeId(trustDomain, "/" + segments.join("/"));
    // Every character checked above is ASCII: the string's length is its size in bytes.
    if (id.toString().length > MAX_LENGTH) {
      throw new SpiffeIdError(`SPIFFE ID is longer than ${MAX_LENGTH} bytes`);
    }
    return id;
  }

  /** Dapr's workload identity `spiffe://<td>/ns/<namespace>/<appId>`. */
  static forWorkload(trustDomain: string, namespace: string, appId: string): SpiffeId {
    return SpiffeId.fromSegments(trustDomain, "ns", namespace, appId);
  }

  /** Parses a `spiffe://` URI, validating it. */
  static parse(uri: string): SpiffeId {
    const match = /^spiffe:\/\/([^/]*)(\/.*)?$/.exec(uri);
    if (!match || !match[2]) {
      throw new SpiffeIdError(`${JSON.stringify(uri)} is not a spiffe://<trust-domain>/<path> URI`);
    }
    return SpiffeId.fromSegments(match[1], ...match[2].slice(1).split("/"));
  }

  /** The URI form. */
  toString(): string {
    return `spiffe://${this.trustDomain}${this.path}`;
  }
}
