/**
 * Tests of the fake Vault itself, over real HTTP with `fetch`: the KV v2 semantics (check-and-set,
 * the 404 shapes of never-written, deleted and destroyed versions, metadata and version trimming),
 * tokens (expiry, renew-self, lookup-self, policies), Kubernetes login, namespaces, health and the
 * injected faults. Every test closes its server.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FakeVault, type FakeVaultOptions } from "./vault.ts";
import { openssl, opensslRoot } from "../helpers/openssl.ts";

interface Answer {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
  text: string;
  headers: Headers;
}

interface CallOptions {
  token?: string;
  namespace?: string;
  body?: unknown;
  rawBody?: string;
  headers?: Record<string, string>;
  client?: Deno.HttpClient;
}

/** One request to the fake; the body is read (and parsed when JSON) before returning. */
async function call(
  vault: FakeVault,
  method: string,
  path: string,
  options: CallOptions = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers["x-vault-token"] = options.token;
  if (options.namespace !== undefined) headers["x-vault-namespace"] = options.namespace;
  let body: string | undefined = options.rawBody;
  if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers["content-type"] = "application/json";
  }
  const response = await fetch(`${vault.url}${path}`, {
    method,
    headers,
    body,
    client: options.client,
  });
  const text = await response.text();
  let parsed: unknown = undefined;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: response.status, body: parsed, text, headers: response.headers };
}

/** Starts a fake Vault, runs `fn`, and always closes the server. */
async function withVault(
  fn: (vault: FakeVault) => Promise<void>,
  options: FakeVaultOptions = {},
): Promise<void> {
  const vault = await FakeVault.start(options);
  try {
    await fn(vault);
  } finally {
    await vault.close();
  }
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const ACL_DENIED = "1 error occurred:\n\t* permission denied\n\n";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Asserts Vault's success envelope around `data`. */
function assertEnvelope(body: Record<string, unknown>) {
  assert.equal(typeof body.request_id, "string");
  assert.equal(body.lease_id, "");
  assert.equal(body.renewable, false);
  assert.equal(body.lease_duration, 0);
  assert.equal(body.wrap_info, null);
  assert.equal(body.auth, null);
  assert.equal("errors" in body, false);
}

Deno.test("start: plain HTTP on 127.0.0.1, a root token, and close", async () => {
  const vault = await FakeVault.start();
  try {
    assert.match(vault.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.match(vault.rootToken, /^hvs\.[0-9A-Za-z]{24}$/);
    const health = await call(vault, "GET", "/v1/sys/health");
    assert.equal(health.status, 200);
  } finally {
    await vault.close();
  }
  await vault.close(); // closing twice is harmless
  await assert.rejects(fetch(`${vault.url}/v1/sys/health`));
});

Deno.test("KV read of a path never written: 404 with an empty errors list", async () => {
  await withVault(async (vault) => {
    const answer = await call(vault, "GET", "/v1/secret/data/nothing/here", {
      token: vault.rootToken,
    });
    assert.equal(answer.status, 404);
    assert.deepEqual(answer.body, { errors: [] });
    assert.equal(answer.headers.get("content-type"), "application/json");
  });
});

Deno.test("KV write then read: Vault's envelopes, versions and ?version=N", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    const written = await call(vault, "POST", "/v1/secret/data/app/config", {
      token,
      body: { data: { a: "1", nested: { n: 2 } } },
    });
    assert.equal(written.status, 200);
    assertEnvelope(written.body);
    assert.deepEqual(Object.keys(written.body.data).sort(), [
      "created_time",
      "custom_metadata",
      "deletion_time",
      "destroyed",
      "version",
    ]);
    assert.equal(written.body.data.version, 1);
    assert.match(written.body.data.created_time, RFC3339);
    assert.equal(written.body.data.custom_metadata, null);
    assert.equal(written.body.data.deletion_time, "");
    assert.equal(written.body.data.destroyed, false);
    assert.equal(written.body.mount_type, "kv");

    const second = await call(vault, "PUT", "/v1/secret/data/app/config", {
      token,
      body: { data: { a: "2" } },
    });
    assert.equal(second.status, 200);
    assert.equal(second.body.data.version, 2);

    const read = await call(vault, "GET", "/v1/secret/data/app/config", { token });
    assert.equal(read.status, 200);
    assertEnvelope(read.body);
    assert.equal(read.body.warnings, null);
    assert.deepEqual(read.body.data.data, { a: "2" });
    assert.deepEqual(read.body.data.metadata, {
      created_time: second.body.data.created_time,
      custom_metadata: null,
      deletion_time: "",
      destroyed: false,
      version: 2,
    });

    const v1 = await call(vault, "GET", "/v1/secret/data/app/config?version=1", { token });
    assert.equal(v1.status, 200);
    assert.deepEqual(v1.body.data.data, { a: "1", nested: { n: 2 } });
    assert.equal(v1.body.data.metadata.version, 1);

    const latest = await call(vault, "GET", "/v1/secret/data/app/config?version=0", { token });
    assert.equal(latest.body.data.metadata.version, 2, "version=0 means the latest");

    const missing = await call(vault, "GET", "/v1/secret/data/app/config?version=9", { token });
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.body, { errors: [] });
  });
});

Deno.test("KV check-and-set: cas 0 only when no version exists, cas N only at version N", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    const path = "/v1/secret/data/cas";
    const put = (cas: unknown, value: string) =>
      call(vault, "POST", path, { token, body: { options: { cas }, data: { value } } });
    const mismatch = { errors: ["check-and-set parameter did not match the current version"] };

    const stale = await put(3, "x");
    assert.equal(stale.status, 400, "cas N on a secret without versions");
    assert.deepEqual(stale.body, mismatch);

    const first = await put(0, "one");
    assert.equal(first.status, 200);
    assert.equal(first.body.data.version, 1);

    const again = await put(0, "two");
    assert.equal(again.status, 400, "cas 0 once a version exists");
    assert.deepEqual(again.body, mismatch);

    const ok = await put(1, "two");
    assert.equal(ok.status, 200);
    assert.equal(ok.body.data.version, 2);

    const old = await put(1, "three");
    assert.equal(old.status, 400, "cas of an older version");
    assert.deepEqual(old.body, mismatch);

    const weak = await put("2", "three");
    assert.equal(weak.status, 200, "cas is decoded weakly, as mapstructure does");
    assert.equal(weak.body.data.version, 3);

    const bad = await put("three", "x");
    assert.equal(bad.status, 400);
    assert.deepEqual(bad.body, { errors: ["error parsing check-and-set parameter"] });

    const free = await call(vault, "POST", path, { token, body: { data: { value: "free" } } });
    assert.equal(free.status, 200, "without cas any write goes");
    assert.equal(free.body.data.version, 4);

    // Soft-deleting the latest version does not change the current version for cas.
    vault.deleteLatest("cas");
    assert.equal((await put(0, "x")).status, 400);
    assert.equal((await put(4, "five")).status, 200);
    assert.equal(vault.read("cas")!.version, 5);
  });
});

