/**
 * The JWT key material (`jwt.key`, `jwks.json`) in every credential store, beside the X.509
 * bundle and under the same rules: fs (files named by the flags, the key 0600), Kubernetes
 * (Secret keys; the JWKS published in the ConfigMap while JWT issuing is on, removed when it is
 * off) and Vault (fields of the same KV secret). Both parts or neither: one alone, or JWT parts
 * without the X.509 ones, is refused naming what is missing; adding a JWT key is a
 * compare-and-swap that never overwrites; a replace without `jwt` keeps what is stored.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import type { BundlePem } from "../../src/ca/bundle.ts";
import { FsCredentialStore } from "../../src/stores/fs.ts";
import { KubeCredentialStore } from "../../src/stores/kubernetes.ts";
import { VaultCredentialStore } from "../../src/stores/vault.ts";
import { StoreConflictError, StoreError } from "../../src/stores/store.ts";
import { FakeKubeApi } from "../helpers/store_fakes_kube.ts";
import { FakeVaultApi } from "../helpers/store_fakes_vault.ts";

const A: BundlePem = { caCrt: "ca-a\n", issuerCrt: "issuer-a\n", issuerKey: "key-a\n" };
const JWT = { keyPem: "jwt-key\n", jwksJson: '{"keys":[]}' };
const A_JWT: BundlePem = { ...A, jwt: JWT };
const B: BundlePem = { caCrt: "ca-b\n", issuerCrt: "issuer-b\n", issuerKey: "key-b\n" };

async function fsStore(names: { jwtKeyFilename?: string; jwksFilename?: string } = {}) {
  const directory = join(await Deno.makeTempDir({ prefix: "sentry-jwt-store-" }), "certs");
  return new FsCredentialStore({
    directory,
    caFilename: "ca.crt",
    issuerCertFilename: "issuer.crt",
    issuerKeyFilename: "issuer.key",
    ...names,
  });
}

Deno.test("fs: create writes jwt.key (0600) and jwks.json; load returns them", async () => {
  const store = await fsStore();
  assert.equal(await store.create(A_JWT), A_JWT);
  assert.equal((await Deno.stat(store.jwtNames.key)).mode! & 0o777, 0o600);
  assert.equal(await Deno.readTextFile(store.jwtNames.jwks), JWT.jwksJson);
  assert.deepEqual(await store.load(), A_JWT);
});

Deno.test("fs: the flags name the files (relative in the directory, absolute as given)", async () => {
  const outside = join(await Deno.makeTempDir(), "keys.json");
  const store = await fsStore({ jwtKeyFilename: "signing.pem", jwksFilename: outside });
  await store.create(A_JWT);
  assert.equal(await Deno.readTextFile(join(store.paths.caCrt, "..", "signing.pem")), JWT.keyPem);
  assert.equal(await Deno.readTextFile(outside), JWT.jwksJson);
  assert.deepEqual(await store.load(), A_JWT);
});

Deno.test("fs: one JWT file without the other is refused, naming the missing one", async () => {
  const store = await fsStore();
  await store.create(A_JWT);
  await Deno.remove(store.jwtNames.jwks);
  await assert.rejects(
    store.load(),
    (error: Error) =>
      error instanceof StoreError && error.message.includes(`missing ${store.jwtNames.jwks}`),
  );
});

Deno.test("fs: JWT files without the X.509 bundle are refused, never completed", async () => {
  const store = await fsStore();
  await store.create(A_JWT);
  for (const path of Object.values(store.paths)) await Deno.remove(path);
  await assert.rejects(store.load(), /found .*jwt\.key.* but no trust bundle/);
});

Deno.test("fs: replace adds a JWT key once (create-only), keeps it when the bundle has none", async () => {
  const store = await fsStore();
  await store.create(A);
  assert.equal(await store.replace(A_JWT, A), A_JWT);
  assert.deepEqual(await store.load(), A_JWT);
  // A renewal that knows nothing of JWT keeps the key.
  await store.replace(B, A_JWT);
  assert.deepEqual(await store.load(), { ...B, jwt: JWT });
  // JWT files that appear between the read and the write are never overwritten.
  const other = await fsStore();
  await other.create(A);
  await Deno.writeTextFile(other.jwtNames.key, "someone else's\n");
  await Deno.writeTextFile(other.jwtNames.jwks, "{}");
  await assert.rejects(other.replace(A_JWT, A), StoreConflictError);
  assert.equal(await Deno.readTextFile(other.jwtNames.key), "someone else's\n");
});

const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");
const unb64 = (text: string | undefined) => Buffer.from(text ?? "", "base64").toString("utf8");
const NS = "dapr-system";
const SECRET = `/api/v1/namespaces/${NS}/secrets/dapr-trust-bundle`;
const CONFIGMAP = `/api/v1/namespaces/${NS}/configmaps/dapr-trust-bundle`;

function kubeStore() {
  const api = new FakeKubeApi();
  const store = new KubeCredentialStore({
    client: api,
    namespace: NS,
    keys: { caCrt: "ca.crt", issuerCrt: "issuer.crt", issuerKey: "issuer.key" },
    jwtKeys: { key: "jwt.key", jwks: "jwks.json" },
  });
  return { api, store };
}

Deno.test("k8s: JWT parts are Secret keys; the ConfigMap gets jwks.json, removed when off", async () => {
  const { api, store } = kubeStore();
  await store.create(A_JWT);
  const data = api.read(SECRET)!.data!;
  assert.equal(unb64(data["jwt.key"]), JWT.keyPem);
  assert.equal(unb64(data["jwks.json"]), JWT.jwksJson);
  assert.equal(api.read(CONFIGMAP)!.data?.["jwks.json"], JWT.jwksJson);
  assert.equal(api.read(CONFIGMAP)!.data?.["ca.crt"], A.caCrt);
  assert.deepEqual(await store.load(), A_JWT);
  await store.publish(A); // JWT issuing off: Dapr removes the JWKS from the ConfigMap
  assert.equal(api.read(CONFIGMAP)!.data?.["jwks.json"], undefined);
  assert.equal(api.read(CONFIGMAP)!.data?.["ca.crt"], A.caCrt);
  assert.deepEqual(await store.load(), A_JWT, "the Secret keeps the key");
});

Deno.test("k8s: partial JWT parts and JWT parts without a bundle are refused", async () => {
  const { api, store } = kubeStore();
  await store.create(A_JWT);
  const secret = api.read(SECRET)!;
  delete secret.data!["jwks.json"];
  api.put(SECRET, secret);
  await assert.rejects(store.load(), /incomplete JWT key material.*missing jwks\.json/);
  api.put(SECRET, { ...secret, data: { "jwt.key": b64("k"), "jwks.json": b64("{}") } });
  await assert.rejects(store.load(), /holds jwt\.key, jwks\.json but no trust bundle/);
});

Deno.test("k8s: replace adds a JWT key (resourceVersion CAS) and keeps it when the bundle has none", async () => {
  const { api, store } = kubeStore();
  await store.create(A);
  await store.replace(A_JWT, A);
  assert.deepEqual(await store.load(), A_JWT);
  await store.replace(B, A_JWT);
  assert.deepEqual(await store.load(), { ...B, jwt: JWT });
  assert.equal(api.read(CONFIGMAP)!.data?.["jwks.json"], JWT.jwksJson);
});

function vaultStore() {
  const vault = new FakeVaultApi();
  const store = new VaultCredentialStore({ client: vault, mount: "secret", path: "dapr/sentry" });
  return { vault, store };
}

Deno.test("vault: JWT parts are fields of the same secret; replace adds and keeps them", async () => {
  const { vault, store } = vaultStore();
  await store.create(A);
  await store.replace(A_JWT, A);
  assert.equal(vault.latest("secret/dapr/sentry")?.["jwt.key"], JWT.keyPem);
  assert.deepEqual(await store.load(), A_JWT);
  await store.replace(B, A_JWT);
  assert.deepEqual(await store.load(), { ...B, jwt: JWT });
  vault.write("secret/dapr/sentry", {
    "ca.crt": "c",
    "issuer.crt": "i",
    "issuer.key": "k",
    "jwt.key": "j",
  });
  await assert.rejects(store.load(), /incomplete JWT key material.*missing jwks\.json/);
});
