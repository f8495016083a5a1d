/**
 * End to end: how the real program starts, refuses to start, restarts and stops. First boot
 * creates the bundle (0700 directory, 0600 files); a restart keeps the same CA; a partial or
 * inconsistent bundle is refused with a message naming the problem and nothing is written;
 * bring-your-own bundles made with openssl are used and never modified; bad flags and bad
 * configuration files stop start-up with a clear message.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { SentryClient, signOnce } from "../helpers/grpc_client.ts";
import { generateKey, makeCsr, openssl, opensslBundle } from "../helpers/openssl.ts";
import {
  ONE_SHOT_SERVER_ARGS,
  runSentry,
  startSentry,
  tempDir,
} from "../helpers/sentry_process.ts";

const FILES = ["ca.crt", "issuer.crt", "issuer.key"];

async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const entry of Deno.readDir(dir)) {
    out[entry.name] = await Deno.readTextFile(join(dir, entry.name));
  }
  return out;
}

/** Runs sentry expecting it to refuse to start; returns its logs (stdout, as Dapr's). */
async function refusedStart(dir: string, extra: string[] = []): Promise<string> {
  const result = await runSentry([
    "--issuer-credentials",
    dir,
    ...ONE_SHOT_SERVER_ARGS,
    ...extra,
  ]);
  assert.equal(result.code, 1, `expected exit code 1, got ${result.code}: ${result.stdout}`);
  return result.stdout;
}

Deno.test("first boot creates the bundle (key 0600, certificates 0644); a restart keeps the same CA", async () => {
  const parent = await tempDir();
  const dir = join(parent, "certs", "nested");
  const first = await startSentry({ dir });
  const created = await snapshot(dir);
  assert.deepEqual(Object.keys(created).sort(), FILES.slice().sort());
  // The key private; the directory and certificates readable by daprd running as another user.
  assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o755);
  const modes: Record<string, number> = {
    "ca.crt": 0o644,
    "issuer.crt": 0o644,
    "issuer.key": 0o600,
  };
  for (const file of FILES) {
    assert.equal((await Deno.stat(join(dir, file))).mode! & 0o777, modes[file], file);
  }
  const issued1 = (await signOnce(first.grpcPort, created["ca.crt"], parent)).workloadCertificate
    .toString();
  assert.equal(await first.stop(), 0);
  assert.match(first.logs(), /generating a new ecdsa-p256 root and issuer/);

  const second = await startSentry({ dir });
  try {
    assert.deepEqual(await snapshot(dir), created, "restart must not rewrite the bundle");
    assert.match(second.logs(), /loaded trust bundle/);
    const issued2 = (await signOnce(second.grpcPort, created["ca.crt"], parent)).workloadCertificate
      .toString();
    // Both leaves are signed by the same issuer (second PEM block).
    assert.equal(
      issued1.split("-----END CERTIFICATE-----")[1],
      issued2.split("-----END CERTIFICATE-----")[1],
    );
  } finally {
    assert.equal(await second.stop("SIGINT"), 0);
  }
});

Deno.test("--key-algorithm ed25519 generates an Ed25519 CA", async () => {
  const sentry = await startSentry({
    args: ["--key-algorithm", "ed25519", "--trust-domain", "cluster.local"],
  });
  try {
    const text = await openssl(["x509", "-in", join(sentry.dir, "issuer.crt"), "-noout", "-text"]);
    assert.match(text, /Public Key Algorithm: ED25519/);
    assert.match(text, /Subject: O = spiffe:\/\/cluster.local\/ns\/default\/dapr-sentry/);
  } finally {
    await sentry.stop();
  }
});

Deno.test("a partial bundle is refused, naming the missing file, and nothing is written", async (t) => {
  for (const missing of FILES) {
    await t.step(`without ${missing}`, async () => {
      const source = await tempDir();
      const first = await startSentry({ dir: source });
      await first.stop();
      await Deno.remove(join(source, missing));
      const before = await snapshot(source);
      const stderr = await refusedStart(source);
      assert.match(stderr, new RegExp(`missing [^ ]*${missing.replace(".", "\\.")}`));
      assert.match(stderr, /never overwrites/);
      assert.deepEqual(await snapshot(source), before);
    });
  }
});

