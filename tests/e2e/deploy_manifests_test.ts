/**
 * The Kubernetes manifests in deploy/kubernetes/, checked for real: every YAML document parsed
 * with the `yaml` package (errors and duplicate keys fail), then the facts sentry depends on in
 * a cluster (docs/compatibility.md#kubernetes-mode, #rbac): the Deployment's flags, probes, ports and hardening, the
 * Service's 443 -> 50001, RBAC with exactly the rules sentry needs and no more, bindings to the
 * dapr-sentry ServiceAccount, the default `daprsystem` Configuration (through sentry's own
 * parser), the HA variant staying in step with the single-replica one, the Dockerfile matching
 * the pod's user and the binary's libc, `kubectl kustomize` building the set offline, and the
 * real kubectl applying the kinds the fake API server serves.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { SERVE_FLAGS } from "../../src/cli/serve.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { parseConfiguration } from "../../src/config/configuration.ts";
import { FakeKubeApiServer } from "../fakes/kube-apiserver.ts";
import { tempDir } from "../helpers/sentry_process.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DIR = join(ROOT, "deploy", "kubernetes");
const NS = "dapr-system";
const TRUST_BUNDLE = "dapr-trust-bundle";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

interface Doc {
  file: string;
  object: Obj;
}

/** Parses every document of a file; YAML errors and warnings (e.g. duplicate keys) fail. */
async function loadFile(file: string): Promise<Doc[]> {
  const text = await Deno.readTextFile(join(DIR, file));
  const docs: Doc[] = [];
  for (const document of parseAllDocuments(text)) {
    assert.deepEqual(document.errors.map(String), [], `${file}: YAML errors`);
    assert.deepEqual(document.warnings.map(String), [], `${file}: YAML warnings`);
    const object = document.toJS();
    if (object === null || object === undefined) continue; // an empty document
    docs.push({ file, object });
  }
  return docs;
}

async function yamlFiles(): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(DIR)) {
    if (entry.isFile && /\.ya?ml$/.test(entry.name)) files.push(entry.name);
  }
  return files.sort();
}

/** Every Kubernetes object of every manifest (the kustomization file excluded). */
async function loadAll(): Promise<Doc[]> {
  const docs: Doc[] = [];
  for (const file of await yamlFiles()) {
    if (file === "kustomization.yaml") continue;
    docs.push(...await loadFile(file));
  }
  return docs;
}

function only(docs: Doc[], kind: string, file?: string): Obj {
  const found = docs.filter((doc) => doc.object.kind === kind && (!file || doc.file === file));
  assert.equal(found.length, 1, `exactly one ${kind}${file ? ` in ${file}` : ""}`);
  return found[0].object;
}

const id = (object: Obj) =>
  `${object.kind}/${
    object.metadata?.namespace ? object.metadata.namespace + "/" : ""
  }${object.metadata?.name}`;

const CLUSTER_SCOPED = new Set([
  "Namespace",
  "ClusterRole",
  "ClusterRoleBinding",
  "CustomResourceDefinition",
]);

/** Keys allowed in an object: a typo'd field would be dropped or refused by the API server. */
function onlyKeys(object: Obj, allowed: string[], where: string): void {
  const unknown = Object.keys(object).filter((key) => !allowed.includes(key));
  assert.deepEqual(unknown, [], `${where}: unexpected fields`);
}

// ---------------------------------------------------------------------------------------------

