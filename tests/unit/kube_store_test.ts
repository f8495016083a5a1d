/**
 * The Kubernetes store against an in-memory API server (tests/helpers/store_fakes_kube.ts):
 * what load makes of the Secret and ConfigMap, create-only writes and the first-boot race
 * (409 AlreadyExists / Conflict: the winner's bundle is adopted), replace as a compare-and-swap
 * on the resourceVersion, the ConfigMap repaired from the Secret, outages reported as
 * StoreUnavailableError, and the watch. A root rotation in progress is kept under Dapr's keys
 * plus sentry's state (one Dapr's sentry wrote is read from Dapr's keys alone), compared and
 * removed like the rest; `lagging` checks the trust ConfigMaps of namespaces with sidecars on
 * the fake API server (tests/fakes/kube-apiserver.ts), RBAC included. The end-to-end tests (tests/e2e/kubernetes_test.ts)
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
  daprRotationTime,
  KubeCredentialStore,
} from "../../src/stores/kubernetes.ts";
import { join } from "node:path";
import { parseRotationState } from "../../src/ca/root-rotation.ts";
import { KubeClient } from "../../src/kubernetes/client.ts";
import { loadKubeConfig } from "../../src/kubernetes/config.ts";
import { decodePem } from "../../src/x509/pem.ts";
import { FakeKubeApiServer } from "../fakes/kube-apiserver.ts";
import { grantFor } from "../fakes/kube-rbac.ts";
import { rotatingBundles } from "../helpers/rotation_bundle.ts";
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
      if (c.raced) {
        assert.equal(storedBundle(api)?.["ca.crt"], c.raced.caCrt, "the other writer's");
        // B's anchors went to the ConfigMap ahead of the Secret PUT that lost the race: they are
        // replaced by what the Secret holds, the other writer's.
        assert.deepEqual(api.read(CONFIGMAP)?.data, { "ca.crt": c.raced.caCrt });
      } else {
        assert.deepEqual(api.accepted, [], "nothing written");
        assert.deepEqual(api.read(SECRET), before);
        assert.deepEqual(api.read(CONFIGMAP)?.data, { "ca.crt": anchors });
      }
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
        if (op.name === "replace: PUT") {
          // The new anchors went to the ConfigMap ahead of the Secret (as Dapr does); after the
          // failed Secret write the ConfigMap holds the Secret's anchors again.
          assert.deepEqual(api.read(SECRET), before.secret, "the Secret unchanged");
          assert.equal(api.read(CONFIGMAP)?.data?.["ca.crt"], A.caCrt);
          return;
        }
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

/** The Secret data of `bundle` with its rotation under Dapr's keys and sentry's. */
function rotationSecretData(bundle: BundlePem): Record<string, string> {
  const r = bundle.rotation!;
  const state = parseRotationState(r.stateJson);
  const data: Record<string, string> = {
    ...secretData(bundle),
    "rotation.phase": b64(state.phase),
    "rotation.new-ca.crt": b64(r.caCrt),
    "rotation.new-issuer.crt": b64(r.issuerCrt),
    "rotation.new-issuer.key": b64(r.issuerKey),
    "rotation.distributed-at": b64(daprRotationTime(state.distributedAt)),
    "rotation.old-root-not-after": b64(daprRotationTime(state.oldRootNotAfter)),
  };
  if (state.signingAt) data["rotation.signing-at"] = b64(daprRotationTime(state.signingAt));
  return data;
}

