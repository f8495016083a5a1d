/**
 * The filesystem store's guarantees: create never overwrites, load refuses partial bundles,
 * replace is a compare-and-swap that writes nothing on a conflict, and the optional root key
 * follows the bundle.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FsCredentialStore } from "../../src/stores/fs.ts";
import { StoreConflictError, StoreError } from "../../src/stores/store.ts";

const A = { caCrt: "ca-a\n", issuerCrt: "issuer-a\n", issuerKey: "key-a\n" };
const B = { caCrt: "ca-b\n", issuerCrt: "issuer-b\n", issuerKey: "key-b\n", caKey: "root-b\n" };

async function newStore() {
  const directory = join(await Deno.makeTempDir({ prefix: "sentry-fs-store-" }), "certs");
  return new FsCredentialStore({
    directory,
    caFilename: "ca.crt",
    issuerCertFilename: "issuer.crt",
    issuerKeyFilename: "issuer.key",
  });
}

Deno.test("create writes private files once and never overwrites", async () => {
  const store = await newStore();
  assert.equal(await store.load(), null);
  assert.equal(await store.create(A), A);
  assert.equal((await Deno.stat(join(store.paths.caCrt, ".."))).mode! & 0o777, 0o700);
  assert.equal((await Deno.stat(store.paths.issuerKey)).mode! & 0o777, 0o600);
  assert.deepEqual(await store.load(), A);
  // A second writer gets the first one's bundle back and changes nothing.
  assert.deepEqual(await store.create(B), A);
  assert.deepEqual(await store.load(), A);
});

Deno.test("load refuses a partial bundle, naming what is missing", async () => {
  const store = await newStore();
  await store.create(A);
  await Deno.remove(store.paths.issuerCrt);
  await assert.rejects(store.load(), (error: Error) => {
    assert.ok(error instanceof StoreError);
    assert.match(error.message, /missing .*issuer\.crt \(found .*issuer\.key, .*ca\.crt\)/);
    return true;
  });
});

Deno.test("replace is a compare-and-swap; the root key follows the bundle", async () => {
  const store = await newStore();
  await store.create(A);
  const stale = { ...A, issuerCrt: "something else\n" };
  await assert.rejects(store.replace(B, stale), StoreConflictError);
  assert.deepEqual(await store.load(), A, "nothing written on a conflict");

  await store.replace(B, A);
  assert.deepEqual(await store.load(), B);
  assert.equal(await Deno.readTextFile(store.rootKeyPath), "root-b\n");
  assert.equal((await Deno.stat(store.rootKeyPath)).mode! & 0o777, 0o600);

  // A bundle without a root key removes the stored one (it would no longer match).
  await store.replace(A, B);
  assert.deepEqual(await store.load(), A);
  await assert.rejects(Deno.stat(store.rootKeyPath));
  // No temporary files are left behind.
  const names = [...Deno.readDirSync(join(store.paths.caCrt, ".."))].map((entry) => entry.name)
    .sort();
  assert.deepEqual(names, ["ca.crt", "issuer.crt", "issuer.key"]);
});
