/**
 * The fake API server's RBAC (tests/fakes/kube-rbac.ts) on the rules of Dapr's chart for
 * dapr-sentry, written out here: what the real authorizer grants and refuses, with its message.
 */
import assert from "node:assert/strict";
import { authorize, grantFor } from "./kube-rbac.ts";

const MANIFESTS = [
  {
    kind: "ClusterRole",
    metadata: { name: "dapr-sentry" },
    rules: [
      { apiGroups: ["authentication.k8s.io"], resources: ["tokenreviews"], verbs: ["create"] },
      { apiGroups: [""], resources: ["pods"], verbs: ["list", "get", "watch"] },
    ],
  },
  {
    kind: "ClusterRoleBinding",
    metadata: { name: "dapr-sentry" },
    subjects: [{ kind: "ServiceAccount", name: "dapr-sentry", namespace: "dapr-system" }],
    roleRef: { kind: "ClusterRole", name: "dapr-sentry" },
  },
  {
    kind: "Role",
    metadata: { name: "dapr-sentry", namespace: "dapr-system" },
    rules: [
      {
        apiGroups: [""],
        resources: ["secrets"],
        verbs: ["get", "update", "delete"],
        resourceNames: ["dapr-trust-bundle"],
      },
      {
        apiGroups: [""],
        resources: ["configmaps"],
        verbs: ["get", "update", "watch", "list"],
        resourceNames: ["dapr-trust-bundle"],
      },
    ],
  },
  {
    kind: "RoleBinding",
    metadata: { name: "dapr-sentry", namespace: "dapr-system" },
    subjects: [{ kind: "ServiceAccount", name: "dapr-sentry", namespace: "dapr-system" }],
    roleRef: { kind: "Role", name: "dapr-sentry" },
  },
  { kind: "Deployment", metadata: { name: "ignored" } },
];

Deno.test("RBAC: Dapr's chart rules for dapr-sentry, decided as the real authorizer does", async (t) => {
  const grant = grantFor(MANIFESTS, "dapr-system", "dapr-sentry");
  const other = grantFor(MANIFESTS, "dapr-system", "dapr-operator");
  const secret = { group: "", resource: "secrets", namespace: "dapr-system" };
  const configMap = { group: "", resource: "configmaps", namespace: "dapr-system" };
  const cases = [
    {
      name: "get the Secret by name",
      grant,
      request: { ...secret, verb: "get", name: "dapr-trust-bundle" },
      allowed: true,
    },
    {
      name: "update it",
      grant,
      request: { ...secret, verb: "update", name: "dapr-trust-bundle" },
      allowed: true,
    },
    {
      name: "get another Secret",
      grant,
      request: { ...secret, verb: "get", name: "other" },
      allowed: false,
    },
    {
      name: "create the Secret (resourceNames never grant create)",
      grant,
      request: { ...secret, verb: "create", name: "dapr-trust-bundle" },
      allowed: false,
    },
    { name: "list secrets", grant, request: { ...secret, verb: "list" }, allowed: false },
    {
      name: "watch the Secret by field selector (verb not granted)",
      grant,
      request: { ...secret, verb: "watch", name: "dapr-trust-bundle" },
      allowed: false,
    },
    {
      name: "watch the ConfigMap by field selector",
      grant,
      request: { ...configMap, verb: "watch", name: "dapr-trust-bundle" },
      allowed: true,
    },
    {
      name: "watch all ConfigMaps",
      grant,
      request: { ...configMap, verb: "watch" },
      allowed: false,
    },
    {
      name: "the Role does not reach another namespace",
      grant,
      request: { ...secret, namespace: "default", verb: "get", name: "dapr-trust-bundle" },
      allowed: false,
    },
    {
      name: "the ClusterRole reaches every namespace",
      grant,
      request: { group: "", resource: "pods", namespace: "default", verb: "get", name: "p" },
      allowed: true,
    },
    {
      name: "tokenreviews create (cluster scope)",
      grant,
      request: {
        group: "authentication.k8s.io",
        resource: "tokenreviews",
        namespace: "",
        verb: "create",
      },
      allowed: true,
    },
    {
      name: "an account with no binding",
      grant: other,
      request: { ...secret, verb: "get", name: "dapr-trust-bundle" },
      allowed: false,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const refusal = authorize(c.grant, c.request);
      assert.equal(refusal === undefined, c.allowed, refusal ?? "allowed");
    });
  }
  assert.equal(
    authorize(grant, { ...secret, verb: "create", name: "dapr-trust-bundle" }),
    'secrets is forbidden: User "system:serviceaccount:dapr-system:dapr-sentry" cannot create ' +
      'resource "secrets" in API group "" in the namespace "dapr-system"',
  );
  assert.equal(
    authorize(grant, { ...secret, verb: "get", name: "other" }),
    'secrets "other" is forbidden: User "system:serviceaccount:dapr-system:dapr-sentry" cannot ' +
      'get resource "secrets" in API group "" in the namespace "dapr-system"',
  );
});
