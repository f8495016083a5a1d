/**
 * The DNS names Dapr's sentry puts on the certificates of its own control-plane services (as
 * Dapr v1.18.3 does, docs/compatibility.md#dns-names-on-control-plane-certificates): the API
 * server calls the injector's and the operator's webhooks by these names, and the scheduler's
 * etcd peers verify each other by them; without them a Kubernetes install breaks. Only for
 * requests from sentry's own namespace.
 *
 * @module
 */

/**
 * DNS names for the workload `id` in `namespace`, given sentry's namespace and the cluster
 * domain (empty for every other identity).
 *
 * @example
 * ```ts
 * controlPlaneDnsNames("dapr-injector", "dapr-system", "dapr-system", "cluster.local");
 * // ["dapr-sidecar-injector.dapr-system.svc"]
 * ```
 */
export function controlPlaneDnsNames(
  id: string,
  namespace: string,
  sentryNamespace: string,
  clusterDomain: string,
): string[] {
  if (namespace !== sentryNamespace) return [];
  switch (id) {
    case "dapr-injector":
      return [`dapr-sidecar-injector.${namespace}.svc`];
    case "dapr-operator":
      return [`dapr-webhook.${namespace}.svc`];
    case "dapr-scheduler":
      return [0, 1, 2].map((ordinal) =>
        `dapr-scheduler-server-${ordinal}.dapr-scheduler-server.${namespace}.svc.${clusterDomain}`
      );
    default:
      return [];
  }
}

/**
 * The cluster domain of a pod's `/etc/resolv.conf`: the `search` entry `svc.<domain>` that
 * Kubernetes writes (`<ns>.svc.<domain> svc.<domain> <domain>`); undefined when there is none.
 */
export function clusterDomainFromResolvConf(text: string): string | undefined {
  for (const line of text.split("\n")) {
    const [keyword, ...domains] = line.trim().split(/\s+/);
    if (keyword !== "search") continue;
    for (const domain of domains) {
      const match = /^svc\.(.+?)\.?$/.exec(domain);
      if (match) return match[1];
    }
  }
  return undefined;
}
