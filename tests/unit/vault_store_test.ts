/**
 * The Vault store against an in-memory KV v2 (tests/helpers/store_fakes_vault.ts): "nothing
 * stored" only for a secret that never had a version, deleted or destroyed latest versions
 * refused, create-only writes (`cas: 0`) and the first-boot race, replace as a check-and-set on
 * the version read, Vault unreachable / sealed / refusing as StoreUnavailableError, and the
 * polling watch; a root rotation in progress kept as fields of the same version (compared,
 * removed by a bundle without it, partial refused). The end-to-end tests (tests/e2e/vault_test.ts) run the same rules through the
 * program.
 */
import assert from "node:assert/strict";
import { assertLoads } from "../helpers/store_assertions.ts";
import type { BundlePem } from "../../src/ca/bundle.ts";
import { VaultCredentialStore } from "../../src/stores/vault.ts";
import { StoreConflictError, StoreError, StoreUnavailableError } from "../../src/stores/store.ts";
import type { VaultError } from "../../src/vault/client.ts";
import { eventually } from "../helpers/eventually.ts";
import { rotatingBundles } from "../helpers/rotation_bundle.ts";
import {
  FakeVaultApi,
  type FakeVaultCall,
  vaultError,
  vaultUnreachable,
} from "../helpers/store_fakes_vault.ts";

const KEY = "secret/dapr/sentry/trust-bundle";
const DATA = "secret/data/dapr/sentry/trust-bundle";
const METADATA = "secret/metadata/dapr/sentry/trust-bundle";
const DESCRIPTION = "Vault secret secret/dapr/sentry/trust-bundle at https://vault.fake:8200";

const A: BundlePem = { caCrt: "ca-a\n", issuerCrt: "issuer-a\n", issuerKey: "key-a\n" };
const B: BundlePem = {
  caCrt: "ca-b\n",
  issuerCrt: "issuer-b\n",
  issuerKey: "key-b\n",
  caKey: "root-b\n",
};
const C: BundlePem = { caCrt: "ca-c\n", issuerCrt: "issuer-c\n", issuerKey: "key-c\n" };

/** The secret's data as `vault kv put` would write `bundle`. */
function kv(bundle: Partial<BundlePem>): Record<string, string> {
  const data: Record<string, string> = {};
  if (bundle.caCrt !== undefined) data["ca.crt"] = bundle.caCrt;
  if (bundle.issuerCrt !== undefined) data["issuer.crt"] = bundle.issuerCrt;
  if (bundle.issuerKey !== undefined) data["issuer.key"] = bundle.issuerKey;
  if (bundle.caKey !== undefined) data["ca.key"] = bundle.caKey;
  return data;
}

function newStore(path = "dapr/sentry/trust-bundle", pollIntervalMs?: number) {
  const vault = new FakeVaultApi();
  const store = new VaultCredentialStore({ client: vault, mount: "secret", path, pollIntervalMs });
  return { vault, store };
}

/** The data writes (POST) the fake received, as [cas, data]. */
function posts(vault: FakeVaultApi): [unknown, unknown][] {
  return vault.calls.filter((call) => call.method === "POST").map((call) => {
    const body = call.body as { options?: { cas?: number }; data?: unknown };
    return [body.options?.cas, body.data];
  });
}

Deno.test("description and names say where the bundle is; the path is trimmed of slashes", async () => {
  const { vault, store } = newStore("/dapr/sentry/trust-bundle/");
  assert.equal(store.description, DESCRIPTION);
  assert.deepEqual(store.names, {
    caCrt: `${KEY} (ca.crt)`,
    issuerCrt: `${KEY} (issuer.crt)`,
    issuerKey: `${KEY} (issuer.key)`,
  });
  vault.write(KEY, kv(A));
  assert.deepEqual(await store.load(), A);
  assert.equal(vault.calls[0].path, DATA);
  store.close();
  assert.ok(vault.closed, "close stops the client (token renewal)");
});

