/**
 * A whole root CA rotation under real traffic: two real daprd v1.18.3 sidecars, whose trust
 * anchors are the OLD root only (daprd v1.18 reads `DAPR_TRUST_ANCHORS` once, at start), call
 * each other in a loop — every call a new mTLS handshake — while `sentry rotate start` begins a
 * rotation on the running sentry, which then switches signing to the new issuer after the
 * propagation window and drops the old root once the old certificates expired. Expected: zero
 * failed calls (the bridge in the new issuer's chain lets the old-anchored daprds verify it),
 * both daprds end with certificates from the new issuer, whose chain openssl verifies against
 * the new root alone and, through the bridge, against the old root alone. The timeline of the
 * cycle is printed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startTcpRelay, startTinyApp, writeDaprdConfig } from "../helpers/daprd.ts";
import {
  currentIssuer,
  daprdFor,
  issuerStates,
  pemBlocks,
  shortLivedConfig,
  sleep,
  startInvocationLoop,
  TRUST_DOMAIN,
  withSentry,
} from "../helpers/daprd_mesh.ts";
import { eventually } from "../helpers/eventually.ts";
import { metricsText } from "../helpers/metrics.ts";
import { verifyChain } from "../helpers/openssl.ts";
import { freePort, runSentry, tempDir } from "../helpers/sentry_process.ts";

/** Workload certificate lifetime: daprd renews at half of it. */
const TTL_S = 16;
/** How long the combined anchors are served before signing switches. */
const PROPAGATION_S = 20;

/** Records when ca.crt and issuer.crt changed, for the timeline. */
function watchBundle(dir: string, started: number): { events: string[]; stop(): void } {
  const events: string[] = [];
  let last = "";
  const timer = setInterval(async () => {
    try {
      const anchors = pemBlocks(await Deno.readTextFile(join(dir, "ca.crt"))).length;
      const digest = await crypto.subtle.digest(
        "SHA-256",
        new TextEncoder().encode(await currentIssuer(dir)),
      );
      const issuer = [...new Uint8Array(digest).slice(0, 4)]
        .map((byte) => byte.toString(16).padStart(2, "0")).join("");
      const state = await Deno.readTextFile(join(dir, "rotation-state.json"))
        .then((text) => JSON.parse(text).phase as string, () => "none");
      const now = `anchors ${anchors}, rotation ${state}, issuer sha256 ${issuer}…`;
      if (now !== last) events.push(`${((Date.now() - started) / 1000).toFixed(1)} s: ${now}`);
      last = now;
    } catch {
      // a file being replaced
    }
  }, 200);
  return { events, stop: () => clearInterval(timer) };
}

