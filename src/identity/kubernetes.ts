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
 * the same object share one request, so a burst of sidecars of one pod costs one GET
 * (kubernetes-pods.ts). Successful TokenReviews are cached by token hash for min(5 s,
 * `cacheTtlMs`), never past the token's `exp` (kubernetes-token.ts). Failures are never cached.
 * This module holds the checks in between.
 *
 * @module
 */
import { SpiffeId, SpiffeIdError, validateTrustDomain } from "../ca/spiffe.ts";
import type { KubeClient } from "../kubernetes/client.ts";
import type { Logger } from "../observability/logger.ts";
import {
  type SignRequest,
  type TokenValidator,
  validateCommon,
  type ValidatedIdentity,
  ValidationError,
  WireValidator,
} from "./validator.ts";
import {
  APP_ID_ANNOTATION,
  CONFIG_ANNOTATION,
  CONTROL_PLANE_ANNOTATION,
  CONTROL_PLANE_SERVICES,
  DEFAULT_CACHE_TTL_MS,
  OBJECT_NAME,
  PodLookup,
  quote,
} from "./kubernetes-pods.ts";
import {
  decodeTokenClaims,
  LEGACY_SENTRY_AUDIENCE,
  tokenPodName,
  tokenPodUid,
  TokenReviewer,
} from "./kubernetes-token.ts";
import { isRecord } from "../util/records.ts";

export {
  APP_ID_ANNOTATION,
  CONFIG_ANNOTATION,
  CONTROL_PLANE_ANNOTATION,
  CONTROL_PLANE_SERVICES,
  DEFAULT_CACHE_TTL_MS,
} from "./kubernetes-pods.ts";
export { LEGACY_SENTRY_AUDIENCE, MAX_REVIEW_CACHE_MS } from "./kubernetes-token.ts";

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

/**
 * Validates callers by their Kubernetes service-account tokens and the pods they run in
 * (Dapr's `kubernetes` token validator, the default in Kubernetes mode).
 */
export class KubernetesValidator implements TokenValidator {
  /** Selected by `TokenValidator: KUBERNETES` on the wire. */
  readonly wire = WireValidator.KUBERNETES;
  /** The audiences asked of the TokenReview: `dapr.io/sentry` and sentry's SPIFFE ID. */
  readonly audiences: readonly string[];
  readonly #sentryNamespace: string;
  readonly #sentryTrustDomain: string;
  readonly #reviewer: TokenReviewer;
  readonly #lookup: PodLookup;

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
    this.#sentryNamespace = options.sentryNamespace;
    this.#sentryTrustDomain = options.sentryTrustDomain;
    const { client, logger } = options;
    const cacheTtlMs = options.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS;
    this.#reviewer = new TokenReviewer({
      client,
      audiences: this.audiences,
      cacheTtlMs,
      now: options.now ?? (() => new Date()),
      logger,
    });
    this.#lookup = new PodLookup({ client, cacheTtlMs, logger });
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
    const review = await this.#reviewer.review(request.token, claims);
    const podName = tokenPodName(claims, review);

    if (review.namespace !== request.namespace) {
      throw new ValidationError(
        `pod ${quote(podName)} is in namespace ${quote(review.namespace)}, not ${
          quote(request.namespace)
        }`,
      );
    }

    const pod = await this.#lookup.pod(review.namespace, podName, tokenPodUid(claims));
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
    this.#lookup.clear();
    this.#reviewer.clear();
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
    const configuration = await this.#lookup.configuration(namespace, name, where);
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
}
