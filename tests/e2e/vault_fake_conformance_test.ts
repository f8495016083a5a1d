/**
 * Conformance of the fake Vault (tests/fakes/vault.ts) to a real Vault v1.21.0
 * (tests/helpers/real_vault.ts): both are started side by side and sent the same raw HTTP
 * requests (each with its own root token, and tokens and policies made the same way on both),
 * and their answers are compared where a client can tell them apart: status codes, `errors`
 * texts, envelope keys, `warnings`, the `data`/`metadata` fields of KV version 2 and the `auth`
 * and `data` fields of the token endpoints. Values that legitimately differ between two servers
 * (request IDs, times, accessors, token strings, remaining TTLs) are masked: a masked string still
 * tells empty from set, so `deletion_time: ""` versus a time remains a difference.
 *
 * Each case is one `t.step`, so every difference between the fake and the real server is one
 * failing step.
 *
 * @module
 */
import assert from "node:assert/strict";
import { FakeVault, type PolicyRule } from "../fakes/vault.ts";
import { type RealVault, startRealVault } from "../helpers/real_vault.ts";
import { eventually } from "../helpers/eventually.ts";

/** An answer, parsed. */
interface Answer {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/** How a token is chosen for a request: a label of {@link Side.tokens}, none, or a literal. */
type TokenChoice = string | null | { literal: string };

interface SendOptions {
  /** Default `root`. */
  token?: TokenChoice;
  body?: unknown;
  /** A body sent as is (instead of `body` as JSON). */
  rawBody?: string;
  contentType?: string;
  namespace?: string;
  query?: string;
}

/** Token options common to both servers (seconds). */
interface TokenSpec {
  policies: string[];
  ttl?: number;
  explicitMaxTtl?: number;
  renewable?: boolean;
}

/** One of the two servers, driven the same way. */
interface Side {
  name: "fake" | "real";
  /** Tokens by label; `root` is the root token. */
  tokens: Map<string, string>;
  send(method: string, path: string, options?: SendOptions): Promise<Answer>;
  createToken(label: string, spec: TokenSpec): Promise<void>;
  setPolicy(name: string, rules: PolicyRule[]): Promise<void>;
  seal(): Promise<void>;
  unseal(): Promise<void>;
}

async function rawSend(
  url: string,
  tokens: Map<string, string>,
  method: string,
  path: string,
  options: SendOptions = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  const choice = options.token === undefined ? "root" : options.token;
  if (choice !== null) {
    const token = typeof choice === "string" ? tokens.get(choice) : choice.literal;
    if (token === undefined) throw new Error(`no token labelled ${String(choice)}`);
    headers["x-vault-token"] = token;
  }
  if (options.namespace !== undefined) headers["x-vault-namespace"] = options.namespace;
  if (options.body !== undefined) headers["content-type"] = "application/json";
  if (options.contentType !== undefined) headers["content-type"] = options.contentType;
  const base = path.startsWith("/") ? path : `/v1/${path}`;
  const response = await fetch(`${url}${base}${options.query ? `?${options.query}` : ""}`, {
    method,
    headers,
    body: options.rawBody ??
      (options.body === undefined ? undefined : JSON.stringify(options.body)),
  });
  const text = await response.text();
  let body: unknown = text === "" ? undefined : text;
  try {
    body = JSON.parse(text);
  } catch { /* not JSON */ }
  return { status: response.status, body };
}

function hcl(rules: PolicyRule[]): string {
  return rules.map((rule) =>
    `path "${rule.path}" {\n  capabilities = ${JSON.stringify(rule.capabilities)}\n}\n`
  ).join("\n");
}

function fakeSide(vault: FakeVault): Side {
  const tokens = new Map([["root", vault.rootToken]]);
  return {
    name: "fake",
    tokens,
    send: (method, path, options) => rawSend(vault.url, tokens, method, path, options),
    createToken(label, spec) {
      tokens.set(
        label,
        vault.createToken({
          policies: spec.policies,
          ttl: spec.ttl,
          maxTtl: spec.explicitMaxTtl,
          renewable: spec.renewable,
        }),
      );
      return Promise.resolve();
    },
    setPolicy(name, rules) {
      vault.setPolicy(name, rules);
      return Promise.resolve();
    },
    seal() {
      vault.seal();
      return Promise.resolve();
    },
    unseal() {
      vault.unseal();
      return Promise.resolve();
    },
  };
}

function realSide(vault: RealVault): Side {
  const tokens = new Map([["root", vault.rootToken]]);
  return {
    name: "real",
    tokens,
    send: (method, path, options) => rawSend(vault.url, tokens, method, path, options),
    async createToken(label, spec) {
      tokens.set(
        label,
        await vault.createToken({
          policies: spec.policies,
          ttl: spec.ttl === undefined ? undefined : `${spec.ttl}s`,
          explicitMaxTtl: spec.explicitMaxTtl === undefined ? undefined : `${spec.explicitMaxTtl}s`,
          renewable: spec.renewable,
        }),
      );
    },
    setPolicy: (name, rules) => vault.setPolicy(name, hcl(rules)),
    seal: () => vault.seal(),
    unseal: () => vault.unseal(),
  };
}

/** Keys whose values differ between any two servers; masked by {@link mask}. */
const VOLATILE = new Set([
  "request_id",
  "created_time",
  "deletion_time",
  "updated_time",
  "accessor",
  "client_token",
  "id",
  "creation_time",
  "expire_time",
  "issue_time",
  "last_renewal",
  "last_renewal_time",
  "ttl",
  "creation_ttl",
  "lease_duration",
  "explicit_max_ttl",
  "server_time_utc",
  "cluster_id",
  "cluster_name",
  "entity_id",
  "client_id",
]);

/**
 * The body with volatile values masked: a non-empty string becomes `<set>` (empty stays empty),
 * a number `<n>`, null and other values stay.
 */
function mask(value: unknown, key?: string): unknown {
  if (key !== undefined && VOLATILE.has(key)) {
    if (typeof value === "string") return value === "" ? "" : "<set>";
    if (typeof value === "number") return "<n>";
    return value;
  }
  if (Array.isArray(value)) return value.map((item) => mask(item));
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).sort(([a], [b]) => a < b ? -1 : 1).map(([k, v]) => [k, mask(v, k)]),
    );
  }
  return value;
}

