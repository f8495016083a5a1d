/**
 * The Kubernetes REST client and its connection settings, against small local servers:
 * kubeconfig parsing (token, tokenFile, client certificates checked by a server that requires
 * one, CA data or file, insecure-skip-tls-verify, relative paths, namespaces, refused
 * authentication kinds), in-cluster settings with a rotated token, retries (503, 429 with
 * Retry-After, refused connections, timeouts) and their limits (no retry on 404/409), error
 * messages that quote the server, watch streams split anywhere, 410 ERROR events and aborts.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  createServer as createHttpServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { opensslServerTls } from "../helpers/openssl.ts";
import {
  isAlreadyExists,
  isConflict,
  isGone,
  isNotFound,
  KubeApiError,
  KubeClient,
  type KubeClientOptions,
  KubeRequestError,
  parseRetryAfter,
  type WatchEvent,
} from "../../src/kubernetes/client.ts";
import {
  firstKubeconfigPath,
  KubeConfigError,
  type KubeConnection,
  loadInClusterConfig,
  loadKubeConfig,
  parseKubeConfig,
} from "../../src/kubernetes/config.ts";
import { Logger } from "../../src/observability/logger.ts";

// ---------------------------------------------------------------------------------------------
// TLS material from the openssl CLI: a cluster CA, a server certificate for 127.0.0.1 and a
// client certificate, plus an unrelated CA.

interface TlsMaterial {
  caPem: string;
  serverCertPem: string;
  serverKeyPem: string;
  clientCertPem: string;
  clientKeyPem: string;
  otherCaPem: string;
}

let tlsMaterial: Promise<TlsMaterial> | undefined;

function makeTls(): Promise<TlsMaterial> {
  tlsMaterial ??= (async () => {
    const [cluster, other] = await Promise.all([
      opensslServerTls("kube test CA", { clientSubject: "/O=system:masters/CN=kube-admin" }),
      opensslServerTls("some other CA"),
    ]);
    return {
      caPem: cluster.caPem,
      serverCertPem: cluster.certPem,
      serverKeyPem: cluster.keyPem,
      clientCertPem: cluster.client!.certPem,
      clientKeyPem: cluster.client!.keyPem,
      otherCaPem: other.caPem,
    };
  })();
  return tlsMaterial;
}

// ---------------------------------------------------------------------------------------------
// Test API servers.

interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** CN of the TLS client certificate, when one was presented. */
  clientCn?: string;
}

type Handler = (req: Recorded, res: ServerResponse, index: number) => void | Promise<void>;

interface TestServer {
  url: string;
  port: number;
  requests: Recorded[];
  close(): Promise<void>;
}

interface ServerOptions {
  /** https with the test CA's server certificate (default); false for plain http. */
  tls?: boolean;
  /** Require a client certificate signed by the test CA. */
  requireClientCert?: boolean;
}

