/**
 * End to end: changes reach a running sentry without a restart. The Configuration file is
 * edited in place, saved by rename and swapped Kubernetes-style (`..data` symlink); a broken
 * file changes nothing but a log line and a metric. The issuer is rotated on disk under the
 * same root, one file at a time, while a client calls in a loop: no call fails and new
 * certificates chain to the new issuer. A corrupt bundle is ignored. An expiring issuer is
 * warned about, and once expired the server reports not ready and refuses to sign.
 */
import assert from "node:assert/strict";
import { eventually } from "../helpers/eventually.ts";
import { join } from "node:path";
import { SentryClient } from "../helpers/grpc_client.ts";
import { metric, metricsText } from "../helpers/metrics.ts";
import {
  generateKey,
  makeCsr,
  openssl,
  opensslBundle,
  opensslIssuer,
  opensslTime,
} from "../helpers/openssl.ts";
import { type RunningSentry, startSentry, tempDir } from "../helpers/sentry_process.ts";

const CONFIG = (ttl: string) =>
  `apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: default\nspec:\n  mtls:\n` +
  `    enabled: true\n    workloadCertTTL: "${ttl}"\n    allowedClockSkew: "0s"\n`;

/** Signs once and returns the certificate's lifetime in seconds (valid_until - now). */
async function lifetimeSeconds(client: SentryClient, csr: string): Promise<number> {
  const response = await client.sign({
    id: "app",
    namespace: "default",
    certificateSigningRequest: csr,
  });
  return Number(response.validUntil.seconds) - Date.now() / 1000;
}

async function withClient<T>(
  sentry: RunningSentry,
  fn: (client: SentryClient) => Promise<T>,
): Promise<T> {
  const client = new SentryClient(
    sentry.grpcPort,
    await Deno.readTextFile(join(sentry.dir, "ca.crt")),
  );
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

Deno.test("configuration changes apply to the next certificate without a restart", async (t) => {
  const work = await tempDir();
  const config = join(work, "config.yaml");
  await Deno.writeTextFile(config, CONFIG("1h"));
  const sentry = await startSentry({ args: [`--config=${config}`] });
  const csr = await makeCsr(work, await generateKey("ec-p256"));
  const pid = sentry.child.pid;
  try {
    await withClient(sentry, async (client) => {
      const near = (target: number) => async () =>
        Math.abs((await lifetimeSeconds(client, csr)) - target) < 3;
      assert.ok(await near(3600)(), "starts with the file's 1h TTL");

      await t.step("edited in place", async () => {
        await Deno.writeTextFile(config, CONFIG("25s"));
        await eventually("TTL 25s", near(25));
      });
      await t.step("a broken file changes nothing but a log line and a metric", async () => {
        await Deno.writeTextFile(config, "spec: [broken\n");
        await eventually(
          "the rejection is logged",
          () => Promise.resolve(/configuration not reloaded/.test(sentry.logs())),
        );
        assert.match(
          sentry.logs(),
          new RegExp(`configuration not reloaded: configuration file ${config}: not valid YAML`),
        );
        assert.ok(await near(25)(), "the previous settings stay in force");
        const text = await metricsText(sentry.metricsPort);
        assert.equal(metric(text, "dapr_sentry_config_reload_failed_total"), 1);
        await Deno.writeTextFile(config, CONFIG("-5m"));
        await eventually(
          "the second rejection",
          async () =>
            metric(
              await metricsText(sentry.metricsPort),
              "dapr_sentry_config_reload_failed_total",
            ) === 2,
        );
        assert.match(sentry.logs(), /workloadCertTTL: must be positive/);
        assert.ok(await near(25)());
      });
      await t.step("saved by rename, as editors do", async () => {
        const temporary = join(work, ".config.yaml.swp");
        await Deno.writeTextFile(temporary, CONFIG("40s"));
        await Deno.rename(temporary, config);
        await eventually("TTL 40s", near(40));
      });
      await t.step("SIGHUP re-reads the file", async () => {
        Deno.kill(pid, "SIGHUP");
        await eventually(
          "reload logged",
          () => Promise.resolve(/reload requested/.test(sentry.logs())),
        );
        assert.ok(await near(40)());
      });
    });
    const text = await metricsText(sentry.metricsPort);
    assert.ok(metric(text, "dapr_sentry_config_reload_total") >= 2);
  } finally {
    assert.equal(await sentry.stop(), 0);
  }
});

Deno.test("a Kubernetes-style ..data symlink swap of the configuration is picked up", async () => {
  const work = await tempDir();
  const mount = join(work, "mount");
  await Deno.mkdir(join(mount, "..v1"), { recursive: true });
  await Deno.writeTextFile(join(mount, "..v1", "config.yaml"), CONFIG("1h"));
  await Deno.symlink("..v1", join(mount, "..data"));
  await Deno.symlink(join("..data", "config.yaml"), join(mount, "config.yaml"));
  const sentry = await startSentry({ args: ["--config", join(mount, "config.yaml")] });
  const csr = await makeCsr(work, await generateKey("ed25519"));
  try {
    await withClient(sentry, async (client) => {
      assert.ok(Math.abs((await lifetimeSeconds(client, csr)) - 3600) < 3);
      // What kubelet does: write a new timestamped directory, then atomically repoint ..data.
      await Deno.mkdir(join(mount, "..v2"));
      await Deno.writeTextFile(join(mount, "..v2", "config.yaml"), CONFIG("30s"));
      await Deno.symlink("..v2", join(mount, "..data_tmp"));
      await Deno.rename(join(mount, "..data_tmp"), join(mount, "..data"));
      await eventually(
        "TTL 30s",
        async () => Math.abs((await lifetimeSeconds(client, csr)) - 30) < 3,
      );
    });
  } finally {
    await sentry.stop();
  }
});

/** The issuer certificate (second PEM block) of a signed chain. */
function issuerOf(chainPem: string): string {
  return chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)![1];
}

