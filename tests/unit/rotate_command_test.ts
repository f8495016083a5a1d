/**
 * `sentry rotate status|start|abort`, and what `sentry expiry` and `sentry renew` say about an
 * expiring root, run in-process on real directory stores made with `sentry init`: status
 * writes nothing; start stores a rotation (two anchors, rotation-* files) once and refuses a
 * second; abort restores the old anchors, and is refused after signing switched; exit codes
 * 0/1/2; stable JSON fields; expiry names the root and the command (or the automatic rotation,
 * or the rotation in progress); renew says when the new issuer is cut short by the root.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { CommandIO } from "../../src/cli/command.ts";
import { runExpiry } from "../../src/cli/expiry.ts";
import { runInit } from "../../src/cli/init.ts";
import { runRenew } from "../../src/cli/renew.ts";
import { runRotate } from "../../src/cli/rotate.ts";
import { planRotation, type RotationSettings } from "../../src/ca/root-rotation.ts";
import { FsCredentialStore } from "../../src/stores/fs.ts";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** A command's exit code and output. */
interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command in-process at `now` (default: the real clock). */
async function run(
  command: (argv: readonly string[], io: CommandIO) => Promise<number>,
  argv: string[],
  now?: Date,
): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const io: CommandIO = {
    env: {},
    now: () => now ?? new Date(),
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    readStdin: () => Promise.resolve(new Uint8Array()),
  };
  const code = await command(argv, io);
  return { code, stdout, stderr };
}

/** Runs and asserts the exit code, showing the output when it differs. */
async function expect(
  code: number,
  command: (argv: readonly string[], io: CommandIO) => Promise<number>,
  argv: string[],
  now?: Date,
): Promise<Run> {
  const result = await run(command, argv, now);
  assert.equal(
    result.code,
    code,
    `${argv.join(" ")}: exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`,
  );
  return result;
}

/** A directory store made by `sentry init` (root and issuer valid `days`). */
async function initStore(days: number, extra: string[] = []): Promise<string> {
  const dir = await certsDir();
  await expect(0, runInit, [
    "--issuer-credentials",
    dir,
    "--trust-domain",
    "cluster.local",
    "--root-ttl",
    `${days}d`,
    "--issuer-ttl",
    `${days}d`,
    ...extra,
  ]);
  return dir;
}

/** Every file of a directory with its content. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isFile) files[entry.name] = await Deno.readTextFile(join(dir, entry.name));
  }
  return files;
}

const tempDirs: string[] = [];
globalThis.addEventListener("unload", () => {
  for (const dir of tempDirs) Deno.removeSync(dir, { recursive: true });
});

/** A new temporary directory, removed when the tests end; returns its certs/ path. */
async function certsDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "sentry-rotate-test-" });
  tempDirs.push(dir);
  return join(dir, "certs");
}

const certificates = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----/g)?.length ?? 0;

