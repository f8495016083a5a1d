/**
 * Automatic root CA rotation in the real server (the bundled program) on the fs store, with
 * short windows: a root made by `sentry init --root-ttl 2m` is inside the trigger window at
 * once, `--rotation-propagation-window 6s`, `--rotation-check-interval 1s` and a Configuration
 * with workloadCertTTL 3s (tests/helpers/rotation_e2e.ts). Watched from outside, as an operator
 * would: ca.crt goes 1 -> 2 -> 1 certificates, Dapr's rotation-* files appear and disappear,
 * SignCertificate answers switch issuer only once the propagation window is over, a leaf issued
 * after the switch verifies with `openssl verify` against only the old root (through the
 * bridge) and against only the new root, and `dapr_sentry_rootcert_rotation_total{phase}`
 * counts each phase once. A server killed (SIGKILL) in each phase (distributing, signing, right
 * after complete) and restarted resumes where it was: the same new root, each step written
 * once, and no new rotation after completion.
 */
import assert from "node:assert/strict";
import { eventually } from "../helpers/eventually.ts";
import { signOnce } from "../helpers/grpc_client.ts";
import { verifyChain } from "../helpers/openssl.ts";
import {
  anchorsOf,
  certificates,
  countLines,
  exists,
  expiringBundle,
  firstCertificate,
  fsPhase,
  issuerOf,
  printTimeline,
  PROPAGATION_MS,
  read,
  readIfExists,
  Recorder,
  rootNames,
  rotations,
  rotationState,
  sequence,
  signUntilSwitched,
  startRotating,
  waitForComplete,
  waitForDistributing,
} from "../helpers/rotation_e2e.ts";
import { type RunningSentry, tempDir } from "../helpers/sentry_process.ts";

const PHASES = ["distributing", "signing", "complete"];

/** One SignCertificate call trusting the anchors in ca.crt now: the leaf chain PEM. */
async function sign(sentry: RunningSentry, work: string): Promise<string> {
  const response = await signOnce(sentry.grpcPort, await read(sentry.dir, "ca.crt"), work);
  return response.workloadCertificate.toString();
}

/** Signs until the new issuer answers (see {@link signUntilSwitched}). */
function signUntilNewIssuer(
  sentry: RunningSentry,
  work: string,
  oldIssuer: string,
  distributedAt: Date,
): Promise<string> {
  return signUntilSwitched(() => sign(sentry, work), oldIssuer, distributedAt, sentry.logs);
}

/** What the directory holds at one moment: the phase and ca.crt. */
async function fsSnapshot(dir: string) {
  return { phase: await fsPhase(dir), anchors: await readIfExists(dir, "ca.crt") ?? "" };
}

Deno.test("a whole rotation: anchors 1 -> 2 -> 1, issuer switches after the window, bridge", async () => {
  const { dir, config } = await expiringBundle();
  const work = await tempDir();
  const oldRoot = await read(dir, "ca.crt");
  const oldIssuer = firstCertificate(await read(dir, "issuer.crt"));
  const recorder = new Recorder(() => fsSnapshot(dir));
  await recorder.start();
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

    const leaf = await signUntilNewIssuer(sentry, work, oldIssuer, distributedAt);
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
    for (const phase of PHASES) {
      await eventually(
        `${phase} counted once`,
        async () => (await rotations(sentry.metricsPort, phase)) === 1,
      );
    }
    const logs = sentry.logs();
    assert.equal(countLines(logs, /root rotation started/), 1);
    assert.equal(countLines(logs, /signing with the new issuer/), 1);
    assert.equal(countLines(logs, /root rotation complete/), 1);
    assert.doesNotMatch(logs, /issuer certificate outlives the root/);
    assert.match(logs, /expiration warning: .*\(automatic root rotation starts at/);
    const changes = await recorder.stop();
    const roots = { old: oldRoot, new: newRoot };
    printTimeline(
      "fs store, one cycle:",
      changes,
      (s) => `${s.phase}, ca.crt = ${rootNames(s.anchors, roots)}`,
    );
    assert.deepEqual(sequence(changes, (s) => s.anchors), [oldRoot, oldRoot + newRoot, newRoot]);
    assert.deepEqual(sequence(changes, (s) => s.phase), [
      "none",
      "distributing",
      "signing",
      "none",
    ]);
  } finally {
    await recorder.stop();
    assert.equal(await sentry.stop(), 0, sentry.logs());
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(config);
    await Deno.remove(work, { recursive: true });
  }
});

/**
 * Runs a first server until `waitFor` (a phase reached), SIGKILLs it, starts a second one on
 * the same directory and hands both to `check`; cleans up. `check` asserts the resume.
 */
