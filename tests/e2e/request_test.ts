/**
 * End to end: `sentry request` (the real program) obtains certificates from a real sentry
 * server as daprd does, and the written files are checked with openssl. Refusals (wrong
 * SPIFFE ID of the server, wrong anchors, a request sentry denies, bad usage, no server)
 * exit non-zero with a clear message and write nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { openssl, opensslRoot } from "../helpers/openssl.ts";
import {
  type Finished,
  freePort,
  runSentry,
  startSentry,
  tempDir,
} from "../helpers/sentry_process.ts";

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g;

/** Permission bits of a file. */
async function modeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mode! & 0o777;
}

/** Names in a directory (empty when it does not exist). */
async function listing(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return names.sort();
}

/**
 * The checks a daprd user would make on the written files: the chain verifies with openssl
 * against ca.pem, the certificate names `spiffeId`, and key.pem is the certified key.
 */
async function checkWrittenFiles(dir: string, spiffeId: string): Promise<void> {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  const ca = join(dir, "ca.pem");
  assert.equal(await modeOf(key), 0o600, "key.pem must be private");
  assert.equal(await modeOf(cert), 0o644);
  assert.equal(await modeOf(ca), 0o644);

  const blocks = (await Deno.readTextFile(cert)).match(CERT_BLOCK) ?? [];
  assert.ok(blocks.length >= 2, "cert.pem holds the leaf and its issuer chain");
  const untrusted = join(dir, "..", `untrusted-${crypto.randomUUID()}.pem`);
  await Deno.writeTextFile(untrusted, blocks.slice(1).join(""));
  const verified = await openssl([
    "verify",
    "-x509_strict",
    "-purpose",
    "sslclient",
    "-CAfile",
    ca,
    "-untrusted",
    untrusted,
    cert,
  ]);
  assert.match(verified, /cert\.pem: OK/);

  const text = await openssl(["x509", "-in", cert, "-noout", "-text"]);
  assert.match(text, /X509v3 Subject Alternative Name: critical\s+URI:(\S+)/);
  assert.equal(/Subject Alternative Name: critical\s+URI:(\S+)/.exec(text)![1], spiffeId);

  const certKey = await openssl(["x509", "-in", cert, "-noout", "-pubkey"]);
  const ourKey = await openssl(["pkey", "-in", key, "-pubout"]);
  assert.equal(certKey, ourKey, "key.pem is the certified key");
  assert.match(await Deno.readTextFile(key), /^-----BEGIN PRIVATE KEY-----\n/);
}

function assertFailed(result: Finished, code: number, pattern: RegExp): void {
  assert.equal(result.code, code, `exit code (stderr: ${result.stderr})`);
  assert.match(result.stderr, pattern);
  assert.equal(result.stdout, "");
}