interface Pair {
  fake: Answer;
  real: Answer;
}

/** Sends the same request to both sides. */
async function both(
  sides: Side[],
  method: string,
  path: string,
  options?: SendOptions,
): Promise<Pair> {
  const [fake, real] = await Promise.all(sides.map((side) => side.send(method, path, options)));
  return { fake, real };
}

/** Status and the masked whole body are equal. */
function sameAnswer(pair: Pair, what: string): void {
  const detail = () =>
    `${what}\n  real: ${pair.real.status} ${
      JSON.stringify(pair.real.body)
    }\n  fake: ${pair.fake.status} ${JSON.stringify(pair.fake.body)}`;
  assert.equal(pair.fake.status, pair.real.status, `status differs: ${detail()}`);
  assert.deepEqual(mask(pair.fake.body), mask(pair.real.body), `body differs: ${detail()}`);
}

/** Sends to both and asserts {@link sameAnswer}; returns the pair. */
async function same(
  sides: Side[],
  method: string,
  path: string,
  options?: SendOptions,
): Promise<Pair> {
  const pair = await both(sides, method, path, options);
  sameAnswer(pair, `${method} ${path}${options?.query ? `?${options.query}` : ""}`);
  return pair;
}

/** Runs `fn` with a fake and a real Vault (plain HTTP), both closed afterwards. */
async function withBoth(
  fn: (sides: Side[], fake: FakeVault, real: RealVault) => Promise<void>,
  options: { namespaces?: boolean } = {},
): Promise<void> {
  const fake = await FakeVault.start(
    options.namespaces === undefined ? {} : { namespaces: options.namespaces },
  );
  try {
    await using real = await startRealVault({ tls: false });
    await fn([fakeSide(fake), realSide(real)], fake, real);
  } finally {
    await fake.close();
  }
}

const step = (t: Deno.TestContext, name: string, fn: () => Promise<void>) =>
  t.step({ name, fn, sanitizeOps: false, sanitizeResources: false });