Deno.test("KV cas_required on the mount and on a key", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    const required = { errors: ["check-and-set parameter required for this call"] };
    const strict = await call(vault, "POST", "/v1/strict/data/x", {
      token,
      body: { data: { a: 1 } },
    });
    assert.equal(strict.status, 400);
    assert.deepEqual(strict.body, required);
    const config = await call(vault, "GET", "/v1/strict/config", { token });
    assert.deepEqual(config.body.data, {
      cas_required: true,
      delete_version_after: "0s",
      max_versions: 0,
    });
    assert.equal(
      (await call(vault, "POST", "/v1/strict/data/x", {
        token,
        body: { options: { cas: 0 }, data: { a: 1 } },
      })).status,
      200,
    );

    // Per key, through the metadata endpoint.
    const meta = await call(vault, "POST", "/v1/secret/metadata/locked", {
      token,
      body: { cas_required: true },
    });
    assert.equal(meta.status, 204);
    const refused = await call(vault, "POST", "/v1/secret/data/locked", {
      token,
      body: { data: { a: 1 } },
    });
    assert.equal(refused.status, 400);
    assert.deepEqual(refused.body, required);
    const created = await call(vault, "POST", "/v1/secret/data/locked", {
      token,
      body: { options: { cas: 0 }, data: { a: 1 } },
    });
    assert.equal(created.status, 200, "metadata without versions: current version 0");
  }, { kvMounts: [{ path: "strict", casRequired: true }] });
});

Deno.test("KV write errors: no data, bad JSON, data not a map", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    const path = "/v1/secret/data/x";
    const noData = await call(vault, "POST", path, { token, body: { options: { cas: 0 } } });
    assert.equal(noData.status, 400);
    assert.deepEqual(noData.body, { errors: ["no data provided"] });
    const empty = await call(vault, "POST", path, { token });
    assert.equal(empty.status, 400);
    assert.deepEqual(empty.body, { errors: ["no data provided"] });
    // Vault answers 500 to a body that is not JSON (Go's decoder error), 400 to one that is
    // JSON but not an object (checked against Vault v1.21.0).
    const badJson = await call(vault, "POST", path, { token, rawBody: "{nope" });
    assert.equal(badJson.status, 500);
    assert.match(badJson.body.errors[0], /^invalid character/);
    const notObject = await call(vault, "POST", path, { token, rawBody: "[1]" });
    assert.equal(notObject.status, 400);
    assert.deepEqual(notObject.body, {
      errors: [
        "error parsing JSON: failed to parse JSON input: json: cannot unmarshal array into Go value of type map[string]interface {}",
      ],
    });
    const notMap = await call(vault, "POST", path, { token, body: { data: "text" } });
    assert.equal(notMap.status, 400);
    assert.deepEqual(notMap.body, {
      errors: [`error converting input for field "data": '' expected a map, got 'string'`],
    });
    assert.equal(vault.read("x"), undefined, "nothing was written");
  });
});

Deno.test("KV soft delete: 404 whose body carries the metadata, as Vault's RespondWithStatusCode", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    vault.write("gone", { a: "1" });
    vault.write("gone", { a: "2" });
    const deleted = await call(vault, "DELETE", "/v1/secret/data/gone", { token });
    assert.equal(deleted.status, 204);
    assert.equal(deleted.text, "");

    const read = await call(vault, "GET", "/v1/secret/data/gone", { token });
    assert.equal(read.status, 404);
    assertEnvelope(read.body);
    assert.equal(read.body.data.data, null);
    assert.equal(read.body.data.metadata.version, 2);
    assert.equal(read.body.data.metadata.destroyed, false);
    assert.match(read.body.data.metadata.deletion_time, RFC3339);
    assert.equal(read.body.data.metadata.custom_metadata, null);
    assert.equal(read.text.endsWith("\n"), false, "a raw body, not a JSON encoder's output");

    const older = await call(vault, "GET", "/v1/secret/data/gone?version=1", { token });
    assert.equal(older.status, 200, "older versions stay readable");
    assert.deepEqual(older.body.data.data, { a: "1" });

    const deleteAgain = await call(vault, "DELETE", "/v1/secret/data/gone", { token });
    assert.equal(deleteAgain.status, 204);
    assert.equal(
      vault.read("gone")!.deletionTime,
      read.body.data.metadata.deletion_time,
      "a second delete keeps the first deletion time",
    );

    const undelete = await call(vault, "POST", "/v1/secret/undelete/gone", {
      token,
      body: { versions: [2] },
    });
    assert.equal(undelete.status, 204);
    const back = await call(vault, "GET", "/v1/secret/data/gone", { token });
    assert.equal(back.status, 200);
    assert.deepEqual(back.body.data.data, { a: "2" });

    const byVersions = await call(vault, "POST", "/v1/secret/delete/gone", {
      token,
      body: { versions: "1,2" },
    });
    assert.equal(byVersions.status, 204);
    assert.equal(
      (await call(vault, "GET", "/v1/secret/data/gone?version=1", { token })).status,
      404,
    );
    assert.equal((await call(vault, "GET", "/v1/secret/data/gone", { token })).status, 404);

    const noVersions = await call(vault, "POST", "/v1/secret/delete/gone", { token, body: {} });
    assert.equal(noVersions.status, 400);
    assert.deepEqual(noVersions.body, { errors: ["No version number provided"] });
    const nothing = await call(vault, "DELETE", "/v1/secret/data/never", { token });
    assert.equal(nothing.status, 204, "deleting a path never written is not an error");
  });
});

Deno.test("KV destroy: 404 with destroyed true and no data; undelete cannot bring it back", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    vault.write("burn", { k: "v1" });
    vault.write("burn", { k: "v2" });
    const destroyed = await call(vault, "PUT", "/v1/secret/destroy/burn", {
      token,
      body: { versions: [2] },
    });
    assert.equal(destroyed.status, 204);
    const read = await call(vault, "GET", "/v1/secret/data/burn", { token });
    assert.equal(read.status, 404);
    assert.deepEqual(read.body.data, {
      data: null,
      metadata: {
        created_time: vault.read("burn")!.createdTime,
        custom_metadata: null,
        deletion_time: "",
        destroyed: true,
        version: 2,
      },
    });
    await call(vault, "POST", "/v1/secret/undelete/burn", { token, body: { versions: [2] } });
    assert.equal((await call(vault, "GET", "/v1/secret/data/burn", { token })).status, 404);
    assert.deepEqual(vault.read("burn")!.data, {});
    assert.equal(vault.read("burn")!.destroyed, true);

    const viaPost = await call(vault, "POST", "/v1/secret/destroy/burn", {
      token,
      body: { versions: [1] },
    });
    assert.equal(viaPost.status, 204);
    assert.equal(vault.read("burn", { version: 1 })!.destroyed, true);

    const none = await call(vault, "POST", "/v1/secret/destroy/burn", { token, body: {} });
    assert.equal(none.status, 400);
    assert.deepEqual(none.body, { errors: ["no version number provided"] });
  });
});

