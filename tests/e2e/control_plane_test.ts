/**
 * End to end: Dapr's real control-plane programs (v1.18.3: placement, scheduler, sidecar
 * injector, operator) get their certificates from OUR sentry running in Kubernetes mode
 * against the fake API server (the operator: against a real kube-apiserver + etcd,
 * tests/helpers/real_kube_apiserver.ts, as its controller-runtime manager needs API discovery
 * the fake does not serve; ignored, with the reason printed, only where Go cannot build it),
 * started the way Dapr's Helm chart starts them (the rendered
 * command line, environment, projected sentry token and trust-bundle volume; only ports move
 * to free ones; see tests/helpers/control_plane.ts for the pod sandbox). For each: the program
 * becomes healthy (which Dapr only reports once its security provider holds a certificate),
 * our sentry logged the signature for its SPIFFE ID, its server answers TLS with a chain to the
 * trust anchors and asks for client certificates (mTLS), and where Dapr's sentry adds DNS names
 * (injector, operator, scheduler) they verify with Go's crypto/tls and crypto/x509
 * (tests/dapr/tlscheck).
 */
import assert from "node:assert/strict";
import { daprBinaries } from "../helpers/dapr_binaries.ts";
import {
  ApiFront,
  chartObject,
  chartPod,
  type ControlPlaneCluster,
  decodeCaBundle,
  expandArgs,
  flagValue,
  NS,
  type RunningPod,
  SENTRY_HOST,
  startControlPlaneCluster,
  startPod,
  startRealControlPlaneCluster,
  type TlsCheck,
  tlscheck,
  TRUST_DOMAIN,
  withFlag,
} from "../helpers/control_plane.ts";
import { eventually } from "../helpers/eventually.ts";
import { installedByHelm } from "../helpers/dapr_chart.ts";
import { metric } from "../helpers/metrics.ts";
import { realKubeUnavailable } from "../helpers/real_kube_apiserver.ts";
import { freePort } from "../helpers/sentry_process.ts";

const spiffe = (id: string) => `spiffe://${TRUST_DOMAIN}/ns/${NS}/${id}`;

/** The rendered args with the sentry address at our sentry's port and the metrics port moved. */
async function commonArgs(cluster: ControlPlaneCluster, args: string[]) {
  const sentryAddress = flagValue(args, "--sentry-address");
  assert.equal(sentryAddress, `${SENTRY_HOST}:443`, "the chart's sentry address");
  let out = withFlag(args, "--sentry-address", `${SENTRY_HOST}:${cluster.sentry.grpcPort}`);
  out = withFlag(out, "--metrics-port", String(await freePort()));
  return out;
}