Deno.test("conformance: KV version 2 reads, writes, check-and-set, delete, undelete, destroy, metadata", async (t) => {
  await withBoth(async (sides) => {
    await step(t, "read of a never-written path", async () => {
      await same(sides, "GET", "secret/data/never");
    });
    await step(t, "metadata read of a never-written path", async () => {
      await same(sides, "GET", "secret/metadata/never");
    });
    await step(t, "write then read: envelope keys, data, metadata", async () => {
      await same(sides, "POST", "secret/data/wr", { body: { data: { a: "1" } } });
      await same(sides, "PUT", "secret/data/wr", { body: { data: { a: "2", n: 3 } } });
      await same(sides, "GET", "secret/data/wr");
      await same(sides, "GET", "secret/data/wr", { query: "version=1" });
      await same(sides, "GET", "secret/data/wr", { query: "version=0" });
      await same(sides, "GET", "secret/data/wr", { query: "version=7" });
    });
    await step(t, "write without data", async () => {
      await same(sides, "POST", "secret/data/nodata", { body: {} });
    });
    const badBodies: [string, unknown][] = [
      ["data that is a string", { data: "text" }],
      ["data that is a number", { data: 5 }],
      ["data that is a boolean", { data: true }],
      ["data that is a list of strings", { data: ["a"] }],
      ["options that is a string", { data: { a: "1" }, options: "x" }],
    ];
    for (const [name, body] of badBodies) {
      await step(t, `write with ${name}`, async () => {
        await same(sides, "POST", "secret/data/badata", { body });
      });
    }
    await step(t, "write with a body that is not JSON", async () => {
      const pair = await both(sides, "POST", "secret/data/badjson", { rawBody: "{bad" });
      assert.equal(pair.fake.status, pair.real.status);
      assert.equal(pair.fake.body.errors.length, pair.real.body.errors.length);
    });
    await step(t, "write with a JSON body that is not an object", async () => {
      await same(sides, "POST", "secret/data/badjson", { rawBody: "[1]" });
      await same(sides, "POST", "secret/data/badjson", { rawBody: '"text"' });
    });
    await step(t, "check-and-set 0 on an absent key writes version 1", async () => {
      await same(sides, "POST", "secret/data/cas", {
        body: { data: { v: 1 }, options: { cas: 0 } },
      });
    });
    await step(t, "check-and-set 0 on a present key is refused", async () => {
      await same(sides, "POST", "secret/data/cas", {
        body: { data: { v: 2 }, options: { cas: 0 } },
      });
    });
    await step(t, "check-and-set with the right version writes", async () => {
      await same(sides, "POST", "secret/data/cas", {
        body: { data: { v: 2 }, options: { cas: 1 } },
      });
    });
    await step(t, "check-and-set with a wrong version is refused", async () => {
      await same(sides, "POST", "secret/data/cas", {
        body: { data: { v: 3 }, options: { cas: 1 } },
      });
      await same(sides, "POST", "secret/data/cas", {
        body: { data: { v: 3 }, options: { cas: 9 } },
      });
    });
    await step(t, "check-and-set that is not a number", async () => {
      await same(sides, "POST", "secret/data/cas", {
        body: { data: { v: 3 }, options: { cas: "x" } },
      });
    });
    await step(t, "soft delete of the latest version, then read: 404 with metadata", async () => {
      await same(sides, "POST", "secret/data/del", { body: { data: { a: "1" } } });
      await same(sides, "DELETE", "secret/data/del");
      const pair = await same(sides, "GET", "secret/data/del");
      assert.notEqual(pair.real.body.data.metadata.deletion_time, "");
      await same(sides, "GET", "secret/metadata/del");
    });
    await step(t, "delete of a never-written key", async () => {
      await same(sides, "DELETE", "secret/data/never-deleted");
    });
    await step(t, "undelete, then read", async () => {
      await same(sides, "POST", "secret/undelete/del", { body: { versions: [1] } });
      await same(sides, "GET", "secret/data/del");
    });
    await step(t, "delete/undelete/destroy with versions that are not numbers", async () => {
      await same(sides, "POST", "secret/delete/del", { body: { versions: "x" } });
      await same(sides, "POST", "secret/destroy/del", { body: { versions: [1, "y"] } });
      await same(sides, "POST", "secret/undelete/nokey", { body: { versions: [1] } });
    });
    await step(t, "undelete and destroy without versions", async () => {
      await same(sides, "POST", "secret/undelete/del", { body: {} });
      await same(sides, "POST", "secret/destroy/del", { body: {} });
      await same(sides, "POST", "secret/delete/del", { body: {} });
    });
    await step(t, "destroy, then read", async () => {
      await same(sides, "POST", "secret/destroy/del", { body: { versions: [1] } });
      await same(sides, "GET", "secret/data/del");
      await same(sides, "GET", "secret/data/del", { query: "version=1" });
      await same(sides, "POST", "secret/undelete/del", { body: { versions: [1] } });
      await same(sides, "GET", "secret/data/del");
    });
    await step(t, "delete/ of versions, then read of each", async () => {
      await same(sides, "POST", "secret/data/dv", { body: { data: { a: "1" } } });
      await same(sides, "POST", "secret/data/dv", { body: { data: { a: "2" } } });
      await same(sides, "POST", "secret/delete/dv", { body: { versions: [1] } });
      await same(sides, "GET", "secret/data/dv", { query: "version=1" });
      await same(sides, "GET", "secret/data/dv");
    });
    await step(t, "metadata read: current_version, versions map", async () => {
      await same(sides, "GET", "secret/metadata/cas");
      await same(sides, "GET", "secret/metadata/dv");
    });
    await step(t, "metadata list", async () => {
      await same(sides, "POST", "secret/data/dir/one", { body: { data: { a: "1" } } });
      await same(sides, "POST", "secret/data/dir/sub/two", { body: { data: { a: "1" } } });
      await same(sides, "GET", "secret/metadata/dir/", { query: "list=true" });
      await same(sides, "GET", "secret/metadata/nothing-here/", { query: "list=true" });
    });
    await step(
      t,
      "metadata write (max_versions, cas_required) then a write without cas",
      async () => {
        await same(sides, "POST", "secret/metadata/meta", { body: { cas_required: true } });
        await same(sides, "GET", "secret/metadata/meta");
        await same(sides, "POST", "secret/data/meta", { body: { data: { a: "1" } } });
        await same(sides, "POST", "secret/data/meta", {
          body: { data: { a: "1" }, options: { cas: 0 } },
        });
      },
    );
    await step(t, "metadata delete, then read", async () => {
      await same(sides, "DELETE", "secret/metadata/dv");
      await same(sides, "GET", "secret/data/dv");
      await same(sides, "GET", "secret/metadata/dv");
    });
    await step(t, "who: created_by, deleted_by, last_updated_by with another token", async () => {
      for (const side of sides) {
        await side.setPolicy("kvall", [{
          path: "secret/*",
          capabilities: ["create", "read", "update", "delete", "patch"],
        }]);
        await side.createToken("kvall", { policies: ["kvall"] });
      }
      await same(sides, "POST", "secret/data/who", { body: { data: { a: "1" } } });
      await same(sides, "POST", "secret/data/who", { token: "kvall", body: { data: { a: "2" } } });
      await same(sides, "GET", "secret/metadata/who");
      await same(sides, "DELETE", "secret/data/who", { token: "kvall" });
      await same(sides, "GET", "secret/metadata/who");
      await same(sides, "POST", "secret/undelete/who", { body: { versions: [2] } });
      await same(sides, "GET", "secret/metadata/who");
      await same(sides, "POST", "secret/delete/who", { token: "kvall", body: { versions: [1] } });
      await same(sides, "POST", "secret/destroy/who", { body: { versions: [2] } });
      await same(sides, "POST", "secret/metadata/who", {
        token: "kvall",
        body: { max_versions: 4 },
      });
      await same(sides, "GET", "secret/metadata/who");
    });
    const patch = (token = "root", body: unknown = { data: { b: "2", a: null } }) => ({
      token,
      rawBody: JSON.stringify(body),
      contentType: "application/merge-patch+json",
    });
    await step(t, "PATCH (merge patch) of an existing key", async () => {
      await same(sides, "POST", "secret/data/patch", { body: { data: { a: "1", keep: "k" } } });
      await same(sides, "PATCH", "secret/data/patch", patch("kvall"));
      await same(sides, "GET", "secret/data/patch");
      await same(sides, "GET", "secret/metadata/patch");
    });
    await step(
      t,
      "PATCH with a wrong check-and-set, of a never-written and of a deleted key",
      async () => {
        await same(
          sides,
          "PATCH",
          "secret/data/patch",
          patch("root", { data: { c: "3" }, options: { cas: 9 } }),
        );
        await same(sides, "PATCH", "secret/data/patch-never", patch());
        await same(sides, "DELETE", "secret/data/patch");
        await same(sides, "PATCH", "secret/data/patch", patch());
        await same(sides, "PATCH", "secret/data/patch", patch("root", {}));
      },
    );
    await step(t, "PATCH without merge-patch content type, and where unsupported", async () => {
      await same(sides, "PATCH", "secret/data/patch", { rawBody: "{}" });
      await same(sides, "PATCH", "secret/data/patch", { body: { data: { a: "1" } } });
      await same(sides, "PATCH", "secret/config", patch());
    });
    await step(t, "mount config", async () => {
      await same(sides, "GET", "secret/config");
    });
  });
});

