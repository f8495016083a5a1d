/**
 * What a caller's Kubernetes service-account token proves, for the KUBERNETES validator
 * (kubernetes.ts): the API server's TokenReview ({@link TokenReviewer}: authenticated, for one
 * of sentry's audiences, as `system:serviceaccount:<ns>:<sa>`; successful reviews reused
 * briefly), and the token's own claims, read without verification since the review has
 * authenticated the token ({@link decodeTokenClaims}), which name the pod it is bound to
 * ({@link tokenPodName}).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { decodeJwt } from "jose";
import type { KubeClient } from "../kubernetes/client.ts";
import type { Logger } from "../observability/logger.ts";
import { PromiseCache } from "../util/promise-cache.ts";
import { isRecord } from "../util/records.ts";
import { apiUnavailable, MAX_CACHE_ENTRIES, OBJECT_NAME, quote } from "./kubernetes-pods.ts";
import { ValidationError } from "./validator.ts";

/** Dapr's audience from before 1.13, still requested alongside sentry's SPIFFE ID. */
export const LEGACY_SENTRY_AUDIENCE = "dapr.io/sentry";
/** Longest time a successful TokenReview is reused. */
export const MAX_REVIEW_CACHE_MS = 5_000;
/** The TokenReview extra carrying the pod name. */
const POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name";

/** What a successful TokenReview tells. */
export interface Review {
  namespace: string;
  serviceAccount: string;
  /** The `authentication.kubernetes.io/pod-name` extra, when reported. */
  podName?: string;
}

/** The parts of a TokenReview answer the reviewer reads. */
interface TokenReviewAnswer {
  status?: {
    authenticated?: boolean;
    error?: string;
    audiences?: string[];
    user?: { username?: string; extra?: Record<string, string[]> };
  };
}

/** The `kubernetes.io` claims of a projected service-account token. */
interface KubernetesClaims {
  namespace?: unknown;
  pod?: { name?: unknown; uid?: unknown };
}

/**
 * The claims of a token the API server's TokenReview accepts, read without verification (the
 * review has authenticated it): a compact JWT's payload (decoded by `jose`), or, as Dapr's JWT
 * library also reads them, claims given as a bare JSON object. Throws
 * {@link ValidationError} naming what is wrong with the token.
 */
export function decodeTokenClaims(token: string): Record<string, unknown> {
  let claims: unknown;
  if (token.trimStart().startsWith("{")) {
    try {
      claims = JSON.parse(token);
    } catch (error) {
      throw new ValidationError(`the token is not valid JSON: ${(error as Error).message}`, {
        cause: error,
      });
    }
  } else {
    if (token.split(".").length !== 3) {
      throw new ValidationError("the token is not a JWT (expected three dot-separated parts)");
    }
    try {
      claims = decodeJwt(token);
    } catch (error) {
      throw new ValidationError(
        `the token's payload cannot be decoded: ${(error as Error).message}`,
      );
    }
  }
  if (!isRecord(claims)) throw new ValidationError("the token's payload is not a JSON object");
  return claims;
}

/** The `kubernetes.io` claims, or an empty set. */
function kubernetesClaims(claims: Record<string, unknown>): KubernetesClaims {
  const kubernetes = claims["kubernetes.io"];
  return isRecord(kubernetes) ? kubernetes : {};
}

/** The uid of the pod the token is bound to (`kubernetes.io` -> `pod` -> `uid`), if any. */
export function tokenPodUid(claims: Record<string, unknown>): unknown {
  const pod = kubernetesClaims(claims).pod;
  return isRecord(pod) ? pod.uid : undefined;
}

/**
 * The pod name of the token's `kubernetes.io` claims, checked against the review (namespace,
 * and pod name when the review reports one). Throws {@link ValidationError} for a token that
 * is not bound to a pod (a legacy service-account token) or contradicts the review.
 */
export function tokenPodName(claims: Record<string, unknown>, review: Review): string {
  const k8s = kubernetesClaims(claims);
  const name = isRecord(k8s.pod) ? k8s.pod.name : undefined;
  if (typeof name !== "string" || name === "") {
    throw new ValidationError(
      "the token has no pod name claim (kubernetes.io -> pod -> name): sentry needs a " +
        "projected service-account token bound to a pod, not a legacy service-account token",
    );
  }
  if (k8s.namespace !== undefined && k8s.namespace !== review.namespace) {
    throw new ValidationError(
      `the token's namespace claim ${quote(k8s.namespace)} does not match its service ` +
        `account's namespace ${quote(review.namespace)}`,
    );
  }
  if (review.podName !== undefined && review.podName !== name) {
    throw new ValidationError(
      `the token's pod name claim ${quote(name)} does not match the pod name ` +
        `${quote(review.podName)} the TokenReview reports`,
    );
  }
  if (!OBJECT_NAME.test(name)) {
    throw new ValidationError(`the token's pod name claim ${quote(name)} is not a pod name`);
  }
  return name;
}