Deno.test("load: nothing only when no version was ever written; deleted or destroyed versions are refused", async (t) => {
  const cases: {
    name: string;
    setup: (vault: FakeVaultApi) => void;
    want: BundlePem | null | RegExp;
  }[] = [
    { name: "never written", setup: () => {}, want: null },
    { name: "version 1", setup: (vault) => vault.write(KEY, kv(A)), want: A },
    { name: "keeping the root key", setup: (vault) => vault.write(KEY, kv(B)), want: B },
    {
      name: "the latest of several versions",
      setup: (vault) => {
        vault.write(KEY, kv(A));
        vault.write(KEY, kv(C));
      },
      want: C,
    },
    {
      name: "an older version deleted, the latest intact",
      setup: (vault) => {
        vault.write(KEY, kv(A));
        vault.secrets.get(KEY)!.versions.get(1)!.deleted = true;
        vault.write(KEY, kv(C));
      },
      want: C,
    },
    {
      name: "the latest version deleted",
      setup: (vault) => {
        vault.write(KEY, kv(A));
        vault.write(KEY, kv(C));
        vault.removeLatest(KEY, "deleted");
      },
      want: new RegExp(
        `^the latest version \\(2\\) of ${DESCRIPTION} was deleted: sentry will not generate a new ` +
          `CA over it\\. Restore it \\(vault kv undelete / rollback\\)`,
      ),
    },
    {
      name: "the latest version destroyed",
      setup: (vault) => {
        vault.write(KEY, kv(A));
        vault.removeLatest(KEY, "destroyed");
      },
      want: /^the latest version \(1\) of .* was destroyed: sentry will not generate a new CA/,
    },
    {
      name: "the metadata counts versions but none can be read",
      setup: (vault) => {
        vault.write(KEY, kv(A));
        vault.write(KEY, kv(A));
        vault.write(KEY, kv(A));
        vault.secrets.get(KEY)!.versions.clear();
      },
      want: /the latest version \(3\) of .* was destroyed/,
    },
    {
      name: "a partial bundle",
      setup: (vault) => {
        vault.write(KEY, kv(A));
        vault.write(KEY, kv({ caCrt: A.caCrt, issuerCrt: A.issuerCrt }));
      },
      want: new RegExp(
        `^incomplete bundle in ${DESCRIPTION} \\(version 2\\): missing issuer\\.key\\. sentry ` +
          `never completes or overwrites part of a bundle`,
      ),
    },
    {
      name: "empty and non-string values",
      setup: (vault) => vault.write(KEY, { ...kv(A), "ca.crt": "", "issuer.crt": 42 }),
      want: /\(version 1\): missing ca\.crt, issuer\.crt\./,
    },
    {
      name: "a version with no keys at all",
      setup: (vault) => vault.write(KEY, {}),
      want: /missing ca\.crt, issuer\.crt, issuer\.key/,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const { vault, store } = newStore();
      c.setup(vault);
      const versions = vault.secrets.get(KEY)?.current;
      await assertLoads(store, c.want);
      assert.deepEqual(posts(vault), [], "load never writes");
      assert.equal(vault.secrets.get(KEY)?.current, versions);
    });
  }
});

Deno.test("load: a version written between the data and metadata reads (first-boot race) is read again", async () => {
  const { vault, store } = newStore();
  vault.before("GET", METADATA, () => vault.write(KEY, kv(C)));
  assert.deepEqual(await store.load(), C);
  assert.deepEqual(vault.calls.map((call) => `${call.method} ${call.path}`), [
    `GET ${DATA}`,
    `GET ${METADATA}`,
    `GET ${DATA}`,
  ]);
});