Deno.test("conformance: routing and token errors", async (t) => {
  await withBoth(async (sides) => {
    await same(sides, "POST", "secret/data/present", { body: { data: { a: "1" } } });
    const cases: { name: string; method: string; path: string; options?: SendOptions }[] = [
      { name: "unknown mount", method: "GET", path: "nomount/data/x" },
      { name: "unknown mount, write", method: "POST", path: "nomount/x", options: { body: {} } },
      { name: "invalid KV v2 path (read)", method: "GET", path: "secret/x" },
      {
        name: "invalid KV v2 path (write)",
        method: "POST",
        path: "secret/x",
        options: { body: { a: 1 } },
      },
      { name: "invalid KV v2 path (delete)", method: "DELETE", path: "secret/x" },
      {
        name: "invalid KV v2 path (list)",
        method: "GET",
        path: "secret/x/",
        options: { query: "list=true" },
      },
      { name: "root of data/", method: "GET", path: "secret/data" },
      { name: "data/ with a trailing slash", method: "GET", path: "secret/data/dir/" },
      {
        name: "list on data/ (unsupported operation)",
        method: "GET",
        path: "secret/data/present",
        options: { query: "list=true" },
      },
      { name: "delete on config (unsupported operation)", method: "DELETE", path: "secret/config" },
      {
        name: "GET on undelete/ (unsupported operation)",
        method: "GET",
        path: "secret/undelete/present",
      },
      {
        name: "wrong HTTP method PATCH",
        method: "PATCH",
        path: "secret/data/present",
        options: { body: { data: { a: "2" } } },
      },
      { name: "wrong HTTP method OPTIONS", method: "OPTIONS", path: "secret/data/present" },
      {
        name: "missing token",
        method: "GET",
        path: "secret/data/present",
        options: { token: null },
      },
      {
        name: "missing token on an unknown mount",
        method: "GET",
        path: "nomount/x",
        options: { token: null },
      },
      {
        name: "unknown token",
        method: "GET",
        path: "secret/data/present",
        options: { token: { literal: "hvs.unknownunknownunknown1" } },
      },
      {
        name: "unknown token on lookup-self",
        method: "GET",
        path: "auth/token/lookup-self",
        options: { token: { literal: "hvs.unknownunknownunknown1" } },
      },
      {
        name: "bad list parameter",
        method: "GET",
        path: "secret/metadata/",
        options: { query: "list=maybe" },
      },
      {
        name: "bad version parameter",
        method: "GET",
        path: "secret/data/present",
        options: { query: "version=abc" },
      },
      { name: "OPTIONS with the root token", method: "OPTIONS", path: "secret/data/present" },
      { name: "OPTIONS on an unknown mount", method: "OPTIONS", path: "nomount/x" },
      {
        name: "OPTIONS without a token",
        method: "OPTIONS",
        path: "secret/data/present",
        options: { token: null },
      },
      { name: "HEAD", method: "HEAD", path: "secret/data/present" },
      { name: "HEAD on an unknown mount", method: "HEAD", path: "nomount/x" },
      // (A method Node's HTTP parser knows: it answers 400 to made-up ones such as FOO itself.)
      {
        name: "an HTTP method Vault does not map",
        method: "PROPFIND",
        path: "secret/data/present",
      },
      { name: "PUT on sys/health", method: "PUT", path: "sys/health", options: { body: {} } },
      { name: "HEAD on sys/seal-status", method: "HEAD", path: "sys/seal-status" },
      { name: "empty path under /v1/", method: "GET", path: "" },
      { name: "a path outside /v1/", method: "GET", path: "/v2/secret/data/present" },
    ];
    for (const c of cases) {
      await step(t, c.name, async () => {
        await same(sides, c.method, c.path, c.options);
      });
    }
  });
});

