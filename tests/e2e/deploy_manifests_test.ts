/**
 * The Kubernetes manifests in deploy/kubernetes/ (docs/kubernetes.md), checked for real: every
 * YAML document parsed with the `yaml` package (errors and duplicate keys fail), then:
 *
 * - the standalone set (kustomization.yaml, for clusters without Dapr's chart) holds no
 *   Secret, ConfigMap, Configuration or CRD, so it never replaces a CA or Dapr's settings, and
 *   applies to a bare cluster in one step;
 * - the Deployment's flags through sentry's own parser (`--mode kubernetes`, the Secret store,
 *   built-in settings), liveness and startup on /livez, readiness on /healthz, ports, hardening;
 * - the image is set in an overlay with a kustomize `images:` entry (`kubectl kustomize` of
 *   such an overlay, with and without the ha/ Component, which only adds replicas, affinity and
 *   a PodDisruptionBudget);
 * - RBAC with exactly the rules sentry calls, proven sufficient by running sentry under it
 *   against the fake API server (which enforces RBAC): it creates the trust bundle, watches the
 *   Secret and signs for a sidecar with no request refused;
 * - the chart add-on (chart-secret-watch.yaml) grants list/watch on the Secret that Dapr's
 *   rendered chart does not, under names the chart does not use;
 * - the optional Configuration and CRD, and the overlay that switches to them;
 * - `kubectl create` of the set on a cluster where the chart's objects exist fails and changes
 *   nothing (the first-install step docs/kubernetes.md gives);
 * - the `sentry init` commands of docs/kubernetes.md parse with the init command's flags;
 * - the Dockerfile matching the pod's user and the binary's libc.
 */
import assert from "node:assert/strict";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { SERVE_FLAGS } from "../../src/cli/serve.ts";
import { INIT_COMMAND } from "../../src/cli/init.ts";
import { parseFlags } from "../../src/cli/flags.ts";
import { storeKind } from "../../src/cli/store-flags.ts";
import { parseConfiguration } from "../../src/config/configuration.ts";
import { FakeKubeApiServer, type KubeObject } from "../fakes/kube-apiserver.ts";
import { authorize, grantFor } from "../fakes/kube-rbac.ts";
import { daprBinaries } from "../helpers/dapr_binaries.ts";
import { renderDaprChart, startChartSentry } from "../helpers/dapr_chart.ts";
import { signOnce } from "../helpers/grpc_client.ts";
import { tempDir } from "../helpers/sentry_process.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DIR = join(ROOT, "deploy", "kubernetes");
const NS = "dapr-system";
const TRUST_BUNDLE = "dapr-trust-bundle";
/** The image name the Deployment carries until an overlay's `images:` entry replaces it. */
const IMAGE_TOKEN = "set-the-image.invalid/sentry";

// deno-lint-ignore no-explicit-any
type Obj = Record<string, any>;

interface Doc {
  file: string;
  object: Obj;
}