Deno.test("every manifest parses; each object is well-formed and lives in dapr-system", async () => {
  const files = await yamlFiles();
  for (
    const expected of [
      "namespace.yaml",
      "serviceaccount.yaml",
      "rbac.yaml",
      "configuration.yaml",
      "configurations-crd.yaml",
      "deployment.yaml",
      "deployment-ha.yaml",
      "service.yaml",
      "kustomization.yaml",
    ]
  ) assert.ok(files.includes(expected), `deploy/kubernetes/${expected} is missing`);

  const docs = await loadAll();
  for (const { file, object } of docs) {
    const where = `${file}: ${id(object)}`;
    assert.equal(typeof object.apiVersion, "string", `${where}: apiVersion`);
    assert.equal(typeof object.kind, "string", `${where}: kind`);
    assert.match(object.metadata?.name ?? "", /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, where);
    if (CLUSTER_SCOPED.has(object.kind)) {
      assert.equal(object.metadata.namespace, undefined, `${where}: cluster-scoped`);
    } else {
      assert.equal(object.metadata.namespace, NS, `${where}: namespace`);
    }
  }
  // Within one file no object is declared twice.
  for (const file of files.filter((name) => name !== "kustomization.yaml")) {
    const ids = docs.filter((doc) => doc.file === file).map((doc) => id(doc.object));
    assert.equal(new Set(ids).size, ids.length, `${file}: duplicate objects ${ids}`);
  }
  assert.equal(only(docs, "Namespace").metadata.name, NS);
  const account = only(docs, "ServiceAccount");
  assert.equal(account.metadata.name, "dapr-sentry");
  assert.notEqual(account.automountServiceAccountToken, false);
});

// ---------------------------------------------------------------------------------------------
// Deployment

const CONTAINER_KEYS = [
  "name",
  "image",
  "imagePullPolicy",
  "command",
  "args",
  "env",
  "ports",
  "startupProbe",
  "readinessProbe",
  "livenessProbe",
  "resources",
  "securityContext",
  "volumeMounts",
];
const PROBE_KEYS = [
  "httpGet",
  "initialDelaySeconds",
  "periodSeconds",
  "timeoutSeconds",
  "failureThreshold",
  "successThreshold",
];
const CONTAINER_SECURITY_KEYS = [
  "runAsNonRoot",
  "runAsUser",
  "runAsGroup",
  "readOnlyRootFilesystem",
  "allowPrivilegeEscalation",
  "capabilities",
  "seccompProfile",
  "privileged",
];

