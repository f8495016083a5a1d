/**
 * Dapr's own Helm chart (v1.18.3, `charts/dapr` of the pinned Dapr module) for the tests:
 * rendered by the real Helm CLI (tests/helm), read (objects, pod templates, flags), installed
 * into a cluster as `helm install` would (the fake API server or a real kube-apiserver:
 * tests/helpers/chart_cluster.ts), and OUR sentry started exactly as the chart's `dapr-sentry`
 * container (the rendered command line and environment, the service-account token limited to
 * what the rendered Role and ClusterRole grant; only the ports move to free ones so that tests
 * can run side by side).
 *
 * @module
 */
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import type { FakeKubeApiServer, KubeObject } from "../fakes/kube-apiserver.ts";
import { asChartCluster, type ChartCluster } from "./chart_cluster.ts";
import { daprBinaries } from "./dapr_binaries.ts";
import { eventually } from "./eventually.ts";
import { freePort, sentryCommand, tempDir } from "./sentry_process.ts";
import { terminate } from "./processes.ts";

/** Sentry's (and the control plane's) namespace, as `helm install -n dapr-system`. */
export const NS = "dapr-system";
/** The chart's `global.mtls.controlPlaneTrustDomain`. */
export const TRUST_DOMAIN = "cluster.local";
/** The sentry image the tests render the chart with: the one value changed. */
export const SENTRY_IMAGE = "registry.example/dapr-tools/sentry:test";
/** The name of the chart's Secret and ConfigMap holding the trust bundle. */
export const TRUST_BUNDLE = "dapr-trust-bundle";

/** A container of a rendered pod template (the fields used here). */
export interface ChartContainer {
  name: string;
  image: string;
  command: string[];
  args: string[];
  env?: {
    name: string;
    value?: string;
    valueFrom?: { fieldRef?: { fieldPath: string } };
  }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  livenessProbe?: { httpGet?: { path: string; port: number } };
  readinessProbe?: { httpGet?: { path: string; port: number } };
}

/** What a rendered Deployment/StatefulSet says about its pods. */
export interface ChartPod {
  kind: string;
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  serviceAccountName: string;
  container: ChartContainer;
  /** The audience of the projected `dapr-identity-token` volume, if the pod has one. */
  tokenAudience?: string;
  /** Where the container mounts each volume, by volume name. */
  mounts: Record<string, string>;
}

/**
 * `helm template dapr <Dapr's chart> --namespace dapr-system --set
 * dapr_sentry.image.name=<SENTRY_IMAGE> [extra]`, parsed.
 */
export async function renderDaprChart(extra: string[] = []): Promise<KubeObject[]> {
  const { helm, chartDir } = await daprBinaries();
  const home = await tempDir("helm-home-");
  try {
    const out = await new Deno.Command(helm, {
      args: [
        "template",
        "dapr",
        chartDir,
        "--namespace",
        NS,
        "--set",
        `dapr_sentry.image.name=${SENTRY_IMAGE}`,
        ...extra,
      ],
      env: { HELM_CACHE_HOME: join(home, "cache"), HELM_CONFIG_HOME: join(home, "config") },
    }).output();
    if (!out.success) throw new Error(`helm template: ${new TextDecoder().decode(out.stderr)}`);
    return parseAllDocuments(new TextDecoder().decode(out.stdout))
      .map((doc) => doc.toJS())
      .filter(Boolean) as KubeObject[];
  } finally {
    await Deno.remove(home, { recursive: true });
  }
}

/** The rendered `kind`/`name` object (throws when the chart has none). */
export function chartObject(docs: KubeObject[], kind: string, name: string): KubeObject {
  const found = docs.find((doc) => doc.kind === kind && doc.metadata?.name === name);
  if (!found) throw new Error(`the rendered chart has no ${kind} ${name}`);
  return found;
}

/** The pod template of the rendered workload `kind`/`name` and its first container. */
export function chartPod(docs: KubeObject[], kind: string, name: string): ChartPod {
  // deno-lint-ignore no-explicit-any
  const template = (chartObject(docs, kind, name) as any).spec.template;
  const container = template.spec.containers[0] as ChartContainer;
  // deno-lint-ignore no-explicit-any
  const volumes = (template.spec.volumes ?? []) as any[];
  const token = volumes.find((volume) => volume.name === "dapr-identity-token");
  const audience = token?.projected?.sources?.[0]?.serviceAccountToken?.audience;
  return {
    kind,
    name,
    labels: template.metadata.labels ?? {},
    annotations: template.metadata.annotations ?? {},
    serviceAccountName: template.spec.serviceAccountName,
    container,
    ...(typeof audience === "string" ? { tokenAudience: audience } : {}),
    mounts: Object.fromEntries(
      (container.volumeMounts ?? []).map((mount) => [mount.name, mount.mountPath]),
    ),
  };
}

/**
 * `args` with `--flag` set to `value`, whether it was given as `--flag value` or
 * `--flag=value`; appended when absent.
 */
export function withFlag(args: string[], flag: string, value: string): string[] {
  const out = [...args];
  const joined = out.findIndex((arg) => arg.startsWith(`${flag}=`));
  if (joined >= 0) {
    out[joined] = `${flag}=${value}`;
    return out;
  }
  const separate = out.indexOf(flag);
  if (separate >= 0) {
    out[separate + 1] = value;
    return out;
  }
  return [...out, `${flag}=${value}`];
}