async function signSuccesses(cluster: ControlPlaneCluster): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${cluster.sentry.metricsPort}/`)).text();
  return metric(text, "dapr_sentry_cert_sign_success_total");
}

/** Runs `body` with a cluster, stopping every pod it started and the cluster afterwards. */
async function withCluster(
  body: (cluster: ControlPlaneCluster, pods: RunningPod[]) => Promise<void>,
) {
  const cluster = await startControlPlaneCluster();
  const pods: RunningPod[] = [];
  try {
    await body(cluster, pods);
  } finally {
    await Promise.all(pods.map((pod) => pod.stop()));
    await cluster.close();
  }
}

Deno.test("placement (chart's StatefulSet) gets its certificate from our sentry and serves mTLS", async () => {
  const { placement } = await daprBinaries();
  await withCluster(async (cluster, pods) => {
    const pod = chartPod(cluster.docs, "StatefulSet", "dapr-placement-server");
    assert.equal(pod.annotations["dapr.io/control-plane"], "placement");
    assert.deepEqual(pod.container.command, ["/placement"]);
    assert.equal(flagValue(pod.container.args, "--mode"), "kubernetes");
    const port = await freePort();
    const healthz = await freePort();
    let args = await commonArgs(cluster, pod.container.args);
    args = withFlag(args, "--port", String(port));
    args = withFlag(args, "--healthz-port", String(healthz));
    // The default raft peer is 127.0.0.1:8201; a free port lets tests run side by side.
    args = withFlag(args, "--initial-cluster", `dapr-placement-0=127.0.0.1:${await freePort()}`);
    const before = await signSuccesses(cluster);

    const running = await startPod(cluster, {
      pod,
      podName: "dapr-placement-server-0",
      program: placement,
      args,
    });
    pods.push(running);
    await running.waitHealthy(healthz);

    assert.equal(cluster.signedFor(spiffe("dapr-placement")), 1, cluster.sentry.logs());
    assert.ok(await signSuccesses(cluster) > before);
    assert.match(running.logs(), /Running in Kubernetes environment as user 65532/);

    const served = await tlscheck([
      "-ca",
      cluster.anchorsFile,
      "-addr",
      `127.0.0.1:${port}`,
      "-spiffe-id",
      spiffe("dapr-placement"),
    ]);
    assert.ok(served.clientCertRequested, "placement asks for a client certificate (mTLS)");
    assert.deepEqual(served.uris, [spiffe("dapr-placement")]);
    assert.deepEqual(served.dnsNames, [], "no DNS names for placement");
    // The check can fail: the same server is not the scheduler.
    await assert.rejects(
      tlscheck([
        "-ca",
        cluster.anchorsFile,
        "-addr",
        `127.0.0.1:${port}`,
        "-spiffe-id",
        spiffe("dapr-scheduler"),
      ]),
      /do not include/,
    );
  });
});

Deno.test("scheduler: three replicas of the chart's StatefulSet form their etcd cluster over mTLS with our DNS names", async () => {
  const { scheduler } = await daprBinaries();
  await withCluster(async (cluster, pods) => {
    const pod = chartPod(cluster.docs, "StatefulSet", "dapr-scheduler-server");
    assert.equal(pod.annotations["dapr.io/control-plane"], "scheduler");
    const initial = flagValue(pod.container.args, "--etcd-initial-cluster")!;
    const peers = initial.split(",").map((member) => {
      const [id, url] = member.split("=");
      return { id, url: new URL(url) };
    });
    assert.deepEqual(
      peers.map((peer) => peer.id),
      [0, 1, 2].map((i) => `dapr-scheduler-server-${i}`),
    );
    const dnsNames = peers.map((peer) => peer.url.hostname);
    assert.deepEqual(
      dnsNames,
      [0, 1, 2].map((i) =>
        `dapr-scheduler-server-${i}.dapr-scheduler-server.${NS}.svc.cluster.local`
      ),
    );
    // Each peer keeps its rendered URL but gets its own free port (all resolve to 127.0.0.1).
    for (const peer of peers) peer.url.port = String(await freePort());
    const cluster3 = peers.map((peer) => `${peer.id}=${peer.url.origin}`).join(",");
    const dataDir = flagValue(pod.container.args, "--etcd-data-dir")!;
    assert.match(dataDir, /^\/var\/run\/data\/dapr-scheduler\//);

    const replicas = await Promise.all(peers.map(async (peer) => {
      const ports = { grpc: await freePort(), healthz: await freePort(), client: await freePort() };
      let args = await commonArgs(cluster, pod.container.args);
      args = withFlag(args, "--etcd-initial-cluster", cluster3);
      args = withFlag(args, "--etcd-client-port", String(ports.client));
      args = withFlag(args, "--port", String(ports.grpc));
      args = withFlag(args, "--healthz-port", String(ports.healthz));
      args = expandArgs(args, { SCHEDULER_ID: peer.id });
      const running = await startPod(cluster, {
        pod,
        podName: peer.id,
        program: scheduler,
        args,
        apiAccess: true,
        hosts: dnsNames,
        writable: [pod.mounts["dapr-scheduler-data-dir"]],
      });
      pods.push(running);
      return { peer, ports, running };
    }));
    await Promise.all(replicas.map(({ running, ports }) => running.waitHealthy(ports.healthz)));

    assert.equal(cluster.signedFor(spiffe("dapr-scheduler")), 3, cluster.sentry.logs());
    // The three etcd members elect a leader, which needs the peers' mTLS to work (each checks
    // the other's certificate for the peer's DNS name and its client certificate's names).
    for (const { ports, running } of replicas) {
      await eventually(`etcd of ${running.name} has a leader`, async () => {
        const response = await fetch(`http://127.0.0.1:${ports.client}/health`).catch(() => null);
        const body = await response?.json().catch(() => null);
        return body?.health === "true";
      }, 60_000).catch((error) => {
        throw new Error(`${error.message}\n${running.logs()}`);
      });
      assert.match(running.logs(), /peer became active/);
      assert.doesNotMatch(
        running.logs(),
        /peer certificate does not contain the expected DNS name/,
      );
    }
    for (const { peer, ports, running } of replicas) {
      // The identity the scheduler wrote for its etcd (Dapr checks its own name is on it).
      const issued = await tlscheck([
        "-ca",
        cluster.anchorsFile,
        "-chain",
        running.tmpPath("/tmp/secrets/dapr.io/tls/cert.pem"),
        ...dnsNames.flatMap((name) => ["-dns", name]),
      ]);
      assert.deepEqual(issued.dnsNames, dnsNames);
      assert.deepEqual(issued.uris, [spiffe("dapr-scheduler")]);
      // etcd's peer port: crypto/tls verifies the served chain for the peer's DNS name.
      const etcdPeer = await tlscheck([
        "-ca",
        cluster.anchorsFile,
        "-addr",
        `127.0.0.1:${peer.url.port}`,
        "-server-name",
        peer.url.hostname,
      ]);
      assert.ok(etcdPeer.clientCertRequested, "etcd peers require client certificates");
      // The scheduler's gRPC API: SPIFFE mTLS.
      const api = await tlscheck([
        "-ca",
        cluster.anchorsFile,
        "-addr",
        `127.0.0.1:${ports.grpc}`,
        "-spiffe-id",
        spiffe("dapr-scheduler"),
      ]);
      assert.ok(api.clientCertRequested);
    }
    // Not a name on the certificate: the check can fail.
    await assert.rejects(
      tlscheck([
        "-ca",
        cluster.anchorsFile,
        "-addr",
        `127.0.0.1:${replicas[0].peer.url.port}`,
        "-server-name",
        `dapr-scheduler-server-3.dapr-scheduler-server.${NS}.svc.cluster.local`,
      ]),
      /certificate is valid for .*not dapr-scheduler-server-3/,
    );
  });
});

