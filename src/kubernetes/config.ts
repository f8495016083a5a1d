/**
 * Where the Kubernetes API server is and how to authenticate to it, found the way
 * controller-runtime's `GetConfig` (which Dapr's sentry uses) finds it:
 *
 * 1. a kubeconfig file named explicitly (`--kubeconfig`);
 * 2. the `KUBECONFIG` environment variable — only its FIRST file is read (kubectl merges all
 *    the files of the list; sentry does not);
 * 3. in-cluster settings: `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT` and the pod's
 *    service-account files (CA, token, namespace) under
 *    `/var/run/secrets/kubernetes.io/serviceaccount/`;
 * 4. `$HOME/.kube/config`, when it exists.
 *
 * From a kubeconfig, the current context (or the one asked for) selects a cluster (`server`,
 * `certificate-authority[-data]`, `insecure-skip-tls-verify`, `tls-server-name`), a user
 * (`token`, `tokenFile`, `client-certificate[-data]` + `client-key[-data]`) and a namespace.
 * Relative file paths are resolved against the kubeconfig's directory. Authentication that
 * needs a helper program or a cloud SDK (`exec`, `auth-provider`), basic auth and proxies are
 * not supported and are refused with an error naming them.
 *
 * Bearer tokens read from files (the in-cluster token, a kubeconfig `tokenFile`) are not read
 * here: the client re-reads the file on every request, because the kubelet rotates projected
 * service-account tokens.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import { stat } from "node:fs/promises";
import { readSmallFile } from "../util/bounded-read.ts";
import { delimiter, dirname, isAbsolute, join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { isRecord } from "../util/records.ts";
import { fileErrorReason } from "../util/file-errors.ts";

/** Settings that cannot be found, read or used; the message names the file and the field. */
export class KubeConfigError extends Error {
  override name = "KubeConfigError";
}

/** The service-account directory Kubernetes mounts into pods. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** Files of the in-cluster configuration (overridable for tests). */
export interface InClusterPaths {
  /** Default `/var/run/secrets/kubernetes.io/serviceaccount/token`. */
  tokenPath?: string;
  /** Default `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`. */
  caPath?: string;
  /** Default `/var/run/secrets/kubernetes.io/serviceaccount/namespace`. */
  namespacePath?: string;
}

/** Everything a {@link KubeClient} needs to reach and authenticate to an API server. */
export interface KubeConnection {
  /** Base URL of the API server (`https://10.96.0.1:443`), without a trailing slash; may carry
   * a path prefix (some proxies serve the API under one). */
  server: string;
  /** PEM certificate(s) trusted for the server instead of the system roots. */
  caPem?: string;
  /** Skip verification of the server's certificate (kubeconfig `insecure-skip-tls-verify`). */
  insecureSkipTlsVerify: boolean;
  /** Name checked against the server's certificate instead of the host (`tls-server-name`). */
  tlsServerName?: string;
  /** A fixed bearer token. */
  token?: string;
  /** A file holding the bearer token, re-read for every request (set only when `token` is
   * not). */
  tokenFile?: string;
  /** PEM client certificate (chain) for TLS client authentication. */
  clientCertPem?: string;
  /** PEM private key of `clientCertPem`. */
  clientKeyPem?: string;
  /** The namespace of the context, or of the pod in-cluster; undefined when not set. */
  namespace?: string;
  /** Which kind of settings these are. */
  source: "in-cluster" | "kubeconfig";
  /** For messages, e.g. `kubeconfig /home/me/.kube/config (context kind-dev)` or
   * `in-cluster service account`. */
  description: string;
}

/** Where to look for settings. */
export interface LoadKubeConfigOptions {
  /** A kubeconfig file named on the command line (`--kubeconfig`); wins over everything. */
  kubeconfigPath?: string;
  /** The kubeconfig context to use instead of its `current-context`. */
  context?: string;
  /** The process environment (`KUBECONFIG`, `KUBERNETES_SERVICE_HOST`/`_PORT`, `HOME`). */
  env: Readonly<Record<string, string | undefined>>;
  /** Overrides of the in-cluster service-account files. */
  inCluster?: InClusterPaths;
}

/**
 * Finds the connection settings (see the module documentation for the order) and loads them.
 * Throws {@link KubeConfigError} when none are found or the ones found cannot be used.
 */