Deno.test("create writes version 1 with cas 0; the next replace checks-and-sets on it", async () => {
  const { vault, store } = newStore();
  assert.equal(await store.load(), null);
  assert.deepEqual(await store.create(B), B);
  assert.deepEqual(posts(vault), [[0, kv(B)]]);
  assert.equal(vault.secrets.get(KEY)?.current, 1);
  assert.deepEqual(vault.latest(KEY), kv(B));

  // No root key: no ca.key written.
  assert.deepEqual(await store.replace(A, B), A);
  assert.deepEqual(posts(vault)[1], [1, kv(A)]);
  assert.deepEqual(vault.latest(KEY), kv(A));
  assert.deepEqual(await store.load(), A);
});

Deno.test("create: when another replica wins the race, its bundle is adopted and ours is not written", async () => {
  const { vault, store } = newStore();
  assert.equal(await store.load(), null);
  vault.before("POST", DATA, () => vault.write(KEY, kv(C)));
  assert.deepEqual(await store.create(A), C);
  assert.equal(vault.secrets.get(KEY)?.current, 1, "only the winner's version");
  assert.deepEqual(vault.latest(KEY), kv(C));
  // What the store remembers is the winner's version: a replace checks-and-sets on it.
  assert.deepEqual(await store.replace(B, C), B);
  assert.deepEqual(posts(vault).at(-1), [1, kv(B)]);
});

Deno.test("create: a check-and-set refusal with nothing to read afterwards is a StoreError", async () => {
  const { vault, store } = newStore();
  vault.before("POST", DATA, () => vault.write(KEY, kv(C)));
  // ... and the winner's secret is gone again (metadata deleted) before we read it.
  vault.before("GET", DATA, () => vault.secrets.delete(KEY));
  await assert.rejects(store.create(A), (error: Error) => {
    assert.ok(error instanceof StoreError && !(error instanceof StoreUnavailableError));
    assert.match(error.message, /create refused, yet nothing is stored/);
    return true;
  });
  assert.equal(vault.secrets.has(KEY), false);
});

Deno.test("replace writes nothing and throws StoreConflictError when the secret changed", async (t) => {
  const cases: {
    name: string;
    setup: (vault: FakeVaultApi) => void;
    expected: BundlePem;
    message: RegExp;
    /** The latest version afterwards (written by someone else, never by us). */
    latest?: BundlePem;
  }[] = [
    {
      name: "it holds something else than expected",
      setup: (vault) => vault.write(KEY, kv(C)),
      expected: A,
      message: /changed since it was read; nothing was written/,
      latest: C,
    },
    {
      name: "the expected bundle differs only in the root key",
      setup: (vault) => vault.write(KEY, kv(B)),
      expected: { ...B, caKey: "another root\n" },
      message: /changed since it was read/,
      latest: B,
    },
    {
      name: "nothing is stored",
      setup: () => {},
      expected: A,
      message: /changed since it was read/,
    },
    {
      name: "another writer adds a version between our read and our write (check-and-set)",
      setup: (vault) => {
        vault.write(KEY, kv(A));
        vault.before("POST", DATA, () => vault.write(KEY, kv(C)));
      },
      expected: A,
      message: /changed while writing \(check-and-set\); nothing was written: run again/,
      latest: C,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const { vault, store } = newStore();
      c.setup(vault);
      await assert.rejects(store.replace(B, c.expected), (error: Error) => {
        assert.ok(error instanceof StoreConflictError, String(error));
        assert.match(error.message, c.message);
        return true;
      });
      const ours = vault.calls.filter((call) => call.method === "POST");
      assert.ok(ours.length <= 1);
      assert.deepEqual(vault.latest(KEY), c.latest ? kv(c.latest) : undefined);
    });
  }
});

Deno.test("replace refuses (StoreError, not a conflict) over a deleted latest version", async () => {
  const { vault, store } = newStore();
  vault.write(KEY, kv(A));
  vault.removeLatest(KEY, "deleted");
  await assert.rejects(store.replace(B, A), (error: Error) => {
    assert.ok(error instanceof StoreError && !(error instanceof StoreConflictError));
    assert.match(error.message, /was deleted/);
    return true;
  });
  assert.deepEqual(posts(vault), []);
});