/** Parses every document of a YAML text; errors and warnings (e.g. duplicate keys) fail. */
function parseDocs(text: string, file: string): Doc[] {
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

/** Every document of a file under deploy/kubernetes (`file` relative to it, e.g. `ha/x.yaml`). */
async function loadFile(file: string): Promise<Doc[]> {
  return parseDocs(await Deno.readTextFile(join(DIR, file)), file);
}

/** The YAML files under deploy/kubernetes, relative paths, sorted. */
async function yamlFiles(): Promise<string[]> {
  const files: string[] = [];
  for (const sub of ["", "ha"]) {
    for await (const entry of Deno.readDir(join(DIR, sub))) {
      if (entry.isFile && /\.ya?ml$/.test(entry.name)) files.push(join(sub, entry.name));
    }
  }
  return files.sort();
}

const isKustomization = (file: string) => /(^|\/)kustomization\.yaml$/.test(file);

/** Every Kubernetes object of every manifest (kustomization files and patches excluded). */
async function loadAll(): Promise<Doc[]> {
  const docs: Doc[] = [];
  for (const file of await yamlFiles()) {
    if (isKustomization(file) || file === "ha/deployment-patch.yaml") continue;
    docs.push(...await loadFile(file));
  }
  return docs;
}

/** The files the standalone kustomization lists, and their objects. */
async function standalone(): Promise<{ resources: string[]; docs: Doc[] }> {
  const [kustomization] = await loadFile("kustomization.yaml");
  const resources: string[] = kustomization.object.resources;
  const docs: Doc[] = [];
  for (const file of resources) docs.push(...await loadFile(file));
  return { resources, docs };
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

/**
 * `kubectl kustomize` of an overlay in a temporary directory whose kustomization.yaml is
 * `body` with `BASE` replaced by the relative path to deploy/kubernetes (kustomize refuses
 * absolute ones), as docs/kubernetes.md tells operators to write it. Returns the objects.
 */
async function buildOverlay(body: string): Promise<Obj[]> {
  const dir = await tempDir("sentry-overlay-");
  try {
    const base = relative(dir, DIR);
    await Deno.writeTextFile(join(dir, "kustomization.yaml"), body.replaceAll("BASE", base));
    return await kustomize(dir, { HOME: dir });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function kustomize(dir: string, env: Record<string, string>): Promise<Obj[]> {
  const built = await run("kubectl", ["kustomize", dir], env);
  assert.equal(built.code, 0, `kubectl kustomize ${dir} failed:\n${built.stderr}`);
  return parseDocs(built.stdout, "kubectl kustomize").map((doc) => doc.object);
}

const IMAGE_OVERRIDE = `images:
  - name: ${IMAGE_TOKEN}
    newName: registry.example.com/dapr-tools/sentry
    newTag: "0.1.0"
`;

// ---------------------------------------------------------------------------------------------

Deno.test("every manifest parses; each object is well-formed and lives in dapr-system", async () => {
  const files = await yamlFiles();
  assert.deepEqual(files, [
    "chart-secret-watch.yaml",
    "configuration.yaml",
    "configurations-crd.yaml",
    "deployment.yaml",
    "ha/deployment-patch.yaml",
    "ha/kustomization.yaml",
    "ha/poddisruptionbudget.yaml",
    "kustomization.yaml",
    "namespace.yaml",
    "rbac.yaml",
    "service.yaml",
    "serviceaccount.yaml",
  ], "deploy/kubernetes holds these YAML files (update docs/kubernetes.md with this list)");

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
  for (const file of new Set(docs.map((doc) => doc.file))) {
    const ids = docs.filter((doc) => doc.file === file).map((doc) => id(doc.object));
    assert.equal(new Set(ids).size, ids.length, `${file}: duplicate objects ${ids}`);
  }
  assert.equal(only(docs, "Namespace").metadata.name, NS);
  const account = only(docs, "ServiceAccount");
  assert.equal(account.metadata.name, "dapr-sentry");
  assert.notEqual(account.automountServiceAccountToken, false);
});

Deno.test("standalone set: no Secret, ConfigMap, Configuration or CRD; built offline by `kubectl kustomize`", async () => {
  const [kustomization] = await loadFile("kustomization.yaml");
  assert.equal(kustomization.object.apiVersion, "kustomize.config.k8s.io/v1beta1");
  assert.equal(kustomization.object.kind, "Kustomization");
  onlyKeys(kustomization.object, ["apiVersion", "kind", "resources"], "kustomization.yaml");
  const { resources, docs } = await standalone();
  assert.deepEqual([...resources].sort(), [
    "deployment.yaml",
    "namespace.yaml",
    "rbac.yaml",
    "service.yaml",
    "serviceaccount.yaml",
  ], "the standalone set; optional files and the chart add-on stay out of it");
  // What it creates: nothing that holds a CA (sentry creates the trust bundle itself and
  // never replaces one) and no Configuration that would replace Dapr's `daprsystem`.
  assert.deepEqual([...new Set(docs.map((doc) => doc.object.kind))].sort(), [
    "ClusterRole",
    "ClusterRoleBinding",
    "Deployment",
    "Namespace",
    "Role",
    "RoleBinding",
    "Service",
    "ServiceAccount",
  ]);
  for (const kind of ["Secret", "ConfigMap", "Configuration", "CustomResourceDefinition"]) {
    assert.ok(!docs.some((doc) => doc.object.kind === kind), `no ${kind} in the standalone set`);
  }

  const expected = new Map(docs.map(({ object }) => [id(object), object]));
  const home = await tempDir();
  const built = await kustomize("deploy/kubernetes", { HOME: home })
    .finally(() => Deno.remove(home, { recursive: true }));
  const actual = new Map(built.map((object) => [id(object), object]));
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort());
  for (const [key, object] of expected) assert.deepEqual(actual.get(key), object, key);
});

// ---------------------------------------------------------------------------------------------
// Deployment

const CONTAINER_KEYS = [
  "name",
  "image",
  "imagePullPolicy",
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
function checkDeployment(deployment: Obj, where: string, image = IMAGE_TOKEN): Obj {
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
  // The image: the overlay's `images:` entry, or the name that entry matches (in the reserved
  // .invalid domain, so that an unset image fails to pull instead of running something else).
  assert.equal(container.image, image, `${where}: image`);
  assert.equal(container.imagePullPolicy, "IfNotPresent", `${where}: imagePullPolicy`);
  // No command: the image's ENTRYPOINT is the binary (see the Dockerfile test).
  assert.equal(container.command, undefined, `${where}: args only`);

  // Flags, through sentry's own parser: Kubernetes mode as Dapr's chart passes it, hence the
  // Secret store in the pod's namespace, the built-in mTLS settings (`--config=`), JSON logs.
  const args: string[] = container.args;
  assert.ok(args.every((arg) => typeof arg === "string"), `${where}: args are strings`);
  const parsed = parseFlags(SERVE_FLAGS, args);
  assert.deepEqual(parsed.positionals, [], `${where}: no stray arguments`);
  assert.deepEqual([...parsed.given].sort(), ["config", "log-as-json", "mode", "trust-domain"]);
  assert.equal(parsed.values.mode, "kubernetes", `${where}: --mode kubernetes`);
  assert.equal(storeKind(parsed, true), "k8s", `${where}: the Secret store`);
  assert.equal(parsed.values.config, "", `${where}: --config= (built-in settings, no CRD needed)`);
  assert.equal(parsed.values.namespace, "", `${where}: the namespace comes from NAMESPACE`);
  assert.equal(parsed.values["trust-domain"], "cluster.local", `${where}: --trust-domain`);
  assert.equal(parsed.values["log-as-json"], true, `${where}: --log-as-json`);
  for (const [flag, port] of [["port", 50001], ["healthz-port", 8080], ["metrics-port", 9090]]) {
    assert.equal(parsed.values[flag], port, `${where}: --${flag} is what the pod declares`);
  }

  // NAMESPACE from the downward API: sentry's namespace, where the trust bundle lives.
  assert.deepEqual(container.env, [{
    name: "NAMESPACE",
    valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } },
  }], `${where}: env`);

  const ports = Object.fromEntries(
    container.ports.map((port: Obj) => [port.name, port.containerPort]),
  );
  assert.deepEqual(ports, { grpc: 50001, healthz: 8080, metrics: 9090 }, `${where}: ports`);

  // Probes: liveness (and the startup probe that gates it) on /livez, 200 while the process
  // answers; readiness on /healthz, 503 while sentry cannot sign. An expired issuer makes the
  // pod unready, never restarts it in a loop.
  for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
    assert.ok(container[probe], `${where}: ${probe}`);
    onlyKeys(container[probe], PROBE_KEYS, `${where}: ${probe}`);
  }
  assert.deepEqual(container.livenessProbe.httpGet, { path: "/livez", port: 8080 }, "liveness");
  assert.deepEqual(container.startupProbe.httpGet, { path: "/livez", port: 8080 }, "startup");
  assert.deepEqual(container.readinessProbe.httpGet, { path: "/healthz", port: 8080 }, "ready");
  const startupSeconds = container.startupProbe.periodSeconds *
    container.startupProbe.failureThreshold;
  assert.ok(startupSeconds >= 60, `${where}: ${startupSeconds}s to wait for the API server`);

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

Deno.test("Deployment: --mode kubernetes, --config=, NAMESPACE, /livez liveness, /healthz readiness, hardened", async () => {
  const deployment = only(await loadAll(), "Deployment", "deployment.yaml");
  assert.equal(deployment.spec.replicas, 1);
  checkDeployment(deployment, "deployment.yaml");
});

Deno.test("image: an overlay's kustomize `images:` entry sets it, and changes nothing else", async () => {
  const { docs } = await standalone();
  const overlay = await buildOverlay(`resources:\n  - BASE\n${IMAGE_OVERRIDE}`);
  const image = "registry.example.com/dapr-tools/sentry:0.1.0";
  assert.deepEqual(overlay.map(id).sort(), docs.map((doc) => id(doc.object)).sort());
  const deployment = overlay.find((object) => object.kind === "Deployment")!;
  checkDeployment(deployment, "overlay", image);
  // Everything but the image is the base's.
  const base = new Map(docs.map(({ object }) => [id(object), object]));
  for (const object of overlay) {
    const expected = structuredClone(base.get(id(object))!);
    if (object.kind === "Deployment") expected.spec.template.spec.containers[0].image = image;
    assert.deepEqual(object, expected, id(object));
  }
  // The token is written once, in the Deployment, and documented where operators look.
  const texts = await Promise.all(
    ["deployment.yaml", "kustomization.yaml"].map((file) => Deno.readTextFile(join(DIR, file))),
  );
  for (const text of texts) assert.ok(text.includes(IMAGE_TOKEN));
  const guide = await Deno.readTextFile(join(ROOT, "docs", "kubernetes.md"));
  assert.ok(guide.includes(`name: ${IMAGE_TOKEN}`), "docs/kubernetes.md shows the images: entry");
});

Deno.test("HA: the ha/ Component adds 3 replicas, anti-affinity and a PodDisruptionBudget, nothing else", async () => {
  const [component] = await loadFile("ha/kustomization.yaml");
  assert.equal(component.object.apiVersion, "kustomize.config.k8s.io/v1alpha1");
  assert.equal(component.object.kind, "Component");
  const { docs } = await standalone();
  const built = await buildOverlay(
    `resources:\n  - BASE\ncomponents:\n  - BASE/ha\n${IMAGE_OVERRIDE}`,
  );
  const image = "registry.example.com/dapr-tools/sentry:0.1.0";
  const ha = built.find((object) => object.kind === "Deployment")!;
  const template = checkDeployment(ha, "ha", image);
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
  const pdb = built.find((object) => object.kind === "PodDisruptionBudget")!;
  assert.deepEqual(
    pdb,
    only(await loadAll(), "PodDisruptionBudget", "ha/poddisruptionbudget.yaml"),
  );
  assert.equal(pdb.apiVersion, "policy/v1");
  assert.deepEqual(pdb.spec.selector, ha.spec.selector);
  const allowedDown = pdb.spec.maxUnavailable ?? ha.spec.replicas - pdb.spec.minAvailable;
  assert.ok(allowedDown >= 1 && allowedDown < ha.spec.replicas / 2, `PDB allows ${allowedDown}`);

  // Apart from replicas, strategy and affinity (and the PDB), the set is the standalone one.
  const strip = (deployment: Obj) => {
    const copy = structuredClone(deployment);
    delete copy.spec.replicas;
    delete copy.spec.strategy;
    delete copy.spec.template.spec.affinity;
    copy.spec.template.spec.containers[0].image = IMAGE_TOKEN;
    return copy;
  };
  const single = only(docs, "Deployment");
  assert.deepEqual(strip(ha), strip(single), "ha/ changes more than replicas and placement");
  assert.deepEqual(
    built.filter((object) => object.kind !== "PodDisruptionBudget").map(id).sort(),
    docs.map((doc) => id(doc.object)).sort(),
  );
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

/** What sentry calls in its namespace (src/stores/kubernetes.ts). */
const ROLE_GRANTS = [
  // The trust bundle Secret: read, update, watch by name (list + watch with a field
  // selector); create, which cannot be restricted by name, only at first start.
  ...["get", "update", "list", "watch"].map((verb) => `|secrets|${verb}|${TRUST_BUNDLE}`),
  "|secrets|create|*",
  // The trust anchors ConfigMap: read, repaired (update), created; never watched.
  ...["get", "update"].map((verb) => `|configmaps|${verb}|${TRUST_BUNDLE}`),
  "|configmaps|create|*",
].sort();

/** What the KUBERNETES validator calls cluster-wide (src/identity/kubernetes*.ts). */
const CLUSTER_ROLE_GRANTS = [
  "authentication.k8s.io|tokenreviews|create|*",
  "|pods|list|*",
  "dapr.io|configurations|get|*",
].sort();

Deno.test("RBAC: exactly the calls sentry makes; secrets only by name; bound to dapr-sentry", async () => {
  const { docs } = await standalone();
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

Deno.test("RBAC is enough: sentry with the Deployment's args, on a bare cluster, creates the bundle, watches it, signs; nothing refused", async () => {
  const { docs } = await standalone();
  await using api = await FakeKubeApiServer.start();
  const work = await tempDir();
  await using _cleanup = { [Symbol.asyncDispose]: () => Deno.remove(work, { recursive: true }) };
  // The Deployment's command line and environment, its service account's token allowed only
  // what the standalone Role and ClusterRole grant; started once /healthz answers 200.
  const sentry = await startChartSentry(api, docs.map((doc) => doc.object as KubeObject));
  try {
    const livez = await fetch(`http://127.0.0.1:${sentry.ports.health}/livez`);
    await livez.body?.cancel();
    assert.equal(livez.status, 200, "/livez, the liveness probe's path");

    // Created at first start, anchors in both.
    const secret = api.get("secrets", NS, TRUST_BUNDLE);
    const configMap = api.get("configmaps", NS, TRUST_BUNDLE);
    assert.ok(secret && configMap, "the Secret and ConfigMap were created");
    const anchors = atob((secret.data as Record<string, string>)["ca.crt"]);
    assert.match(anchors, /BEGIN CERTIFICATE/);
    assert.equal((configMap.data as Record<string, string>)["ca.crt"], anchors);
    // The Secret is watched (no GET polling fallback), with the name-restricted grant.
    await api.waitForWatches(1, "secrets");

    // A sidecar in namespace default: TokenReview, its pod, a certificate.
    api.put("pods", "default", {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "app-pod", namespace: "default", annotations: { "dapr.io/app-id": "app" } },
      spec: { serviceAccountName: "app-sa", containers: [] },
    });
    const appToken = api.serviceAccountJwt({
      namespace: "default",
      serviceAccount: "app-sa",
      podName: "app-pod",
      audiences: ["dapr.io/sentry", "spiffe://cluster.local/ns/dapr-system/dapr-sentry"],
    });
    const signed = await signOnce(sentry.ports.grpc, anchors, work, {
      id: "app",
      namespace: "default",
      token: appToken,
      tokenValidator: 2, // KUBERNETES
    });
    assert.match(signed.workloadCertificate.toString("utf8"), /BEGIN CERTIFICATE/);
    assert.equal(signed.trustChainCertificates.map(String).join(""), anchors);

    // Not one request was refused, and no fallback was needed.
    const refused = api.requests.filter((request) => request.status === 403);
    assert.deepEqual(refused.map((r) => `${r.method} ${r.path}`), [], "requests refused by RBAC");
    assert.doesNotMatch(sentry.logs(), /cannot list\/watch|reading it with GET/);
    assert.doesNotMatch(sentry.logs(), /"level":"(error|fatal)"/);
  } finally {
    assert.equal(await sentry.stop(), 0, "sentry stops cleanly");
  }
});

// ---------------------------------------------------------------------------------------------
// Dapr's chart: the add-on Role, and the names the standalone set shares with the chart

/** The chart renders some objects without a namespace (Helm fills in the release's). */
const chartId = (object: Obj) =>
  id(
    CLUSTER_SCOPED.has(object.kind) || object.metadata.namespace
      ? object
      : { ...object, metadata: { ...object.metadata, namespace: NS } },
  );

Deno.test("Dapr's chart: chart-secret-watch.yaml adds list/watch of the Secret by name under its own names; the standalone set shares the chart's", async () => {
  const chart = await renderDaprChart() as Obj[];
  const chartIds = new Set(chart.map(chartId));

  // The add-on: a Role + RoleBinding the chart does not have, granting only list/watch of
  // the trust bundle Secret by name to the chart's dapr-sentry ServiceAccount.
  const addOn = (await loadFile("chart-secret-watch.yaml")).map((doc) => doc.object);
  assert.deepEqual(addOn.map((object) => object.kind).sort(), ["Role", "RoleBinding"]);
  for (const object of addOn) assert.ok(!chartIds.has(id(object)), `${id(object)} is the chart's`);
  const role = addOn.find((object) => object.kind === "Role")!;
  assert.deepEqual(grants(role.rules, "add-on Role"), [
    `|secrets|list|${TRUST_BUNDLE}`,
    `|secrets|watch|${TRUST_BUNDLE}`,
  ]);
  const request = (verb: string, name?: string) => ({
    verb,
    group: "",
    resource: "secrets",
    namespace: NS,
    name,
  });
  const chartOnly = grantFor(chart, NS, "dapr-sentry");
  const withAddOn = grantFor([...chart, ...addOn], NS, "dapr-sentry");
  for (const verb of ["list", "watch"]) {
    assert.ok(authorize(chartOnly, request(verb, TRUST_BUNDLE)), `the chart alone refuses ${verb}`);
    assert.equal(authorize(withAddOn, request(verb, TRUST_BUNDLE)), undefined, `add-on: ${verb}`);
    assert.ok(authorize(withAddOn, request(verb)), `still no ${verb} of every Secret`);
  }

  // The standalone set uses the chart's names for everything but the Namespace: hence the
  // rule "never apply it where the chart is installed" (kustomization.yaml, docs).
  const { docs } = await standalone();
  const shared = docs.map((doc) => id(doc.object)).filter((key) => chartIds.has(key)).sort();
  assert.deepEqual(shared, [
    "ClusterRole/dapr-sentry",
    "ClusterRoleBinding/dapr-sentry",
    `Deployment/${NS}/dapr-sentry`,
    `Role/${NS}/dapr-sentry`,
    `RoleBinding/${NS}/dapr-sentry`,
    `Service/${NS}/dapr-sentry`,
    `ServiceAccount/${NS}/dapr-sentry`,
  ]);
});

Deno.test("docs/kubernetes.md: every Helm value it sets exists in Dapr's chart; its sentry commands parse", async () => {
  const guide = await Deno.readTextFile(join(ROOT, "docs", "kubernetes.md"));
  const { chartDir } = await daprBinaries();
  const values = parseDocs(await Deno.readTextFile(join(chartDir, "values.yaml")), "values")[0]
    .object;
  const sentryValues = parseDocs(
    await Deno.readTextFile(join(chartDir, "charts", "dapr_sentry", "values.yaml")),
    "dapr_sentry values",
  )[0].object;
  const keys = [...guide.matchAll(/--set(?:-file)?[ =]([a-zA-Z_.]+)=/g)].map((match) => match[1]);
  assert.ok(keys.includes("dapr_sentry.image.name"), "the guide sets dapr_sentry.image.name");
  for (const key of new Set(keys)) {
    const [first, ...rest] = key.split(".");
    let node: unknown = first === "dapr_sentry" ? sentryValues : values;
    for (const part of first === "dapr_sentry" ? rest : [first, ...rest]) {
      assert.ok(node && typeof node === "object" && part in node, `${key} is a value of the chart`);
      node = (node as Obj)[part];
    }
  }

  // `sentry init` commands (continuation lines joined): the init command's flags accept them.
  const commands = guide.replaceAll(/\\\n\s*/g, "").split("\n")
    .map((line) => line.trim()).filter((line) => line.startsWith("sentry init "));
  assert.ok(
    commands.some((command) => / --store k8s .*--force/.test(command)),
    "the guide shows `sentry init --store k8s ... --force`",
  );
  for (const command of commands) {
    const argv = command.replace(/\s+#.*$/, "").split(/\s+/).slice(2);
    const parsed = parseFlags(INIT_COMMAND.flags, argv);
    assert.deepEqual(parsed.positionals, [], command);
    assert.equal(parsed.values.namespace, NS, command);
    // Into the cluster's Secret only on purpose.
    if (parsed.values.store === "k8s") assert.equal(parsed.values.force, true, command);
    // Dapr's chart's control-plane trust domain; init's own default is "localhost".
    assert.equal(parsed.values["trust-domain"], "cluster.local", command);
  }
});

// ---------------------------------------------------------------------------------------------
// Optional Configuration and CRD

Deno.test("optional Configuration daprsystem: 24h / 15m through sentry's parser; the CRD matches; the overlay switches to it", async () => {
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

  // The overlay of docs/kubernetes.md#tunable-mtls-settings: one arg appended, which wins
  // over `--config=` (the last occurrence of a flag counts).
  const built = await buildOverlay(`resources:
  - BASE
${IMAGE_OVERRIDE}patches:
  - target:
      kind: Deployment
      name: dapr-sentry
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --config=daprsystem
`);
  const args = built.find((object) => object.kind === "Deployment")!.spec.template.spec
    .containers[0].args;
  assert.equal(parseFlags(SERVE_FLAGS, args).values.config, "daprsystem");
  const guide = await Deno.readTextFile(join(ROOT, "docs", "kubernetes.md"));
  assert.ok(guide.includes("value: --config=daprsystem"), "the guide shows this patch");
});

// ---------------------------------------------------------------------------------------------
// kubectl against the fake API server

Deno.test("kubectl: `create` installs the set on a bare cluster, and changes nothing where the chart's objects exist; the optional Configuration reads back", async () => {
  // The fake API server serves core kinds and configurations.dapr.io (not Deployments, RBAC or
  // CRDs), so only those documents go through the real client here.
  const dir = await tempDir();
  await using _cleanup = { [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
  const kubectlFor = async (server: FakeKubeApiServer, name: string) => {
    const kubeconfig = await server.writeKubeconfig(join(dir, name));
    return (args: string[]) =>
      run("kubectl", ["--kubeconfig", kubeconfig, "--cache-dir", join(dir, "cache"), ...args], {
        HOME: dir,
      });
  };
  const files = (...names: string[]) => names.flatMap((file) => ["-f", join(DIR, file)]);
  const firstInstall = [
    "create",
    "--save-config",
    ...files("namespace.yaml", "serviceaccount.yaml"),
  ];

  // A bare cluster: the first install goes through.
  {
    await using server = await FakeKubeApiServer.start();
    const kubectl = await kubectlFor(server, "bare");
    const created = await kubectl([...firstInstall, "-o", "name"]);
    assert.equal(created.code, 0, `kubectl create failed:\n${created.stderr}`);
    assert.deepEqual(created.stdout.trim().split("\n").sort(), [
      "namespace/dapr-system",
      "serviceaccount/dapr-sentry",
    ]);
    const account = server.get("serviceaccounts", NS, "dapr-sentry");
    assert.equal(account?.automountServiceAccountToken, true);
    assert.equal(account?.metadata?.labels?.app, "dapr-sentry");
    // Later changes of a standalone install: `apply` over what `create --save-config` made.
    const applied = await kubectl(["apply", ...files("namespace.yaml", "serviceaccount.yaml")]);
    assert.equal(applied.code, 0, `kubectl apply failed:\n${applied.stderr}`);
    assert.doesNotMatch(applied.stderr, /missing the kubectl.kubernetes.io\/last-applied/);

    // The optional Configuration: applied, then read back as sentry reads it.
    const configured = await kubectl(["apply", ...files("configuration.yaml")]);
    assert.equal(configured.code, 0, `kubectl apply failed:\n${configured.stderr}`);
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
  }

  // A cluster where Dapr's chart is installed: its namespace and ServiceAccount, as Helm
  // leaves them. The same first-install command fails and changes nothing.
  {
    await using server = await FakeKubeApiServer.start();
    const kubectl = await kubectlFor(server, "helm");
    server.put("serviceaccounts", NS, {
      apiVersion: "v1",
      kind: "ServiceAccount",
      metadata: {
        name: "dapr-sentry",
        namespace: NS,
        labels: { "app.kubernetes.io/managed-by": "Helm" },
        annotations: { "meta.helm.sh/release-name": "dapr", "meta.helm.sh/release-namespace": NS },
      },
    });
    const before = {
      namespaces: server.list("namespaces"),
      serviceaccounts: server.list("serviceaccounts"),
    };
    assert.ok(before.namespaces.some((object) => object.metadata?.name === NS));
    const refused = await kubectl(firstInstall);
    assert.notEqual(refused.code, 0, "kubectl create must fail where the objects exist");
    assert.match(refused.stderr, /namespaces "dapr-system" already exists/);
    assert.match(refused.stderr, /serviceaccounts "dapr-sentry" already exists/);
    assert.deepEqual(
      {
        namespaces: server.list("namespaces"),
        serviceaccounts: server.list("serviceaccounts"),
      },
      before,
      "left untouched",
    );
  }
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
