/**
 * The signing pool's failure handling, with stand-in worker scripts: a worker that dies fails
 * the requests it held (never leaves them hanging) and is replaced by a new one, until workers
 * have died three times in a row; a closed pool refuses new requests. (The real worker is exercised end to end by
 * tests/e2e/signing_workers_test.ts.)
 */
import assert from "node:assert/strict";
import { SpiffeId } from "../../src/ca/spiffe.ts";
import { PoolSigningError, SigningPool } from "../../src/server/signing-pool.ts";
import { testTrustBundle } from "../helpers/trust_bundle.ts";

const NOW = new Date("2031-03-04T05:06:07Z");
const bundle = testTrustBundle({ now: NOW });
const id = SpiffeId.forWorkload("cluster.local", "default", "myapp");
const timing = { ttlMs: 3_600_000, skewMs: 0 };

/** A worker that takes the bundle, then exits with code 3 on the first request. */
const DYING_WORKER = `
const { parentPort } = require("node:worker_threads");
parentPort.on("message", (message) => { if (message.kind === "sign") process.exit(3); });
`;

/** A worker that never answers. */
const SILENT_WORKER = `require("node:worker_threads").parentPort.on("message", () => {});`;

function isStoppedWorker(error: unknown): boolean {
  assert.ok(error instanceof PoolSigningError);
  assert.equal(error.kind, "internal");
  assert.match(error.message, /signing worker stopped: exit code 3/);
  return true;
}

Deno.test("a worker that dies fails its requests and is replaced, up to a limit", async () => {
  const broken: string[] = [];
  const pool = new SigningPool(
    1,
    { source: DYING_WORKER, eval: true },
    (why) => broken.push(why),
  );
  // Workers do not keep the process alive (the gRPC server does that in sentry): a timer does
  // it here.
  const keepAlive = setInterval(() => {}, 1000);
  try {
    const csr = new TextEncoder().encode("csr");
    await assert.rejects(pool.sign(bundle, id, csr, timing, NOW), isStoppedWorker);
    // The replacement receives the bundle again and fails the same way, instead of hanging.
    await assert.rejects(pool.sign(bundle, id, csr, timing, NOW), isStoppedWorker);
    assert.ok(pool.available);
    // The third death in a row puts the pool out of use (the server signs inline then).
    await assert.rejects(pool.sign(bundle, id, csr, timing, NOW), isStoppedWorker);
    assert.equal(pool.available, false);
    assert.deepEqual(broken, ["exit code 3"]);
    await assert.rejects(
      pool.sign(bundle, id, csr, timing, NOW),
      /signing workers keep failing/,
    );
  } finally {
    clearInterval(keepAlive);
    await pool.close();
  }
});

Deno.test("closing the pool fails pending requests and refuses new ones", async () => {
  const pool = new SigningPool(2, { source: SILENT_WORKER, eval: true });
  const csr = new TextEncoder().encode("csr");
  const pending = pool.sign(bundle, id, csr, timing, NOW);
  await pool.close();
  await assert.rejects(pending, PoolSigningError);
  await assert.rejects(pool.sign(bundle, id, csr, timing, NOW), /pool is closed/);
});
