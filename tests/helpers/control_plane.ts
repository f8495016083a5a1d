/**
 * Runs Dapr's real control-plane programs (placement, scheduler, sidecar injector, operator;
 * v1.18.3, built by tests/dapr/build.sh) the way Dapr's Helm chart runs them, against OUR
 * sentry in Kubernetes mode and the fake API server (tests/fakes/kube-apiserver.ts), for
 * tests/e2e/control_plane_test.ts, or a real kube-apiserver (tests/helpers/real_kube_apiserver.ts,
 * {@link startRealControlPlaneCluster}) for tests/e2e/real_cluster_test.ts.
 *
 * A "pod" here is the program in its own mount namespace (`unshare -m`, as root, which the
 * tests are) with what the chart's pod template mounts, then run as the non-root user 65532
 * (`setpriv`; the chart sets `runAsNonRoot`, and Dapr refuses root in Kubernetes mode):
 *
 * - a tmpfs over `/run` (so `/var/run/...` paths are made inside the namespace only, the host's
 *   `/run` is never written), holding
 *   - `/var/run/secrets/dapr.io/sentrytoken/token`: the projected service-account token with
 *     the chart's audience (`spiffe://cluster.local/ns/dapr-system/dapr-sentry`), registered
 *     with the fake's TokenReview (on a real server: a TokenRequest token bound to the pod), for
 *     the pod object put into the cluster with the chart's annotations
 *     (`dapr.io/control-plane: <svc>`) and service account;
 *   - `/var/run/secrets/dapr.io/tls/ca.crt`: the `dapr-trust-bundle` ConfigMap our sentry fills;
 *   - `/var/run/secrets/kubernetes.io/serviceaccount`: the in-cluster API credentials (a token
 *     allowed exactly what the chart's Role/ClusterRole grant the service account, through the
 *     fake's RBAC or, on a real server, its own RBAC with the rendered objects created), with
 *     `KUBERNETES_SERVICE_HOST/PORT` pointing at the API server (or at a {@link ApiFront} in
 *     front of the fake);
 *   - writable directories the chart gives the container (volumes, emptyDirs);
 * - `/etc/hosts` mapping the Service names the chart's arguments use (`dapr-sentry.dapr-system
 *   .svc.cluster.local`, the scheduler's etcd peers) to 127.0.0.1, so the rendered
 *   `--sentry-address` and `--etcd-initial-cluster` are kept; only ports move to free ones.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { FakeKubeApiServer, type KubeObject } from "../fakes/kube-apiserver.ts";
import { jsonPatch } from "../fakes/kube-store.ts";
import { type ChartCluster, fakeCluster, installDaprCrds, realCluster } from "./chart_cluster.ts";
import { daprBinaries } from "./dapr_binaries.ts";
import { eventually } from "./eventually.ts";
import { opensslServerTls } from "./openssl.ts";
import { type RealKubeApiServer, startRealKubeApiServer } from "./real_kube_apiserver.ts";
import { tempDir } from "./sentry_process.ts";
import {
  chartObject,
  type ChartPod,
  chartPod,
  type ChartSentry,
  expandArgs,
  flagValue,
  installSentryObjects,
  NS,
  renderDaprChart,
  startChartSentry,
  TRUST_DOMAIN,
  withFlag,
} from "./dapr_chart.ts";
import { terminate } from "./processes.ts";

export {
  chartObject,
  chartPod,
  expandArgs,
  flagValue,
  NS,
  renderDaprChart,
  TRUST_DOMAIN,
  withFlag,
};

/** The host of the chart's `--sentry-address` (its port, 443, is replaced). */
export const SENTRY_HOST = `dapr-sentry.${NS}.svc.cluster.local`;
/** The user the pods run as (Dapr's images are `nonroot`, the chart's fsGroup). */
export const POD_USER = 65532;

