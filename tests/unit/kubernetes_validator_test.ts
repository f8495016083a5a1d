/**
 * The KUBERNETES token validator (docs/compatibility.md#token-validators) against the fake API server with a real
 * KubeClient: TokenReview with sentry's audiences, the service account and pod claim of the
 * token, the pod's namespace, service account and app id (annotation, pod name, control plane
 * only in sentry's namespace), the trust domain from the pod's Configuration, API failures as
 * refusals to retry, and the caches (one pod GET for a burst, TokenReviews reused briefly,
 * failures never cached, a recreated pod fetched again).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  FakeKubeApiServer,
  type KubeObject,
  makeServiceAccountJwt,
  type ServiceAccountJwtOptions,
} from "../fakes/kube-apiserver.ts";
import { KubeClient } from "../../src/kubernetes/client.ts";
import { loadKubeConfig } from "../../src/kubernetes/config.ts";
import {
  KubernetesValidator,
  type KubernetesValidatorOptions,
} from "../../src/identity/kubernetes.ts";
import { type SignRequest, ValidationError, WireValidator } from "../../src/identity/validator.ts";
import { SpiffeIdError } from "../../src/ca/spiffe.ts";

const SENTRY_TD = "cluster.local";
const SENTRY_NS = "dapr-system";
const SENTRY_AUDIENCE = `spiffe://${SENTRY_TD}/ns/${SENTRY_NS}/dapr-sentry`;
const REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews";

interface Context {
  fake: FakeKubeApiServer;
  client: KubeClient;
  validator: KubernetesValidator;
  /** Adds a pod and returns a token bound to it (audience: sentry's SPIFFE ID). */
  pod(
    namespace: string,
    name: string,
    options?: {
      serviceAccount?: string | null;
      annotations?: Record<string, string>;
      token?: Partial<ServiceAccountJwtOptions>;
    },
  ): string;
  /** Requests the fake logged with `method` and a path matching `path`. */
  count(method: string, path: string | RegExp): number;
}

