/**
 * The Vault HTTP client (src/vault/client.ts) against a tiny scripted server started here: each
 * scenario lists the requests the client must send (method, path, token, namespace, body) and the
 * answers Vault gives (KV v2 reads and writes, `auth/token/lookup-self`, `renew-self`,
 * `auth/<mount>/login`, Vault's `{"errors": [...]}` bodies, sealed and standby answers, answers
 * that never come). The server refuses anything off script, so an extra, missing or reordered
 * request fails the scenario.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import {
  type VaultAuth,
  VaultClient,
  type VaultClientOptions,
  VaultError,
  type VaultResponse,
  vaultWithoutNamespaces,
} from "../../src/vault/client.ts";
import { captureLog } from "../helpers/log_capture.ts";
import { opensslServerTls, type ServerTls } from "../helpers/openssl.ts";

// ---------------------------------------------------------------------------------------------
// The scripted server.

/** What Vault answers to one request. */
type Reply =
  | { status: number; body?: unknown; text?: string }
  /** Accept the request and never answer. */
  | { hang: true }
  /** Send the status line and half a body, then stall. */
  | { stallAfterHeaders: true }
  /** Close the connection without answering. */
  | { drop: true }
  /** Send the status line and half a body, then close the connection. */
  | { cutAfterHeaders: true }
  /** A standby without request forwarding: 307 to the same path on this server. */
  | { redirectToSelf: true };

/** One request the client must send, and the answer it gets. */
interface Exchange {
  /** `METHOD /v1/path` as received (with the query string). */
  expect: string;
  /** The `X-Vault-Token` header (null: must be absent). */
  token?: string | null;
  /** The decoded JSON body the client must send (omit to not check). */
  body?: unknown;
  reply: Reply;
}

/** A request as the server saw it. */
interface Seen {
  line: string;
  headers: IncomingMessage["headers"];
  body: string;
}

interface ScriptedVault {
  address: string;
  /** Appends exchanges to the script. */
  script(...exchanges: Exchange[]): void;
  /** Requests received so far. */
  seen: Seen[];
  /** Exchanges not yet used. */
  remaining(): Exchange[];
  /** Problems found (requests off script, wrong headers or bodies). */
  problems: string[];
  close(): Promise<void>;
}

const UNEXPECTED_STATUS = 599;