Deno.test("conformance: ACL policies, create versus update", async (t) => {
  await withBoth(async (sides) => {
    for (const side of sides) {
      await side.setPolicy("reader", [{ path: "secret/data/acl/*", capabilities: ["read"] }]);
      await side.setPolicy("creator", [{ path: "secret/data/acl/*", capabilities: ["create"] }]);
      await side.setPolicy("updater", [{ path: "secret/data/acl/*", capabilities: ["update"] }]);
      await side.setPolicy("denier", [
        { path: "secret/data/acl/*", capabilities: ["read", "create", "update"] },
        { path: "secret/data/acl/hidden", capabilities: ["deny"] },
      ]);
      await side.createToken("reader", { policies: ["reader"] });
      await side.createToken("creator", { policies: ["creator"] });
      await side.createToken("updater", { policies: ["updater"] });
      await side.createToken("denier", { policies: ["denier"] });
    }
    await same(sides, "POST", "secret/data/acl/existing", { body: { data: { a: "1" } } });
    const cases: { name: string; method: string; path: string; options?: SendOptions }[] = [
      {
        name: "read allowed",
        method: "GET",
        path: "secret/data/acl/existing",
        options: { token: "reader" },
      },
      {
        name: "read of a never-written key allowed (404)",
        method: "GET",
        path: "secret/data/acl/none",
        options: { token: "reader" },
      },
      {
        name: "read outside the policy denied",
        method: "GET",
        path: "secret/data/other",
        options: { token: "reader" },
      },
      {
        name: "metadata read denied",
        method: "GET",
        path: "secret/metadata/acl/existing",
        options: { token: "reader" },
      },
      {
        name: "write with read only denied",
        method: "POST",
        path: "secret/data/acl/existing",
        options: { token: "reader", body: { data: { a: "2" } } },
      },
      {
        name: "unknown mount with a restricted token",
        method: "GET",
        path: "nomount/x",
        options: { token: "reader" },
      },
      {
        name: "create-only writes a new key",
        method: "POST",
        path: "secret/data/acl/new-by-creator",
        options: { token: "creator", body: { data: { a: "1" } } },
      },
      {
        name: "create-only cannot update an existing key",
        method: "POST",
        path: "secret/data/acl/existing",
        options: { token: "creator", body: { data: { a: "2" } } },
      },
      {
        name: "create-only cannot read",
        method: "GET",
        path: "secret/data/acl/existing",
        options: { token: "creator" },
      },
      {
        name: "update-only cannot create a new key",
        method: "POST",
        path: "secret/data/acl/new-by-updater",
        options: { token: "updater", body: { data: { a: "1" } } },
      },
      {
        name: "update-only updates an existing key",
        method: "POST",
        path: "secret/data/acl/existing",
        options: { token: "updater", body: { data: { a: "3" } } },
      },
      {
        name: "deny wins",
        method: "GET",
        path: "secret/data/acl/hidden",
        options: { token: "denier" },
      },
      {
        name: "default policy: lookup-self allowed",
        method: "GET",
        path: "auth/token/lookup-self",
        options: { token: "reader" },
      },
      {
        name: "default policy does not allow sys/health-like paths: sys/mounts",
        method: "GET",
        path: "sys/mounts",
        options: { token: "reader" },
      },
      {
        name: "OPTIONS with a token allowed everything else",
        method: "OPTIONS",
        path: "secret/data/acl/existing",
        options: { token: "denier" },
      },
    ];
    for (const c of cases) {
      await step(t, c.name, async () => {
        await same(sides, c.method, c.path, c.options);
      });
    }
  });
});