/** Checks one sentry Deployment; returns its pod template. */
function checkDeployment(deployment: Obj, where: string): Obj {
  assert.equal(deployment.apiVersion, "apps/v1", where);
  assert.equal(deployment.metadata.name, "dapr-sentry", where);
  assert.equal(deployment.metadata.labels?.app, "dapr-sentry", `${where}: label app`);
  const template = deployment.spec.template;
  assert.deepEqual(deployment.spec.selector, { matchLabels: { app: "dapr-sentry" } }, where);
  assert.equal(template.metadata.labels.app, "dapr-sentry", `${where}: the selector matches`);
  assert.deepEqual(template.metadata.annotations, {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": "9090",
    "prometheus.io/path": "/metrics",
  }, `${where}: Prometheus annotations (strings, as annotations must be)`);

  const pod = template.spec;
  assert.equal(pod.serviceAccountName, "dapr-sentry", `${where}: service account`);
  assert.equal(pod.automountServiceAccountToken, true, `${where}: the API token is mounted`);
  assert.equal(pod.containers.length, 1, where);
  const container = pod.containers[0];
  onlyKeys(container, CONTAINER_KEYS, `${where}: container`);
  assert.match(container.image, /^[a-z0-9.-]+(:\d+)?\/[a-z0-9._/-]+:[\w.-]+$/, "an image ref");
  assert.notEqual(container.image.split(":").pop(), "latest", `${where}: a pinned tag`);
  // No command: the image's ENTRYPOINT is the binary (see the Dockerfile test).
  assert.equal(container.command, undefined, `${where}: args only`);

  // Flags: `--store k8s` (Kubernetes mode) in dapr-system, named as in docs/compatibility.md#command-line.
  const args: string[] = container.args;
  const flagValue = (flag: string) => {
    const at = args.indexOf(flag);
    if (at >= 0) return args[at + 1];
    return args.find((arg) => arg.startsWith(`${flag}=`))?.slice(flag.length + 1);
  };
  assert.equal(flagValue("--store"), "k8s", `${where}: --store k8s in ${args}`);
  assert.equal(flagValue("--namespace"), NS, `${where}: --namespace ${NS}`);
  assert.equal(flagValue("--trust-domain"), "cluster.local", `${where}: --trust-domain`);
  assert.ok(args.includes("--log-as-json"), `${where}: --log-as-json`);
  assert.ok(args.every((arg) => typeof arg === "string"), `${where}: args are strings`);
  // ... and sentry's own flag parser accepts them all, with the Configuration it then reads
  // (`--config`, default daprsystem) being the one configuration.yaml defines.
  const parsed = parseFlags(SERVE_FLAGS, args);
  assert.deepEqual(parsed.positionals, [], `${where}: no stray arguments`);
  assert.equal(parsed.values.store, "k8s");
  assert.equal(parsed.values.namespace, NS);
  assert.equal(parsed.values["log-as-json"], true);
  assert.equal(parsed.values.config, "daprsystem", `${where}: the Configuration's name`);
  for (const [flag, port] of [["port", 50001], ["healthz-port", 8080], ["metrics-port", 9090]]) {
    assert.equal(parsed.values[flag], port, `${where}: --${flag} is what the pod declares`);
  }

  // NAMESPACE from the downward API.
  const namespaceEnv = container.env.find((entry: Obj) => entry.name === "NAMESPACE");
  assert.deepEqual(namespaceEnv, {
    name: "NAMESPACE",
    valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } },
  }, `${where}: NAMESPACE`);

  const ports = Object.fromEntries(
    container.ports.map((port: Obj) => [port.name, port.containerPort]),
  );
  assert.deepEqual(ports, { grpc: 50001, healthz: 8080, metrics: 9090 }, `${where}: ports`);

  // Probes: GET /healthz on 8080 (200 when serving, 503 otherwise).
  for (const probe of ["livenessProbe", "readinessProbe"]) {
    assert.ok(container[probe], `${where}: ${probe}`);
  }
  for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
    if (!container[probe]) continue;
    onlyKeys(container[probe], PROBE_KEYS, `${where}: ${probe}`);
    assert.deepEqual(container[probe].httpGet, { path: "/healthz", port: 8080 }, probe);
  }

  // Resources: requests and limits for CPU and memory, requests within limits.
  const { requests, limits } = container.resources;
  for (const resource of ["cpu", "memory"]) {
    assert.ok(requests?.[resource], `${where}: requests.${resource}`);
    assert.ok(limits?.[resource], `${where}: limits.${resource}`);
    assert.ok(quantity(requests[resource]) <= quantity(limits[resource]), `${resource} fits`);
  }

  // Hardening: Pod Security Standards "restricted", plus a read-only root filesystem.
  const security = container.securityContext;
  onlyKeys(security, CONTAINER_SECURITY_KEYS, `${where}: securityContext`);
  const effective = (key: string) => security[key] ?? pod.securityContext?.[key];
  assert.equal(effective("runAsNonRoot"), true, `${where}: runAsNonRoot`);
  assert.notEqual(effective("runAsUser"), 0, `${where}: not uid 0`);
  assert.equal(security.readOnlyRootFilesystem, true, `${where}: readOnlyRootFilesystem`);
  assert.equal(security.allowPrivilegeEscalation, false, `${where}: allowPrivilegeEscalation`);
  assert.notEqual(security.privileged, true, `${where}: not privileged`);
  assert.deepEqual(security.capabilities, { drop: ["ALL"] }, `${where}: drop ALL`);
  assert.deepEqual(effective("seccompProfile"), { type: "RuntimeDefault" }, `${where}: seccomp`);
  assert.equal(pod.hostNetwork ?? false, false, where);
  for (const volume of pod.volumes ?? []) {
    assert.equal(volume.hostPath, undefined, `${where}: no hostPath volume`);
  }
  return template;
}

/** A Kubernetes quantity (`100m`, `1`, `128Mi`) as a number, for comparisons. */
function quantity(value: string | number): number {
  const match = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?$/.exec(String(value));
  assert.ok(match, `a quantity: ${value}`);
  const scale: Record<string, number> = {
    m: 1e-3,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
  };
  return Number(match[1]) * (match[2] ? scale[match[2]] : 1);
}

