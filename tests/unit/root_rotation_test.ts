/**
 * The root rotation's pure core (src/ca/root-rotation.ts): one whole cycle on planned times
 * (start -> switch -> complete -> prune), what is stored in each phase, abort, issuer-only
 * renewal with a kept root key, JWT keys rotating with the root, and the bridge that lets a
 * sidecar which only knows the old root verify certificates of the new issuer — checked with
 * `openssl verify`, which shares no code with us.
 */
import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import { type BundlePem, validateBundle } from "../../src/ca/bundle.ts";
import { createWorkloadCertificate } from "../../src/ca/profiles.ts";
import {
  abortRotation,
  formatRotationState,
  parseRotationState,
  planRotation,
  RotationError,
  rotationOf,
  type RotationSettings,
  type RotationStep,
  startRotation,
  viewBundle,
} from "../../src/ca/root-rotation.ts";
import { SpiffeId } from "../../src/ca/spiffe.ts";
import { withGeneratedJwtKey } from "../../src/ca/jwt-bundle.ts";
import { parseJwtKeyChain } from "../../src/ca/jwt-rotation.ts";
import { spkiOf } from "../../src/x509/keys.ts";
import { encodeCertificates } from "../../src/x509/pem.ts";
import { verifyChain } from "../helpers/openssl.ts";
import { expiringBundle, ROTATION_TEST_SETTINGS } from "../helpers/rotation_bundle.ts";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

const SETTINGS: RotationSettings = ROTATION_TEST_SETTINGS;

/** A Dapr-profile bundle whose root expires in two hours (well inside the trigger window). */
function oldBundle(now: Date, keepRootKey = false): BundlePem {
  return expiringBundle({ now, keepRootKey });
}

/** The bundle a step writes, after checking its kind. */
function nextOf(step: RotationStep, kind: RotationStep["kind"]): BundlePem {
  assert.equal(step.kind, kind, JSON.stringify((step as { waitingFor?: string }).waitingFor));
  if (!("next" in step)) throw new Error(`no bundle in a ${step.kind} step`);
  return step.next;
}

const later = (t0: Date, ms: number) => new Date(t0.getTime() + ms);

function certCount(pem: string): number {
  return pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;
}

/** A workload certificate for `app` signed by the bundle's issuer, with its chain. */
function workloadChain(pem: BundlePem, now: Date): string {
  const bundle = validateBundle(pem, now);
  const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const leaf = createWorkloadCertificate(
    SpiffeId.forWorkload("example.org", "default", "app"),
    spkiOf(createPublicKey(publicKey.export({ format: "pem", type: "spki" }))),
    bundle.issuer,
    { notBefore: new Date(now.getTime() - MINUTE), notAfter: later(now, SETTINGS.workloadTtlMs) },
  );
  return encodeCertificates([leaf]) + bundle.issuerChainPem;
}

function onlyRoot(pem: string, index: number): string {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g)!;
  return blocks[index];
}

