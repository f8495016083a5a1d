/**
 * In-process signing benchmark, runnable on Deno (`deno run -A bench/signer.ts CSR_FILE`) and
 * on Node (bundled by bench/run.ts): decode + verify a CSR, then build and sign a workload
 * certificate, on one core, for a fixed time. Prints one JSON line; asserts nothing.
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { generateBundle, validateBundle } from "../src/ca/bundle.ts";
import { decodeCsr } from "../src/x509/csr.ts";
import { issueWorkloadCertificate } from "../src/ca/signer.ts";
import { SpiffeId } from "../src/ca/spiffe.ts";
import { runtimeDescription } from "../src/util/version.ts";

const [csrFile, secondsText = "5"] = process.argv.slice(2);
const seconds = Number(secondsText);
const csr = readFileSync(csrFile);
const now = new Date();
const bundle = validateBundle(
  generateBundle({
    trustDomain: "cluster.local",
    namespace: "default",
    algorithm: "ecdsa-p256",
    now,
    ttlMs: 365 * 86_400_000,
    skewMs: 900_000,
  }),
  now,
);
const id = SpiffeId.forWorkload("public", "default", "bench");
const timing = { ttlMs: 86_400_000, skewMs: 900_000 };

let count = 0;
const start = performance.now();
const end = start + seconds * 1000;
while (performance.now() < end) {
  for (let i = 0; i < 50; i++) {
    issueWorkloadCertificate(bundle, id, decodeCsr(csr).subjectPublicKeyInfo, timing, new Date());
  }
  count += 50;
}
const elapsed = (performance.now() - start) / 1000;
console.log(JSON.stringify({
  runtime: runtimeDescription(),
  certificatesPerSecond: Math.round(count / elapsed),
  count,
  seconds: Number(elapsed.toFixed(2)),
}));