Deno.test("sentry request obtains certificates like daprd and refuses what daprd refuses", async (t) => {
  const sentry = await startSentry({ env: { NAMESPACE: "dapr-system" } });
  const anchors = join(sentry.dir, "ca.crt");
  const work = await tempDir("sentry-request-test-");
  /** `sentry request` against the running server, as sentry's clients in dapr-system see it. */
  const request = (args: string[], options: { cwd?: string } = {}) =>
    runSentry([
      "request",
      `--address=127.0.0.1:${sentry.grpcPort}`,
      `--anchors=${anchors}`,
      "--control-plane-namespace=dapr-system",
      ...args,
    ], options);
  try {
    await t.step("ed25519 (default) into the current directory", async () => {
      const dir = join(work, "ed25519");
      await Deno.mkdir(dir);
      const result = await request(["--app-id", "myapp"], { cwd: dir });
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr, "");
      const lines = result.stdout.trimEnd().split("\n");
      const real = await Deno.realPath(dir);
      assert.deepEqual(lines.slice(0, 3), [
        `wrote ${join(real, "cert.pem")}`,
        `wrote ${join(real, "key.pem")}`,
        `wrote ${join(real, "ca.pem")}`,
      ]);
      assert.equal(lines[3], "SPIFFE ID: spiffe://public/ns/default/myapp");
      assert.match(lines[4], /^expires: +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.deepEqual(await listing(dir), ["ca.pem", "cert.pem", "key.pem"]);
      await checkWrittenFiles(dir, "spiffe://public/ns/default/myapp");
      assert.match(
        await openssl(["pkey", "-in", join(dir, "key.pem"), "-noout", "-text"]),
        /ED25519/,
      );
      // ca.pem holds sentry's trust anchors.
      assert.deepEqual(
        (await Deno.readTextFile(join(dir, "ca.pem"))).match(CERT_BLOCK),
        (await Deno.readTextFile(anchors)).match(CERT_BLOCK),
      );
    });

    await t.step("ec-p256, trust domain, namespace, --out-dir and --json", async () => {
      const dir = join(work, "ec", "nested");
      const result = await request([
        "--app-id=orders",
        "--namespace=prod",
        "--trust-domain=cluster.local",
        "--validator=insecure",
        "--key-type=ec-p256",
        `--out-dir=${dir}`,
        "--json",
      ]);
      assert.equal(result.code, 0, result.stderr);
      const output = JSON.parse(result.stdout);
      assert.deepEqual(Object.keys(output).sort(), [
        "ca",
        "certificate",
        "key",
        "notAfter",
        "spiffeId",
      ]);
      assert.equal(output.certificate, join(dir, "cert.pem"));
      assert.equal(output.key, join(dir, "key.pem"));
      assert.equal(output.ca, join(dir, "ca.pem"));
      assert.equal(output.spiffeId, "spiffe://cluster.local/ns/prod/orders");
      const endDate = await openssl(["x509", "-in", output.certificate, "-noout", "-enddate"]);
      assert.equal(
        new Date(endDate.trim().replace(/^notAfter=/, "")).toISOString(),
        output.notAfter,
      );
      const lifetimeMs = Date.parse(output.notAfter) - Date.now();
      assert.ok(Math.abs(lifetimeMs - 24 * 3_600_000) < 120_000, `lifetime ${lifetimeMs}ms`);
      await checkWrittenFiles(dir, "spiffe://cluster.local/ns/prod/orders");
      assert.match(
        await openssl(["pkey", "-in", output.key, "-noout", "-text"]),
        /ASN1 OID: prime256v1/,
      );
    });

    await t.step("files are replaced, and key.pem is 0600 even if it was not", async () => {
      const dir = join(work, "replace");
      await Deno.mkdir(dir);
      await Deno.writeTextFile(join(dir, "key.pem"), "old", { mode: 0o644 });
      await Deno.chmod(join(dir, "key.pem"), 0o644);
      await Deno.writeTextFile(join(dir, "cert.pem"), "old");
      const result = await request(["--app-id=myapp", "--key-type=ec-p384", `--out-dir=${dir}`]);
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(await listing(dir), ["ca.pem", "cert.pem", "key.pem"], "no temp files left");
      await checkWrittenFiles(dir, "spiffe://public/ns/default/myapp");
    });

    await t.step(
      "wrong --control-plane-trust-domain: SPIFFE ID mismatch, nothing written",
      async () => {
        const dir = join(work, "wrong-td");
        const result = await request([
          "--app-id=myapp",
          `--out-dir=${dir}`,
          "--control-plane-trust-domain=cluster.local",
        ]);
        assertFailed(result, 1, /SPIFFE ID mismatch/);
        assert.match(result.stderr, /spiffe:\/\/localhost\/ns\/dapr-system\/dapr-sentry/);
        assert.match(
          result.stderr,
          /expected spiffe:\/\/cluster\.local\/ns\/dapr-system\/dapr-sentry/,
        );
        assert.deepEqual(await listing(dir), []);
      },
    );

    await t.step("wrong --control-plane-namespace (default 'default'): refused", async () => {
      const dir = join(work, "wrong-ns");
      const result = await runSentry([
        "request",
        `--address=127.0.0.1:${sentry.grpcPort}`,
        `--anchors=${anchors}`,
        "--app-id=myapp",
        `--out-dir=${dir}`,
      ]);
      assertFailed(
        result,
        1,
        /SPIFFE ID mismatch.*expected spiffe:\/\/localhost\/ns\/default\/dapr-sentry/,
      );
      assert.deepEqual(await listing(dir), []);
    });

    await t.step("anchors sentry's chain does not lead to: refused, nothing written", async () => {
      const other = await opensslRoot(await tempDir("sentry-request-other-root-"));
      const dir = join(work, "wrong-anchors");
      const result = await request([
        "--app-id=myapp",
        `--out-dir=${dir}`,
        `--anchors=${other.certPath}`,
      ]);
      assertFailed(result, 1, /not trusted/);
      assert.deepEqual(await listing(dir), []);
    });

    await t.step("a request sentry refuses: PERMISSION_DENIED, nothing written", async () => {
      const dir = join(work, "denied");
      const result = await request(["--app-id=my.app", `--out-dir=${dir}`]);
      assertFailed(
        result,
        1,
        /SignCertificate failed: PERMISSION_DENIED: invalid request: parameter app-id cannot contain dots/,
      );
      assert.deepEqual(await listing(dir), []);
    });

    await t.step("a validator sentry has not enabled: INVALID_ARGUMENT", async () => {
      const dir = join(work, "jwks");
      const result = await request(["--app-id=myapp", "--validator=jwks", `--out-dir=${dir}`]);
      assertFailed(result, 1, /SignCertificate failed: INVALID_ARGUMENT: .*not enabled/);
      assert.deepEqual(await listing(dir), []);
    });

    await t.step("bad usage exits 2", async () => {
      const dir = join(work, "usage");
      assertFailed(await request([`--out-dir=${dir}`]), 2, /--app-id is required/);
      assertFailed(
        await runSentry(["request", "--app-id=myapp", `--out-dir=${dir}`]),
        2,
        /--anchors is required/,
      );
      assertFailed(
        await request(["--app-id=myapp", "--key-type=dsa", `--out-dir=${dir}`]),
        2,
        /key-type/,
      );
      assertFailed(
        await request(["--app-id=myapp", "--token=a", "--token-file=b", `--out-dir=${dir}`]),
        2,
        /--token or --token-file/,
      );
      assertFailed(
        await request(["--app-id=myapp", "--validator=spiffe", `--out-dir=${dir}`]),
        2,
        /validator/,
      );
      assert.deepEqual(await listing(dir), []);
      const help = await runSentry(["request", "--help"]);
      assert.equal(help.code, 0);
      assert.match(help.stdout, /--control-plane-trust-domain/);
    });
  } finally {
    await sentry.stop();
    await Deno.remove(work, { recursive: true });
    await Deno.remove(sentry.dir, { recursive: true });
  }
});