Deno.test("a bundle made with openssl is used as is and never modified", async () => {
  const dir = await tempDir();
  await opensslBundle(dir);
  assert.match(await Deno.readTextFile(join(dir, "issuer.key")), /BEGIN EC PRIVATE KEY/);
  const before = await snapshot(dir);
  const sentry = await startSentry({ dir, args: ["--trust-domain", "cluster.local"] });
  try {
    const chain = (await signOnce(sentry.grpcPort, before["ca.crt"], await tempDir()))
      .workloadCertificate.toString();
    const issuerInChain = chain.split("-----END CERTIFICATE-----\n")[1] +
      "-----END CERTIFICATE-----\n";
    assert.equal(issuerInChain.trim(), before["issuer.crt"].trim());
  } finally {
    await sentry.stop();
  }
  assert.deepEqual(await snapshot(dir), before);
});

Deno.test("inconsistent bundles are refused with the failed check named", async (t) => {
  await t.step("issuer key from another pair", async () => {
    const dir = await tempDir();
    await opensslBundle(dir);
    await Deno.writeTextFile(join(dir, "issuer.key"), await generateKey("ec-p256"));
    const before = await snapshot(dir);
    assert.match(
      await refusedStart(dir),
      /issuer\.key does not match the certificate in .*issuer\.crt/,
    );
    assert.deepEqual(await snapshot(dir), before);
  });
  await t.step("issuer from another root", async () => {
    const dir = await tempDir();
    const other = await tempDir();
    await opensslBundle(dir);
    await opensslBundle(other);
    await Deno.copyFile(join(other, "ca.crt"), join(dir, "ca.crt"));
    assert.match(await refusedStart(dir), /does not chain to any trust anchor/);
  });
  await t.step("issuer is the root itself", async () => {
    const dir = await tempDir();
    await opensslBundle(dir);
    await Deno.copyFile(join(dir, "ca.crt"), join(dir, "issuer.crt"));
    assert.match(await refusedStart(dir), /self-signed root, not an issuer/);
  });
  await t.step("expired issuer", async () => {
    const dir = await tempDir();
    await opensslBundle(dir, { start: "20200101000000Z", end: "20200201000000Z" });
    assert.match(
      await refusedStart(dir),
      /issuer\.crt: certificate #1 has expired \(NotAfter 2020-02-01/,
    );
  });
  await t.step("garbage in ca.crt", async () => {
    const dir = await tempDir();
    await opensslBundle(dir);
    await Deno.writeTextFile(join(dir, "ca.crt"), "not a certificate\n");
    assert.match(await refusedStart(dir), /ca\.crt contains no PEM CERTIFICATE block/);
  });
});