async function startVault(tls?: { certPem: string; keyPem: string }): Promise<ScriptedVault> {
  const queue: Exchange[] = [];
  const seen: Seen[] = [];
  const problems: string[] = [];
  const sockets = new Set<Socket>();
  const handler = (req: IncomingMessage, res: import("node:http").ServerResponse) => {
    const chunks: Uint8Array[] = [];
    req.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    req.on("end", () => {
      const line = `${req.method} ${req.url}`;
      const body = Buffer.concat(chunks).toString("utf8");
      seen.push({ line, headers: req.headers, body });
      const exchange = queue.shift();
      if (!exchange || exchange.expect !== line) {
        problems.push(`unexpected ${line} (expected ${exchange?.expect ?? "nothing"})`);
        res.writeHead(UNEXPECTED_STATUS, { "content-type": "application/json" });
        res.end(JSON.stringify({ errors: [`off script: ${line}`] }));
        return;
      }
      const token = req.headers["x-vault-token"];
      if (exchange.token !== undefined && (token ?? null) !== exchange.token) {
        problems.push(`${line}: token ${JSON.stringify(token)}, want ${exchange.token}`);
      }
      if (exchange.body !== undefined) {
        try {
          assert.deepEqual(JSON.parse(body), exchange.body);
          assert.equal(req.headers["content-type"], "application/json");
        } catch (error) {
          problems.push(`${line}: body ${body}: ${(error as Error).message}`);
        }
      }
      const reply = exchange.reply;
      if ("hang" in reply) return;
      if ("drop" in reply) {
        req.socket.destroy();
        return;
      }
      if ("cutAfterHeaders" in reply) {
        res.writeHead(200, { "content-type": "application/json", "content-length": "100" });
        res.write('{"data": ', () => setTimeout(() => req.socket.destroy(), 20));
        return;
      }
      if ("redirectToSelf" in reply) {
        const { port } = server.address() as AddressInfo;
        res.writeHead(307, {
          location: `${tls ? "https" : "http"}://127.0.0.1:${port}${req.url}`,
          "content-type": "application/json",
        });
        res.end();
        return;
      }
      if ("stallAfterHeaders" in reply) {
        res.writeHead(200, { "content-type": "application/json", "content-length": "100" });
        res.write('{"data": ');
        return;
      }
      const text = reply.text ?? (reply.body === undefined ? "" : JSON.stringify(reply.body));
      res.writeHead(reply.status, { "content-type": "application/json" });
      res.end(text);
    });
  };
  const server: Server = tls
    ? createHttpsServer({ cert: tls.certPem, key: tls.keyPem }, handler)
    : createHttpServer(handler);
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.on("secureConnection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  let closed = false;
  return {
    address: `${tls ? "https" : "http"}://127.0.0.1:${port}`,
    script: (...exchanges) => queue.push(...exchanges),
    seen,
    remaining: () => [...queue],
    problems,
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Vault's answers.

const KV_PATH = "secret/data/dapr/sentry/trust-bundle";
const METADATA_PATH = "secret/metadata/dapr/sentry/trust-bundle";

function envelope(data: unknown, extra: Record<string, unknown> = {}) {
  return {
    request_id: "8b7b5f3c-0c1e-4f6a-9a4e-2f0d8c1b2a3d",
    lease_id: "",
    renewable: false,
    lease_duration: 0,
    data,
    wrap_info: null,
    warnings: null,
    auth: null,
    ...extra,
  };
}

const KV_READ = envelope({
  data: { "ca.crt": "CA", "issuer.crt": "ISSUER", "issuer.key": "KEY" },
  metadata: { version: 3, created_time: "2026-01-01T00:00:00Z", deletion_time: "" },
});
const KV_WRITTEN = envelope({ version: 4, created_time: "2026-01-01T00:00:00Z" });

/** `auth/token/lookup-self` for a token that is not renewable (no timer is started). */
function lookupSelf(renewable = false, ttl = 0) {
  return envelope({ id: "hidden", ttl, renewable, policies: ["default", "dapr-sentry"] });
}

function login(token: string, leaseSeconds = 3600, renewable = false) {
  return envelope(null, {
    auth: {
      client_token: token,
      accessor: "acc",
      policies: ["default", "dapr-sentry"],
      lease_duration: leaseSeconds,
      renewable,
    },
  });
}

const PERMISSION_DENIED = { errors: ["permission denied"] };
/** An ACL denial, in go-multierror's format as Vault sends it. */
const ACL_DENIED = { errors: ["1 error occurred:\n\t* permission denied\n\n"] };
const SEALED = { errors: ["Vault is sealed"] };
const STANDBY = { errors: ["Vault is in standby mode"] };

// ---------------------------------------------------------------------------------------------
// Scenarios.

/** What a call must give: a response, or a VaultError. */
type Outcome =
  | { response: VaultResponse }
  | { error: { status: number; message: string | RegExp; transient: boolean; errors?: string[] } };

interface Call {
  method: string;
  path: string;
  body?: unknown;
  /** Runs before the call (e.g. rotates a token file). */
  before?: (files: TestFiles) => Promise<void>;
  exchanges: Exchange[];
  outcome: Outcome;
}

interface Scenario {
  name: string;
  auth: (files: TestFiles) => VaultAuth;
  namespace?: string;
  timeoutMs?: number;
  calls: Call[];
  /** Kubernetes logins expected in the end. */
  logins?: number;
}

interface TestFiles {
  dir: string;
  tokenFile: string;
  jwtFile: string;
}

const TOKEN: (files: TestFiles) => VaultAuth = () => ({ kind: "token", token: "s.root" });
const K8S: (files: TestFiles) => VaultAuth = (files) => ({
  kind: "kubernetes",
  role: "dapr-sentry",
  mount: "kubernetes",
  jwtFile: files.jwtFile,
});

function vaultError(
  status: number,
  message: string | RegExp,
  transient: boolean,
  errors?: string[],
): Outcome {
  return { error: { status, message, transient, errors } };
}

const SCENARIOS: Scenario[] = [
  {
    name: "token: looked up once, then sent as X-Vault-Token on every request",
    auth: TOKEN,
    calls: [
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [
          {
            expect: "GET /v1/auth/token/lookup-self",
            token: "s.root",
            reply: { status: 200, body: lookupSelf() },
          },
          { expect: `GET /v1/${KV_PATH}`, token: "s.root", reply: { status: 200, body: KV_READ } },
        ],
        outcome: { response: { status: 200, body: KV_READ } },
      },
      {
        method: "GET",
        path: METADATA_PATH,
        exchanges: [{
          expect: `GET /v1/${METADATA_PATH}`,
          token: "s.root",
          reply: { status: 200, body: envelope({ current_version: 3 }) },
        }],
        outcome: { response: { status: 200, body: envelope({ current_version: 3 }) } },
      },
    ],
  },
  {
    name: "token: a failed lookup is not an error; the request still goes out",
    auth: TOKEN,
    calls: [{
      method: "GET",
      path: KV_PATH,
      exchanges: [
        {
          expect: "GET /v1/auth/token/lookup-self",
          reply: { status: 403, body: PERMISSION_DENIED },
        },
        { expect: `GET /v1/${KV_PATH}`, token: "s.root", reply: { status: 200, body: KV_READ } },
      ],
      outcome: { response: { status: 200, body: KV_READ } },
    }],
  },
  {
    name: "KV v2 write: JSON body with check-and-set; leading slashes and queries kept right",
    auth: TOKEN,
    calls: [
      {
        method: "POST",
        path: `/${KV_PATH}`,
        body: { data: { "ca.crt": "CA" }, options: { cas: 0 } },
        exchanges: [
          { expect: "GET /v1/auth/token/lookup-self", reply: { status: 200, body: lookupSelf() } },
          {
            expect: `POST /v1/${KV_PATH}`,
            token: "s.root",
            body: { data: { "ca.crt": "CA" }, options: { cas: 0 } },
            reply: { status: 200, body: KV_WRITTEN },
          },
        ],
        outcome: { response: { status: 200, body: KV_WRITTEN } },
      },
      {
        method: "GET",
        path: `${KV_PATH}?version=3`,
        exchanges: [{
          expect: `GET /v1/${KV_PATH}?version=3`,
          reply: { status: 200, body: KV_READ },
        }],
        outcome: { response: { status: 200, body: KV_READ } },
      },
      {
        method: "POST",
        path: KV_PATH,
        body: { data: {}, options: { cas: 3 } },
        exchanges: [{
          expect: `POST /v1/${KV_PATH}`,
          body: { data: {}, options: { cas: 3 } },
          reply: { status: 204 },
        }],
        outcome: { response: { status: 204, body: undefined } },
      },
    ],
  },
  {
    name: "404 is an answer, not an error (nothing stored, or a deleted version)",
    auth: TOKEN,
    calls: [
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [
          { expect: "GET /v1/auth/token/lookup-self", reply: { status: 200, body: lookupSelf() } },
          { expect: `GET /v1/${KV_PATH}`, reply: { status: 404, body: { errors: [] } } },
        ],
        outcome: { response: { status: 404, body: { errors: [] } } },
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{
          expect: `GET /v1/${KV_PATH}`,
          reply: {
            status: 404,
            body: envelope({ data: null, metadata: { version: 2, deletion_time: "2026-01-01" } }),
          },
        }],
        outcome: {
          response: {
            status: 404,
            body: envelope({ data: null, metadata: { version: 2, deletion_time: "2026-01-01" } }),
          },
        },
      },
    ],
  },
  {
    name: "Vault's errors: the list is kept, joined with '; ' and whitespace folded in the message",
    auth: TOKEN,
    calls: [
      {
        method: "POST",
        path: KV_PATH,
        body: { data: {}, options: { cas: 1 } },
        exchanges: [
          { expect: "GET /v1/auth/token/lookup-self", reply: { status: 200, body: lookupSelf() } },
          {
            expect: `POST /v1/${KV_PATH}`,
            reply: {
              status: 400,
              body: { errors: ["check-and-set parameter did not match the current version"] },
            },
          },
        ],
        outcome: vaultError(
          400,
          `Vault POST /v1/${KV_PATH}: 400: check-and-set parameter did not match the current version`,
          false,
          ["check-and-set parameter did not match the current version"],
        ),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{
          expect: `GET /v1/${KV_PATH}`,
          reply: { status: 500, body: { errors: ["first problem", "second\n  problem"] } },
        }],
        outcome: vaultError(
          500,
          `Vault GET /v1/${KV_PATH}: 500: first problem; second problem`,
          true,
          ["first problem", "second\n  problem"],
        ),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{ expect: `GET /v1/${KV_PATH}`, reply: { status: 403, body: ACL_DENIED } }],
        outcome: vaultError(
          403,
          `Vault GET /v1/${KV_PATH}: 403: 1 error occurred: * permission denied`,
          true,
          ACL_DENIED.errors,
        ),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{ expect: `GET /v1/${KV_PATH}`, reply: { status: 502 } }],
        outcome: vaultError(502, `Vault GET /v1/${KV_PATH}: 502: no error message`, true, []),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{
          expect: `GET /v1/${KV_PATH}`,
          reply: { status: 502, text: "<html>Bad Gateway</html>" },
        }],
        outcome: vaultError(502, `Vault GET /v1/${KV_PATH}: 502: <html>Bad Gateway</html>`, true, [
          "<html>Bad Gateway</html>",
        ]),
      },
      {
        method: "PUT",
        path: "secret/config",
        body: { max_versions: 5 },
        exchanges: [{
          expect: "PUT /v1/secret/config",
          reply: {
            status: 405,
            body: { errors: ["1 error occurred:\n\t* unsupported operation\n\n"] },
          },
        }],
        outcome: vaultError(
          405,
          "Vault PUT /v1/secret/config: 405: 1 error occurred: * unsupported operation",
          false,
        ),
      },
    ],
  },
  {
    name: "sealed (503) and standby (429, 473): errors the store treats as 'try later'",
    auth: TOKEN,
    calls: [
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [
          { expect: "GET /v1/auth/token/lookup-self", reply: { status: 503, body: SEALED } },
          { expect: `GET /v1/${KV_PATH}`, token: "s.root", reply: { status: 503, body: SEALED } },
        ],
        outcome: vaultError(503, `Vault GET /v1/${KV_PATH}: 503: Vault is sealed`, true, [
          "Vault is sealed",
        ]),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{ expect: `GET /v1/${KV_PATH}`, reply: { status: 429, body: STANDBY } }],
        outcome: vaultError(429, `Vault GET /v1/${KV_PATH}: 429: Vault is in standby mode`, true),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{ expect: `GET /v1/${KV_PATH}`, reply: { status: 473, body: STANDBY } }],
        outcome: vaultError(473, `Vault GET /v1/${KV_PATH}: 473: Vault is in standby mode`, true),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{
          expect: `GET /v1/${KV_PATH}`,
          reply: { status: 412, body: { errors: ["required index state not present"] } },
        }],
        outcome: vaultError(412, /412: required index state not present$/, true),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{ expect: `GET /v1/${KV_PATH}`, reply: { status: 200, body: KV_READ } }],
        outcome: { response: { status: 200, body: KV_READ } },
      },
    ],
  },
  {
    name: "token: a refused token (403) is not retried",
    auth: TOKEN,
    calls: [{
      method: "GET",
      path: KV_PATH,
      exchanges: [
        {
          expect: "GET /v1/auth/token/lookup-self",
          reply: { status: 403, body: PERMISSION_DENIED },
        },
        { expect: `GET /v1/${KV_PATH}`, reply: { status: 403, body: PERMISSION_DENIED } },
      ],
      outcome: vaultError(403, `Vault GET /v1/${KV_PATH}: 403: permission denied`, true),
    }],
  },
  {
    name:
      "X-Vault-Namespace on every request, logins included (after the server's version says it has namespaces)",
    auth: K8S,
    namespace: "team-a/prod",
    calls: [{
      method: "GET",
      path: KV_PATH,
      exchanges: [
        {
          expect: "GET /v1/sys/seal-status",
          token: null,
          reply: { status: 200, body: { sealed: false, version: "1.17.3+ent" } },
        },
        {
          expect: "POST /v1/auth/kubernetes/login",
          token: null,
          reply: { status: 200, body: login("s.k8s-1") },
        },
        { expect: `GET /v1/${KV_PATH}`, token: "s.k8s-1", reply: { status: 200, body: KV_READ } },
      ],
      outcome: { response: { status: 200, body: KV_READ } },
    }],
    logins: 1,
  },
  {
    name:
      "a namespace with Vault Community Edition (no namespaces: it would ignore the header) is refused before anything is read; asked again on the next request",
    auth: TOKEN,
    namespace: "team-a",
    calls: [1, 2].map(() => ({
      method: "GET",
      path: KV_PATH,
      exchanges: [{
        expect: "GET /v1/sys/seal-status",
        token: null,
        reply: { status: 200, body: { sealed: false, version: "1.21.0" } },
      }],
      outcome: vaultError(
        400,
        /version 1\.21\.0, which has no namespaces \(an Enterprise feature\): it would ignore X-Vault-Namespace "team-a"/,
        false,
      ),
    })),
  },
  {
    name: "kubernetes: login with role and service-account JWT, then the token; 403 logs in again",
    auth: K8S,
    calls: [
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [
          {
            expect: "POST /v1/auth/kubernetes/login",
            token: null,
            body: { role: "dapr-sentry", jwt: "jwt-1" },
            reply: { status: 200, body: login("s.k8s-1") },
          },
          { expect: `GET /v1/${KV_PATH}`, token: "s.k8s-1", reply: { status: 200, body: KV_READ } },
        ],
        outcome: { response: { status: 200, body: KV_READ } },
      },
      {
        // The token expired (Vault says 403): log in again, with the JWT as it is now (kubelet
        // rotates it), and retry once.
        method: "POST",
        path: KV_PATH,
        body: { data: { a: "b" }, options: { cas: 3 } },
        before: (files) => Deno.writeTextFile(files.jwtFile, "jwt-2\n"),
        exchanges: [
          {
            expect: `POST /v1/${KV_PATH}`,
            token: "s.k8s-1",
            reply: { status: 403, body: PERMISSION_DENIED },
          },
          {
            expect: "POST /v1/auth/kubernetes/login",
            token: null,
            body: { role: "dapr-sentry", jwt: "jwt-2" },
            reply: { status: 200, body: login("s.k8s-2") },
          },
          {
            expect: `POST /v1/${KV_PATH}`,
            token: "s.k8s-2",
            body: { data: { a: "b" }, options: { cas: 3 } },
            reply: { status: 200, body: KV_WRITTEN },
          },
        ],
        outcome: { response: { status: 200, body: KV_WRITTEN } },
      },
      {
        // Refused again after a fresh login: the policy does not allow it; no loop.
        method: "GET",
        path: METADATA_PATH,
        exchanges: [
          {
            expect: `GET /v1/${METADATA_PATH}`,
            token: "s.k8s-2",
            reply: { status: 403, body: ACL_DENIED },
          },
          {
            expect: "POST /v1/auth/kubernetes/login",
            reply: { status: 200, body: login("s.k8s-3") },
          },
          {
            expect: `GET /v1/${METADATA_PATH}`,
            token: "s.k8s-3",
            reply: { status: 403, body: ACL_DENIED },
          },
        ],
        outcome: vaultError(
          403,
          `Vault GET /v1/${METADATA_PATH}: 403: 1 error occurred: * permission denied`,
          true,
        ),
      },
      {
        // Other errors do not log in again.
        method: "GET",
        path: KV_PATH,
        exchanges: [{
          expect: `GET /v1/${KV_PATH}`,
          token: "s.k8s-3",
          reply: { status: 503, body: SEALED },
        }],
        outcome: vaultError(503, `Vault GET /v1/${KV_PATH}: 503: Vault is sealed`, true),
      },
    ],
    logins: 3,
  },
  {
    name: "kubernetes: another mount; a refused or empty login is an error naming the login path",
    auth: (files) => ({ kind: "kubernetes", role: "r", mount: "k8s-east", jwtFile: files.jwtFile }),
    calls: [
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{
          expect: "POST /v1/auth/k8s-east/login",
          body: { role: "r", jwt: "jwt-1" },
          reply: { status: 403, body: PERMISSION_DENIED },
        }],
        outcome: vaultError(
          403,
          "Vault POST /v1/auth/k8s-east/login: 403: permission denied",
          true,
        ),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{
          expect: "POST /v1/auth/k8s-east/login",
          reply: { status: 400, body: { errors: ['invalid role name "r"'] } },
        }],
        outcome: vaultError(
          400,
          'Vault POST /v1/auth/k8s-east/login: 400: invalid role name "r"',
          false,
        ),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{
          expect: "POST /v1/auth/k8s-east/login",
          reply: { status: 200, body: envelope(null) },
        }],
        outcome: vaultError(
          200,
          "Vault POST /v1/auth/k8s-east/login: 200: no error message",
          false,
        ),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [
          { expect: "POST /v1/auth/k8s-east/login", reply: { status: 200, body: login("s.ok") } },
          { expect: `GET /v1/${KV_PATH}`, token: "s.ok", reply: { status: 200, body: KV_READ } },
        ],
        outcome: { response: { status: 200, body: KV_READ } },
      },
    ],
    logins: 1,
  },
  {
    name: "kubernetes: an unreadable service-account token is an error; nothing is sent",
    auth: (files) => ({ ...K8S(files), jwtFile: join(files.dir, "missing") } as VaultAuth),
    calls: [{
      method: "GET",
      path: KV_PATH,
      exchanges: [],
      outcome: vaultError(0, /^cannot read the service-account token .*missing: /, true),
    }],
    logins: 0,
  },
  {
    name: "token file: re-read on every call (an agent rotates it), never looked up",
    auth: (files) => ({ kind: "token", token: "s.ignored", tokenFile: files.tokenFile }),
    calls: [
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{
          expect: `GET /v1/${KV_PATH}`,
          token: "s.file-1",
          reply: { status: 200, body: KV_READ },
        }],
        outcome: { response: { status: 200, body: KV_READ } },
      },
      {
        method: "GET",
        path: KV_PATH,
        before: (files) => Deno.writeTextFile(files.tokenFile, "  s.file-2\n"),
        exchanges: [{
          expect: `GET /v1/${KV_PATH}`,
          token: "s.file-2",
          reply: { status: 200, body: KV_READ },
        }],
        outcome: { response: { status: 200, body: KV_READ } },
      },
      {
        method: "GET",
        path: KV_PATH,
        before: (files) => Deno.remove(files.tokenFile),
        exchanges: [],
        outcome: vaultError(0, /^cannot read the Vault token file .*token: /, true),
      },
    ],
  },
  {
    name: "no token at all: an error saying how to give one; nothing is sent",
    auth: () => ({ kind: "token" }),
    calls: [{
      method: "GET",
      path: KV_PATH,
      exchanges: [],
      outcome: vaultError(
        0,
        "no Vault token: set VAULT_TOKEN, --vault-token-file or --vault-k8s-role",
        true,
      ),
    }],
  },
  {
    name: "an answer that never comes: unreachable (status 0) after the timeout",
    auth: TOKEN,
    timeoutMs: 300,
    calls: [
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [
          { expect: "GET /v1/auth/token/lookup-self", reply: { hang: true } },
          { expect: `GET /v1/${KV_PATH}`, reply: { hang: true } },
        ],
        outcome: vaultError(
          0,
          /^Vault at http:\/\/127\.0\.0\.1:\d+ is unreachable: request timed out$/,
          true,
        ),
      },
      {
        // The status line came, the body stalls.
        method: "GET",
        path: KV_PATH,
        exchanges: [{ expect: `GET /v1/${KV_PATH}`, reply: { stallAfterHeaders: true } }],
        outcome: vaultError(
          0,
          /^Vault at http:\/\/127\.0\.0\.1:\d+ is unreachable: request timed out$/,
          true,
        ),
      },
      {
        method: "GET",
        path: KV_PATH,
        exchanges: [{ expect: `GET /v1/${KV_PATH}`, reply: { status: 200, body: KV_READ } }],
        outcome: { response: { status: 200, body: KV_READ } },
      },
    ],
  },
  {
    name: "a connection closed without an answer: unreachable (status 0)",
    auth: TOKEN,
    calls: [{
      method: "GET",
      path: KV_PATH,
      exchanges: [
        { expect: "GET /v1/auth/token/lookup-self", reply: { drop: true } },
        { expect: `GET /v1/${KV_PATH}`, reply: { drop: true } },
      ],
      outcome: vaultError(0, /^Vault at http:\/\/127\.0\.0\.1:\d+ is unreachable: /, true),
    }],
  },
  {
    name: "a connection closed in the middle of the body: unreachable (status 0)",
    auth: (files) => ({ kind: "token", tokenFile: files.tokenFile }),
    calls: [{
      method: "GET",
      path: KV_PATH,
      exchanges: [{ expect: `GET /v1/${KV_PATH}`, reply: { cutAfterHeaders: true } }],
      outcome: vaultError(0, /^Vault at http:\/\/127\.0\.0\.1:\d+ is unreachable: /, true),
    }],
  },
  {
    name: "a standby without request forwarding (307 to the active node): the redirect is followed",
    auth: (files) => ({ kind: "token", tokenFile: files.tokenFile }),
    calls: [{
      method: "POST",
      path: KV_PATH,
      body: { data: {}, options: { cas: 0 } },
      exchanges: [
        { expect: `POST /v1/${KV_PATH}`, reply: { redirectToSelf: true } },
        {
          expect: `POST /v1/${KV_PATH}`,
          token: "s.file-1",
          body: { data: {}, options: { cas: 0 } },
          reply: { status: 200, body: KV_WRITTEN },
        },
      ],
      outcome: { response: { status: 200, body: KV_WRITTEN } },
    }],
  },
];

