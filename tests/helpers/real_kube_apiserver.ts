/**
 * A real Kubernetes API server for tests that must see what a cluster enforces (RBAC above all),
 * where the fake (tests/fakes/kube-apiserver.ts) only models it: kube-apiserver and etcd built
 * from published Go modules by tests/kube/build.sh (versions pinned in tests/kube/go.mod; the
 * first build downloads about 85 MB of module zips, 550 MB unpacked, and takes about 5.5
 * minutes on 2 CPUs; a cached one costs nothing). Starting both takes about 3 s.
 *
 * {@link startRealKubeApiServer} runs, on free loopback ports and in a temporary directory:
 * - etcd (our tests/kube/etcd main around go.etcd.io/etcd/server/v3/embed), plain HTTP;
 * - kube-apiserver with a serving certificate from a CA made with the openssl CLI,
 *   `--authorization-mode=RBAC`, a static admin token (`--token-auth-file`, group
 *   `system:masters`), service-account signing keys and `--api-audiences`.
 *
 * No controller-manager, scheduler or kubelet runs: objects are stored and served (pods stay
 * Pending), namespaces and service accounts must be created explicitly.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { generateKey, opensslServerTls } from "./openssl.ts";
import { builtDirectory, Daemon, waitFor } from "./daemon.ts";
import { freePort, tempDir } from "./sentry_process.ts";

const BUILD_SCRIPT = fileURLToPath(new URL("../kube/build.sh", import.meta.url));
const GO_MOD = fileURLToPath(new URL("../kube/go.mod", import.meta.url));

/** The issuer and default audience of service-account tokens, as in a kubeadm cluster. */
export const KUBE_API_AUDIENCE = "https://kubernetes.default.svc.cluster.local";

/** The answer to {@link RealKubeApiServer.request}. */
export interface KubeResponse {
  status: number;
  /** The body parsed as JSON, or its text when it is not JSON. */
  body: unknown;
}

/** Options of {@link RealKubeApiServer.request}. */
export interface KubeRequestOptions {
  /** Bearer token (default the admin token). */
  token?: string;
  /** Content type of the body (default `application/json`; the body is then JSON-encoded). */
  contentType?: string;
}

