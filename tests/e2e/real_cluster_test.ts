/**
 * End to end against a REAL Kubernetes API (kube-apiserver v1.36.3 + etcd built from Go
 * modules by tests/kube/build.sh; tests/helpers/real_kube_apiserver.ts), RBAC enforced by
 * Kubernetes itself:
 *
 * - Dapr's Helm chart scenario of tests/e2e/helm_chart_test.ts (tests/helpers/chart_scenario.ts):
 *   the Configuration CRD from the chart's `crds/`, the rendered ServiceAccount, Role,
 *   RoleBinding, ClusterRole and ClusterRoleBinding of `dapr-sentry`, the `daprsystem`
 *   Configuration and the empty `dapr-trust-bundle` Secret and ConfigMap with Helm's metadata
 *   are created; our sentry runs with the rendered args and environment and a TokenRequest token
 *   of `dapr-system/dapr-sentry` in its kubeconfig; the sidecar's token is a TokenRequest token
 *   bound to a real Pod object.
 *
 * Dapr's real operator against the real server: tests/e2e/control_plane_test.ts.
 *
 * Ignored only when Go is missing or too old to build kube-apiserver (the reason is printed);
 * a failing build fails the test.
 */
import assert from "node:assert/strict";
import { installDaprCrds, realCluster } from "../helpers/chart_cluster.ts";
import { chartScenario } from "../helpers/chart_scenario.ts";
import { daprBinaries } from "../helpers/dapr_binaries.ts";
import { realKubeUnavailable, startRealKubeApiServer } from "../helpers/real_kube_apiserver.ts";

const unavailable = await realKubeUnavailable();
if (unavailable) console.log(`real_cluster_test: ignored: ${unavailable}`);

Deno.test({
  name:
    "real kube-apiserver: Dapr's Helm chart scenario with the rendered RBAC enforced by Kubernetes",
  ignore: unavailable !== undefined,
  async fn() {
    const { chartDir } = await daprBinaries();
    await using server = await startRealKubeApiServer();
    const cluster = realCluster(server);
    await installDaprCrds(cluster, chartDir, ["configuration.yaml"]);
    const result = await chartScenario(cluster);
    console.log(
      `real kube-apiserver: sentry healthy ${result.startMs} ms after install, renewed bundle ` +
        `reloaded in ${result.reloadMs} ms`,
    );
    assert.ok(result.reloadMs < 25_000);
  },
});
