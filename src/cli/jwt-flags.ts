/**
 * The JWT-SVID and OIDC flags of `sentry serve`, with Dapr's names, defaults and checks
 * (cmd/sentry/options): `--jwt-*` turn into {@link JwtServeOptions}, `--oidc-*` into
 * {@link OidcServeOptions}, and the store flags read the JWT file names from here.
 *
 * @module
 */
import { basename } from "node:path";
import { DEFAULT_JWT_NAMES, DEFAULT_JWT_SIGNING_ALGORITHM, type JwtNames } from "../ca/jwt-keys.ts";
import type { JwtServeOptions, OidcServeOptions } from "../server/sentry-server.ts";
import { parseDuration } from "../util/duration.ts";
import { type FlagSpec, type ParsedFlags, UsageError } from "./flags.ts";

/** `--jwt-*`: JWT-SVIDs issued with every certificate (Dapr v1.16+). */
export const JWT_FLAGS: readonly FlagSpec[] = [
  { name: "jwt-enabled", type: "bool", default: false, help: "Issue JWT-SVIDs with certificates" },
  {
    name: "jwt-key-filename",
    type: "string",
    default: DEFAULT_JWT_NAMES.key,
    help: "JWT signing key file name (an absolute path replaces the directory)",
  },
  {
    name: "jwks-filename",
    type: "string",
    default: DEFAULT_JWT_NAMES.jwks,
    help: "JWKS (JSON Web Key Set) file name (an absolute path replaces the directory)",
  },
  {
    name: "jwt-issuer",
    type: "string",
    default: "",
    help: "The tokens' iss claim (none when not given; given empty, an empty iss)",
  },
  {
    name: "jwt-signing-algorithm",
    type: "string",
    default: DEFAULT_JWT_SIGNING_ALGORITHM,
    help: "JWS algorithm of the tokens, which the signing key must suit",
  },
  {
    name: "jwt-key-id",
    type: "string",
    default: "",
    help: "The tokens' kid (default: base64 SHA-256 thumbprint of the signing key)",
  },
  { name: "jwt-ttl", type: "string", default: "24h", help: "Lifetime of the tokens" },
];

/** `--oidc-*`: the OIDC discovery server (Dapr's flags). */
export const OIDC_FLAGS: readonly FlagSpec[] = [
  { name: "oidc-enabled", type: "bool", default: false, help: "Serve OIDC discovery" },
  {
    name: "oidc-server-listen-port",
    type: "int",
    default: 9080,
    help: "Port of the OIDC server",
  },
  {
    name: "oidc-server-listen-address",
    type: "string",
    default: "localhost",
    help: "Address of the OIDC server",
  },
  {
    name: "oidc-server-tls-enabled",
    type: "bool",
    default: true,
    help: "Serve OIDC over TLS (then the two files below are required)",
  },
  {
    name: "oidc-server-tls-cert-file",
    type: "string",
    default: "",
    help: "TLS certificate file of the OIDC server",
  },
  {
    name: "oidc-server-tls-key-file",
    type: "string",
    default: "",
    help: "TLS key file of the OIDC server",
  },
  {
    name: "oidc-jwks-uri",
    type: "string",
    default: "",
    help: "JWKS URI to advertise instead of the OIDC server's own",
  },
  {
    name: "oidc-path-prefix",
    type: "string",
    default: "",
    help: "Path prefix of the OIDC endpoints",
  },
  {
    name: "oidc-allowed-hosts",
    type: "list",
    default: [],
    help: "Host names the OIDC server answers (default: any)",
  },
];

/**
 * The JWT file names in force: the flags' values where a command has them, else Dapr's. With
 * `base`, only the last path element (a Kubernetes Secret key or a Vault field, as in Dapr).
 */
export function jwtNamesFromFlags(parsed: ParsedFlags, base = false): JwtNames {
  const value = (name: string, fallback: string) => {
    const given = parsed.values[name];
    const text = typeof given === "string" && given !== "" ? given : fallback;
    return base ? basename(text) : text;
  };
  return {
    key: value("jwt-key-filename", DEFAULT_JWT_NAMES.key),
    jwks: value("jwks-filename", DEFAULT_JWT_NAMES.jwks),
  };
}

/** The value of a flag Dapr treats as set only when given (`--jwt-issuer=""` is set). */
function whenGiven(parsed: ParsedFlags, name: string): string | undefined {
  return parsed.given.has(name) ? parsed.values[name] as string : undefined;
}

/** JWT issuing as the flags ask, or undefined when `--jwt-enabled` is off; UsageError as Dapr's. */
export function jwtOptionsFromFlags(parsed: ParsedFlags): JwtServeOptions | undefined {
  const issuer = whenGiven(parsed, "jwt-issuer");
  const enabled = parsed.values["jwt-enabled"] as boolean;
  if (issuer !== undefined && !enabled) {
    throw new UsageError("jwt-issuer cannot be set when jwt-enabled is false");
  }
  const ttl = parsed.values["jwt-ttl"] as string;
  let ttlMs: number;
  try {
    ttlMs = parseDuration(ttl);
  } catch (error) {
    throw new UsageError(
      `invalid argument ${JSON.stringify(ttl)} for "--jwt-ttl" flag: ${(error as Error).message}`,
      { cause: error },
    );
  }
  if (!enabled) return undefined;
  if (!(ttlMs > 0)) throw new UsageError(`--jwt-ttl must be positive, got ${JSON.stringify(ttl)}`);
  return {
    algorithm: parsed.values["jwt-signing-algorithm"] as string,
    keyId: whenGiven(parsed, "jwt-key-id"),
    issuer,
    ttlMs,
    names: jwtNamesFromFlags(parsed),
  };
}

/** The OIDC server as the flags ask, or undefined when `--oidc-enabled` is off. */
export function oidcOptionsFromFlags(parsed: ParsedFlags): OidcServeOptions | undefined {
  const certFile = whenGiven(parsed, "oidc-server-tls-cert-file");
  const keyFile = whenGiven(parsed, "oidc-server-tls-key-file");
  const enabled = parsed.values["oidc-enabled"] as boolean;
  const tlsEnabled = parsed.values["oidc-server-tls-enabled"] as boolean;
  if (enabled && tlsEnabled) {
    const required = (flag: string) =>
      new UsageError(
        `${flag} is required when OIDC HTTP server is enabled (unless oidc-server-tls-enabled is false)`,
      );
    if (certFile === undefined) throw required("oidc-server-tls-cert-file");
    if (keyFile === undefined) throw required("oidc-server-tls-key-file");
  }
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new UsageError("both OIDC TLS certificate and key must be provided if one is specified");
  }
  if (!enabled) return undefined;
  return {
    listen: {
      address: parsed.values["oidc-server-listen-address"] as string,
      port: parsed.values["oidc-server-listen-port"] as number,
    },
    tlsEnabled,
    tlsCertFile: certFile,
    tlsKeyFile: keyFile,
    jwksUri: whenGiven(parsed, "oidc-jwks-uri"),
    pathPrefix: whenGiven(parsed, "oidc-path-prefix"),
    allowedHosts: parsed.values["oidc-allowed-hosts"] as string[],
  };
}
