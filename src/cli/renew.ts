/**
 * `sentry renew`: issues a new issuer under the existing root (with the root key kept in the
 * store or given by `--root-key`), or with `--root` rotates root and issuer together. Writes
 * through the store's compare-and-swap, so it cannot clobber a concurrent change; a running
 * sentry picks the new bundle up through its watcher.
 *
 * @module
 */
import {
  type BundlePem,
  generateRoot,
  issueIssuer,
  rootFromPem,
  validateBundle,
} from "../ca/bundle.ts";
import { CA_KEY_ALGORITHMS, type CaKeyAlgorithm, privateKeyToPem } from "../x509/keys.ts";
import { parseCertificate } from "../x509/parse.ts";
import { daprIdentityOf } from "../ca/profiles.ts";
import { decodePem, encodeCertificates, PEM_PRIVATE_KEY } from "../x509/pem.ts";
import {
  type CommandIO,
  type CommandSpec,
  Exit,
  flagValues,
  runCommand,
  ttlFlag,
} from "./command.ts";
import { UsageError } from "./flags.ts";
import { readPemInput } from "./files.ts";
import { openStore, STORE_FLAGS } from "./store-flags.ts";
import { JWT_FLAGS } from "./jwt-flags.ts";
import { renewJwt } from "./renew-jwt.ts";
import { storeArguments } from "./rotate.ts";
import { rotationOf } from "../ca/root-rotation.ts";

/** `sentry renew`. */
export const RENEW_COMMAND: CommandSpec = {
  name: "renew",
  summary: "rotate the issuer under the same root (or, with --root, root and issuer)",
  usage: `Usage:
  sentry renew --issuer-credentials DIR [--root-key FILE] [--issuer-ttl 365d]
  sentry renew --issuer-credentials DIR --root [--root-ttl 365d] [--keep-root-key]
  sentry renew --issuer-credentials DIR --jwt [--jwt-publish-delay 2h] [--jwt-ttl 24h]
  sentry renew --issuer-credentials DIR --jwt-prune [--jwt-ttl 24h]

Without --root, a new issuer key and certificate are issued under the current root. That needs
the root key: ca.key in the store (sentry init --keep-root-key) or --root-key FILE. Sidecars
keep working: their trust anchors do not change. A new issuer never outlives its root: when
the root expires before --issuer-ttl, the output says so, and the root must be replaced
('sentry rotate start').

With --root, a new root and issuer replace the old ones. ca.crt then holds the new root
followed by the old roots that are still valid, so that sidecars given the new ca.crt still
trust peers with old certificates; sidecars must get the new ca.crt (restart or re-inject
them) before they trust certificates from the new issuer. 'sentry rotate start' replaces the
root without restarts (both roots are served first, signing switches later).

Refused while a root rotation is in progress ('sentry rotate status'): let it complete, or
abort it first.

The store is updated with compare-and-swap: if it changed since it was read, nothing is
written. A running sentry picks the new bundle up within seconds, without a restart.

With --jwt, the JWT signing key is rotated without a gap (the X.509 bundle is left alone): a
new key is published in jwks.json at once and stored in jwt.key as the next key, which sentry
signs with only after --jwt-publish-delay (default 2h, more than the 1h that relying parties
may cache the JWKS). Each run (and --jwt-prune, which adds no key) first makes a next key whose
time has come the current key, and removes from jwks.json the old keys whose last tokens have
expired (activation of the current key + --jwt-ttl + --jwt-clock-skew); --jwt-ttl must be at
least the --jwt-ttl of the servers.`,
  flags: [
    ...STORE_FLAGS,
    {
      name: "root-key",
      type: "string",
      default: "",
      help: "File holding the root's private key (when the store does not keep it)",
    },
    { name: "root", type: "bool", default: false, help: "Rotate the root too" },
    {
      name: "issuer-ttl",
      type: "string",
      default: "365d",
      help: "Lifetime of the new issuer (at most the root's remaining life)",
    },
    {
      name: "root-ttl",
      type: "string",
      default: "365d",
      help: "Lifetime of the new root (with --root)",
    },
    {
      name: "key-algorithm",
      type: "string",
      default: "ecdsa-p256",
      choices: CA_KEY_ALGORITHMS,
      help: "Key algorithm of the new keys",
    },
    {
      name: "trust-domain",
      type: "string",
      default: "",
      help: "Trust domain (default: read from the current issuer)",
    },
    {
      name: "keep-root-key",
      type: "bool",
      default: false,
      help: "With --root: store the new root key as ca.key (default: only if the store kept one)",
    },
    {
      name: "drop-old-roots",
      type: "bool",
      default: false,
      help: "With --root: ca.crt holds only the new root",
    },
    { name: "json", type: "bool", default: false, help: "Print the result as JSON" },
    { name: "jwt", type: "bool", default: false, help: "Rotate the JWT signing key (gap-free)" },
    {
      name: "jwt-prune",
      type: "bool",
      default: false,
      help: "Only promote a due next JWT key and drop expired old keys from the JWKS",
    },
    {
      name: "jwt-publish-delay",
      type: "string",
      default: "2h",
      help: "With --jwt: time between publishing the new key and signing with it",
    },
    {
      name: "jwt-allow-short-delay",
      type: "bool",
      default: false,
      help: "With --jwt: accept a delay shorter than the JWKS cache lifetime (1h), for tests",
    },
    {
      name: "jwt-ttl",
      type: "string",
      default: "24h",
      help: "Token lifetime of the servers (--jwt-ttl of sentry serve), to date old tokens' expiry",
    },
    {
      name: "jwt-clock-skew",
      type: "string",
      default: "15m",
      help: "Tolerance added to the old tokens' expiry before their key leaves the JWKS",
    },
    ...JWT_FLAGS.filter((flag) =>
      flag.name === "jwt-key-filename" || flag.name === "jwks-filename"
    ),
  ],
};

