/**
 * The fake Kubernetes API server (tests/fakes/kube-apiserver.ts) proven against the real
 * `kubectl` (create / get / apply / apply --server-side / patch / edit / replace / delete /
 * wait, over HTTPS with the written kubeconfig) and over raw HTTP for what sentry relies on:
 * exact Status bodies, optimistic concurrency (409 Conflict), watches in order after a
 * resourceVersion, 410 Expired, TokenReview, 401, and the fault injection helpers.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { FakeKubeApiServer, type FakeKubeApiServerOptions } from "./kube-apiserver.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

interface Context {
  server: FakeKubeApiServer;
  client?: Deno.HttpClient;
  dir: string;
  kubeconfig: string;
}

/** Runs `fn` against a fresh server and always closes it (and the HTTP client) afterwards. */
async function withServer(
  fn: (ctx: Context) => Promise<void>,
  options: FakeKubeApiServerOptions = {},
): Promise<void> {
  const server = await FakeKubeApiServer.start(options);
  const client = server.caPem ? Deno.createHttpClient({ caCerts: [server.caPem] }) : undefined;
  const dir = await Deno.makeTempDir({ prefix: "fake-kube-test-" });
  try {
    const kubeconfig = await server.writeKubeconfig(join(dir, "kubeconfig"));
    await fn({ server, client, dir, kubeconfig });
  } finally {
    client?.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
}

interface Answer {
  status: number;
  body: Json;
  headers: Headers;
}

/** One HTTP request; the body is sent as JSON unless it is a string. */
async function api(
  ctx: Context,
  method: string,
  path: string,
  body?: unknown,
  options: { token?: string | null; contentType?: string } = {},
): Promise<Answer> {
  const token = options.token === undefined ? ctx.server.adminToken : options.token;
  const headers: Record<string, string> = { accept: "application/json" };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = options.contentType ?? "application/json";
  const response = await fetch(`${ctx.server.url}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    client: ctx.client,
  });
  const text = await response.text();
  return {
    status: response.status,
    body: text ? JSON.parse(text) : undefined,
    headers: response.headers,
  };
}

/** An open watch: reads newline-delimited events one at a time. */
interface WatchStream {
  /** The next event, or null when the server ended the stream. */
  next(timeoutMs?: number): Promise<Json | null>;
  cancel(): Promise<void>;
}

async function watch(ctx: Context, path: string): Promise<WatchStream> {
  const response = await fetch(`${ctx.server.url}${path}`, {
    headers: { authorization: `Bearer ${ctx.server.adminToken}` },
    client: ctx.client,
  });
  assert.equal(response.status, 200);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let done = false;
  return {
    async next(timeoutMs = 5_000) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("no watch event in time")), timeoutMs);
      });
      try {
        while (!buffer.includes("\n")) {
          if (done) return null;
          const chunk = await Promise.race([reader.read(), timeout]);
          if (chunk.done) done = true;
          else buffer += chunk.value;
        }
      } finally {
        clearTimeout(timer);
      }
      const newline = buffer.indexOf("\n");
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      return JSON.parse(line);
    },
    async cancel() {
      if (!done) await reader.cancel();
      done = true;
    },
  };
}

interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

function kubectlCommand(ctx: Context, args: string[], env: Record<string, string> = {}) {
  return new Deno.Command("kubectl", {
    args: ["--kubeconfig", ctx.kubeconfig, "--cache-dir", join(ctx.dir, "cache"), ...args],
    env: { HOME: ctx.dir, ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

async function kubectl(
  ctx: Context,
  args: string[],
  env: Record<string, string> = {},
): Promise<KubectlResult> {
  const output = await kubectlCommand(ctx, args, env).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** kubectl that must succeed; returns its stdout. */
async function kubectlOk(
  ctx: Context,
  args: string[],
  env: Record<string, string> = {},
): Promise<string> {
  const result = await kubectl(ctx, args, env);
  assert.equal(result.code, 0, `kubectl ${args.join(" ")} failed:\n${result.stderr}`);
  return result.stdout;
}

const CONFIGURATION_YAML = `apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprsystem
spec:
  mtls:
    workloadCertTTL: 24h
`;

const CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

const NS = "/api/v1/namespaces/dapr-system";

// ---------------------------------------------------------------------------------------------
// With the real kubectl

Deno.test("kubectl: create secret generic, get -o json (base64 data, resourceVersion), NotFound, AlreadyExists", async () => {
  await withServer(async (ctx) => {
    const created = await kubectlOk(ctx, [
      "create",
      "secret",
      "generic",
      "dapr-trust-bundle",
      "-n",
      "dapr-system",
      `--from-literal=ca.crt=${CA_PEM}`,
      "--from-literal=issuer.crt=issuer",
    ]);
    assert.match(created, /secret\/dapr-trust-bundle created/);

    const secret = JSON.parse(
      await kubectlOk(ctx, [
        "get",
        "secret",
        "dapr-trust-bundle",
        "-n",
        "dapr-system",
        "-o",
        "json",
      ]),
    );
    assert.equal(secret.kind, "Secret");
    assert.equal(secret.type, "Opaque");
    assert.equal(secret.data["ca.crt"], Buffer.from(CA_PEM).toString("base64"));
    assert.equal(Buffer.from(secret.data["issuer.crt"], "base64").toString(), "issuer");
    assert.match(secret.metadata.resourceVersion, /^\d+$/);
    assert.match(secret.metadata.uid, /^[0-9a-f-]{36}$/);
    assert.equal(secret.metadata.namespace, "dapr-system");
    // The same object through the direct helper.
    assert.deepEqual(ctx.server.get("secrets", "dapr-system", "dapr-trust-bundle"), secret);

    // Default (Table) output.
    const table = await kubectlOk(ctx, ["get", "secrets", "-n", "dapr-system"]);
    assert.match(table, /^NAME\s+TYPE\s+DATA\s+AGE\n/);
    assert.match(table, /dapr-trust-bundle\s+Opaque\s+2\s+\d+s/);

    const missing = await kubectl(ctx, ["get", "secret", "nope", "-n", "dapr-system"]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /Error from server \(NotFound\): secrets "nope" not found/);

    const again = await kubectl(ctx, [
      "create",
      "secret",
      "generic",
      "dapr-trust-bundle",
      "-n",
      "dapr-system",
      "--from-literal=ca.crt=x",
    ]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /secrets "dapr-trust-bundle" already exists/);
    const conflicting = ctx.server.requests.findLast((request) => request.method === "POST")!;
    assert.equal(conflicting.status, 409);
    // kubectl's typed client sends protobuf; the fake decodes it.
    assert.equal(conflicting.contentType, "application/vnd.kubernetes.protobuf");
  });
});

Deno.test("kubectl: create configmap keeps ca.crt as plain text; create serviceaccount", async () => {
  await withServer(async (ctx) => {
    await kubectlOk(ctx, [
      "create",
      "configmap",
      "dapr-trust-bundle",
      "-n",
      "dapr-system",
      `--from-literal=ca.crt=${CA_PEM}`,
    ]);
    const value = await kubectlOk(ctx, [
      "get",
      "cm",
      "dapr-trust-bundle",
      "-n",
      "dapr-system",
      "-o",
      "jsonpath={.data.ca\\.crt}",
    ]);
    assert.equal(value, CA_PEM);
    assert.equal(
      ctx.server.get("configmaps", "dapr-system", "dapr-trust-bundle")?.data?.["ca.crt" as never],
      CA_PEM,
    );
    const table = await kubectlOk(ctx, ["get", "configmaps", "-n", "dapr-system"]);
    assert.match(table, /dapr-trust-bundle\s+1\s+\d+s/);

    await kubectlOk(ctx, ["create", "serviceaccount", "dapr-sentry", "-n", "dapr-system"]);
    assert.equal(ctx.server.list("serviceaccounts", "dapr-system").length, 1);
    assert.match(await kubectlOk(ctx, ["get", "sa", "-A"]), /dapr-system\s+dapr-sentry\s+0/);
  });
});

Deno.test("kubectl: apply a Configuration, get -o yaml, patch --type merge, re-apply, edit, delete", async () => {
  await withServer(async (ctx) => {
    const file = join(ctx.dir, "configuration.yaml");
    await Deno.writeTextFile(file, CONFIGURATION_YAML);
    assert.match(
      await kubectlOk(ctx, ["apply", "-f", file]),
      /configuration.dapr.io\/daprsystem created/,
    );
    const first = parseYaml(
      await kubectlOk(ctx, ["get", "configurations.dapr.io", "daprsystem", "-o", "yaml"]),
    );
    assert.equal(first.apiVersion, "dapr.io/v1alpha1");
    assert.equal(first.kind, "Configuration");
    assert.equal(first.metadata.namespace, "default");
    assert.equal(first.metadata.generation, 1);
    assert.equal(first.spec.mtls.workloadCertTTL, "24h");
    assert.ok(first.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]);

    assert.match(
      await kubectlOk(ctx, [
        "patch",
        "configuration",
        "daprsystem",
        "--type",
        "merge",
        "-p",
        '{"spec":{"mtls":{"workloadCertTTL":"25s"}}}',
      ]),
      /configuration.dapr.io\/daprsystem patched/,
    );
    const patched = ctx.server.get("configurations", "default", "daprsystem")!;
    assert.deepEqual(patched.spec, { mtls: { workloadCertTTL: "25s" } });
    assert.equal(patched.metadata?.generation, 2);
    assert.ok(Number(patched.metadata?.resourceVersion) > Number(first.metadata.resourceVersion));
    const patchRequest = ctx.server.requests.find((request) => request.method === "PATCH")!;
    assert.equal(patchRequest.contentType, "application/merge-patch+json");

    // A patch that changes nothing is a no-op: same resourceVersion, same generation.
    await kubectlOk(ctx, [
      "patch",
      "configuration",
      "daprsystem",
      "--type",
      "merge",
      "-p",
      '{"spec":{"mtls":{"workloadCertTTL":"25s"}}}',
    ]);
    assert.equal(
      ctx.server.get("configurations", "default", "daprsystem")!.metadata?.resourceVersion,
      patched.metadata?.resourceVersion,
    );

    // Re-applying the file restores 24h (three-way merge patch from the last-applied annotation).
    assert.match(await kubectlOk(ctx, ["apply", "-f", file]), /daprsystem configured/);
    assert.equal(
      (ctx.server.get("configurations", "default", "daprsystem")!.spec as Json).mtls
        .workloadCertTTL,
      "24h",
    );
    assert.match(await kubectlOk(ctx, ["apply", "-f", file]), /daprsystem unchanged/);

    // kubectl edit with a scripted editor.
    const editor = join(ctx.dir, "editor.sh");
    await Deno.writeTextFile(
      editor,
      '#!/bin/sh\nsed -i "s/workloadCertTTL: 24h/workloadCertTTL: 1h/" "$1"\n',
    );
    await Deno.chmod(editor, 0o755);
    assert.match(
      await kubectlOk(ctx, ["edit", "configuration", "daprsystem"], { KUBE_EDITOR: editor }),
      /daprsystem edited/,
    );
    assert.equal(
      await kubectlOk(ctx, [
        "get",
        "configuration",
        "daprsystem",
        "-o",
        "jsonpath={.spec.mtls.workloadCertTTL}",
      ]),
      "1h",
    );
    assert.match(await kubectlOk(ctx, ["get", "configurations"]), /daprsystem\s+\d+s/);

    assert.match(
      await kubectlOk(ctx, ["delete", "configuration", "daprsystem"]),
      /configuration.dapr.io "daprsystem" deleted/,
    );
    assert.equal(ctx.server.get("configurations", "default", "daprsystem"), undefined);
  });
});

Deno.test("kubectl: apply --server-side, strategic and JSON patches, replace, label selector, delete", async () => {
  await withServer(async (ctx) => {
    const file = join(ctx.dir, "secret.yaml");
    await Deno.writeTextFile(
      file,
      "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s1\n  namespace: ns1\n  labels: {app: sentry}\n" +
        "stringData:\n  ca.crt: hello\n",
    );
    assert.match(
      await kubectlOk(ctx, ["apply", "--server-side", "-f", file]),
      /secret\/s1 serverside-applied/,
    );
    const applied = ctx.server.requests.find((request) => request.method === "PATCH")!;
    assert.equal(applied.contentType, "application/apply-patch+yaml");
    assert.equal(applied.status, 201);
    // stringData is folded into data, as the real server does.
    const stored = ctx.server.get("secrets", "ns1", "s1")!;
    assert.deepEqual(stored.data, { "ca.crt": "aGVsbG8=" });
    assert.equal(stored.stringData, undefined);

    await kubectlOk(ctx, ["patch", "secret", "s1", "-n", "ns1", "-p", '{"data":{"x":"eQ=="}}']);
    assert.equal(
      ctx.server.requests.findLast((request) => request.method === "PATCH")!.contentType,
      "application/strategic-merge-patch+json",
    );
    assert.deepEqual(ctx.server.get("secrets", "ns1", "s1")!.data, {
      "ca.crt": "aGVsbG8=",
      x: "eQ==",
    });
    await kubectlOk(ctx, [
      "patch",
      "secret",
      "s1",
      "-n",
      "ns1",
      "--type",
      "json",
      "-p",
      '[{"op":"remove","path":"/data/x"}]',
    ]);
    assert.deepEqual(ctx.server.get("secrets", "ns1", "s1")!.data, { "ca.crt": "aGVsbG8=" });

    assert.match(await kubectlOk(ctx, ["replace", "-f", file]), /secret\/s1 replaced/);
    assert.equal(
      ctx.server.requests.findLast((request) => request.method === "PUT")!.status,
      200,
    );
    await kubectlOk(ctx, [
      "create",
      "secret",
      "generic",
      "other",
      "-n",
      "ns1",
      "--from-literal=a=b",
    ]);
    const selected = await kubectlOk(ctx, [
      "get",
      "secrets",
      "-n",
      "ns1",
      "-l",
      "app=sentry",
      "-o",
      "name",
    ]);
    assert.equal(selected, "secret/s1\n");
    assert.equal(
      await kubectlOk(ctx, ["get", "secrets", "-A", "-o", "name"]),
      "secret/other\nsecret/s1\n",
    );

    assert.match(
      await kubectlOk(ctx, ["delete", "secret", "s1", "-n", "ns1"]),
      /secret "s1" deleted/,
    );
    assert.equal(ctx.server.get("secrets", "ns1", "s1"), undefined);
    const deleted = await kubectl(ctx, ["delete", "secret", "s1", "-n", "ns1"]);
    assert.match(deleted.stderr, /secrets "s1" not found/);
  });
});

Deno.test("kubectl: wait --for=jsonpath (list + watch) sees a change made with put(); wait --for=delete", async () => {
  await withServer(async (ctx) => {
    ctx.server.put("configmaps", "default", {
      metadata: { name: "dapr-trust-bundle" },
      data: { "ca.crt": "old" },
    });
    const waiting = kubectlCommand(ctx, [
      "wait",
      "--for=jsonpath={.data.ca\\.crt}=new",
      "configmap/dapr-trust-bundle",
      "--timeout=20s",
    ]).spawn();
    await ctx.server.waitForWatches(1, "configmaps");
    const watchRequest = ctx.server.requests.find((request) => request.watch)!;
    assert.equal(watchRequest.query.fieldSelector, "metadata.name=dapr-trust-bundle");
    ctx.server.put("configmaps", "default", {
      metadata: { name: "dapr-trust-bundle" },
      data: { "ca.crt": "new" },
    });
    const output = await waiting.output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    assert.match(new TextDecoder().decode(output.stdout), /condition met/);

    const deleting = kubectlCommand(ctx, [
      "wait",
      "--for=delete",
      "configmap/dapr-trust-bundle",
      "--timeout=20s",
    ]).spawn();
    await ctx.server.waitForWatches(1, "configmaps");
    assert.equal(ctx.server.remove("configmaps", "default", "dapr-trust-bundle"), true);
    const deleted = await deleting.output();
    assert.equal(deleted.code, 0, new TextDecoder().decode(deleted.stderr));
    assert.match(new TextDecoder().decode(deleted.stdout), /condition met/);
  });
});

Deno.test("kubectl: get -w --output-watch-events streams the fake's watch events", async () => {
  await withServer(async (ctx) => {
    ctx.server.put("cm", "dapr-system", { metadata: { name: "a" }, data: { "ca.crt": "1" } });
    const child = kubectlCommand(ctx, [
      "get",
      "configmaps",
      "-n",
      "dapr-system",
      "-w",
      "--output-watch-events",
      "-o",
      "json",
    ]).spawn();
    const events: Json[] = [];
    let text = "";
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      await ctx.server.waitForWatches(1, "configmaps");
      ctx.server.put("cm", "dapr-system", { metadata: { name: "a" }, data: { "ca.crt": "2" } });
      ctx.server.remove("cm", "dapr-system", "a");
      // kubectl prints one JSON document per line and event.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<{ done: true; value: undefined }>((resolve) => {
        timer = setTimeout(() => resolve({ done: true, value: undefined }), 10_000);
      });
      while (events.length < 3) {
        const chunk = await Promise.race([reader.read(), timeout]);
        if (chunk.done) break;
        text += chunk.value;
        const lines = text.split("\n");
        text = lines.pop()!;
        for (const line of lines) events.push(JSON.parse(line));
      }
      clearTimeout(timer);
    } finally {
      child.kill();
      await reader.cancel();
      await child.stderr.cancel();
      await child.status;
    }
    assert.deepEqual(
      events.map((event) => [event.type, event.object.data?.["ca.crt"]]),
      [["ADDED", "1"], ["MODIFIED", "2"], ["DELETED", "2"]],
    );
  });
});

Deno.test("kubectl: create / get / delete namespace (deleting it deletes its objects)", async () => {
  await withServer(async (ctx) => {
    assert.match(
      await kubectlOk(ctx, ["create", "namespace", "dapr-system"]),
      /namespace\/dapr-system created/,
    );
    await kubectlOk(ctx, ["create", "configmap", "c", "-n", "dapr-system", "--from-literal=a=b"]);
    assert.match(await kubectlOk(ctx, ["get", "ns", "dapr-system"]), /dapr-system\s+Active/);
    const namespace = ctx.server.get("namespaces", "", "dapr-system")!;
    assert.equal(namespace.metadata?.namespace, undefined, "cluster-scoped");
    assert.deepEqual(namespace.spec, { finalizers: ["kubernetes"] });
    assert.match(
      await kubectlOk(ctx, ["delete", "namespace", "dapr-system"]),
      /namespace "dapr-system" deleted/,
    );
    assert.deepEqual(ctx.server.list("configmaps", "dapr-system"), []);
    const missing = await kubectl(ctx, ["get", "configmap", "c", "-n", "dapr-system"]);
    assert.match(missing.stderr, /namespaces "dapr-system" not found/);
  });
});

Deno.test("kubectl: a wrong token is Unauthorized; plain HTTP works too", async () => {
  await withServer(async (ctx) => {
    await ctx.server.writeKubeconfig(ctx.kubeconfig, { token: "wrong", namespace: "dapr-system" });
    const refused = await kubectl(ctx, ["get", "secrets"]);
    assert.notEqual(refused.code, 0);
    // client-go's wording of a 401 from discovery.
    assert.match(refused.stderr, /You must be logged in to the server/);
    assert.ok(ctx.server.requests.some((request) => request.status === 401));
  });
  await withServer(async (ctx) => {
    assert.match(ctx.server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(ctx.server.caPem, "");
    await ctx.server.writeKubeconfig(ctx.kubeconfig, { namespace: "dapr-system" });
    await kubectlOk(ctx, ["create", "configmap", "c", "--from-literal=a=b"]);
    assert.ok(ctx.server.get("configmaps", "dapr-system", "c"));
    // client-go sends no bearer token over plain HTTP, hence no authentication by default there.
    assert.ok(ctx.server.requests.every((request) => request.token === null));
    // The namespace was created on first use, next to the usual ones.
    assert.equal(
      await kubectlOk(ctx, ["get", "namespaces", "-o", "name"]),
      "namespace/dapr-system\nnamespace/default\nnamespace/kube-node-lease\n" +
        "namespace/kube-public\nnamespace/kube-system\n",
    );
  }, { tls: false });
});

// ---------------------------------------------------------------------------------------------
// Raw HTTP

Deno.test("http: 401 Unauthorized without or with a wrong token; /version is open", async () => {
  await withServer(async (ctx) => {
    const unauthorized = {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: "Unauthorized",
      reason: "Unauthorized",
      code: 401,
    };
    for (const token of [null, "nope"]) {
      const answer = await api(ctx, "GET", `${NS}/secrets`, undefined, { token });
      assert.equal(answer.status, 401);
      assert.deepEqual(answer.body, unauthorized);
    }
    const version = await api(ctx, "GET", "/version", undefined, { token: null });
    assert.equal(version.status, 200);
    assert.equal(version.body.major, "1");
    ctx.server.addToken("second");
    assert.equal(
      (await api(ctx, "GET", `${NS}/secrets`, undefined, { token: "second" })).status,
      200,
    );
    ctx.server.removeToken("second");
    assert.equal(
      (await api(ctx, "GET", `${NS}/secrets`, undefined, { token: "second" })).status,
      401,
    );
  }, { tokens: ["first"] });
});

Deno.test("http: discovery lists the resources kubectl needs", async () => {
  await withServer(async (ctx) => {
    const core = (await api(ctx, "GET", "/api/v1")).body;
    assert.equal(core.kind, "APIResourceList");
    const byName = Object.fromEntries(core.resources.map((r: Json) => [r.name, r]));
    assert.deepEqual(Object.keys(byName).sort(), [
      "configmaps",
      "namespaces",
      "pods",
      "secrets",
      "serviceaccounts",
    ]);
    assert.deepEqual(byName.configmaps.shortNames, ["cm"]);
    assert.equal(byName.secrets.kind, "Secret");
    assert.equal(byName.secrets.singularName, "secret");
    assert.equal(byName.secrets.namespaced, true);
    assert.ok(byName.secrets.verbs.includes("watch"));
    const groups = (await api(ctx, "GET", "/apis")).body;
    assert.equal(groups.kind, "APIGroupList");
    assert.deepEqual(groups.groups.map((g: Json) => g.name), ["authentication.k8s.io", "dapr.io"]);
    const dapr = (await api(ctx, "GET", "/apis/dapr.io/v1alpha1")).body;
    assert.equal(dapr.resources[0].kind, "Configuration");
    const auth = (await api(ctx, "GET", "/apis/authentication.k8s.io/v1")).body;
    assert.deepEqual(auth.resources[0].verbs, ["create"]);
    const unknown = await api(ctx, "GET", "/apis/apps/v1");
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.message, "the server could not find the requested resource");
    assert.equal((await api(ctx, "GET", "/openapi/v2")).status, 404);
  });
});

Deno.test("http: GET 404, POST 201 then 409 AlreadyExists, LIST shape, DELETE Status Success", async () => {
  await withServer(async (ctx) => {
    const missing = await api(ctx, "GET", `${NS}/secrets/x`);
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.body, {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: 'secrets "x" not found',
      reason: "NotFound",
      details: { name: "x", kind: "secrets" },
      code: 404,
    });
    const crMissing = await api(
      ctx,
      "GET",
      "/apis/dapr.io/v1alpha1/namespaces/ns/configurations/c",
    );
    assert.equal(crMissing.body.message, 'configurations.dapr.io "c" not found');
    assert.deepEqual(crMissing.body.details, {
      name: "c",
      group: "dapr.io",
      kind: "configurations",
    });

    const body = { apiVersion: "v1", kind: "Secret", metadata: { name: "x" }, data: { a: "Yg==" } };
    const created = await api(ctx, "POST", `${NS}/secrets`, body);
    assert.equal(created.status, 201);
    assert.equal(created.body.metadata.namespace, "dapr-system");
    assert.equal(created.body.metadata.resourceVersion, ctx.server.resourceVersion);
    assert.ok(created.body.metadata.creationTimestamp);
    assert.equal(created.body.metadata.generation, undefined);

    const duplicate = await api(ctx, "POST", `${NS}/secrets`, body);
    assert.equal(duplicate.status, 409);
    assert.deepEqual(duplicate.body, {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: 'secrets "x" already exists',
      reason: "AlreadyExists",
      details: { name: "x", kind: "secrets" },
      code: 409,
    });

    const list = await api(ctx, "GET", `${NS}/secrets`);
    assert.equal(list.body.kind, "SecretList");
    assert.equal(list.body.apiVersion, "v1");
    assert.equal(list.body.metadata.resourceVersion, ctx.server.resourceVersion);
    assert.equal(list.body.items.length, 1);
    assert.equal(list.body.items[0].metadata.name, "x");

    const invalid = await api(ctx, "POST", `${NS}/secrets`, { metadata: { name: "Bad_Name" } });
    assert.equal(invalid.status, 422);
    assert.equal(invalid.body.reason, "Invalid");
    assert.match(
      invalid.body.message,
      /^Secret "Bad_Name" is invalid: metadata.name: Invalid value/,
    );
    const withVersion = await api(ctx, "POST", `${NS}/secrets`, {
      metadata: { name: "y", resourceVersion: "5" },
    });
    assert.equal(withVersion.status, 400);
    assert.equal(
      withVersion.body.message,
      "resourceVersion should not be set on objects to be created",
    );

    const deleted = await api(ctx, "DELETE", `${NS}/secrets/x`);
    assert.equal(deleted.status, 200);
    assert.equal(deleted.body.kind, "Status");
    assert.equal(deleted.body.status, "Success");
    assert.deepEqual(deleted.body.details, {
      name: "x",
      kind: "secrets",
      uid: created.body.metadata.uid,
    });
    assert.equal((await api(ctx, "DELETE", `${NS}/secrets/x`)).status, 404);
  });
});

Deno.test("http: LIST paginates with limit/continue and filters with selectors", async () => {
  await withServer(async (ctx) => {
    for (const name of ["a", "b", "c"]) {
      ctx.server.put("pods", "ns", {
        metadata: { name, labels: { tier: name === "b" ? "x" : "y" } },
      });
    }
    ctx.server.put("pods", "other", { metadata: { name: "z" } });
    const page = await api(ctx, "GET", "/api/v1/namespaces/ns/pods?limit=2");
    assert.deepEqual(page.body.items.map((pod: Json) => pod.metadata.name), ["a", "b"]);
    assert.equal(page.body.metadata.remainingItemCount, 1);
    const rest = await api(
      ctx,
      "GET",
      `/api/v1/namespaces/ns/pods?limit=2&continue=${
        encodeURIComponent(page.body.metadata.continue)
      }`,
    );
    assert.deepEqual(rest.body.items.map((pod: Json) => pod.metadata.name), ["c"]);
    assert.equal(rest.body.metadata.continue, undefined);
    const byLabel = await api(ctx, "GET", "/api/v1/namespaces/ns/pods?labelSelector=tier%3Dy");
    assert.deepEqual(byLabel.body.items.map((pod: Json) => pod.metadata.name), ["a", "c"]);
    const notIn = await api(ctx, "GET", "/api/v1/pods?labelSelector=tier%20notin%20(y)");
    assert.deepEqual(notIn.body.items.map((pod: Json) => pod.metadata.name), ["b", "z"]);
    const byField = await api(ctx, "GET", "/api/v1/pods?fieldSelector=metadata.name%3Dz");
    assert.deepEqual(byField.body.items.map((pod: Json) => pod.metadata.namespace), ["other"]);
    // Pods get the real defaults sentry's validator reads.
    assert.equal(
      ctx.server.get("pods", "ns", "a")!.spec?.["serviceAccountName" as never],
      "default",
    );
  });
});

Deno.test("http: PUT with a stale resourceVersion is 409 Conflict; current one updates; no-op keeps it", async () => {
  await withServer(async (ctx) => {
    const path = `${NS}/secrets/dapr-trust-bundle`;
    const created = await api(ctx, "POST", `${NS}/secrets`, {
      metadata: { name: "dapr-trust-bundle" },
      data: { "ca.crt": "YQ==" },
    });
    const stale = created.body.metadata.resourceVersion;
    const first = await api(ctx, "PUT", path, {
      ...created.body,
      data: { "ca.crt": "Yg==" },
    });
    assert.equal(first.status, 200);
    assert.equal(Number(first.body.metadata.resourceVersion), Number(stale) + 1);
    assert.equal(first.body.metadata.uid, created.body.metadata.uid);

    const conflict = await api(ctx, "PUT", path, { ...created.body, data: { "ca.crt": "Yw==" } });
    assert.equal(conflict.status, 409);
    assert.deepEqual(conflict.body, {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: 'Operation cannot be fulfilled on secrets "dapr-trust-bundle": the object has ' +
        "been modified; please apply your changes to the latest version and try again",
      reason: "Conflict",
      details: { name: "dapr-trust-bundle", kind: "secrets" },
      code: 409,
    });
    assert.equal(
      ctx.server.get("secrets", "dapr-system", "dapr-trust-bundle")!.data!["ca.crt" as never],
      "Yg==",
    );

    // Same content again: no write, resourceVersion unchanged.
    const again = await api(ctx, "PUT", path, first.body);
    assert.equal(again.body.metadata.resourceVersion, first.body.metadata.resourceVersion);
    // No resourceVersion: unconditional update.
    const { resourceVersion: _rv, ...metadata } = first.body.metadata;
    const unconditional = await api(ctx, "PUT", path, { ...first.body, metadata, data: {} });
    assert.equal(unconditional.status, 200);
    assert.equal(Number(unconditional.body.metadata.resourceVersion), Number(stale) + 2);

    const absent = await api(ctx, "PUT", `${NS}/secrets/absent`, { metadata: { name: "absent" } });
    assert.equal(absent.status, 404);
    const renamed = await api(ctx, "PUT", path, { metadata: { name: "other" } });
    assert.equal(renamed.status, 400);

    // A merge patch carrying a stale resourceVersion is a conflict too.
    const patchConflict = await api(
      ctx,
      "PATCH",
      path,
      { metadata: { resourceVersion: stale }, data: { x: "eA==" } },
      { contentType: "application/merge-patch+json" },
    );
    assert.equal(patchConflict.status, 409);
    assert.equal(patchConflict.body.reason, "Conflict");
    const patched = await api(ctx, "PATCH", path, { data: { x: "eA==" } }, {
      contentType: "application/strategic-merge-patch+json",
    });
    assert.deepEqual(patched.body.data, { x: "eA==" });
    const unsupported = await api(ctx, "PATCH", path, {}, { contentType: "application/json" });
    assert.equal(unsupported.status, 415);

    // DELETE with a wrong uid precondition.
    const precondition = await api(ctx, "DELETE", path, {
      kind: "DeleteOptions",
      apiVersion: "v1",
      preconditions: { uid: "00000000-0000-0000-0000-000000000000" },
    });
    assert.equal(precondition.status, 409);
    assert.match(precondition.body.message, /Precondition failed: UID in precondition/);
  });
});

Deno.test("http: Configuration custom resource keeps generation; DELETE returns the object", async () => {
  await withServer(async (ctx) => {
    const base = "/apis/dapr.io/v1alpha1/namespaces/dapr-system/configurations";
    const created = await api(ctx, "POST", base, {
      apiVersion: "dapr.io/v1alpha1",
      kind: "Configuration",
      metadata: { name: "daprsystem" },
      spec: { mtls: { workloadCertTTL: "24h" } },
    });
    assert.equal(created.status, 201);
    assert.equal(created.body.metadata.generation, 1);
    const labelled = await api(ctx, "PATCH", `${base}/daprsystem`, {
      metadata: { labels: { a: "b" } },
    }, {
      contentType: "application/merge-patch+json",
    });
    assert.equal(labelled.body.metadata.generation, 1, "metadata changes keep the generation");
    const changed = await api(ctx, "PATCH", `${base}/daprsystem`, [
      { op: "replace", path: "/spec/mtls/workloadCertTTL", value: "1h" },
    ], { contentType: "application/json-patch+json" });
    assert.equal(changed.body.metadata.generation, 2);
    const badPatch = await api(ctx, "PATCH", `${base}/daprsystem`, [
      { op: "remove", path: "/spec/nope" },
    ], { contentType: "application/json-patch+json" });
    assert.equal(badPatch.status, 422);
    assert.match(badPatch.body.message, /doc is missing path: "\/spec\/nope"/);
    const list = await api(ctx, "GET", base);
    assert.equal(list.body.kind, "ConfigurationList");
    assert.equal(list.body.apiVersion, "dapr.io/v1alpha1");
    const deleted = await api(ctx, "DELETE", `${base}/daprsystem`);
    assert.equal(deleted.body.kind, "Configuration");
    assert.equal(deleted.body.spec.mtls.workloadCertTTL, "1h");
  });
});

Deno.test("http: watch streams ADDED/MODIFIED/DELETED in order after a resourceVersion", async () => {
  await withServer(async (ctx) => {
    const created = await api(ctx, "POST", `${NS}/configmaps`, {
      metadata: { name: "dapr-trust-bundle" },
      data: { "ca.crt": "1" },
    });
    const start = created.body.metadata.resourceVersion;
    // Two changes before the watch starts are replayed from the history.
    ctx.server.put("configmaps", "dapr-system", {
      metadata: { name: "dapr-trust-bundle" },
      data: { "ca.crt": "2" },
    });
    ctx.server.put("configmaps", "dapr-system", { metadata: { name: "unrelated" }, data: {} });
    ctx.server.put("secrets", "dapr-system", { metadata: { name: "dapr-trust-bundle" } });
    const stream = await watch(
      ctx,
      `${NS}/configmaps?watch=1&resourceVersion=${start}&fieldSelector=metadata.name%3Ddapr-trust-bundle`,
    );
    const replayed = await stream.next();
    assert.equal(replayed.type, "MODIFIED");
    assert.equal(replayed.object.data["ca.crt"], "2");
    assert.equal(replayed.object.kind, "ConfigMap");
    assert.equal(Number(replayed.object.metadata.resourceVersion), Number(start) + 1);

    const updated = await api(ctx, "PUT", `${NS}/configmaps/dapr-trust-bundle`, {
      metadata: { name: "dapr-trust-bundle" },
      data: { "ca.crt": "3" },
    });
    await api(ctx, "DELETE", `${NS}/configmaps/unrelated`);
    await api(ctx, "DELETE", `${NS}/configmaps/dapr-trust-bundle`);
    await api(ctx, "POST", `${NS}/configmaps`, { metadata: { name: "dapr-trust-bundle" } });

    const modified = await stream.next();
    assert.equal(modified.type, "MODIFIED");
    assert.equal(modified.object.data["ca.crt"], "3");
    assert.equal(modified.object.metadata.resourceVersion, updated.body.metadata.resourceVersion);
    const deleted = await stream.next();
    assert.equal(deleted.type, "DELETED");
    assert.ok(
      Number(deleted.object.metadata.resourceVersion) >
        Number(modified.object.metadata.resourceVersion),
    );
    const added = await stream.next();
    assert.equal(added.type, "ADDED");
    assert.equal(ctx.server.watchCount, 1);
    await stream.cancel();
  });
});

Deno.test("http: watch without resourceVersion sends the current state; label selector transitions", async () => {
  await withServer(async (ctx) => {
    ctx.server.put("pods", "ns", { metadata: { name: "a", labels: { app: "x" } } });
    ctx.server.put("pods", "ns", { metadata: { name: "b", labels: { app: "y" } } });
    const stream = await watch(ctx, "/api/v1/namespaces/ns/pods?watch=true&labelSelector=app%3Dx");
    const initial = await stream.next();
    assert.equal(initial.type, "ADDED");
    assert.equal(initial.object.metadata.name, "a");
    // b starts matching: ADDED; a stops matching: DELETED.
    ctx.server.put("pods", "ns", { metadata: { name: "b", labels: { app: "x" } } });
    ctx.server.put("pods", "ns", { metadata: { name: "a", labels: { app: "z" } } });
    assert.deepEqual(
      [await stream.next(), await stream.next()].map((
        event,
      ) => [event.type, event.object.metadata.name]),
      [["ADDED", "b"], ["DELETED", "a"]],
    );
    await stream.cancel();
  });
});

Deno.test("http: a resourceVersion older than the history gets one 410 Expired ERROR event", async () => {
  await withServer(async (ctx) => {
    const first = ctx.server.put("secrets", "ns", { metadata: { name: "s" }, data: {} });
    for (let index = 0; index < 5; index++) {
      ctx.server.put("secrets", "ns", {
        metadata: { name: "s" },
        data: { n: btoa(String(index)) },
      });
    }
    const rv = Number(first.metadata!.resourceVersion);
    const stream = await watch(ctx, `/api/v1/namespaces/ns/secrets?watch=1&resourceVersion=${rv}`);
    const error = await stream.next();
    const oldest = rv + 2;
    assert.deepEqual(error, {
      type: "ERROR",
      object: {
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message: `too old resource version: ${rv} (${oldest})`,
        reason: "Expired",
        code: 410,
      },
    });
    assert.equal(await stream.next(), null, "the stream ends after the ERROR event");

    // Within the history (3 retained) it still works; expireHistory() makes it too old.
    const recent = await watch(
      ctx,
      `/api/v1/namespaces/ns/secrets?watch=1&resourceVersion=${oldest}`,
    );
    assert.equal((await recent.next()).type, "MODIFIED");
    await recent.cancel();
    ctx.server.expireHistory();
    const expired = await watch(
      ctx,
      `/api/v1/namespaces/ns/secrets?watch=1&resourceVersion=${oldest}`,
    );
    const event = await expired.next();
    assert.equal(event.object.code, 410);
    assert.equal(
      event.object.message,
      `too old resource version: ${oldest} (${ctx.server.resourceVersion})`,
    );
    assert.equal(await expired.next(), null);
    // Watching from the current version is fine.
    const current = await watch(
      ctx,
      `/api/v1/namespaces/ns/secrets?watch=1&resourceVersion=${ctx.server.resourceVersion}`,
    );
    ctx.server.remove("secrets", "ns", "s");
    assert.equal((await current.next()).type, "DELETED");
    await current.cancel();
  }, { historyLimit: 3 });
});

Deno.test("http: timeoutSeconds ends a watch; dropWatches ends all open watches", async () => {
  await withServer(async (ctx) => {
    const started = Date.now();
    const timed = await watch(
      ctx,
      `${NS}/secrets?watch=1&resourceVersion=${ctx.server.resourceVersion}&timeoutSeconds=1`,
    );
    assert.equal(await timed.next(3_000), null);
    assert.ok(Date.now() - started >= 900);

    const one = await watch(
      ctx,
      `${NS}/secrets?watch=1&resourceVersion=${ctx.server.resourceVersion}`,
    );
    const two = await watch(ctx, `/apis/dapr.io/v1alpha1/configurations?watch=1`);
    await ctx.server.waitForWatches(2);
    assert.equal(ctx.server.dropWatches(), 2);
    assert.equal(await one.next(), null);
    assert.equal(await two.next(), null);
    assert.equal(ctx.server.watchCount, 0);
  });
});

Deno.test("http: TokenReview authenticates registered service-account tokens with audience rules", async () => {
  await withServer(async (ctx) => {
    const review = (token: string, audiences?: string[]) =>
      api(ctx, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenReview",
        spec: { token, ...(audiences ? { audiences } : {}) },
      });
    const audiences = ["dapr.io/sentry", "spiffe://cluster.local/ns/dapr-system/dapr-sentry"];
    const jwt = ctx.server.serviceAccountJwt({
      namespace: "default",
      serviceAccount: "myapp-sa",
      podName: "myapp-7d9f",
      podUid: "1c7a4a9e-0000-4000-8000-000000000001",
      audiences: ["dapr.io/sentry"],
    });
    const [header, payload, signature] = jwt.split(".");
    assert.equal(JSON.parse(atob(header.replace(/-/g, "+").replace(/_/g, "/"))).alg, "RS256");
    assert.ok(signature.length > 0);
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
    assert.equal(claims.sub, "system:serviceaccount:default:myapp-sa");
    assert.deepEqual(claims.aud, ["dapr.io/sentry"]);
    assert.ok(claims.exp > Date.now() / 1000);
    assert.equal(claims.iss, "https://kubernetes.default.svc.cluster.local");
    assert.deepEqual(claims["kubernetes.io"].pod, {
      name: "myapp-7d9f",
      uid: "1c7a4a9e-0000-4000-8000-000000000001",
    });
    assert.equal(claims["kubernetes.io"].namespace, "default");
    assert.equal(claims["kubernetes.io"].serviceaccount.name, "myapp-sa");

    const ok = await review(jwt, audiences);
    assert.equal(ok.status, 201);
    assert.equal(ok.body.kind, "TokenReview");
    assert.equal(ok.body.apiVersion, "authentication.k8s.io/v1");
    assert.deepEqual(ok.body.spec, { token: jwt, audiences });
    assert.equal(ok.body.status.authenticated, true);
    assert.deepEqual(ok.body.status.audiences, ["dapr.io/sentry"]);
    const user = ok.body.status.user;
    assert.equal(user.username, "system:serviceaccount:default:myapp-sa");
    assert.equal(user.uid, claims["kubernetes.io"].serviceaccount.uid);
    assert.deepEqual(user.groups, [
      "system:serviceaccounts",
      "system:serviceaccounts:default",
      "system:authenticated",
    ]);
    assert.deepEqual(user.extra["authentication.kubernetes.io/pod-name"], ["myapp-7d9f"]);
    assert.deepEqual(user.extra["authentication.kubernetes.io/pod-uid"], [
      "1c7a4a9e-0000-4000-8000-000000000001",
    ]);
    assert.deepEqual(user.extra["authentication.kubernetes.io/credential-id"], [
      `JTI=${claims.jti}`,
    ]);

    // Audience mismatch, unknown token: not authenticated (the field is omitted, as in Go).
    const mismatch = await review(jwt, ["other"]);
    assert.equal(mismatch.status, 201);
    assert.notEqual(mismatch.body.status.authenticated, true);
    assert.deepEqual(mismatch.body.status.user, {});
    assert.equal(
      mismatch.body.status.error,
      '[invalid bearer token, token audiences ["dapr.io/sentry"] is invalid for the target audiences ["other"]]',
    );
    // No audiences requested: the API server's own, which this token was not issued for.
    assert.notEqual((await review(jwt)).body.status.authenticated, true);
    const unknown = await review("not-a-token", audiences);
    assert.notEqual(unknown.body.status.authenticated, true);
    assert.match(unknown.body.status.error, /^\[invalid bearer token, /);

    // Plain registration, expiry, removal.
    ctx.server.addServiceAccountToken("opaque", {
      namespace: "ns",
      serviceAccount: "sa",
      audiences,
    });
    assert.equal(
      (await review("opaque", ["spiffe://cluster.local/ns/dapr-system/dapr-sentry"])).body.status
        .authenticated,
      true,
    );
    const old = ctx.server.serviceAccountJwt({
      namespace: "ns",
      serviceAccount: "sa",
      audiences,
      expiresAt: new Date(Date.now() - 1000),
    });
    assert.match((await review(old, audiences)).body.status.error, /expired/);
    ctx.server.removeServiceAccountToken("opaque");
    assert.notEqual((await review("opaque", audiences)).body.status.authenticated, true);

    const empty = await review("", audiences);
    assert.equal(empty.status, 400);
  });
});

Deno.test("http: TokenReview with validateTokenBinding requires the bound pod and service account", async () => {
  await withServer(async (ctx) => {
    const review = (token: string) =>
      api(ctx, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
        kind: "TokenReview",
        apiVersion: "authentication.k8s.io/v1",
        spec: { token, audiences: ["dapr.io/sentry"] },
      });
    const pod = ctx.server.put("pods", "default", {
      metadata: { name: "p" },
      spec: { serviceAccountName: "sa", containers: [{ name: "c", image: "i" }] },
    });
    const jwt = ctx.server.serviceAccountJwt({
      namespace: "default",
      serviceAccount: "sa",
      podName: "p",
      podUid: pod.metadata!.uid,
      audiences: ["dapr.io/sentry"],
    });
    assert.match((await review(jwt)).body.status.error, /invalidated/, "no service account yet");
    ctx.server.put("serviceaccounts", "default", { metadata: { name: "sa" } });
    assert.equal((await review(jwt)).body.status.authenticated, true);
    ctx.server.remove("pods", "default", "p");
    assert.match((await review(jwt)).body.status.error, /invalidated/, "pod deleted");
  }, { validateTokenBinding: true });
});

Deno.test("faults: failNext, setLatency, setDown (unavailable and refused), request log", async () => {
  await withServer(async (ctx) => {
    ctx.server.put("secrets", "dapr-system", { metadata: { name: "s" } });
    ctx.server.failNext(2, 500);
    const failed = await api(ctx, "GET", `${NS}/secrets/s`);
    assert.equal(failed.status, 500);
    assert.equal(failed.body.kind, "Status");
    assert.equal(failed.body.reason, "InternalError");
    assert.equal((await api(ctx, "GET", `${NS}/secrets/s`)).status, 500);
    assert.equal((await api(ctx, "GET", `${NS}/secrets/s`)).status, 200);

    ctx.server.failNext(1, 429, undefined, { method: "PUT" });
    assert.equal((await api(ctx, "GET", `${NS}/secrets/s`)).status, 200, "GET does not match");
    const throttled = await api(ctx, "PUT", `${NS}/secrets/s`, { metadata: { name: "s" } });
    assert.equal(throttled.status, 429);
    assert.equal(throttled.body.reason, "TooManyRequests");
    assert.equal(throttled.headers.get("retry-after"), "1");
    ctx.server.failNext(1, 403, "Forbidden", { path: /\/secrets\/s$/ });
    assert.equal((await api(ctx, "GET", `${NS}/secrets/s`)).body.reason, "Forbidden");

    ctx.server.setLatency(300);
    const started = Date.now();
    assert.equal((await api(ctx, "GET", `${NS}/secrets/s`)).status, 200);
    assert.ok(Date.now() - started >= 290);
    ctx.server.setLatency(0);

    await ctx.server.setDown(true, "unavailable");
    const unavailable = await api(ctx, "GET", `${NS}/secrets/s`);
    assert.equal(unavailable.status, 503);
    assert.equal(unavailable.body.reason, "ServiceUnavailable");
    await ctx.server.setDown(false);

    const stream = await watch(ctx, `${NS}/secrets?watch=1`);
    assert.equal((await stream.next()).type, "ADDED");
    await ctx.server.setDown(true);
    assert.equal(await stream.next(), null, "going down ends watches");
    await assert.rejects(fetch(`${ctx.server.url}/version`, { client: ctx.client }));
    await ctx.server.setDown(false);
    const back = await api(ctx, "GET", `${NS}/secrets/s`);
    assert.equal(back.status, 200, "same port, same data");

    const logged = ctx.server.requests.filter((request) => request.path === `${NS}/secrets/s`);
    assert.ok(logged.length >= 8);
    assert.equal(logged[0].method, "GET");
    assert.equal(logged[0].status, 500);
    assert.equal(logged[0].token, ctx.server.adminToken);
    const put = logged.find((request) => request.method === "PUT")!;
    assert.deepEqual(put.body, { metadata: { name: "s" } });
    ctx.server.clearRequests();
    assert.equal(ctx.server.requests.length, 0);
  });
});

Deno.test("helpers: kubeconfig and service-account directory; put/list/remove emit events", async () => {
  await withServer(async (ctx) => {
    const config = parseYaml(
      await Deno.readTextFile(
        await ctx.server.writeKubeconfig(join(ctx.dir, "k2"), {
          token: "t",
          namespace: "dapr-system",
        }),
      ),
    );
    assert.equal(config["current-context"], "fake");
    assert.equal(config.clusters[0].cluster.server, ctx.server.url);
    assert.equal(
      Buffer.from(config.clusters[0].cluster["certificate-authority-data"], "base64").toString(),
      ctx.server.caPem,
    );
    assert.equal(config.users[0].user.token, "t");
    assert.equal(config.contexts[0].context.namespace, "dapr-system");

    const saDir = await ctx.server.writeServiceAccountDir(join(ctx.dir, "sa"), {
      namespace: "dapr-system",
    });
    assert.equal(await Deno.readTextFile(join(saDir, "token")), ctx.server.adminToken);
    assert.equal(await Deno.readTextFile(join(saDir, "namespace")), "dapr-system");
    assert.equal(await Deno.readTextFile(join(saDir, "ca.crt")), ctx.server.caPem);
    assert.deepEqual(ctx.server.inClusterEnv(), {
      KUBERNETES_SERVICE_HOST: "127.0.0.1",
      KUBERNETES_SERVICE_PORT: String(ctx.server.port),
    });

    const stream = await watch(
      ctx,
      `${NS}/secrets?watch=1&resourceVersion=${ctx.server.resourceVersion}`,
    );
    const put = ctx.server.put("Secret", "dapr-system", {
      metadata: { name: "dapr-trust-bundle" },
      stringData: { "ca.crt": "pem" },
    });
    assert.equal(put.data?.["ca.crt" as never], btoa("pem"));
    const unchanged = ctx.server.put("secrets", "dapr-system", put);
    assert.equal(unchanged.metadata?.resourceVersion, put.metadata?.resourceVersion);
    assert.deepEqual(ctx.server.list("secrets").map((secret) => secret.metadata?.name), [
      "dapr-trust-bundle",
    ]);
    assert.equal(ctx.server.remove("secrets", "dapr-system", "dapr-trust-bundle"), true);
    assert.equal(ctx.server.remove("secrets", "dapr-system", "dapr-trust-bundle"), false);
    assert.deepEqual(
      [await stream.next(), await stream.next()].map((event) => event.type),
      ["ADDED", "DELETED"],
    );
    await stream.cancel();
    assert.throws(() => ctx.server.get("deployments", "x", "y"), /unknown resource/);
  });
});