Deno.test("a whole cycle: anchors old -> old+new -> new, issuer switches only after the window", async () => {
  const dir = await Deno.makeTempDir({ prefix: "root-rotation-" });
  try {
    const t0 = new Date();
    const original = oldBundle(t0);
    const oldRoot = original.caCrt;

    const distributing = nextOf(await planRotation(original, t0, SETTINGS), "start");
    assert.equal(certCount(distributing.caCrt), 2, "anchors are old + new");
    assert.ok(distributing.caCrt.startsWith(oldRoot), "the old root stays first");
    assert.equal(distributing.issuerCrt, original.issuerCrt, "signing stays with the old issuer");
    assert.equal(distributing.issuerKey, original.issuerKey);
    const state = rotationOf(distributing)!;
    assert.equal(state.phase, "distributing");
    assert.equal(state.switchAt, undefined, "the server's rotation follows the window in force");
    assert.equal(state.distributedAt.getTime(), t0.getTime());
    assert.equal(state.signingAt, undefined);
    assert.match(distributing.rotation!.stateJson, /"signing_at": "0001-01-01T00:00:00Z"/);
    validateBundle(distributing, t0);
    // A workload certificate of this phase verifies against either anchor set.
    await verifyChain(dir, distributing.caCrt, workloadChain(distributing, t0), "sslclient");

    const waiting = await planRotation(distributing, later(t0, 9 * MINUTE), SETTINGS);
    assert.equal(waiting.kind, "none");
    assert.match((waiting as { waitingFor: string }).waitingFor, /propagation window/);

    const t1 = later(t0, 10 * MINUTE);
    const signing = nextOf(await planRotation(distributing, t1, SETTINGS), "switch");
    assert.equal(signing.caCrt, distributing.caCrt, "anchors unchanged at the switch");
    assert.equal(signing.issuerKey, distributing.rotation!.issuerKey);
    assert.ok(signing.issuerCrt.startsWith(distributing.rotation!.issuerCrt));
    // New issuer + bridge (new root cross-signed by the old issuer) + old issuer.
    assert.equal(certCount(signing.issuerCrt), 3);
    const signingState = rotationOf(signing)!;
    assert.equal(signingState.phase, "signing");
    assert.equal(signingState.signingAt!.getTime(), t1.getTime());
    assert.equal(
      signingState.completeAt!.getTime(),
      t1.getTime() + SETTINGS.workloadTtlMs + SETTINGS.completionMarginMs,
    );
    validateBundle(signing, t0);
    const leafChain = workloadChain(signing, t0);
    // The bridge: a sidecar that only knows the OLD root verifies the new issuer's certificate.
    await verifyChain(dir, onlyRoot(signing.caCrt, 0), leafChain, "sslclient");
    // And one that only knows the NEW root.
    await verifyChain(dir, onlyRoot(signing.caCrt, 1), leafChain, "sslclient");

    const done = nextOf(
      await planRotation(signing, signingState.completeAt!, SETTINGS),
      "complete",
    );
    assert.equal(done.rotation, undefined, "the rotation parts are gone");
    assert.equal(done.caCrt, onlyRoot(signing.caCrt, 1), "anchors are the new root only");
    validateBundle(done, t0);
    await verifyChain(dir, done.caCrt, workloadChain(done, t0), "sslclient");
    // The bridge stays until it expires (old-anchored sidecars keep working)...
    await verifyChain(dir, oldRoot, workloadChain(done, t0), "sslclient");
    const idle = await planRotation(done, later(t0, HOUR), SETTINGS);
    assert.equal(idle.kind, "none");
    assert.match((idle as { waitingFor: string }).waitingFor, /root rotation starts at/);

    // ...and is pruned once expired (the old root's NotAfter, two hours in).
    const prune = await planRotation(done, later(t0, 2 * HOUR + MINUTE), SETTINGS);
    assert.equal(prune.kind, "prune-bridge");
    if (!("next" in prune)) throw new Error("no bundle in the prune step");
    assert.equal(certCount(prune.next.issuerCrt), 1);
    validateBundle(prune.next, later(t0, 2 * HOUR + MINUTE));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("with the root key kept, the bridge is signed by the old root and the issuer renews at 2/3", async () => {
  const dir = await Deno.makeTempDir({ prefix: "root-rotation-" });
  try {
    const t0 = new Date();
    const original = oldBundle(t0, true);
    // Far from the trigger window: issuer renewal is what comes first.
    const relaxed = { ...SETTINGS, triggerWindowMs: 10 * MINUTE };
    const early = await planRotation(original, later(t0, 10 * MINUTE), relaxed);
    assert.equal(early.kind, "none");
    assert.match((early as { waitingFor: string }).waitingFor, /issuer renewal at/);
    const issuerLife = 2 * HOUR + 15 * MINUTE;
    const renewAt = later(t0, -15 * MINUTE + (issuerLife * 2) / 3);
    const renewal = await planRotation(original, renewAt, relaxed);
    assert.equal(renewal.kind, "renew-issuer");
    if (!("next" in renewal)) throw new Error("no bundle in the renewal step");
    assert.equal(renewal.next.caCrt, original.caCrt, "no anchor change");
    assert.notEqual(renewal.next.issuerKey, original.issuerKey);
    validateBundle(renewal.next, renewAt);

    const distributing = await startRotation(original, t0, SETTINGS, "manual");
    assert.ok(distributing.rotation!.caKey, "the new root's key is kept too");
    const switched = await planRotation(distributing, later(t0, 10 * MINUTE), SETTINGS);
    if (!("next" in switched)) throw new Error(`no bundle in a ${switched.kind} step`);
    assert.equal(
      certCount(switched.next.issuerCrt),
      2,
      "new issuer + new root cross-signed by the old root",
    );
    assert.equal(switched.next.caKey, distributing.rotation!.caKey, "ca.key follows the new root");
    await verifyChain(
      dir,
      onlyRoot(switched.next.caCrt, 0),
      workloadChain(switched.next, t0),
      "sslserver",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("abort restores the old anchors before the switch, and is refused after it", async () => {
  const t0 = new Date();
  const original = oldBundle(t0);
  const distributing = await startRotation(original, t0, SETTINGS, "manual");
  assert.equal(rotationOf(distributing)!.reason, "manual");
  await assert.rejects(startRotation(distributing, t0, SETTINGS, "manual"), RotationError);
  const aborted = abortRotation(distributing);
  assert.equal(aborted.caCrt, original.caCrt);
  assert.equal(aborted.rotation, undefined);
  const step = await planRotation(distributing, later(t0, 10 * MINUTE), SETTINGS);
  if (!("next" in step)) throw new Error(`no bundle in a ${step.kind} step`);
  assert.throws(() => abortRotation(step.next), /too late to abort/);
  assert.throws(() => abortRotation(original), /no root rotation is in progress/);
});

Deno.test("signing switches before the old issuer expires even if the window is longer", async () => {
  const t0 = new Date();
  const original = oldBundle(t0);
  const long = { ...SETTINGS, propagationWindowMs: 48 * HOUR };
  const manual = await startRotation(original, t0, long, "manual");
  const { issuer } = viewBundle(original);
  assert.equal(rotationOf(manual)!.switchAt!.getTime(), issuer.notAfter.getTime());
  const automatic = await startRotation(original, t0, long, "expiry");
  const waiting = await planRotation(automatic, t0, long);
  assert.equal((waiting as { nextAt: Date }).nextAt.getTime(), issuer.notAfter.getTime());
  nextOf(await planRotation(automatic, issuer.notAfter, long), "switch");
});

Deno.test("a changed propagation window applies to the server's rotation, not to an operator's", async () => {
  const t0 = new Date();
  const original = oldBundle(t0);
  const automatic = await startRotation(original, t0, SETTINGS, "expiry");
  const shorter = { ...SETTINGS, propagationWindowMs: 2 * MINUTE };
  nextOf(await planRotation(automatic, later(t0, 2 * MINUTE), shorter), "switch");
  const manual = await startRotation(original, t0, SETTINGS, "manual");
  assert.equal((await planRotation(manual, later(t0, 2 * MINUTE), shorter)).kind, "none");
});

Deno.test("automatic off: nothing starts, a rotation in progress still finishes", async () => {
  const t0 = new Date();
  const original = oldBundle(t0);
  const off = await planRotation(original, t0, SETTINGS, { automatic: false });
  assert.equal(off.kind, "none");
  const distributing = await startRotation(original, t0, SETTINGS, "manual");
  const step = await planRotation(distributing, later(t0, 10 * MINUTE), SETTINGS, {
    automatic: false,
  });
  assert.equal(step.kind, "switch");
});

Deno.test("JWT keys rotate with the root: published at the start, signing from the switch", async () => {
  const t0 = new Date();
  const original = await withGeneratedJwtKey(oldBundle(t0), "k1");
  const distributing = await startRotation(original, t0, SETTINGS, "expiry");
  const chain = parseJwtKeyChain(distributing.jwt!.keyPem);
  assert.ok(chain.next, "a next JWT key is stored");
  assert.equal(chain.next.notBefore.getTime(), t0.getTime() + SETTINGS.propagationWindowMs);
  assert.equal(JSON.parse(distributing.jwt!.jwksJson).keys.length, 2, "both keys published");
  const aborted = abortRotation(distributing, t0);
  assert.equal(aborted.jwt!.keyPem, original.jwt!.keyPem, "abort withdraws the next JWT key");
  assert.equal(JSON.parse(aborted.jwt!.jwksJson).keys.length, 1);
  const switched = await planRotation(distributing, later(t0, 10 * MINUTE), SETTINGS);
  if (!("next" in switched)) throw new Error(`no bundle in a ${switched.kind} step`);
  const completeAt = rotationOf(switched.next)!.completeAt!;
  const done = await planRotation(switched.next, later(completeAt, 25 * HOUR), {
    ...SETTINGS,
    jwtTtlMs: HOUR,
  });
  if (!("next" in done)) throw new Error(`no bundle in a ${done.kind} step`);
  assert.equal(parseJwtKeyChain(done.next.jwt!.keyPem).next, undefined, "the next key is current");
  assert.equal(JSON.parse(done.next.jwt!.jwksJson).keys.length, 1, "the old key left the JWKS");
});

Deno.test("rotation-state.json: Dapr's fields round-trip with ours; Dapr's own state is read with Dapr's rules", async () => {
  const state = {
    phase: "signing" as const,
    distributedAt: new Date("2026-01-01T00:00:00Z"),
    signingAt: new Date("2026-01-02T00:00:05Z"),
    oldRootNotAfter: new Date("2026-02-01T00:00:00Z"),
    reason: "expiry" as const,
    switchAt: new Date("2026-01-02T00:00:00Z"),
    completeAt: new Date("2026-01-03T00:00:00Z"),
    oldRootSha256: "a".repeat(64),
  };
  assert.deepEqual(parseRotationState(formatRotationState(state)), state);
  // What Dapr's PR 9797 writes: four fields, signing_at zero while distributing.
  const dapr = parseRotationState(JSON.stringify({
    phase: "distributing",
    distributed_at: "2026-01-01T00:00:00.123456789Z",
    signing_at: "0001-01-01T00:00:00Z",
    old_root_not_after: "2026-02-01T00:00:00Z",
  }));
  assert.equal(dapr.signingAt, undefined);
  assert.equal(dapr.switchAt, undefined);
  // Without sentry's fields: switch after the propagation window, completion by Dapr's rule.
  const t0 = new Date();
  const original = oldBundle(t0);
  const distributing = await startRotation(original, t0, SETTINGS, "expiry");
  const daprState = JSON.stringify({
    phase: "distributing",
    distributed_at: t0.toISOString(),
    signing_at: "0001-01-01T00:00:00Z",
    old_root_not_after: viewBundle(original).root.notAfter.toISOString(),
  });
  const asDapr = { ...distributing, rotation: { ...distributing.rotation!, stateJson: daprState } };
  const early = await planRotation(asDapr, later(t0, 9 * MINUTE), SETTINGS);
  assert.equal(early.kind, "none");
  const signing = nextOf(await planRotation(asDapr, later(t0, 10 * MINUTE), SETTINGS), "switch");
  const daprSigning = JSON.stringify({
    ...JSON.parse(daprState),
    phase: "signing",
    signing_at: later(t0, 10 * MINUTE).toISOString(),
  });
  const signingAsDapr = { ...signing, rotation: { ...signing.rotation!, stateJson: daprSigning } };
  // Dapr's rule: not before the old root expired (two hours) and TTL + skew after the switch.
  assert.equal((await planRotation(signingAsDapr, later(t0, HOUR), SETTINGS)).kind, "none");
  const done = nextOf(await planRotation(signingAsDapr, later(t0, 2 * HOUR), SETTINGS), "complete");
  assert.equal(done.caCrt, signing.rotation!.caCrt, "anchors = rotation-ca.crt, as Dapr does");
});

Deno.test("bad rotation states are refused with the field named", () => {
  const good = {
    phase: "signing",
    distributed_at: "2026-01-01T00:00:00Z",
    signing_at: "2026-01-02T00:00:00Z",
    old_root_not_after: "2026-02-01T00:00:00Z",
  };
  assert.throws(() => parseRotationState("{"), /rotation-state.json is not JSON/);
  assert.throws(() => parseRotationState("[]"), /is not a JSON object/);
  assert.throws(
    () => parseRotationState(JSON.stringify({ ...good, phase: "cleanup" })),
    /unknown phase "cleanup"/,
  );
  assert.throws(
    () => parseRotationState(JSON.stringify({ ...good, distributed_at: "soon" })),
    /"distributed_at" is not a time/,
  );
  assert.throws(
    () => parseRotationState(JSON.stringify({ ...good, signing_at: "0001-01-01T00:00:00Z" })),
    /"signing_at" is not a time/,
  );
  assert.throws(
    () => parseRotationState(JSON.stringify({ ...good, old_root_sha256: "xyz" })),
    /"old_root_sha256" is not a SHA-256/,
  );
});