Deno.test("a rotation in progress: Dapr's keys plus sentry's state, compared, removed by a bundle without it", async () => {
  const { before, during } = await rotatingBundles({ keepRootKey: true });
  const { api, store } = newStore();
  api.put(SECRET, secret({ ...secretData(before), "extra.txt": b64("{}") }));
  api.put(CONFIGMAP, configMap({ "ca.crt": before.caCrt }));
  await store.load();
  await store.replace(during, before);
  const state = parseRotationState(during.rotation!.stateJson);
  const stored = storedBundle(api)!;
  assert.equal(stored["rotation.phase"], "distributing");
  assert.match(stored["rotation.distributed-at"]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.equal(stored["rotation.distributed-at"], daprRotationTime(state.distributedAt));
  assert.equal(stored["rotation.old-root-not-after"], daprRotationTime(state.oldRootNotAfter));
  assert.equal(stored["rotation.signing-at"], undefined, "no time: no key, as Dapr writes it");
  assert.equal(stored["rotation.new-ca.crt"], during.rotation!.caCrt);
  assert.equal(stored["rotation.new-issuer.crt"], during.rotation!.issuerCrt);
  assert.equal(stored["rotation.new-issuer.key"], during.rotation!.issuerKey);
  assert.equal(stored["rotation.new-ca.key"], during.rotation!.caKey);
  assert.equal(stored["rotation.sentry-state.json"], during.rotation!.stateJson);
  assert.deepEqual(await store.load(), during, "sentry's own state (and its fields) read back");
  assert.equal(api.read(CONFIGMAP)?.data?.["ca.crt"], during.caCrt, "old + new anchors published");

  // Compare-and-swap on the rotation parts alone.
  const otherState = { ...during.rotation!, stateJson: during.rotation!.stateJson + " " };
  await assert.rejects(
    store.replace(before, { ...during, rotation: otherState }),
    StoreConflictError,
  );
  await assert.rejects(
    store.replace(before, { ...during, rotation: undefined }),
    StoreConflictError,
  );
  assert.equal(storedBundle(api)?.["rotation.phase"], "distributing", "nothing written");

  // A bundle without rotation removes every rotation key; other keys stay.
  await store.replace(before, during);
  const after = storedBundle(api)!;
  assert.deepEqual(Object.keys(after).filter((key) => key.startsWith("rotation.")), []);
  assert.equal(after["extra.txt"], "{}");
  assert.deepEqual(await store.load(), before);
});

Deno.test("a rotation Dapr's sentry wrote (only its keys) is read into a state sentry continues", async (t) => {
  const { before, during } = await rotatingBundles();
  const dapr = rotationSecretData(during);
  await t.step("distributing", async () => {
    const { api, store } = newStore();
    api.put(SECRET, secret(dapr));
    const loaded = await store.load();
    const state = parseRotationState(loaded!.rotation!.stateJson);
    assert.equal(state.phase, "distributing");
    assert.equal(daprRotationTime(state.distributedAt), unb64(dapr["rotation.distributed-at"]));
    assert.equal(
      daprRotationTime(state.oldRootNotAfter),
      unb64(dapr["rotation.old-root-not-after"]),
    );
    assert.equal(state.signingAt, undefined);
    assert.equal(state.reason, undefined, "none of sentry's own fields");
    assert.deepEqual({ ...loaded, rotation: { ...loaded!.rotation, stateJson: "" } }, {
      ...during,
      rotation: { ...during.rotation, stateJson: "" },
    });
    // The next write continues from it (compare-and-swap against what was read).
    await store.replace(before, loaded!);
    assert.deepEqual(await store.load(), before);
  });
  await t.step("signing, Dapr's Go zero time and a stale sentry state ignored", async () => {
    const { api, store } = newStore();
    api.put(
      SECRET,
      secret({
        ...dapr,
        "rotation.phase": b64("signing"),
        "rotation.signing-at": b64("2026-01-01T00:00:00Z"),
        "rotation.sentry-state.json": b64(during.rotation!.stateJson), // says distributing
      }),
    );
    const state = parseRotationState((await store.load())!.rotation!.stateJson);
    assert.equal(state.phase, "signing");
    assert.equal(state.signingAt?.toISOString(), "2026-01-01T00:00:00.000Z");
    assert.equal(state.switchAt, undefined, "sentry's planned times were for the old phase");
  });
  await t.step("malformed times are refused, naming the key", async () => {
    const { api, store } = newStore();
    api.put(SECRET, secret({ ...dapr, "rotation.distributed-at": b64("yesterday") }));
    await assertLoads(
      store,
      /invalid root rotation in .*: rotation\.distributed-at is not an RFC 3339 time \("yesterday"\)/,
    );
  });
  await t.step("rotation keys without rotation.phase are leftovers, ignored", async () => {
    const { api, store } = newStore();
    const { "rotation.phase": _phase, ...leftovers } = dapr;
    api.put(SECRET, secret(leftovers));
    const { rotation: _rotation, ...withoutRotation } = during;
    assert.deepEqual(await store.load(), withoutRotation);
  });
});

Deno.test("rotation.phase without rotation.new-issuer.key is refused as partial", async () => {
  const { during } = await rotatingBundles();
  const { api, store } = newStore();
  const { "rotation.new-issuer.key": _key, ...partial } = rotationSecretData(during);
  api.put(SECRET, secret(partial));
  await assertLoads(
    store,
    /incomplete root rotation in Secret dapr-system\/dapr-trust-bundle: rotation\.phase says a rotation is in progress but rotation\.new-issuer\.key is missing/,
  );
  const { api: api2, store: alone } = newStore();
  api2.put(SECRET, secret({ "rotation.phase": b64("distributing") }));
  await assertLoads(alone, /it holds rotation\.phase but no trust bundle/);
});

Deno.test("watch calls back when only the rotation keys change", async () => {
  const { before, during } = await rotatingBundles();
  const { api, store } = newStore();
  api.put(SECRET, secret(secretData(during)));
  let changes = 0;
  const watch = store.watch(() => changes++);
  try {
    for (let i = 0; i < 50 && api.watching === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    api.put(SECRET, secret(rotationSecretData(during)));
    assert.equal(changes, 1);
    api.put(SECRET, secret(secretData(before)));
    assert.equal(changes, 2);
  } finally {
    watch.close();
  }
});

/** Runs `fn` with a store on the fake API server, its client using `token` (default: admin). */
async function withApiServer(
  fn: (ctx: {
    fake: FakeKubeApiServer;
    store: KubeCredentialStore;
    lines: string[];
    useToken(token: string): Promise<KubeCredentialStore>;
  }) => Promise<void>,
): Promise<void> {
  const fake = await FakeKubeApiServer.start();
  const dir = await Deno.makeTempDir({ prefix: "kube-store-test-" });
  const clients: KubeClient[] = [];
  const lines: string[] = [];
  const logger = new Logger({
    level: "debug",
    json: true,
    scope: "test",
    version: "test",
    sink: (line) => lines.push(JSON.parse(line).msg),
  });
  const storeFor = async (token?: string) => {
    const kubeconfig = await fake.writeKubeconfig(join(dir, `kubeconfig-${clients.length}`), {
      token,
    });
    const connection = await loadKubeConfig({ kubeconfigPath: kubeconfig, env: {} });
    const client = new KubeClient(connection, { maxAttempts: 1 });
    clients.push(client);
    return new KubeCredentialStore({
      client,
      namespace: NS,
      keys: { caCrt: "ca.crt", issuerCrt: "issuer.crt", issuerKey: "issuer.key" },
      logger,
    });
  };
  try {
    await fn({ fake, store: await storeFor(), lines, useToken: storeFor });
  } finally {
    for (const client of clients) client.close();
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Puts a pod (labelled as injected, or not) and, unless `anchors` is null, a trust ConfigMap. */
function podAndAnchors(
  fake: FakeKubeApiServer,
  namespace: string,
  options: { injected?: string; anchors?: string | null },
): void {
  fake.put("pods", namespace, {
    metadata: {
      name: `app-${crypto.randomUUID().slice(0, 8)}`,
      labels: options.injected ? { "dapr.io/sidecar-injected": options.injected } : {},
    },
    spec: { containers: [{ name: "app", image: "app:latest" }] },
  });
  if (options.anchors !== null && options.anchors !== undefined) {
    fake.put("configmaps", namespace, {
      metadata: { name: "dapr-trust-bundle" },
      data: { "ca.crt": options.anchors },
    });
  }
}

/** Re-encodes PEM certificates with other line breaks: same DER, other text. */
function rewrapped(pem: string): string {
  return decodePem(pem).map((block) =>
    `-----BEGIN CERTIFICATE-----\r\n${
      block.der.toString("base64")
    }\r\n-----END CERTIFICATE-----\r\n`
  ).join("");
}

Deno.test("lagging: namespaces with sidecars whose trust ConfigMap lacks the new root", async () => {
  const { before, during } = await rotatingBundles();
  const newRoot = during.rotation!.caCrt;
  await withApiServer(async ({ fake, store }) => {
    fake.put("configmaps", NS, {
      metadata: { name: "dapr-trust-bundle" },
      data: { "ca.crt": during.caCrt },
    });
    podAndAnchors(fake, "app-current", { injected: "true", anchors: rewrapped(during.caCrt) });
    podAndAnchors(fake, "app-stale", { injected: "true", anchors: before.caCrt });
    podAndAnchors(fake, "app-missing", { injected: "true", anchors: null });
    // No sidecar here: a stale copy does not hold the rotation up.
    podAndAnchors(fake, "no-dapr", { anchors: before.caCrt });
    podAndAnchors(fake, "not-injected", { injected: "false", anchors: before.caCrt });
    assert.deepEqual(await store.lagging(newRoot), ["app-missing", "app-stale"]);
    const list = fake.requests.find((request) => request.path === "/api/v1/pods");
    assert.ok(list, "pods listed across all namespaces");

    // Sentry's own namespace always counts.
    fake.put("configmaps", NS, { metadata: { name: "dapr-trust-bundle" }, data: {} });
    assert.deepEqual(await store.lagging(newRoot), ["app-missing", "app-stale", NS]);
  });
});

/** Dapr's chart rules for dapr-sentry (v1.18.3): pods cluster-wide, its objects in its namespace. */
function chartRbac(options: { pods: boolean }): unknown[] {
  return [
    {
      kind: "ClusterRole",
      metadata: { name: "dapr-sentry" },
      rules: options.pods
        ? [{ apiGroups: [""], resources: ["pods"], verbs: ["list", "get", "watch"] }]
        : [],
    },
    {
      kind: "ClusterRoleBinding",
      metadata: { name: "dapr-sentry" },
      subjects: [{ kind: "ServiceAccount", name: "dapr-sentry", namespace: NS }],
      roleRef: { kind: "ClusterRole", name: "dapr-sentry" },
    },
    {
      kind: "Role",
      metadata: { name: "dapr-sentry", namespace: NS },
      rules: [{
        apiGroups: [""],
        resources: ["configmaps"],
        verbs: ["get", "update"],
        resourceNames: ["dapr-trust-bundle"],
      }],
    },
    {
      kind: "RoleBinding",
      metadata: { name: "dapr-sentry", namespace: NS },
      subjects: [{ kind: "ServiceAccount", name: "dapr-sentry", namespace: NS }],
      roleRef: { kind: "Role", name: "dapr-sentry" },
    },
  ];
}

Deno.test("lagging: what RBAC forbids is skipped with one warning naming the permission", async (t) => {
  const { before, during } = await rotatingBundles();
  const newRoot = during.rotation!.caCrt;
  await t.step("ConfigMaps outside sentry's namespace (Dapr's chart)", async () => {
    await withApiServer(async ({ fake, lines, useToken }) => {
      fake.restrictToken("sentry-token", grantFor(chartRbac({ pods: true }), NS, "dapr-sentry"));
      const store = await useToken("sentry-token");
      fake.put("configmaps", NS, {
        metadata: { name: "dapr-trust-bundle" },
        data: { "ca.crt": during.caCrt },
      });
      podAndAnchors(fake, "app-stale", { injected: "true", anchors: before.caCrt });
      assert.deepEqual(await store.lagging(newRoot), []);
      assert.deepEqual(await store.lagging(newRoot), []);
      const warnings = lines.filter((line) => line.includes("cannot check"));
      assert.equal(warnings.length, 1, lines.join("\n"));
      assert.match(warnings[0], /forbids sentry to get configmaps in app-stale \(403 Forbidden\)/);
    });
  });
  await t.step("listing pods", async () => {
    await withApiServer(async ({ fake, lines, useToken }) => {
      fake.restrictToken("sentry-token", grantFor(chartRbac({ pods: false }), NS, "dapr-sentry"));
      const store = await useToken("sentry-token");
      fake.put("configmaps", NS, {
        metadata: { name: "dapr-trust-bundle" },
        data: { "ca.crt": before.caCrt },
      });
      podAndAnchors(fake, "app-stale", { injected: "true", anchors: before.caCrt });
      assert.deepEqual(await store.lagging(newRoot), [NS], "sentry's own copy is still checked");
      const warnings = lines.filter((line) => line.includes("cannot check"));
      assert.equal(warnings.length, 1, lines.join("\n"));
      assert.match(warnings[0], /list pods in all namespaces \(only dapr-system was checked\)/);
    });
  });
});

Deno.test("new trust anchors reach the ConfigMap before the Secret (as Dapr writes them)", async () => {
  const { api, store } = newStore();
  api.put(SECRET, secret(secretData(A)));
  api.put(CONFIGMAP, configMap({ "ca.crt": A.caCrt }));
  await store.replace({ ...A, caCrt: A.caCrt + B.caCrt }, A);
  assert.deepEqual(api.accepted.map((call) => `${call.method} ${call.path}`), [
    `PUT ${CONFIGMAP}`,
    `PUT ${SECRET}`,
  ]);
  assert.equal(api.read(CONFIGMAP)?.data?.["ca.crt"], A.caCrt + B.caCrt);
});

Deno.test("replace sends the Secret it compared, even when a concurrent load cached a newer one", async () => {
  const { api, store } = newStore();
  api.put(SECRET, secret(secretData(A)));
  api.put(CONFIGMAP, configMap({ "ca.crt": A.caCrt }));
  // While our replace waits on the ConfigMap, another replica writes C and our own watch-
  // triggered reload reads it (caching the newer resourceVersion).
  let reloaded: Promise<unknown> = Promise.resolve();
  api.before("GET", CONFIGMAP, () => {
    api.put(SECRET, secret(secretData(C)));
    reloaded = store.load();
  });
  await assert.rejects(
    store.replace({ ...A, caCrt: A.caCrt + B.caCrt }, A),
    /changed while writing \(409 Conflict\)/,
  );
  await reloaded;
  assert.equal(storedBundle(api)?.["ca.crt"], C.caCrt, "the other replica's write stands");
  assert.equal(api.read(CONFIGMAP)?.data?.["ca.crt"], C.caCrt, "its anchors published back");
});

Deno.test("anchors go ahead to the ConfigMap only over the anchors being replaced", async () => {
  const { api, store } = newStore();
  api.put(SECRET, secret(secretData(A)));
  // Another writer already published its anchors ahead of its own Secret write.
  api.put(CONFIGMAP, configMap({ "ca.crt": C.caCrt }));
  api.before("PUT", SECRET, () => api.put(SECRET, secret(secretData(C))));
  await assert.rejects(store.replace({ ...A, caCrt: A.caCrt + B.caCrt }, A), /409 Conflict/);
  assert.ok(
    !api.accepted.some((call) =>
      call.path === CONFIGMAP && call.body?.data?.["ca.crt"]?.includes(B.caCrt)
    ),
    "our anchors never reached the ConfigMap",
  );
  assert.equal(api.read(CONFIGMAP)?.data?.["ca.crt"], C.caCrt);
});
