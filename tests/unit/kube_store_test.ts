/**
 * The Kubernetes store against an in-memory API server (tests/helpers/store_fakes_kube.ts):
 * what load makes of the Secret and ConfigMap, create-only writes and the first-boot race
 * (409 AlreadyExists / Conflict: the winner's bundle is adopted), replace as a compare-and-swap
 * on the resourceVersion, the ConfigMap repaired from the Secret, outages reported as
 * StoreUnavailableError, and the watch. The end-to-end tests (tests/e2e/kubernetes_test.ts)
 * run the same rules through the program.
 */
import assert from "node:assert/strict";
import { assertLoads } from "../helpers/store_assertions.ts";
import { Buffer } from "node:buffer";
import type { BundlePem } from "../../src/ca/bundle.ts";
import { Logger } from "../../src/observability/logger.ts";
import {
  ANCHORS_ANNOTATION,
  anchorsFingerprint,
  KubeCredentialStore,
} from "../../src/stores/kubernetes.ts";
import { StoreConflictError, StoreError, StoreUnavailableError } from "../../src/stores/store.ts";
import {
  apiError,
  type FakeCall,
  FakeKubeApi,
  type FakeObject,
  unreachable,
} from "../helpers/store_fakes_kube.ts";

const NS = "dapr-system";
const SECRETS = `/api/v1/namespaces/${NS}/secrets`;
const CONFIGMAPS = `/api/v1/namespaces/${NS}/configmaps`;
const SECRET = `${SECRETS}/dapr-trust-bundle`;
const CONFIGMAP = `${CONFIGMAPS}/dapr-trust-bundle`;

const A: BundlePem = { caCrt: "ca-a\n", issuerCrt: "issuer-a\n", issuerKey: "key-a\n" };
const B: BundlePem = {
  caCrt: "ca-b\n",
  issuerCrt: "issuer-b\n",
  issuerKey: "key-b\n",
  caKey: "root-b\n",
};
const C: BundlePem = { caCrt: "ca-c\n", issuerCrt: "issuer-c\n", issuerKey: "key-c\n" };

const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");
const unb64 = (text: string | undefined) =>
  text === undefined ? undefined : Buffer.from(text, "base64").toString("utf8");

/** `object` with `annotations` added to its metadata. */
function annotated(object: FakeObject, annotations: Record<string, string>): FakeObject {
  object.metadata.annotations = { ...object.metadata.annotations, ...annotations };
  return object;
}

/** Secret data as Helm or kubectl would write it for `bundle` (optionally under other keys). */
function secretData(
  bundle: Partial<BundlePem>,
  keys = { caCrt: "ca.crt", issuerCrt: "issuer.crt", issuerKey: "issuer.key" },
): Record<string, string> {
  const data: Record<string, string> = {};
  if (bundle.caCrt !== undefined) data[keys.caCrt] = b64(bundle.caCrt);
  if (bundle.issuerCrt !== undefined) data[keys.issuerCrt] = b64(bundle.issuerCrt);
  if (bundle.issuerKey !== undefined) data[keys.issuerKey] = b64(bundle.issuerKey);
  if (bundle.caKey !== undefined) data["ca.key"] = b64(bundle.caKey);
  return data;
}

function secret(data?: Record<string, string>): FakeObject {
  return {
    apiVersion: "v1",
    kind: "Secret",
    type: "Opaque",
    metadata: { name: "dapr-trust-bundle", namespace: NS },
    ...(data ? { data } : {}),
  };
}

function configMap(data?: Record<string, string>): FakeObject {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: "dapr-trust-bundle", namespace: NS },
    ...(data ? { data } : {}),
  };
}

/** The bundle the Secret at SECRET holds (decoded), or undefined. */
function storedBundle(api: FakeKubeApi): Record<string, string | undefined> | undefined {
  const data = api.read(SECRET)?.data;
  if (!data) return undefined;
  return Object.fromEntries(Object.entries(data).map(([key, value]) => [key, unb64(value)]));
}

