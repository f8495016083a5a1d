/**
 * Time to mint a root + issuer + workload certificate from the command line: sentry's
 * release binary (three `sentry mint` calls) against the openssl CLI doing the same with
 * ECDSA P-256 keys (eight calls: keys, requests, signatures). Median of several runs; prints
 * numbers, asserts nothing. Usage: deno run -A bench/mint.ts [--runs N]
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const runsFlag = Deno.args.indexOf("--runs");
const RUNS = runsFlag >= 0 ? Number(Deno.args[runsFlag + 1]) : 10;
const binary = join(ROOT, "dist/sentry");
const SENTRY = existsSync(binary) ? [binary] : ["node", join(ROOT, "dist/sentry.cjs")];

async function run(program: string, args: string[], cwd: string): Promise<void> {
  const output = await new Deno.Command(program, { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  if (!output.success) {
    throw new Error(`${program} ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
  }
}

async function sentryChain(dir: string): Promise<void> {
  const [program, ...prefix] = SENTRY;
  await run(program, [
    ...prefix,
    "mint",
    "--profile",
    "root-ca",
    "--trust-domain",
    "cluster.local",
    "--out",
    "ca.crt",
    "--key-out",
    "ca.key",
  ], dir);
  await run(program, [
    ...prefix,
    "mint",
    "--profile",
    "intermediate-ca",
    "--ca",
    "ca.crt",
    "--ca-key",
    "ca.key",
    "--out",
    "issuer.crt",
    "--key-out",
    "issuer.key",
  ], dir);
  await run(program, [
    ...prefix,
    "mint",
    "--profile",
    "workload",
    "--app-id",
    "myapp",
    "--ca",
    "issuer.crt",
    "--ca-key",
    "issuer.key",
    "--out",
    "app.crt",
    "--key-out",
    "app.key",
  ], dir);
}

async function opensslChain(dir: string): Promise<void> {
  const ec = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"];
  await Deno.writeTextFile(
    join(dir, "ext.cnf"),
    "[issuer]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature,keyCertSign,cRLSign\n" +
      "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" +
      "[workload]\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n" +
      "subjectAltName=critical,URI:spiffe://cluster.local/ns/default/myapp\nauthorityKeyIdentifier=keyid\n",
  );
  await run("openssl", [...ec, "ca.key"], dir);
  await run("openssl", [
    "req",
    "-x509",
    "-new",
    "-key",
    "ca.key",
    "-subj",
    "/O=cluster.local",
    "-days",
    "365",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,digitalSignature,keyCertSign",
    "-out",
    "ca.crt",
  ], dir);
  await run("openssl", [...ec, "issuer.key"], dir);
  await run("openssl", [
    "req",
    "-new",
    "-key",
    "issuer.key",
    "-subj",
    "/O=spiffe:\\/\\/cluster.local\\/ns\\/default\\/dapr-sentry",
    "-out",
    "issuer.csr",
  ], dir);
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    "issuer.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "365",
    "-extfile",
    "ext.cnf",
    "-extensions",
    "issuer",
    "-out",
    "issuer.crt",
  ], dir);
  await run("openssl", [...ec, "app.key"], dir);
  await run("openssl", ["req", "-new", "-key", "app.key", "-subj", "/", "-out", "app.csr"], dir);
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    "app.csr",
    "-CA",
    "issuer.crt",
    "-CAkey",
    "issuer.key",
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    "ext.cnf",
    "-extensions",
    "workload",
    "-out",
    "app.crt",
  ], dir);
}

async function median(make: (dir: string) => Promise<void>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const dir = await Deno.makeTempDir({ prefix: "sentry-bench-mint-" });
    const start = performance.now();
    await make(dir);
    times.push(performance.now() - start);
    await run(
      "openssl",
      ["verify", "-CAfile", "ca.crt", "-untrusted", "issuer.crt", "app.crt"],
      dir,
    );
    await Deno.remove(dir, { recursive: true });
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

const ours = await median(sentryChain);
const theirs = await median(opensslChain);
console.log(
  `root + issuer + workload certificate, median of ${RUNS} runs (each chain verified by openssl):`,
);
console.log(`  sentry mint (${SENTRY.join(" ")}), 3 calls: ${ours.toFixed(0)} ms`);
console.log(`  openssl CLI, 8 calls:             ${theirs.toFixed(0)} ms`);
