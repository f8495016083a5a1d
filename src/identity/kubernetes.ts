/**
 * The KUBERNETES validator (docs/compatibility.md#token-validators): the caller proves who it is with its pod's
 * projected service-account token, and sentry asks the API server.
 *
 * 1. A TokenReview (`authentication.k8s.io/v1`) with the audiences `dapr.io/sentry` (Dapr's
 *    legacy audience) and sentry's SPIFFE ID `spiffe://<sentry td>/ns/<sentry ns>/dapr-sentry`
 *    must authenticate the token, for one of those audiences, as
 *    `system:serviceaccount:<ns>:<sa>`.
 * 2. The pod comes from the token's `kubernetes.io` -> `pod` -> `name` claim (the token is
 *    decoded, not verified: the TokenReview did that). Tokens without it (legacy
 *    service-account secrets) are refused. When the review reports the pod name as well
 *    (`authentication.kubernetes.io/pod-name` extra), the two must agree.
 * 3. The pod (in the service account's namespace) must be in the request's namespace and run as
 *    the token's service account (`default` when the pod names none).
 * 4. The request's id must be the pod's expected id: its `dapr.io/app-id` annotation, else its
 *    name; for a pod annotated `dapr.io/control-plane: <svc>` (operator, placement, injector,
 *    sentry, scheduler) `dapr-<svc>` — only in sentry's namespace, and only without an app id
 *    annotation, as in Dapr (elsewhere the annotation is refused, not ignored).
 * 5. Trust domain: sentry's own for the control plane; otherwise
 *    `spec.accessControl.trustDomain` of the Configuration the pod's `dapr.io/config`
 *    annotation names (in the request namespace), `public` when there is no annotation or the
 *    Configuration sets none. As in Dapr, a named Configuration that does not exist is refused
 *    rather than silently certified as `public`. A `trust_domain` in the request, which Dapr
 *    ignores, must equal the computed one.
 *
 * Refusals are {@link ValidationError}s naming what did not match. API failures (5xx, 429,
 * unreachable server, RBAC refusals) are ValidationErrors too, `cannot verify the token now:
 * <reason>`, so a caller retries instead of seeing INTERNAL.
 *
 * Pods and Configurations are cached for `cacheTtlMs` (default 10 s) and concurrent lookups of
 * the same object share one request, so a burst of sidecars of one pod costs one GET.
 * Successful TokenReviews are cached by token hash for min(5 s, `cacheTtlMs`), never past the
 * token's `exp`. Failures are never cached.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { decodeJwt } from "jose";
import { SpiffeId, SpiffeIdError, validateTrustDomain } from "../ca/spiffe.ts";
import {
  isNotFound,
  KubeApiError,
  type KubeClient,
  type KubeList,
  KubeRequestError,
} from "../kubernetes/client.ts";
import type { Logger } from "../observability/logger.ts";
import {
  type SignRequest,
  type TokenValidator,
  validateCommon,
  type ValidatedIdentity,
  ValidationError,
  WireValidator,
} from "./validator.ts";
import { PromiseCache } from "../util/promise-cache.ts";
import { isRecord } from "../util/records.ts";

/** Dapr's audience from before 1.13, still requested alongside sentry's SPIFFE ID. */
export const LEGACY_SENTRY_AUDIENCE = "dapr.io/sentry";
/** Pod annotation naming the app id. */
export const APP_ID_ANNOTATION = "dapr.io/app-id";
/** Pod annotation naming the pod's Dapr Configuration. */
export const CONFIG_ANNOTATION = "dapr.io/config";
/** Pod annotation marking a Dapr control-plane service. */
export const CONTROL_PLANE_ANNOTATION = "dapr.io/control-plane";
/** Control-plane services a `dapr.io/control-plane` annotation may name. */
export const CONTROL_PLANE_SERVICES: readonly string[] = [
  "operator",
  "placement",
  "injector",
  "sentry",
  "scheduler",
];
/** Default time pods and Configurations are cached. */
export const DEFAULT_CACHE_TTL_MS = 10_000;
/** Longest time a successful TokenReview is reused. */
export const MAX_REVIEW_CACHE_MS = 5_000;
/** Bound on each cache's size. */
const MAX_CACHE_ENTRIES = 4096;
/** The TokenReview extra carrying the pod name. */
const POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name";
/** A Kubernetes object name (DNS-1123 subdomain). */
const OBJECT_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** Constructor options of {@link KubernetesValidator}. */
export interface KubernetesValidatorOptions {
  /** Talks to the API server (TokenReviews, pods, Configurations). Not closed by the validator. */
  client: KubeClient;
  /** Sentry's namespace (`NAMESPACE`): part of the audience, and the control plane's home. */
  sentryNamespace: string;
  /** Sentry's `--trust-domain`: part of the audience, and the control plane's trust domain. */
  sentryTrustDomain: string;
  /** How long pods and Configurations are reused (default 10 s; 0 disables the cache). */
  cacheTtlMs?: number;
  /** API failures are logged as warnings. */
  logger?: Logger;
  /** The clock token expiry is read against (default: the system clock). */
  now?: () => Date;
}

