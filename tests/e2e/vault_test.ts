/**
 * End to end: `sentry --store vault` against the fake Vault (tests/fakes/vault.ts). First boot
 * writes version 1 with create-only semantics; a restart reads it; racing replicas converge on
 * one CA; a new version written by an operator reaches the running server; token expiry and
 * Kubernetes re-login; a sealed Vault at start (waits) and mid-run (keeps serving); a deleted or
 * destroyed version is refused; `init`, `expiry` and `renew` work on the Vault store.
 */
import assert from "node:assert/strict";
import { eventually } from "../helpers/eventually.ts";
import { join } from "node:path";
import { FakeVault } from "../fakes/vault.ts";
import { signOnce } from "../helpers/grpc_client.ts";
import { opensslBundle } from "../helpers/openssl.ts";
import {
  ONE_SHOT_SERVER_ARGS,
  runSentry,
  startSentry,
  tempDir,
} from "../helpers/sentry_process.ts";

const PATH = "dapr/sentry/trust-bundle";

function vaultArgs(vault: FakeVault, extra: string[] = []): string[] {
  return [
    "--store",
    "vault",
    "--vault-addr",
    vault.url,
    "--vault-poll-interval",
    "200ms",
    ...extra,
  ];
}

Deno.test("first boot writes version 1 create-only; a restart reads it; an operator's new version is picked up", async () => {
  const vault = await FakeVault.start();
  const work = await tempDir();
  const env = { VAULT_TOKEN: vault.rootToken };
  try {
    const first = await startSentry({ args: vaultArgs(vault), env });
    const stored = vault.read(PATH);
    assert.ok(stored, "a bundle was written");
    assert.equal(stored.version, 1);
    assert.deepEqual(Object.keys(stored.data).sort(), ["ca.crt", "issuer.crt", "issuer.key"]);
    const writes = vault.requests.filter((r) =>
      r.method !== "GET" && r.path.endsWith(`data/${PATH}`)
    );
    assert.equal(writes.length, 1);
    await signOnce(first.grpcPort, stored.data["ca.crt"], work);
    assert.equal(await first.stop(), 0);

    const second = await startSentry({ args: vaultArgs(vault), env });
    try {
      assert.equal(vault.read(PATH)!.version, 1, "a restart writes nothing");
      assert.match(
        second.logs(),
        /loaded trust bundle from Vault secret secret\/dapr\/sentry\/trust-bundle/,
      );
      // An operator rotates the bundle: version 2, made with openssl.
      const dir = await tempDir();
      await opensslBundle(dir);
      const next = {
        "ca.crt": await Deno.readTextFile(join(dir, "ca.crt")),
        "issuer.crt": await Deno.readTextFile(join(dir, "issuer.crt")),
        "issuer.key": await Deno.readTextFile(join(dir, "issuer.key")),
      };
      vault.write(PATH, next);
      await eventually("the new version is served", async () => {
        try {
          return ((await signOnce(second.grpcPort, next["ca.crt"], work)).workloadCertificate
            .toString()).includes(
              next["issuer.crt"].trim(),
            );
        } catch {
          return false; // the server may still present the old chain for a moment
        }
      });
      assert.match(second.logs(), /trust bundle reloaded from Vault secret/);
    } finally {
      await second.stop();
    }
  } finally {
    await vault.close();
  }
});

Deno.test("three replicas racing on an empty Vault converge on one CA", async () => {
  const vault = await FakeVault.start();
  const env = { VAULT_TOKEN: vault.rootToken };
  try {
    const replicas = await Promise.all(
      [1, 2, 3].map(() => startSentry({ args: vaultArgs(vault), env })),
    );
    try {
      const anchors = await Promise.all(replicas.map(async (replica) => {
        const text = await (await fetch(`http://127.0.0.1:${replica.metricsPort}/metrics`)).text();
        assert.match(text, /dapr_sentry_issuercert_expiry_timestamp/);
        return replica.logs();
      }));
      assert.equal(vault.read(PATH)!.version, 1, "exactly one write won");
      const casWrites = vault.requests.filter((r) =>
        r.method !== "GET" && r.path.endsWith(`data/${PATH}`)
      );
      assert.ok(casWrites.length >= 1 && casWrites.length <= 3);
      // Every replica serves the stored CA.
      const ca = vault.read(PATH)!.data["ca.crt"];
      const work = await tempDir();
      for (const replica of replicas) await signOnce(replica.grpcPort, ca, work);
      assert.ok(anchors.some((logs) => /stored the new trust bundle/.test(logs)));
    } finally {
      await Promise.all(replicas.map((replica) => replica.stop()));
    }
  } finally {
    await vault.close();
  }
});

Deno.test("a sealed Vault at start is waited for; sealed mid-run keeps serving", async () => {
  const vault = await FakeVault.start();
  const work = await tempDir();
  try {
    vault.seal();
    setTimeout(() => vault.unseal(), 1500);
    const sentry = await startSentry({
      args: vaultArgs(vault),
      env: { VAULT_TOKEN: vault.rootToken },
    });
    try {
      assert.match(sentry.logs(), /credential store unavailable, retrying .*Vault is sealed/);
      assert.equal(vault.read(PATH)!.version, 1, "generated only after Vault answered");
      vault.seal();
      await new Promise((resolve) => setTimeout(resolve, 600));
      await signOnce(sentry.grpcPort, vault.read(PATH)!.data["ca.crt"], work);
      await eventually(
        "the outage is logged",
        () => /Vault is sealed/.test(sentry.logs().split("serving the CA")[1] ?? ""),
      );
      vault.unseal();
    } finally {
      await sentry.stop();
    }
  } finally {
    await vault.close();
  }
});