Deno.test("rotate status on an idle bundle: phase none, the trigger window, nothing written", async () => {
  const dir = await initStore(40);
  const before = await snapshot(dir);
  const text = await expect(0, runRotate, ["status", "--issuer-credentials", dir]);
  assert.match(text.stdout, /^root: +O=cluster\.local$/m);
  assert.match(text.stdout, /^ {2}sha256: +([0-9A-F]{2}:){31}[0-9A-F]{2}$/m);
  assert.match(text.stdout, /^phase: +none$/m);
  // 40 days left, 720h (30 days) trigger window: it starts in about 10 days.
  assert.match(text.stdout, /^waiting for: +the trigger window: a root rotation starts at /m);

  const status = JSON.parse(
    (await expect(0, runRotate, ["status", "--issuer-credentials", dir, "--json"])).stdout,
  );
  assert.deepEqual(Object.keys(status), [
    "store",
    "phase",
    "root",
    "issuer",
    "anchors",
    "rootKeyKept",
    "rotation",
    "automatic",
    "next",
  ]);
  assert.equal(status.phase, "none");
  assert.equal(status.rotation, null);
  assert.equal(status.anchors, 1);
  assert.equal(status.automatic, true);
  assert.deepEqual(Object.keys(status.root), ["subject", "notAfter", "sha256", "keyType"]);
  assert.equal(status.root.keyType, "ec-p256");
  assert.equal(status.next.action, "none");
  assert.equal(status.next.due, false);
  const rootExpiry = new Date(status.root.notAfter).getTime();
  assert.equal(new Date(status.next.at).getTime(), rootExpiry - 30 * DAY);

  // A shorter trigger window moves the start; a server without automatic rotation waits for
  // an operator; a root inside the window is due now.
  const later = JSON.parse(
    (await expect(0, runRotate, [
      "status",
      "--issuer-credentials",
      dir,
      "--json",
      "--rotation-trigger-window",
      "240h",
    ])).stdout,
  );
  assert.equal(new Date(later.next.at).getTime(), rootExpiry - 10 * DAY);
  const manual = await expect(0, runRotate, [
    "status",
    "--issuer-credentials",
    dir,
    "--rotation-enabled=false",
  ]);
  assert.match(manual.stdout, /waiting for: +automatic rotation is off/);
  const due = JSON.parse(
    (await expect(0, runRotate, [
      "status",
      "--issuer-credentials",
      dir,
      "--json",
      "--rotation-trigger-window",
      "1000h",
    ])).stdout,
  );
  assert.equal(due.next.action, "start");
  assert.equal(due.next.due, true);
  assert.match(due.next.waitingFor, /due now.*'sentry rotate start'/);
  assert.deepEqual(await snapshot(dir), before, "status writes nothing, even when a step is due");
});

