/**
 * End to end: `sentry --store vault` against a real HashiCorp Vault server (v1.21.0 run as in
 * production: file storage, HTTPS, real seal and unseal; tests/helpers/real_vault.ts), the same
 * promises as tests/e2e/vault_test.ts checks against the fake, with Vault's audit log in place of
 * the fake's request log: first boot writes version 1 with `cas: 0` and a restart writes nothing;
 * an operator's new version is picked up; racing replicas converge on one CA; README.md's policy
 * is all sentry needs (server, `renew`, `expiry`) and a policy without the metadata rule is
 * named; renewable tokens are renewed; a deleted or destroyed latest version is refused; a sealed
 * or restarting Vault never stops serving; Kubernetes auth against a real kube-apiserver logs in
 * again when its token expires; `--vault-namespace` against Vault OSS.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually } from "../helpers/eventually.ts";
import { signOnce } from "../helpers/grpc_client.ts";
import { type RealVault, startRealVault } from "../helpers/real_vault.ts";
import { startRealKubeApiServer } from "../helpers/real_kube_apiserver.ts";
import {
  ONE_SHOT_SERVER_ARGS,
  runSentry,
  startSentry,
  tempDir,
} from "../helpers/sentry_process.ts";
import {
  auditedAt,
  BUNDLE_PATH,
  bundleWrites,
  DATA_PATH,
  METADATA_PATH,
  operatorBundle,
  readmePolicy,
  realVaultArgs,
  signsWith,
  spawnSentry,
  vaultCaFile,
} from "../helpers/vault_real_scenarios.ts";

/** The bundle Vault holds now (throws when there is none). */
async function stored(
  vault: RealVault,
): Promise<{ version: number; data: Record<string, string> }> {
  const now = await vault.read(BUNDLE_PATH);
  assert.ok(now, "Vault holds a bundle");
  return now;
}

/** An operator writes a new version (openssl-made) and the running sentry on `grpcPort` signs with it. */
async function operatorVersionPickedUp(vault: RealVault, grpcPort: number, work: string) {
  const next = await operatorBundle();
  const version = await vault.write(BUNDLE_PATH, next);
  await eventually(
    `sentry signs with the operator's version ${version}`,
    () => signsWith(grpcPort, next, work),
    15_000,
  );
  return { version, bundle: next };
}

Deno.test("real Vault: first boot writes version 1 with cas 0, a restart writes nothing, an operator's new version is picked up", async () => {
  await using vault = await startRealVault();
  const caFile = await vaultCaFile(vault);
  const work = await tempDir();
  const env = { VAULT_TOKEN: vault.rootToken };

  const first = await startSentry({ args: realVaultArgs(vault, caFile), env });
  try {
    const bundle = await stored(vault);
    assert.equal(bundle.version, 1);
    assert.deepEqual(Object.keys(bundle.data).sort(), ["ca.crt", "issuer.crt", "issuer.key"]);
    const writes = await bundleWrites(vault);
    assert.equal(writes.length, 1, JSON.stringify(writes));
    assert.equal(writes[0].data?.options?.cas, 0, "create only");
    assert.equal(writes[0].error, undefined);
    await signOnce(first.grpcPort, bundle.data["ca.crt"], work);
  } finally {
    assert.equal(await first.stop(), 0);
  }

  const ca = (await stored(vault)).data["ca.crt"];
  const second = await startSentry({ args: realVaultArgs(vault, caFile), env });
  try {
    assert.equal((await bundleWrites(vault)).length, 1, "a restart writes nothing");
    assert.equal(await vault.currentVersion(BUNDLE_PATH), 1);
    assert.match(
      second.logs(),
      /loaded trust bundle from Vault secret secret\/dapr\/sentry\/trust-bundle/,
    );
    await signOnce(second.grpcPort, ca, work); // the same CA: the client trusts only it

    const { version } = await operatorVersionPickedUp(vault, second.grpcPort, work);
    assert.equal(version, 2);
    assert.match(second.logs(), /trust bundle reloaded from Vault secret/);
    assert.equal((await bundleWrites(vault)).length, 2, "only the operator wrote version 2");
  } finally {
    await second.stop();
  }
});