/** The API server (fake or real), our sentry in Kubernetes mode, and the rendered chart. */
export interface ControlPlaneCluster<Api = FakeKubeApiServer> {
  api: Api;
  /** The same API server as a {@link ChartCluster}. */
  kube: ChartCluster;
  /** Our sentry, run as the chart's `dapr-sentry` container (its RBAC included). */
  sentry: ChartSentry & { grpcPort: number; metricsPort: number };
  docs: KubeObject[];
  /** A directory removed by {@link close}. */
  work: string;
  /** The `dapr-trust-bundle` ConfigMap's `ca.crt` (what the chart mounts into every pod). */
  anchors(): string;
  /** The ConfigMap volume: a directory holding `ca.crt`, readable by the pods. */
  trustBundleDir: string;
  /** The anchors as a file, for tlscheck. */
  anchorsFile: string;
  /** How many `signed certificate for <spiffeId>` lines sentry logged. */
  signedFor(spiffeId: string): number;
  /** Stops sentry and the API server, removes {@link work}. */
  close(): Promise<void>;
}

/**
 * Starts the fake API server holding what `helm install` creates that sentry reads (the
 * `daprsystem` Configuration), and our sentry with `--mode kubernetes` (debug log, so each
 * signature is logged) against it; waits for the trust bundle ConfigMap.
 */
export async function startControlPlaneCluster(): Promise<ControlPlaneCluster> {
  const api = await FakeKubeApiServer.start();
  return await controlPlaneOn(api, fakeCluster(api), () => api.close());
}

/**
 * As {@link startControlPlaneCluster} on a real kube-apiserver + etcd, with all of the chart's
 * CRDs (`crds/`) installed first, as `helm install` does.
 */
export async function startRealControlPlaneCluster(): Promise<
  ControlPlaneCluster<RealKubeApiServer>
> {
  const server = await startRealKubeApiServer();
  try {
    const kube = realCluster(server);
    await installDaprCrds(kube, (await daprBinaries()).chartDir);
    return await controlPlaneOn(server, kube, () => server.close());
  } catch (error) {
    await server.close();
    throw error;
  }
}

async function controlPlaneOn<Api>(
  api: Api,
  kube: ChartCluster,
  closeApi: () => Promise<void>,
): Promise<ControlPlaneCluster<Api>> {
  // Debug logging (a chart value) makes sentry log each signature.
  const docs = await renderDaprChart(["--set", "dapr_sentry.logLevel=debug"]);
  const work = await tempDir("control-plane-");
  await Deno.chmod(work, 0o755);
  let sentry: ChartSentry | undefined;
  try {
    await installSentryObjects(kube, docs);
    sentry = await startChartSentry(kube, docs);
    let filled = "";
    await eventually("sentry fills the dapr-trust-bundle ConfigMap", async () => {
      const configMap = await kube.get("configmaps", NS, "dapr-trust-bundle");
      filled = String((configMap?.data as Record<string, string> | undefined)?.["ca.crt"] ?? "");
      return filled.includes("BEGIN CERTIFICATE");
    }, 10_000);
    const anchors = () => filled;
    const trustBundleDir = join(work, "trust-bundle");
    await Deno.mkdir(trustBundleDir, { mode: 0o755 });
    await Deno.writeTextFile(join(trustBundleDir, "ca.crt"), anchors(), { mode: 0o644 });
    const anchorsFile = join(trustBundleDir, "ca.crt");
    const running = sentry;
    return {
      api,
      kube,
      sentry: { ...running, grpcPort: running.ports.grpc, metricsPort: running.ports.metrics },
      docs,
      work,
      anchors,
      trustBundleDir,
      anchorsFile,
      signedFor: (spiffeId) =>
        running.logs().split("\n").filter((line) =>
          line.includes(`signed certificate for ${spiffeId}`)
        ).length,
      async close() {
        await running.stop();
        await closeApi();
        await Deno.remove(work, { recursive: true });
      },
    };
  } catch (error) {
    await sentry?.stop();
    await closeApi();
    await Deno.remove(work, { recursive: true });
    throw error;
  }
}

/** The audience of the pod's projected sentry token (every control-plane pod has one). */
function requiredAudience(pod: ChartPod): string {
  if (!pod.tokenAudience) throw new Error(`${pod.kind} ${pod.name}: no dapr-identity-token`);
  return pod.tokenAudience;
}

