/**
 * The credential-store flags shared by every command that reads or writes a trust bundle
 * (`serve`, `init`, `expiry`, `renew`), and the store they select.
 *
 * @module
 */
import { readSmallFileSync } from "../util/bounded-read.ts";
import { fileErrorReason } from "../util/file-errors.ts";
import { parseDuration } from "../util/duration.ts";
import type { Logger } from "../observability/logger.ts";
import { KubeClient } from "../kubernetes/client.ts";
import { loadKubeConfig } from "../kubernetes/config.ts";
import { type VaultAuth, VaultClient } from "../vault/client.ts";
import { KubeCredentialStore } from "../stores/kubernetes.ts";
import { FsCredentialStore } from "../stores/fs.ts";
import { type CredentialStore, STORE_KINDS, type StoreKind } from "../stores/store.ts";
import { VaultCredentialStore } from "../stores/vault.ts";
import { type FlagSpec, type ParsedFlags, UsageError } from "./flags.ts";
import { jwtNamesFromFlags } from "./jwt-flags.ts";

/** `--store` and the filesystem store's location flags (Dapr's names and defaults). */
export const STORE_FLAGS: readonly FlagSpec[] = [
  {
    name: "namespace",
    type: "string",
    default: "",
    help:
      "Namespace of sentry: where its Kubernetes objects live, and part of its SPIFFE ID (default $NAMESPACE, then the service account's or kubeconfig context's namespace, then \"default\")",
  },
  {
    name: "kubeconfig",
    type: "string",
    default: "",
    help:
      "Kubeconfig for out-of-cluster Kubernetes access (default $KUBECONFIG, or in-cluster settings)",
  },
  {
    name: "store",
    type: "string",
    default: "fs",
    choices: STORE_KINDS,
    help:
      "Credential store: fs (directory), k8s (Secret) or vault (default: k8s with --mode kubernetes, else fs)",
  },
  {
    name: "issuer-credentials",
    type: "string",
    default: "/var/run/secrets/dapr.io/credentials",
    help: "Directory holding (or receiving) the trust bundle",
  },
  {
    name: "issuer-ca-filename",
    type: "string",
    default: "ca.crt",
    help: "Trust anchors file name (an absolute path replaces the directory)",
  },
  {
    name: "issuer-certificate-filename",
    type: "string",
    default: "issuer.crt",
    help: "Issuer certificate chain file name",
  },
  {
    name: "issuer-key-filename",
    type: "string",
    default: "issuer.key",
    help: "Issuer private key file name",
  },
  { name: "vault-addr", type: "string", default: "", help: "Vault address (default $VAULT_ADDR)" },
  { name: "vault-mount", type: "string", default: "secret", help: "KV version 2 mount" },
  {
    name: "vault-path",
    type: "string",
    default: "dapr/sentry/trust-bundle",
    help: "Secret path inside the mount",
  },
  {
    name: "vault-namespace",
    type: "string",
    default: "",
    help: "Vault namespace, sent as X-Vault-Namespace (default $VAULT_NAMESPACE)",
  },
  {
    name: "vault-cacert",
    type: "string",
    default: "",
    help: "PEM file of the CA of Vault's certificate (default $VAULT_CACERT)",
  },
  {
    name: "vault-skip-verify",
    type: "bool",
    default: false,
    help: "Do not verify Vault's certificate (default $VAULT_SKIP_VERIFY)",
  },
  {
    name: "vault-token-file",
    type: "string",
    default: "",
    help: "File holding the Vault token, re-read on every call (default: $VAULT_TOKEN)",
  },
  {
    name: "vault-k8s-role",
    type: "string",
    default: "",
    help: "Log in with Kubernetes auth as this role instead of a token",
  },
  { name: "vault-k8s-mount", type: "string", default: "kubernetes", help: "Kubernetes auth mount" },
  {
    name: "vault-k8s-token-file",
    type: "string",
    default: "/var/run/secrets/kubernetes.io/serviceaccount/token",
    help: "Service-account token used for Kubernetes auth",
  },
  {
    name: "vault-poll-interval",
    type: "string",
    default: "30s",
    help: "How often to look for a new version of the secret",
  },
];

function truthy(value: string | undefined): boolean {
  return value !== undefined && /^(1|t|true|yes)$/i.test(value);
}

