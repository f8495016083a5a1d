/**
 * End to end: the offline commands `init`, `mint`, `expiry` and `renew` of the real program,
 * cross-checked with openssl, including their refusals, and `renew` reaching a running server.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { SentryClient } from "../helpers/grpc_client.ts";
import { generateKey, makeCsr, openssl, opensslIssuer, opensslTime } from "../helpers/openssl.ts";
import { runSentry, startSentry, tempDir } from "../helpers/sentry_process.ts";

async function sentry(args: string[], cwd?: string) {
  return await runSentry(args, { cwd });
}

async function ok(args: string[], cwd?: string): Promise<string> {
  const result = await sentry(args, cwd);
  assert.equal(result.code, 0, `sentry ${args.join(" ")} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const entry of Deno.readDir(dir)) {
    out[entry.name] = await Deno.readTextFile(join(dir, entry.name));
  }
  return out;
}

Deno.test("a CI job: init, then mint a workload certificate that openssl accepts", async () => {
  const work = await tempDir();
  await ok(["init", "--issuer-credentials", "./certs", "--trust-domain", "cluster.local"], work);
  // The key private; the certificates public (daprd, as another user, reads ca.crt).
  const modes: Record<string, number> = {
    "ca.crt": 0o644,
    "issuer.crt": 0o644,
    "issuer.key": 0o600,
  };
  for (const [file, mode] of Object.entries(modes)) {
    assert.equal((await Deno.stat(join(work, "certs", file))).mode! & 0o777, mode, file);
  }
  await ok([
    "mint",
    "--profile",
    "workload",
    "--app-id",
    "myapp",
    "--namespace",
    "default",
    "--ca",
    "./certs/issuer.crt",
    "--ca-key",
    "./certs/issuer.key",
    "--out",
    "app.crt",
    "--key-out",
    "app.key",
  ], work);
  assert.equal((await Deno.stat(join(work, "app.key"))).mode! & 0o777, 0o600);
  const verified = await openssl([
    "verify",
    "-x509_strict",
    "-purpose",
    "sslclient",
    "-CAfile",
    join(work, "certs/ca.crt"),
    "-untrusted",
    join(work, "certs/issuer.crt"),
    join(work, "app.crt"),
  ]);
  assert.match(verified, /app\.crt: OK/);
  const text = await openssl(["x509", "-in", join(work, "app.crt"), "-noout", "-text"]);
  assert.match(
    text,
    /URI:spiffe:\/\/cluster\.local\/ns\/default\/myapp/,
    "trust domain taken from the CA",
  );
  assert.match(text, /Subject: \n|Subject:\s*$/m);
  // The key belongs to the certificate.
  const certKey = await openssl(["x509", "-in", join(work, "app.crt"), "-noout", "-pubkey"]);
  const key = await openssl(["pkey", "-in", join(work, "app.key"), "-pubout"]);
  assert.equal(certKey, key);
});

Deno.test("expiry: --warn 400d fails on a fresh one-year bundle, --warn 30d passes", async () => {
  const work = await tempDir();
  await ok([
    "init",
    "--issuer-credentials",
    work,
    "--trust-domain",
    "cluster.local",
    "--issuer-ttl",
    "90d",
  ]);
  const failing = await sentry(["expiry", "--issuer-credentials", work, "--warn", "400d"]);
  assert.equal(failing.code, 1);
  assert.match(failing.stderr, /within --warn 400d/);
  assert.match(
    await ok(["expiry", "--issuer-credentials", work, "--warn", "30d"]),
    /issuer expires .* \(90\.0 days left\)/,
  );
  const close = await sentry(["expiry", "--issuer-credentials", work, "--json", "--warn", "100d"]);
  assert.equal(close.code, 1, "the 90-day issuer is closer than 100d");
  assert.equal(JSON.parse(close.stdout).ok, false);
  const result = await sentry(["expiry", "--issuer-credentials", work, "--json", "--warn", "60d"]);
  assert.equal(result.code, 0);
  const parsed = JSON.parse(result.stdout);
  assert.equal(parsed.issuer.daysLeft, 90);
  assert.equal(parsed.root.daysLeft, 365);
  assert.equal(parsed.ok, true);
  const empty = await sentry(["expiry", "--issuer-credentials", join(work, "none")]);
  assert.equal(empty.code, 1);
  assert.match(empty.stderr, /holds no trust bundle/);
  assert.equal((await sentry(["expiry", "--warn", "soon"])).code, 2);
});

Deno.test("init never overwrites without --force, and never touches a partial bundle", async () => {
  const work = await tempDir();
  await ok(["init", "--issuer-credentials", work]);
  const before = await snapshot(work);
  const again = await sentry(["init", "--issuer-credentials", work]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already holds a trust bundle; nothing was written/);
  assert.deepEqual(await snapshot(work), before);
  await ok(["init", "--issuer-credentials", work, "--force", "--key-algorithm", "ed25519"]);
  const after = await snapshot(work);
  assert.notEqual(after["ca.crt"], before["ca.crt"]);
  assert.match(await openssl(["x509", "-in", join(work, "ca.crt"), "-noout", "-text"]), /ED25519/);
  await Deno.remove(join(work, "issuer.key"));
  const partial = await sentry(["init", "--issuer-credentials", work, "--force"]);
  assert.equal(partial.code, 1);
  assert.match(partial.stderr, /missing .*issuer\.key/);
  assert.equal((await sentry(["init", "--issuer-ttl", "2y"])).code, 2);
  assert.equal(
    (await sentry([
      "init",
      "--root-ttl",
      "30d",
      "--issuer-ttl",
      "31d",
      "--issuer-credentials",
      join(work, "x"),
    ])).code,
    2,
  );
  // --root-ttl alone: the issuer follows it (it used to be refused, the issuer's 365d default
  // being longer than the root).
  await ok(["init", "--issuer-credentials", join(work, "short"), "--root-ttl", "2m"]);
  const notAfter = async (file: string) =>
    (await openssl(["x509", "-in", join(work, "short", file), "-noout", "-enddate"])).trim();
  assert.equal(await notAfter("issuer.crt"), await notAfter("ca.crt"));
});

Deno.test("mint builds a root, an intermediate and leaves that openssl verifies", async () => {
  const work = await tempDir();
  const path = (name: string) => join(work, name);
  await ok([
    "mint",
    "--profile",
    "root-ca",
    "--subject",
    "CN=Test Root,O=Example",
    "--out",
    path("root.crt"),
    "--key-out",
    path("root.key"),
  ]);
  await ok([
    "mint",
    "--profile",
    "intermediate-ca",
    "--ca",
    path("root.crt"),
    "--ca-key",
    path("root.key"),
    "--path-len",
    "0",
    "--key-type",
    "ec-p384",
    "--out",
    path("int.crt"),
    "--key-out",
    path("int.key"),
    "--trust-domain",
    "example.org",
  ]);
  // Dapr's profiles: the root signs certificates only, the issuer CRLs too.
  const root = await openssl(["x509", "-in", path("root.crt"), "-noout", "-text"]);
  assert.match(root, /Key Usage: critical\n\s+Digital Signature, Certificate Sign\n/);
  const intermediate = await openssl(["x509", "-in", path("int.crt"), "-noout", "-text"]);
  assert.match(
    intermediate,
    /Key Usage: critical\n\s+Digital Signature, Certificate Sign, CRL Sign\n/,
  );
  assert.match(intermediate, /Subject: O = spiffe:\/\/example\.org\/ns\/default\/dapr-sentry/);
  assert.match(intermediate, /CA:TRUE, pathlen:0/);
  assert.match(intermediate, /Issuer: CN = Test Root, O = Example/);
  await ok([
    "mint",
    "--profile",
    "leaf",
    "--dns",
    "api.example.org",
    "--dns",
    "localhost",
    "--ip",
    "127.0.0.1,::1",
    "--email",
    "ops@example.org",
    "--eku",
    "server",
    "--ca",
    path("int.crt"),
    "--ca-key",
    path("int.key"),
    "--key-type",
    "rsa-2048",
    "--bundle",
    "--out",
    path("leaf.crt"),
    "--key-out",
    path("leaf.key"),
    "--ttl",
    "2h",
  ]);
  const leafPem = await Deno.readTextFile(path("leaf.crt"));
  assert.equal(leafPem.match(/BEGIN CERTIFICATE/g)!.length, 2, "--bundle appends the intermediate");
  const leaf = await openssl(["x509", "-in", path("leaf.crt"), "-noout", "-text"]);
  assert.match(
    leaf,
    /DNS:api\.example\.org, DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1/,
  );
  assert.match(leaf, /email:ops@example\.org/);
  assert.match(leaf, /TLS Web Server Authentication\n/);
  assert.doesNotMatch(leaf, /Client Authentication/);
  assert.match(leaf, /Digital Signature, Key Encipherment/);
  assert.match(
    await openssl([
      "verify",
      "-x509_strict",
      "-purpose",
      "sslserver",
      "-CAfile",
      path("root.crt"),
      "-untrusted",
      path("leaf.crt"),
      path("leaf.crt"),
    ]),
    /OK/,
  );
  // --csr: certify someone else's key; the key never passes through sentry.
  const csrPath = path("req.csr");
  await Deno.writeTextFile(
    csrPath,
    await makeCsr(work, await generateKey("ed25519"), "/CN=ignored"),
  );
  const out = await ok([
    "mint",
    "--profile",
    "workload",
    "--app-id",
    "svc",
    "--csr",
    csrPath,
    "--ca",
    path("int.crt"),
    "--ca-key",
    path("int.key"),
    "--json",
    "--out",
    path("svc.crt"),
  ]);
  assert.equal(JSON.parse(out).spiffeId, "spiffe://example.org/ns/default/svc");
  assert.match(
    await openssl(["x509", "-in", path("svc.crt"), "-noout", "-text"]),
    /URI:spiffe:\/\/example\.org\/ns\/default\/svc/,
  );
  // NotAfter never beyond the CA: a 10-year leaf under a one-year root is clamped.
  const clamped = JSON.parse(
    await ok([
      "mint",
      "--profile",
      "leaf",
      "--dns",
      "x",
      "--ttl",
      "3650d",
      "--ca",
      path("root.crt"),
      "--ca-key",
      path("root.key"),
      "--out",
      path("long.crt"),
      "--key-out",
      path("long.key"),
      "--json",
    ]),
  );
  assert.equal(clamped.clampedToCa, true);
});

Deno.test("mint refuses bad usage (exit 2) and expired or mismatched CAs (exit 1)", async () => {
  const work = await tempDir();
  const path = (name: string) => join(work, name);
  assert.equal((await sentry(["mint"])).code, 2);
  assert.equal((await sentry(["mint", "--profile", "leaf", "--dns", "x"])).code, 2, "no --key-out");
  assert.equal(
    (await sentry(["mint", "--profile", "workload", "--key-out", path("k")])).code,
    2,
    "no --ca",
  );
  assert.equal(
    (await sentry(["mint", "--profile", "root-ca", "--key-out", path("k"), "--ttl", "1x"])).code,
    2,
  );
  await ok([
    "mint",
    "--profile",
    "root-ca",
    "--out",
    path("root.crt"),
    "--key-out",
    path("root.key"),
  ]);
  await ok([
    "mint",
    "--profile",
    "root-ca",
    "--out",
    path("other.crt"),
    "--key-out",
    path("other.key"),
  ]);
  const mismatch = await sentry([
    "mint",
    "--profile",
    "leaf",
    "--dns",
    "x",
    "--ca",
    path("root.crt"),
    "--ca-key",
    path("other.key"),
    "--key-out",
    path("l.key"),
  ]);
  assert.equal(mismatch.code, 1);
  assert.match(mismatch.stderr, /other\.key does not belong to any certificate in .*root\.crt/);
  // An issuer that expired yesterday (openssl ca can back-date).
  const root = { certPath: path("root.crt"), keyPath: path("root.key") };
  const expired = await opensslIssuer(root, {
    start: opensslTime(new Date(Date.now() - 3 * 86_400_000)),
    end: opensslTime(new Date(Date.now() - 86_400_000)),
  });
  await Deno.writeTextFile(path("expired.crt"), expired.cert);
  await Deno.writeTextFile(path("expired.key"), expired.key);
  const refused = await sentry([
    "mint",
    "--profile",
    "leaf",
    "--dns",
    "x",
    "--ca",
    path("expired.crt"),
    "--ca-key",
    path("expired.key"),
    "--key-out",
    path("l.key"),
  ]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /the CA in --ca expired at/);
});

Deno.test("renew: needs the root key; rotates the issuer of a running server without restart", async () => {
  const dir = await tempDir();
  const work = await tempDir();
  await ok(["init", "--issuer-credentials", dir, "--trust-domain", "cluster.local"]);
  const noKey = await sentry(["renew", "--issuer-credentials", dir]);
  assert.equal(noKey.code, 1);
  assert.match(noKey.stderr, /needs the root key/);

  // Keep the root key this time, and run a server on the store.
  await ok([
    "init",
    "--issuer-credentials",
    dir,
    "--trust-domain",
    "cluster.local",
    "--force",
    "--keep-root-key",
  ]);
  assert.equal((await Deno.stat(join(dir, "ca.key"))).mode! & 0o777, 0o600);
  const server = await startSentry({ dir, args: ["--trust-domain", "cluster.local"] });
  const anchors = await Deno.readTextFile(join(dir, "ca.crt"));
  const client = new SentryClient(server.grpcPort, anchors);
  const csr = await makeCsr(work, await generateKey("ec-p256"));
  try {
    const before = await snapshot(dir);
    const output = await ok(["renew", "--issuer-credentials", dir]);
    assert.match(output, /renewed the issuer/);
    assert.match(output, /sidecars keep their trust anchors/);
    const after = await snapshot(dir);
    assert.equal(after["ca.crt"], before["ca.crt"], "same root");
    assert.equal(after["ca.key"], before["ca.key"]);
    assert.notEqual(after["issuer.crt"], before["issuer.crt"]);
    assert.match(
      await openssl(["x509", "-in", join(dir, "issuer.crt"), "-noout", "-subject"]),
      /O = spiffe:\/\/cluster\.local\/ns\/default\/dapr-sentry/,
    );
    const deadline = Date.now() + 8000;
    while (true) {
      const response = await client.sign({
        id: "app",
        namespace: "default",
        certificateSigningRequest: csr,
      });
      const chain = response.workloadCertificate.toString();
      if (chain.includes(after["issuer.crt"].trim())) break;
      if (Date.now() > deadline) {
        throw new Error("the running server did not pick up the renewed issuer");
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.match(server.logs(), /trust bundle reloaded/);

    // --root rotates both; ca.crt keeps the old root after the new one.
    const rotated = JSON.parse(
      await ok(["renew", "--issuer-credentials", dir, "--root", "--json"]),
    );
    assert.equal(rotated.rotated, "root and issuer");
    assert.equal(rotated.anchors, 2);
    const roots = await Deno.readTextFile(join(dir, "ca.crt"));
    assert.ok(roots.endsWith(before["ca.crt"]), "the old root follows the new one");
    assert.match(
      await openssl(["verify", "-CAfile", join(dir, "ca.crt"), join(dir, "issuer.crt")]),
      /OK/,
    );
  } finally {
    client.close();
    await server.stop();
  }
});

Deno.test("init: refuses without --issuer-credentials, back-dates NotBefore by 15m; a mistyped command gets 'did you mean'", async () => {
  const work = await tempDir();
  const bare = await sentry(["init", "--trust-domain", "cluster.local"], work);
  assert.equal(bare.code, 2, bare.stderr);
  assert.match(bare.stderr, /--issuer-credentials DIR is required/);
  assert.deepEqual(await snapshot(work), {});

  const before = Date.now();
  await ok(["init", "--issuer-credentials", join(work, "certs")]);
  for (const file of ["ca.crt", "issuer.crt"]) {
    const line = await openssl(["x509", "-in", join(work, "certs", file), "-noout", "-startdate"]);
    const notBefore = Date.parse(line.trim().replace(/^notBefore=/, ""));
    const backDated = before - notBefore;
    assert.ok(backDated >= 15 * 60_000 - 1000 && backDated <= 16 * 60_000, `${file}: ${line}`);
  }

  const typo = await sentry(["mitn"]);
  assert.equal(typo.code, 2);
  assert.match(typo.stderr, /unknown command "mitn"; did you mean 'mint'\?/);
  const far = await sentry(["frobnicate"]);
  assert.equal(far.code, 2);
  assert.doesNotMatch(far.stderr, /did you mean/);
});