/** Each replica's CA is the one stored, every write was cas 0, and exactly one of them won. */
async function convergedOnOne(vault: RealVault, grpcPorts: number[], logs: string[]) {
  assert.equal(await vault.currentVersion(BUNDLE_PATH), 1, "one version stored");
  const writes = await bundleWrites(vault);
  assert.ok(writes.length >= 1 && writes.length <= 3, JSON.stringify(writes));
  assert.ok(writes.every((write) => write.data?.options?.cas === 0), "create-only writes");
  assert.equal(writes.filter((write) => write.error === undefined).length, 1, "one write won");
  // Vault's audit log gives a refused check-and-set as "invalid request" (the HTTP answer, which
  // sentry reads, says "check-and-set parameter did not match the current version").
  const refused = writes.filter((write) => write.error !== undefined);
  for (const lost of refused) assert.match(lost.error!, /invalid request/);
  const ca = (await stored(vault)).data["ca.crt"];
  const work = await tempDir();
  for (const port of grpcPorts) await signOnce(port, ca, work); // each serves the stored CA
  const said = (pattern: RegExp) => logs.filter((text) => pattern.test(text)).length;
  assert.equal(said(/stored the new trust bundle/), 1, "one replica's write won");
  assert.equal(
    said(/another instance stored a trust bundle .* first: using it/),
    refused.length,
    "each refused replica adopted the winner's bundle",
  );
  assert.equal(said(/loaded trust bundle/), 3 - writes.length, "the others found it stored");
  return writes.length;
}

Deno.test("real Vault: three replicas started together on an empty path converge on one CA", async (t) => {
  await t.step("Vault unsealed", async () => {
    await using vault = await startRealVault();
    const caFile = await vaultCaFile(vault);
    const env = { VAULT_TOKEN: vault.rootToken };
    const replicas = await Promise.all(
      [1, 2, 3].map(() => startSentry({ args: realVaultArgs(vault, caFile), env })),
    );
    try {
      const writes = await convergedOnOne(
        vault,
        replicas.map((replica) => replica.grpcPort),
        replicas.map((replica) => replica.logs()),
      );
      console.log(`${writes} cas-0 write(s), ${writes - 1} refused by check-and-set`);
    } finally {
      await Promise.all(replicas.map((replica) => replica.stop()));
    }
  });
  // Waiting together for a sealed Vault, their retries come within milliseconds of each other
  // once it is unsealed: the writes race for real.
  await t.step("Vault sealed, then unsealed under them", async () => {
    await using vault = await startRealVault();
    const caFile = await vaultCaFile(vault);
    await vault.seal();
    const env = { VAULT_TOKEN: vault.rootToken };
    const replicas = await Promise.all(
      [1, 2, 3].map(() => spawnSentry(realVaultArgs(vault, caFile), env)),
    );
    try {
      await eventually(
        "all three wait for Vault",
        () => replicas.every((replica) => /Vault is sealed/.test(replica.logs())),
      );
      await vault.unseal();
      await eventually("all three serve", async () => {
        const states = await Promise.all(replicas.map((replica) => replica.healthz()));
        return states.every((status) => status === 200);
      }, 20_000);
      const writes = await convergedOnOne(
        vault,
        replicas.map((replica) => replica.grpcPort),
        replicas.map((replica) => replica.logs()),
      );
      console.log(`${writes} cas-0 write(s), ${writes - 1} refused by check-and-set`);
    } finally {
      await Promise.all(replicas.map((replica) => replica.stop()));
    }
  });
});