Deno.test("a deleted or destroyed latest version is refused, never replaced by a new CA", async (t) => {
  for (const how of ["deleted", "destroyed"] as const) {
    await t.step(how, async () => {
      const vault = await FakeVault.start();
      try {
        const env = { VAULT_TOKEN: vault.rootToken };
        const first = await startSentry({ args: vaultArgs(vault), env });
        await first.stop();
        if (how === "deleted") vault.deleteLatest(PATH);
        else vault.destroyLatest(PATH);
        const refused = await runSentry([
          ...vaultArgs(vault),
          ...ONE_SHOT_SERVER_ARGS,
        ], { env });
        assert.equal(refused.code, 1, refused.stdout);
        assert.match(
          refused.stdout, // the logs, as Dapr's
          new RegExp(`latest version \\(1\\) .* was ${how}: sentry will not generate a new CA`),
        );
        const writes = vault.requests.filter((r) =>
          r.method !== "GET" && r.path.endsWith(`data/${PATH}`)
        );
        assert.equal(writes.length, 1, "only the first boot wrote");
      } finally {
        await vault.close();
      }
    });
  }
});

Deno.test("Kubernetes auth logs in, and logs in again when the token expires", async () => {
  const vault = await FakeVault.start();
  const work = await tempDir();
  const jwtFile = join(work, "sa-token");
  await Deno.writeTextFile(jwtFile, "projected-service-account-jwt");
  // Exactly the policy the README gives operators.
  vault.setPolicy("sentry", [
    { path: "secret/data/dapr/sentry/trust-bundle", capabilities: ["create", "read", "update"] },
    { path: "secret/metadata/dapr/sentry/trust-bundle", capabilities: ["read"] },
  ]);
  vault.addKubernetesRole("dapr-sentry", {
    jwt: "projected-service-account-jwt",
    policies: ["sentry"],
    ttl: 3600,
  });
  try {
    const sentry = await startSentry({
      args: vaultArgs(vault, [
        "--vault-k8s-role",
        "dapr-sentry",
        "--vault-k8s-token-file",
        jwtFile,
      ]),
    });
    try {
      assert.equal(vault.kubernetesLogins, 1);
      vault.expireAllTokens();
      // The next poll gets 403, logs in again, and carries on.
      await eventually("a second login", () => vault.kubernetesLogins >= 2);
      await signOnce(sentry.grpcPort, vault.read(PATH)!.data["ca.crt"], work);
    } finally {
      await sentry.stop();
    }
  } finally {
    await vault.close();
  }
});

Deno.test("init, expiry and renew work on the Vault store, with check-and-set", async () => {
  const vault = await FakeVault.start();
  const env = { VAULT_TOKEN: vault.rootToken };
  const args = ["--store", "vault", "--vault-addr", vault.url];
  try {
    const init = await runSentry([
      "init",
      ...args,
      "--trust-domain",
      "cluster.local",
      "--keep-root-key",
    ], { env });
    assert.equal(init.code, 0, init.stderr);
    assert.equal(vault.read(PATH)!.version, 1);
    assert.ok(vault.read(PATH)!.data["ca.key"], "the root key is kept on request");
    const again = await runSentry(["init", ...args], { env });
    assert.equal(again.code, 1);
    const expiry = await runSentry(["expiry", ...args, "--warn", "30d"], { env });
    assert.equal(expiry.code, 0, expiry.stderr);
    const renew = await runSentry(["renew", ...args], { env });
    assert.equal(renew.code, 0, renew.stderr);
    const after = vault.read(PATH)!;
    assert.equal(after.version, 2);
    const casValues = vault.requests
      .filter((r) => r.method !== "GET" && r.path.endsWith(`data/${PATH}`))
      .map((r) => r.body?.options?.cas);
    assert.deepEqual(casValues, [0, 1], "create-only, then check-and-set on the version read");
    const noToken = await runSentry(["expiry", ...args], { env: {} });
    assert.equal(noToken.code, 2);
    assert.match(noToken.stderr, /VAULT_TOKEN/);
  } finally {
    await vault.close();
  }
});

Deno.test("a renewable token is renewed before it expires", async () => {
  const vault = await FakeVault.start();
  const work = await tempDir();
  const token = vault.createToken({ ttl: 3, renewable: true, policies: ["root"] });
  try {
    const sentry = await startSentry({ args: vaultArgs(vault), env: { VAULT_TOKEN: token } });
    try {
      await eventually(
        "a renew-self call",
        () =>
          vault.requests.some((r) => r.path === "/v1/auth/token/renew-self" && r.status === 200),
      );
      // Past the original 3 s lifetime, the token still works: polls succeed and no error is logged.
      await new Promise((resolve) => setTimeout(resolve, 3500));
      const lastPoll = vault.requests.filter((r) => r.path.includes("/metadata/")).at(-1);
      assert.equal(lastPoll?.status, 200);
      assert.doesNotMatch(sentry.logs(), /permission denied/);
      await signOnce(sentry.grpcPort, vault.read(PATH)!.data["ca.crt"], work);
    } finally {
      await sentry.stop();
    }
  } finally {
    await vault.close();
  }
});