Deno.test("KV deleted and destroyed latest versions made by the helpers read as Vault would", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    vault.write("a", { x: 1 });
    assert.equal(vault.deleteLatest("a"), true);
    assert.equal(vault.deleteLatest("a"), false, "already deleted");
    const deleted = await call(vault, "GET", "/v1/secret/data/a", { token });
    assert.equal(deleted.status, 404);
    assert.match(deleted.body.data.metadata.deletion_time, RFC3339);
    assert.equal(deleted.body.data.metadata.destroyed, false);

    assert.equal(vault.destroyLatest("a"), true);
    const destroyed = await call(vault, "GET", "/v1/secret/data/a", { token });
    assert.equal(destroyed.status, 404);
    assert.equal(destroyed.body.data.data, null);
    assert.equal(destroyed.body.data.metadata.destroyed, true);
    assert.match(
      destroyed.body.data.metadata.deletion_time,
      RFC3339,
      "destroy keeps deletion_time",
    );
    assert.equal(vault.destroyLatest("a"), false);
    assert.equal(vault.destroyLatest("never"), false);
  });
});

Deno.test("KV metadata: versions, deletion and destruction, list, and delete of everything", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    const absent = await call(vault, "GET", "/v1/secret/metadata/m", { token });
    assert.equal(absent.status, 404);
    assert.deepEqual(absent.body, { errors: [] });

    vault.write("m", { v: 1 });
    vault.write("m", { v: 2 });
    vault.write("m", { v: 3 });
    await call(vault, "DELETE", "/v1/secret/data/m", { token });
    await call(vault, "POST", "/v1/secret/destroy/m", { token, body: { versions: [1] } });
    const meta = await call(vault, "GET", "/v1/secret/metadata/m", { token });
    assert.equal(meta.status, 200);
    assertEnvelope(meta.body);
    const data = meta.body.data;
    assert.deepEqual(Object.keys(data).sort(), [
      "cas_required",
      "created_time",
      "current_version",
      "custom_metadata",
      "delete_version_after",
      "last_updated_by",
      "max_versions",
      "oldest_version",
      "updated_time",
      "versions",
    ]);
    assert.equal(data.last_updated_by.actor, "root");
    assert.equal(data.last_updated_by.operation, "delete", "the soft delete updated it last");
    assert.equal(typeof data.last_updated_by.client_id, "string");
    assert.deepEqual(data.versions["2"].created_by.actor, "root");
    assert.equal(data.versions["3"].deleted_by.operation, "delete");
    assert.equal(data.versions["1"].deleted_by, null);
    assert.equal(data.current_version, 3);
    assert.equal(data.oldest_version, 0);
    assert.equal(data.max_versions, 0);
    assert.equal(data.cas_required, false);
    assert.equal(data.delete_version_after, "0s");
    assert.equal(data.created_time, data.versions["1"].created_time);
    assert.equal(data.updated_time, data.versions["3"].created_time);
    assert.deepEqual(Object.keys(data.versions), ["1", "2", "3"]);
    assert.equal(data.versions["1"].destroyed, true);
    assert.equal(data.versions["1"].deletion_time, "");
    assert.equal(data.versions["2"].destroyed, false);
    assert.equal(data.versions["2"].deletion_time, "");
    assert.match(data.versions["3"].deletion_time, RFC3339);
    assert.deepEqual(
      vault.readMetadata("m")!.versions[3].deletionTime,
      data.versions["3"].deletion_time,
    );

    vault.write("dir/one", { a: 1 });
    vault.write("dir/sub/two", { a: 1 });
    const root = await call(vault, "GET", "/v1/secret/metadata/?list=true", { token });
    assert.equal(root.status, 200);
    assert.deepEqual(root.body.data.keys, ["dir/", "m"]);
    const dir = await call(vault, "GET", "/v1/secret/metadata/dir?list=true", { token });
    assert.deepEqual(dir.body.data.keys, ["one", "sub/"]);
    const empty = await call(vault, "GET", "/v1/secret/metadata/nothing/?list=true", { token });
    assert.equal(empty.status, 404);
    assert.deepEqual(empty.body, { errors: [] });

    const removed = await call(vault, "DELETE", "/v1/secret/metadata/m", { token });
    assert.equal(removed.status, 204);
    assert.equal((await call(vault, "GET", "/v1/secret/metadata/m", { token })).status, 404);
    const gone = await call(vault, "GET", "/v1/secret/data/m", { token });
    assert.equal(gone.status, 404);
    assert.deepEqual(gone.body, { errors: [] }, "after a metadata delete it was never written");
    const fresh = await call(vault, "POST", "/v1/secret/data/m", {
      token,
      body: { options: { cas: 0 }, data: { v: "new" } },
    });
    assert.equal(fresh.status, 200);
    assert.equal(fresh.body.data.version, 1);
  });
});

Deno.test("KV max_versions trims the oldest versions as the plugin's sliding window", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    await call(vault, "POST", "/v1/secret/metadata/few", { token, body: { max_versions: 2 } });
    for (let i = 1; i <= 3; i++) vault.write("few", { i });
    const meta = await call(vault, "GET", "/v1/secret/metadata/few", { token });
    assert.equal(meta.body.data.current_version, 3);
    assert.equal(meta.body.data.oldest_version, 2);
    assert.equal(meta.body.data.max_versions, 2);
    assert.deepEqual(Object.keys(meta.body.data.versions), ["2", "3"]);
    assert.equal(
      (await call(vault, "GET", "/v1/secret/data/few?version=1", { token })).status,
      404,
    );

    for (let i = 1; i <= 12; i++) vault.write("many", { i });
    const many = vault.readMetadata("many")!;
    assert.equal(many.currentVersion, 12);
    assert.equal(many.oldestVersion, 3, "Vault keeps 10 versions by default");
    assert.deepEqual(Object.keys(many.versions).map(Number), [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  });
});

