/**
 * End to end: Dapr's own Helm chart (v1.18.3, rendered by the real Helm CLI from the pinned
 * Dapr module; tests/dapr/build.sh) with only the sentry image changed. Our binary runs with
 * exactly the rendered sentry container's command line and environment (the ports moved to
 * free ones so that tests run side by side) against the fake API server holding what
 * `helm install` creates, and restricted by RBAC to what the rendered Role and ClusterRole
 * grant the `dapr-sentry` service account (tests/fakes/kube-rbac.ts). Checked: the empty
 * Secret and ConfigMap Helm created are filled and keep Helm's metadata; where the chart grants
 * no list/watch on secrets, one log line and GET polling instead (no crash loop); metrics at
 * `/` as the chart's Prometheus annotation says; sidecars get certificates and trust anchors
 * (KUBERNETES validator); `dapr mtls renew-certificate` (a `helm upgrade --reuse-values` with
 * new certificates, as the Dapr CLI does it) reaches the running server.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { daprBinaries } from "../helpers/dapr_binaries.ts";
import { eventually } from "../helpers/eventually.ts";
import { signOnce } from "../helpers/grpc_client.ts";
import { metric } from "../helpers/metrics.ts";
import { openssl, opensslIssuer, opensslRoot } from "../helpers/openssl.ts";
import { freePort, sentryCommand, tempDir } from "../helpers/sentry_process.ts";
import { FakeKubeApiServer, type KubeObject } from "../fakes/kube-apiserver.ts";
import { grantFor } from "../fakes/kube-rbac.ts";

const NS = "dapr-system";
const NAME = "dapr-trust-bundle";
const IMAGE = "registry.example/dapr-tools/sentry:test";

interface Container {
  image: string;
  command: string[];
  args: string[];
  env: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
  livenessProbe: { httpGet: { path: string; port: number } };
}

/** `helm template dapr <Dapr's chart> --namespace dapr-system` with `extra` flags, parsed. */
async function renderChart(extra: string[] = []): Promise<KubeObject[]> {
  const { helm, chartDir } = await daprBinaries();
  const out = await new Deno.Command(helm, {
    args: [
      "template",
      "dapr",
      chartDir,
      "--namespace",
      NS,
      "--set",
      `dapr_sentry.image.name=${IMAGE}`,
      ...extra,
    ],
    env: { HELM_CACHE_HOME: await tempDir(), HELM_CONFIG_HOME: await tempDir() },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return parseAllDocuments(text).map((doc) => doc.toJS()).filter(Boolean) as KubeObject[];
}

function find(docs: KubeObject[], kind: string, name: string): KubeObject {
  const found = docs.find((doc) => doc.kind === kind && doc.metadata?.name === name);
  assert.ok(found, `${kind} ${name} in the rendered chart`);
  return found;
}

/** The sentry container and its pod template's annotations. */
function sentryPod(docs: KubeObject[]) {
  // deno-lint-ignore no-explicit-any
  const template = (find(docs, "Deployment", "dapr-sentry") as any).spec.template;
  const container = (template.spec.containers as (Container & { name: string })[])
    .find((c) => c.name === "dapr-sentry");
  assert.ok(container);
  return { container, annotations: template.metadata.annotations as Record<string, string> };
}

/** What `helm install` adds to every object it creates. */
function installedByHelm(object: KubeObject): KubeObject {
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

/** `helm upgrade` of an object: the new manifest's data over the live object's. */
function upgradeByHelm(api: FakeKubeApiServer, kind: string, rendered: KubeObject): void {
  const live = api.get(kind, NS, NAME)!;
  api.put(kind, NS, {
    ...live,
    data: { ...(live.data as Record<string, string>), ...(rendered.data as object) },
  });
}

function secretText(api: FakeKubeApiServer, key: string): string {
  const data = api.get("secrets", NS, NAME)?.data as Record<string, string> | undefined;
  return Buffer.from(data?.[key] ?? "", "base64").toString("utf8");
}

Deno.test("Dapr's Helm chart with only the sentry image changed: RBAC, Secret and ConfigMap, metrics at /, sidecar certificates, renew-certificate", async () => {
  const docs = await renderChart();
  const { container, annotations } = sentryPod(docs);
  assert.equal(container.image, IMAGE);
  assert.deepEqual(container.command, ["/sentry"]);
  assert.ok(container.args.includes("--mode") && container.args.includes("kubernetes"));
  assert.ok(!container.args.some((arg) => arg.startsWith("--store")), "the chart names no store");
  assert.equal(annotations["prometheus.io/path"], "/");
  assert.equal(container.livenessProbe.httpGet.path, "/healthz");

  const work = await tempDir();
  const api = await FakeKubeApiServer.start();
  try {
    // What `helm install` created: the empty Secret and ConfigMap, the Configuration.
    for (const [kind, plural] of [["Secret", "secrets"], ["ConfigMap", "configmaps"]]) {
      api.put(plural, NS, installedByHelm(find(docs, kind, NAME)));
    }
    api.put("configurations", NS, installedByHelm(find(docs, "Configuration", "daprsystem")));
    // The pod's service-account token, allowed only what the chart's RBAC grants.
    const token = api.serviceAccountJwt({
      namespace: NS,
      serviceAccount: "dapr-sentry",
      podName: "dapr-sentry-5d9c7b8f4-x2x9q",
      audiences: ["https://kubernetes.default.svc.cluster.local"],
    });
    api.restrictToken(token, grantFor(docs, NS, "dapr-sentry"));
    const kubeconfig = await api.writeKubeconfig(join(work, "kubeconfig"), { token });

    // The rendered command line and environment; only the ports move to free ones.
    const ports = { grpc: await freePort(), health: await freePort(), metrics: await freePort() };
    const env: Record<string, string> = { KUBECONFIG: kubeconfig };
    for (const variable of container.env) {
      if (variable.valueFrom?.fieldRef?.fieldPath === "metadata.namespace") env[variable.name] = NS;
      else if (variable.value !== undefined) env[variable.name] = variable.value;
    }
    assert.equal(env.NAMESPACE, NS);
    const [program, ...prefix] = sentryCommand();
    const child = new Deno.Command(program, {
      args: [
        ...prefix,
        ...container.args,
        `--port=${ports.grpc}`,
        `--healthz-port=${ports.health}`,
        `--metrics-port=${ports.metrics}`,
      ],
      env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let logs = "";
    const collecting = Promise.all([child.stdout, child.stderr].map(async (stream) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) logs += chunk;
    }));
    try {
      await eventually("sentry's /healthz answers 200", async () => {
        const response = await fetch(`http://127.0.0.1:${ports.health}/healthz`).catch(() => null);
        await response?.body?.cancel();
        return response?.status === 200;
      }, 30_000).catch((error) => {
        throw new Error(`${error.message}\n${logs}`);
      });

      // The Secret Helm created is filled, the ConfigMap carries the anchors, Helm's metadata stays.
      const anchors = secretText(api, "ca.crt");
      assert.match(anchors, /BEGIN CERTIFICATE/);
      assert.match(secretText(api, "issuer.key"), /PRIVATE KEY/);
      const configMap = api.get("configmaps", NS, NAME)!;
      assert.equal((configMap.data as Record<string, string>)["ca.crt"], anchors);
      for (const object of [api.get("secrets", NS, NAME)!, configMap]) {
        assert.equal(object.metadata?.labels?.["app.kubernetes.io/managed-by"], "Helm");
        assert.equal(object.metadata?.labels?.app, "dapr-sentry");
        assert.equal(object.metadata?.annotations?.["meta.helm.sh/release-name"], "dapr");
      }

      // RBAC: only list/watch of secrets were refused, and said once in the log.
      await eventually(
        "the refused Secret watch is logged",
        () => /cannot list\/watch .*secrets\/dapr-trust-bundle/.test(logs),
      );
      const refused = api.requests.filter((request) => request.status === 403);
      assert.ok(refused.length >= 1, "the chart's Role grants no list/watch on secrets");
      for (const request of refused) {
        assert.ok(request.method === "GET" && request.path.endsWith("/secrets"), request.path);
      }
      assert.equal(logs.match(/cannot list\/watch .*secrets\/dapr-trust-bundle/g)?.length, 1, logs);
      assert.doesNotMatch(logs, /level=fatal/);

      // Metrics where the chart's annotation sends Prometheus.
      const scraped = await (await fetch(`http://127.0.0.1:${ports.metrics}/`)).text();
      assert.ok(metric(scraped, "dapr_sentry_issuercert_expiry_timestamp") > Date.now() / 1000);
      assert.ok(metric(scraped, "process_start_time_seconds") > 0);

      // A sidecar in namespace default gets a certificate that chains to the ConfigMap's anchors.
      api.put("pods", "default", {
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          name: "app-pod",
          namespace: "default",
          annotations: { "dapr.io/app-id": "myapp" },
        },
        spec: { serviceAccountName: "app-sa", containers: [] },
      });
      const appToken = api.serviceAccountJwt({
        namespace: "default",
        serviceAccount: "app-sa",
        podName: "app-pod",
        audiences: ["dapr.io/sentry", "spiffe://cluster.local/ns/dapr-system/dapr-sentry"],
      });
      const verify = async (trusted: string) => {
        const signed = await signOnce(ports.grpc, trusted, work, {
          id: "myapp",
          namespace: "default",
          token: appToken,
          tokenValidator: 2,
        });
        const chain = signed.workloadCertificate.toString("utf8");
        await Deno.writeTextFile(join(work, "anchors.pem"), trusted);
        await Deno.writeTextFile(join(work, "chain.pem"), chain);
        const leaf = chain.slice(0, chain.indexOf("-----END CERTIFICATE-----") + 25) + "\n";
        await Deno.writeTextFile(join(work, "leaf.pem"), leaf);
        await openssl([
          "verify",
          "-CAfile",
          join(work, "anchors.pem"),
          "-untrusted",
          join(work, "chain.pem"),
          join(work, "leaf.pem"),
        ]);
        return signed.trustChainCertificates.map((pem) => pem.toString("utf8")).join("");
      };
      await verify(anchors);

      // `dapr mtls renew-certificate`: a helm upgrade with --reuse-values and new certificates
      // (the user's guide's --set-file values), which rewrites the Secret's and ConfigMap's data.
      const root = await opensslRoot(await tempDir());
      const issuer = await opensslIssuer(root);
      await Deno.writeTextFile(join(work, "issuer.crt"), issuer.cert);
      await Deno.writeTextFile(join(work, "issuer.key"), issuer.key);
      const upgraded = await renderChart([
        "--set-file",
        `dapr_sentry.tls.root.certPEM=${root.certPath}`,
        "--set-file",
        `dapr_sentry.tls.issuer.certPEM=${join(work, "issuer.crt")}`,
        "--set-file",
        `dapr_sentry.tls.issuer.keyPEM=${join(work, "issuer.key")}`,
      ]);
      upgradeByHelm(api, "secrets", find(upgraded, "Secret", NAME));
      upgradeByHelm(api, "configmaps", find(upgraded, "ConfigMap", NAME));
      const newRoot = await Deno.readTextFile(root.certPath);
      await eventually(
        "the running sentry reloads the renewed bundle (GET polling)",
        () => /trust bundle reloaded/.test(logs),
        25_000,
      );
      await verify(newRoot);
      assert.equal(
        secretText(api, "ca.crt").trim(),
        newRoot.trim(),
        "Helm's values are used as is",
      );
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await collecting;
    }
    assert.match(logs, /sentry stopped/);
  } finally {
    await api.close();
  }
});