/** Constructor options of {@link TokenReviewer}. */
export interface TokenReviewerOptions {
  /** Creates the TokenReviews. */
  client: Pick<KubeClient, "create">;
  /** The audiences asked of the review; a token must be valid for one of them. */
  audiences: readonly string[];
  /** Successful reviews are reused for min(this, {@link MAX_REVIEW_CACHE_MS}) at most. */
  cacheTtlMs: number;
  /** The clock token expiry is read against. */
  now: () => Date;
  /** API failures and unchecked audiences are logged as warnings. */
  logger?: Logger;
}

/** Reviews tokens with the API server; successful reviews are reused briefly. */
export class TokenReviewer {
  readonly #client: Pick<KubeClient, "create">;
  readonly #audiences: readonly string[];
  readonly #logger?: Logger;
  readonly #reviews: PromiseCache<Review & { expiresAtMs?: number }>;
  #warnedNoAudiences = false;

  /** Nothing is sent until the first review. */
  constructor(options: TokenReviewerOptions) {
    this.#client = options.client;
    this.#audiences = options.audiences;
    this.#logger = options.logger;
    const reviewTtl = Math.min(MAX_REVIEW_CACHE_MS, Math.max(0, options.cacheTtlMs));
    this.#reviews = new PromiseCache(
      (review: Review & { expiresAtMs?: number }) =>
        review.expiresAtMs === undefined
          ? reviewTtl
          : Math.min(reviewTtl, review.expiresAtMs - options.now().getTime()),
      MAX_CACHE_ENTRIES,
    );
  }

  /** Forgets the reviews it holds. */
  clear(): void {
    this.#reviews.clear();
  }

  /**
   * Runs (or reuses, keyed by the token's hash and never past its `exp` claim) the
   * TokenReview; returns the service account it authenticates. Throws
   * {@link ValidationError}: a refusal, or `cannot verify the token now` when the API server
   * cannot be asked.
   */
  review(token: string, claims: Record<string, unknown>): Promise<Review> {
    const key = createHash("sha256").update(token).digest("hex");
    return this.#reviews.get(key, async () => {
      const review = await this.#execute(token);
      const exp = claims.exp;
      return typeof exp === "number" && Number.isFinite(exp)
        ? { ...review, expiresAtMs: exp * 1000 }
        : review;
    });
  }

  async #execute(token: string): Promise<Review> {
    let answer: TokenReviewAnswer;
    try {
      answer = await this.#client.create<TokenReviewAnswer>(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          spec: { token, audiences: this.#audiences },
        },
      );
    } catch (error) {
      throw apiUnavailable("TokenReview", error, this.#logger);
    }
    const status = isRecord(answer) && isRecord(answer.status) ? answer.status : {};
    if (typeof status.error === "string" && status.error !== "") {
      throw new ValidationError(`the token was not authenticated: ${status.error}`);
    }
    if (status.authenticated !== true) {
      throw new ValidationError("the token was not authenticated by the Kubernetes API server");
    }
    // An audience-aware authenticator (the API server's own service-account tokens) reports
    // which of ours the token carries; one that is not reports none. Dapr accepts both, and so
    // do we (refusing would break a drop-in install behind such an authenticator), with a
    // warning; audiences that are reported must include one of ours.
    const granted = Array.isArray(status.audiences) ? status.audiences : [];
    if (granted.length === 0) {
      if (!this.#warnedNoAudiences) {
        this.#warnedNoAudiences = true;
        this.#logger?.warn(
          "kubernetes token validator: the Kubernetes API server's TokenReview reported no " +
            "audiences: its authenticator does not check them, so tokens are not known to be " +
            "meant for sentry",
        );
      }
    } else if (!granted.some((audience) => this.#audiences.includes(audience))) {
      throw new ValidationError(
        `the token is not valid for sentry: the TokenReview granted audiences ${
          quote(granted)
        }, none of ${quote(this.#audiences)}`,
      );
    }
    const username = isRecord(status.user) && typeof status.user.username === "string"
      ? status.user.username
      : "";
    const parts = username.split(":");
    if (
      parts.length !== 4 || parts[0] !== "system" || parts[1] !== "serviceaccount" ||
      parts[2] === "" || parts[3] === ""
    ) {
      throw new ValidationError(
        `the token is not a service-account token: it authenticates ${quote(username)}, not ` +
          `"system:serviceaccount:<namespace>:<name>"`,
      );
    }
    const extra = isRecord(status.user) && isRecord(status.user.extra)
      ? status.user.extra[POD_NAME_EXTRA]
      : undefined;
    const podName = Array.isArray(extra) && typeof extra[0] === "string" ? extra[0] : undefined;
    return { namespace: parts[2], serviceAccount: parts[3], ...(podName ? { podName } : {}) };
  }
}
