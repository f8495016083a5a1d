/**
 * Gap-free JWT key rotation (src/ca/jwt-rotation.ts): which key signs at time t, which keys
 * the JWKS publishes, when old keys are pruned, the refusals; the next key's round trip through
 * the fs, Kubernetes and Vault stores; `sentry renew --jwt` / `--jwt-prune` on a directory.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type BundlePem, generateBundle } from "../../src/ca/bundle.ts";
import { validateServingBundle, withGeneratedJwtKey } from "../../src/ca/jwt-bundle.ts";
import { buildJwks, generateJwtSigningKey, parseJwtSigningKey } from "../../src/ca/jwt-keys.ts";
import {
  DEFAULT_JWT_PUBLISH_DELAY_MS,
  formatJwtKeyChain,
  JWKS_CACHE_MAX_AGE_MS,
  jwtKeyAt,
  NOT_BEFORE_HEADER,
  parseJwtKeyChain,
  pemWithNotBefore,
  pruneJwtKeys,
  rotateJwtKey,
} from "../../src/ca/jwt-rotation.ts";
import { runRenew } from "../../src/cli/renew.ts";
import { FsCredentialStore } from "../../src/stores/fs.ts";
import { KubeCredentialStore } from "../../src/stores/kubernetes.ts";
import { VaultCredentialStore } from "../../src/stores/vault.ts";
import { StoreConflictError } from "../../src/stores/store.ts";
import { spkiOf } from "../../src/x509/keys.ts";
import { FakeKubeApi } from "../helpers/store_fakes_kube.ts";
import { FakeVaultApi } from "../helpers/store_fakes_vault.ts";

const T0 = new Date("2030-01-01T00:00:00Z");
const HOUR = 3600_000;
const TTL = 24 * HOUR;
const SKEW = 15 * 60_000;
const at = (ms: number) => new Date(T0.getTime() + ms);

async function bundleWithJwt(): Promise<BundlePem> {
  const x509 = generateBundle({
    trustDomain: "public",
    namespace: "default",
    algorithm: "ecdsa-p256",
    now: new Date(T0.getTime() - HOUR),
    ttlMs: 365 * 24 * HOUR,
    skewMs: 0,
  });
  return await withGeneratedJwtKey(x509);
}

const kids = (jwksJson: string) =>
  (JSON.parse(jwksJson).keys as { kid: string }[]).map((key) => key.kid);

Deno.test("the next key is a second PEM block with its time; the first block stays Dapr's key", async () => {
  const key = await generateJwtSigningKey();
  const pem = pemWithNotBefore(key, T0);
  assert.match(pem, new RegExp(`^-----BEGIN PRIVATE KEY-----\\n${NOT_BEFORE_HEADER}: 2030-`));
  assert.ok(spkiOf(parseJwtSigningKey(pem)).equals(spkiOf(key)), "header skipped on parse");
  const bundle = await bundleWithJwt();
  const text = bundle.jwt!.keyPem + pem;
  const chain = parseJwtKeyChain(text);
  assert.equal(chain.current.notBefore, undefined);
  assert.equal(chain.next?.notBefore.toISOString(), T0.toISOString());
  assert.equal(formatJwtKeyChain(chain), text);
  // The first block is what Dapr (and parseJwtSigningKey) reads.
  assert.ok(
    spkiOf(parseJwtSigningKey(text)).equals(spkiOf(parseJwtSigningKey(bundle.jwt!.keyPem))),
  );
  assert.throws(() => parseJwtKeyChain(text + text.split(pem)[0]), /at most the current key/);
  assert.throws(
    () => parseJwtKeyChain(bundle.jwt!.keyPem + bundle.jwt!.keyPem),
    /no Sentry-Not-Before header/,
  );
  assert.throws(() => parseJwtKeyChain(pem.replace("2030-", "x")), /invalid Sentry-Not-Before/);
});

Deno.test("selection: the current key signs until the next key's time, then the next key", async () => {
  const bundle = await bundleWithJwt();
  const rotated = await rotateJwtKey(bundle.jwt!, { now: T0, delayMs: 2 * HOUR });
  assert.equal(rotated.notBefore.toISOString(), at(2 * HOUR).toISOString());
  const before = kids(bundle.jwt!.jwksJson);
  // Published at once: the JWKS holds the current key and the new one.
  assert.deepEqual(kids(rotated.jwksJson), [...before, rotated.keyId]);
  const trust = await validateServingBundle(
    { ...bundle, jwt: rotated },
    T0,
    undefined,
    { algorithm: "RS256" },
  );
  const signing = trust.jwt!;
  assert.equal(signing.next?.notBefore.toISOString(), rotated.notBefore.toISOString());
  assert.equal(jwtKeyAt(signing, T0).keyId, before[0]);
  assert.equal(jwtKeyAt(signing, at(2 * HOUR - 1)).keyId, before[0]);
  assert.equal(jwtKeyAt(signing, at(2 * HOUR)).keyId, rotated.keyId);
  assert.equal(jwtKeyAt(signing, at(100 * HOUR)).keyId, rotated.keyId);
  // Both keys publish the same, full JWKS.
  assert.equal(jwtKeyAt(signing, at(3 * HOUR)).jwksJson, rotated.jwksJson);
});

Deno.test("refused: a next key missing from the JWKS, a second rotation while one is pending", async () => {
  const bundle = await bundleWithJwt();
  const rotated = await rotateJwtKey(bundle.jwt!, { now: T0, delayMs: 2 * HOUR });
  await assert.rejects(
    validateServingBundle(
      { ...bundle, jwt: { keyPem: rotated.keyPem, jwksJson: bundle.jwt!.jwksJson } },
      T0,
      undefined,
      { algorithm: "RS256" },
    ),
    /next JWT signing key in jwt\.key cannot be used: .*must be published in jwks\.json/,
  );
  await assert.rejects(
    rotateJwtKey(rotated, { now: at(HOUR), delayMs: 2 * HOUR }),
    /already holds a next key, signing from 2030-01-01T02:00:00\.000Z/,
  );
});

Deno.test("pruning: promote when due; drop old keys after switch + TTL + skew, not before", async () => {
  const bundle = await bundleWithJwt();
  const oldKid = kids(bundle.jwt!.jwksJson)[0];
  const rotated = await rotateJwtKey(bundle.jwt!, { now: T0, delayMs: 2 * HOUR });
  const early = pruneJwtKeys(rotated, { now: at(HOUR), ttlMs: TTL });
  assert.equal(early.promoted, false);
  assert.equal(early.keyPem, rotated.keyPem);
  assert.equal(early.jwksJson, rotated.jwksJson);

  const switched = pruneJwtKeys(rotated, { now: at(2 * HOUR), ttlMs: TTL });
  assert.equal(switched.promoted, true);
  const chain = parseJwtKeyChain(switched.keyPem);
  assert.equal(chain.next, undefined);
  assert.equal(chain.current.notBefore?.toISOString(), at(2 * HOUR).toISOString());
  const retireAt = at(2 * HOUR + TTL + SKEW);
  assert.deepEqual(switched.kept, [{ kid: oldKid, retireAt }]);
  assert.deepEqual(kids(switched.jwksJson), [oldKid, rotated.keyId]);

  const stillOld = pruneJwtKeys(switched, { now: new Date(retireAt.getTime() - 1), ttlMs: TTL });
  assert.deepEqual(stillOld.removed, []);
  const retired = pruneJwtKeys(switched, { now: retireAt, ttlMs: TTL });
  assert.deepEqual(retired.removed, [oldKid]);
  assert.deepEqual(kids(retired.jwksJson), [rotated.keyId]);
  // The pruned material still serves: the promoted key signs, alone in the JWKS.
  const trust = await validateServingBundle(
    { ...bundle, jwt: retired },
    retireAt,
    undefined,
    { algorithm: "RS256" },
  );
  assert.equal(jwtKeyAt(trust.jwt!, retireAt).keyId, rotated.keyId);
});

Deno.test("pruning: old keys stay while the current key's activation time is unknown", async () => {
  const bundle = await bundleWithJwt();
  const other = await buildJwks(await generateJwtSigningKey(), { keyId: "other" });
  const jwksJson = JSON.stringify({
    keys: [...JSON.parse(bundle.jwt!.jwksJson).keys, other.jwks.keys[0]],
  });
  const result = pruneJwtKeys({ keyPem: bundle.jwt!.keyPem, jwksJson }, {
    now: at(1000 * HOUR),
    ttlMs: TTL,
  });
  assert.deepEqual(result.removed, []);
  assert.deepEqual(result.kept, [{ kid: "other", retireAt: undefined }]);
  assert.equal(result.jwksJson, jwksJson);
});

Deno.test("defaults: the publication delay outlasts the JWKS cache lifetime", () => {
  assert.equal(JWKS_CACHE_MAX_AGE_MS, 3600_000);
  assert.ok(DEFAULT_JWT_PUBLISH_DELAY_MS > JWKS_CACHE_MAX_AGE_MS);
});

Deno.test("stores: the next key round-trips through fs, Kubernetes and Vault (CAS)", async () => {
  const bundle = await bundleWithJwt();
  const rotated = await rotateJwtKey(bundle.jwt!, { now: T0, delayMs: 2 * HOUR });
  const next: BundlePem = {
    ...bundle,
    jwt: { keyPem: rotated.keyPem, jwksJson: rotated.jwksJson },
  };
  const fs = new FsCredentialStore({
    directory: join(await Deno.makeTempDir({ prefix: "sentry-jwt-rotation-" }), "certs"),
    caFilename: "ca.crt",
    issuerCertFilename: "issuer.crt",
    issuerKeyFilename: "issuer.key",
  });
  const kube = new KubeCredentialStore({
    client: new FakeKubeApi(),
    namespace: "dapr-system",
    keys: { caCrt: "ca.crt", issuerCrt: "issuer.crt", issuerKey: "issuer.key" },
    jwtKeys: { key: "jwt.key", jwks: "jwks.json" },
  });
  const vault = new VaultCredentialStore({
    client: new FakeVaultApi(),
    mount: "secret",
    path: "dapr/sentry",
  });
  for (const store of [fs, kube, vault]) {
    await store.create(bundle);
    await store.replace(next, bundle);
    const loaded = await store.load();
    assert.deepEqual(loaded?.jwt, next.jwt, store.description);
    assert.equal(
      parseJwtKeyChain(loaded!.jwt!.keyPem).next?.notBefore.getTime(),
      at(2 * HOUR).getTime(),
    );
    await assert.rejects(store.replace(bundle, bundle), StoreConflictError, store.description);
  }
});

/** Runs `sentry renew` at `now`; returns exit code and output. */
async function renew(args: string[], now: Date) {
  let stdout = "";
  let stderr = "";
  const code = await runRenew(args, {
    env: {},
    now: () => now,
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    readStdin: () => Promise.resolve(new Uint8Array()),
  });
  return { code, stdout, stderr };
}

