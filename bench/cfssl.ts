/**
 * CFSSL as the benchmark's reference CA: installs Debian's `golang-cfssl` when it is missing
 * (as root, with apt-get), creates an ECDSA P-256 root with the openssl CLI, and runs
 * `cfssl serve` on a free loopback port with a 24-hour signing profile — the same key type and
 * lifetime sentry issues. CFSSL keeps its default settings (including its per-request INFO
 * log lines), as an operator would run it.
 *
 * @module
 */
import { join } from "node:path";
import { opensslRoot } from "../tests/helpers/openssl.ts";
import { freePort } from "../tests/helpers/sentry_process.ts";

/** A running `cfssl serve`. */
export interface RunningCfssl {
  port: number;
  /** The process id (for RSS readings). */
  pid: number;
  stop(): Promise<void>;
}

async function hasCfssl(): Promise<boolean> {
  try {
    const output = await new Deno.Command("cfssl", { args: ["version"], stdout: "null" }).output();
    return output.success;
  } catch {
    return false;
  }
}

/**
 * Makes sure `cfssl` is on PATH; returns why not when it cannot be installed (not root, no
 * apt-get, no package), so that the benchmark can say so instead of failing.
 */
export async function ensureCfssl(): Promise<string | undefined> {
  if (await hasCfssl()) return undefined;
  if (Deno.uid() !== 0) return "cfssl is not installed (apt-get install golang-cfssl as root)";
  const install = await new Deno.Command("sh", {
    args: ["-c", "apt-get update -qq && apt-get install -y -qq golang-cfssl"],
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!install.success || !(await hasCfssl())) {
    return `apt-get install golang-cfssl failed: ${new TextDecoder().decode(install.stderr)}`;
  }
  return undefined;
}

/** Starts `cfssl serve` with a new ECDSA P-256 root in `dir`; resolves once it signs `csrPem`. */
export async function startCfssl(dir: string, csrPem: string): Promise<RunningCfssl> {
  await Deno.mkdir(dir, { recursive: true });
  const root = await opensslRoot(dir);
  const config = join(dir, "config.json");
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      signing: {
        default: {
          expiry: "24h",
          usages: ["digital signature", "key encipherment", "server auth", "client auth"],
        },
      },
    }),
  );
  const port = await freePort();
  const child = new Deno.Command("cfssl", {
    args: [
      "serve",
      "-address=127.0.0.1",
      `-port=${port}`,
      `-ca=${root.certPath}`,
      `-ca-key=${root.keyPath}`,
      `-config=${config}`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  };
  const deadline = Date.now() + 15_000;
  while (true) {
    try {
      const response = await fetch(`http://127.0.0.1:${port}/api/v1/cfssl/sign`, {
        method: "POST",
        body: JSON.stringify({ certificate_request: csrPem }),
      });
      const body = await response.json() as { success?: boolean };
      if (body.success) break;
      throw new Error(`cfssl refused the benchmark CSR: ${JSON.stringify(body)}`);
    } catch (error) {
      if (error instanceof Error && error.message.startsWith("cfssl refused")) {
        await stop();
        throw error;
      }
      if (Date.now() > deadline) {
        await stop();
        throw new Error("cfssl serve did not answer within 15 s");
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { port, pid: child.pid, stop };
}