Deno.test("routing: other KV mounts, unknown mounts, invalid KV paths, wrong methods", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    const other = await call(vault, "POST", "/v1/kv2/data/x", { token, body: { data: { a: 1 } } });
    assert.equal(other.status, 200);
    assert.equal(vault.read("x", { mount: "kv2" })!.version, 1);
    assert.equal(vault.read("x"), undefined, "mounts are separate");

    const unknown = await call(vault, "GET", "/v1/nomount/data/x", { token });
    assert.equal(unknown.status, 404);
    assert.deepEqual(unknown.body, {
      errors: ['no handler for route "nomount/data/x". route entry not found.'],
    });

    const invalid = await call(vault, "GET", "/v1/secret/x", { token });
    assert.equal(invalid.status, 404);
    assert.equal(invalid.body.data, null);
    assert.match(invalid.body.warnings[0], /^Invalid path for a versioned K\/V secrets engine/);
    assert.match(invalid.body.warnings[0], /'vault kv get'/);
    const rootOfData = await call(vault, "GET", "/v1/secret/data", { token });
    assert.equal(rootOfData.status, 404);
    assert.match(rootOfData.body.warnings[0], /^Non-listing operations on the root/);

    const unsupported = await call(vault, "DELETE", "/v1/secret/destroy/x", { token });
    assert.equal(unsupported.status, 405);
    assert.deepEqual(unsupported.body, {
      errors: ["1 error occurred:\n\t* unsupported operation\n\n"],
    });
    const lookupDelete = await call(vault, "DELETE", "/v1/auth/token/lookup-self", { token });
    assert.equal(lookupDelete.status, 405);

    // HEAD and OPTIONS are Vault's header operation, which no KV path supports; PATCH needs
    // the merge-patch media type (checked against Vault v1.21.0).
    for (const method of ["HEAD", "OPTIONS"]) {
      const answer = await call(vault, method, "/v1/secret/data/x", { token });
      assert.equal(answer.status, 405, method);
      if (method !== "HEAD") {
        assert.deepEqual(answer.body, {
          errors: ["1 error occurred:\n\t* unsupported operation\n\n"],
        });
      }
    }
    const patch = await call(vault, "PATCH", "/v1/secret/data/x", { token });
    assert.equal(patch.status, 400);
    assert.deepEqual(patch.body, { errors: ["mime: no media type"] });
    const unmapped = await call(vault, "PROPFIND", "/v1/secret/data/x", { token });
    assert.equal(unmapped.status, 405);
    assert.deepEqual(unmapped.body, { errors: [] });
    const noVersion = await call(vault, "GET", "/secret/data/x", { token });
    assert.equal(noVersion.status, 404);
    assert.equal(noVersion.text, "404 page not found\n");
    const badList = await call(vault, "GET", "/v1/secret/metadata/?list=maybe", { token });
    assert.equal(badList.status, 400);
  }, { kvMounts: ["kv2"] });
});

Deno.test("tokens: missing, unknown, Bearer, expired by time and expired on demand", async () => {
  await withVault(async (vault) => {
    vault.write("t", { a: 1 });
    const denied = { errors: ["permission denied"] };
    // A token sent but unknown, expired or revoked: Vault adds "invalid token".
    const invalid = {
      errors: ["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"],
    };
    const none = await call(vault, "GET", "/v1/secret/data/t");
    assert.equal(none.status, 403);
    assert.deepEqual(none.body, denied);
    const unknown = await call(vault, "GET", "/v1/secret/data/t", { token: "hvs.nope" });
    assert.equal(unknown.status, 403);
    assert.deepEqual(unknown.body, invalid);
    const noTokenUnknownPath = await call(vault, "GET", "/v1/nomount/x");
    assert.equal(noTokenUnknownPath.status, 403, "the token is checked before routing");

    const bearer = await call(vault, "GET", "/v1/secret/data/t", {
      headers: { authorization: `Bearer ${vault.rootToken}` },
    });
    assert.equal(bearer.status, 200);

    const short = vault.createToken({ ttl: 0.3 });
    assert.equal((await call(vault, "GET", "/v1/secret/data/t", { token: short })).status, 200);
    await sleep(400);
    const expired = await call(vault, "GET", "/v1/secret/data/t", { token: short });
    assert.equal(expired.status, 403);
    assert.deepEqual(expired.body, invalid);
    assert.equal(vault.lookupToken(short)!.expired, true);

    const long = vault.createToken({ ttl: 3600 });
    assert.equal((await call(vault, "GET", "/v1/secret/data/t", { token: long })).status, 200);
    vault.expireToken(long);
    assert.deepEqual(
      (await call(vault, "GET", "/v1/secret/data/t", { token: long })).body,
      invalid,
    );

    const a = vault.createToken({ ttl: 3600 });
    const b = vault.createToken({ ttl: 3600 });
    vault.expireAllTokens();
    assert.equal((await call(vault, "GET", "/v1/secret/data/t", { token: a })).status, 403);
    assert.equal((await call(vault, "GET", "/v1/secret/data/t", { token: b })).status, 403);
    assert.equal(
      (await call(vault, "GET", "/v1/secret/data/t", { token: vault.rootToken })).status,
      200,
      "the root token does not expire",
    );

    const revoked = vault.createToken({});
    const revoke = await call(vault, "POST", "/v1/auth/token/revoke-self", { token: revoked });
    assert.equal(revoke.status, 204);
    assert.equal((await call(vault, "GET", "/v1/secret/data/t", { token: revoked })).status, 403);
    assert.equal(vault.lookupToken(revoked), undefined);
  });
});

Deno.test("lookup-self: Vault's fields for a created token and for the root token", async () => {
  await withVault(async (vault) => {
    vault.setPolicy("reader", [{ path: "secret/data/*", capabilities: ["read"] }]);
    const token = vault.createToken({ ttl: 600, policies: ["reader"], renewable: true });
    const answer = await call(vault, "GET", "/v1/auth/token/lookup-self", { token });
    assert.equal(answer.status, 200);
    assertEnvelope(answer.body);
    const data = answer.body.data;
    assert.equal(data.id, token);
    assert.deepEqual(data.policies, ["default", "reader"]);
    assert.equal(data.renewable, true);
    assert.equal(data.creation_ttl, 600);
    assert.ok(data.ttl <= 600 && data.ttl >= 598, `ttl ${data.ttl}`);
    assert.match(data.expire_time, RFC3339);
    assert.match(data.issue_time, RFC3339);
    assert.equal(typeof data.accessor, "string");
    assert.equal(data.type, "service");
    assert.equal(data.path, "auth/token/create");

    const root = await call(vault, "GET", "/v1/auth/token/lookup-self", {
      token: vault.rootToken,
    });
    assert.equal(root.body.data.ttl, 0);
    assert.equal(root.body.data.expire_time, null);
    assert.deepEqual(root.body.data.policies, ["root"]);
    assert.equal(root.body.data.path, "auth/token/root");
  });
});