/** A running real kube-apiserver (and its etcd). */
export interface RealKubeApiServer {
  /** `https://127.0.0.1:PORT`. */
  url: string;
  /** The CA certificate (PEM) that issued the serving certificate. */
  caPem: string;
  /** A static token of user `admin` in group `system:masters` (RBAC allows it everything). */
  adminToken: string;
  /** The binaries' directory (kube-apiserver, etcd). */
  binDir: string;
  /** Writes a kubeconfig for this server (cluster `real`, the given token) to `path`. */
  writeKubeconfig(path: string, token?: string): Promise<string>;
  /**
   * Sends `method path` with `body` (JSON-encoded unless a string) and returns the status and
   * the parsed answer. A watch answers as soon as its headers arrive (its stream is dropped).
   */
  request(
    method: string,
    path: string,
    body?: unknown,
    options?: KubeRequestOptions,
  ): Promise<KubeResponse>;
  /**
   * A projected service-account token from the TokenRequest API (as the kubelet gets for a
   * pod's projected volume): creates namespace `namespace` and ServiceAccount `name` unless they
   * exist and, when `boundPod` is given, a Pod of that name running as the account (unless it
   * exists), the token then being bound to that pod (its name and uid in the claims).
   */
  serviceAccountToken(
    namespace: string,
    name: string,
    audiences: string[],
    boundPod?: string,
  ): Promise<string>;
  /** Stops kube-apiserver and etcd and removes their files. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Why a real kube-apiserver cannot be built on this machine (no Go, or one older than
 * tests/kube/go.mod asks for), or undefined when it can. Build errors are not looked for here:
 * they fail the tests.
 */
export async function realKubeUnavailable(): Promise<string | undefined> {
  let version: string;
  try {
    const out = await new Deno.Command("go", { args: ["env", "GOVERSION"], stderr: "null" })
      .output();
    if (!out.success) return "'go env GOVERSION' failed";
    version = new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "'go' is not installed (Go builds kube-apiserver: tests/kube/build.sh)";
  }
  const wanted = /^go (\d+)\.(\d+)/m.exec(await Deno.readTextFile(GO_MOD));
  const have = /^go(\d+)\.(\d+)/.exec(version);
  if (!wanted || !have) return undefined;
  const older = Number(have[1]) * 1000 + Number(have[2]) <
    Number(wanted[1]) * 1000 + Number(wanted[2]);
  return older
    ? `${version} is older than go ${wanted[1]}.${wanted[2]} of tests/kube/go.mod`
    : undefined;
}

/** Builds (or finds, cached) kube-apiserver and etcd; returns their directory. */
export function kubeBinaries(): Promise<string> {
  return builtDirectory(BUILD_SCRIPT);
}

/**
 * Builds (if needed) and starts etcd and kube-apiserver; resolves once `/readyz` answers 200.
 * `close()` (or `await using`) stops both.
 */
export async function startRealKubeApiServer(): Promise<RealKubeApiServer> {
  const binDir = await kubeBinaries();
  const dir = await tempDir("real-kube-");
  const at = (name: string) => join(dir, name);
  const daemons: Daemon[] = [];
  const client = { value: undefined as Deno.HttpClient | undefined };
  const stopAll = async () => {
    for (const daemon of daemons.reverse()) await daemon.stop();
    client.value?.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
    const etcdUrl = `http://127.0.0.1:${etcdPort}`;
    const etcd = new Daemon("etcd", join(binDir, "etcd"), [
      "-data-dir",
      at("etcd"),
      "-listen-client-url",
      etcdUrl,
      "-listen-peer-url",
      `http://127.0.0.1:${peerPort}`,
    ]);
    daemons.push(etcd);

    const tls = await opensslServerTls("real-kube-apiserver-ca");
    const adminToken = `admin-${crypto.randomUUID()}`;
    await Deno.writeTextFile(at("serving.crt"), tls.certPem);
    await Deno.writeTextFile(at("serving.key"), tls.keyPem);
    await Deno.writeTextFile(at("tokens.csv"), `${adminToken},admin,admin-uid,"system:masters"\n`);
    await Deno.writeTextFile(at("sa.key"), await generateKey("rsa-2048"));

    await waitFor(
      async () => {
        const health = await fetch(`${etcdUrl}/health`).catch(() => undefined);
        await health?.body?.cancel();
        return health?.status === 200;
      },
      30_000,
      () => `etcd did not become healthy within 30 s:\n${etcd.tail()}`,
    );

    const api = new Daemon("kube-apiserver", join(binDir, "kube-apiserver"), [
      `--etcd-servers=${etcdUrl}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${apiPort}`,
      `--cert-dir=${at("certs")}`,
      `--tls-cert-file=${at("serving.crt")}`,
      `--tls-private-key-file=${at("serving.key")}`,
      "--authorization-mode=RBAC",
      `--token-auth-file=${at("tokens.csv")}`,
      `--service-account-key-file=${at("sa.key")}`,
      `--service-account-signing-key-file=${at("sa.key")}`,
      `--service-account-issuer=${KUBE_API_AUDIENCE}`,
      `--api-audiences=${KUBE_API_AUDIENCE}`,
      "--service-cluster-ip-range=10.96.0.0/24", // only allocated, never contacted
      "--profiling=false",
      "--v=1",
    ]);
    daemons.push(api);

    const url = `https://127.0.0.1:${apiPort}`;
    client.value = Deno.createHttpClient({ caCerts: [tls.caPem] });
    const request = async (
      method: string,
      path: string,
      body?: unknown,
      options: KubeRequestOptions = {},
    ): Promise<KubeResponse> => {
      const headers: Record<string, string> = {
        authorization: `Bearer ${options.token ?? adminToken}`,
        accept: "application/json",
      };
      if (body !== undefined) headers["content-type"] = options.contentType ?? "application/json";
      const response = await fetch(`${url}${path}`, {
        method,
        headers,
        body: body === undefined
          ? undefined
          : typeof body === "string"
          ? body
          : JSON.stringify(body),
        client: client.value,
      });
      if (/[?&]watch=(1|true)/.test(path) && response.status === 200) {
        await response.body?.cancel();
        return { status: response.status, body: undefined };
      }
      const text = await response.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch { /* not JSON */ }
      return { status: response.status, body: parsed };
    };

    let exitedEarly = false;
    Promise.race(daemons.map((daemon) => daemon.exited)).then(() => exitedEarly = true);
    await waitFor(
      async () => {
        if (exitedEarly) {
          throw new Error(
            `etcd or kube-apiserver exited while starting:\n` +
              daemons.map((daemon) => `--- ${daemon.name}\n${daemon.tail()}`).join("\n"),
          );
        }
        const ready = await request("GET", "/readyz").catch(() => undefined);
        return ready?.status === 200;
      },
      120_000,
      () => `kube-apiserver was not ready within 120 s:\n${api.tail()}`,
    );

    /** POST `body` to `path` unless `path/name` exists (409 AlreadyExists is fine too). */
    const ensure = async (path: string, name: string, body: unknown) => {
      if ((await request("GET", `${path}/${name}`)).status === 200) return;
      const created = await request("POST", path, body);
      if (created.status !== 201 && created.status !== 409) {
        throw new Error(
          `creating ${path}/${name}: ${created.status} ${JSON.stringify(created.body)}`,
        );
      }
    };

    return {
      url,
      caPem: tls.caPem,
      adminToken,
      binDir,
      request,
      async writeKubeconfig(path: string, token = adminToken): Promise<string> {
        const config = {
          apiVersion: "v1",
          kind: "Config",
          clusters: [{
            name: "real",
            cluster: {
              server: url,
              "certificate-authority-data": Buffer.from(tls.caPem).toString("base64"),
            },
          }],
          users: [{ name: "real-user", user: { token } }],
          contexts: [{ name: "real", context: { cluster: "real", user: "real-user" } }],
          "current-context": "real",
        };
        await Deno.writeTextFile(path, JSON.stringify(config, null, 2)); // JSON is YAML
        return path;
      },
      async serviceAccountToken(namespace, name, audiences, boundPod) {
        await ensure("/api/v1/namespaces", namespace, {
          apiVersion: "v1",
          kind: "Namespace",
          metadata: { name: namespace },
        });
        const accounts = `/api/v1/namespaces/${namespace}/serviceaccounts`;
        await ensure(accounts, name, {
          apiVersion: "v1",
          kind: "ServiceAccount",
          metadata: { name },
        });
        let boundObjectRef: Record<string, string> | undefined;
        if (boundPod !== undefined) {
          const pods = `/api/v1/namespaces/${namespace}/pods`;
          await ensure(pods, boundPod, {
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: boundPod },
            spec: {
              serviceAccountName: name,
              automountServiceAccountToken: false,
              containers: [{ name: "app", image: "app:test" }],
            },
          });
          const pod = await request("GET", `${pods}/${boundPod}`);
          const uid = (pod.body as { metadata?: { uid?: string } }).metadata?.uid ?? "";
          boundObjectRef = { kind: "Pod", apiVersion: "v1", name: boundPod, uid };
        }
        const answer = await request("POST", `${accounts}/${name}/token`, {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: { audiences, ...(boundObjectRef ? { boundObjectRef } : {}) },
        });
        const token = (answer.body as { status?: { token?: string } })?.status?.token;
        if (answer.status !== 201 || !token) {
          throw new Error(
            `TokenRequest for ${namespace}/${name}: ${answer.status} ${
              JSON.stringify(answer.body)
            }`,
          );
        }
        return token;
      },
      close: stopAll,
      [Symbol.asyncDispose]: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}