async function startServer(handler: Handler, options: ServerOptions = {}): Promise<TestServer> {
  const requests: Recorded[] = [];
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Uint8Array[] = [];
    req.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    req.on("end", () => {
      const socket = req.socket as TLSSocket;
      const peer = typeof socket.getPeerCertificate === "function"
        ? socket.getPeerCertificate()
        : undefined;
      const cn: unknown = peer?.subject?.CN;
      const recorded: Recorded = {
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
        clientCn: cn === undefined ? undefined : String(cn),
      };
      requests.push(recorded);
      void handler(recorded, res, requests.length - 1);
    });
  };
  let server: HttpServer;
  if (options.tls === false) {
    server = createHttpServer(listener);
  } else {
    const tls = await makeTls();
    server = createHttpsServer({
      key: tls.serverKeyPem,
      cert: tls.serverCertPem,
      ...(options.requireClientCert
        ? { ca: tls.caPem, requestCert: true, rejectUnauthorized: true }
        : {}),
    }, listener);
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  let closed = false;
  return {
    url: `${options.tls === false ? "http" : "https"}://127.0.0.1:${port}`,
    port,
    requests,
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

function json(res: ServerResponse, status: number, body: unknown, headers = {}): void {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

function status(code: number, reason: string, message: string) {
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    code,
  };
}

function plain(server: string, extra: Partial<KubeConnection> = {}): KubeConnection {
  return {
    server,
    insecureSkipTlsVerify: false,
    source: "kubeconfig",
    description: "test",
    ...extra,
  };
}

/** Fast retries for tests. */
const FAST: KubeClientOptions = { initialBackoffMs: 5, maxBackoffMs: 20 };

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kube-client-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A kubeconfig with one context `test` -> cluster `c` / user `u`. */
function kubeconfig(cluster: string, user: string, extra = "", current = "test"): string {
  return `apiVersion: v1
kind: Config
${current ? `current-context: ${current}\n` : ""}clusters:
- name: c
  cluster:
${cluster.trim().split("\n").map((line) => `    ${line}`).join("\n")}
users:
- name: u
  user:
${user.trim().split("\n").map((line) => `    ${line}`).join("\n")}
contexts:
- name: test
  context:
    cluster: c
    user: u
    namespace: dapr-system
- name: other
  context:
    cluster: c
    user: u
${extra}`;
}

async function assertConfigError(promise: Promise<unknown>, ...patterns: RegExp[]) {
  await assert.rejects(promise, (error: Error) => {
    assert.ok(error instanceof KubeConfigError, `not a KubeConfigError: ${error}`);
    for (const pattern of patterns) assert.match(error.message, pattern);
    return true;
  });
}

const OK_SERVER: Handler = (req, res) =>
  json(res, 200, { kind: "ConfigMap", metadata: { name: "x" }, seen: req.url });

// ---------------------------------------------------------------------------------------------
// Kubeconfig.

Deno.test("kubeconfig: token and certificate-authority-data reach a TLS server", async () => {
  const tls = await makeTls();
  const server = await startServer(OK_SERVER);
  await withTempDir(async (dir) => {
    const path = join(dir, "config");
    await Deno.writeTextFile(
      path,
      kubeconfig(
        `server: ${server.url}\ncertificate-authority-data: ${b64(tls.caPem)}`,
        "token: secret-token-1",
      ),
    );
    const connection = await loadKubeConfig({ kubeconfigPath: path, env: {} });
    assert.equal(connection.server, server.url);
    assert.equal(connection.namespace, "dapr-system");
    assert.equal(connection.source, "kubeconfig");
    assert.match(connection.description, /context test/);
    const client = new KubeClient(connection);
    try {
      const cm = await client.get<{ seen: string }>("/api/v1/namespaces/a/configmaps/x");
      assert.equal(cm.seen, "/api/v1/namespaces/a/configmaps/x");
      assert.equal(server.requests[0].headers.authorization, "Bearer secret-token-1");
      assert.equal(server.requests[0].headers.accept, "application/json");
      assert.match(String(server.requests[0].headers["user-agent"]), /^sentry\//);
    } finally {
      client.close();
      await server.close();
    }
  });
});

Deno.test("kubeconfig: relative certificate-authority and tokenFile, re-read per request", async () => {
  const tls = await makeTls();
  const server = await startServer(OK_SERVER);
  await withTempDir(async (dir) => {
    await Deno.mkdir(join(dir, "kube", "pki"), { recursive: true });
    await Deno.writeTextFile(join(dir, "kube", "pki", "ca.crt"), tls.caPem);
    await Deno.writeTextFile(join(dir, "kube", "token"), "first-token\n");
    const path = join(dir, "kube", "config");
    await Deno.writeTextFile(
      path,
      kubeconfig(`server: ${server.url}\ncertificate-authority: pki/ca.crt`, "tokenFile: token"),
    );
    const connection = await loadKubeConfig({ env: { KUBECONFIG: path } });
    assert.equal(connection.caPem, tls.caPem);
    assert.equal(connection.tokenFile, join(dir, "kube", "token"));
    assert.equal(connection.token, undefined);
    const client = new KubeClient(connection);
    try {
      await client.get("/api/v1/namespaces");
      await Deno.writeTextFile(join(dir, "kube", "token"), "second-token\n");
      await client.get("/api/v1/namespaces");
      assert.deepEqual(server.requests.map((r) => r.headers.authorization), [
        "Bearer first-token",
        "Bearer second-token",
      ]);
      await Deno.remove(join(dir, "kube", "token"));
      await assert.rejects(client.get("/api/v1/namespaces"), (error: Error) => {
        assert.ok(error instanceof KubeRequestError);
        assert.equal(error.code, "ETOKEN");
        assert.match(error.message, /cannot read token file .*token: file not found/);
        return true;
      });
      assert.equal(server.requests.length, 2);
    } finally {
      client.close();
      await server.close();
    }
  });
});

Deno.test("kubeconfig: a token wins over tokenFile", async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, "config");
    const text = kubeconfig(
      "server: https://127.0.0.1:6443\ninsecure-skip-tls-verify: true",
      "token: inline\ntokenFile: /does/not/exist",
    );
    const connection = await parseKubeConfig(text, path);
    assert.equal(connection.token, "inline");
    assert.equal(connection.tokenFile, undefined);
  });
});

Deno.test("kubeconfig: client certificate auth (files and -data) against a server requiring one", async () => {
  const tls = await makeTls();
  const server = await startServer(OK_SERVER, { requireClientCert: true });
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(join(dir, "ca.crt"), tls.caPem);
    await Deno.writeTextFile(join(dir, "admin.crt"), tls.clientCertPem);
    await Deno.writeTextFile(join(dir, "admin.key"), tls.clientKeyPem);
    const cluster = `server: ${server.url}\ncertificate-authority: ca.crt`;
    const variants = [
      "client-certificate: admin.crt\nclient-key: admin.key",
      `client-certificate-data: ${b64(tls.clientCertPem)}\nclient-key-data: ${
        b64(tls.clientKeyPem)
      }`,
    ];
    try {
      for (const user of variants) {
        const path = join(dir, "config");
        await Deno.writeTextFile(path, kubeconfig(cluster, user));
        const connection = await loadKubeConfig({ kubeconfigPath: path, env: {} });
        assert.equal(connection.clientCertPem, tls.clientCertPem);
        assert.equal(connection.clientKeyPem, tls.clientKeyPem);
        const client = new KubeClient(connection);
        try {
          await client.get("/version");
        } finally {
          client.close();
        }
        const last = server.requests.at(-1) as Recorded;
        assert.equal(last.clientCn, "kube-admin");
        assert.equal(last.headers.authorization, undefined);
      }

      // Without the client certificate the server refuses the handshake: a clear error, and
      // no retries (it is not a transient failure).
      const path = join(dir, "config");
      await Deno.writeTextFile(path, kubeconfig(cluster, "token: t"));
      const before = server.requests.length;
      const client = new KubeClient(await loadKubeConfig({ kubeconfigPath: path, env: {} }), FAST);
      try {
        await assert.rejects(client.get("/version"), (error: Error) => {
          assert.ok(error instanceof KubeRequestError, `${error}`);
          assert.equal(error.attempts, 1);
          assert.match(error.message, /^kubernetes API: GET \/version: TLS connection to https:/);
          return true;
        });
      } finally {
        client.close();
      }
      assert.equal(server.requests.length, before);
    } finally {
      await server.close();
    }
  });
});

