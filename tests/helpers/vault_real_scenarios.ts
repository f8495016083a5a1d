/**
 * Shared parts of the end-to-end tests of `sentry --store vault` against a real Vault server
 * (tests/e2e/vault_real_test.ts): sentry's flags for a Vault started by
 * {@link startRealVault} (HTTPS, its CA in a file), the bundle writes found in Vault's audit
 * log, an operator's bundle made with openssl, "does the server sign with this issuer", the
 * policy HCL block taken from README.md, and a sentry started without waiting for it to become
 * healthy (for a Vault that is sealed or refuses it at start).
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AuditedRequest, RealVault } from "./real_vault.ts";
import { signOnce } from "./grpc_client.ts";
import { opensslBundle } from "./openssl.ts";
import { freePort, sentryCommand, serveArgs, tempDir } from "./sentry_process.ts";

/** sentry's default `--vault-path`. */
export const BUNDLE_PATH = "dapr/sentry/trust-bundle";
/** The KV v2 data path of the bundle, as Vault's audit log names it. */
export const DATA_PATH = `secret/data/${BUNDLE_PATH}`;
/** The KV v2 metadata path of the bundle. */
export const METADATA_PATH = `secret/metadata/${BUNDLE_PATH}`;

const README = fileURLToPath(new URL("../../README.md", import.meta.url));

/** Writes the Vault's CA certificate (PEM) to a new temporary file; returns its path. */
export async function vaultCaFile(vault: RealVault): Promise<string> {
  if (!vault.caPem) throw new Error("the real Vault was started without TLS");
  const file = join(await tempDir("real-vault-ca-"), "vault-ca.pem");
  await Deno.writeTextFile(file, vault.caPem);
  return file;
}

/** sentry's flags for the Vault store at `vault` over HTTPS, polling every 200 ms. */
export function realVaultArgs(vault: RealVault, caFile: string, extra: string[] = []): string[] {
  return [
    "--store",
    "vault",
    "--vault-addr",
    vault.url,
    "--vault-cacert",
    caFile,
    "--vault-poll-interval",
    "200ms",
    ...extra,
  ];
}

/** The writes (create or update) of the bundle's data path in Vault's audit log, in order. */
export async function bundleWrites(vault: RealVault): Promise<AuditedRequest[]> {
  return (await vault.audited()).filter((entry) =>
    entry.path === DATA_PATH && (entry.operation === "create" || entry.operation === "update")
  );
}

/** Audited requests to `path`, in order. */
export async function auditedAt(vault: RealVault, path: string): Promise<AuditedRequest[]> {
  return (await vault.audited()).filter((entry) => entry.path === path);
}

/** A bundle as an operator makes it with openssl (`ca.crt`, `issuer.crt`, `issuer.key`). */
export async function operatorBundle(): Promise<Record<string, string>> {
  const dir = await tempDir("real-vault-operator-");
  await opensslBundle(dir);
  return {
    "ca.crt": await Deno.readTextFile(join(dir, "ca.crt")),
    "issuer.crt": await Deno.readTextFile(join(dir, "issuer.crt")),
    "issuer.key": await Deno.readTextFile(join(dir, "issuer.key")),
  };
}

/**
 * True when sentry on `grpcPort`, trusted through `bundle["ca.crt"]` only, signs a workload
 * certificate whose chain carries `bundle["issuer.crt"]`; false when the call fails (the server
 * may still present the previous chain for a moment) or the chain has another issuer.
 */
export async function signsWith(
  grpcPort: number,
  bundle: Record<string, string>,
  work: string,
): Promise<boolean> {
  try {
    const answer = await signOnce(grpcPort, bundle["ca.crt"], work);
    return answer.workloadCertificate.toString().includes(bundle["issuer.crt"].trim());
  } catch {
    return false;
  }
}

/**
 * The HCL policy README.md gives operators: the ```hcl block under "Policy with exactly what
 * sentry needs" (read at test time, so the README stays true).
 */
export async function readmePolicy(): Promise<string> {
  const text = await Deno.readTextFile(README);
  const at = text.indexOf("Policy with exactly what sentry needs");
  if (at < 0) throw new Error("README.md has no 'Policy with exactly what sentry needs'");
  const block = /```hcl\n([\s\S]*?)```/.exec(text.slice(at));
  if (!block) throw new Error("README.md has no ```hcl block after the policy sentence");
  return block[1];
}

/** A sentry server that may not be healthy (yet). */
export interface SpawnedSentry {
  grpcPort: number;
  healthPort: number;
  /** Everything it printed so far. */
  logs(): string;
  /** The status of `GET /healthz`, or undefined while nothing listens. */
  healthz(): Promise<number | undefined>;
  /** The exit code once it exited, else undefined. */
  exitCode(): number | undefined;
  /**
   * SIGTERM, then SIGKILL if it is still running `graceMs` (default 10 s) later; the exit code,
   * and whether SIGKILL was needed (it should never be).
   */
  stop(graceMs?: number): Promise<{ code: number; forced: boolean }>;
}

/**
 * Starts sentry on free loopback ports with `args` and `env` and returns at once, without
 * waiting for `/healthz` (startSentry waits for 200, which a sealed Vault holds back).
 */
export async function spawnSentry(
  args: string[],
  env: Record<string, string>,
): Promise<SpawnedSentry> {
  const ports = { grpc: await freePort(), health: await freePort(), metrics: await freePort() };
  const [program, ...prefix] = sentryCommand();
  const child = new Deno.Command(program, {
    args: [...prefix, ...serveArgs(await tempDir(), ports), ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let output = "";
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) output += decoder.decode(chunk, { stream: true });
  };
  const collecting = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let code: number | undefined;
  const status = child.status.then((s) => (code = s.code));
  return {
    grpcPort: ports.grpc,
    healthPort: ports.health,
    logs: () => output,
    exitCode: () => code,
    async healthz() {
      try {
        const response = await fetch(`http://127.0.0.1:${ports.health}/healthz`);
        await response.body?.cancel();
        return response.status;
      } catch {
        return undefined;
      }
    },
    async stop(graceMs = 10_000) {
      let forced = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      if (code === undefined) {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
        timer = setTimeout(() => {
          forced = true;
          try {
            child.kill("SIGKILL");
          } catch { /* already gone */ }
        }, graceMs);
      }
      await status;
      clearTimeout(timer);
      await collecting;
      return { code: code!, forced };
    },
  };
}
