/**
 * Automatic root CA rotation in the real server (the bundled program) on the fs store, with
 * short windows: a root made by `sentry init --root-ttl 2m` is inside the trigger window at
 * once, `--rotation-propagation-window 6s`, `--rotation-check-interval 1s` and a Configuration
 * with workloadCertTTL 3s. Watched from outside, as an operator would: ca.crt goes 1 -> 2 -> 1
 * certificates, Dapr's rotation-* files appear and disappear, SignCertificate answers switch
 * issuer only once the propagation window is over, a leaf issued after the switch verifies
 * with `openssl verify` against only the old root (through the bridge) and against only the
 * new root, and `dapr_sentry_rootcert_rotation_total{phase}` counts each phase once. A server
 * killed (SIGKILL) while distributing resumes after a restart with the same new root.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually } from "../helpers/eventually.ts";
import { signOnce } from "../helpers/grpc_client.ts";
import { metric, metricsText } from "../helpers/metrics.ts";
import { verifyChain } from "../helpers/openssl.ts";
import { type RunningSentry, runSentry, startSentry, tempDir } from "../helpers/sentry_process.ts";

const PROPAGATION_MS = 6_000;
const ROTATION_FILES = [
  "rotation-state.json",
  "rotation-ca.crt",
  "rotation-issuer.crt",
  "rotation-issuer.key",
];
const CONFIG = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: default\n" +
  'spec:\n  mtls:\n    enabled: true\n    workloadCertTTL: "3s"\n    allowedClockSkew: "0s"\n';

const CERTIFICATES = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g;
const certificates = (pem: string): string[] => pem.match(CERTIFICATES) ?? [];
/** The first certificate of a PEM text (fails when there is none). */
function firstCertificate(pem: string): string {
  const [first] = certificates(pem);
  assert.ok(first, "a PEM CERTIFICATE block");
  return first;
}

/** A credentials directory with a root (and issuer) that expire in two minutes. */
async function expiringBundle(): Promise<{ dir: string; config: string }> {
  const dir = await tempDir("sentry-rotation-");
  const init = await runSentry([
    "init",
    "--issuer-credentials",
    dir,
    "--trust-domain",
    "cluster.local",
    "--root-ttl",
    "2m",
    "--issuer-ttl",
    "2m",
  ]);
  assert.equal(init.code, 0, init.stderr);
  const config = join(dir, "..", `${dir.split("/").pop()}-config.yaml`);
  await Deno.writeTextFile(config, CONFIG);
  return { dir, config };
}

function startRotating(dir: string, config: string): Promise<RunningSentry> {
  return startSentry({
    dir,
    args: [
      `--config=${config}`,
      "--rotation-enabled",
      "-rotation-propagation-window=6s",
      "-rotation-check-interval",
      "1s",
    ],
  });
}

const read = (dir: string, name: string) => Deno.readTextFile(join(dir, name));

async function exists(dir: string, name: string): Promise<boolean> {
  try {
    await Deno.stat(join(dir, name));
    return true;
  } catch {
    return false;
  }
}

/** `rotation-state.json` as written (Dapr's field names). */
async function rotationState(dir: string): Promise<Record<string, string>> {
  return JSON.parse(await read(dir, "rotation-state.json"));
}

/** One SignCertificate call trusting the anchors in ca.crt now: the leaf chain PEM. */
async function sign(sentry: RunningSentry, work: string): Promise<string> {
  const response = await signOnce(sentry.grpcPort, await read(sentry.dir, "ca.crt"), work);
  return response.workloadCertificate.toString();
}

/** The issuer certificate of a signed chain (the PEM block after the leaf). */
const issuerOf = (chainPem: string) => certificates(chainPem)[1];

/** `dapr_sentry_rootcert_rotation_total{phase=...}`, or 0 when the series is absent. */
async function rotations(sentry: RunningSentry, phase: string): Promise<number> {
  const text = await metricsText(sentry.metricsPort);
  const name = `dapr_sentry_rootcert_rotation_total{phase="${phase}"}`;
  return text.split("\n").some((line) => line.startsWith(name + " ")) ? metric(text, name) : 0;
}

/** Waits for the distributing phase: ca.crt old + new, the rotation files in place. */
async function waitForDistributing(dir: string): Promise<void> {
  await eventually("rotation-state.json (distributing)", async () => {
    if (!await exists(dir, "rotation-state.json")) return false;
    return (await rotationState(dir)).phase === "distributing";
  });
  for (const name of ROTATION_FILES) assert.ok(await exists(dir, name), `${name} is written`);
  assert.equal(certificates(await read(dir, "ca.crt")).length, 2, "ca.crt: old + new roots");
}

/**
 * Signs every 250 ms until a certificate comes from the new issuer; asserts that none did
 * before the propagation window ended. Returns that certificate chain.
 */