Deno.test("kubeconfig: a certificate without its key (and vice versa) is refused", async () => {
  const tls = await makeTls();
  const cluster = "server: https://127.0.0.1:6443\ninsecure-skip-tls-verify: true";
  await assertConfigError(
    parseKubeConfig(
      kubeconfig(cluster, `client-certificate-data: ${b64(tls.clientCertPem)}`),
      "/k/config",
    ),
    /user "u": a client certificate without a client key/,
  );
  await assertConfigError(
    parseKubeConfig(
      kubeconfig(cluster, `client-key-data: ${b64(tls.clientKeyPem)}`),
      "/k/config",
    ),
    /a client key without a client certificate/,
  );
  await assertConfigError(
    parseKubeConfig(kubeconfig(cluster, "client-certificate: missing.crt\nclient-key: k"), "/k/c"),
    /kubeconfig \/k\/c: user "u": "client-certificate" \/k\/missing\.crt: file not found/,
  );
});

Deno.test("kubeconfig: insecure-skip-tls-verify talks to an untrusted server; no CA fails", async () => {
  const server = await startServer(OK_SERVER);
  try {
    const insecure = await parseKubeConfig(
      kubeconfig(`server: ${server.url}\ninsecure-skip-tls-verify: true`, "token: t"),
      "/k/config",
    );
    assert.equal(insecure.insecureSkipTlsVerify, true);
    const client = new KubeClient(insecure);
    try {
      await client.get("/version");
    } finally {
      client.close();
    }

    // System roots only: the server's certificate does not verify; not retried.
    const strict = await parseKubeConfig(
      kubeconfig(`server: ${server.url}`, "token: t"),
      "/k/config",
    );
    assert.equal(strict.caPem, undefined);
    const strictClient = new KubeClient(strict, FAST);
    try {
      await assert.rejects(strictClient.get("/version"), (error: Error) => {
        assert.ok(error instanceof KubeRequestError, `${error}`);
        assert.equal(error.attempts, 1);
        assert.match(error.message, /TLS connection to https:\/\/127\.0\.0\.1:\d+ failed: /);
        return true;
      });
    } finally {
      strictClient.close();
    }
    assert.equal(server.requests.length, 1);
  } finally {
    await server.close();
  }
});