Deno.test("sentry renew --jwt / --jwt-prune on a directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry-renew-jwt-" });
  const bundle = await bundleWithJwt();
  const store = new FsCredentialStore({
    directory: dir,
    caFilename: "ca.crt",
    issuerCertFilename: "issuer.crt",
    issuerKeyFilename: "issuer.key",
  });
  await store.create(bundle);
  const flags = ["--issuer-credentials", dir, "--json"];
  const oldKid = kids(bundle.jwt!.jwksJson)[0];

  const short = await renew([...flags, "--jwt", "--jwt-publish-delay", "10s"], T0);
  assert.equal(short.code, 2);
  assert.match(short.stderr, /shorter than the 1h0m0s .*--jwt-allow-short-delay/);
  assert.deepEqual(await store.load(), bundle, "nothing written");

  const first = await renew([...flags, "--jwt"], T0);
  assert.equal(first.code, 0, first.stderr);
  const report = JSON.parse(first.stdout);
  assert.equal(report.signsFrom, at(DEFAULT_JWT_PUBLISH_DELAY_MS).toISOString());
  const stored = await store.load();
  assert.equal(stored?.issuerKey, bundle.issuerKey, "the X.509 bundle is left alone");
  assert.deepEqual(kids(stored!.jwt!.jwksJson), [oldKid, report.newKeyId]);
  assert.equal(Deno.statSync(store.jwtNames.key).mode! & 0o777, 0o600);

  const pending = await renew([...flags, "--jwt"], at(HOUR));
  assert.equal(pending.code, 1);
  assert.match(pending.stderr, /already holds a next key/);

  const nothing = await renew([...flags, "--jwt-prune"], at(HOUR));
  assert.equal(nothing.code, 0, nothing.stderr);
  assert.equal(JSON.parse(nothing.stdout).changed, false);

  const promoted = await renew([...flags, "--jwt-prune", "--jwt-ttl", "1h"], at(2 * HOUR));
  assert.equal(JSON.parse(promoted.stdout).promoted, true);
  assert.equal(parseJwtKeyChain((await store.load())!.jwt!.keyPem).next, undefined);

  const pruned = await renew(
    [...flags, "--jwt-prune", "--jwt-ttl", "1h"],
    at(3 * HOUR + SKEW),
  );
  assert.deepEqual(JSON.parse(pruned.stdout).removedKeys, [oldKid]);
  assert.deepEqual(kids((await store.load())!.jwt!.jwksJson), [report.newKeyId]);

  const allowed = await renew(
    [...flags, "--jwt", "--jwt-publish-delay", "5s", "--jwt-allow-short-delay"],
    at(4 * HOUR),
  );
  assert.equal(allowed.code, 0, allowed.stderr);
  assert.match(allowed.stderr, /warning: --jwt-publish-delay 5s is shorter/);
  assert.equal(JSON.parse(allowed.stdout).signsFrom, at(4 * HOUR + 5000).toISOString());
});
