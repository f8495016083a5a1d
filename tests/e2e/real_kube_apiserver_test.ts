/**
 * The fake Kubernetes API server against a real one, on what our sentry depends on: the same
 * RBAC table (a Role with `resourceNames`, as Dapr's chart grants sentry the trust-bundle Secret
 * and ConfigMap; a ClusterRole for the cluster-wide pod list and TokenReview) is sent to a real
 * kube-apiserver + etcd (tests/helpers/real_kube_apiserver.ts, built from Go modules by
 * tests/kube/build.sh) with a TokenRequest token of the service account, and to
 * FakeKubeApiServer with `restrictToken(token, grantFor(manifests, ns, sa))`; both must answer
 * the same status codes, Status `reason`s and messages. One known difference is allowed for: a
 * refused list or watch by `fieldSelector=metadata.name=X` is `<resource> "X" is forbidden: …`
 * from the real server and `<resource> is forbidden: …` from the fake (rows with
 * `fakeMessage`). TokenReview of a projected token bound to a pod, with and without matching
 * audiences, must answer alike too.
 *
 * Ignored only when Go is missing or too old to build kube-apiserver (the reason is printed);
 * a failing build fails the test.
 */
import assert from "node:assert/strict";
import { FakeKubeApiServer } from "../fakes/kube-apiserver.ts";
import { grantFor } from "../fakes/kube-rbac.ts";
import {
  KUBE_API_AUDIENCE,
  realKubeUnavailable,
  startRealKubeApiServer,
} from "../helpers/real_kube_apiserver.ts";
import { tempDir } from "../helpers/sentry_process.ts";

const NS = "dapr-system";
const SA = "dapr-sentry";
const BUNDLE = "dapr-trust-bundle";
const AUDIENCE = "dapr.io/sentry";
const USER = `system:serviceaccount:${NS}:${SA}`;

/** What Dapr's chart gives sentry, narrowed to the points the table checks. */
const MANIFESTS = [
  {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "Role",
    metadata: { name: SA, namespace: NS },
    rules: [
      {
        apiGroups: [""],
        resources: ["secrets"],
        verbs: ["get", "update"],
        resourceNames: [BUNDLE],
      },
      {
        apiGroups: [""],
        resources: ["configmaps"],
        verbs: ["get", "list", "watch", "update"],
        resourceNames: [BUNDLE],
      },
    ],
  },
  {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "RoleBinding",
    metadata: { name: SA, namespace: NS },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: SA },
    subjects: [{ kind: "ServiceAccount", name: SA, namespace: NS }],
  },
  {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRole",
    metadata: { name: SA },
    rules: [
      { apiGroups: [""], resources: ["pods"], verbs: ["list"] },
      { apiGroups: ["authentication.k8s.io"], resources: ["tokenreviews"], verbs: ["create"] },
    ],
  },
  {
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRoleBinding",
    metadata: { name: SA },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: SA },
    subjects: [{ kind: "ServiceAccount", name: SA, namespace: NS }],
  },
];

/** The path of a manifest's collection. */
function collection(manifest: { kind: string; metadata: { namespace?: string } }): string {
  const plural = `${manifest.kind.toLowerCase()}s`;
  const ns = manifest.metadata.namespace ? `/namespaces/${manifest.metadata.namespace}` : "";
  return `/apis/rbac.authorization.k8s.io/v1${ns}/${plural}`;
}