/** Runs `fn` against a fresh fake API server, a client and a validator, closing them after. */
async function withValidator(
  fn: (ctx: Context) => Promise<void>,
  options: Partial<KubernetesValidatorOptions> = {},
): Promise<void> {
  const fake = await FakeKubeApiServer.start();
  const dir = await Deno.makeTempDir({ prefix: "kubernetes-validator-test-" });
  let client: KubeClient | undefined;
  let validator: KubernetesValidator | undefined;
  try {
    const kubeconfig = await fake.writeKubeconfig(join(dir, "kubeconfig"));
    const connection = await loadKubeConfig({ kubeconfigPath: kubeconfig, env: {} });
    client = new KubeClient(connection, {
      maxAttempts: 2,
      initialBackoffMs: 10,
      maxBackoffMs: 20,
    });
    validator = new KubernetesValidator({
      client,
      sentryNamespace: SENTRY_NS,
      sentryTrustDomain: SENTRY_TD,
      ...options,
    });
    const pod: Context["pod"] = (namespace, name, podOptions = {}) => {
      const serviceAccount = podOptions.serviceAccount === undefined
        ? "app-sa"
        : podOptions.serviceAccount;
      const created = fake.put("pods", namespace, {
        metadata: {
          name,
          ...(podOptions.annotations ? { annotations: podOptions.annotations } : {}),
        },
        spec: {
          ...(serviceAccount !== null ? { serviceAccountName: serviceAccount } : {}),
          containers: [{ name: "app", image: "app:latest" }],
        },
      });
      return fake.serviceAccountJwt({
        namespace,
        serviceAccount: serviceAccount ?? "default",
        podName: name,
        podUid: created.metadata?.uid,
        audiences: [SENTRY_AUDIENCE],
        ...podOptions.token,
      });
    };
    const count = (method: string, path: string | RegExp) =>
      fake.requests.filter((request) =>
        request.method === method &&
        (typeof path === "string" ? request.path === path : path.test(request.path))
      ).length;
    await fn({ fake, client, validator, pod, count });
  } finally {
    validator?.close();
    client?.close();
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function request(token: string, overrides: Partial<SignRequest> = {}): SignRequest {
  return {
    id: "myapp",
    token,
    trustDomain: "",
    namespace: "default",
    csr: new Uint8Array([1]),
    tokenValidator: WireValidator.KUBERNETES,
    jwtAudiences: [],
    ...overrides,
  };
}

/** Asserts that validation is refused with a message matching `pattern`. */
async function refused(
  validator: KubernetesValidator,
  req: SignRequest,
  pattern: RegExp,
): Promise<void> {
  await assert.rejects(validator.validate(req), (error: unknown) => {
    assert.ok(error instanceof ValidationError, `not a ValidationError: ${error}`);
    assert.match(error.message, pattern);
    return true;
  });
}

function configuration(name: string, trustDomain?: string): KubeObject {
  return {
    apiVersion: "dapr.io/v1alpha1",
    kind: "Configuration",
    metadata: { name },
    spec: trustDomain === undefined ? {} : { accessControl: { trustDomain } },
  };
}

Deno.test("kubernetes validator: an app pod with a dapr.io/app-id annotation is accepted", async () => {
  await withValidator(async ({ fake, validator, pod }) => {
    const token = pod("default", "myapp-7d9f-abcde", {
      annotations: { "dapr.io/app-id": "myapp" },
    });
    assert.equal(validator.wire, WireValidator.KUBERNETES);
    assert.deepEqual(await validator.validate(request(token)), {
      trustDomain: "public",
      namespace: "default",
      appId: "myapp",
    });
    // A requested trust domain equal to the computed one is fine.
    assert.equal(
      (await validator.validate(request(token, { trustDomain: "public" }))).trustDomain,
      "public",
    );
    const review = fake.requests.find((entry) => entry.path === REVIEW_PATH);
    assert.deepEqual(review?.body, {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenReview",
      spec: { token, audiences: ["dapr.io/sentry", SENTRY_AUDIENCE] },
    });
    assert.deepEqual(validator.audiences, ["dapr.io/sentry", SENTRY_AUDIENCE]);
  });
});

Deno.test("kubernetes validator: without dapr.io/app-id the pod name is the app id; SA defaults to default", async () => {
  await withValidator(async ({ validator, pod }) => {
    const token = pod("shop", "checkout", { serviceAccount: null });
    assert.deepEqual(
      await validator.validate(request(token, { id: "checkout", namespace: "shop" })),
      { trustDomain: "public", namespace: "shop", appId: "checkout" },
    );
    await refused(
      validator,
      request(token, { id: "myapp", namespace: "shop" }),
      /app id "myapp" does not match the pod name "checkout" \(the pod has no dapr\.io\/app-id/,
    );
  });
});

Deno.test("kubernetes validator: a control-plane pod in sentry's namespace is dapr-<svc> in sentry's trust domain", async () => {
  await withValidator(async ({ validator, pod }) => {
    const token = pod(SENTRY_NS, "dapr-operator-5c8f-xyz", {
      serviceAccount: "dapr-operator",
      annotations: { "dapr.io/control-plane": "operator" },
    });
    assert.deepEqual(
      await validator.validate(request(token, { id: "dapr-operator", namespace: SENTRY_NS })),
      { trustDomain: SENTRY_TD, namespace: SENTRY_NS, appId: "dapr-operator" },
    );
    assert.equal(
      (await validator.validate(
        request(token, { id: "dapr-operator", namespace: SENTRY_NS, trustDomain: SENTRY_TD }),
      )).trustDomain,
      SENTRY_TD,
    );
    await refused(
      validator,
      request(token, { id: "dapr-operator-5c8f-xyz", namespace: SENTRY_NS }),
      /app id "dapr-operator-5c8f-xyz" does not match "dapr-operator", the id of control-plane pod/,
    );
    await refused(
      validator,
      request(token, { id: "dapr-operator", namespace: SENTRY_NS, trustDomain: "public" }),
      /requested trust domain "public" does not match "cluster\.local"/,
    );

    const scheduler = pod(SENTRY_NS, "dapr-scheduler-server-0", {
      serviceAccount: "dapr-scheduler",
      annotations: { "dapr.io/control-plane": "scheduler" },
    });
    assert.equal(
      (await validator.validate(
        request(scheduler, { id: "dapr-scheduler", namespace: SENTRY_NS }),
      )).appId,
      "dapr-scheduler",
    );

    const unknown = pod(SENTRY_NS, "dapr-dashboard", {
      annotations: { "dapr.io/control-plane": "dashboard" },
    });
    await refused(
      validator,
      request(unknown, { id: "dapr-dashboard", namespace: SENTRY_NS }),
      /annotated dapr\.io\/control-plane: "dashboard", which is not a control-plane service/,
    );

    const both = pod(SENTRY_NS, "dapr-placement-0", {
      annotations: { "dapr.io/control-plane": "placement", "dapr.io/app-id": "dapr-placement" },
    });
    await refused(
      validator,
      request(both, { id: "dapr-placement", namespace: SENTRY_NS }),
      /control-plane pod "dapr-system\/dapr-placement-0" must not have the dapr\.io\/app-id/,
    );
  });
});

Deno.test("kubernetes validator: a control-plane annotation outside sentry's namespace is refused", async () => {
  await withValidator(async ({ validator, pod }) => {
    const token = pod("default", "evil", { annotations: { "dapr.io/control-plane": "sentry" } });
    for (const id of ["dapr-sentry", "evil"]) {
      await refused(
        validator,
        request(token, { id }),
        /pod "default\/evil" is annotated dapr\.io\/control-plane: "sentry", but control-plane services are only allowed in sentry's namespace "dapr-system"/,
      );
    }
  });
});

Deno.test("kubernetes validator: a token for another namespace is refused (before any pod GET)", async () => {
  await withValidator(async ({ validator, pod, count }) => {
    const token = pod("team-a", "myapp", {});
    await refused(
      validator,
      request(token, { namespace: "team-b" }),
      /pod "myapp" is in namespace "team-a", not "team-b"/,
    );
    assert.equal(count("GET", "/api/v1/pods"), 0);
  });
});

Deno.test("kubernetes validator: a pod running as another service account is refused", async () => {
  await withValidator(async ({ validator, pod }) => {
    const token = pod("default", "myapp", {
      serviceAccount: "app-sa",
      token: { serviceAccount: "other-sa" },
    });
    await refused(
      validator,
      request(token),
      /pod "default\/myapp" runs as service account "app-sa", but the token is for service account "other-sa"/,
    );
    // No serviceAccountName on the pod means "default".
    const implicit = pod("default", "myapp2", {
      serviceAccount: null,
      token: { serviceAccount: "app-sa" },
    });
    await refused(
      validator,
      request(implicit, { id: "myapp2" }),
      /runs as service account "default", but the token is for service account "app-sa"/,
    );
  });
});

Deno.test("kubernetes validator: a wrong app id is refused, naming the annotation", async () => {
  await withValidator(async ({ validator, pod }) => {
    const token = pod("default", "myapp-abc", { annotations: { "dapr.io/app-id": "orders" } });
    await refused(
      validator,
      request(token, { id: "payments" }),
      /app id "payments" does not match the pod's dapr\.io\/app-id "orders"/,
    );
    await refused(
      validator,
      request(token, { id: "myapp-abc" }),
      /app id "myapp-abc" does not match the pod's dapr\.io\/app-id "orders"/,
    );
  });
});

Deno.test("kubernetes validator: unauthenticated, malformed and empty tokens are refused", async () => {
  await withValidator(async ({ fake, validator, pod, count }) => {
    const token = pod("default", "myapp", {});
    fake.removeServiceAccountToken(token);
    await refused(
      validator,
      request(token),
      /the token was not authenticated: \[invalid bearer token, token lookup failed\]/,
    );
    // An expired token.
    const expired = pod("default", "myapp2", {
      token: { expiresAt: new Date(Date.now() - 1000) },
    });
    await refused(validator, request(expired, { id: "myapp2" }), /has expired/);
    // The API server's admin token is not a service-account token for sentry.
    await refused(validator, request(fake.adminToken), /not a JWT/);
    await refused(validator, request("a.b"), /not a JWT/);
    await refused(validator, request(""), /the request does not contain a token/);
    // Common checks come first.
    await refused(validator, request(token, { id: "my.app" }), /cannot contain dots/);
    await refused(validator, request(token, { namespace: "" }), /namespace is required/);
    assert.equal(count("GET", "/api/v1/pods"), 0);
  });
});

Deno.test("kubernetes validator: a token without one of sentry's audiences is refused; the legacy audience is accepted", async () => {
  await withValidator(async ({ validator, pod }) => {
    const apiOnly = pod("default", "myapp", {
      token: { audiences: ["https://kubernetes.default.svc.cluster.local"] },
    });
    await refused(
      validator,
      request(apiOnly),
      /the token was not authenticated: .*token audiences \["https:\/\/kubernetes\.default\.svc\.cluster\.local"\] is invalid for the target audiences \["dapr\.io\/sentry" "spiffe:\/\/cluster\.local\/ns\/dapr-system\/dapr-sentry"\]/,
    );
    const otherSentry = pod("default", "myapp2", {
      token: { audiences: ["spiffe://other.td/ns/dapr-system/dapr-sentry"] },
    });
    await refused(validator, request(otherSentry, { id: "myapp2" }), /invalid for the target/);
    const legacy = pod("default", "myapp3", { token: { audiences: ["dapr.io/sentry"] } });
    assert.equal((await validator.validate(request(legacy, { id: "myapp3" }))).appId, "myapp3");
  });
});

Deno.test("kubernetes validator: a token without a pod claim is refused; a pod name the review contradicts too", async () => {
  await withValidator(async ({ fake, validator, pod, count }) => {
    pod("default", "myapp", {});
    const legacy = fake.serviceAccountJwt({
      namespace: "default",
      serviceAccount: "app-sa",
      audiences: [SENTRY_AUDIENCE],
    });
    await refused(
      validator,
      request(legacy),
      /no pod name claim \(kubernetes\.io -> pod -> name\).*not a legacy service-account token/,
    );
    // The claims say pod "myapp"; the TokenReview says the token belongs to pod "other".
    const now = Math.floor(Date.now() / 1000);
    const forged = makeServiceAccountJwt({
      iss: "https://kubernetes.default.svc.cluster.local",
      sub: "system:serviceaccount:default:app-sa",
      aud: [SENTRY_AUDIENCE],
      exp: now + 600,
      iat: now,
      nbf: now,
      jti: crypto.randomUUID(),
      "kubernetes.io": {
        namespace: "default",
        pod: { name: "myapp", uid: crypto.randomUUID() },
        serviceaccount: { name: "app-sa", uid: crypto.randomUUID() },
      },
    });
    fake.addServiceAccountToken(forged, {
      namespace: "default",
      serviceAccount: "app-sa",
      podName: "other",
      audiences: [SENTRY_AUDIENCE],
    });
    await refused(
      validator,
      request(forged),
      /the token's pod name claim "myapp" does not match the pod name "other" the TokenReview reports/,
    );
    assert.equal(count("GET", "/api/v1/pods"), 0);
  });
});

Deno.test("kubernetes validator: a pod that does not exist is refused", async () => {
  await withValidator(async ({ fake, validator, pod }) => {
    const token = pod("default", "gone", {});
    fake.remove("pods", "default", "gone");
    await refused(
      validator,
      request(token, { id: "gone" }),
      /pod "gone" not found in namespace "default"/,
    );
  });
});

Deno.test("kubernetes validator: the trust domain comes from the pod's dapr.io/config Configuration", async () => {
  await withValidator(async ({ fake, validator, pod }) => {
    fake.put("configurations", "default", configuration("appconfig", "example.org"));
    fake.put("configurations", "default", configuration("plain"));
    fake.put("configurations", "other", configuration("elsewhere", "other.org"));
    fake.put("configurations", "default", configuration("bad", "Not Valid"));

    const token = pod("default", "myapp", { annotations: { "dapr.io/config": "appconfig" } });
    assert.deepEqual(await validator.validate(request(token)), {
      trustDomain: "example.org",
      namespace: "default",
      appId: "myapp",
    });
    assert.equal(
      (await validator.validate(request(token, { trustDomain: "example.org" }))).trustDomain,
      "example.org",
    );

    const plain = pod("default", "plain-app", { annotations: { "dapr.io/config": "plain" } });
    assert.equal(
      (await validator.validate(request(plain, { id: "plain-app" }))).trustDomain,
      "public",
    );

    // The Configuration is looked up in the request's namespace only; a missing one is refused.
    const missing = pod("default", "lost", { annotations: { "dapr.io/config": "elsewhere" } });
    await refused(
      validator,
      request(missing, { id: "lost" }),
      /Configuration "elsewhere" in namespace "default", named by the pod's dapr\.io\/config annotation, does not exist/,
    );

    const bad = pod("default", "bad-app", { annotations: { "dapr.io/config": "bad" } });
    await refused(
      validator,
      request(bad, { id: "bad-app" }),
      /Configuration "bad" in namespace "default": spec\.accessControl\.trustDomain: trust domain "Not Valid" is invalid/,
    );
  });
});

Deno.test("kubernetes validator: a requested trust domain other than the computed one is refused", async () => {
  await withValidator(async ({ fake, validator, pod }) => {
    fake.put("configurations", "default", configuration("appconfig", "example.org"));
    const token = pod("default", "myapp", { annotations: { "dapr.io/config": "appconfig" } });
    await refused(
      validator,
      request(token, { trustDomain: "public" }),
      /requested trust domain "public" does not match "example\.org" \(spec\.accessControl\.trustDomain of Configuration "appconfig" in namespace "default"\)/,
    );
    const plain = pod("default", "plain", {});
    await refused(
      validator,
      request(plain, { id: "plain", trustDomain: "example.org" }),
      /requested trust domain "example\.org" does not match "public" \(the pod has no dapr\.io\/config annotation\)/,
    );
    await refused(
      validator,
      request(plain, { id: "plain", trustDomain: "Bad TD" }),
      /trust domain "Bad TD" may only contain/,
    );
  });
});

Deno.test("kubernetes validator: API failures are refusals to retry later, never cached", async () => {
  await withValidator(async ({ fake, validator, pod, count }) => {
    fake.put("configurations", "default", configuration("appconfig", "example.org"));
    const token = pod("default", "myapp", { annotations: { "dapr.io/config": "appconfig" } });

    // TokenReview answers 500 (the client tries twice).
    fake.failNext(2, 500, undefined, { method: "POST", path: REVIEW_PATH });
    await refused(
      validator,
      request(token),
      /^cannot verify the token now: kubernetes API: POST \/apis\/authentication\.k8s\.io\/v1\/tokenreviews: 500 Internal Server Error: .*injected failure 500 \(gave up after 2 attempts\)$/,
    );
    assert.equal(count("POST", REVIEW_PATH), 2);

    // The pod GET answers 503.
    fake.failNext(2, 503, undefined, { method: "GET", path: "/api/v1/pods" });
    await refused(
      validator,
      request(token),
      /^cannot verify the token now: kubernetes API: GET \/api\/v1\/pods: 503/,
    );
    // The failed review was not cached: this attempt reviewed the token again (and succeeded).
    assert.equal(count("POST", REVIEW_PATH), 3);

    // The Configuration GET answers 500.
    fake.failNext(2, 500, undefined, { method: "GET", path: /\/configurations\// });
    await refused(
      validator,
      request(token),
      /^cannot verify the token now: kubernetes API: GET \/apis\/dapr\.io\/v1alpha1\/namespaces\/default\/configurations\/appconfig: 500/,
    );

    // Sentry's own credentials refused (RBAC): still a refusal, not INTERNAL. (The pod was
    // cached by the previous attempt, whose pod GET succeeded: forget it first.)
    validator.close();
    fake.failNext(1, 403, undefined, { method: "GET", path: "/api/v1/pods" });
    await refused(validator, request(token), /^cannot verify the token now: .*403 Forbidden/);

    // Once the server is fine again, the same request is accepted.
    assert.equal((await validator.validate(request(token))).trustDomain, "example.org");
  });
});

Deno.test("kubernetes validator: an unreachable API server is a refusal to retry later", async () => {
  await withValidator(async ({ fake, validator, pod }) => {
    const token = pod("default", "myapp", {});
    await fake.setDown(true);
    await refused(validator, request(token), /^cannot verify the token now: kubernetes API: POST /);
    await fake.setDown(false);
    assert.equal((await validator.validate(request(token))).appId, "myapp");
  });
});

Deno.test("kubernetes validator: a burst from one pod is one pod GET, one Configuration GET, one review per token", async () => {
  await withValidator(async ({ fake, validator, pod, count }) => {
    fake.put("configurations", "default", configuration("appconfig", "example.org"));
    const token = pod("default", "myapp", { annotations: { "dapr.io/config": "appconfig" } });
    // Concurrent: the lookups are shared while in flight.
    const results = await Promise.all(
      Array.from({ length: 5 }, () => validator.validate(request(token))),
    );
    assert.ok(results.every((result) => result.trustDomain === "example.org"));
    // Sequential: served from the caches.
    for (let i = 0; i < 5; i++) {
      assert.equal((await validator.validate(request(token))).appId, "myapp");
    }
    assert.equal(count("GET", "/api/v1/pods"), 1);
    assert.equal(
      count("GET", "/apis/dapr.io/v1alpha1/namespaces/default/configurations/appconfig"),
      1,
    );
    assert.equal(count("POST", REVIEW_PATH), 1);

    // Another token of the same pod (another container): its own review, the cached pod.
    const second = fake.serviceAccountJwt({
      namespace: "default",
      serviceAccount: "app-sa",
      podName: "myapp",
      podUid: fake.get("pods", "default", "myapp")?.metadata?.uid,
      audiences: [SENTRY_AUDIENCE],
    });
    await validator.validate(request(second));
    assert.equal(count("POST", REVIEW_PATH), 2);
    assert.equal(count("GET", "/api/v1/pods"), 1);

    // Refusals use the cache too, and are not cached themselves.
    await refused(validator, request(token, { id: "other" }), /does not match/);
    assert.equal(count("GET", "/api/v1/pods"), 1);
  });
});

Deno.test("kubernetes validator: cached entries expire after cacheTtlMs; close() forgets them", async () => {
  await withValidator(async ({ fake, validator, pod, count }) => {
    const token = pod("default", "myapp", { annotations: { "dapr.io/app-id": "myapp" } });
    await validator.validate(request(token));
    await validator.validate(request(token));
    assert.equal(count("GET", "/api/v1/pods"), 1);
    assert.equal(count("POST", REVIEW_PATH), 1);

    // A TTL long enough that the first two calls share the cache even on a loaded machine.
    await new Promise((resolve) => setTimeout(resolve, 1600));
    // The pod changed meanwhile (its annotation was edited): the new value is seen.
    const current = fake.get("pods", "default", "myapp")!;
    current.metadata!.annotations = { "dapr.io/app-id": "renamed" };
    fake.put("pods", "default", current);
    await refused(validator, request(token), /does not match the pod's dapr\.io\/app-id "renamed"/);
    assert.equal(count("GET", "/api/v1/pods"), 2);
    assert.equal(count("POST", REVIEW_PATH), 2);

    validator.close();
    await validator.validate(request(token, { id: "renamed" }));
    assert.equal(count("GET", "/api/v1/pods"), 3);
  }, { cacheTtlMs: 1500 });
});

Deno.test("kubernetes validator: cacheTtlMs 0 turns caching off", async () => {
  await withValidator(async ({ validator, pod, count }) => {
    const token = pod("default", "myapp", {});
    for (let i = 0; i < 3; i++) await validator.validate(request(token));
    assert.equal(count("GET", "/api/v1/pods"), 3);
    assert.equal(count("POST", REVIEW_PATH), 3);
  }, { cacheTtlMs: 0 });
});

Deno.test("kubernetes validator: a pod recreated under the same name is fetched again", async () => {
  await withValidator(async ({ fake, validator, pod, count }) => {
    const old = pod("default", "web-0", { annotations: { "dapr.io/app-id": "web" } });
    await validator.validate(request(old, { id: "web" }));
    // The StatefulSet pod is deleted and recreated (new uid) with a new app id, within the TTL.
    fake.remove("pods", "default", "web-0");
    const fresh = pod("default", "web-0", { annotations: { "dapr.io/app-id": "web-v2" } });
    assert.equal((await validator.validate(request(fresh, { id: "web-v2" }))).appId, "web-v2");
    assert.equal(count("GET", "/api/v1/pods"), 2);
    // Tokens of the new pod now hit the cache.
    await validator.validate(request(fresh, { id: "web-v2" }));
    assert.equal(count("GET", "/api/v1/pods"), 2);
  });
});

Deno.test("kubernetes validator: sentry's identity must form a SPIFFE ID", async () => {
  await withValidator(({ client }) => {
    assert.throws(
      () =>
        new KubernetesValidator({
          client,
          sentryNamespace: SENTRY_NS,
          sentryTrustDomain: "Bad Domain",
        }),
      (error: unknown) =>
        error instanceof SpiffeIdError && /cannot form sentry's SPIFFE ID/.test(error.message),
    );
    return Promise.resolve();
  });
});
