/**
 * End to end: `sentry rotate start|status|abort` of the bundled program on a directory store,
 * with their exit codes (0 done, 1 refused, 2 usage), the files they leave (checked with
 * openssl: during distributing, ca.crt holds both roots and the old issuer still verifies), and
 * `sentry expiry` naming the root as what expires and `sentry rotate start` as the way out.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { openssl } from "../helpers/openssl.ts";
import { type Finished, runSentry, tempDir } from "../helpers/sentry_process.ts";

const work = await tempDir("sentry-rotate-cli-test-");
globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));

/** Runs the bundled sentry and asserts the exit code, showing the output when it differs. */
async function sentry(args: string[], code: number): Promise<Finished> {
  const result = await runSentry(args);
  assert.equal(
    result.code,
    code,
    `sentry ${args.join(" ")}: exit ${result.code}, expected ${code}\n` +
      `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
  );
  return result;
}

/** How many certificates openssl reads from a PEM file. */
async function certificatesIn(file: string): Promise<number> {
  const text = await openssl(["crl2pkcs7", "-nocrl", "-certfile", file]);
  const printed = await openssl(["pkcs7", "-print_certs", "-noout"], text);
  return printed.match(/^subject=/gm)?.length ?? 0;
}

Deno.test("rotate: start, status, abort of the real program, with exit codes", async () => {
  const dir = join(work, "certs");
  await sentry([
    "init",
    "--issuer-credentials",
    dir,
    "--trust-domain",
    "cluster.local",
    "--root-ttl",
    "40d",
    "--issuer-ttl",
    "40d",
  ], 0);
  const oldAnchors = await Deno.readTextFile(join(dir, "ca.crt"));

  // expiry: the root is the problem, and the command to run says so.
  const expiry = await sentry(["expiry", "--issuer-credentials", dir, "--warn", "45d"], 1);
  assert.match(expiry.stdout, /first to expire: the root .*renewing the issuer cannot help/);
  assert.match(expiry.stderr, new RegExp(`run 'sentry rotate start --issuer-credentials ${dir}'`));

  const idle = JSON.parse(
    (await sentry(["rotate", "status", "--issuer-credentials", dir, "--json"], 0)).stdout,
  );
  assert.equal(idle.phase, "none");
  assert.equal(idle.next.action, "none");

  const started = await sentry(["rotate", "start", "--issuer-credentials", dir], 0);
  assert.match(started.stdout, /signing switches at \S+; the old root leaves at about/);
  assert.equal(await certificatesIn(join(dir, "ca.crt")), 2, "old + new root");
  assert.match(
    await openssl(["verify", "-CAfile", join(dir, "ca.crt"), join(dir, "issuer.crt")]),
    /OK/,
    "the old issuer still verifies against the combined anchors",
  );
  assert.match(
    await openssl([
      "verify",
      "-CAfile",
      join(dir, "rotation-ca.crt"),
      join(dir, "rotation-issuer.crt"),
    ]),
    /OK/,
  );
  const state = JSON.parse(await Deno.readTextFile(join(dir, "rotation-state.json")));
  assert.equal(state.phase, "distributing");
  assert.equal(state.signing_at, "0001-01-01T00:00:00Z", "Dapr's zero time until the switch");

  const status = await sentry(["rotate", "status", "--issuer-credentials", dir], 0);
  assert.match(status.stdout, /^phase: +distributing$/m);
  assert.match(status.stdout, /^waiting for: +the propagation window/m);
  const during = await sentry(["expiry", "--issuer-credentials", dir], 0);
  assert.match(during.stdout, /what happens: +a root rotation is in progress \(phase distributing/);

  const again = await sentry(["rotate", "start", "--issuer-credentials", dir], 1);
  assert.match(again.stderr, /already in progress/);

  await sentry(["rotate", "abort", "--issuer-credentials", dir], 0);
  assert.equal(await Deno.readTextFile(join(dir, "ca.crt")), oldAnchors);
  await assert.rejects(Deno.stat(join(dir, "rotation-state.json")), Deno.errors.NotFound);
  const none = await sentry(["rotate", "abort", "--issuer-credentials", dir], 1);
  assert.match(none.stderr, /no root rotation is in progress/);

  await sentry(["rotate", "spin", "--issuer-credentials", dir], 2);
  assert.match((await sentry(["--help"], 0)).stdout, /^ {2}rotate +root CA rotation/m);
});
