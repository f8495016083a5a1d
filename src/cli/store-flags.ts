/**
 * The credential-store flags shared by every command that reads or writes a trust bundle
 * (`serve`, `init`, `expiry`, `renew`), and the store they select.
 *
 * @module
 */
import { FsCredentialStore } from "../../stores/fs.ts";
import { type CredentialStore, STORE_KINDS } from "../../stores/store.ts";
import { type FlagSpec, type ParsedFlags, UsageError } from "./flags.ts";

/** `--store` and the filesystem store's location flags (Dapr's names and defaults). */
export const STORE_FLAGS: readonly FlagSpec[] = [
  {
    name: "store",
    type: "string",
    default: "fs",
    choices: STORE_KINDS,
    help: "Credential store: fs (directory), k8s (Secret) or vault",
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
];

/** The store the flags select; UsageError for stores this version does not offer. */
export function storeFromFlags(parsed: ParsedFlags): CredentialStore {
  const values = parsed.values;
  if (values.store !== "fs") {
    throw new UsageError(`--store ${values.store} is not available in this version of sentry yet`);
  }
  return new FsCredentialStore({
    directory: values["issuer-credentials"] as string,
    caFilename: values["issuer-ca-filename"] as string,
    issuerCertFilename: values["issuer-certificate-filename"] as string,
    issuerKeyFilename: values["issuer-key-filename"] as string,
  });
}
