/**
 * SPIFFE IDs (docs/compatibility.md#request-checks-and-status-codes): trust domain `[a-z0-9._-]+`, path segments `[A-Za-z0-9._-]+`
 * that are not `.` or `..`, at most 2048 bytes, and parse/toString round trips.
 */
import assert from "node:assert/strict";
import { SpiffeId, SpiffeIdError, validateTrustDomain } from "../../src/ca/spiffe.ts";

Deno.test("forWorkload builds Dapr's spiffe://<td>/ns/<namespace>/<app id>", () => {
  const id = SpiffeId.forWorkload("cluster.local", "default", "myapp");
  assert.equal(id.toString(), "spiffe://cluster.local/ns/default/myapp");
  assert.equal(id.trustDomain, "cluster.local");
  assert.equal(id.path, "/ns/default/myapp");
  assert.equal(
    `${SpiffeId.forWorkload("public", "dapr-system", "dapr-sentry")}`,
    "spiffe://public/ns/dapr-system/dapr-sentry",
  );
});

Deno.test("fromSegments joins any number of segments", () => {
  assert.equal(SpiffeId.fromSegments("td", "a").toString(), "spiffe://td/a");
  assert.equal(SpiffeId.fromSegments("td", "a", "b", "c", "d").path, "/a/b/c/d");
});

Deno.test("trust domains: lowercase letters, digits, '.', '_' and '-' only", async (t) => {
  for (const td of ["public", "cluster.local", "a", "0", "my_domain-1.example.com", "..."]) {
    await t.step(`accepts ${JSON.stringify(td)}`, () => {
      validateTrustDomain(td);
      assert.equal(SpiffeId.forWorkload(td, "ns1", "app").trustDomain, td);
    });
  }
  const bad = [
    "",
    "Cluster.local",
    "CLUSTER",
    "cluster local",
    "cluster/local",
    "cluster:8080",
    "user@cluster",
    "clüster",
    "cluster%2e",
    "cluster\n",
    "spiffe://cluster",
    ".",
    "..",
  ];
  for (const td of bad) {
    await t.step(`refuses ${JSON.stringify(td)}`, () => {
      assert.throws(() => validateTrustDomain(td), SpiffeIdError);
      assert.throws(() => SpiffeId.forWorkload(td, "default", "app"), (error: Error) => {
        assert.ok(error instanceof SpiffeIdError);
        assert.match(error.message, /trust domain/);
        assert.ok(error.message.includes(JSON.stringify(td)), error.message);
        return true;
      });
    });
  }
});

Deno.test("trust domains '.' and '..' are refused as dot segments (go-spiffe accepts them)", () => {
  for (const td of [".", ".."]) {
    assert.throws(() => validateTrustDomain(td), (error: Error) => {
      assert.ok(error instanceof SpiffeIdError);
      assert.equal(
        error.message,
        `trust domain ${JSON.stringify(td)} is invalid: it cannot be '.' or '..'`,
      );
      return true;
    });
    assert.throws(() => SpiffeId.parse(`spiffe://${td}/ns/default/app`), SpiffeIdError);
  }
});

Deno.test("path segments: letters of both cases, digits, '.', '_' and '-'", () => {
  const id = SpiffeId.fromSegments("td", "Ns", "My_App-1.v2", "...", ".hidden", "a..b");
  assert.equal(id.path, "/Ns/My_App-1.v2/.../.hidden/a..b");
});

Deno.test("path segments that are empty, '.', '..', or hold '/', spaces or other characters are refused", async (t) => {
  const bad = [
    "",
    ".",
    "..",
    "a/b",
    "/",
    "my app",
    " ",
    "app\t",
    "a%20b",
    "a?b",
    "a#b",
    "a:b",
    "é",
    "a@b",
    "a+b",
  ];
  for (const segment of bad) {
    await t.step(JSON.stringify(segment), () => {
      assert.throws(() => SpiffeId.forWorkload("td", "default", segment), (error: Error) => {
        assert.ok(error instanceof SpiffeIdError);
        assert.match(error.message, /path segment/);
        assert.ok(error.message.includes(JSON.stringify(segment)), error.message);
        return true;
      });
      assert.throws(() => SpiffeId.forWorkload("td", segment, "app"), SpiffeIdError);
    });
  }
});

Deno.test("the whole ID may be at most 2048 bytes", () => {
  const prefix = "spiffe://td/";
  const fits = "a".repeat(2048 - prefix.length);
  const id = SpiffeId.fromSegments("td", fits);
  assert.equal(new TextEncoder().encode(id.toString()).length, 2048);
  assert.throws(() => SpiffeId.fromSegments("td", fits + "a"), /2048 bytes/);
  // Many segments add up too: 12 + 1023 * 2 = 2058 bytes.
  const many = Array.from({ length: 1023 }, () => "a");
  assert.throws(() => SpiffeId.fromSegments("td", ...many), SpiffeIdError);
  // Through parse as well.
  assert.equal(SpiffeId.parse(prefix + fits).toString(), prefix + fits);
  assert.throws(() => SpiffeId.parse(prefix + fits + "a"), SpiffeIdError);
});

Deno.test("parse and toString round trip", () => {
  for (
    const uri of [
      "spiffe://cluster.local/ns/default/myapp",
      "spiffe://public/ns/dapr-system/dapr-sentry",
      "spiffe://a/b",
      "spiffe://td/A_b-C.d/...",
    ]
  ) {
    const id = SpiffeId.parse(uri);
    assert.equal(id.toString(), uri);
    assert.equal(SpiffeId.parse(id.toString()).toString(), uri);
    assert.equal(`spiffe://${id.trustDomain}${id.path}`, uri);
  }
  const parsed = SpiffeId.parse("spiffe://cluster.local/ns/default/myapp");
  assert.equal(parsed.trustDomain, "cluster.local");
  assert.equal(parsed.path, "/ns/default/myapp");
  assert.equal(
    parsed.toString(),
    SpiffeId.forWorkload("cluster.local", "default", "myapp").toString(),
  );
});

Deno.test("parse refuses what is not a valid spiffe URI", async (t) => {
  const bad = [
    "",
    "myapp",
    "spiffe:",
    "spiffe://",
    "spiffe://td",
    "spiffe://td/",
    "spiffe://td/a/",
    "spiffe://td//a",
    "spiffe://td/a/./b",
    "spiffe://td/a/../b",
    "spiffe:///a",
    "spiffe://TD/a",
    "SPIFFE://td/a",
    "https://td/a",
    "spiffe://td:443/a",
    "spiffe://user@td/a",
    "spiffe://td/a?query",
    "spiffe://td/a#fragment",
    "spiffe://td/a b",
    " spiffe://td/a",
    "spiffe://td/a\n",
  ];
  for (const uri of bad) {
    await t.step(JSON.stringify(uri), () => {
      assert.throws(() => SpiffeId.parse(uri), SpiffeIdError);
    });
  }
});

Deno.test({
  name: "fromSegments never yields an ID that parse refuses",
  fn() {
    let id: SpiffeId | undefined;
    try {
      id = SpiffeId.fromSegments("td");
    } catch (error) {
      assert.ok(error instanceof SpiffeIdError);
      return;
    }
    assert.equal(SpiffeId.parse(id.toString()).toString(), id.toString());
  },
});
