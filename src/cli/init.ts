/**
 * `sentry init`: writes a complete Dapr-compatible trust bundle (`ca.crt`, `issuer.crt`,
 * `issuer.key`) into a store, with the same store flags as the server. Refuses to replace an
 * existing (or partial) bundle unless `--force`.
 *
 * @module
 */
import { generateBundle, validateBundle } from "../ca/bundle.ts";
import { CA_KEY_ALGORITHMS, type CaKeyAlgorithm } from "../x509/keys.ts";
import { SpiffeId } from "../ca/spiffe.ts";
import {
  type CommandIO,
  type CommandSpec,
  Exit,
  flagValues,
  runCommand,
  ttlFlag,
} from "./command.ts";
import { UsageError } from "./flags.ts";
import { openStore, STORE_FLAGS } from "./store-flags.ts";
import { StoreEmptiedError } from "../stores/store.ts";
import { DEFAULT_SETTINGS } from "../config/configuration.ts";

/** `sentry init`. */
export const INIT_COMMAND: CommandSpec = {
  name: "init",
  summary: "write a new root + issuer bundle into a store (offline, for CI and first installs)",
  usage: `Usage:
  sentry init --issuer-credentials DIR [--trust-domain TD] [flags]

Writes ca.crt, issuer.crt and issuer.key (Dapr's root and issuer profiles) into the store the
flags select. With the directory store (--store fs) --issuer-credentials must be given: init does
not write into the server's default, /var/run/secrets/dapr.io/credentials, by accident. An existing
bundle is never replaced without --force. TTLs take Go durations (8760h, 90m) or days (365d).
NotBefore of both certificates is back-dated by the server's default allowed clock skew (15m),
as the server does for the bundle it creates.

--keep-root-key also stores the root's private key (ca.key beside ca.crt), so that
'sentry renew' can later issue a new issuer under the same root without redistributing trust
anchors. Anyone who can read ca.key can mint a CA trusted by every sidecar: keep it only where
that is acceptable, or keep the root key offline and pass it to 'sentry renew --root-key'.`,
  flags: [
    ...STORE_FLAGS,
    {
      name: "trust-domain",
      type: "string",
      default: "localhost",
      help: "Trust domain (root subject O=, issuer SPIFFE ID)",
    },
    {
      name: "key-algorithm",
      type: "string",
      default: "ecdsa-p256",
      choices: CA_KEY_ALGORITHMS,
      help: "Key algorithm of root and issuer",
    },
    { name: "root-ttl", type: "string", default: "365d", help: "Lifetime of the root" },
    {
      name: "issuer-ttl",
      type: "string",
      default: "",
      help: "Lifetime of the issuer, at most the root's (default: the root's)",
    },
    { name: "force", type: "bool", default: false, help: "Replace a bundle that is already there" },
    {
      name: "keep-root-key",
      type: "bool",
      default: false,
      help: "Also store the root key as ca.key (see above)",
    },
    { name: "json", type: "bool", default: false, help: "Print the result as JSON" },
  ],
};

/** Runs `sentry init`. */
export function runInit(argv: readonly string[], io: CommandIO): Promise<number> {
  return runCommand(INIT_COMMAND, argv, io, async (parsed) => {
    const flags = flagValues(parsed);
    const trustDomain = flags.string("trust-domain");
    const rootTtlMs = ttlFlag("root-ttl", flags.string("root-ttl"));
    const issuerTtlMs = flags.given("issuer-ttl")
      ? ttlFlag("issuer-ttl", flags.string("issuer-ttl"))
      : rootTtlMs;
    if (issuerTtlMs > rootTtlMs) {
      throw new UsageError("--issuer-ttl must not be longer than --root-ttl");
    }
    if (parsed.values.store === "fs" && !flags.given("issuer-credentials")) {
      throw new UsageError(
        "--issuer-credentials DIR is required: the directory to write the bundle into " +
          "(init does not default to the server's /var/run/secrets/dapr.io/credentials)",
      );
    }
    const { store, namespace } = await openStore(parsed, io.env);
    try {
      SpiffeId.forWorkload(trustDomain, namespace, "dapr-sentry");
    } catch (error) {
      throw new UsageError((error as Error).message, { cause: error });
    }

    // A partial bundle fails here even with --force: sentry never completes or deletes part
    // of an operator's bundle; the message says which files are there. An emptied store that
    // held a CA (StoreEmptiedError) is what --force is for: a new CA on purpose.
    const existing = await store.load().catch((error) => {
      if (error instanceof StoreEmptiedError && flags.bool("force")) return null;
      throw error;
    });
    if (existing !== null && !flags.bool("force")) {
      throw new Error(
        `${store.description} already holds a trust bundle; nothing was written ` +
          `(use --force to replace it, or 'sentry renew' to rotate the issuer)`,
      );
    }
    const now = io.now();
    const bundle = generateBundle({
      trustDomain,
      namespace,
      algorithm: flags.string("key-algorithm") as CaKeyAlgorithm,
      now,
      ttlMs: rootTtlMs,
      issuerTtlMs,
      skewMs: DEFAULT_SETTINGS.allowedClockSkewMs,
      keepRootKey: flags.bool("keep-root-key"),
    });
    const written = existing ? await store.replace(bundle, existing) : await store.create(bundle);
    if (written !== bundle) {
      throw new Error(`another writer created a bundle in ${store.description} first`);
    }
    const trust = validateBundle(written, now, store.names);
    const result = {
      store: store.description,
      trustDomain,
      rootNotAfter: trust.rootNotAfter.toISOString(),
      issuerNotAfter: trust.issuerNotAfter.toISOString(),
      files: store.names,
      rootKeyKept: written.caKey !== undefined,
    };
    if (flags.bool("json")) {
      io.stdout(JSON.stringify(result, null, 2) + "\n");
    } else {
      io.stdout(
        `wrote a new trust bundle to ${result.store} (trust domain ${trustDomain})\n` +
          `  root:   ${store.names.caCrt}, valid until ${result.rootNotAfter}\n` +
          `  issuer: ${store.names.issuerCrt} + ${store.names.issuerKey}, valid until ${result.issuerNotAfter}\n` +
          (result.rootKeyKept
            ? `  root key kept beside ${store.names.caCrt} as ca.key (guard it)\n`
            : ""),
      );
    }
    return Exit.OK;
  });
}