Deno.test("bad flags exit 2 with a usage message; --help lists the flags", async () => {
  const bad = await runSentry(["--no-such-flag"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /flag provided but not defined: -no-such-flag/);
  const badInt = await runSentry(["-port=abc"]);
  assert.equal(badInt.code, 2);
  assert.match(badInt.stderr, /invalid value "abc" for flag -port/);
  const help = await runSentry(["--help"]);
  assert.equal(help.code, 0);
  for (
    const flag of [
      "issuer-credentials",
      "trust-domain",
      "store",
      "key-algorithm",
      "log-as-json",
      "healthz-port",
    ]
  ) {
    assert.match(help.stdout, new RegExp(`--${flag}`));
  }
  const version = await runSentry(["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^sentry \d+\.\d+\.\d+ \((deno|node) /);
  const store = await runSentry(["--store", "k8s"], {
    env: { KUBECONFIG: "", HOME: "/nonexistent", KUBERNETES_SERVICE_HOST: "" },
  });
  assert.equal(store.code, 2);
  assert.match(store.stdout, /level=fatal msg=".*no Kubernetes configuration found/);
  const vault = await runSentry(["--store", "vault"], { env: { VAULT_ADDR: "" } });
  assert.equal(vault.code, 2);
  assert.match(vault.stdout, /--store vault needs --vault-addr or VAULT_ADDR/);
});

Deno.test("a missing or invalid --config file stops start-up naming the file", async (t) => {
  const dir = await tempDir();
  await t.step("missing", async () => {
    const path = join(dir, "nope.yaml");
    const stderr = await refusedStart(join(dir, "certs"), [`--config=${path}`]);
    assert.match(stderr, new RegExp(`configuration file ${path}: file not found`));
  });
  await t.step("bad duration", async () => {
    const path = join(dir, "bad.yaml");
    await Deno.writeTextFile(
      path,
      "kind: Configuration\nspec:\n  mtls:\n    workloadCertTTL: 1d\n",
    );
    const stderr = await refusedStart(join(dir, "certs"), ["-config", path]);
    assert.match(stderr, /bad\.yaml: spec\.mtls\.workloadCertTTL: invalid duration \\?"1d\\?"/);
  });
  await t.step("bad YAML", async () => {
    const path = join(dir, "broken.yaml");
    await Deno.writeTextFile(path, "spec: [unclosed\n");
    assert.match(
      await refusedStart(join(dir, "certs"), ["--config", path]),
      /broken\.yaml: not valid YAML/,
    );
  });
  // Nothing was generated by the refused start-ups.
  await assert.rejects(Deno.stat(join(dir, "certs")));
});

Deno.test("the Configuration from Dapr's guide sets the workload certificate TTL", async () => {
  const dir = await tempDir();
  const config = join(dir, "config.yaml");
  await Deno.writeTextFile(
    config,
    "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: default\nspec:\n" +
      '  mtls:\n    enabled: true\n    workloadCertTTL: "25s"\n    allowedClockSkew: "1m"\n',
  );
  const sentry = await startSentry({
    args: ["--trust-domain", "cluster.local", `--config=${config}`],
  });
  try {
    const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    const client = new SentryClient(sentry.grpcPort, anchors);
    const before = Math.floor(Date.now() / 1000);
    const response = await client.sign({
      id: "app",
      namespace: "default",
      certificateSigningRequest: await makeCsr(dir, await generateKey("ed25519")),
    });
    client.close();
    const validUntil = Number(response.validUntil.seconds);
    assert.ok(
      validUntil >= before + 24 && validUntil <= before + 27,
      `valid_until ${validUntil - before}s ahead`,
    );
    const dates = await openssl(
      ["x509", "-noout", "-startdate"],
      response.workloadCertificate.toString(),
    );
    const notBefore = Date.parse(dates.trim().replace("notBefore=", "")) / 1000;
    assert.ok(Math.abs(before - 60 - notBefore) <= 2, "NotBefore back-dated by the 1m skew");
  } finally {
    await sentry.stop();
  }
});

Deno.test("empty listen addresses serve IPv4 and IPv6, as Dapr's sentry does", async (t) => {
  const sentry = await startSentry({
    args: ["--listen-address=", "--healthz-listen-address=", "--metrics-listen-address="],
  });
  try {
    const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    for (const host of ["127.0.0.1", "::1"]) {
      await t.step(host, async () => {
        const url = (port: number, path: string) =>
          `http://${host.includes(":") ? `[${host}]` : host}:${port}${path}`;
        const health = await fetch(url(sentry.healthPort, "/healthz"));
        assert.equal(health.status, 200);
        await health.body?.cancel();
        const metrics = await fetch(url(sentry.metricsPort, "/"));
        assert.equal(metrics.status, 200);
        await metrics.body?.cancel();
        // The gRPC port: a TLS handshake (HTTP/2) that verifies sentry's certificate.
        const protocol = await new Promise<string | false | null>((resolve, reject) => {
          const socket = tlsConnect({
            host,
            port: sentry.grpcPort,
            servername: "localhost",
            ca: anchors,
            ALPNProtocols: ["h2"],
          }, () => {
            resolve(socket.alpnProtocol);
            socket.destroy();
          });
          socket.on("error", reject);
        });
        assert.equal(protocol, "h2");
      });
    }
  } finally {
    await sentry.stop();
  }
});