function newStore(keys = { caCrt: "ca.crt", issuerCrt: "issuer.crt", issuerKey: "issuer.key" }) {
  const api = new FakeKubeApi();
  const lines: string[] = [];
  const logger = new Logger({
    level: "debug",
    json: true,
    scope: "test",
    version: "test",
    sink: (line) => lines.push(JSON.parse(line).msg),
  });
  const store = new KubeCredentialStore({ client: api, namespace: NS, keys, logger });
  return { api, store, lines };
}

Deno.test("load: what the Secret and ConfigMap hold decides between a bundle, nothing and a refusal", async (t) => {
  const cases: {
    name: string;
    secret?: FakeObject;
    configMap?: FakeObject;
    keys?: { caCrt: string; issuerCrt: string; issuerKey: string };
    want: BundlePem | null | RegExp;
  }[] = [
    { name: "nothing at all", want: null },
    { name: "a Helm-created empty Secret (no data)", secret: secret(), want: null },
    {
      name: "a Secret whose keys are empty strings",
      secret: secret({ "ca.crt": "", "issuer.crt": "", "issuer.key": "" }),
      want: null,
    },
    {
      name: "an empty ConfigMap next to no Secret",
      configMap: configMap({ "ca.crt": " \n" }),
      want: null,
    },
    { name: "a Helm-filled Secret", secret: secret(secretData(A)), want: A },
    { name: "a Secret keeping the root key", secret: secret(secretData(B)), want: B },
    {
      name: "the --issuer-*-filename key names",
      secret: secret(
        secretData(A, { caCrt: "root.pem", issuerCrt: "chain.pem", issuerKey: "k.pem" }),
      ),
      keys: { caCrt: "root.pem", issuerCrt: "chain.pem", issuerKey: "k.pem" },
      want: A,
    },
    {
      name: "a partial Secret (no issuer key)",
      secret: secret(secretData({ caCrt: A.caCrt, issuerCrt: A.issuerCrt })),
      want: /incomplete bundle in Secret dapr-system\/dapr-trust-bundle: missing issuer\.key\./,
    },
    {
      name: "a partial Secret (only the anchors)",
      secret: secret(secretData({ caCrt: A.caCrt })),
      want: /missing issuer\.crt, issuer\.key\. sentry never completes/,
    },
    {
      name: "a Secret with the standard keys when others are configured",
      secret: secret(secretData(A)),
      keys: { caCrt: "ca.crt", issuerCrt: "chain.pem", issuerKey: "k.pem" },
      want: /missing chain\.pem, k\.pem/,
    },
    {
      name: "trust anchors in the ConfigMap and no Secret",
      configMap: configMap({ "ca.crt": A.caCrt }),
      want:
        /Secret dapr-system\/dapr-trust-bundle does not exist but ConfigMap dapr-system\/dapr-trust-bundle holds trust anchors.*does not replace a CA silently.*sentry init --store k8s --namespace dapr-system --force/s,
    },
    {
      name: "trust anchors in the ConfigMap and an empty Secret",
      secret: secret(),
      configMap: configMap({ "ca.crt": A.caCrt }),
      want: /Secret dapr-system\/dapr-trust-bundle is empty but ConfigMap .* holds trust anchors/,
    },
    {
      name:
        "a Secret emptied by 'helm upgrade' (our fingerprint annotation stays), ConfigMap emptied too",
      secret: annotated(secret(), { [ANCHORS_ANNOTATION]: "ab".repeat(32) }),
      configMap: configMap(),
      want:
        /is empty but its annotation sentry\.dapr-tools\.io\/trust-anchors-sha256 shows that it held a CA/,
    },
    {
      name: "a Secret holding only the root key",
      secret: secret(secretData({ caKey: "root\n" })),
      want: /is empty but its ca\.key \(a root key\) is still there/,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const { api, store } = newStore(c.keys);
      if (c.secret) api.put(SECRET, c.secret);
      if (c.configMap) api.put(CONFIGMAP, c.configMap);
      await assertLoads(store, c.want);
      assert.deepEqual(api.accepted, [], "load never writes");
    });
  }
});

