/**
 * The cluster the chart tests install Dapr's rendered objects into: either the fake API server
 * (tests/fakes/kube-apiserver.ts, whose RBAC is a model of the real one) or a real
 * kube-apiserver + etcd (tests/helpers/real_kube_apiserver.ts, RBAC enforced by Kubernetes
 * itself). Both satisfy {@link ChartCluster}: put and get objects, give a service account API
 * credentials limited to what the rendered Roles and ClusterRoles grant, issue a pod's projected
 * token, write a kubeconfig and send a request with a given token.
 *
 * On the real server "limited to what the chart grants" means that the rendered ServiceAccount,
 * Roles, ClusterRoles and their bindings for the account are created there and the token comes
 * from the TokenRequest API; on the fake the token is restricted with `grantFor`.
 *
 * @module
 */
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { FakeKubeApiServer, type KubeObject } from "../fakes/kube-apiserver.ts";
import { grantFor } from "../fakes/kube-rbac.ts";
import { eventually } from "./eventually.ts";
import { KUBE_API_AUDIENCE, type RealKubeApiServer } from "./real_kube_apiserver.ts";

/** The answer to {@link ChartCluster.request}. */
export interface ClusterResponse {
  status: number;
  body: unknown;
}

/** A Kubernetes API the chart's objects are installed into (fake or real). */
export interface ChartCluster {
  /** `fake` or `real` (for messages and the few checks only one of them can make). */
  readonly kind: "fake" | "real";
  /** `https://127.0.0.1:PORT`. */
  readonly url: string;
  /** The port on 127.0.0.1. */
  readonly port: number;
  /** The CA certificate of the serving certificate. */
  readonly caPem: string;
  /** The fake itself (kind `fake` only). */
  readonly fake?: FakeKubeApiServer;
  /** The real server itself (kind `real` only). */
  readonly real?: RealKubeApiServer;
  /**
   * Creates `object` in `namespace` (ignored for cluster-scoped kinds), or replaces the live one
   * (its resourceVersion kept). `resource` is the plural (`secrets`, `configurations`, ...).
   */
  put(resource: string, namespace: string, object: KubeObject): Promise<KubeObject>;
  /** The live object, or undefined. */
  get(resource: string, namespace: string, name: string): Promise<KubeObject | undefined>;
  /**
   * API credentials of `namespace/serviceAccount` for pod `podName`, allowed exactly what the
   * Roles and ClusterRoles in `docs` grant it.
   */
  apiToken(
    docs: KubeObject[],
    namespace: string,
    serviceAccount: string,
    podName: string,
  ): Promise<string>;
  /**
   * Creates `pod` (namespace and service account too, when missing) and returns a projected
   * token of its service account bound to it, with `audiences`.
   */
  podToken(pod: KubeObject, audiences: string[], expirationSeconds?: number): Promise<string>;
  /** Writes a kubeconfig using `token` to `path`. */
  writeKubeconfig(path: string, token: string): Promise<string>;
  /** `method path` with `token` (a watch answers with its headers). */
  request(method: string, path: string, token: string): Promise<ClusterResponse>;
}

