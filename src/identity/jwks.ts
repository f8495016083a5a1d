/**
 * The JWKS validator (docs/compatibility.md#token-validators): the caller proves who it is with a JWT signed by a key in
 * a configured JSON Web Key Set. As in Dapr, the token must name its key (`kid`), verify
 * against the set, pass `exp`/`nbf`/`iat` with 5 minutes of clock tolerance (and, unlike Dapr
 * but like go-spiffe, carry an `exp` at all), carry sentry's
 * SPIFFE ID `spiffe://<sentry td>/ns/<sentry namespace>/dapr-sentry` in `aud`, and have as `sub`
 * exactly the SPIFFE ID it asks a certificate for, `spiffe://<td>/ns/<namespace>/<app id>`.
 *
 * A token naming a key the set does not hold makes the source refresh once (at most once per
 * `minRefreshInterval`) before the token is refused, so keys published after start are picked
 * up without waiting for the periodic refresh.
 *
 * @module
 */
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  type JWTPayload,
  jwtVerify,
  type JWTVerifyOptions,
  type ProtectedHeaderParameters,
} from "jose";
import { formatDuration } from "../util/duration.ts";
import { SpiffeId, SpiffeIdError } from "../ca/spiffe.ts";
import { parseJwksSourceOptions } from "./jwks-options.ts";
import { JwksSource, type JwksSourceHandlers } from "./jwks-source.ts";
import {
  type SignRequest,
  type TokenValidator,
  validateCommon,
  type ValidatedIdentity,
  ValidationError,
  WireValidator,
} from "./validator.ts";

/** Clock tolerance for `exp`, `nbf` and `iat`, as in Dapr (5 minutes), in seconds. */
export const CLOCK_TOLERANCE_SECONDS = 300;

const TOLERANCE_TEXT = formatDuration(CLOCK_TOLERANCE_SECONDS * 1000);
const VERIFY_OPTIONS: JWTVerifyOptions = { clockTolerance: CLOCK_TOLERANCE_SECONDS };

/**
 * What the JWKS validator needs besides its options: sentry's own identity (its `--trust-domain`
 * and `NAMESPACE`, which form the audience tokens must carry), and optional handlers for the
 * key source's background events (refresh failures, rotations, warnings) to be logged.
 */
export interface JwksValidatorContext extends JwksSourceHandlers {
  sentryTrustDomain: string;
  sentryNamespace: string;
  /** The clock tokens' times are checked against (default: the system clock). */
  now?: () => Date;
}

type KeyResolver = ReturnType<typeof createLocalJWKSet>;

/** A NumericDate claim as an ISO time, for messages. */
function isoTime(seconds: unknown): string {
  if (typeof seconds !== "number") return JSON.stringify(seconds);
  try {
    return new Date(seconds * 1000).toISOString();
  } catch {
    return String(seconds);
  }
}

/** Sentry's SPIFFE ID, the audience every token must carry. */
function sentryAudience(context: JwksValidatorContext): string {
  try {
    return SpiffeId.forWorkload(context.sentryTrustDomain, context.sentryNamespace, "dapr-sentry")
      .toString();
  } catch (error) {
    throw new SpiffeIdError(
      `jwks token validator: cannot form sentry's SPIFFE ID (the audience tokens must carry): ${
        (error as Error).message
      }`,
    );
  }
}

/** Validates callers' JWTs against a JSON Web Key Set (Dapr's `jwks` token validator). */
export class JwksValidator implements TokenValidator {
  /** Selected by `TokenValidator: JWKS` on the wire. */
  readonly wire = WireValidator.JWKS;
  /** The audience tokens must include: `spiffe://<sentry td>/ns/<sentry namespace>/dapr-sentry`. */
  readonly audience: string;
  readonly #source: JwksSource;
  readonly #now: () => Date;
  #resolver?: { version: number; resolve: KeyResolver };

  /**
   * Wraps an opened key source. Most callers want {@link JwksValidator.create}, which builds the
   * source from the Configuration's options. The validator owns `source` and closes it.
   */
  constructor(source: JwksSource, context: JwksValidatorContext) {
    this.audience = sentryAudience(context);
    this.#source = source;
    this.#now = context.now ?? (() => new Date());
  }