Deno.test("rotate start: distributing with two anchors; a second start is refused; abort restores", async () => {
  const dir = await initStore(40);
  const before = await snapshot(dir);
  const t0 = new Date();
  const started = await expect(0, runRotate, [
    "start",
    "--issuer-credentials",
    dir,
    "--rotation-propagation-window",
    "48h",
  ], t0);
  assert.match(started.stdout, /^started a root rotation in directory .* \(reason: manual\)$/m);
  const switchAt = new Date(t0.getTime() + 48 * HOUR).toISOString();
  assert.match(started.stdout, new RegExp(`signing switches at ${switchAt}; the old root leaves`));
  assert.match(started.stdout, /a running sentry on this store carries the rotation on/);

  const after = await snapshot(dir);
  assert.equal(certificates(after["ca.crt"]), 2, "anchors: old + new");
  assert.ok(after["ca.crt"].startsWith(before["ca.crt"]), "the old root stays first");
  assert.equal(after["issuer.crt"], before["issuer.crt"], "signing stays with the old issuer");
  for (const file of ["rotation-state.json", "rotation-ca.crt", "rotation-issuer.crt"]) {
    assert.ok(file in after, `${file} written`);
  }
  assert.equal(JSON.parse(after["rotation-state.json"]).reason, "manual");

  const status = JSON.parse(
    (await expect(0, runRotate, ["status", "--issuer-credentials", dir, "--json"], t0)).stdout,
  );
  assert.equal(status.phase, "distributing");
  assert.equal(status.anchors, 2);
  assert.deepEqual(Object.keys(status.rotation), [
    "phase",
    "reason",
    "distributedAt",
    "switchAt",
    "signingAt",
    "completeAt",
    "completeAtEstimated",
    "oldRootNotAfter",
    "newRoot",
  ]);
  assert.equal(status.rotation.reason, "manual");
  assert.equal(status.rotation.distributedAt, t0.toISOString());
  assert.equal(status.rotation.switchAt, switchAt);
  assert.equal(status.rotation.signingAt, null);
  assert.equal(status.rotation.completeAtEstimated, true);
  // The switch fixes completion: the last old certificate (24h workload TTL) plus a check.
  assert.equal(
    status.rotation.completeAt,
    new Date(t0.getTime() + 72 * HOUR + MINUTE).toISOString(),
  );
  assert.notEqual(status.rotation.newRoot.sha256, status.root.sha256);
  assert.equal(status.next.at, switchAt);
  assert.match(status.next.waitingFor, /propagation window/);
  const text = await expect(0, runRotate, ["status", "--issuer-credentials", dir], t0);
  assert.match(text.stdout, /^phase: +distributing$/m);
  assert.match(text.stdout, /^ {2}signing at: +not yet/m);

  const again = await expect(1, runRotate, ["start", "--issuer-credentials", dir]);
  assert.match(again.stderr, /a root rotation is already in progress \(phase distributing/);
  assert.match(again.stdout, /^phase: +distributing$/m, "the status is shown");
  assert.deepEqual(await snapshot(dir), after, "a refused start writes nothing");

  const aborted = await expect(0, runRotate, ["abort", "--issuer-credentials", dir]);
  assert.match(aborted.stdout, /aborted the root rotation .*\(1 left\)/);
  assert.deepEqual(await snapshot(dir), before, "anchors back, rotation files gone");
  const none = await expect(1, runRotate, ["abort", "--issuer-credentials", dir]);
  assert.match(none.stderr, /no root rotation is in progress/);
});

Deno.test("rotate abort is refused once signing switched", async () => {
  const dir = await initStore(40);
  const t0 = new Date();
  await expect(0, runRotate, ["start", "--issuer-credentials", dir], t0);
  // Play the server: the switch, planned after the propagation window, written with CAS.
  const store = new FsCredentialStore({
    directory: dir,
    caFilename: "ca.crt",
    issuerCertFilename: "issuer.crt",
    issuerKeyFilename: "issuer.key",
  });
  const during = (await store.load())!;
  const settings: RotationSettings = {
    triggerWindowMs: 720 * HOUR,
    propagationWindowMs: 24 * HOUR,
    workloadTtlMs: 24 * HOUR,
    completionMarginMs: MINUTE,
    skewMs: 15 * MINUTE,
    algorithm: "ecdsa-p256",
    rootTtlMs: 365 * DAY,
    trustDomain: "cluster.local",
    namespace: "default",
  };
  const t1 = new Date(t0.getTime() + 25 * HOUR);
  const step = await planRotation(during, t1, settings);
  assert.equal(step.kind, "switch");
  if (step.kind !== "switch") return;
  await store.replace(step.next, during);
  const switched = await snapshot(dir);

  const status = JSON.parse(
    (await expect(0, runRotate, ["status", "--issuer-credentials", dir, "--json"], t1)).stdout,
  );
  assert.equal(status.phase, "signing");
  assert.equal(status.rotation.signingAt, t1.toISOString());
  assert.equal(status.rotation.completeAtEstimated, false);
  assert.equal(status.root.sha256, status.rotation.newRoot.sha256, "signing under the new root");
  assert.match(status.next.waitingFor, /old root leaves the trust anchors/);

  const refused = await expect(1, runRotate, ["abort", "--issuer-credentials", dir], t1);
  assert.match(refused.stderr, /too late to abort/);
  assert.deepEqual(await snapshot(dir), switched);
});

Deno.test("rotate: usage errors exit 2, a missing store exits 1", async () => {
  const dir = await initStore(40);
  assert.match((await expect(2, runRotate, ["--issuer-credentials", dir])).stderr, /say what/);
  assert.match(
    (await expect(2, runRotate, ["rotate", "--issuer-credentials", dir])).stderr,
    /unknown action "rotate"/,
  );
  assert.match(
    (await expect(2, runRotate, [
      "start",
      "--issuer-credentials",
      dir,
      "--rotation-propagation-window",
      "1h",
    ])).stderr,
    /--rotation-propagation-window \(1h\) must be at least --workload-cert-ttl \(24h\)/,
  );
  await expect(2, runRotate, ["start", "--issuer-credentials", dir, "--key-algorithm", "rsa"]);
  await expect(2, runRotate, ["status", "extra", "--issuer-credentials", dir]);
  const missing = await expect(1, runRotate, ["status", "--issuer-credentials", join(dir, "x")]);
  assert.match(missing.stderr, /holds no trust bundle/);
  assert.match((await expect(0, runRotate, ["--help"])).stdout, /sentry rotate start/);
});

Deno.test("expiry names the root, says renewing the issuer cannot help, and what happens", async () => {
  const dir = await initStore(40);
  const failing = await expect(1, runExpiry, ["--issuer-credentials", dir, "--warn", "45d"]);
  assert.match(failing.stdout, /^root {3}expires .*<- within --warn$/m, "old lines kept");
  assert.match(failing.stdout, /^first to expire: the root .*renewing the issuer cannot help/m);
  assert.match(
    failing.stdout,
    new RegExp(`^what happens: +run 'sentry rotate start --issuer-credentials ${dir}'`, "m"),
  );
  assert.match(failing.stderr, /within --warn 45d; for the root, renewing the issuer cannot help/);
  assert.doesNotMatch(failing.stderr, /sentry renew/);

  // With automatic rotation on: when it starts; still exit 1 inside --warn.
  const automatic = await expect(1, runExpiry, [
    "--issuer-credentials",
    dir,
    "--warn",
    "45d",
    "--rotation-enabled",
    "--json",
  ]);
  const json = JSON.parse(automatic.stdout);
  assert.equal(json.ok, false);
  assert.equal(json.firstToExpire, "root");
  assert.equal(json.rotation, null);
  assert.equal(json.plan.kind, "automatic");
  assert.equal(
    new Date(json.plan.at).getTime(),
    new Date(json.root.notAfter).getTime() - 30 * DAY,
  );
  assert.match(json.plan.message, /a root rotation starts at/);

  // A rotation in progress: its phase and next time.
  await expect(0, runRotate, ["start", "--issuer-credentials", dir]);
  const during = JSON.parse(
    (await expect(0, runExpiry, ["--issuer-credentials", dir, "--json"])).stdout,
  );
  assert.equal(during.rotation, "distributing");
  assert.equal(during.plan.kind, "rotation-in-progress");
  assert.match(during.plan.message, /signing switches to the new issuer at/);
});

Deno.test("expiry: an issuer that expires first is renewed under a kept root key", async () => {
  const dir = await certsDir();
  await expect(0, runInit, ["--issuer-credentials", dir, "--keep-root-key", "--issuer-ttl", "10d"]);
  const result = await expect(1, runExpiry, ["--issuer-credentials", dir, "--warn", "20d"]);
  assert.match(result.stdout, /^first to expire: the issuer .*before its root$/m);
  assert.match(result.stdout, /what happens: +run 'sentry renew --issuer-credentials /);
  const json = JSON.parse(
    (await expect(0, runExpiry, ["--issuer-credentials", dir, "--json"])).stdout,
  );
  assert.equal(json.firstToExpire, "issuer");
  assert.equal(json.rootKeyKept, true);
  assert.equal(json.plan.command, `sentry renew --issuer-credentials ${dir}`);
});

Deno.test("renew says when the root cuts the new issuer short, and refuses during a rotation", async () => {
  const dir = await initStore(40, ["--keep-root-key"]);
  const clamped = await expect(0, runRenew, ["--issuer-credentials", dir]);
  assert.doesNotMatch(clamped.stdout, /next: nothing/);
  assert.match(clamped.stdout, /next: the new issuer is cut short: it expires with the root at/);
  assert.match(clamped.stdout, /'sentry rotate start --issuer-credentials /);
  const json = JSON.parse(
    (await expect(0, runRenew, ["--issuer-credentials", dir, "--json"])).stdout,
  );
  assert.equal(json.issuerClampedToRoot, true);
  const short = await expect(0, runRenew, ["--issuer-credentials", dir, "--issuer-ttl", "10d"]);
  assert.match(short.stdout, /next: nothing/, "an issuer within the root's life is not cut");

  await expect(0, runRotate, ["start", "--issuer-credentials", dir]);
  const before = await snapshot(dir);
  const refused = await expect(1, runRenew, ["--issuer-credentials", dir, "--root"]);
  assert.match(refused.stderr, /a root rotation is in progress .*phase distributing/);
  assert.deepEqual(await snapshot(dir), before);
});