async function killAndRestart(
  waitFor: (dir: string) => Promise<void>,
  check: (run: {
    dir: string;
    work: string;
    oldIssuer: string;
    restart: () => Promise<RunningSentry>;
  }) => Promise<void>,
): Promise<void> {
  const { dir, config } = await expiringBundle();
  const work = await tempDir();
  const oldIssuer = firstCertificate(await read(dir, "issuer.crt"));
  const first = await startRotating(dir, config);
  let second: RunningSentry | undefined;
  try {
    await waitFor(dir);
    assert.notEqual(await first.stop("SIGKILL"), 0);
    const restart = async () => second = await startRotating(dir, config);
    await check({ dir, work, oldIssuer, restart });
  } finally {
    await first.stop("SIGKILL");
    if (second) assert.equal(await second.stop(), 0, second.logs());
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(config);
    await Deno.remove(work, { recursive: true });
  }
}

Deno.test("killed while distributing, a restarted server resumes with the same new root", async () => {
  await killAndRestart(waitForDistributing, async ({ dir, work, oldIssuer, restart }) => {
    const newRoot = await read(dir, "rotation-ca.crt");
    const distributedAt = new Date((await rotationState(dir)).distributed_at);
    assert.ok(
      Date.now() < distributedAt.getTime() + PROPAGATION_MS,
      "killed before signing switched (the test was too slow to prove a resume)",
    );
    const second = await restart();
    assert.equal((await rotationState(dir)).phase, "distributing", "resumed, not restarted");
    const leaf = await signUntilNewIssuer(second, work, oldIssuer, distributedAt);
    assert.equal(await read(dir, "rotation-ca.crt"), newRoot, "the same new root");
    await verifyChain(work, newRoot, leaf, "sslclient");
    await waitForComplete(dir, newRoot);
    assert.equal(await rotations(second.metricsPort, "distributing"), 0, "the first started it");
    await eventually(
      "signing and complete counted",
      async () =>
        (await rotations(second.metricsPort, "signing")) === 1 &&
        (await rotations(second.metricsPort, "complete")) === 1,
    );
    assert.doesNotMatch(second.logs(), /root rotation started/);
  });
});

Deno.test("killed while signing, a restarted server keeps the switch and completes once", async () => {
  const waitForSigning = (dir: string) =>
    eventually("rotation-state.json (signing)", async () => (await fsPhase(dir)) === "signing");
  await killAndRestart(waitForSigning, async ({ dir, work, oldIssuer, restart }) => {
    const newRoot = await read(dir, "rotation-ca.crt");
    const newIssuer = firstCertificate(await read(dir, "rotation-issuer.crt"));
    const state = await rotationState(dir);
    assert.ok(
      Date.now() < new Date(state.complete_at).getTime(),
      "killed before completion was due (the test was too slow to prove a resume)",
    );

    const second = await restart();
    assert.deepEqual(await rotationState(dir), state, "the same signing state, not re-switched");
    assert.equal(issuerOf(await sign(second, work)), newIssuer, "signs with the new issuer");
    await waitForComplete(dir, newRoot);
    const leaf = await sign(second, work);
    assert.equal(issuerOf(leaf), newIssuer);
    assert.notEqual(issuerOf(leaf), oldIssuer);
    await verifyChain(work, newRoot, leaf, "sslserver");
    await eventually(
      "complete counted",
      async () => (await rotations(second.metricsPort, "complete")) === 1,
    );
    assert.equal(await rotations(second.metricsPort, "distributing"), 0);
    assert.equal(await rotations(second.metricsPort, "signing"), 0, "the switch happened once");
    assert.doesNotMatch(second.logs(), /root rotation started|signing with the new issuer/);
    assert.equal(countLines(second.logs(), /root rotation complete/), 1);
  });
});

Deno.test("killed right after completion, a restarted server serves the new root and starts no rotation", async () => {
  let newRoot = "";
  const waitForCompletion = async (dir: string) => {
    await waitForDistributing(dir);
    newRoot = await read(dir, "rotation-ca.crt");
    await eventually(
      "rotation complete",
      async () => (await readIfExists(dir, "ca.crt")) === newRoot,
      20_000,
    );
  };
  await killAndRestart(waitForCompletion, async ({ dir, work, restart }) => {
    const issuer = await read(dir, "issuer.crt");
    const second = await restart();
    // Several checks later: nothing was written, no rotation began.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    assert.equal(await read(dir, "ca.crt"), newRoot);
    assert.equal(await read(dir, "issuer.crt"), issuer);
    for (const name of ["rotation-state.json", "rotation-ca.crt"]) {
      assert.ok(!await exists(dir, name), `no ${name} after completion`);
    }
    const response = await signOnce(second.grpcPort, newRoot, work);
    assert.deepEqual(certificates(anchorsOf(response)), [newRoot], "anchors: the new root only");
    assert.equal(issuerOf(response.workloadCertificate.toString()), firstCertificate(issuer));
    for (const phase of PHASES) assert.equal(await rotations(second.metricsPort, phase), 0);
    assert.doesNotMatch(second.logs(), /root rotation (started|complete)|new issuer/);
  });
});