/** The fake API server as a {@link ChartCluster}. */
export function fakeCluster(api: FakeKubeApiServer): ChartCluster {
  let client: Deno.HttpClient | undefined;
  return {
    kind: "fake",
    url: api.url,
    port: api.port,
    caPem: api.caPem,
    fake: api,
    put: (resource, namespace, object) => Promise.resolve(api.put(resource, namespace, object)),
    get: (resource, namespace, name) => Promise.resolve(api.get(resource, namespace, name)),
    apiToken(docs, namespace, serviceAccount, podName) {
      const token = api.serviceAccountJwt({
        namespace,
        serviceAccount,
        podName,
        audiences: [KUBE_API_AUDIENCE],
      });
      api.restrictToken(token, grantFor(docs, namespace, serviceAccount));
      return Promise.resolve(token);
    },
    podToken(pod, audiences, expirationSeconds) {
      const namespace = pod.metadata!.namespace!;
      api.put("pods", namespace, pod);
      return Promise.resolve(api.serviceAccountJwt({
        namespace,
        // deno-lint-ignore no-explicit-any
        serviceAccount: (pod as any).spec.serviceAccountName,
        podName: pod.metadata!.name!,
        audiences,
        ...(expirationSeconds ? { expirationSeconds } : {}),
      }));
    },
    writeKubeconfig: (path, token) => api.writeKubeconfig(path, { token }),
    async request(method, path, token) {
      client ??= Deno.createHttpClient({ caCerts: [api.caPem] });
      const response = await fetch(`${api.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, accept: "application/json" },
        client,
      });
      if (/[?&]watch=(1|true)/.test(path) && response.status === 200) {
        await response.body?.cancel();
        return { status: 200, body: undefined };
      }
      const text = await response.text();
      try {
        return { status: response.status, body: JSON.parse(text) };
      } catch {
        return { status: response.status, body: text };
      }
    },
  };
}

/** Where a resource lives on the API server. */
interface ResourcePath {
  apiVersion: string;
  namespaced: boolean;
}

/** The resources the chart tests write (CRDs add theirs when applied). */
const RESOURCES: Record<string, ResourcePath> = {
  namespaces: { apiVersion: "v1", namespaced: false },
  pods: { apiVersion: "v1", namespaced: true },
  secrets: { apiVersion: "v1", namespaced: true },
  configmaps: { apiVersion: "v1", namespaced: true },
  services: { apiVersion: "v1", namespaced: true },
  serviceaccounts: { apiVersion: "v1", namespaced: true },
  roles: { apiVersion: "rbac.authorization.k8s.io/v1", namespaced: true },
  rolebindings: { apiVersion: "rbac.authorization.k8s.io/v1", namespaced: true },
  clusterroles: { apiVersion: "rbac.authorization.k8s.io/v1", namespaced: false },
  clusterrolebindings: { apiVersion: "rbac.authorization.k8s.io/v1", namespaced: false },
  customresourcedefinitions: { apiVersion: "apiextensions.k8s.io/v1", namespaced: false },
  mutatingwebhookconfigurations: {
    apiVersion: "admissionregistration.k8s.io/v1",
    namespaced: false,
  },
  deployments: { apiVersion: "apps/v1", namespaced: true },
  statefulsets: { apiVersion: "apps/v1", namespaced: true },
};

/** The plural resource name of a manifest's kind (the chart's kinds and Dapr's CRDs). */
export function resourceOf(object: KubeObject): string {
  const kind = object.kind!.toLowerCase();
  if (kind === "resiliency") return "resiliencies";
  return kind.endsWith("s") ? kind : `${kind}s`;
}

/** The collection path of `resource` in `namespace` on the real server. */
function collectionPath(resource: string, namespace: string): string {
  const known = RESOURCES[resource];
  if (!known) throw new Error(`chart_cluster: unknown resource ${resource}`);
  const prefix = known.apiVersion.includes("/") ? `/apis/${known.apiVersion}` : "/api/v1";
  return known.namespaced
    ? `${prefix}/namespaces/${namespace}/${resource}`
    : `${prefix}/${resource}`;
}

/** The rendered ServiceAccount, Roles, ClusterRoles and bindings that concern `namespace/sa`. */
export function rbacFor(docs: KubeObject[], namespace: string, sa: string): KubeObject[] {
  // deno-lint-ignore no-explicit-any
  const bindings = docs.filter((doc: any) =>
    (doc.kind === "RoleBinding" || doc.kind === "ClusterRoleBinding") &&
    // deno-lint-ignore no-explicit-any
    (doc.subjects ?? []).some((subject: any) =>
      subject.kind === "ServiceAccount" && subject.name === sa &&
      (subject.namespace ?? doc.metadata?.namespace) === namespace
    )
    // deno-lint-ignore no-explicit-any
  ) as any[];
  const roles = docs.filter((doc) =>
    bindings.some((binding) =>
      binding.roleRef.kind === doc.kind && binding.roleRef.name === doc.metadata?.name &&
      (doc.kind === "ClusterRole" || doc.metadata?.namespace === binding.metadata?.namespace)
    )
  );
  const account = docs.filter((doc) =>
    doc.kind === "ServiceAccount" && doc.metadata?.name === sa &&
    (doc.metadata?.namespace ?? namespace) === namespace
  );
  return [...account, ...roles, ...bindings];
}

/** A real kube-apiserver as a {@link ChartCluster}. */
export function realCluster(server: RealKubeApiServer): ChartCluster {
  const fail = (what: string, answer: { status: number; body: unknown }) =>
    new Error(`real kube-apiserver: ${what}: ${answer.status} ${JSON.stringify(answer.body)}`);
  const get = async (resource: string, namespace: string, name: string) => {
    const answer = await server.request("GET", `${collectionPath(resource, namespace)}/${name}`);
    if (answer.status === 404) return undefined;
    if (answer.status !== 200) throw fail(`GET ${resource} ${namespace}/${name}`, answer);
    return answer.body as KubeObject;
  };
  const put = async (resource: string, namespace: string, object: KubeObject) => {
    const path = collectionPath(resource, namespace);
    const name = object.metadata!.name!;
    for (let attempt = 0;; attempt++) {
      const live = await get(resource, namespace, name);
      const body = structuredClone(object);
      body.metadata ??= {};
      if (RESOURCES[resource].namespaced) body.metadata.namespace = namespace;
      if (live) body.metadata.resourceVersion = live.metadata!.resourceVersion;
      const answer = live
        ? await server.request("PUT", `${path}/${name}`, body)
        : await server.request("POST", path, body);
      if (answer.status === 200 || answer.status === 201) return answer.body as KubeObject;
      if (answer.status !== 409 || attempt >= 5) throw fail(`put ${resource} ${name}`, answer);
    }
  };
  const ensureAccount = async (namespace: string, sa: string) => {
    if (!(await get("namespaces", "", namespace))) {
      await put("namespaces", "", {
        apiVersion: "v1",
        kind: "Namespace",
        metadata: { name: namespace },
      });
    }
    if (!(await get("serviceaccounts", namespace, sa))) {
      await put("serviceaccounts", namespace, {
        apiVersion: "v1",
        kind: "ServiceAccount",
        metadata: { name: sa, namespace },
      });
    }
  };
  const tokenFor = async (
    namespace: string,
    sa: string,
    audiences: string[],
    podName: string,
    expirationSeconds?: number,
  ) => {
    const pod = await get("pods", namespace, podName);
    const answer = await server.request(
      "POST",
      `/api/v1/namespaces/${namespace}/serviceaccounts/${sa}/token`,
      {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenRequest",
        spec: {
          audiences,
          ...(expirationSeconds ? { expirationSeconds } : {}),
          boundObjectRef: { kind: "Pod", apiVersion: "v1", name: podName, uid: pod!.metadata!.uid },
        },
      },
    );
    const token = (answer.body as { status?: { token?: string } })?.status?.token;
    if (answer.status !== 201 || !token) throw fail(`TokenRequest ${namespace}/${sa}`, answer);
    return token;
  };
  const podToken = async (pod: KubeObject, audiences: string[], expirationSeconds?: number) => {
    const namespace = pod.metadata!.namespace!;
    // deno-lint-ignore no-explicit-any
    const sa = (pod as any).spec.serviceAccountName as string;
    await ensureAccount(namespace, sa);
    if (!(await get("pods", namespace, pod.metadata!.name!))) await put("pods", namespace, pod);
    return tokenFor(namespace, sa, audiences, pod.metadata!.name!, expirationSeconds);
  };
  return {
    kind: "real",
    url: server.url,
    port: Number(new URL(server.url).port),
    caPem: server.caPem,
    real: server,
    put,
    get,
    async apiToken(docs, namespace, serviceAccount, podName) {
      await ensureAccount(namespace, serviceAccount);
      for (const object of rbacFor(docs, namespace, serviceAccount)) {
        await put(resourceOf(object), object.metadata?.namespace ?? namespace, object);
      }
      return podToken(
        {
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: podName, namespace },
          spec: {
            serviceAccountName: serviceAccount,
            automountServiceAccountToken: false,
            containers: [{ name: "main", image: "main:test" }],
          },
        },
        [KUBE_API_AUDIENCE],
      );
    },
    podToken,
    writeKubeconfig: (path, token) => server.writeKubeconfig(path, token),
    request: (method, path, token) => server.request(method, path, undefined, { token }),
  };
}

/** The fake API server or a {@link ChartCluster} as a {@link ChartCluster}. */
export function asChartCluster(api: FakeKubeApiServer | ChartCluster): ChartCluster {
  return api instanceof FakeKubeApiServer ? fakeCluster(api) : api;
}

/**
 * Creates the CustomResourceDefinitions of Dapr's chart (`<chartDir>/crds/<file>` for each of
 * `files`, all when omitted) in the real server, as `helm install` does before the templates,
 * and waits until each is Established (then its resource is registered for {@link ChartCluster.put}).
 */
export async function installDaprCrds(
  cluster: ChartCluster,
  chartDir: string,
  files?: string[],
): Promise<KubeObject[]> {
  const dir = join(chartDir, "crds");
  const names = files ?? [...Deno.readDirSync(dir)].map((entry) => entry.name).sort();
  const crds: KubeObject[] = [];
  for (const file of names) {
    for (const doc of parseAllDocuments(await Deno.readTextFile(join(dir, file)))) {
      const crd = doc.toJS() as KubeObject;
      if (crd?.kind === "CustomResourceDefinition") crds.push(crd);
    }
  }
  for (const crd of crds) await cluster.put("customresourcedefinitions", "", crd);
  for (const crd of crds) {
    // deno-lint-ignore no-explicit-any
    const spec = (crd as any).spec;
    const version = spec.versions.find((v: { storage?: boolean }) => v.storage) ?? spec.versions[0];
    RESOURCES[spec.names.plural] = {
      apiVersion: `${spec.group}/${version.name}`,
      namespaced: spec.scope === "Namespaced",
    };
    await eventually(`CRD ${crd.metadata!.name} is Established`, async () => {
      const live = await cluster.get("customresourcedefinitions", "", crd.metadata!.name!);
      // deno-lint-ignore no-explicit-any
      return ((live as any)?.status?.conditions ?? []).some((c: any) =>
        c.type === "Established" && c.status === "True"
      );
    }, 30_000);
  }
  return crds;
}