Deno.test("Vault failures: unreachable, sealed, standby, refusing us are StoreUnavailableError; others StoreError", async (t) => {
  const failures: {
    name: string;
    error: (call: FakeVaultCall) => VaultError;
    unavailable: boolean;
  }[] = [
    { name: "unreachable", error: () => vaultUnreachable(), unavailable: true },
    {
      name: "sealed (503)",
      error: (call) => vaultError(call.method, call.path, 503, ["Vault is sealed"]),
      unavailable: true,
    },
    {
      name: "standby (429)",
      error: (call) => vaultError(call.method, call.path, 429, []),
      unavailable: true,
    },
    {
      name: "permission denied (403)",
      error: (call) => vaultError(call.method, call.path, 403, ["permission denied"]),
      unavailable: true,
    },
    {
      name: "a bad request (400) that is not check-and-set",
      error: (call) => vaultError(call.method, call.path, 400, ["no data provided"]),
      unavailable: false,
    },
  ];
  const operations: {
    name: string;
    method: string;
    path: string;
    setup: (vault: FakeVaultApi) => void;
    run: (store: VaultCredentialStore) => Promise<unknown>;
  }[] = [
    {
      name: "load: data",
      method: "GET",
      path: DATA,
      setup: (vault) => vault.write(KEY, kv(A)),
      run: (store) => store.load(),
    },
    {
      name: "load: metadata",
      method: "GET",
      path: METADATA,
      setup: () => {},
      run: (store) => store.load(),
    },
    {
      name: "create",
      method: "POST",
      path: DATA,
      setup: () => {},
      run: (store) => store.create(A),
    },
    {
      name: "replace",
      method: "POST",
      path: DATA,
      setup: (vault) => vault.write(KEY, kv(A)),
      run: (store) => store.replace(B, A),
    },
  ];
  for (const op of operations) {
    for (const failure of failures) {
      await t.step(`${op.name}, ${failure.name}`, async () => {
        const { vault, store } = newStore();
        op.setup(vault);
        const before = vault.latest(KEY);
        let thrown: VaultError | undefined;
        vault.before(op.method, op.path, (call) => {
          thrown = failure.error(call);
          throw thrown;
        });
        await assert.rejects(op.run(store), (error: Error) => {
          assert.ok(error instanceof StoreError, String(error));
          assert.equal(error instanceof StoreUnavailableError, failure.unavailable, error.message);
          assert.equal(error.message, thrown?.message, "Vault's message is passed on");
          return true;
        });
        assert.deepEqual(vault.latest(KEY), before, "nothing written");
      });
    }
  }
});

Deno.test("watch polls current_version: a new version, or a failed poll, calls back; close stops it", async () => {
  const { vault, store } = newStore(undefined, 20);
  vault.write(KEY, kv(A));
  assert.deepEqual(await store.load(), A);
  let changes = 0;
  const watch = store.watch(() => changes++);
  const polls = () => vault.calls.filter((call) => call.path === METADATA).length;
  try {
    await eventually("two polls", () => polls() >= 2, 2000);
    assert.equal(changes, 0, "the version read is not a change");
    vault.write(KEY, kv(C));
    await eventually("the new version is noticed", () => changes === 1, 2000);
    const seen = polls();
    await eventually("more polls", () => polls() >= seen + 2, 2000);
    assert.equal(changes, 1, "noticed once");
    vault.sealed = true;
    await eventually("a failed poll is reported", () => changes >= 2, 2000);
  } finally {
    watch.close();
  }
  const stopped = polls();
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.equal(polls(), stopped, "no polls after close");
});