async function signUntilSwitched(
  sentry: RunningSentry,
  work: string,
  oldIssuer: string,
  distributedAt: Date,
): Promise<string> {
  const deadline = Date.now() + 30_000;
  let oldSeen = 0;
  while (Date.now() < deadline) {
    const chain = await sign(sentry, work);
    const receivedAt = Date.now();
    if (issuerOf(chain) === oldIssuer) {
      oldSeen++;
    } else {
      assert.ok(
        receivedAt >= distributedAt.getTime() + PROPAGATION_MS,
        `new issuer only after the propagation window (${
          receivedAt - distributedAt.getTime()
        } ms after distributing began)`,
      );
      assert.ok(oldSeen > 0, "the old issuer signed while distributing");
      return chain;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`signing did not switch to the new issuer:\n${sentry.logs()}`);
}

/** Waits for completion: ca.crt holds only the new root, the rotation files are gone. */
async function waitForComplete(dir: string, newRoot: string): Promise<void> {
  await eventually(
    "rotation complete (ca.crt = the new root)",
    async () =>
      (await read(dir, "ca.crt")) === newRoot && !await exists(dir, "rotation-state.json"),
    20_000,
  );
  for (const name of ROTATION_FILES) assert.ok(!await exists(dir, name), `${name} is removed`);
}

Deno.test("a whole rotation: anchors 1 -> 2 -> 1, issuer switches after the window, bridge", async () => {
  const { dir, config } = await expiringBundle();
  const work = await tempDir();
  const oldRoot = await read(dir, "ca.crt");
  const oldIssuer = firstCertificate(await read(dir, "issuer.crt"));
  const sentry = await startRotating(dir, config);
  try {
    assert.match(
      sentry.logs(),
      /Automatic root CA rotation is enabled: trigger window 720h0m0s, propagation window 6s/,
    );
    await waitForDistributing(dir);
    const state = await rotationState(dir);
    const distributedAt = new Date(state.distributed_at);
    assert.equal(state.signing_at, "0001-01-01T00:00:00Z", "Dapr's zero time until the switch");
    const newRoot = await read(dir, "rotation-ca.crt");
    assert.equal(await read(dir, "ca.crt"), oldRoot + newRoot);

    const leaf = await signUntilSwitched(sentry, work, oldIssuer, distributedAt);
    assert.equal(issuerOf(leaf), firstCertificate(await read(dir, "rotation-issuer.crt")));
    const signing = await rotationState(dir);
    assert.equal(signing.phase, "signing");
    assert.ok(
      new Date(signing.signing_at).getTime() - distributedAt.getTime() >= PROPAGATION_MS,
      "signing_at is a propagation window after distributed_at",
    );
    // A sidecar that only knows the old root verifies the new certificates through the bridge;
    // one that learned the new root verifies them directly.
    await verifyChain(work, oldRoot, leaf, "sslclient");
    await verifyChain(work, newRoot, leaf, "sslclient");

    await waitForComplete(dir, newRoot);
    await verifyChain(work, newRoot, await sign(sentry, work), "sslserver");
    for (const phase of ["distributing", "signing", "complete"]) {
      await eventually(`${phase} counted once`, async () => (await rotations(sentry, phase)) === 1);
    }
    const lines = sentry.logs().split("\n");
    assert.equal(lines.filter((line) => /root rotation started/.test(line)).length, 1);
    assert.equal(lines.filter((line) => /signing with the new issuer/.test(line)).length, 1);
    assert.equal(lines.filter((line) => /root rotation complete/.test(line)).length, 1);
    assert.doesNotMatch(sentry.logs(), /issuer certificate outlives the root/);
    assert.match(sentry.logs(), /expiration warning: .*\(automatic root rotation starts at/);
  } finally {
    assert.equal(await sentry.stop(), 0, sentry.logs());
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(config);
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("killed while distributing, a restarted server resumes with the same new root", async () => {
  const { dir, config } = await expiringBundle();
  const work = await tempDir();
  const oldIssuer = firstCertificate(await read(dir, "issuer.crt"));
  const first = await startRotating(dir, config);
  let second: RunningSentry | undefined;
  try {
    await waitForDistributing(dir);
    const newRoot = await read(dir, "rotation-ca.crt");
    const distributedAt = new Date((await rotationState(dir)).distributed_at);
    assert.notEqual(await first.stop("SIGKILL"), 0);
    assert.ok(
      Date.now() < distributedAt.getTime() + PROPAGATION_MS,
      "killed before signing switched (the test was too slow to prove a resume)",
    );

    second = await startRotating(dir, config);
    assert.equal((await rotationState(dir)).phase, "distributing", "resumed, not restarted");
    const leaf = await signUntilSwitched(second, work, oldIssuer, distributedAt);
    assert.equal(await read(dir, "rotation-ca.crt"), newRoot, "the same new root");
    await verifyChain(work, newRoot, leaf, "sslclient");
    await waitForComplete(dir, newRoot);
    assert.equal(await rotations(second, "distributing"), 0, "the first process started it");
    await eventually(
      "signing and complete counted",
      async () =>
        (await rotations(second!, "signing")) === 1 && (await rotations(second!, "complete")) === 1,
    );
    assert.doesNotMatch(second.logs(), /root rotation started/);
  } finally {
    await first.stop("SIGKILL");
    if (second) assert.equal(await second.stop(), 0, second.logs());
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(config);
    await Deno.remove(work, { recursive: true });
  }
});
