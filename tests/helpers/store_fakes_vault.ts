/**
 * A small in-memory fake of the Vault store's port ({@link VaultApi}): KV version 2 mounts
 * holding secrets in a map, each with numbered versions (soft-deleted or destroyed ones too)
 * and `current_version`, answering as the real {@link VaultClient.request} does: 2xx and 404
 * responses are returned (a deleted or destroyed latest version reads as 404 whose body still
 * carries `data.metadata`; an unknown mount is 404 "no handler for route"), anything else is
 * thrown as a {@link VaultError} (400 "check-and-set parameter did not match the current
 * version", 503 "Vault is sealed", status 0 when unreachable).
 *
 * Tests script races and outages with {@link FakeVaultApi.before} and read what was sent in
 * {@link FakeVaultApi.calls}.
 *
 * @module
 */
import type { VaultApi } from "../../src/stores/vault.ts";
import { VaultError, type VaultResponse } from "../../src/vault/client.ts";

/** One version of a secret. */
export interface FakeVersion {
  data: Record<string, unknown>;
  deleted: boolean;
  destroyed: boolean;
}

/** A secret: its versions by number and the latest number. */
export interface FakeSecret {
  current: number;
  versions: Map<number, FakeVersion>;
}

/** One request the fake received. */
export interface FakeVaultCall {
  method: string;
  path: string;
  body?: unknown;
}

interface Hook {
  method: string;
  path?: string;
  run: (call: FakeVaultCall) => void;
}

const ADDRESS = "https://vault.fake:8200";

/** A Vault failure as the real client throws it. */
export function vaultError(method: string, path: string, status: number, errors: string[]) {
  const said = errors.length > 0 ? errors.join("; ") : "no error message";
  return new VaultError(status, errors, `Vault ${method} /v1/${path}: ${status}: ${said}`);
}

/** Vault unreachable, as the real client throws it. */
export function vaultUnreachable(): VaultError {
  return new VaultError(0, [], `Vault at ${ADDRESS} is unreachable: connect ECONNREFUSED`);
}

/** The in-memory Vault. */
export class FakeVaultApi implements VaultApi {
  readonly address = ADDRESS;
  /** KV v2 mounts. */
  readonly mounts = new Set(["secret"]);
  /** Secrets by `<mount>/<path>`. */
  readonly secrets = new Map<string, FakeSecret>();
  /** Every request, in order. */
  readonly calls: FakeVaultCall[] = [];
  /** Set to answer every request with 503 "Vault is sealed". */
  sealed = false;
  closed = false;
  #hooks: Hook[] = [];

  /** Writes a new version as an operator would (`vault kv put`, no check-and-set). */
  write(key: string, data: Record<string, unknown>): number {
    const secret = this.secrets.get(key) ?? { current: 0, versions: new Map() };
    this.secrets.set(key, secret);
    secret.current++;
    secret.versions.set(secret.current, {
      data: structuredClone(data),
      deleted: false,
      destroyed: false,
    });
    return secret.current;
  }

  /** The latest version's data (a copy), or undefined. */
  latest(key: string): Record<string, unknown> | undefined {
    const secret = this.secrets.get(key);
    const version = secret?.versions.get(secret.current);
    return version ? structuredClone(version.data) : undefined;
  }

  /** `vault kv delete` (soft-deletes the latest version) or `vault kv destroy` of it. */
  removeLatest(key: string, how: "deleted" | "destroyed"): void {
    const secret = this.secrets.get(key)!;
    const version = secret.versions.get(secret.current)!;
    version[how] = true;
    if (how === "destroyed") version.data = {};
  }

  /** Runs `run` once just before the next `method` request (on `path`, if given). */
  before(method: string, path: string | undefined, run: (call: FakeVaultCall) => void): void {
    this.#hooks.push({ method, path, run });
  }

  /** Stops token renewal (nothing to stop here). */
  close(): void {
    this.closed = true;
  }

  /** Answers like {@link VaultClient.request}: returns 2xx and 404, throws the rest. */
  request(method: string, path: string, body?: unknown): Promise<VaultResponse> {
    return Promise.resolve().then(() => {
      const call = { method, path, body: structuredClone(body) };
      this.calls.push(call);
      const index = this.#hooks.findIndex((hook) =>
        hook.method === method && (hook.path === undefined || hook.path === path)
      );
      if (index >= 0) this.#hooks.splice(index, 1)[0].run(call);
      if (this.sealed) throw vaultError(method, path, 503, ["Vault is sealed"]);
      return this.#answer(method, path, body);
    });
  }

  #answer(method: string, path: string, body: unknown): VaultResponse {
    const [mount, kind, ...rest] = path.split("/");
    const key = `${mount}/${rest.join("/")}`;
    if (!this.mounts.has(mount)) {
      return {
        status: 404,
        body: { errors: [`no handler for route "${path}". route entry not found.`] },
      };
    }
    const secret = this.secrets.get(key);
    if (kind === "metadata" && method === "GET") {
      if (!secret) return { status: 404, body: { errors: [] } };
      return { status: 200, body: { data: { current_version: secret.current } } };
    }
    if (kind === "data" && method === "GET") {
      const version = secret?.versions.get(secret.current);
      if (!secret || !version) return { status: 404, body: { errors: [] } };
      const metadata = {
        version: secret.current,
        destroyed: version.destroyed,
        deletion_time: version.deleted ? "2024-01-01T00:00:00Z" : "",
      };
      if (version.deleted || version.destroyed) {
        return { status: 404, body: { data: { data: null, metadata } } };
      }
      return { status: 200, body: { data: { data: structuredClone(version.data), metadata } } };
    }
    if (kind === "data" && (method === "POST" || method === "PUT")) {
      const payload = body as { options?: { cas?: number }; data?: Record<string, unknown> };
      const cas = payload?.options?.cas;
      if (cas !== undefined && cas !== (secret?.current ?? 0)) {
        throw vaultError(method, path, 400, [
          "check-and-set parameter did not match the current version",
        ]);
      }
      const version = this.write(key, payload?.data ?? {});
      return { status: 200, body: { data: { version, destroyed: false, deletion_time: "" } } };
    }
    throw vaultError(method, path, 405, ["unsupported operation"]);
  }
}