Deno.test("conformance: auth/token lookup-self and renew-self", async (t) => {
  await withBoth(async (sides) => {
    for (const side of sides) {
      await side.createToken("renewable", { policies: ["p"], ttl: 600, explicitMaxTtl: 3600 });
      await side.createToken("capped", { policies: ["p"], ttl: 60, explicitMaxTtl: 120 });
      await side.createToken("fixed", { policies: ["p"], ttl: 600, renewable: false });
      await side.createToken("plain", { policies: ["p"] });
    }
    await step(t, "lookup-self of the root token", async () => {
      await same(sides, "GET", "auth/token/lookup-self");
    });
    await step(t, "lookup-self of a created token", async () => {
      const pair = await same(sides, "GET", "auth/token/lookup-self", { token: "renewable" });
      for (const side of ["fake", "real"] as const) {
        const data = pair[side].body.data;
        assert.equal(data.creation_ttl, 600, side);
        assert.equal(data.explicit_max_ttl, 3600, side);
        assert.ok(data.ttl > 590 && data.ttl <= 600, `${side} ttl ${data.ttl}`);
      }
    });
    await step(t, "lookup-self of a token without explicit max TTL", async () => {
      const pair = await same(sides, "GET", "auth/token/lookup-self", { token: "plain" });
      assert.equal(pair.fake.body.data.explicit_max_ttl, pair.real.body.data.explicit_max_ttl);
      assert.equal(pair.fake.body.data.creation_ttl, pair.real.body.data.creation_ttl);
    });
    await step(t, "lookup-self by POST", async () => {
      await same(sides, "POST", "auth/token/lookup-self", { token: "renewable", body: {} });
    });
    await step(t, "renew-self with an increment", async () => {
      const pair = await same(sides, "POST", "auth/token/renew-self", {
        token: "renewable",
        body: { increment: "300s" },
      });
      for (const side of ["fake", "real"] as const) {
        assert.equal(pair[side].body.auth.lease_duration, 300, side);
      }
    });
    await step(t, "lookup-self after a renewal", async () => {
      await same(sides, "GET", "auth/token/lookup-self", { token: "renewable" });
    });
    await step(t, "renew-self without an increment renews for the last TTL", async () => {
      const pair = await same(sides, "POST", "auth/token/renew-self", {
        token: "renewable",
        body: {},
      });
      for (const side of ["fake", "real"] as const) {
        assert.equal(pair[side].body.auth.lease_duration, 300, side);
      }
    });
    await step(t, "lookup-self after renewals keeps creation_ttl", async () => {
      const pair = await same(sides, "GET", "auth/token/lookup-self", { token: "renewable" });
      for (const side of ["fake", "real"] as const) {
        assert.equal(pair[side].body.data.creation_ttl, 600, side);
      }
    });
    await step(t, "renew-self capped by the explicit max TTL (warning)", async () => {
      const pair = await both(sides, "POST", "auth/token/renew-self", {
        token: "capped",
        body: { increment: 3600 },
      });
      // Whole seconds (Vault truncates now and the issue time), printed without zero units.
      const pattern =
        /^TTL of "1h" exceeded the effective max_ttl of "(2m|1m5\ds)"; TTL value is capped accordingly$/;
      for (const side of ["fake", "real"] as const) {
        assert.equal(pair[side].status, 200, `${side}: ${JSON.stringify(pair[side].body)}`);
        assert.equal(
          pair[side].body.warnings?.length,
          1,
          `${side}: ${JSON.stringify(pair[side].body)}`,
        );
        assert.match(pair[side].body.warnings[0], pattern, side);
        const lease = pair[side].body.auth.lease_duration;
        assert.ok(lease > 100 && lease <= 120, `${side} lease ${lease}`);
      }
      // The rest masked (the warning's remaining seconds may differ by a second).
      pair.fake.body.warnings = pair.real.body.warnings;
      sameAnswer(pair, "renew-self capped");
    });
    await step(t, "renew-self of a non-renewable token", async () => {
      await same(sides, "POST", "auth/token/renew-self", { token: "fixed", body: {} });
    });
    await step(t, "renew-self of the root token", async () => {
      await same(sides, "POST", "auth/token/renew-self", { body: {} });
    });
    await step(t, "renew-self with a bad increment", async () => {
      await same(sides, "POST", "auth/token/renew-self", {
        token: "renewable",
        body: { increment: "soon" },
      });
    });
    await step(t, "renew-self with a negative increment", async () => {
      await same(sides, "POST", "auth/token/renew-self", {
        token: "renewable",
        body: { increment: -5 },
      });
    });
    await step(t, "renew-self with an increment in seconds as a string", async () => {
      const pair = await same(sides, "POST", "auth/token/renew-self", {
        token: "renewable",
        body: { increment: "45" },
      });
      assert.equal(pair.real.body.auth.lease_duration, 45);
    });
    await step(t, "an expired token", async () => {
      for (const side of sides) await side.createToken("short", { policies: ["p"], ttl: 1 });
      // Wait for the real token to expire; the fake's TTL runs out at the same time.
      await eventually(
        "the real 1 s token expired",
        async () =>
          (await sides[1].send("GET", "auth/token/lookup-self", { token: "short" })).status === 403,
      );
      await eventually(
        "the fake 1 s token expired",
        async () =>
          (await sides[0].send("GET", "auth/token/lookup-self", { token: "short" })).status === 403,
      );
      await same(sides, "GET", "auth/token/lookup-self", { token: "short" });
      await same(sides, "GET", "secret/data/x", { token: "short" });
    });
    await step(t, "revoke-self, then use", async () => {
      await same(sides, "POST", "auth/token/revoke-self", { token: "plain", body: {} });
      await same(sides, "GET", "auth/token/lookup-self", { token: "plain" });
    });
  });
});