  /**
   * Builds a validator from the options record of a `jwks` entry in
   * `spec.mtls.tokenValidators` (`source`, `caCertificate`, `minRefreshInterval`,
   * `requestTimeout`) and loads the initial key set. Throws an error naming the source (and the
   * problem) when the options are invalid or no key set can be loaded.
   */
  static async create(
    options: Readonly<Record<string, unknown>>,
    context: JwksValidatorContext,
  ): Promise<JwksValidator> {
    sentryAudience(context); // fail on a bad sentry identity before fetching anything
    const source = await JwksSource.open(parseJwksSourceOptions(options), context);
    return new JwksValidator(source, context);
  }

  /** The key source (for logs and diagnostics). */
  get source(): JwksSource {
    return this.#source;
  }

  /**
   * Runs the common checks, then verifies the token; returns the requested identity (trust
   * domain defaulting to `public`) or throws ValidationError saying what is wrong.
   */
  async validate(request: SignRequest): Promise<ValidatedIdentity> {
    validateCommon(request);
    if (request.token === "") throw new ValidationError("the request does not contain a token");
    const trustDomain = request.trustDomain || "public";
    let subject: string;
    try {
      subject = SpiffeId.forWorkload(trustDomain, request.namespace, request.id).toString();
    } catch (error) {
      throw new ValidationError(`invalid request: ${(error as Error).message}`, { cause: error });
    }
    try {
      await this.#checkToken(request.token, subject);
    } catch (error) {
      // Dapr's wording first (clients match on it), then what exactly is wrong.
      if (!(error instanceof ValidationError)) throw error;
      throw new ValidationError(`token validation failed: ${error.message}`, { cause: error });
    }
    return { trustDomain, namespace: request.namespace, appId: request.id };
  }

