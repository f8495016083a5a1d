/**
 * End to end: `sentry expiry` and `sentry inspect` give the server's warning when the issuer
 * outlives the root (a bundle made with openssl: a 30-day root and a 60-day issuer), and stay
 * quiet on a bundle whose issuer ends first; `sentry inspect` refuses a FIFO and /dev/zero at
 * once instead of blocking or reading forever.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { opensslBundle, opensslTime } from "../helpers/openssl.ts";
import { type Finished, runSentry, tempDir } from "../helpers/sentry_process.ts";

const OUTLIVES = /warning: issuer certificate outlives the root: issuer NotAfter .* is after/;
const DAY_MS = 86_400_000;

/** Far above a refused read; a command blocked on a FIFO is killed then (exit 137). */
const QUICK_MS = 15_000;

const work = await tempDir("sentry-outlives-test-");
globalThis.addEventListener("unload", () => Deno.removeSync(work, { recursive: true }));

/** A bundle directory in `work`: the openssl root lasts 30 days, the issuer `issuerDays`. */
async function bundle(name: string, issuerDays?: number): Promise<string> {
  const dir = join(work, name);
  await Deno.mkdir(dir);
  const now = Date.now();
  await opensslBundle(
    dir,
    issuerDays === undefined ? undefined : {
      start: opensslTime(new Date(now - 3_600_000)),
      end: opensslTime(new Date(now + issuerDays * DAY_MS)),
    },
  );
  return dir;
}

/** Runs sentry and asserts the exit code, showing the output when it differs. */
async function sentry(args: string[], code: number): Promise<Finished> {
  const result = await runSentry(args, { timeoutMs: QUICK_MS });
  assert.equal(
    result.code,
    code,
    `${args.join(" ")}: exit ${result.code}, expected ${code}\n` +
      `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
  );
  return result;
}

const outlivingDir = await bundle("outlives", 60);
const normalDir = await bundle("normal");

Deno.test("expiry warns when the issuer outlives the root, and only then", async () => {
  const outlives = await sentry(["expiry", "--issuer-credentials", outlivingDir], 0);
  assert.match(outlives.stderr, OUTLIVES);
  assert.match(outlives.stdout, /^root {3}expires /m);
  const json = await sentry(["expiry", "--issuer-credentials", outlivingDir, "--json"], 0);
  assert.match(json.stderr, OUTLIVES);
  JSON.parse(json.stdout); // stdout stays pure JSON

  const normal = await sentry(["expiry", "--issuer-credentials", normalDir], 0);
  assert.doesNotMatch(normal.stderr, /outlives/);
});

Deno.test("inspect warns when the issuer outlives the root it was issued by", async () => {
  const issuer = join(outlivingDir, "issuer.crt");
  const root = join(outlivingDir, "ca.crt");
  // The issuer, with the root as anchor.
  const anchored = await sentry(["inspect", "--anchors", root, issuer], 0);
  assert.match(anchored.stderr, OUTLIVES);
  assert.match(anchored.stdout, /Chain: verified/);
  // Both in one file, as JSON.
  const both = join(work, "issuer-and-root.pem");
  await Deno.writeTextFile(both, await Deno.readTextFile(issuer) + await Deno.readTextFile(root));
  const json = await sentry(["inspect", "--json", both], 0);
  assert.match(json.stderr, OUTLIVES);
  assert.equal(JSON.parse(json.stdout).certificates.length, 2);
  // The issuer alone: no root to compare with.
  assert.doesNotMatch((await sentry(["inspect", issuer], 0)).stderr, /outlives/);

  const normal = await sentry([
    "inspect",
    "--anchors",
    join(normalDir, "ca.crt"),
    join(normalDir, "issuer.crt"),
  ], 0);
  assert.doesNotMatch(normal.stderr, /outlives/);
});

Deno.test("inspect refuses a FIFO and /dev/zero at once", async () => {
  const fifo = join(work, "fifo.pem");
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(made.success, "mkfifo");
  const refused = await sentry(["inspect", fifo], 1);
  assert.equal(refused.stderr, `sentry inspect: ${fifo}: refused: it is a FIFO\n`);
  const asAnchors = await sentry(["inspect", "--anchors", fifo, join(normalDir, "ca.crt")], 1);
  assert.equal(asAnchors.stderr, `sentry inspect: ${fifo}: refused: it is a FIFO\n`);

  const zero = await sentry(["inspect", "/dev/zero"], 1);
  assert.equal(zero.stderr, "sentry inspect: /dev/zero: refused: it is a character device\n");
});
