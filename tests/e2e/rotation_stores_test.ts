/**
 * A whole automatic root rotation of the real server (the bundled program) on the Kubernetes
 * store (the fake API server) and on the Vault store (the fake Vault), with the short windows of
 * tests/helpers/rotation_e2e.ts: a root made by `sentry init --root-ttl 2m`, a 6 s propagation
 * window, 1 s checks, workloadCertTTL 3s. The store is sampled every 100 ms from outside: the
 * trust anchors go old -> old+new -> new (Kubernetes: in the Secret and in the ConfigMap
 * `dapr-trust-bundle`, which carries old+new before the Secret's issuer switches), the rotation
 * keys (Secret) or fields (Vault) appear and disappear, SignCertificate answers switch issuer
 * only once the propagation window is over, and `dapr_sentry_rootcert_rotation_total{phase}`
 * counts each phase once. Each test prints its timeline.
 */
import assert from "node:assert/strict";
import { eventually } from "../helpers/eventually.ts";
import { signOnce } from "../helpers/grpc_client.ts";
import {
  anchorsOf,
  certificates,
  firstCertificate,
  issuerOf,
  kubeRotationSetup,
  kubeSign,
  kubeSnapshot,
  printTimeline,
  Recorder,
  rootNames,
  ROTATION_FILES,
  rotations,
  secretText,
  sequence,
  signUntilSwitched,
  vaultRotationSetup,
} from "../helpers/rotation_e2e.ts";
import { type RunningSentry, startSentry, tempDir } from "../helpers/sentry_process.ts";

const PHASES = ["distributing", "signing", "complete"];

/** Dapr's Secret keys of a rotation in progress, and sentry's own state (signing-at later). */
const DISTRIBUTING_KEYS = [
  "rotation.distributed-at",
  "rotation.new-ca.crt",
  "rotation.new-issuer.crt",
  "rotation.new-issuer.key",
  "rotation.old-root-not-after",
  "rotation.phase",
  "rotation.sentry-state.json",
];
const SIGNING_KEYS = [...DISTRIBUTING_KEYS, "rotation.signing-at"].sort();

/** Asserts that every phase was counted once by `sentry`'s metric. */
async function eachPhaseCountedOnce(sentry: RunningSentry): Promise<void> {
  for (const phase of PHASES) {
    await eventually(
      `${phase} counted once`,
      async () => (await rotations(sentry.metricsPort, phase)) === 1,
    );
  }
}

Deno.test("a whole rotation on the Kubernetes store: Secret and ConfigMap old -> old+new -> new, ConfigMap first", async () => {
  const setup = await kubeRotationSetup();
  const { api } = setup;
  const oldRoot = secretText(api, "ca.crt");
  const oldIssuer = firstCertificate(secretText(api, "issuer.crt"));
  assert.equal(kubeSnapshot(api).published, oldRoot, "init published the anchors");
  const recorder = new Recorder(() => kubeSnapshot(api));
  await recorder.start();
  let sentry: RunningSentry | undefined;
  try {
    sentry = await startSentry({ args: setup.args() });
    const server = sentry;
    await eventually(
      "rotation.phase distributing",
      () => kubeSnapshot(api).phase === "distributing",
    );
    const state = JSON.parse(secretText(api, "rotation.sentry-state.json"));
    const distributedAt = new Date(state.distributed_at);
    const newRoot = secretText(api, "rotation.new-ca.crt");
    const newIssuer = firstCertificate(secretText(api, "rotation.new-issuer.crt"));

    const leaf = await signUntilSwitched(
      async () => (await kubeSign(setup, server)).workloadCertificate.toString(),
      oldIssuer,
      distributedAt,
      server.logs,
    );
    assert.equal(issuerOf(leaf), newIssuer);
    await eventually(
      "rotation complete (the Secret's anchors = the new root, no rotation keys)",
      () => {
        const now = kubeSnapshot(api);
        return now.anchors === newRoot && now.rotationKeys.length === 0 &&
          now.published === newRoot;
      },
      20_000,
    );
    const response = await kubeSign(setup, server);
    assert.deepEqual(certificates(anchorsOf(response)), [newRoot], "served anchors: the new root");
    assert.equal(issuerOf(response.workloadCertificate.toString()), newIssuer);
    await eachPhaseCountedOnce(server);
    const changes = await recorder.stop();

    const roots = { old: oldRoot, new: newRoot };
    printTimeline(
      "Kubernetes store (fake API server), one cycle:",
      changes,
      (s) =>
        `${s.phase}, Secret ca.crt = ${rootNames(s.anchors, roots)}, ConfigMap ca.crt = ${
          rootNames(s.published, roots)
        }, issuer = ${s.issuer === oldIssuer ? "old" : s.issuer === newIssuer ? "new" : "other"}`,
    );
    const anchorSteps = [oldRoot, oldRoot + newRoot, newRoot];
    assert.deepEqual(sequence(changes, (s) => s.anchors), anchorSteps, "Secret ca.crt");
    assert.deepEqual(sequence(changes, (s) => s.published), anchorSteps, "ConfigMap ca.crt");
    assert.deepEqual(sequence(changes, (s) => s.issuer), [oldIssuer, newIssuer], "issuer.crt");
    assert.deepEqual(
      sequence(changes, (s) => s.phase),
      ["none", "distributing", "signing", "none"],
      "rotation.phase",
    );
    assert.deepEqual(
      sequence(changes, (s) => s.rotationKeys),
      [[], DISTRIBUTING_KEYS, SIGNING_KEYS, []],
      "the rotation keys appear, signing-at at the switch, and all go at completion",
    );
    for (const { atMs, value } of changes) {
      if (value.anchors.includes(newRoot)) {
        assert.ok(
          value.published.includes(newRoot),
          `+${atMs} ms: the Secret is ahead of the ConfigMap`,
        );
      }
      if (value.issuer !== oldIssuer) {
        assert.ok(
          value.published.includes(newRoot),
          `+${atMs} ms: the issuer switched before the ConfigMap carried the new root`,
        );
      }
    }
    const switchedAt = changes.find((change) => change.value.issuer !== oldIssuer)!;
    assert.equal(switchedAt.value.published, oldRoot + newRoot, "old+new published at the switch");
  } finally {
    await recorder.stop();
    if (sentry) assert.equal(await sentry.stop(), 0, sentry.logs());
    await setup.close();
  }
});