Deno.test("load: a Secret created between the two reads (first-boot race) is read again, not refused", async () => {
  const { api, store } = newStore();
  // Another replica creates the Secret, then the ConfigMap, just after our Secret read.
  api.before("GET", CONFIGMAP, () => {
    api.put(SECRET, secret(secretData(A)));
    api.put(CONFIGMAP, configMap({ "ca.crt": A.caCrt }));
  });
  assert.deepEqual(await store.load(), A);
  assert.deepEqual(api.calls.map((call) => `${call.method} ${call.path}`), [
    `GET ${SECRET}`,
    `GET ${CONFIGMAP}`,
    `GET ${SECRET}`,
  ]);
});

Deno.test("create on an empty namespace POSTs the Secret and the ConfigMap", async () => {
  const { api, store, lines } = newStore();
  assert.equal(await store.load(), null);
  assert.deepEqual(await store.create(B), B);
  assert.deepEqual(api.accepted.map((call) => `${call.method} ${call.path}`), [
    `POST ${SECRETS}`,
    `POST ${CONFIGMAPS}`,
  ]);
  const stored = api.read(SECRET)!;
  assert.equal(stored.type, "Opaque");
  assert.equal(stored.metadata.labels?.["app.kubernetes.io/managed-by"], "dapr-sentry");
  assert.deepEqual(storedBundle(api), {
    "ca.crt": B.caCrt,
    "issuer.crt": B.issuerCrt,
    "issuer.key": B.issuerKey,
    "ca.key": B.caKey,
  });
  assert.deepEqual(api.read(CONFIGMAP)?.data, { "ca.crt": B.caCrt });
  assert.ok(
    lines.includes("created ConfigMap dapr-system/dapr-trust-bundle with the trust anchors"),
  );
  // A second store (a restart) reads it back.
  const again = new KubeCredentialStore({
    client: api,
    namespace: NS,
    keys: { caCrt: "ca.crt", issuerCrt: "issuer.crt", issuerKey: "issuer.key" },
  });
  assert.deepEqual(await again.load(), B);
});

Deno.test("create fills a Helm-created empty Secret with a PUT carrying its resourceVersion", async () => {
  const { api, store } = newStore();
  const placeholder = api.put(SECRET, secret());
  assert.equal(await store.load(), null);
  assert.deepEqual(await store.create(A), A);
  const put = api.accepted.find((call) => call.path === SECRET)!;
  assert.equal(put.method, "PUT");
  assert.equal(put.body?.metadata.resourceVersion, placeholder.metadata.resourceVersion);
  assert.deepEqual(storedBundle(api), {
    "ca.crt": A.caCrt,
    "issuer.crt": A.issuerCrt,
    "issuer.key": A.issuerKey,
  });
  assert.deepEqual(api.read(CONFIGMAP)?.data, { "ca.crt": A.caCrt });
});

Deno.test("create: when another replica wins the race, its bundle is adopted and ours is not written", async (t) => {
  const cases: {
    name: string;
    /** What is there when our store loads. */
    initial?: FakeObject;
    /** What the winner writes just before our write. */
    winner: FakeObject;
    /** Our write that the API server refuses. */
    refused: FakeCall["method"];
  }[] = [
    {
      name: "POST answered 409 AlreadyExists",
      winner: secret(secretData(C)),
      refused: "POST",
    },
    {
      name: "PUT on the Helm placeholder answered 409 Conflict",
      initial: secret(),
      winner: secret(secretData(C)),
      refused: "PUT",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const { api, store } = newStore();
      if (c.initial) api.put(SECRET, c.initial);
      assert.equal(await store.load(), null);
      api.before(c.refused, c.refused === "POST" ? SECRETS : SECRET, () => {
        api.put(SECRET, c.winner);
      });
      assert.deepEqual(await store.create(A), C, "the winner's bundle");
      assert.deepEqual(storedBundle(api)?.["ca.crt"], C.caCrt);
      assert.deepEqual(api.accepted, [], "nothing of ours was written");
    });
  }
});

