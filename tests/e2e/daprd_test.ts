/**
 * End to end with the real Dapr sidecar: daprd v1.18.3 (built from Dapr's Go module by
 * tests/dapr/build.sh) gets its mTLS identity from our sentry. One daprd becomes healthy and
 * presents a certificate chain from our issuer; two daprds invoke each other's apps over mTLS
 * (sentry's generated bundle, an openssl bundle, an Ed25519 bundle), with an access control
 * list that only the caller's certificate can satisfy; the invocations keep working across an
 * issuer rotation on the running sentry, each one over a new mTLS handshake; and daprds that
 * trust another CA, or expect sentry under another trust domain, refuse it with their own
 * verification errors.
 *
 * Name resolution: the `kubernetes` resolver with a fixed template (see tests/helpers/daprd.ts),
 * because mDNS needs a multicast interface and `deno task test:binary` runs this file in a
 * network namespace with loopback only.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type RunningDaprd,
  startTcpRelay,
  startTinyApp,
  type TinyApp,
  WORKLOAD_TRUST_DOMAIN,
  writeDaprdConfig,
} from "../helpers/daprd.ts";
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
import { metric, metricsText } from "../helpers/metrics.ts";
import { openssl, opensslBundle, verifyChain } from "../helpers/openssl.ts";
import { freePort, runSentry, tempDir } from "../helpers/sentry_process.ts";

/** openssl's view of one certificate: `-text` output. */
async function certText(work: string, pem: string): Promise<string> {
  const path = join(work, `cert-${crypto.randomUUID()}.pem`);
  await Deno.writeTextFile(path, pem);
  return await openssl(["x509", "-in", path, "-noout", "-text"]);
}

/**
 * Checks the chain a daprd presents to its peers: a leaf whose only identity is the SPIFFE ID
 * of `appId`, signed by `issuer` (the chain's second block), verified strictly by openssl
 * against `anchors` for both TLS purposes.
 */
async function assertIdentity(
  work: string,
  daprd: RunningDaprd,
  anchors: string,
  issuer: string,
): Promise<void> {
  const chain = await daprd.presentedChain();
  const [leaf, ...rest] = pemBlocks(chain);
  assert.equal(rest[0], issuer, `${daprd.appId} presents a chain from the current issuer`);
  const text = await certText(work, leaf);
  assert.match(
    text,
    new RegExp(`URI:spiffe://${WORKLOAD_TRUST_DOMAIN}/ns/default/${daprd.appId}\\s*\\n`),
  );
  assert.match(text, /Subject: *\n/, "empty subject");
  for (const purpose of ["sslserver", "sslclient"] as const) {
    assert.match(await verifyChain(work, anchors, chain, purpose), /OK/);
  }
}

