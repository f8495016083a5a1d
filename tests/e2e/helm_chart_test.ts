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
import { FakeKubeApiServer, type KubeObject } from "../fakes/kube-apiserver.ts";
import {
  chartObject,
  installSentryObjects,
  NS,
  renderDaprChart,
  SENTRY_IMAGE,
  startChartSentry,
  TRUST_BUNDLE,
} from "../helpers/dapr_chart.ts";
import { eventually } from "../helpers/eventually.ts";
import { signOnce } from "../helpers/grpc_client.ts";
import { metric } from "../helpers/metrics.ts";
import { openssl, opensslIssuer, opensslRoot } from "../helpers/openssl.ts";
import { tempDir } from "../helpers/sentry_process.ts";

/** `helm upgrade` of an object: the new manifest's data over the live object's. */
function upgradeByHelm(api: FakeKubeApiServer, kind: string, rendered: KubeObject): void {
  const live = api.get(kind, NS, TRUST_BUNDLE)!;
  api.put(kind, NS, {
    ...live,
    data: { ...(live.data as Record<string, string>), ...(rendered.data as object) },
  });
}

function secretText(api: FakeKubeApiServer, key: string): string {
  const data = api.get("secrets", NS, TRUST_BUNDLE)?.data as Record<string, string> | undefined;
  return Buffer.from(data?.[key] ?? "", "base64").toString("utf8");
}

Deno.test("Dapr's Helm chart with only the sentry image changed: RBAC, Secret and ConfigMap, metrics at /, sidecar certificates, renew-certificate", async () => {
  const docs = await renderDaprChart();
  const work = await tempDir();
  const api = await FakeKubeApiServer.start();
  try {
    installSentryObjects(api, docs);
    const sentry = await startChartSentry(api, docs);
    const { container, annotations } = sentry.pod;
    const ports = sentry.ports;
    const logs = () => sentry.logs();
    assert.equal(container.image, SENTRY_IMAGE);
    assert.deepEqual(container.command, ["/sentry"]);
    assert.ok(container.args.includes("--mode") && container.args.includes("kubernetes"));
    assert.ok(!container.args.some((arg) => arg.startsWith("--store")), "the chart names no store");
    assert.equal(annotations["prometheus.io/path"], "/");
    assert.equal(container.livenessProbe?.httpGet?.path, "/healthz");
    try {
      // The Secret Helm created is filled, the ConfigMap carries the anchors, Helm's metadata stays.
      const anchors = secretText(api, "ca.crt");
      assert.match(anchors, /BEGIN CERTIFICATE/);
      assert.match(secretText(api, "issuer.key"), /PRIVATE KEY/);
      const configMap = api.get("configmaps", NS, TRUST_BUNDLE)!;
      assert.equal((configMap.data as Record<string, string>)["ca.crt"], anchors);
      for (const object of [api.get("secrets", NS, TRUST_BUNDLE)!, configMap]) {
        assert.equal(object.metadata?.labels?.["app.kubernetes.io/managed-by"], "Helm");
        assert.equal(object.metadata?.labels?.app, "dapr-sentry");
        assert.equal(object.metadata?.annotations?.["meta.helm.sh/release-name"], "dapr");
      }

      // RBAC: only list/watch of secrets were refused, and said once in the log.
      await eventually(
        "the refused Secret watch is logged",
        () => /cannot list\/watch .*secrets\/dapr-trust-bundle/.test(logs()),
      );
      const refused = api.requests.filter((request) => request.status === 403);
      assert.ok(refused.length >= 1, "the chart's Role grants no list/watch on secrets");
      for (const request of refused) {
        assert.ok(request.method === "GET" && request.path.endsWith("/secrets"), request.path);
      }
      assert.equal(
        logs().match(/cannot list\/watch .*secrets\/dapr-trust-bundle/g)?.length,
        1,
        logs(),
      );
      assert.doesNotMatch(logs(), /level=fatal/);

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
      const upgraded = await renderDaprChart([
        "--set-file",
        `dapr_sentry.tls.root.certPEM=${root.certPath}`,
        "--set-file",
        `dapr_sentry.tls.issuer.certPEM=${join(work, "issuer.crt")}`,
        "--set-file",
        `dapr_sentry.tls.issuer.keyPEM=${join(work, "issuer.key")}`,
      ]);
      upgradeByHelm(api, "secrets", chartObject(upgraded, "Secret", TRUST_BUNDLE));
      upgradeByHelm(api, "configmaps", chartObject(upgraded, "ConfigMap", TRUST_BUNDLE));
      const newRoot = await Deno.readTextFile(root.certPath);
      await eventually(
        "the running sentry reloads the renewed bundle (GET polling)",
        () => /trust bundle reloaded/.test(logs()),
        25_000,
      );
      await verify(newRoot);
      assert.equal(
        secretText(api, "ca.crt").trim(),
        newRoot.trim(),
        "Helm's values are used as is",
      );
    } finally {
      assert.equal(await sentry.stop(), 0, logs());
    }
    assert.match(logs(), /sentry stopped/);
  } finally {
    await api.close();
  }
});