Deno.test("an issuer rotated on disk is used within seconds, with no failed call and no restart", async () => {
  const dir = await tempDir();
  const work = await tempDir();
  const root = await opensslBundle(dir);
  const sentry = await startSentry({ dir, args: ["--trust-domain", "cluster.local"] });
  const csr = await makeCsr(work, await generateKey("ec-p256"));
  const oldIssuer = (await Deno.readTextFile(join(dir, "issuer.crt"))).trim();
  const next = await opensslIssuer(root);
  try {
    await withClient(sentry, async (client) => {
      let calls = 0;
      const failures: string[] = [];
      let sawNew = false;
      let stop = false;
      const loop = (async () => {
        while (!stop) {
          try {
            const response = await client.sign({
              id: "loop",
              namespace: "default",
              certificateSigningRequest: csr,
            });
            calls++;
            const issuer = issuerOf(response.workloadCertificate.toString());
            if (issuer === next.cert.trim()) sawNew = true;
            else if (sawNew) {
              failures.push("an old-issuer certificate after the new one was in use");
            } else assert.equal(issuer, oldIssuer);
          } catch (error) {
            failures.push((error as Error).message);
          }
        }
      })();
      await new Promise((resolve) => setTimeout(resolve, 500));
      // Files arrive one at a time, as an operator copying them would: key first.
      await Deno.writeTextFile(join(dir, "issuer.key"), next.key);
      await new Promise((resolve) => setTimeout(resolve, 700));
      await Deno.writeTextFile(join(dir, "issuer.crt"), next.cert);
      await eventually("certificates from the new issuer", () => Promise.resolve(sawNew));
      await new Promise((resolve) => setTimeout(resolve, 300));
      stop = true;
      await loop;
      assert.deepEqual(
        failures,
        [],
        `${failures.length} failed calls out of ${calls + failures.length}`,
      );
      assert.ok(calls > 20, `only ${calls} calls ran across the swap`);
    });
    assert.match(
      sentry.logs(),
      /is not usable: .*issuer\.key does not match/,
      "the half-written state is reported",
    );
    assert.match(sentry.logs(), /trust bundle reloaded from directory .*: issuer rotated/);
    const text = await metricsText(sentry.metricsPort);
    assert.equal(metric(text, "dapr_sentry_issuercert_changed_total"), 1);
    // The server's own certificate now comes from the new issuer too.
    const sClient = await new Deno.Command("openssl", {
      args: ["s_client", "-connect", `127.0.0.1:${sentry.grpcPort}`, "-showcerts"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    const served = new TextDecoder().decode(sClient.stdout);
    assert.equal(issuerOf(served), next.cert.trim());
    assert.equal(
      sentry.child.pid > 0 && (await Deno.stat(`/proc/${sentry.child.pid}`)).isDirectory,
      true,
    );
  } finally {
    assert.equal(await sentry.stop(), 0);
  }
});

Deno.test("a corrupt bundle on disk is ignored and the last good one keeps serving", async () => {
  const work = await tempDir();
  const sentry = await startSentry();
  const csr = await makeCsr(work, await generateKey("ec-p256"));
  const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
  try {
    await Deno.writeTextFile(join(sentry.dir, "ca.crt"), "-----BEGIN CERTIFICATE-----\ngarbage\n");
    await Deno.remove(join(sentry.dir, "issuer.key"));
    await eventually(
      "the problem is logged",
      () => Promise.resolve(/still serving with the current bundle/.test(sentry.logs())),
    );
    const client = new SentryClient(sentry.grpcPort, anchors);
    const response = await client.sign({
      id: "app",
      namespace: "default",
      certificateSigningRequest: csr,
    });
    client.close();
    assert.match(response.workloadCertificate.toString(), /BEGIN CERTIFICATE/);
    const health = await fetch(`http://127.0.0.1:${sentry.healthPort}/healthz`);
    await health.body?.cancel();
    assert.equal(health.status, 200);
    assert.equal(
      metric(await metricsText(sentry.metricsPort), "dapr_sentry_issuercert_changed_total"),
      0,
    );
    // Nothing was written back: the directory still holds what the operator left.
    assert.equal(
      await Deno.readTextFile(join(sentry.dir, "ca.crt")),
      "-----BEGIN CERTIFICATE-----\ngarbage\n",
    );
    await assert.rejects(Deno.stat(join(sentry.dir, "issuer.key")));
  } finally {
    await sentry.stop();
  }
});

Deno.test("an expiring issuer is warned about; once expired, not ready and no signing", async () => {
  const dir = await tempDir();
  const work = await tempDir();
  const root = await opensslBundle(dir);
  const now = new Date();
  const expiry = new Date(Math.ceil((now.getTime() + 6000) / 1000) * 1000);
  const shortLived = await opensslIssuer(root, {
    start: opensslTime(new Date(now.getTime() - 60_000)),
    end: opensslTime(expiry),
  });
  await Deno.writeTextFile(join(dir, "issuer.crt"), shortLived.cert);
  await Deno.writeTextFile(join(dir, "issuer.key"), shortLived.key);
  const sentry = await startSentry({ dir });
  const csr = await makeCsr(work, await generateKey("ec-p256"));
  try {
    assert.match(
      sentry.logs(),
      /level=warning msg="Dapr issuer certificate expiration warning: certificate expires in 0 days and 0 hours"/,
    );
    assert.match(
      sentry.logs(),
      /msg="Dapr root certificate expiration warning: certificate expires in (29|30) days and \d+ hours"/,
    );
    const expirySeconds = metric(
      await metricsText(sentry.metricsPort),
      "dapr_sentry_issuercert_expiry_timestamp",
    );
    assert.equal(expirySeconds, expiry.getTime() / 1000);
    await withClient(sentry, async (client) => {
      const before = await client.sign({
        id: "app",
        namespace: "default",
        certificateSigningRequest: csr,
      });
      assert.equal(
        Number(before.validUntil.seconds),
        expiry.getTime() / 1000,
        "clamped to the issuer's NotAfter",
      );
      await new Promise((resolve) => setTimeout(resolve, expiry.getTime() - Date.now() + 1500));
      const health = await fetch(`http://127.0.0.1:${sentry.healthPort}/healthz`);
      await health.body?.cancel();
      assert.equal(health.status, 503);
      await assert.rejects(
        client.sign({ id: "app", namespace: "default", certificateSigningRequest: csr }),
        (error: { code: number; details: string }) => {
          assert.equal(error.code, 13);
          assert.match(error.details, /the issuer certificate expired at/);
          return true;
        },
      );
    });
    const dates = await openssl(["x509", "-noout", "-enddate"], shortLived.cert);
    assert.match(dates, /notAfter=/);
  } finally {
    await sentry.stop();
  }
});