Deno.test("renew-self: extends the TTL, caps it at the max TTL, refuses non-renewable tokens", async () => {
  await withVault(async (vault) => {
    const token = vault.createToken({ ttl: 60, maxTtl: 7200, policies: [] });
    const renewed = await call(vault, "POST", "/v1/auth/token/renew-self", {
      token,
      body: { increment: "1h" },
    });
    assert.equal(renewed.status, 200);
    assert.equal(renewed.body.data, null);
    const auth = renewed.body.auth;
    assert.equal(auth.client_token, token);
    assert.equal(typeof auth.accessor, "string");
    assert.deepEqual(auth.policies, ["default"]);
    assert.deepEqual(auth.token_policies, ["default"]);
    assert.equal(auth.lease_duration, 3600);
    assert.equal(auth.renewable, true);
    assert.equal(renewed.body.warnings, null);
    const info = vault.lookupToken(token)!;
    assert.ok(info.ttl >= 3598, `ttl ${info.ttl}`);
    assert.equal(info.renewals, 1);

    const numeric = await call(vault, "POST", "/v1/auth/token/renew-self", {
      token,
      body: { increment: 600 },
    });
    assert.equal(numeric.body.auth.lease_duration, 600);

    const reset = await call(vault, "POST", "/v1/auth/token/renew-self", { token, body: {} });
    assert.equal(reset.body.auth.lease_duration, 600, "without increment: the last TTL granted");

    const capped = await call(vault, "POST", "/v1/auth/token/renew-self", {
      token,
      body: { increment: "5h" },
    });
    assert.equal(capped.status, 200);
    assert.ok(capped.body.auth.lease_duration <= 7200 && capped.body.auth.lease_duration >= 7199);
    // Whole seconds (Vault truncates now and the issue time), zero units left out.
    assert.match(
      capped.body.warnings[0],
      /^TTL of "5h" exceeded the effective max_ttl of "(2h|1h59m59s)"; TTL value is capped accordingly$/,
    );

    const lookup = await call(vault, "GET", "/v1/auth/token/lookup-self", { token });
    assert.ok(lookup.body.data.ttl >= 7190, "lookup-self sees the renewed TTL");
    assert.equal(typeof lookup.body.data.last_renewal_time, "number");

    const fixed = vault.createToken({ ttl: 60, renewable: false, policies: [] });
    const refused = await call(vault, "POST", "/v1/auth/token/renew-self", { token: fixed });
    assert.equal(refused.status, 400);
    assert.deepEqual(refused.body, { errors: ["lease is not renewable"] });

    const root = await call(vault, "POST", "/v1/auth/token/renew-self", {
      token: vault.rootToken,
    });
    assert.equal(root.status, 400);
    assert.deepEqual(root.body, { errors: ["invalid lease ID"] });

    const expired = vault.createToken({ ttl: 60 });
    vault.expireToken(expired);
    const late = await call(vault, "POST", "/v1/auth/token/renew-self", { token: expired });
    assert.equal(late.status, 403, "an expired token cannot renew itself");
  });
});

Deno.test("policies: ACL denial in multierror format, create versus update, priority, default", async () => {
  await withVault(async (vault) => {
    vault.write("app/a", { a: 1 });
    vault.write("private/p", { p: 1 });
    const reader = vault.createToken({
      policies: [
        { path: "secret/data/*", capabilities: ["read"] },
        { path: "secret/data/private/*", capabilities: ["deny"] },
        { path: "secret/metadata/+/a", capabilities: ["read"] },
      ],
    });
    assert.equal(
      (await call(vault, "GET", "/v1/secret/data/app/a", { token: reader })).status,
      200,
    );
    const denied = await call(vault, "GET", "/v1/secret/data/private/p", { token: reader });
    assert.equal(denied.status, 403, "the longer glob wins and denies");
    assert.deepEqual(denied.body, { errors: [ACL_DENIED] });
    const write = await call(vault, "POST", "/v1/secret/data/app/a", {
      token: reader,
      body: { data: { a: 2 } },
    });
    assert.equal(write.status, 403);
    assert.deepEqual(write.body, { errors: [ACL_DENIED] });
    assert.equal(vault.read("app/a")!.version, 1);
    const del = await call(vault, "DELETE", "/v1/secret/data/app/a", { token: reader });
    assert.equal(del.status, 403);
    assert.equal(
      (await call(vault, "GET", "/v1/secret/metadata/app/a", { token: reader })).status,
      200,
    );
    assert.equal(
      (await call(vault, "GET", "/v1/secret/metadata/app/b/a", { token: reader })).status,
      403,
      "+ is exactly one segment",
    );
    const unknownPath = await call(vault, "GET", "/v1/nomount/x", { token: reader });
    assert.equal(unknownPath.status, 403, "ACL is checked before routing");

    vault.setPolicy("creator", [{ path: "secret/data/new/*", capabilities: ["create"] }]);
    const creator = vault.createToken({ policies: ["creator"] });
    const created = await call(vault, "POST", "/v1/secret/data/new/x", {
      token: creator,
      body: { data: { a: 1 } },
    });
    assert.equal(created.status, 200, "create: the path does not exist yet");
    const updated = await call(vault, "POST", "/v1/secret/data/new/x", {
      token: creator,
      body: { data: { a: 2 } },
    });
    assert.equal(updated.status, 403, "update: the path exists now");
    assert.deepEqual(updated.body, { errors: [ACL_DENIED] });

    vault.setPolicy("lister", [{ path: "secret/metadata/*", capabilities: ["list"] }]);
    const lister = vault.createToken({ policies: ["lister"] });
    const list = await call(vault, "GET", "/v1/secret/metadata/?list=true", { token: lister });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.data.keys, ["app/", "new/", "private/"]);
    assert.equal(
      (await call(vault, "GET", "/v1/secret/metadata/app/a", { token: lister })).status,
      403,
    );

    // The default policy lets a token look itself up; without it, nothing.
    assert.equal(
      (await call(vault, "GET", "/v1/auth/token/lookup-self", { token: lister })).status,
      200,
    );
    const bare = vault.createToken({ policies: [], noDefaultPolicy: true });
    const bareLookup = await call(vault, "GET", "/v1/auth/token/lookup-self", { token: bare });
    assert.equal(bareLookup.status, 403);
    assert.deepEqual(bareLookup.body, { errors: [ACL_DENIED] });
    assert.deepEqual(vault.lookupToken(bare)!.policies, []);

    const rootLike = vault.createToken({});
    assert.deepEqual(vault.lookupToken(rootLike)!.policies, ["root"]);
    assert.equal((await call(vault, "GET", "/v1/nomount/x", { token: rootLike })).status, 404);
  });
});