/**
 * The injector row, on the fake (`front` serves the MutatingWebhookConfiguration the fake
 * lacks) or on a real kube-apiserver (the rendered configuration created there).
 */
async function injectorRow(
  cluster: ControlPlaneCluster<unknown>,
  pods: RunningPod[],
  front?: ApiFront,
) {
  const { injector } = await daprBinaries();
  const pod = chartPod(cluster.docs, "Deployment", "dapr-sidecar-injector");
  assert.equal(pod.annotations["dapr.io/control-plane"], "injector");
  const service = chartObject(cluster.docs, "Service", "dapr-sidecar-injector");
  assert.equal(service.metadata?.namespace, NS);
  const webhookName = `dapr-sidecar-injector.${NS}.svc`;
  const sentryAddress = pod.container.env?.find((v) => v.name === "DAPR_SENTRY_ADDRESS");
  assert.equal(sentryAddress?.value, `${SENTRY_HOST}:443`);
  const port = await freePort();
  const healthz = await freePort();
  let args = withFlag(pod.container.args, "--metrics-port", String(await freePort()));
  args = withFlag(args, "--healthz-port", String(healthz));
  args = withFlag(args, "--port", String(port));
  const running = await startPod(cluster, {
    pod,
    podName: "dapr-sidecar-injector-6f8d9c7b5-k2x7q",
    program: injector,
    args,
    env: { DAPR_SENTRY_ADDRESS: `${SENTRY_HOST}:${cluster.sentry.grpcPort}` },
    apiAccess: true,
    ...(front ? { apiEndpoint: { port: front.port, caPem: front.caPem } } : {}),
  });
  pods.push(running);
  await running.waitHealthy(healthz);

  assert.equal(cluster.signedFor(spiffe("dapr-injector")), 1, cluster.sentry.logs());
  // What the API server checks when it calls the webhook at its Service name.
  const served = await tlscheck([
    "-ca",
    cluster.anchorsFile,
    "-addr",
    `127.0.0.1:${port}`,
    "-server-name",
    webhookName,
  ]);
  assert.deepEqual(served.dnsNames, [webhookName]);
  assert.deepEqual(served.uris, [spiffe("dapr-injector")]);
  assert.equal(served.keyAlgorithm, "RSA", "Dapr asks for an RSA key for webhook serving");
  assert.equal(served.clientCertRequested, false, "the API server calls webhooks without one");
  await assert.rejects(
    tlscheck([
      "-ca",
      cluster.anchorsFile,
      "-addr",
      `127.0.0.1:${port}`,
      "-server-name",
      `dapr-webhook.${NS}.svc`,
    ]),
    /not dapr-webhook/,
  );
  // The injector put our trust anchors into its webhook configuration's caBundle.
  await eventually("the injector patches the caBundle", async () => {
    const configuration = front
      ? front.get("MutatingWebhookConfiguration", "dapr-sidecar-injector")
      : await cluster.kube.get("mutatingwebhookconfigurations", "", "dapr-sidecar-injector");
    // deno-lint-ignore no-explicit-any
    const caBundle = (configuration as any)?.webhooks?.[0]?.clientConfig?.caBundle;
    return decodeCaBundle(caBundle) === cluster.anchors();
  }, 20_000).catch((error) => {
    throw new Error(`${error.message}\n${running.logs()}`);
  });
  if (front) assert.ok(front.patches.length > 0);
  assert.doesNotMatch(running.logs(), /forbidden/i);
}