Deno.test("create: a winner that wrote only an empty Secret is filled in with a PUT", async () => {
  const { api, store } = newStore();
  assert.equal(await store.load(), null);
  api.before("POST", SECRETS, () => api.put(SECRET, secret()));
  assert.deepEqual(await store.create(A), A);
  assert.deepEqual(api.accepted.map((call) => `${call.method} ${call.path}`), [
    `PUT ${SECRET}`,
    `POST ${CONFIGMAPS}`,
  ]);
  assert.equal(storedBundle(api)?.["issuer.key"], A.issuerKey);
});

Deno.test("replace is a compare-and-swap on the resourceVersion read", async () => {
  const { api, store } = newStore();
  api.put(SECRET, secret(secretData(A)));
  api.put(CONFIGMAP, configMap({ "ca.crt": A.caCrt, "other.txt": "kept" }));
  assert.deepEqual(await store.load(), A);
  const read = api.read(SECRET)!.metadata.resourceVersion;

  assert.deepEqual(await store.replace(B, A), B);
  const put = api.accepted.find((call) => call.path === SECRET)!;
  assert.equal(put.method, "PUT");
  assert.equal(put.body?.metadata.resourceVersion, read);
  assert.deepEqual(await store.load(), B);
  assert.deepEqual(api.read(CONFIGMAP)?.data, { "ca.crt": B.caCrt, "other.txt": "kept" });

  // The root key follows the bundle: a bundle without one removes the stored key.
  assert.deepEqual(await store.replace(A, B), A);
  assert.equal(storedBundle(api)?.["ca.key"], undefined);
  assert.deepEqual(await store.load(), A);
});

Deno.test("replace writes nothing and throws StoreConflictError when the Secret changed", async (t) => {
  const cases: {
    name: string;
    setup: (api: FakeKubeApi) => void;
    expected: BundlePem;
    message: RegExp;
    /** The ConfigMap's anchors (default: some). */
    anchors?: string;
    /** Another writer's bundle that ends up in the Secret (default: the Secret is unchanged). */
    raced?: BundlePem;
  }[] = [
    {
      name: "the Secret holds something else than expected",
      setup: (api) => api.put(SECRET, secret(secretData(C))),
      expected: A,
      message: /changed since it was read; nothing was written/,
    },
    {
      name: "the expected bundle differs only in the root key",
      setup: (api) => api.put(SECRET, secret(secretData(B))),
      expected: { ...B, caKey: undefined },
      message: /changed since it was read/,
    },
    {
      name: "the Secret is gone (and the ConfigMap empty)",
      setup: () => {},
      expected: A,
      message: /changed since it was read/,
      anchors: "",
    },
    {
      name: "another writer updates it between our read and our PUT (409 Conflict)",
      setup: (api) => {
        api.put(SECRET, secret(secretData(A)));
        api.before("PUT", SECRET, () => api.put(SECRET, secret(secretData(C))));
      },
      expected: A,
      message: /changed while writing \(409 Conflict\); nothing was written/,
      raced: C,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const { api, store } = newStore();
      const anchors = c.anchors ?? "anchors before\n";
      api.put(CONFIGMAP, configMap({ "ca.crt": anchors }));
      c.setup(api);
      const before = api.read(SECRET);
      await assert.rejects(store.replace(B, c.expected), (error: Error) => {
        assert.ok(error instanceof StoreConflictError);
        assert.match(error.message, c.message);
        return true;
      });
      assert.deepEqual(api.accepted, [], "nothing written");
      if (c.raced) assert.equal(storedBundle(api)?.["ca.crt"], c.raced.caCrt, "the other writer's");
      else assert.deepEqual(api.read(SECRET), before);
      assert.deepEqual(api.read(CONFIGMAP)?.data, { "ca.crt": anchors });
    });
  }
});

