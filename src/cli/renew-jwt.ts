/**
 * `sentry renew --jwt` and `sentry renew --jwt-prune`: gap-free rotation of the JWT signing key
 * (src/ca/jwt-rotation.ts) through the store's compare-and-swap. The X.509 bundle is left as it
 * is; a running sentry picks the new `jwt.key` and `jwks.json` up through its watcher.
 *
 * @module
 */
import { validateServingBundle } from "../ca/jwt-bundle.ts";
import { JWKS_CACHE_MAX_AGE_MS, pruneJwtKeys, rotateJwtKey } from "../ca/jwt-rotation.ts";
import { formatDuration } from "../util/duration.ts";
import { type CommandIO, Exit, flagValues, ttlFlag } from "./command.ts";
import { type ParsedFlags, UsageError } from "./flags.ts";
import { openStore } from "./store-flags.ts";

/** Runs the JWT part of `sentry renew` (`--jwt` or `--jwt-prune`). */
export async function renewJwt(parsed: ParsedFlags, io: CommandIO): Promise<number> {
  const flags = flagValues(parsed);
  const rotate = flags.bool("jwt");
  if (rotate && flags.bool("jwt-prune")) {
    throw new UsageError("--jwt already prunes: pass --jwt or --jwt-prune, not both");
  }
  if (flags.bool("root") || flags.given("root-key") || flags.given("issuer-ttl")) {
    throw new UsageError(
      "--jwt and --jwt-prune rotate the JWT key only: run the X.509 renewal apart",
    );
  }
  const ttlMs = ttlFlag("jwt-ttl", flags.string("jwt-ttl"));
  const skewMs = ttlFlag("jwt-clock-skew", flags.string("jwt-clock-skew"));
  const delayMs = ttlFlag("jwt-publish-delay", flags.string("jwt-publish-delay"));
  if (rotate && delayMs < JWKS_CACHE_MAX_AGE_MS) {
    const why = `--jwt-publish-delay ${flags.string("jwt-publish-delay")} is shorter than the ` +
      `${formatDuration(JWKS_CACHE_MAX_AGE_MS)} relying parties may cache the JWKS (the OIDC ` +
      `server's max-age): they may get tokens signed by a key they do not know yet`;
    if (!flags.bool("jwt-allow-short-delay")) {
      throw new UsageError(`${why}; pass --jwt-allow-short-delay to accept that (tests only)`);
    }
    io.stderr(`warning: ${why}\n`);
  }

  const { store } = await openStore(parsed, io.env);
  const names = store.jwtNames ?? { key: "jwt.key", jwks: "jwks.json" };
  const current = await store.load();
  if (!current) {
    throw new Error(`${store.description} holds no trust bundle (use 'sentry init')`);
  }
  if (!current.jwt) {
    throw new Error(
      `${store.description} holds no JWT signing key to rotate (${names.key} and ${names.jwks}): ` +
        `start sentry with --jwt-enabled once to generate one`,
    );
  }
  const now = io.now();
  const pruned = pruneJwtKeys(current.jwt, { now, ttlMs, skewMs, names });
  const rotated = rotate ? await rotateJwtKey(pruned, { now, delayMs, names }) : undefined;
  const jwt = { keyPem: (rotated ?? pruned).keyPem, jwksJson: (rotated ?? pruned).jwksJson };
  const changed = jwt.keyPem !== current.jwt.keyPem || jwt.jwksJson !== current.jwt.jwksJson;
  if (changed) {
    const next = { ...current, jwt };
    // What a server will load: every key parses and is published in the JWKS.
    await validateServingBundle(next, now, store.names, { algorithm: pruned.algorithm, names });
    await store.replace(next, current);
  }

  const result = {
    store: store.description,
    promoted: pruned.promoted,
    removedKeys: pruned.removed,
    keptOldKeys: pruned.kept.map((key) => ({
      kid: key.kid,
      retireAt: key.retireAt?.toISOString(),
    })),
    ...(rotated
      ? {
        newKeyId: rotated.keyId,
        algorithm: rotated.algorithm,
        signsFrom: rotated.notBefore.toISOString(),
      }
      : {}),
    changed,
  };
  if (flags.bool("json")) {
    io.stdout(JSON.stringify(result, null, 2) + "\n");
    return Exit.OK;
  }
  const lines = [
    rotated
      ? `published the new JWT key ${rotated.keyId} (${rotated.algorithm}) in ${result.store}; ` +
        `sentry signs with it from ${result.signsFrom}`
      : changed
      ? `pruned the JWT keys in ${result.store}`
      : `nothing to prune in ${result.store}`,
  ];
  if (pruned.promoted) lines.push("  the next key's time had come: it is now the current key");
  if (pruned.removed.length > 0) {
    lines.push(`  removed from ${names.jwks}: ${pruned.removed.join(", ")}`);
  }
  for (const key of pruned.kept) {
    lines.push(
      `  kept ${key.kid}: ` +
        (key.retireAt
          ? `its last tokens expire by ${key.retireAt.toISOString()}`
          : `the current key's activation time is unknown`),
    );
  }
  if (rotated || pruned.kept.length > 0) {
    lines.push(
      `next: run 'sentry renew --jwt-prune' after the old keys' tokens expired (token TTL ` +
        `${formatDuration(ttlMs)} + ${formatDuration(skewMs)} skew after the switch)`,
    );
  }
  io.stdout(lines.join("\n") + "\n");
  return Exit.OK;
}
