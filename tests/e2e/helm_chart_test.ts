/**
 * End to end: Dapr's own Helm chart (v1.18.3, rendered by the real Helm CLI from the pinned
 * Dapr module; tests/dapr/build.sh) with only the sentry image changed. Our binary runs with
 * exactly the rendered sentry container's command line and environment (the ports moved to
 * free ones so that tests run side by side) against the fake API server holding what
 * `helm install` creates, and restricted by RBAC to what the rendered Role and ClusterRole
 * grant the `dapr-sentry` service account (tests/fakes/kube-rbac.ts). The scenario
 * (tests/helpers/chart_scenario.ts, also run against a real kube-apiserver by
 * tests/e2e/real_cluster_test.ts) checks: the empty Secret and ConfigMap Helm created are
 * filled and keep Helm's metadata; where the chart grants no list/watch on secrets, one log
 * line and GET polling instead (no crash loop; on the fake, the request log shows that only
 * those were refused); metrics at `/` as the chart's Prometheus annotation says; sidecars get
 * certificates and trust anchors (KUBERNETES validator); `dapr mtls renew-certificate` (a
 * `helm upgrade --reuse-values` with new certificates, as the Dapr CLI does it) reaches the
 * running server.
 */
import { FakeKubeApiServer } from "../fakes/kube-apiserver.ts";
import { fakeCluster } from "../helpers/chart_cluster.ts";
import { chartScenario } from "../helpers/chart_scenario.ts";

Deno.test("Dapr's Helm chart with only the sentry image changed: RBAC, Secret and ConfigMap, metrics at /, sidecar certificates, renew-certificate", async () => {
  const api = await FakeKubeApiServer.start();
  try {
    await chartScenario(fakeCluster(api));
  } finally {
    await api.close();
  }
});
