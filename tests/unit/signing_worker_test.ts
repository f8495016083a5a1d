/**
 * The signing worker's message handling (no threads needed): it signs with the issuer of the
 * generation a request names, reports a bad CSR, an issuer that cannot sign and an unknown
 * generation as typed failures, and forgets generations older than the last three.
 */
import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import type { TrustBundle } from "../../src/ca/bundle.ts";
import { csrPem } from "../../src/x509/csr-builder.ts";
import { parseCertificate } from "../../src/x509/parse.ts";
import { decodePem } from "../../src/x509/pem.ts";
import {
  bundleMessage,
  SigningWorkerState,
  type SignMessage,
} from "../../src/server/signing-worker.ts";
import { testTrustBundle } from "../helpers/trust_bundle.ts";

const NOW = new Date("2031-03-04T05:06:07Z");
const DAY = 86_400_000;

function bundleAt(now: Date): TrustBundle {
  return testTrustBundle({ now });
}

const workloadCsr = csrPem(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey);

function signMessage(generation: number, overrides: Partial<SignMessage> = {}): SignMessage {
  return {
    kind: "sign",
    seq: 7,
    generation,
    csr: new TextEncoder().encode(workloadCsr),
    id: "spiffe://cluster.local/ns/default/myapp",
    ttlMs: DAY,
    skewMs: 0,
    nowMs: NOW.getTime(),
    dnsNames: [],
    ...overrides,
  };
}

Deno.test("signs with the issuer of the named generation", () => {
  const first = bundleAt(NOW);
  const second = bundleAt(NOW);
  const state = new SigningWorkerState();
  assert.equal(state.handle(bundleMessage(first, 1)), undefined);
  assert.equal(state.handle(bundleMessage(second, 2)), undefined);
  for (const [generation, bundle] of [[1, first], [2, second]] as const) {
    const reply = state.handle(signMessage(generation));
    assert.ok(reply && "chain" in reply, JSON.stringify(reply));
    assert.equal(reply.seq, 7);
    assert.equal(reply.notAfterMs, NOW.getTime() + DAY);
    const chainPem = new TextDecoder().decode(reply.chain);
    assert.ok(chainPem.endsWith(bundle.issuerChainPem));
    // The bytes fill their own buffer: the worker can move them to the pool without a copy.
    assert.equal(reply.chain.buffer.byteLength, reply.chain.byteLength);
    const leaf = parseCertificate(decodePem(chainPem)[0].der);
    const issuerPublic = createPublicKey(bundle.issuer.key.privateKey);
    assert.ok(verify("sha256", leaf.tbs, issuerPublic, leaf.signature));
  }
});

Deno.test("a bad CSR, an expired issuer and an unknown generation are typed failures", () => {
  const state = new SigningWorkerState();
  state.handle(bundleMessage(bundleAt(NOW), 1));

  const garbage = state.handle(signMessage(1, { csr: new TextEncoder().encode("not a CSR") }));
  assert.deepEqual(garbage, {
    seq: 7,
    failure: "csr",
    message: "invalid certificate signing request",
  });

  const late = state.handle(signMessage(1, { nowMs: NOW.getTime() + 400 * DAY }));
  assert.ok(late && "failure" in late);
  assert.equal(late.failure, "signing");
  assert.match(late.message, /the issuer certificate expired/);

  const unknown = state.handle(signMessage(9));
  assert.deepEqual(unknown, { seq: 7, failure: "internal", message: "bundle 9 is unknown" });
});

Deno.test("only the last three generations are kept", () => {
  const state = new SigningWorkerState();
  for (let generation = 1; generation <= 4; generation++) {
    state.handle(bundleMessage(bundleAt(NOW), generation));
  }
  const forgotten = state.handle(signMessage(1));
  assert.ok(forgotten && "failure" in forgotten && forgotten.failure === "internal");
  for (const generation of [2, 3, 4]) {
    const reply = state.handle(signMessage(generation));
    assert.ok(reply && "chain" in reply, `generation ${generation}`);
  }
});