Deno.test("a whole rotation on the Vault store: anchors old -> old+new -> new, rotation fields come and go", async () => {
  const setup = await vaultRotationSetup();
  const work = await tempDir();
  const fields = setup.fields;
  const oldRoot = fields()["ca.crt"];
  const oldIssuer = firstCertificate(fields()["issuer.crt"]);
  const snapshot = () => {
    const data = fields();
    return {
      anchors: data["ca.crt"],
      issuer: firstCertificate(data["issuer.crt"]),
      rotationFields: Object.keys(data).filter((name) => name.startsWith("rotation-")).sort(),
      phase: data["rotation-state.json"] ? JSON.parse(data["rotation-state.json"]).phase : "none",
    };
  };
  const recorder = new Recorder(snapshot);
  await recorder.start();
  let sentry: RunningSentry | undefined;
  try {
    sentry = await setup.start();
    const server = sentry;
    const sign = async () =>
      (await signOnce(server.grpcPort, fields()["ca.crt"], work)).workloadCertificate.toString();
    await eventually("rotation-state.json distributing", () => snapshot().phase === "distributing");
    const distributedAt = new Date(JSON.parse(fields()["rotation-state.json"]).distributed_at);
    const newRoot = fields()["rotation-ca.crt"];
    const newIssuer = firstCertificate(fields()["rotation-issuer.crt"]);

    const leaf = await signUntilSwitched(sign, oldIssuer, distributedAt, server.logs);
    assert.equal(issuerOf(leaf), newIssuer);
    await eventually(
      "rotation complete (ca.crt = the new root, no rotation fields)",
      () => snapshot().anchors === newRoot && snapshot().rotationFields.length === 0,
      20_000,
    );
    const response = await signOnce(server.grpcPort, newRoot, work);
    assert.deepEqual(certificates(anchorsOf(response)), [newRoot], "served anchors: the new root");
    await eachPhaseCountedOnce(server);
    const changes = await recorder.stop();

    const roots = { old: oldRoot, new: newRoot };
    printTimeline(
      "Vault store (fake), one cycle:",
      changes,
      (s) =>
        `${s.phase}, ca.crt = ${rootNames(s.anchors, roots)}, issuer = ${
          s.issuer === oldIssuer ? "old" : "new"
        }, ${s.rotationFields.length} rotation fields`,
    );
    assert.deepEqual(sequence(changes, (s) => s.anchors), [oldRoot, oldRoot + newRoot, newRoot]);
    assert.deepEqual(sequence(changes, (s) => s.issuer), [oldIssuer, newIssuer]);
    assert.deepEqual(sequence(changes, (s) => s.phase), [
      "none",
      "distributing",
      "signing",
      "none",
    ]);
    assert.deepEqual(
      sequence(changes, (s) => s.rotationFields),
      [[], [...ROTATION_FILES].sort(), []],
      "the rotation fields appear and go",
    );
    const switched = changes.find((change) => change.value.issuer !== oldIssuer)!;
    assert.ok(
      switched.value.anchors.includes(newRoot),
      "the new root was in the anchors before the issuer switched",
    );
  } finally {
    await recorder.stop();
    if (sentry) assert.equal(await sentry.stop(), 0, sentry.logs());
    await setup.close();
    await Deno.remove(work, { recursive: true });
  }
});