Deno.test("publish makes the ConfigMap's anchors the Secret's, keeping its other keys", async (t) => {
  const cases: {
    name: string;
    configMap?: FakeObject;
    /** Racing writes before our write (each once). */
    race?: (api: FakeKubeApi) => void;
    want: Record<string, string>;
    writes: string[];
    log?: RegExp;
  }[] = [
    {
      name: "absent: created",
      want: { "ca.crt": A.caCrt },
      writes: [`POST ${CONFIGMAPS}`],
      log: /^created ConfigMap dapr-system\/dapr-trust-bundle with the trust anchors$/,
    },
    {
      name: "already equal: left alone",
      configMap: configMap({ "ca.crt": A.caCrt, extra: "x" }),
      want: { "ca.crt": A.caCrt, extra: "x" },
      writes: [],
    },
    {
      name: "drifted: repaired with its resourceVersion, other keys kept",
      configMap: configMap({ "ca.crt": "stale\n", extra: "x" }),
      want: { "ca.crt": A.caCrt, extra: "x" },
      writes: [`PUT ${CONFIGMAP}`],
      log:
        /^repaired ConfigMap dapr-system\/dapr-trust-bundle: its ca\.crt differed from Secret dapr-system\/dapr-trust-bundle$/,
    },
    {
      name: "no data at all: repaired",
      configMap: configMap(),
      want: { "ca.crt": A.caCrt },
      writes: [`PUT ${CONFIGMAP}`],
    },
    {
      name: "changed by someone else during the repair (409 Conflict): read again and repaired",
      configMap: configMap({ "ca.crt": "stale\n" }),
      race: (api) =>
        api.before(
          "PUT",
          CONFIGMAP,
          () => api.put(CONFIGMAP, configMap({ "ca.crt": "other\n", added: "y" })),
        ),
      want: { "ca.crt": A.caCrt, added: "y" },
      writes: [`PUT ${CONFIGMAP}`],
    },
    {
      name: "created by someone else first (409 AlreadyExists): read again and repaired",
      race: (api) =>
        api.before(
          "POST",
          CONFIGMAPS,
          () => api.put(CONFIGMAP, configMap({ "ca.crt": "other\n" })),
        ),
      want: { "ca.crt": A.caCrt },
      writes: [`PUT ${CONFIGMAP}`],
    },
    {
      name: "created by someone else with the same anchors: nothing more to do",
      race: (api) =>
        api.before("POST", CONFIGMAPS, () => api.put(CONFIGMAP, configMap({ "ca.crt": A.caCrt }))),
      want: { "ca.crt": A.caCrt },
      writes: [],
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const { api, store, lines } = newStore();
      api.put(SECRET, secret(secretData(A)));
      const before = c.configMap ? api.put(CONFIGMAP, c.configMap) : undefined;
      c.race?.(api);
      await store.publish(A);
      assert.deepEqual(api.read(CONFIGMAP)?.data, c.want);
      assert.deepEqual(api.accepted.map((call) => `${call.method} ${call.path}`), c.writes);
      if (before && c.writes.length > 0 && !c.race) {
        assert.equal(
          api.accepted[0].body?.metadata.resourceVersion,
          before.metadata.resourceVersion,
        );
      }
      if (c.log) assert.ok(lines.some((line) => c.log!.test(line)), lines.join("\n"));
      assert.equal(storedBundle(api)?.["ca.crt"], A.caCrt, "the Secret is never touched");
    });
  }
});

Deno.test("publish gives up with a StoreError when the ConfigMap keeps changing", async () => {
  const { api, store } = newStore();
  api.put(CONFIGMAP, configMap({ "ca.crt": "stale\n" }));
  for (let i = 0; i < 5; i++) {
    api.before("PUT", CONFIGMAP, () => api.put(CONFIGMAP, configMap({ "ca.crt": `other ${i}\n` })));
  }
  await assert.rejects(store.publish(A), (error: Error) => {
    assert.ok(error instanceof StoreError && !(error instanceof StoreUnavailableError));
    assert.match(
      error.message,
      /cannot update ConfigMap dapr-system\/dapr-trust-bundle: it kept changing \(409 Conflict\)/,
    );
    return true;
  });
  assert.equal(api.calls.filter((call) => call.method === "PUT").length, 5);
  assert.equal(api.read(CONFIGMAP)?.data?.["ca.crt"], "other 4\n");
});