  /** Decodes the header, verifies signature and times, then checks audience and subject. */
  async #checkToken(token: string, subject: string): Promise<void> {
    let header: ProtectedHeaderParameters;
    try {
      header = decodeProtectedHeader(token);
    } catch (error) {
      throw new ValidationError(`token is not a valid JWT: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (typeof header.kid !== "string" || header.kid === "") {
      throw new ValidationError("token has no kid (key ID) in its header");
    }
    const payload = await this.#verify(token, header);
    this.#checkClaims(payload, subject);
  }

  /** Closes the key source (watchers, timers, requests in flight). */
  close(): void {
    this.#source.close();
  }

  /** Verifies signature and times; on an unknown key, refreshes the source once and retries. */
  async #verify(token: string, header: ProtectedHeaderParameters): Promise<JWTPayload> {
    const version = this.#source.version;
    try {
      return await this.#verifyOnce(token);
    } catch (error) {
      if (!(error instanceof errors.JWKSNoMatchingKey)) throw translate(error, header);
      const changed = await this.#source.refresh();
      if (!changed && this.#source.version === version) throw translate(error, header);
    }
    try {
      return await this.#verifyOnce(token);
    } catch (error) {
      throw translate(error, header);
    }
  }

  async #verifyOnce(token: string): Promise<JWTPayload> {
    const resolve = this.#currentResolver();
    try {
      return (await jwtVerify(token, resolve, this.#verifyOptions())).payload;
    } catch (error) {
      if (!(error instanceof errors.JWKSMultipleMatchingKeys)) throw error;
      // Several keys share the kid: the token is good if any of them verifies it.
      let last: unknown = error;
      for await (const key of error) {
        try {
          return (await jwtVerify(token, key, this.#verifyOptions())).payload;
        } catch (attempt) {
          if (
            attempt instanceof errors.JWTExpired ||
            attempt instanceof errors.JWTClaimValidationFailed
          ) {
            throw attempt; // the signature verified; the claims are what is wrong
          }
          last = attempt;
        }
      }
      throw last;
    }
  }

  #verifyOptions(): JWTVerifyOptions {
    return { ...VERIFY_OPTIONS, currentDate: this.#now() };
  }

  #currentResolver(): KeyResolver {
    const version = this.#source.version;
    if (this.#resolver?.version !== version) {
      this.#resolver = { version, resolve: createLocalJWKSet(this.#source.keySet) };
    }
    return this.#resolver.resolve;
  }

  #checkClaims(payload: JWTPayload, subject: string): void {
    // jose checks `exp` only when present; a token that never expires is refused (as go-spiffe's
    // jwtsvid does; Dapr accepts it: docs/compatibility.md#token-validators).
    if (payload.exp === undefined) {
      throw new ValidationError(
        '"exp" not satisfied: token has no expiry time (exp); tokens that never expire are refused',
      );
    }
    const now = this.#now().getTime() / 1000;
    if (typeof payload.iat === "number" && payload.iat > now + CLOCK_TOLERANCE_SECONDS) {
      throw new ValidationError(
        `"iat" not satisfied: token issued in the future (iat ${
          isoTime(payload.iat)
        }, more than ${TOLERANCE_TEXT} ` +
          `ahead)`,
      );
    }
    const aud = payload.aud;
    if (aud === undefined) {
      throw new ValidationError(
        `"aud" not satisfied: token has no audience (aud); it must include ${
          JSON.stringify(this.audience)
        }`,
      );
    }
    const audiences = typeof aud === "string" ? [aud] : aud;
    if (!Array.isArray(audiences) || audiences.some((entry) => typeof entry !== "string")) {
      throw new ValidationError(
        '"aud" not satisfied: token audience (aud) must be a string or a list of strings',
      );
    }
    if (!audiences.includes(this.audience)) {
      throw new ValidationError(
        `"aud" not satisfied: token audience ${JSON.stringify(aud)} does not include ${
          JSON.stringify(this.audience)
        }`,
      );
    }
    if (payload.sub === undefined) {
      throw new ValidationError(
        `"sub" not satisfied: token has no subject (sub); it must be ${JSON.stringify(subject)}`,
      );
    }
    if (payload.sub !== subject) {
      throw new ValidationError(
        `"sub" not satisfied: token subject ${
          JSON.stringify(payload.sub)
        } does not match the requested identity ${JSON.stringify(subject)}`,
      );
    }
  }
}

/**
 * Dapr's JWT library words a failed signature or an unknown key this way; clients match on it,
 * so our messages lead with it (and with `"<claim>" not satisfied` for claim failures).
 */
const UNVERIFIED = "could not verify message using any of the signatures or keys";

/** Turns a jose failure into a ValidationError whose message says what is wrong. */
function translate(error: unknown, header: ProtectedHeaderParameters): ValidationError {
  if (error instanceof ValidationError) return error;
  const message = (error as Error)?.message ?? String(error);
  const kid = JSON.stringify(header.kid);
  const alg = JSON.stringify(header.alg);
  if (error instanceof errors.JWKSNoMatchingKey) {
    return new ValidationError(
      `${UNVERIFIED}: token kid ${kid} (alg ${alg}) matches no key in the key set`,
    );
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return new ValidationError(`${UNVERIFIED}: token signature invalid`);
  }
  if (error instanceof errors.JWTExpired) {
    return new ValidationError(
      `"exp" not satisfied: token expired (exp ${
        isoTime(error.payload.exp)
      }, more than ${TOLERANCE_TEXT} ago)`,
    );
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "nbf") {
      return new ValidationError(
        `"nbf" not satisfied: token not valid yet (nbf ${
          isoTime(error.payload.nbf)
        }, more than ${TOLERANCE_TEXT} ` +
          `ahead)`,
      );
    }
    return new ValidationError(`token claim "${error.claim}" is invalid: ${message}`);
  }
  if (error instanceof errors.JOSENotSupported || error instanceof errors.JOSEAlgNotAllowed) {
    return new ValidationError(`token algorithm ${alg} cannot be used: ${message}`);
  }
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) {
    return new ValidationError(`token is not a valid JWT: ${message}`);
  }
  if (error instanceof errors.JWKSInvalid || error instanceof errors.JWKInvalid) {
    return new ValidationError(`the key set's key for kid ${kid} cannot be used: ${message}`);
  }
  return new ValidationError(`token could not be verified with kid ${kid}: ${message}`);
}