Deno.test("conformance: Kubernetes auth login errors", async (t) => {
  await withBoth(async (sides, _fake, real) => {
    await real.must("POST", "sys/auth/kubernetes", { type: "kubernetes" });
    const cases: { name: string; body: unknown; token?: TokenChoice }[] = [
      { name: "missing role", body: { jwt: "x.y.z" } },
      { name: "missing jwt", body: { role: "r" } },
      { name: "missing both", body: {} },
      { name: "unknown role", body: { role: "nobody", jwt: "x.y.z" } },
      {
        name: "unknown role, without a token",
        body: { role: "nobody", jwt: "x.y.z" },
        token: null,
      },
      { name: "role given as a number", body: { role: 5, jwt: "x.y.z" } },
    ];
    for (const c of cases) {
      await step(t, c.name, async () => {
        await same(sides, "POST", "auth/kubernetes/login", {
          body: c.body,
          token: c.token ?? null,
        });
      });
    }
    await step(t, "GET on the login path", async () => {
      await same(sides, "GET", "auth/kubernetes/login", { token: null });
      await same(sides, "GET", "auth/kubernetes/login");
    });
  });
});

Deno.test("conformance: sys/health and sys/seal-status, unsealed and sealed", async (t) => {
  await withBoth(async (sides) => {
    const keys = [
      "initialized",
      "sealed",
      "standby",
      "performance_standby",
      "t",
      "n",
      "progress",
      "type",
    ];
    const compareKeys = (pair: Pair) => {
      assert.equal(pair.fake.status, pair.real.status);
      for (const key of keys) {
        assert.deepEqual(
          pair.fake.body?.[key],
          pair.real.body?.[key],
          `${key}: real ${JSON.stringify(pair.real.body)}\n fake ${JSON.stringify(pair.fake.body)}`,
        );
      }
      assert.equal(
        "cluster_id" in pair.fake.body,
        "cluster_id" in pair.real.body,
        "cluster_id present",
      );
    };
    await step(t, "health unsealed", async () => {
      compareKeys(await both(sides, "GET", "sys/health", { token: null }));
    });
    await step(t, "seal-status unsealed", async () => {
      compareKeys(await both(sides, "GET", "sys/seal-status", { token: null }));
    });
    await Promise.all(sides.map((side) => side.seal()));
    await step(t, "health sealed", async () => {
      compareKeys(await both(sides, "GET", "sys/health", { token: null }));
    });
    await step(t, "health sealed with sealedcode", async () => {
      compareKeys(await both(sides, "GET", "sys/health", { token: null, query: "sealedcode=200" }));
    });
    await step(t, "seal-status sealed", async () => {
      compareKeys(await both(sides, "GET", "sys/seal-status", { token: null }));
    });
    await step(t, "KV read while sealed", async () => {
      await same(sides, "GET", "secret/data/x");
    });
    await step(t, "KV write while sealed, without a token", async () => {
      await same(sides, "POST", "secret/data/x", { token: null, body: { data: { a: "1" } } });
    });
    await step(t, "lookup-self while sealed", async () => {
      await same(sides, "GET", "auth/token/lookup-self");
    });
    await Promise.all(sides.map((side) => side.unseal()));
    await step(t, "KV read after unseal", async () => {
      await same(sides, "GET", "secret/data/x");
    });
  });
});

Deno.test("conformance: X-Vault-Namespace is ignored as Vault OSS does (namespaces: false)", async (t) => {
  await withBoth(async (sides) => {
    await step(t, "write in a namespace lands in the root namespace", async () => {
      await same(sides, "POST", "secret/data/ns", {
        namespace: "team-a",
        body: { data: { a: "1" } },
      });
      await same(sides, "GET", "secret/data/ns");
      await same(sides, "GET", "secret/data/ns", { namespace: "team-b" });
    });
    await step(t, "a root-namespace token works under any namespace header", async () => {
      for (const side of sides) {
        await side.setPolicy("nsreader", [{ path: "secret/data/ns", capabilities: ["read"] }]);
        await side.createToken("nsreader", { policies: ["nsreader"] });
      }
      await same(sides, "GET", "secret/data/ns", { namespace: "team-a", token: "nsreader" });
      await same(sides, "GET", "auth/token/lookup-self", { namespace: "x/y", token: "nsreader" });
    });
  }, { namespaces: false });
});