/** What a successful TokenReview tells. */
interface Review {
  namespace: string;
  serviceAccount: string;
  /** The `authentication.kubernetes.io/pod-name` extra, when reported. */
  podName?: string;
}

/** The parts of a pod the validator reads. */
interface Pod {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    annotations?: Record<string, string>;
  };
  spec?: { serviceAccountName?: string; serviceAccount?: string };
}

/** A cached pod, with the token pod uids known not to be its uid even after a refetch. */
interface CachedPod {
  pod: Pod;
  otherUids: Set<string>;
}

/** The parts of a Dapr Configuration the validator reads. */
interface Configuration {
  spec?: { accessControl?: { trustDomain?: unknown } };
}

/** The parts of a TokenReview answer the validator reads. */
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

function quote(value: unknown): string {
  return JSON.stringify(value);
}

/**
 * The claims of a token the API server's TokenReview accepts, read without verification (the
 * review has authenticated it): a compact JWT's payload, or, as Dapr's JWT library also
 * reads them, claims given as a bare JSON object.
 */
function decodeTokenClaims(token: string): Record<string, unknown> {
  let claims: unknown;
  if (token.trimStart().startsWith("{")) {
    try {
      claims = JSON.parse(token);
    } catch (error) {
      throw new ValidationError(`the token is not valid JSON: ${(error as Error).message}`);
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

/**
 * Validates callers by their Kubernetes service-account tokens and the pods they run in
 * (Dapr's `kubernetes` token validator, the default in Kubernetes mode).
 */
export class KubernetesValidator implements TokenValidator {
  /** Selected by `TokenValidator: KUBERNETES` on the wire. */
  readonly wire = WireValidator.KUBERNETES;
  /** The audiences asked of the TokenReview: `dapr.io/sentry` and sentry's SPIFFE ID. */
  readonly audiences: readonly string[];
  readonly #client: KubeClient;
  readonly #sentryNamespace: string;
  readonly #sentryTrustDomain: string;
  readonly #logger?: Logger;
  readonly #warned = new Set<string>();
  readonly #pods: PromiseCache<CachedPod>;
  readonly #configurations: PromiseCache<Configuration>;
  readonly #reviews: PromiseCache<Review & { expiresAtMs?: number }>;

  /** Throws {@link SpiffeIdError} when sentry's trust domain or namespace cannot form its ID. */
  constructor(options: KubernetesValidatorOptions) {
    let sentryId: string;
    try {
      sentryId = SpiffeId.forWorkload(
        options.sentryTrustDomain,
        options.sentryNamespace,
        "dapr-sentry",
      ).toString();
    } catch (error) {
      throw new SpiffeIdError(
        `kubernetes token validator: cannot form sentry's SPIFFE ID (the audience tokens must ` +
          `carry): ${(error as Error).message}`,
      );
    }
    this.audiences = [LEGACY_SENTRY_AUDIENCE, sentryId];
    this.#client = options.client;
    this.#sentryNamespace = options.sentryNamespace;
    this.#sentryTrustDomain = options.sentryTrustDomain;
    this.#logger = options.logger;
    const ttl = Math.max(0, options.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS);
    this.#pods = new PromiseCache(() => ttl, MAX_CACHE_ENTRIES);
    this.#configurations = new PromiseCache(() => ttl, MAX_CACHE_ENTRIES);
    const reviewTtl = Math.min(MAX_REVIEW_CACHE_MS, ttl);
    const now = options.now ?? (() => new Date());
    this.#reviews = new PromiseCache(
      (review: Review & { expiresAtMs?: number }) =>
        review.expiresAtMs === undefined
          ? reviewTtl
          : Math.min(reviewTtl, review.expiresAtMs - now().getTime()),
      MAX_CACHE_ENTRIES,
    );
  }

  /**
   * Runs the common checks, reviews the token, checks the pod, and returns the identity to
   * certify (the request's namespace and id, and the computed trust domain), or throws
   * {@link ValidationError} saying what did not match or why it cannot be checked now.
   */
  async validate(request: SignRequest): Promise<ValidatedIdentity> {
    validateCommon(request);
    if (request.token === "") throw new ValidationError("the request does not contain a token");

    const claims = decodeTokenClaims(request.token);
    const review = await this.#review(request.token, claims);
    const podName = this.#podName(claims, review);

    if (review.namespace !== request.namespace) {
      throw new ValidationError(
        `pod ${quote(podName)} is in namespace ${quote(review.namespace)}, not ${
          quote(request.namespace)
        }`,
      );
    }

    const tokenPodUid = isRecord(claims["kubernetes.io"])
      ? (claims["kubernetes.io"] as KubernetesClaims).pod?.uid
      : undefined;
    const pod = await this.#pod(review.namespace, podName, tokenPodUid);
    const podNamespace = pod.metadata?.namespace ?? review.namespace;
    if (podNamespace !== request.namespace) {
      throw new ValidationError(
        `pod ${quote(podName)} is in namespace ${quote(podNamespace)}, not ${
          quote(request.namespace)
        }`,
      );
    }
    const podAccount = pod.spec?.serviceAccountName || pod.spec?.serviceAccount || "default";
    if (podAccount !== review.serviceAccount) {
      throw new ValidationError(
        `pod "${podNamespace}/${podName}" runs as service account ${quote(podAccount)}, but ` +
          `the token is for service account ${quote(review.serviceAccount)}`,
      );
    }

    const annotations = pod.metadata?.annotations ?? {};
    const controlPlane = this.#expectedControlPlaneId(podNamespace, podName, annotations);
    if (controlPlane !== undefined) {
      if (request.id !== controlPlane) {
        throw new ValidationError(
          `app id ${quote(request.id)} does not match ${quote(controlPlane)}, the id of ` +
            `control-plane pod "${podNamespace}/${podName}"`,
        );
      }
    } else if (APP_ID_ANNOTATION in annotations) {
      if (request.id !== annotations[APP_ID_ANNOTATION]) {
        throw new ValidationError(
          `app id ${quote(request.id)} does not match the pod's ${APP_ID_ANNOTATION} ${
            quote(annotations[APP_ID_ANNOTATION])
          }`,
        );
      }
    } else if (request.id !== podName) {
      throw new ValidationError(
        `app id ${quote(request.id)} does not match the pod name ${quote(podName)} (the pod ` +
          `has no ${APP_ID_ANNOTATION} annotation)`,
      );
    }

    const { trustDomain, source } = controlPlane !== undefined
      ? { trustDomain: this.#sentryTrustDomain, source: "sentry's trust domain, control plane" }
      : await this.#appTrustDomain(request.namespace, annotations);
    if (request.trustDomain !== "" && request.trustDomain !== trustDomain) {
      throw new ValidationError(
        `requested trust domain ${quote(request.trustDomain)} does not match ${
          quote(trustDomain)
        } (${source})`,
      );
    }
    return { trustDomain, namespace: request.namespace, appId: request.id };
  }

  /** Forgets cached pods, Configurations and TokenReviews (the validator holds no timers). */
  close(): void {
    this.#pods.clear();
    this.#configurations.clear();
    this.#reviews.clear();
  }

  /** Runs (or reuses) the TokenReview; returns the service account it authenticates. */
  #review(token: string, claims: Record<string, unknown>): Promise<Review> {
    const key = createHash("sha256").update(token).digest("hex");
    return this.#reviews.get(key, async () => {
      const review = await this.#executeReview(token);
      const exp = claims.exp;
      return typeof exp === "number" && Number.isFinite(exp)
        ? { ...review, expiresAtMs: exp * 1000 }
        : review;
    });
  }

  async #executeReview(token: string): Promise<Review> {
    let answer: TokenReviewAnswer;
    try {
      answer = await this.#client.create<TokenReviewAnswer>(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenReview",
          spec: { token, audiences: this.audiences },
        },
      );
    } catch (error) {
      throw this.#unavailable("TokenReview", error);
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
      this.#warnOnce(
        "no-audiences",
        "the Kubernetes API server's TokenReview reported no audiences: its authenticator " +
          "does not check them, so tokens are not known to be meant for sentry",
      );
    } else if (!granted.some((audience) => this.audiences.includes(audience))) {
      throw new ValidationError(
        `the token is not valid for sentry: the TokenReview granted audiences ${
          quote(granted)
        }, none of ${quote(this.audiences)}`,
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

  /** The pod name of the token's `kubernetes.io` claims, checked against the review. */
  #podName(claims: Record<string, unknown>, review: Review): string {
    const kubernetes = claims["kubernetes.io"];
    const k8s: KubernetesClaims = isRecord(kubernetes) ? kubernetes : {};
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

  /**
   * The pod, cached. When the token names a pod uid other than the cached pod's, the pod may
   * have been recreated under the same name since it was cached: it is fetched once more (a
   * uid that still does not match is then remembered, and the pod used as it is: as in Dapr,
   * the pod is identified by its name; the API server's TokenReview checks the binding).
   */
  async #pod(namespace: string, name: string, tokenUid: unknown): Promise<Pod> {
    const key = `${namespace}/${name}`;
    let fetched = false;
    const load = async (): Promise<CachedPod> => {
      fetched = true;
      return { pod: await this.#fetchPod(namespace, name), otherUids: new Set() };
    };
    const cached = await this.#pods.get(key, load);
    if (
      typeof tokenUid !== "string" || tokenUid === "" || cached.pod.metadata?.uid === tokenUid ||
      cached.otherUids.has(tokenUid)
    ) {
      return cached.pod;
    }
    if (fetched) {
      cached.otherUids.add(tokenUid);
      return cached.pod;
    }
    this.#pods.invalidate(key, cached);
    const fresh = await this.#pods.get(key, load);
    if (fresh.pod.metadata?.uid !== tokenUid) fresh.otherUids.add(tokenUid);
    return fresh.pod;
  }

  /**
   * Reads the pod as Dapr's sentry does: from the cluster-wide pod list (the `list` verb its
   * ClusterRole grants), narrowed by a field selector to the one pod.
   */
  async #fetchPod(namespace: string, name: string): Promise<Pod> {
    const where = `pod "${namespace}/${name}"`;
    let list: KubeList<Pod>;
    try {
      list = await this.#client.list<Pod>("/api/v1/pods", {
        fieldSelector: `metadata.namespace=${namespace},metadata.name=${name}`,
      });
    } catch (error) {
      throw this.#unavailable(where, error);
    }
    const pod = (list.items ?? []).find((item: Pod | null) =>
      item?.metadata?.namespace === namespace && item.metadata.name === name
    );
    if (pod === undefined) {
      throw new ValidationError(`pod ${quote(name)} not found in namespace ${quote(namespace)}`);
    }
    return pod;
  }

  /**
   * `dapr-<svc>` for a control-plane pod (annotated `dapr.io/control-plane`), undefined for an
   * app; refuses the annotation outside sentry's namespace, on unknown services, and together
   * with an app id annotation, as Dapr does.
   */
  #expectedControlPlaneId(
    namespace: string,
    name: string,
    annotations: Record<string, string>,
  ): string | undefined {
    if (!(CONTROL_PLANE_ANNOTATION in annotations)) return undefined;
    const service = annotations[CONTROL_PLANE_ANNOTATION];
    const pod = `pod "${namespace}/${name}"`;
    if (namespace !== this.#sentryNamespace) {
      throw new ValidationError(
        `${pod} is annotated ${CONTROL_PLANE_ANNOTATION}: ${quote(service)}, but control-plane ` +
          `services are only allowed in sentry's namespace ${quote(this.#sentryNamespace)}`,
      );
    }
    if (!CONTROL_PLANE_SERVICES.includes(service)) {
      throw new ValidationError(
        `${pod} is annotated ${CONTROL_PLANE_ANNOTATION}: ${quote(service)}, which is not a ` +
          `control-plane service (${CONTROL_PLANE_SERVICES.join(", ")})`,
      );
    }
    if (APP_ID_ANNOTATION in annotations) {
      throw new ValidationError(
        `control-plane ${pod} must not have the ${APP_ID_ANNOTATION} annotation`,
      );
    }
    return `dapr-${service}`;
  }

  /** The trust domain of an app pod, from its Configuration (`public` by default). */
  async #appTrustDomain(
    namespace: string,
    annotations: Record<string, string>,
  ): Promise<{ trustDomain: string; source: string }> {
    const name = annotations[CONFIG_ANNOTATION];
    if (name === undefined || name === "") {
      return { trustDomain: "public", source: `the pod has no ${CONFIG_ANNOTATION} annotation` };
    }
    const where = `Configuration ${quote(name)} in namespace ${quote(namespace)}`;
    if (!OBJECT_NAME.test(name)) {
      throw new ValidationError(
        `the pod's ${CONFIG_ANNOTATION} annotation ${quote(name)} is not a Configuration name`,
      );
    }
    const configuration = await this.#configurations.get(
      `${namespace}/${name}`,
      () => this.#fetchConfiguration(namespace, name, where),
    );
    const spec = isRecord(configuration.spec) ? configuration.spec : {};
    const accessControl = isRecord(spec.accessControl) ? spec.accessControl : {};
    const trustDomain = accessControl.trustDomain;
    if (trustDomain === undefined || trustDomain === null || trustDomain === "") {
      return { trustDomain: "public", source: `${where} sets no spec.accessControl.trustDomain` };
    }
    if (typeof trustDomain !== "string") {
      throw new ValidationError(`${where}: spec.accessControl.trustDomain is not a string`);
    }
    try {
      validateTrustDomain(trustDomain);
    } catch (error) {
      throw new ValidationError(
        `${where}: spec.accessControl.trustDomain: ${(error as Error).message}`,
      );
    }
    return { trustDomain, source: `spec.accessControl.trustDomain of ${where}` };
  }

  async #fetchConfiguration(
    namespace: string,
    name: string,
    where: string,
  ): Promise<Configuration> {
    const path = `/apis/dapr.io/v1alpha1/namespaces/${encodeURIComponent(namespace)}/` +
      `configurations/${encodeURIComponent(name)}`;
    try {
      const configuration = await this.#client.get<Configuration>(path);
      if (!isRecord(configuration)) throw new ValidationError(`${where}: not an object`);
      return configuration;
    } catch (error) {
      if (error instanceof ValidationError) throw error;
      if (isNotFound(error)) {
        throw new ValidationError(
          `${where}, named by the pod's ${CONFIG_ANNOTATION} annotation, does not exist`,
        );
      }
      throw this.#unavailable(where, error);
    }
  }

  /** Logs `message` at warn level the first time `key` is seen by this validator. */
  #warnOnce(key: string, message: string): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    this.#logger?.warn(`kubernetes token validator: ${message}`);
  }

  /** An API failure as a refusal to retry later (never INTERNAL). */
  #unavailable(what: string, error: unknown): ValidationError {
    const reason = error instanceof KubeApiError || error instanceof KubeRequestError
      ? error.message
      : `${what}: ${(error as Error)?.message ?? String(error)}`;
    this.#logger?.warn(`kubernetes token validator: cannot get ${what}: ${reason}`);
    return new ValidationError(`cannot verify the token now: ${reason}`);
  }
}