Deno.test("Deployment: --store k8s in dapr-system, NAMESPACE, ports, /healthz:8080 probes, hardened", async () => {
  const docs = await loadAll();
  const deployment = only(docs, "Deployment", "deployment.yaml");
  assert.equal(deployment.spec.replicas, 1);
  checkDeployment(deployment, "deployment.yaml");
});

Deno.test("HA: 3 replicas, anti-affinity, a PodDisruptionBudget, otherwise the same Deployment", async () => {
  const docs = await loadAll();
  const single = only(docs, "Deployment", "deployment.yaml");
  const ha = only(docs, "Deployment", "deployment-ha.yaml");
  const template = checkDeployment(ha, "deployment-ha.yaml");
  assert.equal(ha.spec.replicas, 3);

  // Spread over nodes by the app label.
  const terms = [
    ...(template.spec.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ??
      []).map((term: Obj) => term.podAffinityTerm),
    ...(template.spec.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ??
      []),
  ];
  assert.ok(
    terms.some((term: Obj) =>
      term.topologyKey === "kubernetes.io/hostname" &&
      term.labelSelector?.matchLabels?.app === "dapr-sentry"
    ),
    "pod anti-affinity on kubernetes.io/hostname for app=dapr-sentry",
  );

  // The PDB selects these pods and keeps a majority up.
  const pdb = only(docs, "PodDisruptionBudget", "deployment-ha.yaml");
  assert.equal(pdb.apiVersion, "policy/v1");
  assert.deepEqual(pdb.spec.selector, ha.spec.selector);
  const allowedDown = pdb.spec.maxUnavailable ?? ha.spec.replicas - pdb.spec.minAvailable;
  assert.ok(allowedDown >= 1 && allowedDown < ha.spec.replicas / 2, `PDB allows ${allowedDown}`);

  // Apart from replicas, strategy and affinity, the two Deployments say the same thing.
  const strip = (deployment: Obj) => {
    const copy = structuredClone(deployment);
    delete copy.spec.replicas;
    delete copy.spec.strategy;
    delete copy.spec.template.spec.affinity;
    return copy;
  };
  assert.deepEqual(strip(ha), strip(single), "deployment-ha.yaml drifted from deployment.yaml");
});

Deno.test("Service: dapr-sentry 443 -> 50001 (grpc) to the sentry pods; metrics 9090", async () => {
  const docs = await loadAll();
  const service = only(docs, "Service");
  const container = only(docs, "Deployment", "deployment.yaml").spec.template.spec.containers[0];
  const podLabels = only(docs, "Deployment", "deployment.yaml").spec.template.metadata.labels;
  assert.equal(service.metadata.name, "dapr-sentry");
  onlyKeys(service.spec, ["type", "selector", "ports"], "Service spec");
  assert.deepEqual(service.spec.selector, { app: "dapr-sentry" });
  for (const [key, value] of Object.entries(service.spec.selector)) {
    assert.equal(podLabels[key], value, "the Service selects the sentry pods");
  }
  const grpc = service.spec.ports.find((port: Obj) => port.name === "grpc");
  assert.deepEqual(
    { port: grpc.port, targetPort: grpc.targetPort },
    { port: 443, targetPort: 50001 },
  );
  // Every targetPort is a port the container declares (by number or by name).
  for (const port of service.spec.ports) {
    onlyKeys(port, ["name", "port", "targetPort", "protocol", "appProtocol"], "Service port");
    assert.ok(
      container.ports.some((declared: Obj) =>
        declared.containerPort === port.targetPort || declared.name === port.targetPort
      ),
      `targetPort ${port.targetPort} is a container port`,
    );
  }
  const metrics = service.spec.ports.find((port: Obj) => port.name === "metrics");
  if (metrics) assert.equal(metrics.targetPort, 9090);
});

// ---------------------------------------------------------------------------------------------
// RBAC