Deno.test("kubeconfig: a CA that did not sign the server's certificate is refused", async () => {
  const tls = await makeTls();
  const server = await startServer(OK_SERVER);
  const client = new KubeClient(
    plain(server.url, { caPem: tls.otherCaPem, token: "t" }),
    FAST,
  );
  try {
    await assert.rejects(client.get("/version"), (error: Error) => {
      assert.ok(error instanceof KubeRequestError);
      assert.equal(error.attempts, 1);
      assert.match(error.message, /TLS connection to https:\/\/127\.0\.0\.1:\d+ failed: /);
      return true;
    });
    assert.equal(server.requests.length, 0);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("kubeconfig: CA data wins over the CA file; CA + insecure is refused", async () => {
  const tls = await makeTls();
  const connection = await parseKubeConfig(
    kubeconfig(
      `server: https://k:6443\ncertificate-authority: /no/such/ca.crt\n` +
        `certificate-authority-data: ${b64(tls.caPem)}`,
      "token: t",
    ),
    "/k/config",
  );
  assert.equal(connection.caPem, tls.caPem);
  await assertConfigError(
    parseKubeConfig(
      kubeconfig(
        `server: https://k:6443\ninsecure-skip-tls-verify: true\n` +
          `certificate-authority-data: ${b64(tls.caPem)}`,
        "token: t",
      ),
      "/k/config",
    ),
    /cluster "c": a certificate authority and "insecure-skip-tls-verify: true" cannot be used/,
  );
  await assertConfigError(
    parseKubeConfig(
      kubeconfig(`server: https://k:6443\ncertificate-authority-data: ${b64("junk")}`, "token: t"),
      "/k/config",
    ),
    /certificate authority: no PEM certificate found/,
  );
});

Deno.test("kubeconfig: contexts, namespaces and the current-context", async () => {
  const cluster = "server: https://k.example:6443/prefix/\ninsecure-skip-tls-verify: true";
  const text = kubeconfig(cluster, "token: t");
  const current = await parseKubeConfig(text, "/k/config");
  assert.equal(current.namespace, "dapr-system");
  assert.equal(current.server, "https://k.example:6443/prefix");
  const other = await parseKubeConfig(text, "/k/config", "other");
  assert.equal(other.namespace, undefined);
  assert.match(other.description, /\(context other\)/);

  await assertConfigError(
    parseKubeConfig(kubeconfig(cluster, "token: t", "", ""), "/k/config"),
    /^kubeconfig \/k\/config: no current-context is set/,
  );
  await assertConfigError(
    parseKubeConfig(text, "/k/config", "missing"),
    /no context named "missing" in "contexts" \(found "test", "other"\)/,
  );
  await assertConfigError(
    parseKubeConfig(
      text.replace(
        "    cluster: c\n    user: u\n    namespace",
        "    cluster: d\n    user: u\n    namespace",
      ),
      "/k/config",
    ),
    /no cluster named "d" in "clusters"/,
  );
  await assertConfigError(
    parseKubeConfig(kubeconfig("server: ftp://k", "token: t"), "/k/config"),
    /"server" "ftp:\/\/k" must be an https:\/\/ or http:\/\/ URL/,
  );
  await assertConfigError(
    parseKubeConfig("- just\n- a list\n", "/k/config"),
    /not a kubeconfig/,
  );
});

Deno.test("kubeconfig: exec plugins, auth providers and basic auth are refused by name", async () => {
  const cluster = "server: https://k:6443\ninsecure-skip-tls-verify: true";
  await assertConfigError(
    parseKubeConfig(
      kubeconfig(
        cluster,
        "exec:\n  apiVersion: client.authentication.k8s.io/v1beta1\n  command: aws\n" +
          "  args: [eks, get-token]",
      ),
      "/k/config",
    ),
    /user "u": "exec" authentication \(command "aws"\) is not supported/,
  );
  await assertConfigError(
    parseKubeConfig(kubeconfig(cluster, "auth-provider:\n  name: gcp"), "/k/config"),
    /"auth-provider" authentication \("gcp"\) is not supported/,
  );
  await assertConfigError(
    parseKubeConfig(kubeconfig(cluster, "username: a\npassword: b"), "/k/config"),
    /basic authentication .* is not supported/,
  );
});

Deno.test("kubeconfig: --kubeconfig wins over KUBECONFIG, whose first file is used", async () => {
  await withTempDir(async (dir) => {
    const make = (name: string, server: string) =>
      Deno.writeTextFile(
        join(dir, name),
        kubeconfig(`server: ${server}\ninsecure-skip-tls-verify: true`, "token: t"),
      );
    await make("a", "https://a:1");
    await make("b", "https://b:2");
    await make("flag", "https://flag:3");
    const env = { KUBECONFIG: `:${join(dir, "a")}:${join(dir, "b")}` };
    assert.equal(firstKubeconfigPath(env.KUBECONFIG), join(dir, "a"));
    assert.equal((await loadKubeConfig({ env })).server, "https://a:1");
    assert.equal(
      (await loadKubeConfig({ env, kubeconfigPath: join(dir, "flag") })).server,
      "https://flag:3",
    );
    // KUBECONFIG also wins over in-cluster variables (as with controller-runtime).
    assert.equal(
      (await loadKubeConfig({
        env: { ...env, KUBERNETES_SERVICE_HOST: "10.0.0.1", KUBERNETES_SERVICE_PORT: "443" },
      })).server,
      "https://a:1",
    );
    // $HOME/.kube/config as the last resort.
    await Deno.mkdir(join(dir, ".kube"));
    await make(".kube/config", "https://home:4");
    assert.equal((await loadKubeConfig({ env: { HOME: dir } })).server, "https://home:4");
    await assertConfigError(
      loadKubeConfig({ env: { HOME: join(dir, "nowhere") } }),
      /no Kubernetes configuration found/,
    );
    await assertConfigError(
      loadKubeConfig({ env: {}, kubeconfigPath: join(dir, "missing") }),
      /kubeconfig .*missing: file not found/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// In-cluster.

Deno.test("in-cluster: service host and files; the rotated token is sent", async () => {
  const tls = await makeTls();
  const server = await startServer(OK_SERVER);
  await withTempDir(async (dir) => {
    const inCluster = {
      tokenPath: join(dir, "token"),
      caPath: join(dir, "ca.crt"),
      namespacePath: join(dir, "namespace"),
    };
    await Deno.writeTextFile(inCluster.tokenPath, "token-before-rotation");
    await Deno.writeTextFile(inCluster.caPath, tls.caPem);
    await Deno.writeTextFile(inCluster.namespacePath, "dapr-system\n");
    const env = { KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: `${server.port}` };
    const connection = await loadKubeConfig({ env, inCluster });
    assert.equal(connection.source, "in-cluster");
    assert.equal(connection.server, server.url);
    assert.equal(connection.namespace, "dapr-system");
    assert.equal(connection.tokenFile, inCluster.tokenPath);
    assert.equal(connection.caPem, tls.caPem);
    const client = new KubeClient(connection);
    try {
      await client.get("/api/v1/namespaces/dapr-system/secrets/dapr-trust-bundle");
      // The kubelet replaces the projected token (atomically, by rename).
      await Deno.writeTextFile(join(dir, "token.new"), "token-after-rotation");
      await Deno.rename(join(dir, "token.new"), inCluster.tokenPath);
      await client.get("/api/v1/namespaces/dapr-system/secrets/dapr-trust-bundle");
      assert.deepEqual(server.requests.map((r) => r.headers.authorization), [
        "Bearer token-before-rotation",
        "Bearer token-after-rotation",
      ]);
    } finally {
      client.close();
      await server.close();
    }
  });
});

Deno.test("in-cluster: IPv6 hosts are bracketed; missing files are named", async () => {
  const tls = await makeTls();
  await withTempDir(async (dir) => {
    const paths = {
      tokenPath: join(dir, "token"),
      caPath: join(dir, "ca.crt"),
      namespacePath: join(dir, "namespace"),
    };
    await Deno.writeTextFile(paths.tokenPath, "t");
    await Deno.writeTextFile(paths.caPath, tls.caPem);
    const v6 = await loadInClusterConfig(
      { KUBERNETES_SERVICE_HOST: "fd00:10:96::1", KUBERNETES_SERVICE_PORT: "443" },
      paths,
    );
    assert.equal(v6.server, "https://[fd00:10:96::1]:443");
    assert.equal(v6.namespace, undefined);
    await Deno.remove(paths.tokenPath);
    await assertConfigError(
      loadInClusterConfig(
        { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" },
        paths,
      ),
      /in-cluster service-account token .*token: file not found/,
    );
    await assertConfigError(
      loadInClusterConfig({ KUBERNETES_SERVICE_HOST: "10.96.0.1" }, paths),
      /KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Requests, errors and retries.

Deno.test("requests: JSON bodies, content types, query parameters and list pages", async () => {
  const server = await startServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (req.method === "GET" && url.pathname === "/api/v1/namespaces/ns/configmaps") {
      const next = url.searchParams.get("continue");
      if (next === null) {
        return json(res, 200, {
          kind: "ConfigMapList",
          metadata: { resourceVersion: "100", continue: "page2", remainingItemCount: 1 },
          items: [{ metadata: { name: "a" } }],
        });
      }
      return json(res, 200, {
        kind: "ConfigMapList",
        metadata: { resourceVersion: "101" },
        items: [{ metadata: { name: "b" } }],
      });
    }
    json(res, req.method === "POST" ? 201 : 200, {
      method: req.method,
      contentType: req.headers["content-type"],
      body: req.body ? JSON.parse(req.body) : null,
    });
  }, { tls: false });
  const client = new KubeClient(plain(server.url));
  try {
    const created = await client.create<Record<string, unknown>>(
      "/api/v1/namespaces/ns/configmaps",
      { metadata: { name: "c" }, data: { "ca.crt": "pem ✓" } },
    );
    assert.deepEqual(created, {
      method: "POST",
      contentType: "application/json",
      body: { metadata: { name: "c" }, data: { "ca.crt": "pem ✓" } },
    });
    const replaced = await client.replace<Record<string, unknown>>(
      "/api/v1/namespaces/ns/configmaps/c",
      { metadata: { name: "c", resourceVersion: "5" } },
    );
    assert.equal(replaced.method, "PUT");
    const patched = await client.mergePatch<Record<string, unknown>>(
      "/api/v1/namespaces/ns/configmaps/c",
      { data: { x: null } },
    );
    assert.deepEqual(patched, {
      method: "PATCH",
      contentType: "application/merge-patch+json",
      body: { data: { x: null } },
    });
    const list = await client.list<{ metadata: { name: string } }>(
      "/api/v1/namespaces/ns/configmaps",
      { labelSelector: "app=dapr,tier in (a,b)", limit: 1, resourceVersion: "0" },
    );
    assert.deepEqual(list.items.map((item) => item.metadata.name), ["a", "b"]);
    assert.deepEqual(list.metadata, { resourceVersion: "100" });
    const first = new URL(server.requests[3].url, "http://x").searchParams;
    assert.equal(first.get("labelSelector"), "app=dapr,tier in (a,b)");
    assert.equal(first.get("limit"), "1");
    assert.equal(first.get("resourceVersion"), "0");
    const second = new URL(server.requests[4].url, "http://x").searchParams;
    assert.equal(second.get("continue"), "page2");
    assert.equal(second.get("resourceVersion"), null);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("retries: 503 twice, then success", async () => {
  const lines: string[] = [];
  const logger = new Logger({
    level: "debug",
    json: true,
    scope: "test",
    version: "0",
    sink: (line) => lines.push(line),
  });
  const server = await startServer((_req, res, index) => {
    if (index < 2) return json(res, 503, status(503, "ServiceUnavailable", "etcd is busy"));
    json(res, 200, { ok: true });
  }, { tls: false });
  const client = new KubeClient(plain(server.url), { ...FAST, logger });
  try {
    assert.deepEqual(await client.get("/api/v1/pods"), { ok: true });
    assert.equal(server.requests.length, 3);
    assert.equal(lines.length, 2);
    assert.match(JSON.parse(lines[0]).msg, /retrying/);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("retries: 429 waits for Retry-After", async () => {
  const server = await startServer((_req, res, index) => {
    if (index === 0) {
      return json(res, 429, status(429, "TooManyRequests", "too many requests, please retry"), {
        "retry-after": "1",
      });
    }
    json(res, 200, { ok: true });
  }, { tls: false });
  const client = new KubeClient(plain(server.url), FAST);
  try {
    const started = performance.now();
    assert.deepEqual(await client.get("/api/v1/pods"), { ok: true });
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 950, `retried after ${elapsed} ms, before Retry-After`);
    assert.equal(server.requests.length, 2);
  } finally {
    client.close();
    await server.close();
  }
  assert.equal(parseRetryAfter("3"), 3000);
  assert.equal(parseRetryAfter(undefined), undefined);
  const date = parseRetryAfter(new Date(Date.now() + 5000).toUTCString()) as number;
  assert.ok(date > 3000 && date <= 5000, `${date}`);
});

Deno.test("retries give up after maxAttempts with the last answer", async () => {
  const server = await startServer((_req, res) => {
    res.writeHead(502, { "content-type": "text/html" });
    res.end("<html><body>\n  Bad   Gateway\n</body></html>");
  }, { tls: false });
  const client = new KubeClient(plain(server.url), { ...FAST, maxAttempts: 3 });
  try {
    await assert.rejects(client.get("/api/v1/pods"), (error: Error) => {
      assert.ok(error instanceof KubeApiError);
      assert.equal(error.status, 502);
      assert.equal(error.attempts, 3);
      assert.equal(
        error.message,
        "kubernetes API: GET /api/v1/pods: 502 Bad Gateway: <html><body> Bad Gateway " +
          "</body></html> (gave up after 3 attempts)",
      );
      return true;
    });
    assert.equal(server.requests.length, 3);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("no retries on 403, 404 and 409; the Status message is quoted", async () => {
  const secret = "/api/v1/namespaces/dapr-system/secrets/dapr-trust-bundle";
  const forbidden = `secrets "dapr-trust-bundle" is forbidden: User ` +
    `"system:serviceaccount:dapr-system:dapr-sentry" cannot get resource "secrets" in API ` +
    `group "" in the namespace "dapr-system"`;
  const server = await startServer((req, res) => {
    if (req.method === "GET" && req.url === secret) {
      return json(res, 403, status(403, "Forbidden", forbidden));
    }
    if (req.method === "GET") {
      return json(res, 404, status(404, "NotFound", `configmaps "dapr-trust-bundle" not found`));
    }
    if (req.method === "POST") {
      return json(
        res,
        409,
        status(409, "AlreadyExists", `configmaps "dapr-trust-bundle" already exists`),
      );
    }
    json(
      res,
      409,
      status(
        409,
        "Conflict",
        `Operation cannot be fulfilled on configmaps "dapr-trust-bundle": the object has been ` +
          `modified; please apply your changes to the latest version and try again`,
      ),
    );
  }, { tls: false });
  const client = new KubeClient(plain(server.url), FAST);
  const cm = "/api/v1/namespaces/dapr-system/configmaps/dapr-trust-bundle";
  try {
    await assert.rejects(client.get(secret), (error: Error) => {
      assert.ok(error instanceof KubeApiError);
      assert.equal(error.status, 403);
      assert.equal(error.reason, "Forbidden");
      assert.equal(error.message, `kubernetes API: GET ${secret}: 403 Forbidden: ${forbidden}`);
      return true;
    });
    await assert.rejects(client.get(cm), (error: Error) => {
      assert.ok(isNotFound(error) && !isConflict(error));
      assert.equal(
        error.message,
        `kubernetes API: GET ${cm}: 404 Not Found: configmaps "dapr-trust-bundle" not found`,
      );
      return true;
    });
    await assert.rejects(
      client.create("/api/v1/namespaces/dapr-system/configmaps", { metadata: { name: "x" } }),
      (error: Error) => {
        assert.ok(isAlreadyExists(error) && !isConflict(error));
        assert.equal((error as KubeApiError).status, 409);
        return true;
      },
    );
    await assert.rejects(client.replace(cm, { metadata: { resourceVersion: "1" } }), (error) => {
      assert.ok(isConflict(error) && !isAlreadyExists(error) && !isNotFound(error));
      assert.match((error as Error).message, /: 409 Conflict: Operation cannot be fulfilled/);
      return true;
    });
    assert.equal(server.requests.length, 4);
  } finally {
    client.close();
    await server.close();
  }
});

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createHttpServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

Deno.test("retries: connection refused, retried, then a clear final error", async () => {
  const port = await closedPort();
  const client = new KubeClient(plain(`https://127.0.0.1:${port}`), { ...FAST, maxAttempts: 3 });
  try {
    await assert.rejects(client.get("/api/v1/pods"), (error: Error) => {
      assert.ok(error instanceof KubeRequestError, `${error}`);
      assert.equal(error.code, "ECONNREFUSED");
      assert.equal(error.attempts, 3);
      assert.match(
        error.message,
        new RegExp(
          `^kubernetes API: GET /api/v1/pods: cannot reach https://127\\.0\\.0\\.1:${port}: .*` +
            `ECONNREFUSED.*\\(server https://127\\.0\\.0\\.1:${port}, gave up after 3 attempts\\)$`,
        ),
      );
      return true;
    });
  } finally {
    client.close();
  }
});

Deno.test("retries: a server that comes up while retrying is reached", async () => {
  const port = await closedPort();
  const client = new KubeClient(plain(`http://127.0.0.1:${port}`), {
    initialBackoffMs: 50,
    maxBackoffMs: 50,
    maxAttempts: 20,
  });
  const server = createHttpServer((_req, res) => json(res, 200, { up: true }));
  try {
    const pending = client.get("/healthz");
    await delay(120);
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    assert.deepEqual(await pending, { up: true });
  } finally {
    client.close();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
});

Deno.test("timeouts: each attempt is bounded; retried; then reported", async () => {
  const server = await startServer((_req, res, index) => {
    if (index === 0) return; // never answers
    if (index === 1) return json(res, 200, { second: true });
  }, { tls: false });
  const client = new KubeClient(plain(server.url), { ...FAST, timeoutMs: 150 });
  try {
    assert.deepEqual(await client.get("/api/v1/pods"), { second: true });
    const hanging = await startServer(() => {}, { tls: false });
    const slow = new KubeClient(plain(hanging.url), { ...FAST, timeoutMs: 100, maxAttempts: 2 });
    try {
      const started = performance.now();
      await assert.rejects(slow.get("/api/v1/pods"), (error: Error) => {
        assert.ok(error instanceof KubeRequestError);
        assert.equal(error.code, "ETIMEDOUT");
        assert.equal(error.attempts, 2);
        assert.match(error.message, /no answer within 100ms .*gave up after 2 attempts/);
        return true;
      });
      assert.ok(performance.now() - started < 2000);
      assert.equal(hanging.requests.length, 2);
      // A per-request timeout overrides the client's.
      await assert.rejects(
        slow.request("GET", "/x", { timeoutMs: 30 }),
        /no answer within 30ms/,
      );
    } finally {
      slow.close();
      await hanging.close();
    }
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("abort: a request in flight or waiting to retry rejects with the signal's reason", async () => {
  const server = await startServer((req, res) => {
    if (req.url === "/busy") return json(res, 503, status(503, "ServiceUnavailable", "busy"));
    // otherwise hangs
  }, { tls: false });
  const client = new KubeClient(plain(server.url), { initialBackoffMs: 10_000 });
  try {
    const controller = new AbortController();
    const pending = client.get("/hang", { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await assert.rejects(pending, { name: "AbortError" });

    const waiting = new AbortController();
    const started = performance.now();
    const retrying = client.get("/busy", { signal: waiting.signal });
    setTimeout(() => waiting.abort(new Error("shutting down")), 100);
    await assert.rejects(retrying, /shutting down/);
    assert.ok(performance.now() - started < 3000);

    const already = new AbortController();
    already.abort();
    await assert.rejects(client.get("/hang", { signal: already.signal }), { name: "AbortError" });
  } finally {
    client.close();
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Watch.

interface Item {
  metadata: { name?: string; resourceVersion: string };
  data?: Record<string, string>;
}

/** Writes `bytes` in pieces cut at `cuts`, with a pause between pieces. */
async function writeInPieces(res: ServerResponse, bytes: Uint8Array, cuts: number[]) {
  let start = 0;
  for (const cut of [...new Set(cuts)].sort((a, b) => a - b).concat(bytes.length)) {
    if (cut <= start || cut > bytes.length) continue;
    res.write(bytes.subarray(start, cut));
    start = cut;
    await delay(3);
  }
}

Deno.test("watch: events split anywhere (inside lines and characters) are parsed in order", async () => {
  const events: WatchEvent<Item>[] = [
    { type: "ADDED", object: { metadata: { name: "a", resourceVersion: "11" } } },
    {
      type: "MODIFIED",
      object: { metadata: { name: "a", resourceVersion: "12" }, data: { note: "✓ héllo" } },
    },
    { type: "BOOKMARK", object: { metadata: { resourceVersion: "13" } } },
    { type: "DELETED", object: { metadata: { name: "a", resourceVersion: "14" } } },
  ];
  // Newline-terminated, except the last event (the stream ends right after it).
  const text = events.map((event) => JSON.stringify(event)).join("\n");
  const bytes = new TextEncoder().encode(text);
  const check = new TextEncoder().encode("✓");
  const at = Buffer.from(bytes).indexOf(Buffer.from(check));
  const cuts = [at + 1, at + 2];
  for (let i = 1; i < bytes.length; i += 17) cuts.push(i);
  bytes.forEach((byte, index) => byte === 0x0a && cuts.push(index, index + 1));
  const server = await startServer(async (_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    await writeInPieces(res, bytes, cuts);
    res.end();
  }, { tls: false });
  const client = new KubeClient(plain(server.url));
  try {
    const seen: WatchEvent<Item>[] = [];
    await client.watch<Item>(
      "/api/v1/namespaces/dapr-system/configmaps",
      {
        resourceVersion: "10",
        fieldSelector: "metadata.name=dapr-trust-bundle",
        timeoutSeconds: 300,
        allowWatchBookmarks: true,
      },
      async (event) => {
        await delay(1); // an async handler holds back the following events
        seen.push(event);
      },
    );
    assert.deepEqual(seen, events);
    const query = new URL(server.requests[0].url, "http://x");
    assert.equal(query.pathname, "/api/v1/namespaces/dapr-system/configmaps");
    assert.equal(query.searchParams.get("watch"), "true");
    assert.equal(query.searchParams.get("resourceVersion"), "10");
    assert.equal(query.searchParams.get("fieldSelector"), "metadata.name=dapr-trust-bundle");
    assert.equal(query.searchParams.get("timeoutSeconds"), "300");
    assert.equal(query.searchParams.get("allowWatchBookmarks"), "true");
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("watch: an ERROR event with a 410 Status rejects with KubeApiError 410", async () => {
  const server = await startServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.write(JSON.stringify({ type: "ADDED", object: { metadata: { resourceVersion: "5" } } }));
    res.write("\n");
    res.write(
      JSON.stringify({
        type: "ERROR",
        object: status(410, "Expired", "too old resource version: 1 (5)"),
      }) + "\n",
    );
    // keeps the stream open: the client must not wait for the end
  }, { tls: false });
  const client = new KubeClient(plain(server.url));
  try {
    const seen: string[] = [];
    await assert.rejects(
      client.watch<Item>("/api/v1/configmaps", { resourceVersion: "1" }, (event) => {
        seen.push(event.object.metadata.resourceVersion);
      }),
      (error: Error) => {
        assert.ok(error instanceof KubeApiError);
        assert.equal(error.status, 410);
        assert.equal(error.reason, "Expired");
        assert.ok(isGone(error));
        assert.equal(
          error.message,
          "kubernetes API: WATCH /api/v1/configmaps: 410 Gone: too old resource version: 1 (5)",
        );
        return true;
      },
    );
    assert.deepEqual(seen, ["5"]);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("watch: a failing start is retried like a request; a 410 answer is a KubeApiError", async () => {
  const server = await startServer((req, res, index) => {
    if (index === 0) return json(res, 500, status(500, "InternalError", "boom"));
    if (req.url.includes("resourceVersion=old")) {
      return json(res, 410, status(410, "Gone", "resourceVersion too old"));
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ type: "ADDED", object: { metadata: { resourceVersion: "9" } } }));
  }, { tls: false });
  const client = new KubeClient(plain(server.url), FAST);
  try {
    const seen: string[] = [];
    await client.watch<Item>("/api/v1/pods", {}, (e) => {
      seen.push(e.object.metadata.resourceVersion);
    });
    assert.deepEqual(seen, ["9"]);
    assert.equal(server.requests.length, 2);
    await assert.rejects(
      client.watch("/api/v1/pods", { resourceVersion: "old" }, () => {}),
      (error: Error) => isGone(error) && (error as KubeApiError).status === 410,
    );
    assert.equal(server.requests.length, 3);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("watch: abort through the signal ends the stream", async () => {
  let closedByClient: () => void = () => {};
  const clientGone = new Promise<void>((resolve) => closedByClient = resolve);
  const server = await startServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.write(
      JSON.stringify({ type: "ADDED", object: { metadata: { resourceVersion: "1" } } }) + "\n",
    );
    res.on("close", () => closedByClient());
  }, { tls: false });
  const client = new KubeClient(plain(server.url));
  try {
    const controller = new AbortController();
    const seen: string[] = [];
    await assert.rejects(
      client.watch<Item>("/api/v1/pods", { signal: controller.signal }, (event) => {
        seen.push(event.object.metadata.resourceVersion);
        controller.abort();
      }),
      { name: "AbortError" },
    );
    assert.deepEqual(seen, ["1"]);
    await clientGone;

    // Aborted while waiting for data.
    const later = new AbortController();
    const pending = client.watch("/api/v1/pods", { signal: later.signal }, () => {});
    setTimeout(() => later.abort(), 50);
    await assert.rejects(pending, { name: "AbortError" });
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("watch: a broken stream, a malformed event and a thrown handler error reject", async () => {
  const server = await startServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    if (req.url.startsWith("/broken")) {
      res.write(JSON.stringify({ type: "ADDED", object: {} }) + "\n");
      setTimeout(() => res.socket?.destroy(), 20);
    } else if (req.url.startsWith("/malformed")) {
      res.end("{not json\n");
    } else {
      res.end(JSON.stringify({ type: "ADDED", object: {} }) + "\n");
    }
  }, { tls: false });
  const client = new KubeClient(plain(server.url), FAST);
  try {
    await assert.rejects(client.watch("/broken", {}, () => {}), (error: Error) => {
      assert.ok(error instanceof KubeRequestError, `${error}`);
      assert.match(error.message, /^kubernetes API: WATCH \/broken: watch stream broke/);
      return true;
    });
    await assert.rejects(client.watch("/malformed", {}, () => {}), (error: Error) => {
      assert.ok(error instanceof KubeRequestError);
      assert.equal(error.code, "EBADRESPONSE");
      assert.match(error.message, /malformed watch event: \{not json/);
      return true;
    });
    await assert.rejects(
      client.watch("/fine", {}, () => {
        throw new Error("handler failed");
      }),
      /handler failed/,
    );
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("close() cancels a running watch", async () => {
  const server = await startServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.write("\n"); // blank lines (keepalives) are ignored
  }, { tls: false });
  const client = new KubeClient(plain(server.url));
  try {
    const pending = client.watch("/api/v1/pods", {}, () => {});
    await delay(50);
    client.close();
    await assert.rejects(pending, (error: Error) => {
      assert.ok(error instanceof KubeRequestError);
      assert.equal(error.code, "ECLOSED");
      return true;
    });
    await assert.rejects(client.get("/x"), /client closed/);
  } finally {
    await server.close();
  }
});