/** The value of `--flag` in `args` (either form), or undefined. */
export function flagValue(args: string[], flag: string): string | undefined {
  const joined = args.find((arg) => arg.startsWith(`${flag}=`));
  if (joined) return joined.slice(flag.length + 1);
  const separate = args.indexOf(flag);
  return separate >= 0 ? args[separate + 1] : undefined;
}

/** Kubernetes' `$(VAR)` expansion of container arguments from the container's environment. */
export function expandArgs(args: string[], env: Record<string, string>): string[] {
  return args.map((arg) =>
    arg.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name) => env[name] ?? whole)
  );
}

/** The container's environment as the kubelet sets it (fieldRef `metadata.namespace` only). */
export function containerEnv(container: ChartContainer): Record<string, string> {
  const env: Record<string, string> = {};
  for (const variable of container.env ?? []) {
    if (variable.valueFrom?.fieldRef?.fieldPath === "metadata.namespace") env[variable.name] = NS;
    else if (variable.value !== undefined) env[variable.name] = variable.value;
  }
  return env;
}

/** `object` as `helm install` stores it: Helm's ownership label and annotations added. */
export function installedByHelm(object: KubeObject): KubeObject {
  const copy = structuredClone(object);
  copy.metadata ??= {};
  copy.metadata.labels = { ...copy.metadata.labels, "app.kubernetes.io/managed-by": "Helm" };
  copy.metadata.annotations = {
    ...copy.metadata.annotations,
    "meta.helm.sh/release-name": "dapr",
    "meta.helm.sh/release-namespace": NS,
  };
  copy.metadata.namespace ??= NS;
  return copy;
}

/**
 * Puts into `api` what `helm install` creates that sentry reads: the (empty unless TLS values
 * were rendered) Secret and ConfigMap `dapr-trust-bundle` and the `daprsystem` Configuration
 * (on a real server its CRD must be installed first: `installDaprCrds`; the namespace is
 * created when missing).
 */
export async function installSentryObjects(
  api: FakeKubeApiServer | ChartCluster,
  docs: KubeObject[],
): Promise<void> {
  const cluster = asChartCluster(api);
  if (cluster.kind === "real" && !(await cluster.get("namespaces", "", NS))) {
    await cluster.put("namespaces", "", {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: NS },
    });
  }
  await cluster.put("secrets", NS, installedByHelm(chartObject(docs, "Secret", TRUST_BUNDLE)));
  await cluster.put(
    "configmaps",
    NS,
    installedByHelm(chartObject(docs, "ConfigMap", TRUST_BUNDLE)),
  );
  await cluster.put(
    "configurations",
    NS,
    installedByHelm(chartObject(docs, "Configuration", "daprsystem")),
  );
}

/** Our sentry, running as the chart's `dapr-sentry` container. */
export interface ChartSentry {
  pod: ChartPod;
  ports: { grpc: number; health: number; metrics: number };
  /** Its API token (limited by the chart's RBAC), for checking what it may do. */
  apiToken: string;
  /** Everything it wrote so far (stdout and stderr). */
  logs(): string;
  /** SIGTERM, then waits for the exit (SIGKILL after `graceMs`); returns the exit code. */
  stop(graceMs?: number): Promise<number>;
}

/**
 * Starts our sentry with the rendered `dapr-sentry` container's command line and environment,
 * the pod's service-account token limited by the chart's RBAC (on a real server: the rendered
 * ServiceAccount, Role, ClusterRole and bindings created, a TokenRequest token bound to a
 * `dapr-sentry` pod; kubeconfig in `KUBECONFIG`), and waits for `/healthz` 200. The ports alone
 * are moved to free ones.
 */
export async function startChartSentry(
  api: FakeKubeApiServer | ChartCluster,
  docs: KubeObject[],
): Promise<ChartSentry> {
  const cluster = asChartCluster(api);
  const pod = chartPod(docs, "Deployment", "dapr-sentry");
  const token = await cluster.apiToken(
    docs,
    NS,
    pod.serviceAccountName,
    "dapr-sentry-5d9c7b8f4-x2x9q",
  );
  const work = await tempDir("chart-sentry-");
  const kubeconfig = await cluster.writeKubeconfig(join(work, "kubeconfig"), token);
  const ports = { grpc: await freePort(), health: await freePort(), metrics: await freePort() };
  const [program, ...prefix] = sentryCommand();
  const child = new Deno.Command(program, {
    args: [
      ...prefix,
      ...pod.container.args,
      `--port=${ports.grpc}`,
      `--healthz-port=${ports.health}`,
      `--metrics-port=${ports.metrics}`,
    ],
    env: { ...containerEnv(pod.container), KUBECONFIG: kubeconfig },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let logs = "";
  const collecting = Promise.all([child.stdout, child.stderr].map(async (stream) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) logs += chunk;
  }));
  let exit: Promise<number> | undefined;
  const stop = (graceMs = 10_000) => {
    exit ??= (async () => {
      const { code } = await terminate(child, graceMs);
      await collecting;
      await Deno.remove(work, { recursive: true });
      return code;
    })();
    return exit;
  };
  try {
    await eventually("sentry's /healthz answers 200", async () => {
      const response = await fetch(`http://127.0.0.1:${ports.health}/healthz`).catch(() => null);
      await response?.body?.cancel();
      return response?.status === 200;
    }, 30_000);
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n${logs}`, { cause: error });
  }
  return { pod, ports, apiToken: token, logs: () => logs, stop };
}