/** `group|resource|verb|name` for every permission a rule grants (`*` for any name). */
function grants(rules: Obj[], where: string): string[] {
  const out: string[] = [];
  for (const rule of rules) {
    onlyKeys(rule, ["apiGroups", "resources", "verbs", "resourceNames"], `${where}: rule`);
    for (const list of [rule.apiGroups, rule.resources, rule.verbs, rule.resourceNames ?? []]) {
      assert.ok(!list.includes("*"), `${where}: no wildcards (${JSON.stringify(rule)})`);
    }
    // Kubernetes cannot authorize these by name: such a rule would never match.
    if (rule.resourceNames?.length) {
      for (const verb of ["create", "deletecollection"]) {
        assert.ok(!rule.verbs.includes(verb), `${where}: ${verb} with resourceNames never matches`);
      }
    }
    for (const group of rule.apiGroups) {
      for (const resource of rule.resources) {
        for (const verb of rule.verbs) {
          for (const name of rule.resourceNames?.length ? rule.resourceNames : ["*"]) {
            out.push(`${group}|${resource}|${verb}|${name}`);
          }
        }
      }
    }
  }
  return out.sort();
}

const ROLE_GRANTS = [
  // The trust bundle Secret: by name, except create (which cannot be).
  ...["get", "update", "list", "watch"].map((verb) => `|secrets|${verb}|${TRUST_BUNDLE}`),
  "|secrets|create|*",
  // The trust anchors ConfigMap, the same way.
  ...["get", "update", "list", "watch"].map((verb) => `|configmaps|${verb}|${TRUST_BUNDLE}`),
  "|configmaps|create|*",
].sort();

const CLUSTER_ROLE_GRANTS = [
  ...["get", "list", "watch"].map((verb) => `dapr.io|configurations|${verb}|*`),
  "authentication.k8s.io|tokenreviews|create|*",
  ...["get", "list", "watch"].map((verb) => `|pods|${verb}|*`),
].sort();

