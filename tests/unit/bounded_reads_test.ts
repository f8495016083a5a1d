/**
 * Every file sentry reads on behalf of an operator goes through the bounded reader: a FIFO
 * planted where a configuration file, a JWKS file, a CA certificate, a token or a TLS key is
 * expected is refused at once with a message naming the file, instead of blocking a thread of
 * the I/O pool forever (hardening issue, point 3 and its siblings).
 *
 * Each case races the read against a 5 s timer: before the bounded reader, each of these hung.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FileSettingsSource } from "../../src/config/settings-source.ts";
import { JwksSource } from "../../src/identity/jwks-source.ts";
import { loadCaCertificate } from "../../src/identity/jwks-options.ts";
import { loadInClusterConfig } from "../../src/kubernetes/config.ts";
import { VaultClient } from "../../src/vault/client.ts";
import { startOidcServer } from "../../src/server/oidc-server.ts";
import { STORE_FLAGS, storeFromFlags } from "../../src/cli/store-flags.ts";
import { parseFlags } from "../../src/cli/flags.ts";

/** A FIFO nobody writes to: opening it for reading without O_NONBLOCK blocks forever. */
async function fifo(dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  const made = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(made.success, "mkfifo failed");
  return path;
}

/** Rejects with the outcome of `work`, or with "hung" after 5 s. */
async function settled(work: () => unknown): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("hung: the read blocked on the FIFO")), 5_000);
  });
  try {
    return await Promise.race([Promise.resolve().then(work), hung]);
  } finally {
    clearTimeout(timer);
  }
}

interface Case {
  name: string;
  /** Reads the FIFO at `path` through the component under test. */
  read: (path: string) => unknown;
  /** What the error must say besides "FIFO". */
  names: (path: string) => RegExp;
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

const CASES: Case[] = [
  {
    name: "configuration file",
    read: (path) => new FileSettingsSource(path, {}).load(),
    names: (path) => new RegExp(`configuration file ${escape(path)}: refused: it is a FIFO`),
  },
  {
    name: "JWKS file",
    read: (path) => JwksSource.open({ source: path }),
    names: (path) => new RegExp(`JWKS file ${escape(path)}: refused: it is a FIFO`),
  },
  {
    name: "JWKS validator caCertificate file",
    read: (path) => loadCaCertificate(path),
    names: () => /caCertificate.*refused: it is a FIFO/,
  },
  {
    name: "in-cluster service-account token",
    read: (path) =>
      loadInClusterConfig(
        { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: "6443" },
        { tokenPath: path },
      ),
    names: (path) => new RegExp(`token ${escape(path)}: refused: it is a FIFO`),
  },
  {
    name: "Vault token file",
    read: (path) =>
      new VaultClient({ address: "http://127.0.0.1:1", auth: { kind: "token", tokenFile: path } })
        .request("GET", "secret/data/x"),
    names: (path) => new RegExp(`Vault token file ${escape(path)}: refused: it is a FIFO`),
  },
  {
    name: "Vault CA certificate (--vault-cacert)",
    read: (path) =>
      storeFromFlags(
        parseFlags(STORE_FLAGS, [
          "--store",
          "vault",
          "--vault-addr",
          "https://127.0.0.1:8200",
          "--vault-cacert",
          path,
        ]),
        { VAULT_TOKEN: "s.x" },
      ),
    names: (path) => new RegExp(`--vault-cacert ${escape(path)}: refused: it is a FIFO`),
  },
  {
    name: "OIDC server TLS certificate",
    read: (path) =>
      startOidcServer({
        listenAddress: "127.0.0.1",
        port: 0,
        signingAlgorithm: "RS256",
        tlsCertFile: path,
        tlsKeyFile: path,
      }),
    names: (path) => new RegExp(`${escape(path)}: it is a FIFO`),
  },
];

for (const c of CASES) {
  Deno.test(`a FIFO as the ${c.name} is refused at once, naming the file`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "bounded-reads-" });
    try {
      const path = await fifo(dir, "planted");
      await assert.rejects(settled(() => c.read(path)), (error: Error) => {
        assert.doesNotMatch(error.message, /^hung/, `${c.name}: ${error.message}`);
        assert.match(error.message, c.names(path));
        return true;
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
