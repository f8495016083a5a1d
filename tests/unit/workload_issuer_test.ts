/**
 * The issuing seam (src/server/workload-issuer.ts): the inline and thread-pool issuers on real
 * CSRs and a real bundle, the worker-pool issuer's translation of worker failures into the
 * seam's two errors, and the router's choice of way.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { SigningError } from "../../src/ca/signer.ts";
import { SpiffeId } from "../../src/ca/spiffe.ts";
import { PoolSigningError } from "../../src/server/signing-pool.ts";
import {
  inlineIssuer,
  type IssueRequest,
  IssuerRouter,
  threadPoolIssuer,
  type WorkerPool,
  workerPoolIssuer,
} from "../../src/server/workload-issuer.ts";
import { CsrError } from "../../src/x509/csr.ts";
import { csrPem } from "../../src/x509/csr-builder.ts";
import { parseCertificate } from "../../src/x509/parse.ts";
import { decodePem } from "../../src/x509/pem.ts";
import { testTrustBundle } from "../helpers/trust_bundle.ts";

const NOW = new Date("2030-01-02T03:04:05Z");
const BUNDLE = testTrustBundle({ now: NOW });
const ID = SpiffeId.forWorkload("public", "default", "app");
const TIMING = { ttlMs: 3_600_000, skewMs: 0 };

function issueRequest(csr: string | Uint8Array, now = NOW): IssueRequest {
  const csrPemBytes = typeof csr === "string" ? new TextEncoder().encode(csr) : csr;
  return { bundle: BUNDLE, id: ID, csrPem: csrPemBytes, timing: TIMING, now };
}

const GOOD_CSR = csrPem(generateKeyPairSync("ed25519").privateKey);

for (
  const [name, issuer] of [["inline", inlineIssuer], ["thread pool", threadPoolIssuer]] as const
) {
  Deno.test(`${name} issuer: a good CSR is issued, a bad one is a CsrError, an expired CA a SigningError`, async () => {
    const issued = await issuer.issue(issueRequest(GOOD_CSR));
    const chainPem = new TextDecoder().decode(issued.chain);
    const [leaf] = decodePem(chainPem);
    const parsed = parseCertificate(leaf.der);
    assert.equal(parsed.notAfter.getTime(), NOW.getTime() + TIMING.ttlMs);
    assert.equal(issued.notAfter.getTime(), NOW.getTime() + TIMING.ttlMs);
    assert.ok(chainPem.endsWith(BUNDLE.issuerChainPem));

    await assert.rejects(issuer.issue(issueRequest("not a CSR")), CsrError);
    const afterExpiry = new Date(BUNDLE.issuerNotAfter.getTime() + 1000);
    await assert.rejects(issuer.issue(issueRequest(GOOD_CSR, afterExpiry)), SigningError);
  });
}

/** A pool that fails every request with a worker-reported kind. */
function failingPool(kind: "csr" | "signing" | "internal"): WorkerPool {
  return {
    available: true,
    sign: () => Promise.reject(new PoolSigningError(kind, `worker says ${kind}`)),
  };
}

Deno.test("worker-pool issuer: the worker's failure kinds become CsrError, SigningError, or a fault", async () => {
  const request = issueRequest(GOOD_CSR);
  await assert.rejects(workerPoolIssuer(failingPool("csr")).issue(request), (error) => {
    assert.ok(error instanceof CsrError);
    assert.equal(error.message, "worker says csr");
    return true;
  });
  await assert.rejects(workerPoolIssuer(failingPool("signing")).issue(request), SigningError);
  await assert.rejects(workerPoolIssuer(failingPool("internal")).issue(request), (error) => {
    assert.ok(!(error instanceof CsrError) && !(error instanceof SigningError));
    assert.equal((error as Error).message, "worker says internal");
    return true;
  });
});

Deno.test("router: inline unless offloaded; offloaded to the workers while they are available", async () => {
  let offload = false;
  let workerCalls = 0;
  let workerIssues = 0;
  const pool: WorkerPool & { available: boolean } = {
    available: true,
    sign: (_bundle, id, csr, timing, now) => {
      workerCalls++;
      return inlineIssuer.issue({ bundle: BUNDLE, id, csrPem: csr, timing, now });
    },
  };
  const router = new IssuerRouter({
    offload: () => offload,
    pool,
    onWorkerIssue: () => workerIssues++,
  });
  await router.issue(issueRequest(GOOD_CSR));
  assert.equal(workerCalls, 0, "a lone request is issued inline");
  offload = true;
  await router.issue(issueRequest(GOOD_CSR));
  assert.deepEqual([workerCalls, workerIssues], [1, 1]);
  pool.available = false;
  const issued = await router.issue(issueRequest(GOOD_CSR));
  assert.equal(workerCalls, 1, "an unavailable pool is bypassed (node:crypto's thread pool)");
  assert.ok(new TextDecoder().decode(issued.chain).includes("BEGIN CERTIFICATE"));
  await assert.rejects(router.issue(issueRequest("junk")), CsrError);
});