Deno.test("real Vault: README's policy is all sentry needs (server, restart, renew, expiry); without the metadata rule the problem is named", async () => {
  await using vault = await startRealVault();
  const caFile = await vaultCaFile(vault);
  const work = await tempDir();
  const policy = await readmePolicy();

  // First, the policy without the metadata rule, on the empty path: sentry must not generate.
  const withoutMetadata = policy.replace(/path "secret\/metadata\/[^"]*" \{[^}]*\}\n?/, "");
  assert.match(withoutMetadata, /secret\/data\//);
  assert.doesNotMatch(withoutMetadata, /metadata/);
  await vault.setPolicy("sentry-no-metadata", withoutMetadata);
  const limited = await vault.createToken({ policies: ["sentry-no-metadata"] });
  const denied = await spawnSentry(realVaultArgs(vault, caFile), { VAULT_TOKEN: limited });
  try {
    await eventually(
      "sentry names the permission problem",
      () => /permission denied/.test(denied.logs()) || denied.exitCode() !== undefined,
      20_000,
    );
    assert.match(
      denied.logs(),
      new RegExp(`Vault GET /v1/${METADATA_PATH}: 403: .*permission denied`),
    );
    assert.equal(await denied.healthz(), 503, "it does not serve");
    assert.equal(await vault.currentVersion(BUNDLE_PATH), 0, "nothing was generated");
    assert.deepEqual(await bundleWrites(vault), []);
  } finally {
    await denied.stop(2_000); // SIGTERM alone does not stop it while it waits (its own test below)
  }

  // Exactly README's policy: first boot, restart, renew, expiry.
  await vault.setPolicy("sentry", policy);
  const token = await vault.createToken({ policies: ["sentry"] });
  const env = { VAULT_TOKEN: token };
  const first = await startSentry({ args: realVaultArgs(vault, caFile), env });
  const ca = (await stored(vault)).data["ca.crt"];
  await signOnce(first.grpcPort, ca, work);
  assert.equal(await first.stop(), 0);
  const second = await startSentry({ args: realVaultArgs(vault, caFile), env });
  try {
    assert.equal(await vault.currentVersion(BUNDLE_PATH), 1, "the restart wrote nothing");
    await signOnce(second.grpcPort, ca, work);
  } finally {
    assert.equal(await second.stop(), 0);
  }
  const cli = ["--store", "vault", "--vault-addr", vault.url, "--vault-cacert", caFile];
  // The server keeps no root key (ca.key), so renew replaces root and issuer together.
  const renew = await runSentry(["renew", ...cli, "--root"], { env });
  assert.equal(renew.code, 0, renew.stdout + renew.stderr);
  assert.equal(await vault.currentVersion(BUNDLE_PATH), 2, "renew wrote version 2");
  assert.deepEqual((await bundleWrites(vault)).map((write) => write.data?.options?.cas), [0, 1]);
  const expiry = await runSentry(["expiry", ...cli, "--warn", "30d"], { env });
  assert.equal(expiry.code, 0, expiry.stdout + expiry.stderr);
  const sinceReadme = (await vault.audited()).slice(
    (await vault.audited()).findIndex((entry) => entry.path === "sys/policies/acl/sentry"),
  );
  const refused = sinceReadme.filter((entry) => entry.error !== undefined);
  assert.deepEqual(refused, [], "nothing sentry asked for under README's policy was refused");
});

Deno.test("real Vault: a token that may read the bundle but not its metadata is named while serving (its polls are refused)", async () => {
  await using vault = await startRealVault();
  const caFile = await vaultCaFile(vault);
  const policy = await readmePolicy();
  const withoutMetadata = policy.replace(/path "secret\/metadata\/[^"]*" \{[^}]*\}\n?/, "");
  await vault.setPolicy("sentry-no-metadata", withoutMetadata);
  const limited = await vault.createToken({ policies: ["sentry-no-metadata"] });
  const next = await operatorBundle();
  await vault.write(BUNDLE_PATH, next);

  const sentry = await startSentry({
    args: realVaultArgs(vault, caFile),
    env: { VAULT_TOKEN: limited },
  });
  try {
    await eventually(
      "a few refused polls",
      async () =>
        (await auditedAt(vault, METADATA_PATH)).filter((entry) =>
          /permission denied/.test(entry.error ?? "")
        ).length >= 5,
    );
    const dataReads = (await auditedAt(vault, DATA_PATH)).filter((entry) =>
      entry.operation === "read"
    );
    console.log(
      `refused metadata polls: ${
        (await auditedAt(vault, METADATA_PATH)).length
      }, data reads: ${dataReads.length}`,
    );
    assert.match(
      sentry.logs(),
      new RegExp(`${METADATA_PATH}.*permission denied`),
      "the refused polls are logged (nothing else tells the operator that new versions are only found by reloading)",
    );
  } finally {
    await sentry.stop();
  }
});

Deno.test("real Vault: SIGTERM while sentry waits for a sealed Vault at start stops it", async () => {
  await using vault = await startRealVault();
  const caFile = await vaultCaFile(vault);
  await vault.seal();
  const sentry = await spawnSentry(realVaultArgs(vault, caFile), { VAULT_TOKEN: vault.rootToken });
  await eventually("it waits for Vault", () => /Vault is sealed/.test(sentry.logs()));
  const { code, forced } = await sentry.stop();
  assert.equal(forced, false, `SIGTERM did not stop it within 10 s:\n${sentry.logs()}`);
  assert.equal(code, 0, sentry.logs());
});

Deno.test("real Vault: a renewable 6 s token (explicit max 1 h) is renewed: 15 s later sentry still signs and picks up a new version", async () => {
  await using vault = await startRealVault();
  const caFile = await vaultCaFile(vault);
  const work = await tempDir();
  await vault.setPolicy("sentry", await readmePolicy()); // renew-self comes from `default`
  const token = await vault.createToken({
    policies: ["sentry"],
    ttl: "6s",
    explicitMaxTtl: "1h",
    renewable: true,
  });
  const startedAt = Date.now();
  const sentry = await startSentry({
    args: realVaultArgs(vault, caFile),
    env: { VAULT_TOKEN: token },
  });
  try {
    const renewals = async () =>
      (await auditedAt(vault, "auth/token/renew-self")).filter((entry) => !entry.error);
    await eventually(
      "15 s have passed, with renewals",
      async () => Date.now() - startedAt >= 15_000 && (await renewals()).length >= 2,
      30_000,
    );
    const lookup = await vault.must("POST", "auth/token/lookup", { token });
    assert.ok(lookup.body.data.ttl > 0, "the token is alive past its first 6 s");
    assert.ok(!(await vault.audited()).some((e) => /permission denied/.test(e.error ?? "")));
    await signOnce(sentry.grpcPort, (await stored(vault)).data["ca.crt"], work);
    await operatorVersionPickedUp(vault, sentry.grpcPort, work);
    assert.doesNotMatch(sentry.logs(), /could not renew|permission denied/);
  } finally {
    await sentry.stop();
  }
});

Deno.test("real Vault: a deleted or destroyed latest version is refused, never replaced by a new CA", async (t) => {
  for (const how of ["deleted", "destroyed"] as const) {
    await t.step(how, async () => {
      await using vault = await startRealVault();
      const caFile = await vaultCaFile(vault);
      const env = { VAULT_TOKEN: vault.rootToken };
      const first = await startSentry({ args: realVaultArgs(vault, caFile), env });
      await first.stop();
      const ca = (await stored(vault)).data["ca.crt"];
      await vault.latest(BUNDLE_PATH, how === "deleted" ? "delete" : "destroy");
      const refused = await runSentry([...realVaultArgs(vault, caFile), ...ONE_SHOT_SERVER_ARGS], {
        env,
      });
      assert.equal(refused.code, 1, refused.stdout + refused.stderr);
      assert.match(
        refused.stdout + refused.stderr,
        new RegExp(`latest version \\(1\\) .* was ${how}: sentry will not generate a new CA`),
      );
      assert.equal(await vault.currentVersion(BUNDLE_PATH), 1, "no new version");
      assert.equal((await bundleWrites(vault)).length, 1, "only the first boot wrote");
      if (how === "deleted") {
        await vault.latest(BUNDLE_PATH, "undelete");
        const back = await startSentry({ args: realVaultArgs(vault, caFile), env });
        try {
          await signOnce(back.grpcPort, ca, await tempDir()); // the same CA
          assert.equal(await vault.currentVersion(BUNDLE_PATH), 1);
        } finally {
          await back.stop();
        }
      }
    });
  }
});

Deno.test("real Vault: sealed at start is waited for (healthz 503); sealed mid-run keeps serving; after unseal a new version is picked up", async () => {
  await using vault = await startRealVault();
  const caFile = await vaultCaFile(vault);
  const work = await tempDir();
  await vault.seal();
  const sentry = await spawnSentry(realVaultArgs(vault, caFile), { VAULT_TOKEN: vault.rootToken });
  try {
    await eventually(
      "it waits for the sealed Vault",
      async () =>
        /credential store unavailable, retrying .*Vault is sealed/.test(sentry.logs()) &&
        (await sentry.healthz()) === 503,
    );
    assert.equal(sentry.exitCode(), undefined);
    await vault.unseal();
    await eventually(
      "it serves once Vault is unsealed",
      async () => (await sentry.healthz()) === 200,
      20_000,
    );
    const bundle = await stored(vault);
    assert.equal(bundle.version, 1, "generated only after Vault answered");
    assert.equal((await bundleWrites(vault)).length, 1);
    await signOnce(sentry.grpcPort, bundle.data["ca.crt"], work);

    await vault.seal();
    await eventually(
      "the outage is logged",
      () => /Vault is sealed/.test(sentry.logs().split("serving the CA")[1] ?? ""),
    );
    for (let i = 0; i < 3; i++) await signOnce(sentry.grpcPort, bundle.data["ca.crt"], work);
    assert.equal(await sentry.healthz(), 200, "still healthy while Vault is sealed");
    await vault.unseal();
    await operatorVersionPickedUp(vault, sentry.grpcPort, work);
  } finally {
    const { code, forced } = await sentry.stop();
    assert.equal(forced, false);
    assert.equal(code, 0);
  }
});

Deno.test("real Vault: restarting the Vault server under a running sentry: it signs throughout and picks up a new version afterwards", async () => {
  await using vault = await startRealVault();
  const caFile = await vaultCaFile(vault);
  const work = await tempDir();
  const sentry = await startSentry({
    args: realVaultArgs(vault, caFile),
    env: { VAULT_TOKEN: vault.rootToken },
  });
  try {
    const ca = (await stored(vault)).data["ca.crt"];
    let restarting = true;
    const failures: string[] = [];
    let calls = 0;
    const signing = (async () => {
      while (restarting) {
        try {
          await signOnce(sentry.grpcPort, ca, work);
        } catch (error) {
          failures.push((error as Error).message);
        }
        calls++;
      }
    })();
    try {
      await vault.restart({ unseal: true });
    } finally {
      restarting = false;
      await signing;
    }
    assert.deepEqual(failures, [], `${calls} sign calls during the restart`);
    assert.ok(calls > 0);
    console.log(`${calls} sign calls during the Vault restart, none failed`);
    // Its polls saw the outage (refused connections, then a sealed Vault) and it kept serving.
    await eventually(
      "the outage is logged",
      () => /is unreachable|Vault is sealed/.test(sentry.logs().split("serving the CA")[1] ?? ""),
    );
    assert.equal(await vault.currentVersion(BUNDLE_PATH), 1, "the restart changed no version");
    assert.equal((await bundleWrites(vault)).length, 1);
    await operatorVersionPickedUp(vault, sentry.grpcPort, work);
  } finally {
    await sentry.stop();
  }
});

Deno.test("real Vault: --vault-namespace against Vault Community Edition (no namespaces) is refused at start, naming the version", async () => {
  await using vault = await startRealVault();
  const caFile = await vaultCaFile(vault);
  const refused = await runSentry(
    [...realVaultArgs(vault, caFile, ["--vault-namespace", "team-a"]), ...ONE_SHOT_SERVER_ARGS],
    { env: { VAULT_TOKEN: vault.rootToken } },
  );
  const said = refused.stdout + refused.stderr;
  assert.equal(refused.code, 1, said);
  assert.match(said, /namespace/);
  assert.match(said, /1\.21\.0/);
  assert.equal(await vault.currentVersion(BUNDLE_PATH), 0, "nothing written in the root namespace");
  assert.deepEqual(await auditedAt(vault, DATA_PATH), [], "the bundle was not even read");
});

Deno.test("real Vault: Kubernetes auth against a real kube-apiserver (TokenReview) logs in, signs, and logs in again when its token expires", async () => {
  await using kube = await startRealKubeApiServer();
  await using vault = await startRealVault();
  const caFile = await vaultCaFile(vault);
  const work = await tempDir();
  await vault.setPolicy("sentry", await readmePolicy());
  await vault.must("POST", "sys/auth/kubernetes", { type: "kubernetes" });
  // Nothing beyond host, CA and reviewer token: Vault >= 1.9 skips the issuer check
  // (disable_iss_validation defaults to true) and the role's audience is sent in the TokenReview.
  await vault.must("POST", "auth/kubernetes/config", {
    kubernetes_host: kube.url,
    kubernetes_ca_cert: kube.caPem,
    token_reviewer_jwt: kube.adminToken,
  });
  // The login token lives 10 s and cannot be renewed past that: sentry must log in again.
  await vault.must("POST", "auth/kubernetes/role/dapr-sentry", {
    bound_service_account_names: ["dapr-sentry"],
    bound_service_account_namespaces: ["dapr-system"],
    audience: "vault",
    token_policies: ["sentry"],
    token_ttl: "10s",
    token_max_ttl: "10s",
  });
  const jwtFile = join(work, "sa-token");
  await Deno.writeTextFile(
    jwtFile,
    await kube.serviceAccountToken("dapr-system", "dapr-sentry", ["vault"]),
  );
  const logins = async () =>
    (await auditedAt(vault, "auth/kubernetes/login")).filter((entry) => !entry.error);

  const sentry = await startSentry({
    args: realVaultArgs(vault, caFile, [
      "--vault-k8s-role",
      "dapr-sentry",
      "--vault-k8s-token-file",
      jwtFile,
    ]),
    env: {},
  });
  try {
    assert.equal((await logins()).length, 1, "one login at start");
    assert.equal((await logins())[0].data?.role, "dapr-sentry");
    assert.match(sentry.logs(), /logged in to Vault at .* with Kubernetes role dapr-sentry/);
    const bundle = await stored(vault);
    assert.equal(bundle.version, 1);
    await signOnce(sentry.grpcPort, bundle.data["ca.crt"], work);

    await eventually(
      "a second login once the first token expired",
      async () => (await logins()).length >= 2,
      30_000,
    );
    await signOnce(sentry.grpcPort, bundle.data["ca.crt"], work);
    await operatorVersionPickedUp(vault, sentry.grpcPort, work);
    const refusedLogins = (await auditedAt(vault, "auth/kubernetes/login")).filter((e) => e.error);
    assert.deepEqual(refusedLogins, []);
  } finally {
    await sentry.stop();
  }
});