export async function loadKubeConfig(options: LoadKubeConfigOptions): Promise<KubeConnection> {
  const { env } = options;
  if (options.kubeconfigPath) {
    return await loadKubeConfigFile(options.kubeconfigPath, options.context);
  }
  const fromEnv = firstKubeconfigPath(env.KUBECONFIG);
  if (fromEnv !== undefined) return await loadKubeConfigFile(fromEnv, options.context);
  if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT) {
    return await loadInClusterConfig(env, options.inCluster);
  }
  const home = env.HOME || env.USERPROFILE;
  if (home) {
    const path = join(home, ".kube", "config");
    if (await isFile(path)) return await loadKubeConfigFile(path, options.context);
  }
  throw new KubeConfigError(
    "no Kubernetes configuration found: not running in a cluster (KUBERNETES_SERVICE_HOST and " +
      "KUBERNETES_SERVICE_PORT are not set) and no kubeconfig (--kubeconfig, KUBECONFIG, " +
      "$HOME/.kube/config)",
  );
}

/** The first non-empty file of a `KUBECONFIG` list (the others are ignored). */
export function firstKubeconfigPath(value: string | undefined): string | undefined {
  if (!value) return undefined;
  return value.split(delimiter).map((part) => part.trim()).find((part) => part !== "");
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readSmallFile(path);
  } catch (error) {
    throw new KubeConfigError(`${what} ${path}: ${fileErrorReason(error)}`);
  }
}

/** `host:port` as a URL authority, bracketing IPv6 addresses. */
function authority(host: string, port: string): string {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return bare.includes(":") ? `[${bare}]:${port}` : `${bare}:${port}`;
}

/**
 * The in-cluster settings: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the
 * service-account CA, token file (checked now, re-read by the client on every request) and
 * namespace (undefined when the file is absent).
 */
export async function loadInClusterConfig(
  env: Readonly<Record<string, string | undefined>>,
  paths: InClusterPaths = {},
): Promise<KubeConnection> {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) {
    throw new KubeConfigError(
      "not running in a Kubernetes cluster: KUBERNETES_SERVICE_HOST and " +
        "KUBERNETES_SERVICE_PORT must both be set",
    );
  }
  if (!/^\d{1,5}$/.test(port.trim())) {
    throw new KubeConfigError(
      `KUBERNETES_SERVICE_PORT ${JSON.stringify(port)} is not a port number`,
    );
  }
  const tokenPath = paths.tokenPath ?? `${SERVICE_ACCOUNT_DIR}/token`;
  const caPath = paths.caPath ?? `${SERVICE_ACCOUNT_DIR}/ca.crt`;
  const namespacePath = paths.namespacePath ?? `${SERVICE_ACCOUNT_DIR}/namespace`;
  const token = (await readText(tokenPath, "in-cluster service-account token")).trim();
  if (token === "") {
    throw new KubeConfigError(`in-cluster service-account token ${tokenPath}: file is empty`);
  }
  const caPem = checkCertificates(
    await readText(caPath, "in-cluster service-account CA"),
    `in-cluster service-account CA ${caPath}`,
  );
  let namespace: string | undefined;
  try {
    namespace = (await readSmallFile(namespacePath)).trim() || undefined;
  } catch (error) {
    if ((error as { code?: string }).code !== "ENOENT") {
      throw new KubeConfigError(
        `in-cluster service-account namespace ${namespacePath}: ${fileErrorReason(error)}`,
      );
    }
  }
  return {
    server: `https://${authority(host.trim(), port.trim())}`,
    caPem,
    insecureSkipTlsVerify: false,
    tokenFile: tokenPath,
    namespace,
    source: "in-cluster",
    description: "in-cluster service account",
  };
}

/** Reads and interprets a kubeconfig file (see {@link parseKubeConfig}). */
export async function loadKubeConfigFile(
  path: string,
  context?: string,
): Promise<KubeConnection> {
  const absolute = resolve(path);
  const text = await readText(absolute, "kubeconfig");
  return await parseKubeConfig(text, absolute, context);
}

type Doc = Record<string, unknown>;