Deno.test("sentry request without a server fails clearly within the timeout", async (t) => {
  const work = await tempDir("sentry-request-down-");
  const root = await opensslRoot(work);
  const out = join(work, "out");
  try {
    await t.step("nothing listening: UNAVAILABLE at once", async () => {
      const port = await freePort();
      const started = Date.now();
      const result = await runSentry([
        "request",
        `--address=127.0.0.1:${port}`,
        `--anchors=${root.certPath}`,
        "--app-id=myapp",
        "--timeout=5s",
        `--out-dir=${out}`,
      ]);
      const elapsed = Date.now() - started;
      assertFailed(
        result,
        1,
        new RegExp(`cannot reach sentry at 127\\.0\\.0\\.1:${port}.*ECONNREFUSED`),
      );
      assert.ok(elapsed < 5_000, `took ${elapsed}ms`);
      assert.deepEqual(await listing(out), []);
    });

    await t.step("a server that never answers: DEADLINE_EXCEEDED after --timeout", async () => {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const held: Deno.Conn[] = [];
      const accepting = (async () => {
        try {
          for await (const conn of listener) held.push(conn);
        } catch {
          // listener closed
        }
      })();
      try {
        const started = Date.now();
        const result = await runSentry([
          "request",
          `--address=127.0.0.1:${listener.addr.port}`,
          `--anchors=${root.certPath}`,
          "--app-id=myapp",
          "--timeout=1s",
          `--out-dir=${out}`,
        ]);
        const elapsed = Date.now() - started;
        assertFailed(result, 1, /no answer from sentry at .* within 1s \(DEADLINE_EXCEEDED\)/);
        assert.ok(elapsed >= 1_000 && elapsed < 6_000, `took ${elapsed}ms`);
        assert.deepEqual(await listing(out), []);
      } finally {
        listener.close();
        await accepting;
        for (const conn of held) {
          try {
            conn.close();
          } catch {
            // already closed by the peer
          }
        }
      }
    });
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});