/** Options of {@link startPod}. */
export interface PodOptions {
  /** The rendered pod template. */
  pod: ChartPod;
  /** The pod's name (`metadata.name`, e.g. `dapr-placement-server-0`). */
  podName: string;
  /** The program (a binary of {@link daprBinaries}). */
  program: string;
  /** Its arguments (the rendered ones, `$(VAR)`-expanded and with ports changed). */
  args: string[];
  /** Environment besides the rendered container's. */
  env?: Record<string, string>;
  /** Extra `/etc/hosts` names resolving to 127.0.0.1 (the sentry Service name always does). */
  hosts?: string[];
  /** In-cluster API credentials for the pod's service account (restricted by the chart's RBAC). */
  apiAccess?: boolean;
  /** Where the pod's API client connects (default: the API server itself), and its CA. */
  apiEndpoint?: { port: number; caPem: string };
  /** Directories made writable for the pod user, at these paths (under /var/run or /tmp). */
  writable?: string[];
  /** Extra token audiences (default: the chart's projected one). */
  tokenAudiences?: string[];
}

/** A control-plane program started by {@link startPod}. */
export interface RunningPod {
  name: string;
  /** Everything it wrote (stdout and stderr). */
  logs(): string;
  /** Its exit status once it exited. */
  exited(): Deno.CommandStatus | undefined;
  /** The pod's `/tmp` on the host (the chart's writable emptyDir). */
  tmpDir: string;
  /**
   * The host path of the pod's `path` under `/tmp`, following symbolic links as the pod sees
   * them (Dapr writes its identity directory as a link to an absolute `/tmp/...` path).
   */
  tmpPath(path: string): string;
  /** Waits until `GET http://127.0.0.1:<port>/healthz` answers 200; throws with its logs. */
  waitHealthy(port: number, timeoutMs?: number): Promise<void>;
  /** SIGTERM, SIGKILL after `graceMs`; the exit code. Safe to call twice. */
  stop(graceMs?: number): Promise<number>;
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/**
 * Puts the pod into the cluster, writes its projected sentry token, and starts the program in
 * its own mount namespace as the chart's pod would see it (see the module documentation).
 */
export async function startPod(
  cluster: ControlPlaneCluster<unknown>,
  options: PodOptions,
): Promise<RunningPod> {
  const { kube, docs } = cluster;
  const { pod, podName } = options;
  const root = join(cluster.work, podName);
  await Deno.mkdir(root, { mode: 0o755 });

  const sentryToken = await kube.podToken(
    {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: podName,
        namespace: NS,
        labels: pod.labels,
        annotations: pod.annotations,
      },
      spec: {
        serviceAccountName: pod.serviceAccountName,
        automountServiceAccountToken: false,
        containers: [{ name: pod.container.name, image: pod.container.image }],
      },
    },
    options.tokenAudiences ?? [requiredAudience(pod)],
    600,
  );
  const mounts: { path: string; source: string }[] = [];
  const tokenDir = join(root, "sentrytoken");
  await Deno.mkdir(tokenDir, { mode: 0o755 });
  await Deno.writeTextFile(join(tokenDir, "token"), sentryToken, { mode: 0o644 });
  mounts.push({ path: pod.mounts["dapr-identity-token"], source: tokenDir });
  if (pod.mounts["dapr-trust-bundle"]) {
    mounts.push({ path: pod.mounts["dapr-trust-bundle"], source: cluster.trustBundleDir });
  }

  // DAPR_HOST_IP stands for the pod IP Dapr otherwise finds on the pod's interface: these pods
  // share the host's network, which in `deno task test:binary` is a namespace with loopback only.
  const env: Record<string, string> = { PATH: "/usr/bin:/bin", DAPR_HOST_IP: "127.0.0.1" };
  for (const variable of pod.container.env ?? []) {
    const field = variable.valueFrom?.fieldRef?.fieldPath;
    if (field === "metadata.name") env[variable.name] = podName;
    else if (field === "metadata.namespace") env[variable.name] = NS;
    else if (field === "status.podIP") env[variable.name] = "127.0.0.1";
    else if (variable.value !== undefined) env[variable.name] = variable.value;
  }
  if (options.apiAccess) {
    const apiToken = await kube.apiToken(docs, NS, pod.serviceAccountName, podName);
    const saDir = join(root, "serviceaccount");
    await Deno.mkdir(saDir, { mode: 0o755 });
    await Deno.writeTextFile(join(saDir, "token"), apiToken, { mode: 0o644 });
    await Deno.writeTextFile(join(saDir, "namespace"), NS, { mode: 0o644 });
    await Deno.writeTextFile(join(saDir, "ca.crt"), options.apiEndpoint?.caPem ?? kube.caPem, {
      mode: 0o644,
    });
    await Deno.chmod(saDir, 0o755);
    mounts.push({ path: "/var/run/secrets/kubernetes.io/serviceaccount", source: saDir });
    env.KUBERNETES_SERVICE_HOST = "127.0.0.1";
    env.KUBERNETES_SERVICE_PORT = String(options.apiEndpoint?.port ?? kube.port);
  }
  Object.assign(env, options.env ?? {});