Deno.test("watch: a refused look for new versions is named once, and its end is said", async () => {
  const { vault, store } = newStore(undefined, 20);
  vault.write(KEY, kv(A));
  assert.deepEqual(await store.load(), A);
  const problems: (string | undefined)[] = [];
  let changes = 0;
  const watch = store.watch(() => changes++, (problem) => problems.push(problem));
  try {
    vault.sealed = true;
    await eventually("the failed poll is named", () => problems.length >= 1, 2000);
    assert.match(
      problems[0]!,
      /cannot look for new versions of Vault secret .*secret\/metadata\/.*: Vault GET .*: 503: Vault is sealed/,
    );
    assert.ok(changes >= 1, "the caller re-loads too");
    vault.sealed = false;
    await eventually("recovery is said", () => problems.at(-1) === undefined, 2000);
  } finally {
    watch.close();
  }
});

Deno.test("watch before any load: the first poll only learns the version", async () => {
  const { vault, store } = newStore(undefined, 20);
  vault.write(KEY, kv(A));
  let changes = 0;
  const watch = store.watch(() => changes++);
  try {
    await eventually("two polls", () => vault.calls.length >= 2, 2000);
    assert.equal(changes, 0);
    vault.write(KEY, kv(C));
    await eventually("the new version is noticed", () => changes === 1, 2000);
  } finally {
    watch.close();
  }
});

// VaultClient.request hands 404 answers back; a POST to a mount that does not exist (a wrong
// --vault-mount) is 404 "no handler for route". create() used to report success although
// nothing was stored, and the next start generated another CA.
Deno.test("create on a mount that does not exist fails instead of pretending to store", async () => {
  const vault = new FakeVaultApi();
  const store = new VaultCredentialStore({ client: vault, mount: "kv", path: "dapr/bundle" });
  assert.equal(await store.load(), null);
  await assert.rejects(
    store.create(A),
    (error: Error) =>
      error instanceof StoreError && /nothing was stored: Vault answered 404/.test(error.message) &&
      /KV version 2/.test(error.message),
  );
  assert.equal(vault.secrets.size, 0);
});

/** The secret's data of a bundle with a rotation in progress, fields named like Dapr's files. */
function kvWithRotation(bundle: BundlePem): Record<string, string> {
  const r = bundle.rotation!;
  return {
    ...kv(bundle),
    "rotation-state.json": r.stateJson,
    "rotation-ca.crt": r.caCrt,
    "rotation-issuer.crt": r.issuerCrt,
    "rotation-issuer.key": r.issuerKey,
    ...(r.caKey !== undefined ? { "rotation-ca.key": r.caKey } : {}),
  };
}

Deno.test("a rotation in progress: stored in the same version, compared, removed by a bundle without it", async () => {
  const { before, during } = await rotatingBundles({ keepRootKey: true });
  const { vault, store } = newStore();
  await store.create(before);
  await store.replace(during, before);
  assert.deepEqual(vault.latest(KEY), kvWithRotation(during));
  assert.deepEqual(await store.load(), during);

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
  assert.deepEqual(vault.latest(KEY), kvWithRotation(during), "nothing written");

  // A bundle without rotation ends it.
  await store.replace(before, during);
  assert.deepEqual(vault.latest(KEY), kv(before));
  assert.deepEqual(await store.load(), before);
});

Deno.test("a rotation state without the new issuer key is partial; other rotation fields without a state are ignored", async () => {
  const { before, during } = await rotatingBundles();
  const { vault, store } = newStore();
  const { "rotation-issuer.key": _key, ...partial } = kvWithRotation(during);
  vault.write(KEY, partial);
  await assertLoads(
    store,
    /incomplete root rotation in .* \(version 1\): rotation-state\.json says a rotation is in progress but rotation-issuer\.key is missing/,
  );
  const { "rotation-state.json": _state, ...leftovers } = kvWithRotation(during);
  vault.write(KEY, { ...leftovers, ...kv(before) });
  assert.deepEqual(await store.load(), before);
});
