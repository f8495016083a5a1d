/**
 * Kubernetes RBAC for the fake API server: the rules that Roles and ClusterRoles bound to one
 * service account grant (collected from manifests, e.g. Dapr's rendered Helm chart), and the
 * authorizer's decision for one request, as the real RBAC authorizer decides it:
 *
 * - a rule matches when its apiGroups, resources and verbs contain the request's (or `*`);
 * - `resourceNames` restricts a rule to named objects: it never grants `create` or a
 *   collection-wide `list` / `watch` / `deletecollection`, except that a `list` or `watch` with
 *   the field selector `metadata.name=<name>` counts as a request for that name (the API
 *   server's authorization of single-object lists and watches);
 * - ClusterRoles bound by a ClusterRoleBinding grant everywhere; Roles (and ClusterRoles)
 *   bound by a RoleBinding grant in the binding's namespace only.
 *
 * A refusal is the real 403 Status text: `<resource> "<name>" is forbidden: User "<user>"
 * cannot <verb> resource "<resource>" in API group "<group>" in the namespace "<ns>"`.
 *
 * @module
 */

/** One policy rule of a Role or ClusterRole. */
export interface RbacRule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** What a service account may do: cluster-wide rules and rules per namespace. */
export interface RbacGrant {
  /** `system:serviceaccount:<namespace>:<name>`. */
  user: string;
  cluster: RbacRule[];
  namespaced: Record<string, RbacRule[]>;
}

/** The attributes of one request that RBAC looks at. */
export interface RbacRequest {
  verb: string;
  group: string;
  resource: string;
  /** "" for cluster-scoped resources or requests across namespaces. */
  namespace: string;
  /** The object's name, or the `metadata.name=` of a list / watch field selector. */
  name?: string;
}

interface Manifest {
  kind?: string;
  metadata?: { name?: string; namespace?: string };
  rules?: RbacRule[];
  roleRef?: { kind?: string; name?: string };
  subjects?: { kind?: string; name?: string; namespace?: string }[];
}

/**
 * The rules that `manifests` (Roles, ClusterRoles and their bindings; other kinds are ignored)
 * grant to the service account `namespace/name`.
 */
export function grantFor(manifests: unknown[], namespace: string, name: string): RbacGrant {
  const docs = manifests.filter((doc): doc is Manifest => typeof doc === "object" && doc !== null);
  const roles = new Map<string, RbacRule[]>();
  for (const doc of docs) {
    if (doc.kind === "ClusterRole") roles.set(`ClusterRole/${doc.metadata?.name}`, doc.rules ?? []);
    if (doc.kind === "Role") {
      roles.set(`Role/${doc.metadata?.namespace}/${doc.metadata?.name}`, doc.rules ?? []);
    }
  }
  const grant: RbacGrant = {
    user: `system:serviceaccount:${namespace}:${name}`,
    cluster: [],
    namespaced: {},
  };
  for (const doc of docs) {
    if (doc.kind !== "ClusterRoleBinding" && doc.kind !== "RoleBinding") continue;
    const bound = (doc.subjects ?? []).some((subject) =>
      subject.kind === "ServiceAccount" && subject.name === name &&
      (subject.namespace ?? doc.metadata?.namespace) === namespace
    );
    if (!bound) continue;
    const ref = doc.roleRef ?? {};
    const rules = ref.kind === "ClusterRole"
      ? roles.get(`ClusterRole/${ref.name}`)
      : roles.get(`Role/${doc.metadata?.namespace}/${ref.name}`);
    if (!rules) continue;
    if (doc.kind === "ClusterRoleBinding") grant.cluster.push(...rules);
    else {
      const at = doc.metadata?.namespace ?? "";
      (grant.namespaced[at] ??= []).push(...rules);
    }
  }
  return grant;
}

const COLLECTION_VERBS = new Set(["list", "watch", "deletecollection", "create"]);

function covers(values: string[] | undefined, value: string): boolean {
  return (values ?? []).some((candidate) => candidate === "*" || candidate === value);
}

function ruleAllows(rule: RbacRule, request: RbacRequest): boolean {
  if (!covers(rule.apiGroups, request.group)) return false;
  if (!covers(rule.resources, request.resource)) return false;
  if (!covers(rule.verbs, request.verb)) return false;
  if (!rule.resourceNames || rule.resourceNames.length === 0) return true;
  if (request.name === undefined) return false;
  if (request.verb === "create" || request.verb === "deletecollection") return false;
  return rule.resourceNames.includes(request.name);
}

/**
 * Whether `grant` allows `request`; undefined when it does, else the API server's message.
 * `name` of a list or watch must come from a `metadata.name=` field selector (see the module).
 */
export function authorize(grant: RbacGrant, request: RbacRequest): string | undefined {
  const rules = [
    ...grant.cluster,
    ...(request.namespace ? grant.namespaced[request.namespace] ?? [] : []),
  ];
  if (rules.some((rule) => ruleAllows(rule, request))) return undefined;
  const named = request.name !== undefined && !COLLECTION_VERBS.has(request.verb)
    ? `${request.resource} "${request.name}"`
    : request.resource;
  const where = request.namespace
    ? ` in the namespace "${request.namespace}"`
    : request.verb === "list" || request.verb === "watch" || request.verb === "create"
    ? " at the cluster scope"
    : "";
  return `${named} is forbidden: User "${grant.user}" cannot ${request.verb} resource ` +
    `"${request.resource}" in API group "${request.group}"${where}`;
}
