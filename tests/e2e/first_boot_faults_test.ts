/**
 * End to end, the faults of issue 17 point 4 against the real program: a first boot killed
 * (SIGKILL) at random moments around the writing of the CA, a first boot on a full disk (a tiny
 * tmpfs in a private mount namespace), and `sentry renew --root` killed while it replaces the
 * bundle. After each, the next start must come up healthy with one complete, consistent bundle
 * (openssl verifies the issuer against the root, the key matches the certificate, modes 0644 and
 * 0600) and no staging or temporary file left in the directory.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { signOnce } from "../helpers/grpc_client.ts";
import { openssl } from "../helpers/openssl.ts";
import { terminate } from "../helpers/processes.ts";
import {
  freePort,
  runSentry,
  sentryCommand,
  serveArgs,
  startSentry,
  tempDir,
} from "../helpers/sentry_process.ts";

const FILES = ["ca.crt", "issuer.crt", "issuer.key"];
const MODES: Record<string, number> = { "ca.crt": 0o644, "issuer.crt": 0o644, "issuer.key": 0o600 };
/** What sentry writes while it works: staging directories and temporary files. */
const LEFTOVER = /^\.sentry-staging-|^\.sentry-tmp-|\.tmp$/;

function names(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((entry) => entry.name).sort();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

/** The staging and temporary files in `dir`. */
function leftovers(dir: string): string[] {
  return names(dir).filter((name) => LEFTOVER.test(name));
}

/**
 * Asserts that `dir` holds exactly one good bundle: the three files with their modes, the issuer
 * certificate verified by openssl against ca.crt, the key matching it, and nothing else of ours.
 */
async function assertGoodBundle(dir: string, context: string): Promise<void> {
  assert.deepEqual(leftovers(dir), [], `staging/temporary files left (${context})`);
  for (const file of FILES) {
    const mode = (await Deno.stat(join(dir, file))).mode! & 0o777;
    assert.equal(mode, MODES[file], `mode of ${file} (${context})`);
  }
  await assertConsistent(dir, context);
}

/** Asserts that openssl verifies issuer.crt against ca.crt and that issuer.key matches it. */
async function assertConsistent(dir: string, context: string): Promise<void> {
  const verified = await openssl([
    "verify",
    "-CAfile",
    join(dir, "ca.crt"),
    join(dir, "issuer.crt"),
  ]);
  assert.match(verified, /: OK/, context);
  const certKey = await openssl(["x509", "-in", join(dir, "issuer.crt"), "-noout", "-pubkey"]);
  const keyKey = await openssl(["pkey", "-in", join(dir, "issuer.key"), "-pubout"]);
  assert.equal(keyKey, certKey, `issuer.key does not match issuer.crt (${context})`);
}

/** Starts sentry on `dir`, checks it signs a real CSR and that the bundle is good, stops it. */
async function assertServes(
  dir: string,
  context: string,
  options: { command?: string[]; view?: string } = {},
): Promise<void> {
  const view = options.view ?? dir; // where this process sees `dir`
  const sentry = await startSentry({ dir, command: options.command });
  try {
    const anchors = await Deno.readTextFile(join(view, "ca.crt"));
    const issued = await signOnce(sentry.grpcPort, anchors, await tempDir());
    assert.match(issued.workloadCertificate.toString(), /BEGIN CERTIFICATE/);
    await assertGoodBundle(view, context);
  } catch (error) {
    throw new Error(`${context}: ${(error as Error).message}\n${sentry.logs()}`);
  } finally {
    assert.equal(await sentry.stop(), 0, sentry.logs());
  }
}

/** Spawns `sentry serve` on `dir` (free ports), output discarded. */
async function spawnServe(dir: string): Promise<Deno.ChildProcess> {
  const ports = { grpc: await freePort(), health: await freePort(), metrics: await freePort() };
  const [program, ...prefix] = sentryCommand();
  return new Deno.Command(program, {
    args: [...prefix, ...serveArgs(dir, ports)],
    stdout: "null",
    stderr: "null",
    stdin: "null",
  }).spawn();
}

/** Busy-waits (the event loop is blocked: no timer jitter) until `until` (performance.now()). */
function spinUntil(until: number, done: () => boolean = () => false): boolean {
  while (performance.now() < until) if (done()) return true;
  return done();
}

/** In which state a killed first boot left `dir`. */
function stateOf(dir: string): "no files" | "staging present" | "published" | "partial" {
  const present = names(dir);
  if (present.some((name) => name.startsWith(".sentry-staging-"))) return "staging present";
  if (present.length === 0) return "no files";
  if (FILES.every((file) => present.includes(file))) return "published";
  return "partial";
}

/**
 * The moments (ms after spawn) when the staging directory appears and when the bundle is
 * published, measured on one undisturbed first boot.
 */
async function measureWriteWindow(): Promise<{ staged: number; published: number }> {
  const dir = join(await tempDir(), "certs");
  const spawned = performance.now();
  const child = await spawnServe(dir);
  let staged = NaN;
  const published = () => {
    const present = names(dir);
    if (isNaN(staged) && present.some((name) => name.startsWith(".sentry-staging-"))) {
      staged = performance.now() - spawned;
    }
    return FILES.every((file) => present.includes(file)) && leftovers(dir).length === 0;
  };
  const done = spinUntil(spawned + 10_000, published);
  const at = performance.now() - spawned;
  await terminate(child);
  assert.ok(done, "the first boot did not publish a bundle within 10 s");
  return { staged: isNaN(staged) ? at : staged, published: at };
}

Deno.test("first boot killed at random moments: the next start serves a complete CA", async () => {
  const window = await measureWriteWindow();
  console.log(
    `first boot: staging after ${window.staged.toFixed(0)} ms, ` +
      `published after ${window.published.toFixed(0)} ms`,
  );
  const writeMs = Math.max(window.published - window.staged, 1);
  const counts: Record<string, number> = {
    "no files": 0,
    "staging present": 0,
    "published": 0,
    "partial": 0,
  };
  const runs = 25;
  for (let run = 0; run < runs; run++) {
    const dir = join(await tempDir(), "certs");
    const spawned = performance.now();
    const child = await spawnServe(dir);
    if (run % 3 === 0) {
      // Anywhere from spawn to a little after the measured publication.
      spinUntil(spawned + Math.random() * (window.published + 20));
    } else {
      // Aimed at the write: once the staging directory exists, within the time the writes took.
      const staging = () => names(dir).some((name) => name.startsWith(".sentry-staging-"));
      const published = () => FILES.every((file) => names(dir).includes(file));
      spinUntil(spawned + 10_000, () => staging() || published());
      spinUntil(performance.now() + Math.random() * (writeMs + 1));
    }
    child.kill("SIGKILL");
    await child.status;
    const state = stateOf(dir);
    counts[state]++;
    const context = `run ${run}, killed with ${state} (${names(dir).join(", ")})`;
    assert.notEqual(state, "partial", `${context}: published files without a staging`);
    await assertServes(dir, context);
  }
  console.log(`kills by state: ${JSON.stringify(counts)}`);
  assert.ok(counts["staging present"] > 0, "no kill landed during the write");
});

/** A private mount namespace (kept alive by a sleeping shell) with a tmpfs of `size` at `dir`. */
async function tmpfsNamespace(dir: string, size: string) {
  const holder = new Deno.Command("unshare", {
    args: [
      "-m",
      "--propagation",
      "private",
      "sh",
      "-c",
      `mount -t tmpfs -o size=${size},mode=0755 tmpfs "$1" && echo mounted && exec sleep 600`,
      "sh",
      dir,
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  if (value?.trim() !== "mounted") {
    await terminate(holder, 100);
    throw new Error(`cannot mount a tmpfs in a private namespace: ${value ?? "no output"}`);
  }
  const pid = holder.pid;
  const enter = ["nsenter", "-t", String(pid), "-m", "--"];
  return {
    /** Runs `command` inside the namespace. */
    enter,
    /** `dir` as seen from outside the namespace. */
    view: `/proc/${pid}/root${dir}`,
    async run(command: string[]): Promise<{ code: number; output: string }> {
      const result = await new Deno.Command(enter[0], {
        args: [...enter.slice(1), ...command],
        stdout: "piped",
        stderr: "piped",
        stdin: "null",
      }).output();
      const decoder = new TextDecoder();
      const output = decoder.decode(result.stdout) + decoder.decode(result.stderr);
      return { code: result.code, output };
    },
    async close(): Promise<void> {
      await terminate(holder, 1000);
      await holder.stdout.cancel().catch(() => {});
      await holder.stderr.cancel().catch(() => {});
    },
  };
}

Deno.test("first boot on a full disk: refused naming the destination, nothing left; then serves", async (t) => {
  // tmpfs counts whole pages: 4k holds the staged key only, 8k the key and issuer.crt, 12k all
  // three files but not the manifest.
  for (const size of ["4k", "8k", "12k"]) {
    await t.step(`a ${size} tmpfs`, async () => {
      const dir = await tempDir();
      const ns = await tmpfsNamespace(dir, size);
      try {
        const ports = {
          grpc: await freePort(),
          health: await freePort(),
          metrics: await freePort(),
        };
        const started = Date.now();
        const run = await ns.run([...sentryCommand(), ...serveArgs(dir, ports)]);
        assert.equal(run.code, 1, run.output);
        assert.ok(Date.now() - started < 20_000, "refused promptly");
        assert.match(run.output, /no space left on device/i);
        assert.match(run.output, /cannot write the new bundle into directory /);
        assert.ok(run.output.includes(`directory ${dir}:`), `names ${dir}:\n${run.output}`);
        assert.match(run.output, /nothing was changed/);
        assert.doesNotMatch(run.output, /sentry-tmp|sentry-staging/, "no temporary names");
        assert.deepEqual(names(ns.view), [], "no partial credentials, no staging");
        const remount = await ns.run(["mount", "-o", "remount,size=1m", dir]);
        assert.equal(remount.code, 0, remount.output);
        await assertServes(dir, `after ENOSPC on ${size}`, {
          command: ns.enter.concat(sentryCommand()),
          view: ns.view,
        });
      } finally {
        await ns.close();
      }
    });
  }
});

Deno.test("renew --root killed at random moments: the old or the new pair, never a mix", async () => {
  const counts = { old: 0, new: 0, "recorded, finished by the next start": 0 };
  const runs = 12;
  for (let run = 0; run < runs; run++) {
    const dir = join(await tempDir(), "certs");
    const init = await runSentry(["init", "--issuer-credentials", dir]);
    assert.equal(init.code, 0, init.stdout + init.stderr);
    const issuer = join(dir, "issuer.crt");
    const before = await Deno.readTextFile(issuer);
    const [program, ...prefix] = sentryCommand();
    const spawned = performance.now();
    const child = new Deno.Command(program, {
      args: [...prefix, "renew", "--root", "--issuer-credentials", dir],
      stdout: "null",
      stderr: "null",
      stdin: "null",
    }).spawn();
    if (run % 2 === 0) {
      // Aimed at the replacement: once a staging or temporary file appears (or it is done).
      const writing = () => leftovers(dir).length > 0 || Deno.readTextFileSync(issuer) !== before;
      spinUntil(spawned + 10_000, writing);
      spinUntil(performance.now() + Math.random() * 3);
    } else {
      spinUntil(spawned + Math.random() * 400);
    }
    child.kill("SIGKILL");
    await child.status;
    const context = `renew run ${run} killed (${names(dir).join(", ")})`;
    const after = await Deno.readTextFile(issuer);
    const consistent = await assertConsistent(dir, context).then(() => true, () => false);
    if (consistent) {
      counts[after === before ? "old" : "new"]++;
    } else {
      // Between the renames of one change: its manifest must be there for the next load.
      const staging = names(dir).find((name) => name.startsWith(".sentry-staging-"));
      assert.ok(staging, `${context}: a mix of old and new files and no recorded change`);
      await Deno.stat(join(dir, staging, "manifest.json"));
      counts["recorded, finished by the next start"]++;
    }
    await assertServes(dir, context);
    if (!consistent) assert.notEqual(await Deno.readTextFile(issuer), before, "finished");
  }
  console.log(`renew kills left: ${JSON.stringify(counts)}`);
});