/** What the current issuer's subject says about trust domain and namespace. */
function currentIdentity(pem: BundlePem): { trustDomain?: string; namespace?: string } {
  const block = decodePem(pem.issuerCrt).find((b) => b.label === "CERTIFICATE");
  return block ? daprIdentityOf(parseCertificate(block.der).subject) : {};
}

/** Days from `now` to `date`, one decimal. */
function daysUntil(date: Date, now: Date): string {
  return ((date.getTime() - now.getTime()) / 86_400_000).toFixed(1);
}

/** Runs `sentry renew`. */
export function runRenew(argv: readonly string[], io: CommandIO): Promise<number> {
  return runCommand(RENEW_COMMAND, argv, io, async (parsed) => {
    const flags = flagValues(parsed);
    if (flags.bool("jwt") || flags.bool("jwt-prune")) return await renewJwt(parsed, io);
    const rotateRoot = flags.bool("root");
    const issuerTtlMs = ttlFlag("issuer-ttl", flags.string("issuer-ttl"));
    const rootTtlMs = ttlFlag("root-ttl", flags.string("root-ttl"));
    const algorithm = flags.string("key-algorithm") as CaKeyAlgorithm;
    const { store } = await openStore(parsed, io.env);
    const current = await store.load();
    if (!current) {
      throw new Error(`${store.description} holds no trust bundle to renew (use 'sentry init')`);
    }

    const rotation = rotationOf(current);
    if (rotation) {
      throw new Error(
        `a root rotation is in progress in ${store.description} (phase ${rotation.phase}); ` +
          `nothing was written: let it complete ('sentry rotate status'), or give it up with ` +
          `'sentry rotate abort' before signing switches`,
      );
    }

    const identity = currentIdentity(current);
    const trustDomain = flags.string("trust-domain") || identity.trustDomain;
    const namespace = flags.string("namespace") || identity.namespace || io.env.NAMESPACE ||
      "default";
    if (!trustDomain) {
      throw new UsageError("the current issuer does not name a trust domain: pass --trust-domain");
    }
    const now = io.now();
    const issuerOptions = { trustDomain, namespace, algorithm, now, skewMs: 0, ttlMs: issuerTtlMs };
    let next: BundlePem;
    /** The root's NotAfter when it cuts the new issuer short of --issuer-ttl. */
    let clampedTo: Date | undefined;
    if (rotateRoot) {
      const root = generateRoot({ trustDomain, algorithm, now, ttlMs: rootTtlMs, skewMs: 0 });
      const oldRoots = flags.bool("drop-old-roots") ? [] : decodePem(current.caCrt)
        .filter((block) => block.label === "CERTIFICATE")
        .map((block) => parseCertificate(block.der))
        .filter((cert) => cert.notAfter > now)
        .map((cert) => cert.der);
      const keepRootKey = flags.bool("keep-root-key") || current.caKey !== undefined;
      next = {
        caCrt: encodeCertificates([root.certificate.der, ...oldRoots]),
        ...issueIssuer(root, issuerOptions),
        ...(keepRootKey ? { caKey: privateKeyToPem(root.key.privateKey) } : {}),
      };
    } else {
      const rootKeyFile = flags.string("root-key");
      const rootKeyPem = rootKeyFile
        ? await readPemInput(rootKeyFile, "--root-key", PEM_PRIVATE_KEY)
        : current.caKey;
      if (!rootKeyPem) {
        throw new Error(
          `renewing the issuer needs the root key, which ${store.description} does not keep: ` +
            `pass --root-key FILE, or rotate root and issuer together with --root`,
        );
      }
      const root = rootFromPem(current.caCrt, rootKeyPem, {
        cert: store.names.caCrt,
        key: rootKeyFile || "ca.key",
      });
      if (root.certificate.notAfter <= now) {
        throw new Error(
          `the root expired at ${root.certificate.notAfter.toISOString()}: rotate it with --root`,
        );
      }
      next = {
        ...current,
        ...issueIssuer(root, issuerOptions),
      };
      if (root.certificate.notAfter.getTime() < now.getTime() + issuerTtlMs) {
        clampedTo = root.certificate.notAfter;
      }
    }
    const trust = validateBundle(next, now, store.names);
    await store.replace(next, current);

    const result = {
      store: store.description,
      rotated: rotateRoot ? "root and issuer" : "issuer",
      issuerNotAfter: trust.issuerNotAfter.toISOString(),
      rootNotAfter: trust.rootNotAfter.toISOString(),
      anchors: trust.anchors.length,
      issuerClampedToRoot: clampedTo !== undefined,
      nextSteps: rotateRoot
        ? "distribute the new ca.crt as the sidecars' trust anchors (DAPR_TRUST_ANCHORS), then restart or re-inject them; a running sentry picks up the new bundle by itself"
        : clampedTo
        ? `the new issuer is cut short: it expires with the root at ${clampedTo.toISOString()} ` +
          `(${daysUntil(clampedTo, now)} days), not after --issuer-ttl ${
            flags.string("issuer-ttl")
          }; an issuer never outlives its root, so renewing it cannot go past that: replace the ` +
          `root before then with 'sentry rotate start${
            storeArguments(parsed)
          }' while a sentry serves the store (no restarts), or serve with --rotation-enabled. ` +
          `Until then a running sentry picks up the new issuer by itself and sidecars keep ` +
          `their trust anchors`
        : "nothing: a running sentry picks up the new issuer by itself and sidecars keep their trust anchors",
    };
    if (flags.bool("json")) {
      io.stdout(JSON.stringify(result, null, 2) + "\n");
    } else {
      io.stdout(
        `renewed the ${result.rotated} in ${result.store}\n` +
          `  issuer valid until ${result.issuerNotAfter}\n` +
          `  trust anchors: ${result.anchors} (earliest expiry ${result.rootNotAfter})\n` +
          `next: ${result.nextSteps}\n`,
      );
    }
    return Exit.OK;
  });
}