  const hostsFile = join(root, "hosts");
  await Deno.writeTextFile(
    hostsFile,
    ["127.0.0.1 localhost", ...[SENTRY_HOST, ...(options.hosts ?? [])].map((h) => `127.0.0.1 ${h}`)]
      .join("\n") + "\n",
    { mode: 0o644 },
  );
  const tmpDir = join(root, "tmp");
  await Deno.mkdir(tmpDir);
  await Deno.chown(tmpDir, POD_USER, POD_USER);

  const script = [
    "set -e",
    "mount -t tmpfs -o mode=0755 pod-run /run",
    ...mounts.flatMap(({ path, source }) => [
      `mkdir -p ${shellQuote(path)}`,
      `mount --bind ${shellQuote(source)} ${shellQuote(path)}`,
    ]),
    ...(options.writable ?? []).filter((path) => !path.startsWith("/tmp")).flatMap((path) => [
      `mkdir -p ${shellQuote(path)}`,
      `chown ${POD_USER}:${POD_USER} ${shellQuote(path)}`,
    ]),
    `mount --bind ${shellQuote(hostsFile)} /etc/hosts`,
    // Last: the sources above may live under the host's /tmp.
    `mount --bind ${shellQuote(tmpDir)} /tmp`,
    `exec setpriv --reuid=${POD_USER} --regid=${POD_USER} --clear-groups --no-new-privs -- "$@"`,
  ].join("\n");
  const child = new Deno.Command("unshare", {
    args: [
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      script,
      "pod",
      options.program,
      ...options.args,
    ],
    clearEnv: true,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  let logs = "";
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) logs += decoder.decode(chunk, { stream: true });
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let status: Deno.CommandStatus | undefined;
  const statusPromise = child.status.then((s) => (status = s));

  return {
    name: podName,
    logs: () => logs,
    exited: () => status,
    tmpDir,
    tmpPath: (path) => resolveInPodTmp(tmpDir, path),
    async waitHealthy(port: number, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      while (true) {
        if (status) {
          await collecting;
          throw new Error(`${podName} exited with code ${status.code}:\n${logs}`);
        }
        const response = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined);
        await response?.body?.cancel();
        if (response?.status === 200) return;
        if (Date.now() > deadline) {
          throw new Error(`${podName}: /healthz did not answer 200 in ${timeoutMs} ms:\n${logs}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    async stop(graceMs = 10_000) {
      if (!status) await terminate(child, graceMs);
      await statusPromise;
      await collecting;
      return status!.code;
    },
  };
}

function resolveInPodTmp(tmpDir: string, path: string): string {
  let parts = path.split("/").filter(Boolean);
  for (let hops = 0; hops < 40; hops++) {
    if (parts[0] !== "tmp") throw new Error(`${path} is not under the pod's /tmp`);
    let host = tmpDir;
    let relinked = false;
    for (let i = 1; i < parts.length; i++) {
      host = join(host, parts[i]);
      const info = Deno.lstatSync(host);
      if (!info.isSymlink) continue;
      const target = Deno.readLinkSync(host);
      const base = target.startsWith("/") ? [] : parts.slice(0, i);
      parts = [...base, ...target.split("/").filter(Boolean), ...parts.slice(i + 1)];
      relinked = true;
      break;
    }
    if (!relinked) return host;
  }
  throw new Error(`${path}: too many symbolic links`);
}

/** What tests/dapr/tlscheck printed. */
export interface TlsCheck {
  addr?: string;
  serverName?: string;
  verifiedDnsNames?: string[];
  verifiedSpiffeId?: string;
  dnsNames: string[];
  uris: string[];
  issuer: string;
  /** Go's name of the leaf's public key algorithm (`RSA`, `ECDSA`, `Ed25519`). */
  keyAlgorithm: string;
  notAfter: string;
  tlsVersion?: string;
  clientCertRequested: boolean;
}

/** Runs tests/dapr/tlscheck with `args`; throws its error text when it fails. */
export async function tlscheck(args: string[]): Promise<TlsCheck> {
  const { tlscheck } = await daprBinaries();
  const out = await new Deno.Command(tlscheck, { args, stdout: "piped", stderr: "piped" })
    .output();
  const decoder = new TextDecoder();
  if (!out.success) throw new Error(decoder.decode(out.stderr).trim());
  return JSON.parse(decoder.decode(out.stdout));
}

/**
 * The API server applies JSON patches with evanphx/json-patch v4, whose `replace` of a missing
 * object member sets it (RFC 6902 says it fails): the injector's patch of an absent `caBundle`
 * relies on that. As `add` of an object member does the same, such ops are rewritten.
 */
function apiServerReplace(operations: unknown): unknown {
  if (!Array.isArray(operations)) return operations;
  return operations.map((operation) =>
    operation?.op === "replace" && !/\/\d+$/.test(String(operation.path))
      ? { ...operation, op: "add" }
      : operation
  );
}

/** The REST path of a cluster-scoped object of the fake's missing groups, from its apiVersion. */
function clusterObjectPath(object: KubeObject): string {
  const plural = `${object.kind!.toLowerCase()}s`;
  return `/apis/${object.apiVersion}/${plural}/${object.metadata!.name}`;
}

/**
 * A thin HTTPS front for the fake API server that also serves a few cluster-scoped objects of
 * groups the fake does not serve (admissionregistration.k8s.io, apiextensions.k8s.io) which
 * the control plane patches with its trust anchors: GET and JSON/merge PATCH of each, recorded.
 * Every other request is passed to the fake unchanged (with the caller's bearer token, so the
 * fake's RBAC still applies).
 */
export class ApiFront {
  /** The served objects as last written, by REST path. */
  readonly objects = new Map<string, KubeObject>();
  /** The PATCH bodies received, oldest first, with their paths. */
  readonly patches: { path: string; body: unknown }[] = [];
  readonly #server: Deno.HttpServer;
  readonly #client: Deno.HttpClient;
  readonly port: number;
  readonly caPem: string;

  private constructor(server: Deno.HttpServer, client: Deno.HttpClient, caPem: string) {
    this.#server = server;
    this.#client = client;
    this.port = (server.addr as Deno.NetAddr).port;
    this.caPem = caPem;
  }

  /** Serves `objects` (cluster-scoped) in front of `api`. */
  static async start(api: FakeKubeApiServer, objects: KubeObject[]): Promise<ApiFront> {
    const tls = await opensslServerTls("api-front");
    const client = Deno.createHttpClient({ caCerts: [api.caPem] });
    // deno-lint-ignore prefer-const
    let front: ApiFront;
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, cert: tls.certPem, key: tls.keyPem, onListen() {} },
      async (request) => {
        const url = new URL(request.url);
        const served = front.objects.get(url.pathname);
        if (served) {
          if (request.method === "PATCH") {
            const body = await request.json();
            front.patches.push({ path: url.pathname, body });
            const type = request.headers.get("content-type") ?? "";
            front.objects.set(
              url.pathname,
              type.includes("json-patch")
                ? jsonPatch(served, apiServerReplace(body)) as KubeObject
                : { ...served, ...body },
            );
          } else if (request.method !== "GET") {
            return Response.json({ kind: "Status", code: 405 }, { status: 405 });
          }
          return Response.json(front.objects.get(url.pathname));
        }
        const upstream = await fetch(`${api.url}${url.pathname}${url.search}`, {
          method: request.method,
          headers: request.headers,
          body: request.body,
          client,
        });
        return new Response(upstream.body, {
          status: upstream.status,
          headers: upstream.headers,
        });
      },
    );
    front = new ApiFront(server, client, tls.caPem);
    for (const object of objects) {
      front.objects.set(clusterObjectPath(object), structuredClone(object));
    }
    return front;
  }

  /** The object served for `kind`/`name`. */
  get(kind: string, name: string): KubeObject | undefined {
    return [...this.objects.values()].find((o) => o.kind === kind && o.metadata?.name === name);
  }

  async close(): Promise<void> {
    await this.#server.shutdown();
    this.#client.close();
  }
}

/** A PEM caBundle (base64 in the object) decoded. */
export function decodeCaBundle(encoded: unknown): string {
  return Buffer.from(String(encoded ?? ""), "base64").toString("utf8");
}