function vaultStore(
  parsed: ParsedFlags,
  env: Record<string, string | undefined>,
  logger?: Logger,
): VaultCredentialStore {
  const values = parsed.values;
  const flag = (name: string) => values[name] as string;
  const address = flag("vault-addr") || env.VAULT_ADDR;
  if (!address) throw new UsageError("--store vault needs --vault-addr or VAULT_ADDR");
  try {
    new URL(address);
  } catch {
    throw new UsageError(`--vault-addr ${JSON.stringify(address)} is not a URL`);
  }
  const caFile = flag("vault-cacert") || env.VAULT_CACERT;
  let caCertPem: string | undefined;
  if (caFile) {
    try {
      caCertPem = readSmallFileSync(caFile);
    } catch (error) {
      throw new UsageError(`cannot read --vault-cacert ${caFile}: ${fileErrorReason(error)}`, {
        cause: error,
      });
    }
  }
  let pollIntervalMs: number;
  try {
    pollIntervalMs = parseDuration(flag("vault-poll-interval"));
  } catch (error) {
    throw new UsageError(`--vault-poll-interval: ${(error as Error).message}`, { cause: error });
  }
  if (!(pollIntervalMs >= 100)) {
    throw new UsageError("--vault-poll-interval must be at least 100ms");
  }
  const auth: VaultAuth = flag("vault-k8s-role")
    ? {
      kind: "kubernetes",
      role: flag("vault-k8s-role"),
      mount: flag("vault-k8s-mount"),
      jwtFile: flag("vault-k8s-token-file"),
    }
    : { kind: "token", token: env.VAULT_TOKEN, tokenFile: flag("vault-token-file") || undefined };
  if (auth.kind === "token" && !auth.token && !auth.tokenFile) {
    throw new UsageError("--store vault needs VAULT_TOKEN, --vault-token-file or --vault-k8s-role");
  }
  const client = new VaultClient({
    address,
    namespace: flag("vault-namespace") || env.VAULT_NAMESPACE || undefined,
    caCertPem,
    skipVerify: (values["vault-skip-verify"] as boolean) || truthy(env.VAULT_SKIP_VERIFY),
    auth,
    logger,
  });
  return new VaultCredentialStore({
    client,
    mount: flag("vault-mount"),
    path: flag("vault-path"),
    pollIntervalMs,
    jwtKeys: jwtNamesFromFlags(parsed, true),
  });
}

/** What the store flags open: the store, sentry's namespace, and a Kubernetes client if any. */
export interface OpenedStore {
  store: CredentialStore;
  namespace: string;
  /** Set when Kubernetes is used (`--store k8s`, or `needKubernetes`). */
  kube?: KubeClient;
}

/**
 * The store kind in force: `--store` when given; else, in Kubernetes mode, the Secret (as
 * Dapr's sentry, which Dapr's chart starts with `--mode kubernetes` and no store flag); else
 * the directory.
 */
export function storeKind(parsed: ParsedFlags, kubernetesMode: boolean): StoreKind {
  if (parsed.given.has("store") || !kubernetesMode) return parsed.values.store as StoreKind;
  return "k8s";
}

/**
 * Opens what the flags select: the store (see {@link storeKind}; Vault settings fall back to
 * Vault's environment variables; Kubernetes is reached through `--kubeconfig`, KUBECONFIG or
 * the in-cluster settings) and sentry's namespace. `kubernetesMode` (`--mode kubernetes`)
 * connects to Kubernetes whatever the store. UsageError for incomplete settings.
 */
export async function openStore(
  parsed: ParsedFlags,
  env: Record<string, string | undefined>,
  logger?: Logger,
  kubernetesMode = false,
): Promise<OpenedStore> {
  const values = parsed.values;
  const kind = storeKind(parsed, kubernetesMode);
  let kube: KubeClient | undefined;
  if (kind === "k8s" || kubernetesMode) {
    let connection;
    try {
      connection = await loadKubeConfig({
        kubeconfigPath: (values.kubeconfig as string) || undefined,
        env,
      });
    } catch (error) {
      throw new UsageError((error as Error).message, { cause: error });
    }
    kube = new KubeClient(connection, { logger });
  }
  const namespace = (values.namespace as string) || env.NAMESPACE || kube?.namespace || "default";
  if (kind === "k8s") {
    const store = new KubeCredentialStore({
      client: kube!,
      namespace,
      keys: {
        caCrt: values["issuer-ca-filename"] as string,
        issuerCrt: values["issuer-certificate-filename"] as string,
        issuerKey: values["issuer-key-filename"] as string,
      },
      jwtKeys: jwtNamesFromFlags(parsed, true),
      logger,
      trustDomain: typeof values["trust-domain"] === "string" ? values["trust-domain"] : undefined,
    });
    return { store, namespace, kube };
  }
  return { store: storeFromFlags(parsed, env, logger), namespace, kube };
}

/** The fs or Vault store the flags select (not Kubernetes: see {@link openStore}). */
export function storeFromFlags(
  parsed: ParsedFlags,
  env: Record<string, string | undefined> = {},
  logger?: Logger,
): CredentialStore {
  const values = parsed.values;
  if (values.store === "vault") return vaultStore(parsed, env, logger);
  if (values.store !== "fs") throw new UsageError(`--store ${values.store} needs openStore()`);
  return new FsCredentialStore({
    directory: values["issuer-credentials"] as string,
    caFilename: values["issuer-ca-filename"] as string,
    issuerCertFilename: values["issuer-certificate-filename"] as string,
    issuerKeyFilename: values["issuer-key-filename"] as string,
    jwtKeyFilename: jwtNamesFromFlags(parsed).key,
    jwksFilename: jwtNamesFromFlags(parsed).jwks,
    logger,
  });
}
