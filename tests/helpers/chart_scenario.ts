/**
 * The Helm chart scenario, run against any {@link ChartCluster} (the fake API server in
 * tests/e2e/helm_chart_test.ts, a real kube-apiserver in tests/e2e/real_cluster_test.ts):
 * Dapr's chart rendered with only the sentry image changed, what `helm install` creates that
 * sentry reads put into the cluster, our sentry run as the chart's `dapr-sentry` container with
 * an API token limited by the rendered RBAC. Checked: the empty Secret and ConfigMap Helm
 * created are filled and keep Helm's metadata; list/watch of secrets is refused to sentry's
 * token (the chart grants none) and sentry says so once and polls with GET instead (no crash);
 * metrics at `/` as the chart's Prometheus annotation says; a sidecar pod's projected token gets
 * a certificate that openssl verifies against the ConfigMap's anchors; `dapr mtls
 * renew-certificate` (a `helm upgrade --reuse-values` with new certificates) reaches the running
 * server.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import type { KubeObject } from "../fakes/kube-apiserver.ts";
import type { ChartCluster } from "./chart_cluster.ts";
import {
  chartObject,
  installSentryObjects,
  NS,
  renderDaprChart,
  SENTRY_IMAGE,
  startChartSentry,
  TRUST_BUNDLE,
} from "./dapr_chart.ts";
import { eventually } from "./eventually.ts";
import { signOnce } from "./grpc_client.ts";
import { metric } from "./metrics.ts";
import { openssl, opensslIssuer, opensslRoot } from "./openssl.ts";
import { tempDir } from "./sentry_process.ts";

/** The sidecar's projected-token audiences, as Dapr's injector sets them. */
export const SIDECAR_AUDIENCES = [
  "dapr.io/sentry",
  `spiffe://cluster.local/ns/${NS}/dapr-sentry`,
];

/** `helm upgrade` of an object: the new manifest's data over the live object's. */
async function upgradeByHelm(
  cluster: ChartCluster,
  resource: string,
  rendered: KubeObject,
): Promise<void> {
  const live = (await cluster.get(resource, NS, TRUST_BUNDLE))!;
  await cluster.put(resource, NS, {
    ...live,
    data: { ...(live.data as Record<string, string>), ...(rendered.data as object) },
  });
}

async function secretText(cluster: ChartCluster, key: string): Promise<string> {
  const secret = await cluster.get("secrets", NS, TRUST_BUNDLE);
  const data = secret?.data as Record<string, string> | undefined;
  return Buffer.from(data?.[key] ?? "", "base64").toString("utf8");
}

/** What {@link chartScenario} measured. */
export interface ChartScenarioResult {
  /** Sentry's whole log. */
  logs: string;
  /** Milliseconds from `helm install`'s objects to sentry's /healthz 200. */
  startMs: number;
  /** Milliseconds from the renewed Secret and ConfigMap to sentry's reload. */
  reloadMs: number;
}

