/**
 * src/identity/kubernetes-pods.ts against a scripted stand-in for the Kubernetes client: pods
 * read from the cluster-wide list narrowed to one pod, cached and shared by concurrent
 * lookups, fetched again once when the token names another pod uid; Configurations by their
 * (encoded) path; missing objects and API failures as refusals, failures never cached.
 */
import assert from "node:assert/strict";
import {
  KubeApiError,
  type KubeListOptions,
  KubeRequestError,
} from "../../src/kubernetes/client.ts";
import {
  apiUnavailable,
  type Configuration,
  type Pod,
  PodLookup,
  quote,
} from "../../src/identity/kubernetes-pods.ts";
import { ValidationError } from "../../src/identity/validator.ts";
import { captureLog } from "../helpers/log_capture.ts";

/** One answer of the stand-in client: a value, or an error to throw. */
type Answer = unknown | Error;

/** The `list` and `get` of a KubeClient, answering from scripts and recording the calls. */
class ScriptedClient {
  readonly calls: string[] = [];
  constructor(readonly lists: Answer[] = [], readonly gets: Answer[] = []) {}

  list<T>(path: string, options: KubeListOptions = {}): Promise<{ metadata: object; items: T[] }> {
    this.calls.push(`LIST ${path} ${options.fieldSelector}`);
    const answer = this.lists.shift();
    if (answer instanceof Error) return Promise.reject(answer);
    return Promise.resolve({ metadata: {}, items: answer as T[] });
  }

  get<T>(path: string): Promise<T> {
    this.calls.push(`GET ${path}`);
    const answer = this.gets.shift();
    return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer as T);
  }
}

function pod(namespace: string, name: string, uid: string): Pod {
  return { metadata: { namespace, name, uid }, spec: { serviceAccountName: "app" } };
}

const UNREACHABLE = new KubeRequestError({
  method: "GET",
  path: "/api/v1/pods",
  server: "https://kube:6443",
  code: "ECONNREFUSED",
  detail: "cannot reach https://kube:6443: connect ECONNREFUSED",
});

async function refused(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof ValidationError, `not a ValidationError: ${error}`);
    assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("pods: one narrowed list, cached, shared by concurrent lookups", async () => {
  const client = new ScriptedClient([[pod("other", "app", "u0"), pod("ns", "app", "u1")]]);
  const lookup = new PodLookup({ client, cacheTtlMs: 60_000 });
  const found = await Promise.all([
    lookup.pod("ns", "app", "u1"),
    lookup.pod("ns", "app", undefined),
  ]);
  assert.equal(found[0].metadata?.uid, "u1", "the pod of another namespace was taken");
  assert.equal(found[1], found[0]);
  assert.equal(await lookup.pod("ns", "app", "u1"), found[0]);
  assert.deepEqual(client.calls, [
    "LIST /api/v1/pods metadata.namespace=ns,metadata.name=app",
  ]);
  lookup.clear();
  await refused(lookup.pod("ns", "app", "u1"), /pod "app" not found in namespace "ns"/);
  assert.equal(client.calls.length, 2);
});

Deno.test("pods: a token naming another uid fetches the pod once more, then remembers the uid", async () => {
  const client = new ScriptedClient([
    [pod("ns", "app", "old")],
    [pod("ns", "app", "new")],
    [pod("ns", "app", "newer")],
  ]);
  const lookup = new PodLookup({ client, cacheTtlMs: 60_000 });
  assert.equal((await lookup.pod("ns", "app", "old")).metadata?.uid, "old");
  // Recreated under the same name: fetched again, and the new pod is used.
  assert.equal((await lookup.pod("ns", "app", "new")).metadata?.uid, "new");
  // A uid that matches nothing even after the refetch is remembered: no third fetch for it.
  assert.equal((await lookup.pod("ns", "app", "stale")).metadata?.uid, "newer");
  assert.equal((await lookup.pod("ns", "app", "stale")).metadata?.uid, "newer");
  assert.equal(client.calls.length, 3);
});

Deno.test("pods: a cache time of 0 fetches every time; API failures are refusals, never cached", async () => {
  const { logger, messages: lines } = captureLog();
  const client = new ScriptedClient([
    [pod("ns", "app", "u")],
    UNREACHABLE,
    [pod("ns", "app", "u")],
  ]);
  const lookup = new PodLookup({ client, cacheTtlMs: 0, logger });
  await lookup.pod("ns", "app", "u");
  await refused(
    lookup.pod("ns", "app", "u"),
    /^cannot verify the token now: kubernetes API: GET \/api\/v1\/pods: cannot reach/,
  );
  await lookup.pod("ns", "app", "u");
  assert.equal(client.calls.length, 3);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /^kubernetes token validator: cannot get pod "ns\/app": kubernetes API/);
});

Deno.test("configurations: by encoded path, cached; missing, not an object, unreachable", async (t) => {
  const where = 'Configuration "cfg" in namespace "ns"';
  const rows: { name: string; answer: Answer; outcome: RegExp | Configuration }[] = [
    {
      name: "found",
      answer: { spec: { accessControl: { trustDomain: "td" } } },
      outcome: { spec: { accessControl: { trustDomain: "td" } } },
    },
    {
      name: "does not exist",
      answer: new KubeApiError({ method: "GET", path: "/x", status: 404, reason: "NotFound" }),
      outcome: new RegExp(`^${where}, named by the pod's dapr\\.io/config annotation, does not`),
    },
    { name: "not an object", answer: "text", outcome: new RegExp(`^${where}: not an object$`) },
    {
      name: "forbidden",
      answer: new KubeApiError({ method: "GET", path: "/x", status: 403, apiMessage: "no" }),
      outcome: /^cannot verify the token now: kubernetes API: GET \/x: 403 Forbidden: no$/,
    },
  ];
  for (const row of rows) {
    await t.step(row.name, async () => {
      const client = new ScriptedClient([], [row.answer, row.answer]);
      const lookup = new PodLookup({ client, cacheTtlMs: 60_000 });
      if (row.outcome instanceof RegExp) {
        await refused(lookup.configuration("ns", "cfg", where), row.outcome);
        await refused(lookup.configuration("ns", "cfg", where), row.outcome);
        assert.equal(client.calls.length, 2, "a failure was cached");
      } else {
        assert.deepEqual(await lookup.configuration("ns", "cfg", where), row.outcome);
        assert.deepEqual(await lookup.configuration("ns", "cfg", where), row.outcome);
        assert.equal(client.calls.length, 1, "not cached");
      }
      assert.equal(client.calls[0], "GET /apis/dapr.io/v1alpha1/namespaces/ns/configurations/cfg");
    });
  }
  await t.step("names are encoded in the path", async () => {
    const client = new ScriptedClient([], [{}]);
    await new PodLookup({ client, cacheTtlMs: 0 }).configuration("n s", "a/b", where);
    assert.deepEqual(client.calls, [
      "GET /apis/dapr.io/v1alpha1/namespaces/n%20s/configurations/a%2Fb",
    ]);
  });
});

Deno.test("apiUnavailable: a client error is quoted whole; anything else is named", () => {
  assert.equal(
    apiUnavailable("TokenReview", UNREACHABLE).message,
    `cannot verify the token now: ${UNREACHABLE.message}`,
  );
  assert.equal(
    apiUnavailable("TokenReview", new Error("boom")).message,
    "cannot verify the token now: TokenReview: boom",
  );
  assert.equal(quote('a "b"'), '"a \\"b\\""');
});