Deno.test("Kubernetes login: token issued, bad JWT 403, unknown role 400, logins counted", async () => {
  await withVault(async (vault) => {
    vault.write("k8s", { v: 1 });
    const claims = {
      iss: "kubernetes/serviceaccount",
      "kubernetes.io": {
        namespace: "dapr-system",
        serviceaccount: { name: "dapr-sentry", uid: "1234" },
      },
    };
    const jwt = `eyJhbGciOiJSUzI1NiJ9.${btoa(JSON.stringify(claims)).replace(/=+$/, "")}.sig`;
    vault.addKubernetesRole("sentry", {
      jwt,
      policies: [{ path: "secret/data/k8s", capabilities: ["read"] }],
      ttl: 1200,
    });
    const login = await call(vault, "POST", "/v1/auth/kubernetes/login", {
      body: { role: "sentry", jwt },
    });
    assert.equal(login.status, 200);
    assertEnvelope({ ...login.body, auth: null });
    const auth = login.body.auth;
    assert.match(auth.client_token, /^hvs\./);
    assert.equal(typeof auth.accessor, "string");
    assert.ok(auth.policies.includes("default"));
    assert.deepEqual(auth.token_policies, auth.policies);
    assert.equal(auth.metadata.role, "sentry");
    assert.equal(auth.metadata.service_account_name, "dapr-sentry");
    assert.equal(auth.metadata.service_account_namespace, "dapr-system");
    assert.equal(auth.metadata.service_account_uid, "1234");
    assert.equal(auth.lease_duration, 1200);
    assert.equal(auth.renewable, true);
    assert.equal(vault.kubernetesLogins, 1);

    const token = auth.client_token;
    assert.equal((await call(vault, "GET", "/v1/secret/data/k8s", { token })).status, 200);
    assert.equal(
      (await call(vault, "GET", "/v1/secret/data/other", { token })).status,
      403,
      "only the role's policies",
    );
    const lookup = await call(vault, "GET", "/v1/auth/token/lookup-self", { token });
    assert.equal(lookup.body.data.path, "auth/kubernetes/login");
    assert.equal(lookup.body.data.meta.role, "sentry");
    const renewed = await call(vault, "POST", "/v1/auth/token/renew-self", { token, body: {} });
    assert.equal(renewed.body.auth.lease_duration, 1200);

    const bad = await call(vault, "POST", "/v1/auth/kubernetes/login", {
      body: { role: "sentry", jwt: "forged" },
    });
    assert.equal(bad.status, 403);
    assert.deepEqual(bad.body, { errors: ["permission denied"] });
    const unknown = await call(vault, "POST", "/v1/auth/kubernetes/login", {
      body: { role: "x", jwt },
    });
    assert.equal(unknown.status, 400);
    assert.deepEqual(unknown.body, { errors: ['invalid role name "x"'] });
    const noRole = await call(vault, "POST", "/v1/auth/kubernetes/login", { body: { jwt } });
    assert.deepEqual(noRole.body, { errors: ["missing role"] });
    const noJwt = await call(vault, "POST", "/v1/auth/kubernetes/login", {
      body: { role: "sentry" },
    });
    assert.equal(noJwt.status, 400);
    assert.deepEqual(noJwt.body, { errors: ["missing jwt"] });

    assert.equal(vault.kubernetesLogins, 1, "only successful logins count");
    assert.equal(vault.loginAttempts.length, 5);
    assert.deepEqual(vault.loginAttempts.map((a) => a.ok), [true, false, false, false, false]);

    // A second mount, with a predicate.
    vault.addKubernetesRole("any", {
      mount: "k8s-east",
      jwt: (presented) => presented.startsWith("east-"),
      ttl: 60,
    });
    const east = await call(vault, "POST", "/v1/auth/k8s-east/login", {
      body: { role: "any", jwt: "east-token" },
    });
    assert.equal(east.status, 200);
    assert.deepEqual(east.body.auth.policies, ["default"]);
    const west = await call(vault, "POST", "/v1/auth/k8s-east/login", {
      body: { role: "any", jwt: "west-token" },
    });
    assert.equal(west.status, 403);
    const wrongMount = await call(vault, "POST", "/v1/auth/k8s-east/login", {
      body: { role: "sentry", jwt },
    });
    assert.equal(wrongMount.status, 400, "roles belong to a mount");
    assert.equal(vault.kubernetesLogins, 2);
  });
});

Deno.test("namespaces: separate KV data and tokens; a token works in its namespace and children", async () => {
  await withVault(async (vault) => {
    const root = vault.rootToken;
    const inA = await call(vault, "POST", "/v1/secret/data/shared", {
      token: root,
      namespace: "team-a",
      body: { data: { who: "a" } },
    });
    assert.equal(inA.status, 200);
    assert.equal(inA.body.data.version, 1);
    const inB = await call(vault, "GET", "/v1/secret/data/shared", {
      token: root,
      namespace: "team-b",
    });
    assert.equal(inB.status, 404);
    assert.equal((await call(vault, "GET", "/v1/secret/data/shared", { token: root })).status, 404);
    assert.deepEqual(vault.read("shared", { namespace: "team-a" })!.data, { who: "a" });
    assert.equal(vault.read("shared"), undefined);
    vault.write("shared", { who: "b" }, { namespace: "team-b/" });
    const readB = await call(vault, "GET", "/v1/secret/data/shared", {
      token: root,
      namespace: "/team-b/",
    });
    assert.deepEqual(readB.body.data.data, { who: "b" });

    const tokenA = vault.createToken({ namespace: "team-a", policies: [] });
    assert.match(
      tokenA,
      /^hvs\.[0-9A-Za-z]{24}\.[0-9A-Za-z]{5}$/,
      "namespaced tokens carry a suffix",
    );
    vault.setPolicy("rw", [{ path: "secret/data/*", capabilities: ["read", "update", "create"] }], {
      namespace: "team-a",
    });
    const writerA = vault.createToken({ namespace: "team-a", policies: ["rw"] });
    assert.equal(
      (await call(vault, "GET", "/v1/secret/data/shared", { token: writerA, namespace: "team-a" }))
        .status,
      200,
    );
    const inOther = await call(vault, "GET", "/v1/secret/data/shared", {
      token: writerA,
      namespace: "team-b",
    });
    assert.equal(inOther.status, 403);
    assert.deepEqual(inOther.body, { errors: ["permission denied"] });
    assert.equal(
      (await call(vault, "GET", "/v1/secret/data/shared", { token: writerA })).status,
      403,
    );
    assert.equal(
      (await call(vault, "GET", "/v1/auth/token/lookup-self", {
        token: tokenA,
        namespace: "team-a",
      }))
        .status,
      200,
    );
    assert.equal(
      (await call(vault, "GET", "/v1/auth/token/lookup-self", { token: tokenA })).status,
      403,
      "a namespace's token is unknown in the root namespace",
    );

    // A child namespace: the parent's token works, with ACL paths relative to its namespace.
    vault.write("deep", { d: 1 }, { namespace: "team-a/child" });
    const child = await call(vault, "GET", "/v1/secret/data/deep", {
      token: writerA,
      namespace: "team-a/child",
    });
    assert.equal(child.status, 403, "team-a's rule secret/data/* does not cover child/secret/...");
    vault.setPolicy("child", [{ path: "child/secret/data/*", capabilities: ["read"] }], {
      namespace: "team-a",
    });
    const parentToken = vault.createToken({ namespace: "team-a", policies: ["child"] });
    const viaParent = await call(vault, "GET", "/v1/secret/data/deep", {
      token: parentToken,
      namespace: "team-a/child",
    });
    assert.equal(viaParent.status, 200);

    // Kubernetes roles belong to a namespace too.
    vault.addKubernetesRole("r", { jwt: "j", namespace: "team-a" });
    const rootNsLogin = await call(vault, "POST", "/v1/auth/kubernetes/login", {
      body: { role: "r", jwt: "j" },
    });
    assert.equal(rootNsLogin.status, 400);
    const nsLogin = await call(vault, "POST", "/v1/auth/kubernetes/login", {
      namespace: "team-a",
      body: { role: "r", jwt: "j" },
    });
    assert.equal(nsLogin.status, 200);
    const loginToken = nsLogin.body.auth.client_token;
    assert.equal(vault.lookupToken(loginToken)!.namespace, "team-a");
    assert.equal(
      (await call(vault, "GET", "/v1/secret/data/x", { token: loginToken })).status,
      403,
    );
    assert.equal(vault.requests.at(-1)!.namespace, "");
    assert.equal(vault.requests.at(-2)!.namespace, "team-a");
  });
});