/** Runs the chart scenario (see the module documentation) against `cluster`. */
export async function chartScenario(cluster: ChartCluster): Promise<ChartScenarioResult> {
  const docs = await renderDaprChart();
  const work = await tempDir();
  try {
    const started = Date.now();
    await installSentryObjects(cluster, docs);
    const sentry = await startChartSentry(cluster, docs);
    const startMs = Date.now() - started;
    let reloadMs = 0;
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
      // The Secret Helm created is filled, the ConfigMap carries the anchors, Helm's metadata
      // stays.
      await eventually(
        "sentry fills the Secret",
        async () => /BEGIN CERTIFICATE/.test(await secretText(cluster, "ca.crt")),
      );
      const anchors = await secretText(cluster, "ca.crt");
      assert.match(await secretText(cluster, "issuer.key"), /PRIVATE KEY/);
      const configMap = (await cluster.get("configmaps", NS, TRUST_BUNDLE))!;
      assert.equal((configMap.data as Record<string, string>)["ca.crt"], anchors);
      for (const object of [(await cluster.get("secrets", NS, TRUST_BUNDLE))!, configMap]) {
        assert.equal(object.metadata?.labels?.["app.kubernetes.io/managed-by"], "Helm");
        assert.equal(object.metadata?.labels?.app, "dapr-sentry");
        assert.equal(object.metadata?.annotations?.["meta.helm.sh/release-name"], "dapr");
      }

      // RBAC: list/watch of secrets is refused to sentry's token, said once in the log; the
      // token gets its Secret by name, no other Secret, and may watch its ConfigMap.
      await eventually(
        "the refused Secret watch is logged",
        () => /cannot list\/watch .*secrets\/dapr-trust-bundle/.test(logs()),
      );
      if (cluster.fake) {
        // The fake logs requests: sentry's refused ones were list/watch of secrets only (before
        // the probes below add their own).
        const refused = cluster.fake.requests.filter((request) =>
          request.status === 403 && request.token === sentry.apiToken
        );
        assert.ok(refused.length >= 1, "the chart's Role grants no list/watch on secrets");
        for (const request of refused) {
          assert.ok(request.method === "GET" && request.path.endsWith("/secrets"), request.path);
        }
      }
      const secrets = `/api/v1/namespaces/${NS}/secrets`;
      const configMaps = `/api/v1/namespaces/${NS}/configmaps`;
      const asSentry = (path: string) => cluster.request("GET", path, sentry.apiToken);
      assert.equal((await asSentry(`${secrets}/${TRUST_BUNDLE}`)).status, 200);
      assert.equal((await asSentry(`${secrets}/other-secret`)).status, 403);
      const byName = `fieldSelector=metadata.name%3D${TRUST_BUNDLE}`;
      assert.equal((await asSentry(`${secrets}?${byName}`)).status, 403);
      assert.equal((await asSentry(`${secrets}?${byName}&watch=1`)).status, 403);
      assert.equal((await asSentry(`${configMaps}?${byName}&watch=1`)).status, 200);
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
      const appToken = await cluster.podToken(
        {
          apiVersion: "v1",
          kind: "Pod",
          metadata: {
            name: "app-pod",
            namespace: "default",
            annotations: { "dapr.io/app-id": "myapp" },
          },
          spec: {
            serviceAccountName: "app-sa",
            containers: [{ name: "app", image: "app:test" }],
          },
        },
        SIDECAR_AUDIENCES,
      );
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
      // The same token for another app ID is refused: the pod's annotation decides.
      await assert.rejects(
        signOnce(ports.grpc, anchors, work, {
          id: "otherapp",
          namespace: "default",
          token: appToken,
          tokenValidator: 2,
        }),
      );

      // `dapr mtls renew-certificate`: a helm upgrade with --reuse-values and new certificates
      // (the user's guide's --set-file values), which rewrites the Secret's and ConfigMap's data.
      const root = await opensslRoot(join(work));
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
      const renewed = Date.now();
      await upgradeByHelm(cluster, "secrets", chartObject(upgraded, "Secret", TRUST_BUNDLE));
      await upgradeByHelm(cluster, "configmaps", chartObject(upgraded, "ConfigMap", TRUST_BUNDLE));
      const newRoot = await Deno.readTextFile(root.certPath);
      await eventually(
        "the running sentry reloads the renewed bundle (GET polling)",
        () => /trust bundle reloaded/.test(logs()),
        25_000,
      );
      reloadMs = Date.now() - renewed;
      await verify(newRoot);
      assert.equal(
        (await secretText(cluster, "ca.crt")).trim(),
        newRoot.trim(),
        "Helm's values are used as is",
      );
    } finally {
      assert.equal(await sentry.stop(), 0, logs());
    }
    assert.match(logs(), /sentry stopped/);
    return { logs: logs(), startMs, reloadMs };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}
