/**
 * A real HashiCorp Vault server for the tests, where the fake (tests/fakes/vault.ts) only models
 * one: `vault` built from the published Go module by tests/vault/build.sh (release pinned in
 * tests/vault/go.mod; the first build downloads 618 MB of module zips and compiles for about 13
 * minutes on 2 CPUs, a cached one costs nothing).
 *
 * {@link startRealVault} runs it as production does, not in dev mode: file storage in a
 * temporary directory (so a restart keeps the data), a TCP listener on a free loopback port
 * (HTTPS with a CA made by the openssl CLI, or plain HTTP), `sys/init` with one key share, a real
 * unseal, KV version 2 mounted at `secret/`, and a file audit device logging raw requests (the
 * tests count and read the requests sentry sent from it, as the fake's request log does).
 * Starting, initialising and unsealing take well under a second.
 *
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { builtDirectory, Daemon, waitFor } from "./daemon.ts";
import { opensslServerTls } from "./openssl.ts";
import { freePort, tempDir } from "./sentry_process.ts";

const BUILD_SCRIPT = fileURLToPath(new URL("../vault/build.sh", import.meta.url));

/** The answer to {@link RealVault.request}. */
export interface VaultAnswer {
  status: number;
  /** The body parsed as JSON (undefined for an empty body), or its text when it is not JSON. */
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** Options of {@link RealVault.request}. */
export interface VaultRequestOptions {
  /** `X-Vault-Token` (default the root token; `null` sends none). */
  token?: string | null;
  /** `X-Vault-Namespace`. */
  namespace?: string;
}

/** One request as the audit device logged it (raw: values are not HMAC-ed). */
export interface AuditedRequest {
  /** `read`, `create`, `update`, `delete`, `list`. */
  operation: string;
  /** The Vault path, without `/v1/`, e.g. `secret/data/dapr/sentry/trust-bundle`. */
  path: string;
  // deno-lint-ignore no-explicit-any
  data?: any;
  /** The error Vault answered with, when it refused the request. */
  error?: string;
}

/** Options of {@link startRealVault}. */
export interface RealVaultOptions {
  /** Serve HTTPS with a CA of its own ({@link RealVault.caPem}); default true. */
  tls?: boolean;
}

/** Options of {@link RealVault.createToken}. */
export interface RealTokenOptions {
  policies?: string[];
  /** Go duration, e.g. `"30s"`. */
  ttl?: string;
  explicitMaxTtl?: string;
  renewable?: boolean;
  /** Leave out the `default` policy (lookup-self, renew-self). */
  noDefaultPolicy?: boolean;
}

/** A running real Vault. */
export interface RealVault {
  /** `https://127.0.0.1:PORT` (or `http://` without TLS). */
  url: string;
  /** The CA certificate (PEM) of its serving certificate, undefined without TLS. */
  caPem?: string;
  /** The root token from `sys/init`. */
  rootToken: string;
  /** The one unseal key (base64). */
  unsealKey: string;
  /** Sends `method /v1/path` with `body` (JSON) and returns status and parsed body. */
  request(
    method: string,
    path: string,
    body?: unknown,
    options?: VaultRequestOptions,
  ): Promise<VaultAnswer>;
  /** Like {@link request}, but throws unless the status is 2xx. */
  must(method: string, path: string, body?: unknown, options?: VaultRequestOptions): Promise<
    VaultAnswer
  >;
  /** Writes a new version of KV v2 secret `secret/<path>` as `vault kv put` does (no CAS). */
  write(path: string, data: Record<string, unknown>): Promise<number>;
  /** The latest readable version of `secret/<path>`, or undefined (404). */
  read(path: string): Promise<{ version: number; data: Record<string, string> } | undefined>;
  /** `current_version` of `secret/<path>` from its metadata, or 0 when never written. */
  currentVersion(path: string): Promise<number>;
  /** Soft-deletes (`vault kv delete`), destroys or undeletes the latest version. */
  latest(path: string, action: "delete" | "destroy" | "undelete"): Promise<void>;
  /** Writes ACL policy `name` in HCL. */
  setPolicy(name: string, hcl: string): Promise<void>;
  /** Creates a token (`auth/token/create`), returns it. */
  createToken(options?: RealTokenOptions): Promise<string>;
  /** Seals it (`sys/seal`). */
  seal(): Promise<void>;
  /** Unseals it with the key (`sys/unseal`). */
  unseal(): Promise<void>;
  /** Stops the server process (SIGTERM) and starts it again on the same port and data; it comes back sealed unless `unseal` is true. */
  restart(options?: { unseal?: boolean }): Promise<void>;
  /** Stops the server process only (it can be started again with {@link restart}). */
  stop(): Promise<void>;
  /** Every request logged by the audit device so far, in order. */
  audited(): Promise<AuditedRequest[]>;
  /** The tail of the server's output. */
  logs(): string;
  /** Stops the server and removes its files. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Builds (or finds, cached) the `vault` program; returns its path. */
export async function vaultBinary(): Promise<string> {
  return join(await builtDirectory(BUILD_SCRIPT), "vault");
}

/** Starts a real Vault: initialised, unsealed, KV v2 at `secret/`, audited. */
export async function startRealVault(options: RealVaultOptions = {}): Promise<RealVault> {
  const binary = await vaultBinary();
  const dir = await tempDir("real-vault-");
  const at = (name: string) => join(dir, name);
  const port = await freePort();
  const useTls = options.tls ?? true;
  const tls = useTls ? await opensslServerTls("real-vault-ca") : undefined;
  const url = `${useTls ? "https" : "http"}://127.0.0.1:${port}`;
  const listener = tls
    ? `  tls_cert_file = "${at("serving.crt")}"\n  tls_key_file = "${at("serving.key")}"\n`
    : `  tls_disable = true\n`;
  if (tls) {
    await Deno.writeTextFile(at("serving.crt"), tls.certPem);
    await Deno.writeTextFile(at("serving.key"), tls.keyPem);
  }
  await Deno.writeTextFile(
    at("config.hcl"),
    `storage "file" {\n  path = "${at("data")}"\n}\n` +
      `listener "tcp" {\n  address = "127.0.0.1:${port}"\n${listener}}\n` +
      `disable_mlock = true\napi_addr = "${url}"\nui = false\n`,
  );
  const client = tls ? Deno.createHttpClient({ caCerts: [tls.caPem] }) : undefined;
  let daemon: Daemon | undefined;
  let rootToken = "";
  let unsealKey = "";

  const request = async (
    method: string,
    path: string,
    body?: unknown,
    opts: VaultRequestOptions = {},
  ): Promise<VaultAnswer> => {
    const headers: Record<string, string> = {};
    const token = opts.token === undefined ? rootToken : opts.token;
    if (token) headers["x-vault-token"] = token;
    if (opts.namespace) headers["x-vault-namespace"] = opts.namespace;
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(`${url}/v1/${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      client,
    });
    const text = await response.text();
    let parsed: unknown = text === "" ? undefined : text;
    try {
      parsed = JSON.parse(text);
    } catch { /* not JSON */ }
    return { status: response.status, body: parsed };
  };
  const must = async (
    method: string,
    path: string,
    body?: unknown,
    opts?: VaultRequestOptions,
  ): Promise<VaultAnswer> => {
    const answer = await request(method, path, body, opts);
    if (answer.status < 200 || answer.status > 299) {
      throw new Error(
        `real Vault ${method} ${path}: ${answer.status} ${JSON.stringify(answer.body)}`,
      );
    }
    return answer;
  };
  const launch = async () => {
    const started = new Daemon("vault", binary, ["server", `-config=${at("config.hcl")}`]);
    daemon = started;
    let exited = false;
    started.exited.then(() => exited = true);
    await waitFor(
      async () => {
        if (exited) throw new Error(`vault exited while starting:\n${started.tail()}`);
        const health = await request("GET", "sys/health", undefined, { token: null })
          .catch(() => undefined);
        return health !== undefined;
      },
      60_000,
      () => `vault did not answer within 60 s:\n${started.tail()}`,
    );
  };
  const unseal = async () => {
    await must("PUT", "sys/unseal", { key: unsealKey }, { token: null });
    await waitFor(
      async () => (await request("GET", "sys/health", undefined, { token: null })).status === 200,
      30_000,
      () => `vault did not become active after unseal:\n${daemon?.tail()}`,
    );
  };
  const stop = async () => {
    await daemon?.stop();
    daemon = undefined;
  };
  const close = async () => {
    await stop();
    client?.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };

  try {
    await launch();
    const init = await must("PUT", "sys/init", { secret_shares: 1, secret_threshold: 1 }, {
      token: null,
    });
    rootToken = init.body.root_token;
    unsealKey = init.body.keys_base64[0];
    await unseal();
    await must("POST", "sys/mounts/secret", { type: "kv", options: { version: "2" } });
    await must("PUT", "sys/audit/file", {
      type: "file",
      options: { file_path: at("audit.log"), log_raw: "true" },
    });
    // A new KV v2 mount upgrades its storage in the background; wait until it answers.
    await waitFor(
      async () => (await request("GET", "secret/config")).status === 200,
      30_000,
      () => `the KV v2 mount did not become ready:\n${daemon?.tail()}`,
    );
  } catch (error) {
    await close();
    throw error;
  }

  const kv = (kind: string, path: string) => `secret/${kind}/${path}`;
  const vault: RealVault = {
    url,
    caPem: tls?.caPem,
    rootToken,
    unsealKey,
    request,
    must,
    async write(path, data) {
      const answer = await must("POST", kv("data", path), { data });
      return answer.body.data.version;
    },
    async read(path) {
      const answer = await request("GET", kv("data", path));
      if (answer.status === 404) return undefined;
      if (answer.status !== 200) {
        throw new Error(`real Vault read ${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
      }
      return { version: answer.body.data.metadata.version, data: answer.body.data.data };
    },
    async currentVersion(path) {
      const answer = await request("GET", kv("metadata", path));
      return answer.status === 404 ? 0 : answer.body.data.current_version;
    },
    async latest(path, action) {
      const version = await vault.currentVersion(path);
      if (action === "delete") await must("DELETE", kv("data", path));
      else await must("POST", kv(action, path), { versions: [version] });
    },
    async setPolicy(name, hcl) {
      await must("PUT", `sys/policies/acl/${name}`, { policy: hcl });
    },
    async createToken(options = {}) {
      const answer = await must("POST", "auth/token/create", {
        policies: options.policies ?? [],
        ttl: options.ttl,
        explicit_max_ttl: options.explicitMaxTtl,
        renewable: options.renewable ?? true,
        no_default_policy: options.noDefaultPolicy ?? false,
      });
      return answer.body.auth.client_token;
    },
    async seal() {
      await must("PUT", "sys/seal");
    },
    unseal,
    async restart(options = {}) {
      await stop();
      await launch();
      if (options.unseal) await unseal();
    },
    stop,
    async audited() {
      const text = await Deno.readTextFile(at("audit.log")).catch(() => "");
      const requests: AuditedRequest[] = [];
      const errors = new Map<string, string>();
      const entries = text.split("\n").filter((line) => line.trim() !== "").map((line) =>
        JSON.parse(line)
      );
      for (const entry of entries) {
        if (entry.type === "response" && entry.error) errors.set(entry.request.id, entry.error);
      }
      for (const entry of entries) {
        if (entry.type !== "request") continue;
        requests.push({
          operation: entry.request.operation,
          path: entry.request.path,
          data: entry.request.data,
          error: errors.get(entry.request.id),
        });
      }
      return requests;
    },
    logs: () => daemon?.tail() ?? "",
    close,
    [Symbol.asyncDispose]: close,
  };
  return vault;
}