Deno.test("daprd gets its workload identity from sentry and becomes healthy", async () => {
  const work = await tempDir();
  await withSentry({}, async (sentry, processes) => {
    const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    const config = await writeDaprdConfig(work, "solo", {});
    const daprd = await daprdFor(processes, sentry, { appId: "solo", anchors, config });
    await daprd.waitHealthy();
    assert.match(daprd.logs(), /Security is initialized successfully/);
    assert.match(daprd.logs(), /Initialized name resolution to kubernetes/);

    const text = await metricsText(sentry.metricsPort);
    assert.equal(metric(text, "dapr_sentry_cert_sign_request_received_total"), 1);
    assert.equal(metric(text, "dapr_sentry_cert_sign_success_total"), 1);
    assert.doesNotMatch(text, /^dapr_sentry_cert_sign_failure_total\{/m);

    await assertIdentity(work, daprd, anchors, await currentIssuer(sentry.dir));
    // The leaf is daprd's own key (Ed25519 in v1.18) certified by our issuer, as Dapr's
    // profile says: digital signature only, server + client auth, no CA.
    const leaf = await certText(work, pemBlocks(await daprd.presentedChain())[0]);
    assert.match(leaf, /Public Key Algorithm: ED25519/);
    assert.match(leaf, /X509v3 Key Usage: critical\s+Digital Signature\s*\n/);
    assert.match(leaf, /TLS Web Server Authentication, TLS Web Client Authentication/);
    assert.doesNotMatch(leaf, /CA:TRUE/);
  });
});

/** What the tiny app answers, parsed. */
interface AppAnswer {
  app: string;
  method: string;
  path: string;
  caller: string | null;
}

/**
 * Two daprds with apps `appa` and `appb` on the sentry; appb's daprd admits only appa (its
 * ACL), so a 200 proves that daprd B read appa's SPIFFE ID from the certificate our sentry
 * issued. Invokes both ways, checks each identity chain, and counts what sentry signed.
 * With `intruder`, a third daprd `appc` with a valid certificate is refused by the ACL.
 */
async function invocationScenario(
  options: {
    dir?: string;
    args?: string[];
    intruder?: boolean;
    check?: (dir: string) => Promise<void>;
  },
): Promise<void> {
  const work = await tempDir();
  await withSentry({ dir: options.dir, args: options.args }, async (sentry, processes) => {
    await options.check?.(sentry.dir);
    const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    const ports = { appa: await freePort(), appb: await freePort(), appc: await freePort() };
    const appA = processes.add(startTinyApp("appa"));
    const appB = processes.add(startTinyApp("appb"));
    const configA = await writeDaprdConfig(work, "appa", ports);
    const configB = await writeDaprdConfig(work, "appb", ports, { appId: "appa" });
    const ids = options.intruder ? ["appa", "appb", "appc"] as const : ["appa", "appb"] as const;
    const daprds: Record<string, RunningDaprd> = {};
    for (const id of ids) {
      daprds[id] = await daprdFor(processes, sentry, {
        appId: id,
        anchors,
        config: id === "appb" ? configB : configA,
        app: id === "appa" ? appA : id === "appb" ? appB : undefined,
        internalGrpcPort: ports[id],
      });
    }
    await Promise.all(Object.values(daprds).map((d) => d.waitHealthy()));

    for (const [caller, app, method] of [["appa", "appb", "hello"], ["appb", "appa", "hi"]]) {
      const answer = await daprds[caller].invoke(app, method);
      assert.equal(answer.status, 200, answer.body);
      assert.deepEqual(JSON.parse(answer.body) as AppAnswer, {
        app,
        method: "GET",
        path: `/${method}`,
        caller,
      });
    }
    const calls = (app: TinyApp) => app.requests().filter((r) => !r.startsWith("GET /dapr/"));
    assert.deepEqual(calls(appB), ["GET /hello"]);
    assert.deepEqual(calls(appA), ["GET /hi"]);

    if (options.intruder) {
      const denied = await daprds.appc.invoke("appb", "hello");
      assert.equal(denied.status, 403, denied.body);
      assert.match(
        denied.body,
        new RegExp(
          `access control policy has denied access to id: spiffe://${WORKLOAD_TRUST_DOMAIN}/ns/default/appc`,
        ),
      );
      assert.deepEqual(calls(appB), ["GET /hello"], "the refused call never reached app B");
    }

    const issuer = await currentIssuer(sentry.dir);
    for (const daprd of Object.values(daprds)) {
      await assertIdentity(work, daprd, anchors, issuer);
    }
    const text = await metricsText(sentry.metricsPort);
    assert.equal(metric(text, "dapr_sentry_cert_sign_success_total"), ids.length);
  });
}

Deno.test("service invocation over mTLS, certificates from sentry's generated bundle", async () => {
  await invocationScenario({ intruder: true });
});

Deno.test("service invocation over mTLS, certificates from an openssl bundle", async () => {
  const dir = await tempDir();
  await opensslBundle(dir);
  await invocationScenario({
    dir,
    check: async (d) => {
      // Still the operator's files, untouched: the chain daprd presents ends in openssl's issuer.
      assert.match(await Deno.readTextFile(join(d, "issuer.key")), /BEGIN EC PRIVATE KEY/);
    },
  });
});

Deno.test("service invocation over mTLS, Ed25519 root and issuer", async () => {
  await invocationScenario({
    args: ["--key-algorithm", "ed25519"],
    check: async (d) => {
      const issuer = await Deno.readTextFile(join(d, "issuer.crt"));
      const text = await openssl(["x509", "-noout", "-text"], issuer);
      assert.match(text, /Public Key Algorithm: ED25519/);
      assert.match(text, /Signature Algorithm: ED25519/);
    },
  });
});

Deno.test("daprds that trust another CA or expect another sentry identity never get healthy", async () => {
  const other = await tempDir();
  const init = await runSentry([
    "init",
    "--issuer-credentials",
    other,
    "--trust-domain",
    TRUST_DOMAIN,
  ]);
  assert.equal(init.code, 0, init.stderr);
  const work = await tempDir();
  await withSentry({}, async (sentry, processes) => {
    const anchors = await Deno.readTextFile(join(sentry.dir, "ca.crt"));
    // Anchors of a CA with the same name and trust domain, but another key.
    const stranger = await daprdFor(processes, sentry, {
      appId: "stranger",
      anchors: await Deno.readTextFile(join(other, "ca.crt")),
      config: await writeDaprdConfig(work, "stranger", {}),
    });
    // The right anchors, but daprd expects sentry to be spiffe://other.example/ns/default/dapr-sentry.
    const elsewhere = await daprdFor(processes, sentry, {
      appId: "elsewhere",
      anchors,
      config: await writeDaprdConfig(work, "elsewhere", {}),
      controlPlaneTrustDomain: "other.example",
    });
    await Promise.all([stranger, elsewhere].map(async (daprd) => {
      await assert.rejects(daprd.waitHealthy(3000), /did not become healthy in time/);
      assert.equal(daprd.exited(), undefined, "daprd keeps trying until it is stopped");
    }));
    const text = await metricsText(sentry.metricsPort);
    assert.equal(
      metric(text, "dapr_sentry_cert_sign_request_received_total"),
      0,
      "both dropped the connection before sending a CSR",
    );
    // daprd reports why when it is stopped: Go's verification error, from its own log.
    await Promise.all([stranger.stop(), elsewhere.stop()]);
    for (const daprd of [stranger, elsewhere]) {
      assert.match(daprd.logs(), /Fetching initial identity/);
      assert.doesNotMatch(daprd.logs(), /Security is initialized successfully/);
    }
    assert.match(
      stranger.logs(),
      /failed to retrieve the initial identity: error establishing connection to sentry: .*authentication handshake failed: x509svid: could not verify leaf certificate: x509: certificate signed by unknown authority/,
    );
    assert.match(
      elsewhere.logs(),
      /failed to retrieve the initial identity: error establishing connection to sentry: .*authentication handshake failed: unexpected ID \\+"spiffe:\/\/cluster\.local\/ns\/default\/dapr-sentry\\+"/,
    );
  });
});

Deno.test("invocations keep working across an issuer rotation on the running sentry", async () => {
  // daprd renews at half the certificate's life (NotBefore to NotAfter): every 10 s here.
  const TTL_S = 20;
  // daprd B starts this much later than A, so that the two renew apart: for a while one
  // presents a certificate from the new issuer and the other one from the old issuer.
  const STAGGER_MS = 4000;
  const work = await tempDir();
  const dir = await tempDir();
  const init = await runSentry([
    "init",
    "--issuer-credentials",
    dir,
    "--trust-domain",
    TRUST_DOMAIN,
    "--keep-root-key",
  ]);
  assert.equal(init.code, 0, init.stderr);
  const sentryConfig = join(work, "sentry.yaml");
  await Deno.writeTextFile(sentryConfig, shortLivedConfig(TTL_S));

  await withSentry({ dir, args: [`--config=${sentryConfig}`] }, async (sentry, processes) => {
    const anchors = await Deno.readTextFile(join(dir, "ca.crt"));
    const oldIssuer = await currentIssuer(dir);
    // A reaches B through a relay that drops the connection after every call: each call is
    // a new TLS handshake with the certificates both daprds hold at that moment. (B's port is
    // chosen when B starts: a port reserved for seconds could be taken by an outgoing socket.)
    let portB = 0;
    const relay = processes.add(await startTcpRelay(() => portB));
    const portA = await freePort();
    const configA = await writeDaprdConfig(work, "appa", { appa: portA, appb: relay.port });
    const configB = await writeDaprdConfig(work, "appb", { appa: portA }, { appId: "appa" });
    const appA = processes.add(startTinyApp("appa"));
    const appB = processes.add(startTinyApp("appb"));
    const a = await daprdFor(processes, sentry, {
      appId: "appa",
      anchors,
      config: configA,
      app: appA,
      internalGrpcPort: portA,
    });
    await a.waitHealthy();
    await sleep(STAGGER_MS);
    const b = await daprdFor(processes, sentry, {
      appId: "appb",
      anchors,
      config: configB,
      app: appB,
    });
    portB = b.internalGrpcPort;
    await b.waitHealthy();

    const loop = startInvocationLoop(a, b, relay);
    const rounds = loop.rounds;
    try {
      await sleep(1000);
      const renewed = await runSentry(["renew", "--issuer-credentials", dir]);
      assert.equal(renewed.code, 0, renewed.stderr);
      assert.match(renewed.stdout, /renewed the issuer/);
      const newIssuer = await currentIssuer(dir);
      assert.notEqual(newIssuer, oldIssuer);
      assert.equal(await Deno.readTextFile(join(dir, "ca.crt")), anchors, "same root");
      const rotatedAt = loop.elapsed();
      await eventually(
        "sentry signs with the new issuer",
        async () =>
          metric(await metricsText(sentry.metricsPort), "dapr_sentry_issuercert_changed_total") ===
            1,
        5000,
      );
      await eventually(
        "both daprds present certificates from the new issuer",
        () => {
          const last = rounds.at(-1);
          return last?.issuerA === newIssuer && last?.issuerB === newIssuer;
        },
        3 * TTL_S * 1000,
      );
      await sleep(1000); // more calls once both have switched
      await loop.stop();

      const calls = rounds.length;
      const failures = rounds.filter((r) => r.error);
      const { states, count } = issuerStates(rounds, { [oldIssuer]: "old", [newIssuer]: "new" });
      const summary = `${calls} calls, ${failures.length} failed, ${relay.connections()} ` +
        `connections; A/B issuers: old/old ${count("old/old")}, new/old ${count("new/old")}, ` +
        `old/new ${count("old/new")}, new/new ${count("new/new")}; rotated at ${rotatedAt} ms, ` +
        `loop ${rounds.at(-1)!.at} ms`;
      console.log(summary);
      assert.deepEqual(failures, [], summary);
      assert.equal(states.filter((s) => s.includes("unknown")).length, 0, summary);
      assert.equal(states[0], "old/old", summary);
      // Once a daprd presents the new issuer's certificate it never goes back.
      for (const side of [0, 1]) {
        const seq = states.map((s) => s.split("/")[side]);
        assert.ok(seq.lastIndexOf("old") < seq.indexOf("new"), `${side ? "B" : "A"}: ${summary}`);
      }
      assert.ok(count("new/old") + count("old/new") >= 3, `mixed handshakes: ${summary}`);
      assert.ok(count("new/new") >= 3, summary);
      // Exactly one connection per call: daprd retries a call whose handshake failed
      // (Unavailable) on a new connection, so a refused certificate would show up here even
      // when the retry succeeded.
      assert.equal(relay.connections(), calls, `one handshake per call: ${summary}`);
      assert.deepEqual(
        appB.requests().filter((r) => !r.startsWith("GET /dapr/")).length,
        calls,
        "every call reached app B",
      );

      for (const daprd of [a, b]) {
        assert.match(daprd.logs(), /Successfully renewed workload identity/);
        await assertIdentity(work, daprd, anchors, newIssuer);
      }
      const text = await metricsText(sentry.metricsPort);
      assert.ok(metric(text, "dapr_sentry_cert_sign_success_total") >= 4);
      assert.doesNotMatch(text, /^dapr_sentry_cert_sign_failure_total\{/m);
      assert.match(sentry.logs(), /issuer rotated/);
    } finally {
      await loop.stop();
    }
  });
});