Deno.test("sys/health: 200 active, 429 standby, 473 performance standby, 503 sealed, 501 uninitialised", async () => {
  await withVault(async (vault) => {
    const active = await call(vault, "GET", "/v1/sys/health");
    assert.equal(active.status, 200);
    assert.equal(active.body.initialized, true);
    assert.equal(active.body.sealed, false);
    assert.equal(active.body.standby, false);
    assert.equal(active.body.performance_standby, false);
    assert.equal(active.body.replication_performance_mode, "disabled");
    assert.equal(active.body.replication_dr_mode, "disabled");
    assert.equal(active.body.version, "1.17.0+ent");
    assert.equal(typeof active.body.server_time_utc, "number");
    assert.equal(typeof active.body.cluster_id, "string");
    assert.equal(typeof active.body.cluster_name, "string");

    vault.setStandby(true);
    const standby = await call(vault, "GET", "/v1/sys/health");
    assert.equal(standby.status, 429);
    assert.equal(standby.body.standby, true);
    assert.equal((await call(vault, "GET", "/v1/sys/health?standbyok=true")).status, 200);
    assert.equal((await call(vault, "GET", "/v1/sys/health?standbycode=299")).status, 299);

    vault.setStandby(true, { performance: true });
    const perf = await call(vault, "GET", "/v1/sys/health");
    assert.equal(perf.status, 473);
    assert.equal(perf.body.standby, true);
    assert.equal(perf.body.performance_standby, true);
    assert.equal((await call(vault, "GET", "/v1/sys/health?perfstandbyok=true")).status, 200);
    vault.setStandby(false);

    vault.seal();
    const sealed = await call(vault, "GET", "/v1/sys/health");
    assert.equal(sealed.status, 503);
    assert.equal(sealed.body.sealed, true);
    assert.equal("cluster_id" in sealed.body, false);
    assert.equal((await call(vault, "GET", "/v1/sys/health?sealedcode=200")).status, 200);
    const sealStatus = await call(vault, "GET", "/v1/sys/seal-status");
    assert.equal(sealStatus.status, 200);
    assert.equal(sealStatus.body.sealed, true);
    assert.equal(sealStatus.body.type, "shamir");
    vault.unseal();
    assert.equal((await call(vault, "GET", "/v1/sys/seal-status")).body.sealed, false);

    vault.setInitialized(false);
    const uninit = await call(vault, "GET", "/v1/sys/health");
    assert.equal(uninit.status, 501);
    assert.equal(uninit.body.initialized, false);
    assert.equal(uninit.body.sealed, true);
    const other = await call(vault, "GET", "/v1/secret/data/x", { token: vault.rootToken });
    assert.equal(other.status, 503);
    vault.setInitialized(true);

    const head = await call(vault, "HEAD", "/v1/sys/health");
    assert.equal(head.status, 200);
    assert.equal(head.text, "");
    const post = await call(vault, "POST", "/v1/sys/health");
    assert.equal(post.status, 405);
    assert.deepEqual(post.body, { errors: [] });
    assert.equal((await call(vault, "GET", "/v1/sys/health?standbyok=maybe")).status, 400);
  });
});

Deno.test("sealed: 503 'Vault is sealed' for every request but health, until unsealed", async () => {
  await withVault(async (vault) => {
    vault.write("s", { a: 1 });
    vault.seal();
    for (
      const [method, path] of [
        ["GET", "/v1/secret/data/s"],
        ["POST", "/v1/auth/kubernetes/login"],
        ["GET", "/v1/auth/token/lookup-self"],
        ["GET", "/v1/nomount/x"],
      ]
    ) {
      const answer = await call(vault, method, path, { token: vault.rootToken });
      assert.equal(answer.status, 503, path);
      assert.deepEqual(answer.body, { errors: ["Vault is sealed"] }, path);
    }
    vault.unseal();
    assert.equal(
      (await call(vault, "GET", "/v1/secret/data/s", { token: vault.rootToken })).status,
      200,
    );
  });
});

Deno.test("standby: 429, 473 for a performance standby, or a 307 redirect to the active node", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    vault.setStandby(true);
    const standby = await call(vault, "GET", "/v1/secret/data/x", { token });
    assert.equal(standby.status, 429);
    assert.deepEqual(standby.body, { errors: ["Vault is in standby mode"] });
    vault.setStandby(true, { performance: true });
    const perf = await call(vault, "GET", "/v1/secret/data/x", { token });
    assert.equal(perf.status, 473);
    assert.deepEqual(perf.body, { errors: ["Vault is in standby mode"] });
    vault.setStandby(true, { redirectTo: "https://active.vault:8200/" });
    const redirected = await fetch(`${vault.url}/v1/secret/data/x?version=2`, {
      headers: { "x-vault-token": token },
      redirect: "manual",
    });
    await redirected.body?.cancel();
    assert.equal(redirected.status, 307);
    assert.equal(
      redirected.headers.get("location"),
      "https://active.vault:8200/v1/secret/data/x?version=2",
    );
    vault.setStandby(false);
    assert.equal((await call(vault, "GET", "/v1/secret/data/x", { token })).status, 404);
  });
});

Deno.test("failNext: n injected failures (optionally filtered), then normal answers", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    vault.write("f", { a: 1 });
    vault.failNext(2, 500, "internal error");
    for (let i = 0; i < 2; i++) {
      const failed = await call(vault, "GET", "/v1/secret/data/f", { token });
      assert.equal(failed.status, 500);
      assert.deepEqual(failed.body, { errors: ["internal error"] });
    }
    assert.equal((await call(vault, "GET", "/v1/secret/data/f", { token })).status, 200);

    vault.failNext(1, 502);
    const bare = await call(vault, "GET", "/v1/sys/health");
    assert.equal(bare.status, 502, "health too, without a filter");
    assert.deepEqual(bare.body, { errors: [] });

    vault.failNext(1, 429, "rate limited", { path: "secret/data/", method: "POST" });
    assert.equal((await call(vault, "GET", "/v1/secret/data/f", { token })).status, 200);
    assert.equal((await call(vault, "GET", "/v1/sys/health")).status, 200);
    const limited = await call(vault, "POST", "/v1/secret/data/f", { token, body: { data: {} } });
    assert.equal(limited.status, 429);
    assert.deepEqual(limited.body, { errors: ["rate limited"] });
    assert.equal(vault.read("f")!.version, 1, "the failed write did nothing");
    vault.failNext(1, 503, "x", { path: /metadata/ });
    assert.equal((await call(vault, "GET", "/v1/secret/metadata/f", { token })).status, 503);

    vault.failNext(5, 500);
    vault.clearFaults();
    assert.equal((await call(vault, "GET", "/v1/secret/data/f", { token })).status, 200);
  });
});