Deno.test("RBAC: exactly the rules sentry needs; secrets only by name; bound to dapr-sentry", async () => {
  const docs = await loadAll();
  const roles = docs.filter((doc) => doc.object.kind === "Role").map((doc) => doc.object);
  const clusterRoles = docs.filter((doc) => doc.object.kind === "ClusterRole").map((doc) =>
    doc.object
  );
  assert.equal(roles.length, 1, "one Role");
  assert.equal(clusterRoles.length, 1, "one ClusterRole");
  const [role] = roles;
  const [clusterRole] = clusterRoles;
  for (const object of [role, clusterRole]) {
    assert.equal(object.apiVersion, "rbac.authorization.k8s.io/v1");
  }
  assert.equal(role.metadata.namespace, NS);
  assert.deepEqual(grants(role.rules, "Role"), ROLE_GRANTS, "Role grants");
  assert.deepEqual(grants(clusterRole.rules, "ClusterRole"), CLUSTER_ROLE_GRANTS, "ClusterRole");
  // No Secret anywhere else, and nothing but `create` on Secrets without a name.
  assert.ok(!clusterRole.rules.some((rule: Obj) => rule.resources.includes("secrets")));

  // Every binding: the dapr-sentry ServiceAccount, and a role defined here of the right kind.
  const bindings = docs.filter((doc) => /^(Cluster)?RoleBinding$/.test(doc.object.kind));
  assert.deepEqual(bindings.map((doc) => doc.object.kind).sort(), [
    "ClusterRoleBinding",
    "RoleBinding",
  ]);
  const account = only(docs, "ServiceAccount");
  for (const { object: binding } of bindings) {
    assert.deepEqual(binding.subjects, [{
      kind: "ServiceAccount",
      name: account.metadata.name,
      namespace: account.metadata.namespace,
    }], `${id(binding)} subjects`);
    assert.equal(binding.roleRef.apiGroup, "rbac.authorization.k8s.io");
    const target = binding.roleRef.kind === "Role" ? role : clusterRole;
    assert.equal(binding.roleRef.kind, target.kind, `${id(binding)}: roleRef kind`);
    assert.equal(binding.roleRef.name, target.metadata.name, `${id(binding)}: roleRef name`);
    if (binding.kind === "RoleBinding") {
      assert.equal(binding.roleRef.kind, "Role", "the RoleBinding grants the namespaced Role");
      assert.equal(binding.metadata.namespace, role.metadata.namespace);
    } else {
      assert.equal(binding.roleRef.kind, "ClusterRole");
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Configuration and CRD

Deno.test("Configuration daprsystem: mTLS on, 24h / 15m through sentry's own parser; the CRD matches", async () => {
  const docs = await loadAll();
  const configuration = only(docs, "Configuration");
  assert.equal(configuration.apiVersion, "dapr.io/v1alpha1");
  assert.equal(configuration.metadata.name, "daprsystem");
  assert.equal(configuration.spec.mtls.enabled, true);
  const settings = parseConfiguration(
    await Deno.readTextFile(join(DIR, "configuration.yaml")),
    "configuration.yaml",
  );
  assert.equal(settings.workloadCertTtlMs, 24 * 3600_000);
  assert.equal(settings.allowedClockSkewMs, 15 * 60_000);

  const crd = only(docs, "CustomResourceDefinition");
  assert.equal(crd.apiVersion, "apiextensions.k8s.io/v1");
  assert.equal(crd.metadata.name, "configurations.dapr.io");
  assert.equal(crd.spec.group, "dapr.io");
  assert.equal(crd.spec.scope, "Namespaced");
  assert.deepEqual(crd.spec.names, {
    kind: "Configuration",
    listKind: "ConfigurationList",
    plural: "configurations",
    singular: "configuration",
  });
  const [version] = crd.spec.versions;
  assert.equal(crd.spec.versions.length, 1);
  assert.deepEqual([version.name, version.served, version.storage], ["v1alpha1", true, true]);
  assert.equal(`${crd.spec.group}/${version.name}`, configuration.apiVersion);
  const schema = version.schema.openAPIV3Schema;
  assert.equal(schema.type, "object");
  assert.equal(schema.properties.spec["x-kubernetes-preserve-unknown-fields"], true);
});

// ---------------------------------------------------------------------------------------------
// kustomization and kubectl

async function run(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(command, {
    args,
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test("kustomization: the single-replica set, built offline by `kubectl kustomize`", async () => {
  const [kustomization] = await loadFile("kustomization.yaml");
  assert.equal(kustomization.object.kind, "Kustomization");
  const resources: string[] = kustomization.object.resources;
  assert.deepEqual([...resources].sort(), [
    "configuration.yaml",
    "deployment.yaml",
    "namespace.yaml",
    "rbac.yaml",
    "service.yaml",
    "serviceaccount.yaml",
  ], "single replica; the CRD is Dapr's and not applied over it");

  const expected = new Map<string, Obj>();
  for (const file of resources) {
    for (const { object } of await loadFile(file)) expected.set(id(object), object);
  }
  const home = await tempDir();
  const built = await run("kubectl", ["kustomize", "deploy/kubernetes"], { HOME: home })
    .finally(() => Deno.remove(home, { recursive: true }));
  assert.equal(built.code, 0, `kubectl kustomize failed:\n${built.stderr}`);
  const actual = new Map<string, Obj>();
  for (const document of parseAllDocuments(built.stdout)) {
    assert.deepEqual(document.errors.map(String), []);
    const object = document.toJS();
    actual.set(id(object), object);
  }
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort());
  for (const [key, object] of expected) assert.deepEqual(actual.get(key), object, key);
});

Deno.test("kubectl applies the Namespace, ServiceAccount and Configuration; sentry's parser reads them back", async () => {
  // The fake API server serves core kinds and configurations.dapr.io (not Deployments, RBAC or
  // CRDs), so only those documents go through the real client here.
  await using server = await FakeKubeApiServer.start();
  const dir = await tempDir();
  await using _cleanup = { [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
  const kubeconfig = await server.writeKubeconfig(join(dir, "kubeconfig"));
  const kubectl = (args: string[]) =>
    run("kubectl", ["--kubeconfig", kubeconfig, "--cache-dir", join(dir, "cache"), ...args], {
      HOME: dir,
    });
  const files = ["namespace.yaml", "serviceaccount.yaml", "configuration.yaml"]
    .flatMap((file) => ["-f", join(DIR, file)]);

  const dryRun = await kubectl(["apply", "--dry-run=server", ...files, "-o", "name"]);
  assert.equal(dryRun.code, 0, `kubectl apply --dry-run=server failed:\n${dryRun.stderr}`);
  assert.deepEqual(dryRun.stdout.trim().split("\n").sort(), [
    "configuration.dapr.io/daprsystem",
    "namespace/dapr-system",
    "serviceaccount/dapr-sentry",
  ]);
  assert.equal(server.get("configurations.dapr.io", NS, "daprsystem"), undefined, "dry run");

  const applied = await kubectl(["apply", ...files]);
  assert.equal(applied.code, 0, `kubectl apply failed:\n${applied.stderr}`);
  assert.equal(
    server.get("serviceaccounts", NS, "dapr-sentry")?.automountServiceAccountToken,
    true,
  );
  // What sentry reads in Kubernetes mode: the `daprsystem` Configuration in its namespace.
  const got = await kubectl([
    "get",
    "configurations.dapr.io",
    "daprsystem",
    "-n",
    NS,
    "-o",
    "json",
  ]);
  assert.equal(got.code, 0, got.stderr);
  const settings = parseConfiguration(got.stdout, "daprsystem");
  assert.equal(settings.workloadCertTtlMs, 24 * 3600_000);
  assert.equal(settings.allowedClockSkewMs, 15 * 60_000);
});

// ---------------------------------------------------------------------------------------------
// Image

Deno.test("Dockerfile: distroless/cc, dist/sentry as the entrypoint, the pod's non-root user", async () => {
  const lines = (await Deno.readTextFile(join(DIR, "Dockerfile"))).split("\n")
    .map((line) => line.trim()).filter((line) => line && !line.startsWith("#"));
  assert.ok(lines.length <= 3, `a short Dockerfile: ${lines}`);
  const from = lines.find((line) => line.startsWith("FROM "));
  // glibc and libstdc++ for the Node SEA binary; the static image has neither.
  assert.match(
    from ?? "",
    /^FROM gcr\.io\/distroless\/cc-debian12(:nonroot)?(@sha256:[0-9a-f]{64})?$/,
  );
  assert.ok(lines.includes("COPY dist/sentry /sentry"), "copies the built binary");
  assert.ok(lines.includes('ENTRYPOINT ["/sentry"]'), "the binary is the entrypoint (args only)");
  // The distroless `nonroot` user is 65532: the pod's runAsUser must agree or be unset there.
  const pod = only(await loadAll(), "Deployment", "deployment.yaml").spec.template.spec;
  if (from?.includes(":nonroot")) {
    assert.ok([undefined, 65532].includes(pod.securityContext.runAsUser));
  } else {
    assert.ok(pod.securityContext.runAsUser > 0, "root image: the pod must set a non-root uid");
  }
});

const BINARY = join(ROOT, "dist", "sentry");
const hasBinary = (() => {
  try {
    return Deno.statSync(BINARY).isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "dist/sentry needs no newer glibc / libstdc++ than distroless cc-debian12 has",
  ignore: !hasBinary, // built by `deno task build`
  async fn() {
    const result = await run("readelf", ["-V", "--wide", BINARY]);
    assert.equal(result.code, 0, result.stderr);
    const newest = (prefix: string) =>
      [...result.stdout.matchAll(new RegExp(`${prefix}_(\\d+(?:\\.\\d+)*)`, "g"))]
        .map((match) => match[1].split(".").map(Number))
        .sort((a, b) => compareVersions(b, a))[0];
    // Debian 12: glibc 2.36, GCC 12's libstdc++ (GLIBCXX_3.4.30).
    const glibc = newest("GLIBC");
    assert.ok(glibc && compareVersions(glibc, [2, 36]) <= 0, `needs GLIBC_${glibc?.join(".")}`);
    const glibcxx = newest("GLIBCXX");
    if (glibcxx) {
      assert.ok(compareVersions(glibcxx, [3, 4, 30]) <= 0, `needs GLIBCXX_${glibcxx.join(".")}`);
    }
  },
});

function compareVersions(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const difference = (a[i] ?? 0) - (b[i] ?? 0);
    if (difference) return difference;
  }
  return 0;
}