Deno.test("API failures: outages are StoreUnavailableError, refusals StoreError; nothing is written", async (t) => {
  const failures: { name: string; error: (call: FakeCall) => Error; unavailable: boolean }[] = [
    {
      name: "unreachable",
      error: (call) => unreachable(call.method, call.path),
      unavailable: true,
    },
    {
      name: "503",
      error: (call) => apiError(call.method, call.path, 503, "ServiceUnavailable", "etcd is down"),
      unavailable: true,
    },
    {
      name: "429",
      error: (call) => apiError(call.method, call.path, 429, "TooManyRequests", "slow down"),
      unavailable: true,
    },
    {
      name: "403",
      error: (call) =>
        apiError(
          call.method,
          call.path,
          403,
          "Forbidden",
          `secrets "dapr-trust-bundle" is forbidden`,
        ),
      unavailable: false,
    },
  ];
  const operations: {
    name: string;
    /** Which call fails. */
    method: FakeCall["method"];
    path: string;
    setup: (api: FakeKubeApi) => void;
    run: (store: KubeCredentialStore) => Promise<unknown>;
    message: RegExp;
  }[] = [
    {
      name: "load: reading the Secret",
      method: "GET",
      path: SECRET,
      setup: () => {},
      run: (store) => store.load(),
      message: /^cannot read Secret dapr-system\/dapr-trust-bundle: kubernetes API: GET/,
    },
    {
      name: "load: reading the ConfigMap",
      method: "GET",
      path: CONFIGMAP,
      setup: () => {},
      run: (store) => store.load(),
      message: /^cannot read ConfigMap dapr-system\/dapr-trust-bundle: /,
    },
    {
      name: "create: POST",
      method: "POST",
      path: SECRETS,
      setup: () => {},
      run: async (store) => {
        await store.load();
        return await store.create(A);
      },
      message: /^cannot write Secret dapr-system\/dapr-trust-bundle: .*kubernetes API: POST/s,
    },
    {
      name: "replace: PUT",
      method: "PUT",
      path: SECRET,
      setup: (api) => api.put(SECRET, secret(secretData(A))),
      run: (store) => store.replace(B, A),
      message: /^cannot write Secret dapr-system\/dapr-trust-bundle: kubernetes API: PUT/,
    },
    {
      name: "publish: ConfigMap PUT",
      method: "PUT",
      path: CONFIGMAP,
      setup: (api) => api.put(CONFIGMAP, configMap({ "ca.crt": "stale\n" })),
      run: (store) => store.publish(A),
      message: /^cannot write ConfigMap dapr-system\/dapr-trust-bundle: kubernetes API: PUT/,
    },
  ];
  for (const op of operations) {
    for (const failure of failures) {
      await t.step(`${op.name}, ${failure.name}`, async () => {
        const { api, store } = newStore();
        op.setup(api);
        const before = { secret: api.read(SECRET), configMap: api.read(CONFIGMAP) };
        api.before(op.method, op.path, (call) => {
          throw failure.error(call);
        });
        await assert.rejects(op.run(store), (error: Error) => {
          assert.ok(error instanceof StoreError, String(error));
          assert.equal(error instanceof StoreUnavailableError, failure.unavailable, error.message);
          assert.match(error.message, op.message);
          return true;
        });
        assert.ok(api.calls.some((call) => call.refused), "the scripted failure happened");
        assert.deepEqual(api.accepted, []);
        assert.deepEqual(
          { secret: api.read(SECRET), configMap: api.read(CONFIGMAP) },
          before,
          "nothing changed",
        );
      });
    }
  }
});