Deno.test("zero failed invocations through a whole root rotation, with daprds that only know the old root", async () => {
  const work = await tempDir();
  const dir = await tempDir();
  const init = await runSentry([
    "init",
    "--issuer-credentials",
    dir,
    "--trust-domain",
    TRUST_DOMAIN,
  ]);
  assert.equal(init.code, 0, init.stderr);
  const sentryConfig = join(work, "sentry.yaml");
  await Deno.writeTextFile(sentryConfig, shortLivedConfig(TTL_S));
  const oldRoot = await Deno.readTextFile(join(dir, "ca.crt"));
  const oldIssuer = await currentIssuer(dir);

  await withSentry(
    { dir, args: [`--config=${sentryConfig}`, "--rotation-check-interval", "1s"] },
    async (sentry, processes) => {
      let portB = 0;
      const relay = processes.add(await startTcpRelay(() => portB));
      const portA = await freePort();
      const configA = await writeDaprdConfig(work, "appa", { appa: portA, appb: relay.port });
      const configB = await writeDaprdConfig(work, "appb", { appa: portA }, { appId: "appa" });
      const appA = processes.add(startTinyApp("appa"));
      const appB = processes.add(startTinyApp("appb"));
      const a = await daprdFor(processes, sentry, {
        appId: "appa",
        anchors: oldRoot,
        config: configA,
        app: appA,
        internalGrpcPort: portA,
      });
      await a.waitHealthy();
      await sleep(3000); // A and B renew apart
      const b = await daprdFor(processes, sentry, {
        appId: "appb",
        anchors: oldRoot,
        config: configB,
        app: appB,
      });
      portB = b.internalGrpcPort;
      await b.waitHealthy();

      const loop = startInvocationLoop(a, b, relay);
      const timeline = watchBundle(dir, Date.now());
      try {
        await sleep(1000);
        const started = await runSentry([
          "rotate",
          "start",
          "--issuer-credentials",
          dir,
          "--rotation-propagation-window",
          `${PROPAGATION_S}s`,
          "--workload-cert-ttl",
          `${TTL_S}s`,
        ]);
        assert.equal(started.code, 0, started.stderr);
        const startedAt = loop.elapsed();
        const newRoot = await Deno.readTextFile(join(dir, "rotation-ca.crt"));
        const newIssuer = pemBlocks(await Deno.readTextFile(join(dir, "rotation-issuer.crt")))[0];
        assert.equal(pemBlocks(await Deno.readTextFile(join(dir, "ca.crt"))).length, 2);

        await eventually(
          "sentry signs with the new issuer after the propagation window",
          async () => await currentIssuer(dir) === newIssuer,
          (PROPAGATION_S + 15) * 1000,
        );
        const switchedAt = loop.elapsed();
        assert.ok(
          switchedAt - startedAt >= (PROPAGATION_S - 1) * 1000,
          `switched after ${switchedAt - startedAt} ms`,
        );
        await eventually(
          "the old root leaves the trust anchors once the old certificates expired",
          async () => await Deno.readTextFile(join(dir, "ca.crt")) === newRoot,
          (TTL_S + 20) * 1000,
        );
        const completedAt = loop.elapsed();
        await eventually(
          "both daprds present certificates from the new issuer",
          () => {
            const last = loop.rounds.at(-1);
            return last?.issuerA === newIssuer && last?.issuerB === newIssuer;
          },
          3 * TTL_S * 1000,
        );
        await sleep(2000); // more calls on the new root only
        await loop.stop();
        timeline.stop();

        const rounds = loop.rounds;
        const failures = rounds.filter((r) => r.error);
        const { states, count } = issuerStates(rounds, { [oldIssuer]: "old", [newIssuer]: "new" });
        const summary = `${rounds.length} calls, ${failures.length} failed, ` +
          `${relay.connections()} connections; A/B issuers: old/old ${count("old/old")}, ` +
          `new/old ${count("new/old")}, old/new ${count("old/new")}, new/new ${
            count("new/new")
          }; ` +
          `rotation started at ${startedAt} ms, signing switched at ${switchedAt} ms, ` +
          `complete at ${completedAt} ms, loop ${loop.elapsed()} ms\n` +
          `timeline:\n  ${timeline.events.join("\n  ")}`;
        console.log(summary);
        assert.deepEqual(failures, [], summary);
        assert.equal(states.filter((s) => s.includes("unknown")).length, 0, summary);
        assert.ok(count("new/new") >= 3, summary);
        assert.equal(relay.connections(), rounds.length, `one handshake per call: ${summary}`);

        // The daprds still trust only the old root, and verify the new chain through the bridge;
        // a newcomer with only the new root verifies it directly.
        for (const daprd of [a, b]) {
          const chain = await daprd.presentedChain();
          assert.equal(pemBlocks(chain)[1], newIssuer);
          for (const anchors of [oldRoot, newRoot]) {
            assert.match(await verifyChain(work, anchors, chain, "sslclient"), /OK/);
          }
        }
        const metrics = await metricsText(sentry.metricsPort);
        assert.match(metrics, /^dapr_sentry_rootcert_rotation_total\{phase="signing"\} 1$/m);
        assert.match(metrics, /^dapr_sentry_rootcert_rotation_total\{phase="complete"\} 1$/m);
        assert.doesNotMatch(metrics, /^dapr_sentry_cert_sign_failure_total\{/m);
      } finally {
        timeline.stop();
        await loop.stop();
      }
    },
  );
});