/** An HTTPS endpoint the table is sent to: the fake or the real API server. */
interface Target {
  url: string;
  client: Deno.HttpClient;
  adminToken: string;
  /** The service account's token (RBAC-restricted). */
  token: string;
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

/** One request, sent identically to both targets; a watch answers with its headers. */
async function send(
  target: Target,
  method: string,
  path: string,
  body?: unknown,
  token = target.token,
): Promise<Answer> {
  const response = await fetch(`${target.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      accept: "application/json",
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    client: target.client,
  });
  if (/[?&]watch=1/.test(path) && response.status === 200) {
    await response.body?.cancel();
    return { status: 200, body: {} };
  }
  const text = await response.text();
  return { status: response.status, body: JSON.parse(text) };
}

/** The objects the table reads: as the admin, in both servers. */
async function seed(target: Target): Promise<void> {
  const admin = (method: string, path: string, body: unknown) =>
    send(target, method, path, body, target.adminToken);
  for (const kind of ["secrets", "configmaps"]) {
    for (const name of [BUNDLE, "other"]) {
      const created = await admin("POST", `/api/v1/namespaces/${NS}/${kind}`, {
        apiVersion: "v1",
        kind: kind === "secrets" ? "Secret" : "ConfigMap",
        metadata: { name },
        data: kind === "secrets" ? { "ca.crt": btoa("x") } : { "ca.crt": "x" },
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
    }
  }
  const pod = await admin("POST", `/api/v1/namespaces/${NS}/pods`, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "app" },
    spec: {
      serviceAccountName: SA,
      automountServiceAccountToken: false,
      containers: [{ name: "app", image: "app:test" }],
    },
  });
  assert.equal(pod.status, 201, JSON.stringify(pod.body));
}

/** One row of the RBAC table: what the service account sends, what both must answer. */
interface Row {
  what: string;
  method: string;
  path: string;
  /** The body (may read the target first, e.g. the current object for an update). */
  body?: (target: Target) => Promise<unknown>;
  status: number;
  /** The Status message of a refusal. */
  forbidden?: string;
  /**
   * Where the fake's refusal message differs from the real one (a known difference of the fake,
   * tests/fakes/kube-rbac.ts; status and reason still agree): the fake's message.
   */
  fakeMessage?: string;
}

const SECRETS = `/api/v1/namespaces/${NS}/secrets`;
const CONFIGMAPS = `/api/v1/namespaces/${NS}/configmaps`;
const BY_NAME = `fieldSelector=metadata.name%3D${BUNDLE}`;
const refusal = (
  subject: string,
  verb: string,
  resource: string,
  where = `in the namespace "${NS}"`,
) =>
  `${subject} is forbidden: User "${USER}" cannot ${verb} resource "${resource}" in API group "" ${where}`;

const TABLE: Row[] = [
  { what: "get the bundle Secret", method: "GET", path: `${SECRETS}/${BUNDLE}`, status: 200 },
  {
    what: "update the bundle Secret",
    method: "PUT",
    path: `${SECRETS}/${BUNDLE}`,
    body: async (target) => {
      const current = await send(
        target,
        "GET",
        `${SECRETS}/${BUNDLE}`,
        undefined,
        target.adminToken,
      );
      return { ...current.body, data: { "ca.crt": btoa("updated") } };
    },
    status: 200,
  },
  {
    what: "get another Secret",
    method: "GET",
    path: `${SECRETS}/other`,
    status: 403,
    forbidden: refusal(`secrets "other"`, "get", "secrets"),
  },
  {
    what: "create a Secret (resourceNames never grant create)",
    method: "POST",
    path: SECRETS,
    body: () => Promise.resolve({ apiVersion: "v1", kind: "Secret", metadata: { name: BUNDLE } }),
    status: 403,
    forbidden: refusal("secrets", "create", "secrets"),
  },
  {
    what: "delete the bundle Secret (verb not granted)",
    method: "DELETE",
    path: `${SECRETS}/${BUNDLE}`,
    status: 403,
    forbidden: refusal(`secrets "${BUNDLE}"`, "delete", "secrets"),
  },
  {
    what: "list Secrets",
    method: "GET",
    path: SECRETS,
    status: 403,
    forbidden: refusal("secrets", "list", "secrets"),
  },
  {
    what: "watch Secrets",
    method: "GET",
    path: `${SECRETS}?watch=1`,
    status: 403,
    forbidden: refusal("secrets", "watch", "secrets"),
  },
  {
    what: "list Secrets by name (the Role grants get, not list)",
    method: "GET",
    path: `${SECRETS}?${BY_NAME}`,
    status: 403,
    forbidden: refusal(`secrets "${BUNDLE}"`, "list", "secrets"),
    fakeMessage: refusal("secrets", "list", "secrets"),
  },
  {
    what: "get the bundle Secret in another namespace",
    method: "GET",
    path: `/api/v1/namespaces/default/secrets/${BUNDLE}`,
    status: 403,
    forbidden: refusal(`secrets "${BUNDLE}"`, "get", "secrets", `in the namespace "default"`),
  },
  { what: "get the bundle ConfigMap", method: "GET", path: `${CONFIGMAPS}/${BUNDLE}`, status: 200 },
  {
    what: "list ConfigMaps by name",
    method: "GET",
    path: `${CONFIGMAPS}?${BY_NAME}`,
    status: 200,
  },
  {
    what: "watch ConfigMaps by name",
    method: "GET",
    path: `${CONFIGMAPS}?watch=1&timeoutSeconds=1&${BY_NAME}`,
    status: 200,
  },
  {
    what: "list ConfigMaps",
    method: "GET",
    path: CONFIGMAPS,
    status: 403,
    forbidden: refusal("configmaps", "list", "configmaps"),
  },
  {
    what: "watch ConfigMaps",
    method: "GET",
    path: `${CONFIGMAPS}?watch=1&timeoutSeconds=1`,
    status: 403,
    forbidden: refusal("configmaps", "watch", "configmaps"),
  },
  {
    what: "list ConfigMaps by another name",
    method: "GET",
    path: `${CONFIGMAPS}?fieldSelector=metadata.name%3Dother`,
    status: 403,
    forbidden: refusal(`configmaps "other"`, "list", "configmaps"),
    fakeMessage: refusal("configmaps", "list", "configmaps"),
  },
  {
    what: "watch ConfigMaps by another name",
    method: "GET",
    path: `${CONFIGMAPS}?watch=1&timeoutSeconds=1&fieldSelector=metadata.name%3Dother`,
    status: 403,
    forbidden: refusal(`configmaps "other"`, "watch", "configmaps"),
    fakeMessage: refusal("configmaps", "watch", "configmaps"),
  },
  {
    what: "list one pod cluster-wide (as sentry's KUBERNETES validator does)",
    method: "GET",
    path: `/api/v1/pods?fieldSelector=metadata.namespace%3D${NS}%2Cmetadata.name%3Dapp`,
    status: 200,
  },
  {
    what: "get a pod (the ClusterRole grants list only)",
    method: "GET",
    path: `/api/v1/namespaces/${NS}/pods/app`,
    status: 403,
    forbidden: refusal(`pods "app"`, "get", "pods"),
  },
];

/** The comparable part of an answer: status, and reason and message of a refusal. */
function outcome(answer: Answer) {
  return {
    status: answer.status,
    reason: answer.body.reason,
    ...(answer.status >= 400 ? { message: answer.body.message } : {}),
  };
}

const unavailable = await realKubeUnavailable();
if (unavailable) {
  console.warn(
    `real_kube_apiserver_test.ts: ignored: kube-apiserver cannot be built: ${unavailable}`,
  );
}

Deno.test({
  name: "real kube-apiserver and the fake answer RBAC and TokenReview alike",
  ignore: unavailable !== undefined,
  async fn(t) {
    await using kube = await startRealKubeApiServer();
    await using fake = await FakeKubeApiServer.start();

    // Real: namespace, service account, RBAC objects, a TokenRequest token; fake: the grant.
    const token = await kube.serviceAccountToken(NS, SA, [KUBE_API_AUDIENCE]);
    for (const manifest of MANIFESTS) {
      const created = await kube.request("POST", collection(manifest), manifest);
      assert.equal(created.status, 201, JSON.stringify(created.body));
    }
    const fakeToken = `sa-${crypto.randomUUID()}`;
    fake.restrictToken(fakeToken, grantFor(MANIFESTS, NS, SA));

    const real: Target = {
      url: kube.url,
      client: Deno.createHttpClient({ caCerts: [kube.caPem] }),
      adminToken: kube.adminToken,
      token,
    };
    const faked: Target = {
      url: fake.url,
      client: Deno.createHttpClient({ caCerts: [fake.caPem] }),
      adminToken: fake.adminToken,
      token: fakeToken,
    };
    try {
      await seed(real);
      await seed(faked);

      await t.step(
        "the harness: the admin token, a kubeconfig, unknown tokens refused",
        async () => {
          const version = await kube.request("GET", "/version");
          assert.equal(version.status, 200);
          assert.match(String((version.body as { gitVersion?: string }).gitVersion), /^v1\.\d+\./);
          const dir = await tempDir();
          const path = await kube.writeKubeconfig(`${dir}/kubeconfig`, token);
          const config = JSON.parse(await Deno.readTextFile(path));
          await Deno.remove(dir, { recursive: true });
          assert.equal(config.clusters[0].cluster.server, kube.url);
          assert.equal(config.users[0].user.token, token);
          // An unknown token is 401 Unauthorized.
          const anonymous = await send(real, "GET", SECRETS, undefined, "not-a-token");
          assert.equal(anonymous.status, 401);
          assert.equal(anonymous.body.reason, "Unauthorized");
        },
      );

      for (const row of TABLE) {
        await t.step(`${row.method} ${row.what}: ${row.status}`, async () => {
          const answers = [];
          for (const target of [real, faked]) {
            const body = row.body ? await row.body(target) : undefined;
            answers.push(outcome(await send(target, row.method, row.path, body)));
          }
          const [fromReal, fromFake] = answers;
          assert.deepEqual(
            fromReal,
            {
              status: row.status,
              reason: row.status === 403 ? "Forbidden" : undefined,
              ...(row.forbidden ? { message: row.forbidden } : {}),
            },
            "the real kube-apiserver",
          );
          if (row.fakeMessage !== undefined && fromFake.message === row.fakeMessage) {
            // The real server names the object of a list or watch by `metadata.name=`.
            fromFake.message = fromReal.message;
          }
          assert.deepEqual(fromFake, fromReal, "the fake answers as the real kube-apiserver");
        });
      }

      await t.step("TokenReview of a projected token bound to a pod", async () => {
        const realToken = await kube.serviceAccountToken(NS, SA, [AUDIENCE], "app");
        const pod = await send(
          real,
          "GET",
          `/api/v1/namespaces/${NS}/pods/app`,
          undefined,
          real.adminToken,
        );
        const podUid = (pod.body.metadata as { uid: string }).uid;
        const fakeToken = fake.serviceAccountJwt({
          namespace: NS,
          serviceAccount: SA,
          podName: "app",
          podUid,
          audiences: [AUDIENCE],
        });
        const review = async (target: Target, reviewed: string, audiences?: string[]) => {
          const answer = await send(target, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
            apiVersion: "authentication.k8s.io/v1",
            kind: "TokenReview",
            spec: { token: reviewed, ...(audiences ? { audiences } : {}) },
          });
          assert.equal(answer.status, 201, JSON.stringify(answer.body));
          const status = answer.body.status as {
            authenticated?: boolean;
            error?: string;
            audiences?: string[];
            user?: { username?: string; groups?: string[]; extra?: Record<string, string[]> };
          };
          return {
            authenticated: status.authenticated,
            error: status.error,
            audiences: status.audiences,
            username: status.user?.username,
            groups: status.user?.groups,
            extraKeys: Object.keys(status.user?.extra ?? {}).sort(),
            podName: status.user?.extra?.["authentication.kubernetes.io/pod-name"],
            podUid: status.user?.extra?.["authentication.kubernetes.io/pod-uid"],
          };
        };
        for (const audiences of [[AUDIENCE], ["other", AUDIENCE], ["other"], undefined]) {
          const fromReal = await review(real, realToken, audiences);
          const fromFake = await review(faked, fakeToken, audiences);
          if (audiences?.includes(AUDIENCE)) {
            assert.deepEqual(fromReal, {
              authenticated: true,
              error: undefined,
              audiences: [AUDIENCE],
              username: USER,
              groups: [
                "system:serviceaccounts",
                `system:serviceaccounts:${NS}`,
                "system:authenticated",
              ],
              extraKeys: [
                "authentication.kubernetes.io/credential-id",
                "authentication.kubernetes.io/pod-name",
                "authentication.kubernetes.io/pod-uid",
              ],
              podName: ["app"],
              podUid: [podUid],
            });
          } else {
            assert.equal(fromReal.authenticated, undefined);
            assert.match(String(fromReal.error), /^\[invalid bearer token, token audiences/);
          }
          assert.deepEqual(fromFake, fromReal, `audiences ${JSON.stringify(audiences)}`);
        }
      });
    } finally {
      real.client.close();
      faked.client.close();
    }
  },
});
