/** src/ca/control-plane.ts: Dapr's control-plane DNS names and the cluster domain. */
import assert from "node:assert/strict";
import { clusterDomainFromResolvConf, controlPlaneDnsNames } from "../../src/ca/control-plane.ts";

Deno.test("control-plane services in sentry's namespace get Dapr's DNS names; others none", () => {
  const names = (id: string, namespace = "dapr-system") =>
    controlPlaneDnsNames(id, namespace, "dapr-system", "corp.example");
  assert.deepEqual(names("dapr-injector"), ["dapr-sidecar-injector.dapr-system.svc"]);
  assert.deepEqual(names("dapr-operator"), ["dapr-webhook.dapr-system.svc"]);
  assert.deepEqual(names("dapr-scheduler"), [
    "dapr-scheduler-server-0.dapr-scheduler-server.dapr-system.svc.corp.example",
    "dapr-scheduler-server-1.dapr-scheduler-server.dapr-system.svc.corp.example",
    "dapr-scheduler-server-2.dapr-scheduler-server.dapr-system.svc.corp.example",
  ]);
  assert.deepEqual(names("dapr-placement"), []);
  assert.deepEqual(names("dapr-sentry"), []);
  assert.deepEqual(names("myapp"), []);
  assert.deepEqual(names("dapr-injector", "default"), [], "another namespace gets none");
});

Deno.test("the cluster domain is read from the pod's resolv.conf search list", () => {
  const pod = "search dapr-system.svc.cluster.local svc.cluster.local cluster.local\n" +
    "nameserver 10.96.0.10\noptions ndots:5\n";
  assert.equal(clusterDomainFromResolvConf(pod), "cluster.local");
  assert.equal(
    clusterDomainFromResolvConf("search ns.svc.corp.example. svc.corp.example.\n"),
    "corp.example",
  );
  assert.equal(clusterDomainFromResolvConf("nameserver 10.255.255.53\n"), undefined);
  assert.equal(clusterDomainFromResolvConf("search example.org\n"), undefined);
});