/** The `entry[field]` of the element of `list` named `name`. */
function named(doc: Doc, list: string, field: string, name: string, where: string): Doc {
  const entries = doc[list];
  const all = Array.isArray(entries) ? entries.filter(isRecord) : [];
  const entry = all.find((candidate) => candidate.name === name);
  if (!entry) {
    const known = all.map((candidate) => JSON.stringify(String(candidate.name)));
    throw new KubeConfigError(
      `${where}: no ${field} named ${JSON.stringify(name)} in "${list}"` +
        (known.length ? ` (found ${known.join(", ")})` : ""),
    );
  }
  const value = entry[field];
  if (value === undefined || value === null) return {};
  if (!isRecord(value)) {
    throw new KubeConfigError(`${where}: ${field} ${JSON.stringify(name)} is not a mapping`);
  }
  return value;
}

function optionalString(record: Doc, key: string, where: string): string | undefined {
  const value = record[key];
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") {
    throw new KubeConfigError(`${where}: "${key}" must be a string`);
  }
  return value;
}

function decodeData(value: string, where: string): string {
  const compact = value.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) {
    throw new KubeConfigError(`${where}: not valid base64`);
  }
  return Buffer.from(compact, "base64").toString("utf8");
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Checks that `pem` holds at least one parsable certificate; returns it unchanged. */
function checkCertificates(pem: string, where: string): string {
  const blocks = pem.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) throw new KubeConfigError(`${where}: no PEM certificate found`);
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (error) {
      throw new KubeConfigError(`${where}: invalid certificate: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
  return pem;
}

function checkKey(pem: string, where: string): string {
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new KubeConfigError(`${where}: no PEM private key found`);
  }
  return pem;
}

/**
 * Reads `<field>-data` (base64, wins) or `<field>` (a file, relative to `baseDir`) of `record`.
 */
async function fileOrData(
  record: Doc,
  field: string,
  baseDir: string,
  where: string,
): Promise<string | undefined> {
  const data = optionalString(record, `${field}-data`, where);
  if (data !== undefined) return decodeData(data, `${where}: "${field}-data"`);
  const file = optionalString(record, field, where);
  if (file === undefined) return undefined;
  const path = isAbsolute(file) ? file : join(baseDir, file);
  return await readText(path, `${where}: "${field}"`);
}

/**
 * Interprets kubeconfig `text` (YAML or JSON) read from `path` (used for messages and to
 * resolve relative file names): the context `context` or the file's `current-context`, its
 * cluster, user and namespace. Files the kubeconfig names (CA, client certificate and key) are
 * read now; a `tokenFile` is checked now and re-read by the client on every request.
 */
export async function parseKubeConfig(
  text: string,
  path: string,
  context?: string,
): Promise<KubeConnection> {
  const where = `kubeconfig ${path}`;
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (error) {
    throw new KubeConfigError(`${where}: not valid YAML: ${(error as Error).message}`, {
      cause: error,
    });
  }
  if (!isRecord(doc)) throw new KubeConfigError(`${where}: not a kubeconfig (expected a mapping)`);
  const baseDir = dirname(resolve(path));

  const contextName = context || optionalString(doc, "current-context", where);
  if (contextName === undefined) {
    throw new KubeConfigError(
      `${where}: no current-context is set (set one with "kubectl config use-context", or ` +
        `name a context)`,
    );
  }
  const ctx = named(doc, "contexts", "context", contextName, where);
  const ctxWhere = `${where}: context ${JSON.stringify(contextName)}`;
  const clusterName = optionalString(ctx, "cluster", ctxWhere);
  if (clusterName === undefined) throw new KubeConfigError(`${ctxWhere}: names no cluster`);
  const userName = optionalString(ctx, "user", ctxWhere);
  const namespace = optionalString(ctx, "namespace", ctxWhere);

  // Cluster.
  const cluster = named(doc, "clusters", "cluster", clusterName, where);
  const clusterWhere = `${where}: cluster ${JSON.stringify(clusterName)}`;
  const serverText = optionalString(cluster, "server", clusterWhere);
  if (serverText === undefined) throw new KubeConfigError(`${clusterWhere}: no "server"`);
  let url: URL;
  try {
    url = new URL(serverText);
  } catch {
    throw new KubeConfigError(
      `${clusterWhere}: "server" ${JSON.stringify(serverText)} is not a valid URL`,
    );
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new KubeConfigError(
      `${clusterWhere}: "server" ${JSON.stringify(serverText)} must be an https:// or http:// URL`,
    );
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new KubeConfigError(
      `${clusterWhere}: "server" must not contain credentials, a query or a fragment`,
    );
  }
  if (optionalString(cluster, "proxy-url", clusterWhere) !== undefined) {
    throw new KubeConfigError(`${clusterWhere}: "proxy-url" is not supported`);
  }
  const insecure = cluster["insecure-skip-tls-verify"];
  if (insecure !== undefined && insecure !== null && typeof insecure !== "boolean") {
    throw new KubeConfigError(`${clusterWhere}: "insecure-skip-tls-verify" must be true or false`);
  }
  const insecureSkipTlsVerify = insecure === true;
  const caText = await fileOrData(cluster, "certificate-authority", baseDir, clusterWhere);
  if (caText !== undefined && insecureSkipTlsVerify) {
    throw new KubeConfigError(
      `${clusterWhere}: a certificate authority and "insecure-skip-tls-verify: true" cannot be ` +
        `used together`,
    );
  }
  const caPem = caText === undefined
    ? undefined
    : checkCertificates(caText, `${clusterWhere}: certificate authority`);
  const tlsServerName = optionalString(cluster, "tls-server-name", clusterWhere);

  // User.
  let token: string | undefined;
  let tokenFile: string | undefined;
  let clientCertPem: string | undefined;
  let clientKeyPem: string | undefined;
  if (userName !== undefined) {
    const user = named(doc, "users", "user", userName, where);
    const userWhere = `${where}: user ${JSON.stringify(userName)}`;
    for (const unsupported of ["exec", "auth-provider"]) {
      const value = user[unsupported];
      if (value !== undefined && value !== null) {
        const detail =
          unsupported === "exec" && isRecord(value) && typeof value.command === "string"
            ? ` (command ${JSON.stringify(value.command)})`
            : unsupported === "auth-provider" && isRecord(value) && typeof value.name === "string"
            ? ` (${JSON.stringify(value.name)})`
            : "";
        throw new KubeConfigError(
          `${userWhere}: "${unsupported}" authentication${detail} is not supported; use a ` +
            `bearer token ("token" or "tokenFile") or a client certificate`,
        );
      }
    }
    if (
      optionalString(user, "username", userWhere) !== undefined ||
      optionalString(user, "password", userWhere) !== undefined
    ) {
      throw new KubeConfigError(
        `${userWhere}: basic authentication ("username"/"password") is not supported; use a ` +
          `bearer token ("token" or "tokenFile") or a client certificate`,
      );
    }
    for (const impersonation of ["as", "as-uid", "as-groups"]) {
      if (user[impersonation] !== undefined && user[impersonation] !== null) {
        throw new KubeConfigError(
          `${userWhere}: impersonation ("${impersonation}") is not supported`,
        );
      }
    }
    token = optionalString(user, "token", userWhere)?.trim() || undefined;
    const tokenFileValue = optionalString(user, "tokenFile", userWhere);
    if (token === undefined && tokenFileValue !== undefined) {
      tokenFile = isAbsolute(tokenFileValue) ? tokenFileValue : join(baseDir, tokenFileValue);
      const first = (await readText(tokenFile, `${userWhere}: "tokenFile"`)).trim();
      if (first === "") {
        throw new KubeConfigError(`${userWhere}: "tokenFile" ${tokenFile} is empty`);
      }
    }
    const certText = await fileOrData(user, "client-certificate", baseDir, userWhere);
    const keyText = await fileOrData(user, "client-key", baseDir, userWhere);
    if ((certText === undefined) !== (keyText === undefined)) {
      throw new KubeConfigError(
        `${userWhere}: ${certText === undefined ? "a client key" : "a client certificate"} ` +
          `without ${certText === undefined ? "a client certificate" : "a client key"}`,
      );
    }
    if (certText !== undefined && keyText !== undefined) {
      clientCertPem = checkCertificates(certText, `${userWhere}: client certificate`);
      clientKeyPem = checkKey(keyText, `${userWhere}: client key`);
    }
  }

  const server = url.href.replace(/\/+$/, "");
  return {
    server,
    ...(caPem !== undefined ? { caPem } : {}),
    insecureSkipTlsVerify,
    ...(tlsServerName !== undefined ? { tlsServerName } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(tokenFile !== undefined ? { tokenFile } : {}),
    ...(clientCertPem !== undefined ? { clientCertPem, clientKeyPem } : {}),
    ...(namespace !== undefined ? { namespace } : {}),
    source: "kubeconfig",
    description: `kubeconfig ${path} (context ${contextName})`,
  };
}