Deno.test("dropConnections: the connection is destroyed without an answer", async () => {
  await withVault(async (vault) => {
    const token = vault.rootToken;
    // Each dropped request goes on a new connection: Deno's fetch silently retries a request
    // whose reused keep-alive connection closes (as Go's transport does for idempotent ones).
    const fresh = async (fn: (client: Deno.HttpClient) => Promise<unknown>) => {
      const client = Deno.createHttpClient({});
      try {
        return await fn(client);
      } finally {
        client.close();
      }
    };
    vault.dropConnections(1);
    await fresh((client) =>
      assert.rejects(call(vault, "GET", "/v1/secret/data/x", { token, client }))
    );
    assert.equal((await call(vault, "GET", "/v1/secret/data/x", { token })).status, 404);
    assert.deepEqual(vault.requests.map((r) => r.status), [undefined, 404]);

    vault.dropConnections(1, { path: "auth/" });
    assert.equal((await call(vault, "GET", "/v1/sys/health")).status, 200);
    await fresh((client) =>
      assert.rejects(call(vault, "POST", "/v1/auth/kubernetes/login", { body: {}, client }))
    );
    assert.equal(vault.loginAttempts.length, 0, "the dropped login was never processed");
    const retried = await call(vault, "POST", "/v1/auth/kubernetes/login", { body: {} });
    assert.equal(retried.status, 400, "the next one is answered");

    vault.dropConnections(2);
    for (let i = 0; i < 2; i++) {
      await fresh((client) => assert.rejects(call(vault, "GET", "/v1/sys/health", { client })));
    }
    assert.equal((await call(vault, "GET", "/v1/sys/health")).status, 200);
  });
});

Deno.test("setLatency delays answers; close() does not wait for delayed answers", async () => {
  const vault = await FakeVault.start();
  try {
    vault.setLatency(150);
    const started = performance.now();
    assert.equal((await call(vault, "GET", "/v1/sys/health")).status, 200);
    assert.ok(performance.now() - started >= 140, "delayed");
    vault.setLatency(0);
    const quick = performance.now();
    await call(vault, "GET", "/v1/sys/health");
    assert.ok(performance.now() - quick < 140);
    vault.setLatency(10_000);
    const pending = call(vault, "GET", "/v1/sys/health").catch((error) => error);
    await sleep(50);
    const closing = performance.now();
    await vault.close();
    assert.ok(performance.now() - closing < 2000, "close did not wait 10 s");
    assert.ok((await pending) instanceof Error, "the pending request failed");
  } finally {
    await vault.close();
  }
});

Deno.test("request log: method, path, query, namespace, token, body and status", async () => {
  await withVault(async (vault) => {
    await call(vault, "POST", "/v1/secret/data/log", {
      token: vault.rootToken,
      namespace: "ns1/",
      body: { options: { cas: 0 }, data: { a: 1 } },
    });
    await call(vault, "GET", "/v1/secret/data/log?version=1");
    assert.deepEqual(vault.requests, [
      {
        method: "POST",
        path: "/v1/secret/data/log",
        query: "",
        namespace: "ns1",
        token: vault.rootToken,
        body: { options: { cas: 0 }, data: { a: 1 } },
        status: 200,
      },
      {
        method: "GET",
        path: "/v1/secret/data/log",
        query: "version=1",
        namespace: "",
        token: undefined,
        status: 403,
      },
    ]);
  });
});

Deno.test("direct helpers: write with cas, read of any version, metadata", async () => {
  await withVault(async (vault) => {
    assert.equal(vault.write("h", { a: 1 }, { cas: 0 }), 1);
    assert.throws(() => vault.write("h", { a: 2 }, { cas: 0 }), /check-and-set/);
    assert.equal(vault.write("h", { a: 2 }, { cas: 1 }), 2);
    const data = { nested: { x: 1 } };
    vault.write("h", data);
    data.nested.x = 99;
    assert.deepEqual(vault.read("h")!.data, { nested: { x: 1 } }, "the helper keeps a copy");
    assert.deepEqual(vault.read("h", { version: 1 })!.data, { a: 1 });
    assert.equal(vault.read("h", { version: 7 }), undefined);
    const meta = vault.readMetadata("h")!;
    assert.equal(meta.currentVersion, 3);
    assert.match(meta.createdTime, RFC3339);
    assert.equal(vault.readMetadata("none"), undefined);
    assert.throws(() => vault.read("x", { mount: "nope" }), /no KV v2 mount/);
    const answer = await call(vault, "GET", "/v1/secret/data/h", { token: vault.rootToken });
    assert.equal(answer.body.data.metadata.version, 3);
  });
});

Deno.test("TLS: served over HTTPS with the given certificate", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fake-vault-tls-" });
  try {
    const root = await opensslRoot(dir);
    const key = join(dir, "vault.key");
    const csr = join(dir, "vault.csr");
    const crt = join(dir, "vault.crt");
    const ext = join(dir, "ext.cnf");
    await openssl([
      "genpkey",
      "-algorithm",
      "EC",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-out",
      key,
    ]);
    await openssl(["req", "-new", "-key", key, "-subj", "/CN=127.0.0.1", "-out", csr]);
    await Deno.writeTextFile(
      ext,
      "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n" +
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    );
    await openssl([
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      root.certPath,
      "-CAkey",
      root.keyPath,
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      ext,
      "-out",
      crt,
    ]);
    const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(root.certPath)] });
    try {
      await withVault(async (vault) => {
        assert.match(vault.url, /^https:\/\/127\.0\.0\.1:\d+$/);
        const health = await call(vault, "GET", "/v1/sys/health", { client });
        assert.equal(health.status, 200);
        const write = await call(vault, "POST", "/v1/secret/data/tls", {
          token: vault.rootToken,
          body: { data: { a: 1 } },
          client,
        });
        assert.equal(write.status, 200);
        await assert.rejects(fetch(`${vault.url}/v1/sys/health`), "an unknown CA is refused");
      }, {
        tls: { certPem: await Deno.readTextFile(crt), keyPem: await Deno.readTextFile(key) },
      });
    } finally {
      client.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