Deno.test("sidecar injector: certificate from our sentry, webhook TLS verifies for dapr-sidecar-injector.dapr-system.svc, caBundle patched", async () => {
  await withCluster(async (cluster, pods) => {
    // The fake API server serves no admissionregistration group: a front serves the rendered
    // MutatingWebhookConfiguration (which the injector patches) and passes the rest on.
    const front = await ApiFront.start(cluster.api, [
      chartObject(cluster.docs, "MutatingWebhookConfiguration", "dapr-sidecar-injector"),
    ]);
    try {
      await injectorRow(cluster, pods, front);
    } finally {
      await front.close();
    }
  });
});

const realKube = await realKubeUnavailable();
if (realKube) console.log(`control_plane_test: the operator test is ignored: ${realKube}`);

Deno.test({
  name:
    "operator (the real binary, on a real kube-apiserver): certificate from our sentry, webhook TLS verifies for dapr-webhook.dapr-system.svc, CRD conversion caBundle patched",
  // Its controller-runtime manager needs API discovery (apps/v1, leases, CRDs) that the fake
  // does not serve ("failed to determine if *v1.Deployment is namespaced"): a real one.
  ignore: realKube !== undefined,
  async fn() {
    const { operator } = await daprBinaries();
    const cluster = await startRealControlPlaneCluster();
    const pods: RunningPod[] = [];
    try {
      const pod = chartPod(cluster.docs, "Deployment", "dapr-operator");
      assert.equal(pod.annotations["dapr.io/control-plane"], "operator");
      const service = chartObject(cluster.docs, "Service", "dapr-webhook");
      assert.equal(service.metadata?.namespace, NS);
      const webhookName = `dapr-webhook.${NS}.svc`;
      // What `helm install` creates besides the CRDs (installed) that the operator reads.
      for (const name of ["dapr-webhook", "dapr-api"]) {
        await cluster.kube.put(
          "services",
          NS,
          installedByHelm(chartObject(cluster.docs, "Service", name)),
        );
      }
      // The operator reads sentry's address from the `daprsystem` Configuration (the chart's
      // `global.mtls.sentryAddress`): the rendered one, with our sentry's port.
      const configuration = (await cluster.kube.get("configurations", NS, "daprsystem"))!;
      // deno-lint-ignore no-explicit-any
      const mtls = (configuration as any).spec.mtls;
      assert.equal(mtls.sentryAddress, `${SENTRY_HOST}:443`);
      mtls.sentryAddress = `${SENTRY_HOST}:${cluster.sentry.grpcPort}`;
      await cluster.kube.put("configurations", NS, configuration);

      const ports = {
        api: await freePort(),
        webhook: await freePort(),
        healthz: await freePort(),
      };
      let args = withFlag(pod.container.args, "--metrics-port", String(await freePort()));
      args = withFlag(args, "--healthz-port", String(ports.healthz));
      args = withFlag(args, "--port", String(ports.api));
      args = withFlag(args, "--webhook-server-port", String(ports.webhook));
      const running = await startPod(cluster, {
        pod,
        podName: "dapr-operator-7c9d6b5f8-p4m2n",
        program: operator,
        args,
        apiAccess: true,
      });
      pods.push(running);
      await running.waitHealthy(ports.healthz);
      assert.match(running.logs(), /Running in Kubernetes environment as user 65532/);
      assert.equal(cluster.signedFor(spiffe("dapr-operator")), 1, cluster.sentry.logs());

      // The webhook server (CRD conversion), as the API server calls it at its Service name.
      let served: TlsCheck | undefined;
      await eventually("the operator's webhook server answers TLS", async () => {
        if (running.exited()) throw new Error(running.logs());
        served = await tlscheck([
          "-ca",
          cluster.anchorsFile,
          "-addr",
          `127.0.0.1:${ports.webhook}`,
          "-server-name",
          webhookName,
        ]).catch(() => undefined);
        return served !== undefined;
      }, 30_000).catch((error) => {
        throw new Error(`${error.message}\n${running.logs()}`);
      });
      assert.deepEqual(served!.dnsNames, [webhookName]);
      assert.deepEqual(served!.uris, [spiffe("dapr-operator")]);
      assert.equal(served!.keyAlgorithm, "RSA", "Dapr asks for an RSA key for webhook serving");
      await assert.rejects(
        tlscheck([
          "-ca",
          cluster.anchorsFile,
          "-addr",
          `127.0.0.1:${ports.webhook}`,
          "-server-name",
          `dapr-sidecar-injector.${NS}.svc`,
        ]),
        /not dapr-sidecar-injector/,
      );
      // The operator's API (sidecars connect to it): SPIFFE mTLS.
      const api = await tlscheck([
        "-ca",
        cluster.anchorsFile,
        "-addr",
        `127.0.0.1:${ports.api}`,
        "-spiffe-id",
        spiffe("dapr-operator"),
      ]);
      assert.ok(api.clientCertRequested, "the operator's API asks for client certificates");

      // It put our trust anchors into the Subscription CRD's conversion webhook (a real PATCH
      // under real RBAC: the chart's ClusterRole grants get/patch on customresourcedefinitions).
      await eventually("the operator patches the CRD's conversion caBundle", async () => {
        const crd = await cluster.kube.get(
          "customresourcedefinitions",
          "",
          "subscriptions.dapr.io",
        );
        // deno-lint-ignore no-explicit-any
        const caBundle = (crd as any)?.spec?.conversion?.webhook?.clientConfig?.caBundle;
        return decodeCaBundle(caBundle) === cluster.anchors();
      }, 20_000);
      // And takes its leader lease with the chart's Role (leases named operator.dapr.io).
      await eventually(
        "the operator takes its lease",
        () => /successfully acquired lease dapr-system\/operator\.dapr\.io/.test(running.logs()),
        20_000,
      );
      assert.doesNotMatch(running.logs(), /forbidden/i);
    } finally {
      await Promise.all(pods.map((pod) => pod.stop()));
      await cluster.close();
    }
  },
});

Deno.test({
  name:
    "sidecar injector on a real kube-apiserver: certificate from our sentry, webhook TLS, caBundle of the real MutatingWebhookConfiguration patched",
  ignore: realKube !== undefined,
  async fn() {
    const cluster = await startRealControlPlaneCluster();
    const pods: RunningPod[] = [];
    try {
      await cluster.kube.put(
        "mutatingwebhookconfigurations",
        "",
        installedByHelm(
          chartObject(cluster.docs, "MutatingWebhookConfiguration", "dapr-sidecar-injector"),
        ),
      );
      await injectorRow(cluster, pods);
    } finally {
      await Promise.all(pods.map((pod) => pod.stop()));
      await cluster.close();
    }
  },
});