Deno.test("watch calls back on changes to the Secret, not the ConfigMap, until closed", async () => {
  const { api, store } = newStore();
  api.put(SECRET, secret(secretData(A)));
  let changes = 0;
  const watch = store.watch(() => changes++);
  try {
    for (let i = 0; i < 50 && api.watching === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    assert.equal(api.watching, 1, "a watch is open");
    const list = api.calls.find((call) => call.method === "LIST");
    assert.equal(list?.path, SECRETS);
    api.put(CONFIGMAP, configMap({ "ca.crt": A.caCrt }));
    assert.equal(changes, 0);
    api.put(SECRET, secret(secretData(B)));
    assert.equal(changes, 1);
  } finally {
    watch.close();
  }
  await new Promise((resolve) => setTimeout(resolve, 1));
  assert.equal(api.watching, 0, "closed");
  api.put(SECRET, secret(secretData(C)));
  assert.equal(changes, 1);
});

// Dapr's sentry updates the objects it read; so do we: Helm's `app.kubernetes.io/managed-by`
// and `meta.helm.sh/release-*` must stay, or the next `helm upgrade` refuses to adopt them.
Deno.test("writes keep the labels, annotations and other keys already on the Secret and ConfigMap", async () => {
  const { api, store } = newStore();
  const helm = {
    labels: { "app.kubernetes.io/managed-by": "Helm", app: "dapr-sentry" },
    annotations: { "meta.helm.sh/release-name": "dapr" },
  };
  const placeholder = secret({ "extra.txt": b64("{}") });
  Object.assign(placeholder.metadata, structuredClone(helm));
  api.put(SECRET, placeholder);
  const anchors = configMap(); // Helm-created, no anchors yet
  Object.assign(anchors.metadata, structuredClone(helm));
  api.put(CONFIGMAP, anchors);
  assert.equal(await store.load(), null);
  await store.create(A);
  for (const path of [SECRET, CONFIGMAP]) {
    const { labels, annotations } = api.read(path)!.metadata;
    assert.deepEqual(labels, helm.labels, path);
    assert.equal(annotations?.["meta.helm.sh/release-name"], "dapr", path);
  }
  assert.equal(unb64(api.read(SECRET)!.data?.["extra.txt"]), "{}", "other Secret keys stay");
  assert.match(
    api.read(SECRET)!.metadata.annotations?.[ANCHORS_ANNOTATION] ?? "",
    /^[0-9a-f]{64}$/,
    "the anchors' fingerprint is recorded",
  );
  // A replace keeps them too, and removes a root key the new bundle does not keep.
  await store.replace(B, A);
  await store.replace(C, B);
  const after = api.read(SECRET)!;
  assert.deepEqual(after.metadata.labels, helm.labels);
  assert.equal(unb64(after.data?.["extra.txt"]), "{}");
  assert.equal(after.data?.["ca.key"], undefined, "ca.key of the previous root removed");
  assert.equal(after.metadata.annotations?.[ANCHORS_ANNOTATION], anchorsFingerprint(C.caCrt));
});

Deno.test("watch falls back to GET polling, with one log line, where RBAC forbids list/watch (Dapr's chart)", async () => {
  const api = new FakeKubeApi();
  const lines: string[] = [];
  const logger = new Logger({
    level: "debug",
    json: false,
    scope: "test",
    version: "test",
    sink: (line) => lines.push(line),
  });
  const store = new KubeCredentialStore({
    client: api,
    namespace: NS,
    keys: { caCrt: "ca.crt", issuerCrt: "issuer.crt", issuerKey: "issuer.key" },
    logger,
    pollIntervalMs: 5,
  });
  api.put(SECRET, secret(secretData(A)));
  api.before("LIST", SECRETS, (call) => {
    throw apiError("GET", call.path, 403, "Forbidden", "secrets is forbidden: cannot list");
  });
  let changes = 0;
  const watch = store.watch(() => changes++);
  try {
    const waitFor = async (what: string, done: () => boolean) => {
      for (let i = 0; i < 400 && !done(); i++) await new Promise((r) => setTimeout(r, 2));
      assert.ok(done(), what);
    };
    await waitFor(
      "a GET poll happened",
      () => api.calls.filter((c) => c.method === "GET").length > 2,
    );
    assert.equal(changes, 0, "no change yet");
    api.put(SECRET, secret(secretData(B)));
    await waitFor("the poll saw the new version", () => changes === 1);
    const fallbacks = lines.filter((line) => line.includes("reading it with GET every"));
    assert.equal(fallbacks.length, 1, lines.join("\n"));
    assert.match(fallbacks[0], /403 Forbidden/);
    assert.equal(api.watching, 0, "no watch was opened");
  } finally {
    watch.close();
  }
});