async function makeFiles(): Promise<TestFiles> {
  const dir = await Deno.makeTempDir({ prefix: "vault-client-" });
  const files = { dir, tokenFile: join(dir, "token"), jwtFile: join(dir, "sa-token") };
  await Deno.writeTextFile(files.tokenFile, "s.file-1\n");
  await Deno.writeTextFile(files.jwtFile, "jwt-1\n");
  return files;
}

/** Longest a call may take in these tests (the timeout scenarios use 300 ms). */
const CALL_DEADLINE_MS = 5000;

/** `promise`, or a rejection when it has not settled within CALL_DEADLINE_MS. */
async function withDeadline<T>(promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer within ${CALL_DEADLINE_MS} ms`)),
      CALL_DEADLINE_MS,
    );
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function checkOutcome(call: Promise<VaultResponse>, outcome: Outcome): Promise<void> {
  const promise = withDeadline(call);
  if ("response" in outcome) {
    assert.deepEqual(await promise, outcome.response);
    return;
  }
  const want = outcome.error;
  await assert.rejects(promise, (error: Error) => {
    assert.ok(error instanceof VaultError, `not a VaultError: ${error}`);
    assert.equal(error.name, "VaultError");
    assert.equal(error.status, want.status, `status of: ${error.message}`);
    if (typeof want.message === "string") assert.equal(error.message, want.message);
    else assert.match(error.message, want.message);
    assert.equal(error.transient, want.transient, `transient of: ${error.message}`);
    if (want.errors) assert.deepEqual(error.errors, want.errors);
    return true;
  });
}

Deno.test("VaultClient against scripted Vault answers, table-driven", async (t) => {
  for (const scenario of SCENARIOS) {
    await t.step({
      name: scenario.name,
      fn: async () => {
        const vault = await startVault();
        const files = await makeFiles();
        const client = new VaultClient({
          address: vault.address,
          namespace: scenario.namespace,
          auth: scenario.auth(files),
          timeoutMs: scenario.timeoutMs,
        });
        try {
          assert.equal(client.address, vault.address);
          for (const [index, call] of scenario.calls.entries()) {
            await call.before?.(files);
            const before = vault.seen.length;
            vault.script(...call.exchanges);
            await checkOutcome(client.request(call.method, call.path, call.body), call.outcome);
            assert.deepEqual(vault.problems, [], `call ${index}`);
            assert.deepEqual(vault.remaining(), [], `call ${index}: requests not sent`);
            for (const seen of vault.seen.slice(before)) {
              assert.equal(seen.headers["accept"], "application/json", seen.line);
              // sys/seal-status is a root-namespace path: asked without the header.
              const namespace = seen.line.startsWith("GET /v1/sys/seal-status")
                ? undefined
                : scenario.namespace;
              assert.equal(seen.headers["x-vault-namespace"], namespace, seen.line);
              if (seen.body !== "") {
                assert.equal(seen.headers["content-type"], "application/json", seen.line);
                assert.equal(Number(seen.headers["content-length"]), Buffer.byteLength(seen.body));
              }
            }
          }
          if (scenario.logins !== undefined) assert.equal(client.logins, scenario.logins);
        } finally {
          client.close();
          await vault.close();
          await Deno.remove(files.dir, { recursive: true });
        }
      },
    });
  }
});

Deno.test("VaultError.transient: which statuses mean 'try later'", () => {
  const table: [number, boolean][] = [
    [0, true], // connection failed, timed out
    [400, false],
    [401, false],
    [403, true], // token expired or not yet usable
    [404, false],
    [405, false],
    [412, true], // eventual consistency on performance standbys
    [429, true], // standby, rate limited
    [473, true], // performance standby
    [500, true],
    [502, true],
    [503, true], // sealed
  ];
  for (const [status, transient] of table) {
    assert.equal(new VaultError(status, [], "m").transient, transient, `status ${status}`);
  }
});

Deno.test("VaultClient: Vault not listening at all is unreachable (status 0)", async () => {
  const vault = await startVault();
  const address = vault.address;
  await vault.close();
  const client = new VaultClient({ address, auth: { kind: "token", token: "s.root" } });
  try {
    await checkOutcome(
      client.request("GET", KV_PATH),
      vaultError(
        0,
        new RegExp(`^Vault at ${address.replaceAll(".", "\\.")} is unreachable: `),
        true,
      ),
    );
  } finally {
    client.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Token renewal.

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("token: a renewable token is renewed at two thirds of its TTL, until close()", async () => {
  const vault = await startVault();
  const client = new VaultClient({
    address: vault.address,
    auth: { kind: "token", token: "s.root" },
  });
  try {
    // TTL 2.4 s: renewed after 1.6 s (two thirds).
    vault.script(
      {
        expect: "GET /v1/auth/token/lookup-self",
        token: "s.root",
        reply: { status: 200, body: lookupSelf(true, 2.4) },
      },
      { expect: `GET /v1/${KV_PATH}`, reply: { status: 200, body: KV_READ } },
    );
    const started = Date.now();
    await client.request("GET", KV_PATH);
    vault.script({
      expect: "POST /v1/auth/token/renew-self",
      token: "s.root",
      body: {},
      reply: { status: 200, body: login("s.root", 1.5, true) },
    });
    await delay(1200);
    assert.equal(vault.remaining().length, 1, "renewed before two thirds of the TTL");
    // The renewal's answer (a lease of 1.5 s) schedules the next one, 1 s later.
    vault.script({
      expect: "POST /v1/auth/token/renew-self",
      token: "s.root",
      body: {},
      reply: { status: 200, body: login("s.root", 1.5, true) },
    });
    await delay(800);
    assert.equal(vault.remaining().length, 1, "not renewed at two thirds of the TTL");
    assert.ok(Date.now() - started >= 1600);
    await delay(1000);
    assert.deepEqual(vault.remaining(), [], "not renewed again after the renewal's lease");
    assert.deepEqual(vault.problems, []);
    // close() stops renewing.
    client.close();
    await delay(1300);
    assert.deepEqual(vault.problems, [], "a request after close()");
    assert.equal(vault.seen.length, 4);
  } finally {
    client.close();
    await vault.close();
  }
});

Deno.test("kubernetes: a failed renewal forgets the token, so the next request logs in again", async () => {
  const vault = await startVault();
  const files = await makeFiles();
  const client = new VaultClient({ address: vault.address, auth: K8S(files) });
  try {
    vault.script(
      {
        expect: "POST /v1/auth/kubernetes/login",
        reply: { status: 200, body: login("s.k8s-1", 1.5, true) },
      },
      { expect: `GET /v1/${KV_PATH}`, token: "s.k8s-1", reply: { status: 200, body: KV_READ } },
      {
        expect: "POST /v1/auth/token/renew-self",
        token: "s.k8s-1",
        reply: { status: 403, body: PERMISSION_DENIED },
      },
    );
    await client.request("GET", KV_PATH);
    await delay(1300);
    assert.deepEqual(vault.remaining(), [], "no renewal attempt");
    vault.script(
      { expect: "POST /v1/auth/kubernetes/login", reply: { status: 200, body: login("s.k8s-2") } },
      { expect: `GET /v1/${KV_PATH}`, token: "s.k8s-2", reply: { status: 200, body: KV_READ } },
    );
    await client.request("GET", KV_PATH);
    assert.deepEqual(vault.problems, []);
    assert.deepEqual(vault.remaining(), []);
    assert.equal(client.logins, 2);
  } finally {
    client.close();
    await vault.close();
    await Deno.remove(files.dir, { recursive: true });
  }
});

Deno.test("kubernetes: a renewal capped by the max TTL drops the token, so the next request logs in while it is still valid", async () => {
  const vault = await startVault();
  const files = await makeFiles();
  const { logger, messages } = captureLog("info");
  const client = new VaultClient({ address: vault.address, auth: K8S(files), logger });
  try {
    vault.script(
      {
        expect: "POST /v1/auth/kubernetes/login",
        reply: { status: 200, body: login("s.k8s-1", 1.5, true) },
      },
      { expect: `GET /v1/${KV_PATH}`, token: "s.k8s-1", reply: { status: 200, body: KV_READ } },
      {
        expect: "POST /v1/auth/token/renew-self",
        token: "s.k8s-1",
        reply: { status: 200, body: login("s.k8s-1", 1, true) },
      },
    );
    await client.request("GET", KV_PATH);
    await delay(1300);
    assert.deepEqual(vault.remaining(), [], "renewed once");
    assert.ok(
      messages.some((m) => /reaches its max TTL in 1s: logging in again/.test(m)),
      messages.join("\n"),
    );
    vault.script(
      { expect: "POST /v1/auth/kubernetes/login", reply: { status: 200, body: login("s.k8s-2") } },
      { expect: `GET /v1/${KV_PATH}`, token: "s.k8s-2", reply: { status: 200, body: KV_READ } },
    );
    await client.request("GET", KV_PATH);
    assert.deepEqual(vault.problems, []);
    assert.deepEqual(vault.remaining(), []);
    assert.equal(client.logins, 2);
    assert.ok(!messages.some((m) => /could not renew/.test(m)), "no failed renewal on the way");
  } finally {
    client.close();
    await vault.close();
    await Deno.remove(files.dir, { recursive: true });
  }
});

Deno.test("token: a token that is not renewable is never renewed", async () => {
  const vault = await startVault();
  const client = new VaultClient({
    address: vault.address,
    auth: { kind: "token", token: "s.root" },
  });
  try {
    vault.script(
      {
        expect: "GET /v1/auth/token/lookup-self",
        reply: { status: 200, body: lookupSelf(false, 1.5) },
      },
      { expect: `GET /v1/${KV_PATH}`, reply: { status: 200, body: KV_READ } },
    );
    await client.request("GET", KV_PATH);
    await delay(1200);
    assert.deepEqual(vault.problems, []);
    assert.equal(vault.seen.length, 2);
  } finally {
    client.close();
    await vault.close();
  }
});

// ---------------------------------------------------------------------------------------------
// TLS.

/** A new test CA and a server certificate for 127.0.0.1 (another CA each call). */
function makeTls(): Promise<ServerTls> {
  return opensslServerTls("vault test CA");
}

Deno.test("TLS: Vault's CA from --vault-cacert is trusted; without it the certificate is refused unless verification is off", async (t) => {
  const tls = await makeTls();
  const vault = await startVault(tls);
  const cases: { name: string; options: Partial<VaultClientOptions>; trusted: boolean }[] = [
    { name: "the test CA given", options: { caCertPem: tls.caPem }, trusted: true },
    { name: "no CA given", options: {}, trusted: false },
    { name: "another CA given", options: { caCertPem: (await makeTls()).caPem }, trusted: false },
    { name: "no CA, verification off", options: { skipVerify: true }, trusted: true },
  ];
  try {
    for (const testCase of cases) {
      await t.step(testCase.name, async () => {
        const client = new VaultClient({
          address: vault.address,
          auth: { kind: "token", token: "s.root" },
          ...testCase.options,
        });
        try {
          if (testCase.trusted) {
            vault.script(
              {
                expect: "GET /v1/auth/token/lookup-self",
                reply: { status: 200, body: lookupSelf() },
              },
              {
                expect: `GET /v1/${KV_PATH}`,
                token: "s.root",
                reply: { status: 200, body: KV_READ },
              },
            );
            await checkOutcome(client.request("GET", KV_PATH), {
              response: { status: 200, body: KV_READ },
            });
          } else {
            await checkOutcome(
              client.request("GET", KV_PATH),
              vaultError(
                0,
                /^Vault at https:\/\/127\.0\.0\.1:\d+ is unreachable: .*(certificate|issuer)/i,
                true,
              ),
            );
          }
          assert.deepEqual(vault.problems, []);
          assert.deepEqual(vault.remaining(), []);
        } finally {
          client.close();
        }
      });
    }
  } finally {
    await vault.close();
  }
});

Deno.test("vaultWithoutNamespaces: Vault Community Edition versions only", () => {
  for (const version of ["1.21.0", "1.15.2", "v1.9.10", "1.22.0-beta1"]) {
    assert.equal(vaultWithoutNamespaces(version), true, version);
  }
  for (const version of ["1.21.0+ent", "1.15.2+ent.hsm", "2.6.2", "2.3.0-beta20250601", ""]) {
    assert.equal(vaultWithoutNamespaces(version), false, version);
  }
});
