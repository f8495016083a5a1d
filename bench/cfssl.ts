/**
 * CFSSL as the benchmark's reference CA: installs Debian's `golang-cfssl` when it is missing
 * (as root, with apt-get), creates an ECDSA P-256 root with the openssl CLI, and runs
 * `cfssl serve` on a free loopback port with a 24-hour signing profile — the same key type and
 * lifetime sentry issues. CFSSL keeps its default settings (including its per-request INFO
 * log lines), as an operator would run it: plain HTTP, or HTTPS with `tls: true` (sentry's gRPC
 * is always TLS; the HTTPS figures show what TLS costs CFSSL).
 *
 * @module
 */
import { join } from "node:path";
import { openssl, opensslRoot } from "../tests/helpers/openssl.ts";
import { freePort } from "../tests/helpers/sentry_process.ts";

/** A running `cfssl serve`. */
export interface RunningCfssl {
  port: number;
  /** With `tls`: the PEM certificate to trust for `localhost`. */
  anchorsPem?: string;
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

/** A self-signed ECDSA P-256 TLS certificate for `localhost` in `dir`. */
async function tlsCertificate(dir: string): Promise<{ certPath: string; keyPath: string }> {
  const certPath = join(dir, "tls.crt");
  const keyPath = join(dir, "tls.key");
  await openssl([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    keyPath,
    "-out",
    certPath,
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=DNS:localhost",
    "-days",
    "2",
  ]);
  return { certPath, keyPath };
}

class RefusedCsr extends Error {}

/** Resolves once CFSSL signs `csrPem` over plain HTTP; throws RefusedCsr if it refuses it. */
async function signsOverHttp(port: number, csrPem: string): Promise<void> {
  const response = await fetch(`http://127.0.0.1:${port}/api/v1/cfssl/sign`, {
    method: "POST",
    body: JSON.stringify({ certificate_request: csrPem }),
  });
  const body = await response.json() as { success?: boolean };
  if (!body.success) {
    throw new RefusedCsr(`cfssl refused the benchmark CSR: ${JSON.stringify(body)}`);
  }
}

/**
 * Resolves once `port` accepts connections. (Deno's TLS client refuses the self-signed CA
 * certificate as a server certificate; the load generator, on Node, accepts it and reports
 * any failed call.)
 */
async function listening(port: number): Promise<void> {
  const connection = await Deno.connect({ hostname: "127.0.0.1", port });
  connection.close();
}

/**
 * Starts `cfssl serve` with a new ECDSA P-256 root in `dir` (over HTTPS with `tls`); resolves
 * once it signs `csrPem`.
 */
export async function startCfssl(
  dir: string,
  csrPem: string,
  options: { tls?: boolean } = {},
): Promise<RunningCfssl> {
  await Deno.mkdir(dir, { recursive: true });
  const root = await opensslRoot(dir);
  const tls = options.tls ? await tlsCertificate(dir) : undefined;
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
      ...(tls ? [`-tls-cert=${tls.certPath}`, `-tls-key=${tls.keyPath}`] : []),
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
  const anchorsPem = tls ? await Deno.readTextFile(tls.certPath) : undefined;
  const deadline = Date.now() + 15_000;
  while (true) {
    try {
      await (tls ? listening(port) : signsOverHttp(port, csrPem));
      break;
    } catch (error) {
      if (error instanceof RefusedCsr || Date.now() > deadline) {
        await stop();
        throw error instanceof RefusedCsr
          ? error
          : new Error("cfssl serve did not answer within 15 s");
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return { port, pid: child.pid, anchorsPem, stop };
}
