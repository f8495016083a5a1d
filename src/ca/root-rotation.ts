/**
 * Automatic rotation of the root CA with overlapping trust anchors: what is stored in each
 * phase, when a phase ends, and what the next write is. All pure (no store, no timers): the
 * server's rotation driver and `sentry rotate` call {@link planRotation} and write the result
 * with the store's compare-and-swap, so one replica drives a rotation and the others follow.
 *
 * Phases (Dapr's development branch has the same three; the state lives beside the bundle):
 * - **distributing**: a new root and issuer are made and kept in the rotation parts
 *   (`rotation-ca.crt`, `rotation-issuer.crt`, `rotation-issuer.key`, `rotation-state.json`);
 *   the trust anchors become old + new; signing stays with the old issuer. It lasts the
 *   propagation window (at least the workload certificate TTL), so that every sidecar renews
 *   once and learns the new root before any certificate depends on it.
 * - **signing**: the new issuer signs. Beyond Dapr, its chain carries a *bridge*: the new root
 *   cross-signed by the old root's key (when the store keeps it) or by the old issuer (Dapr's
 *   issuer has no path length limit), so that a sidecar whose trust anchors were fixed at start
 *   (daprd v1.18 reads them once, from `DAPR_TRUST_ANCHORS`) still verifies the new
 *   certificates: zero failed calls without restarting anything.
 * - **complete**: once every certificate signed by the old issuer has expired (or the old root
 *   has), the old root leaves the anchors and the rotation parts are removed. The bridge stays
 *   in the issuer chain, harmless, until it expires and {@link planRotation} prunes it.
 *
 * Issuer-only renewal: when the store keeps the root key, the issuer is renewed under the same
 * root at two-thirds of its life (no anchor change). Without it, an issuer that would expire
 * first triggers a root rotation instead.
 *
 * @module
 */
import { createHash } from "node:crypto";
import {
  BundleError,
  type BundlePem,
  generateRoot,
  issueIssuer,
  type RootCa,
  type RotationPem,
} from "./bundle.ts";

export type { RotationPem };
import { createCaCertificate, daprIdentityOf, ROOT_KEY_USAGES } from "./profiles.ts";
import { pruneJwtKeys, rotateJwtKey, withdrawNextJwtKey } from "./jwt-rotation.ts";
import * as der from "../x509/der.ts";
import {
  type CaKeyAlgorithm,
  keyIdentifier,
  loadPrivateKey,
  privateKeyToPem,
  SigningKey,
  spkiOf,
} from "../x509/keys.ts";
import {
  isCa,
  isSelfSigned,
  isSignedBy,
  parseCertificate,
  type ParsedCertificate,
  subjectKeyId,
} from "../x509/parse.ts";
import { decodePem, encodeCertificates } from "../x509/pem.ts";
import type { IssuerIdentity } from "../x509/certificate.ts";

/** Phases of a rotation in progress; "complete" is stored as no rotation at all. */
export type RotationPhase = "distributing" | "signing";

/** Why a rotation started. */
export type RotationReason = "expiry" | "manual";

/**
 * What `rotation-state.json` says: Dapr's fields (`phase`, `distributed_at`, `signing_at`,
 * `old_root_not_after`; RFC 3339 UTC, `signing_at` Go's zero time until the switch), which
 * Dapr's development branch and its tests read, plus sentry's own optional fields, absent in a
 * state Dapr wrote (then Dapr's rules apply).
 */
export interface RotationState {
  phase: RotationPhase;
  /** When distributing began (`distributed_at`). */
  distributedAt: Date;
  /** When signing switched to the new issuer (`signing_at`); undefined while distributing. */
  signingAt?: Date;
  /** NotAfter of the root being replaced (`old_root_not_after`). */
  oldRootNotAfter: Date;
  /** Why it started (`reason`). */
  reason?: RotationReason;
  /** When signing is due to switch (`switch_at`; Dapr: distributed_at + propagation window). */
  switchAt?: Date;
  /** When the old root leaves the anchors (`complete_at`, set at the switch). */
  completeAt?: Date;
  /** SHA-256 (hex) of the DER of the root being replaced (`old_root_sha256`). */
  oldRootSha256?: string;
}

/** Go's zero `time.Time` as encoding/json writes it: "no time yet". */
const GO_ZERO_TIME = "0001-01-01T00:00:00Z";

/** File names of the rotation parts in self-hosted mode (Dapr's development branch). */
export const ROTATION_FILE_NAMES = {
  stateJson: "rotation-state.json",
  caCrt: "rotation-ca.crt",
  issuerCrt: "rotation-issuer.crt",
  issuerKey: "rotation-issuer.key",
  caKey: "rotation-ca.key",
} as const;

/** Defaults of the rotation flags (Dapr's development branch has the same four). */
export const ROTATION_DEFAULTS = {
  triggerWindowMs: 720 * 3_600_000,
  propagationWindowMs: 24 * 3_600_000,
  checkIntervalMs: 60_000,
} as const;

/** How rotations are timed and what they make. */
export interface RotationSettings {
  /** Start a rotation this long before the root (or, without a root key, the issuer) expires. */
  triggerWindowMs: number;
  /** How long the combined anchors are served before signing switches (>= workload TTL). */
  propagationWindowMs: number;
  /** The longest workload certificate lifetime in use (old certificates expire within it). */
  workloadTtlMs: number;
  /** Extra wait before completing, for replicas that switch late (e.g. a check interval). */
  completionMarginMs: number;
  /** Back-dating of NotBefore of the new CA certificates. */
  skewMs: number;
  /** Key algorithm of the new root and issuer. */
  algorithm: CaKeyAlgorithm;
  /** Lifetime of the new root (and issuer). */
  rootTtlMs: number;
  /** Trust domain and namespace for the new CA names, when the old issuer does not say them. */
  trustDomain: string;
  namespace: string;
  /** JWT-SVID token lifetime: old JWT keys leave the JWKS once their tokens expired. */
  jwtTtlMs?: number;
}

/** One step the store should take now, or why nothing is due. */
export type RotationStep =
  | { kind: "none"; waitingFor: string; nextAt?: Date }
  | {
    kind: "start" | "switch" | "complete" | "renew-issuer" | "prune-bridge";
    /** The bundle to write (compare-and-swap against the one planned from). */
    next: BundlePem;
    /** One line for the log. */
    message: string;
  };

/** A rotation state or part that cannot be used; the message names it. */
export class RotationError extends Error {
  override name = "RotationError";
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

function certificatesOf(pem: string, file: string): ParsedCertificate[] {
  const blocks = decodePem(pem).filter((block) => block.label === "CERTIFICATE");
  if (blocks.length === 0) throw new RotationError(`${file} contains no PEM CERTIFICATE block`);
  return blocks.map((block) => parseCertificate(block.der));
}

/** Parses `rotation-state.json`, refusing unknown phases and missing or invalid times. */
export function parseRotationState(
  text: string,
  file: string = ROTATION_FILE_NAMES.stateJson,
): RotationState {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new RotationError(`${file} is not JSON: ${(error as Error).message}`, { cause: error });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new RotationError(`${file} is not a JSON object`);
  }
  const time = (field: string, required: boolean): Date | undefined => {
    const value = raw[field];
    if ((value === undefined || value === GO_ZERO_TIME) && !required) return undefined;
    const date = typeof value === "string" ? new Date(value) : new Date(NaN);
    if (Number.isNaN(date.getTime()) || value === GO_ZERO_TIME) {
      throw new RotationError(`${file}: "${field}" is not a time (${JSON.stringify(value)})`);
    }
    return date;
  };
  const phase = raw.phase;
  if (phase !== "distributing" && phase !== "signing") {
    throw new RotationError(`${file}: unknown phase ${JSON.stringify(phase)}`);
  }
  const reason = raw.reason;
  if (reason !== undefined && reason !== "expiry" && reason !== "manual") {
    throw new RotationError(`${file}: unknown reason ${JSON.stringify(reason)}`);
  }
  const hash = raw.old_root_sha256;
  if (hash !== undefined && (typeof hash !== "string" || !/^[0-9a-f]{64}$/.test(hash))) {
    throw new RotationError(`${file}: "old_root_sha256" is not a SHA-256 in hex`);
  }
  const state: RotationState = {
    phase,
    distributedAt: time("distributed_at", true)!,
    signingAt: time("signing_at", phase === "signing"),
    oldRootNotAfter: time("old_root_not_after", true)!,
    reason,
    switchAt: time("switch_at", false),
    completeAt: time("complete_at", false),
    oldRootSha256: hash,
  };
  for (const key of Object.keys(state) as (keyof RotationState)[]) {
    if (state[key] === undefined) delete state[key];
  }
  return state;
}

/** Writes `rotation-state.json` (Dapr's fields first, then sentry's). */
export function formatRotationState(state: RotationState): string {
  const iso = (date?: Date) => date?.toISOString();
  return JSON.stringify(
    {
      phase: state.phase,
      distributed_at: iso(state.distributedAt),
      signing_at: iso(state.signingAt) ?? GO_ZERO_TIME,
      old_root_not_after: iso(state.oldRootNotAfter),
      reason: state.reason,
      switch_at: iso(state.switchAt),
      complete_at: iso(state.completeAt),
      old_root_sha256: state.oldRootSha256,
    },
    null,
    2,
  ) + "\n";
}

/**
 * When signing switches: the time fixed by `sentry rotate start`, else as Dapr does
 * `distributed_at` + the propagation window in force (so a changed window applies to a rotation
 * in progress) — never after `oldExpiry`, when the old issuer or root can sign no more.
 */
export function switchTime(
  state: RotationState,
  settings: Pick<RotationSettings, "propagationWindowMs">,
  oldExpiry?: Date,
): Date {
  const planned = state.switchAt?.getTime() ??
    state.distributedAt.getTime() + settings.propagationWindowMs;
  return new Date(Math.min(planned, oldExpiry?.getTime() ?? Infinity));
}

/** The earliest NotAfter of the root and the issuer path signing now. */
function signingExpiry(pem: BundlePem): Date {
  const view = viewBundle(pem);
  return new Date(Math.min(
    view.root.notAfter.getTime(),
    ...view.chain.slice(0, view.pathLength).map((cert) => cert.notAfter.getTime()),
  ));
}

/**
 * When the old root leaves the anchors: the planned time, else Dapr's rule (the old root has
 * expired and the workload TTL plus clock skew has passed since the switch).
 */
export function completionTime(
  state: RotationState,
  settings: Pick<RotationSettings, "workloadTtlMs" | "skewMs">,
): Date {
  if (state.completeAt) return state.completeAt;
  const grace = (state.signingAt?.getTime() ?? Infinity) + settings.workloadTtlMs + settings.skewMs;
  return new Date(Math.max(state.oldRootNotAfter.getTime(), grace));
}

/** The parts of a stored bundle a rotation looks at. */
export interface BundleView {
  anchors: ParsedCertificate[];
  /** The stored issuer chain (a trailing self-signed root dropped). */
  chain: ParsedCertificate[];
  /** How many certificates of {@link chain} lead to {@link root} (the rest is a bridge). */
  pathLength: number;
  /** The anchor the issuer chain reaches: the root being signed under. */
  root: ParsedCertificate;
  issuer: ParsedCertificate;
}

/**
 * Reads a stored bundle: the issuer chain, the shortest prefix of it that reaches an anchor
 * (certificates after it are a bridge kept for sidecars with older anchors), and that anchor.
 */
export function viewBundle(pem: BundlePem): BundleView {
  const anchors = certificatesOf(pem.caCrt, "ca.crt");
  const chain = certificatesOf(pem.issuerCrt, "issuer.crt");
  if (chain.length > 1 && isSelfSigned(chain[chain.length - 1])) chain.pop();
  for (let i = 0; i < chain.length; i++) {
    const root = anchors.find((anchor) => isSignedBy(chain[i], anchor));
    if (root) return { anchors, chain, pathLength: i + 1, root, issuer: chain[0] };
  }
  throw new BundleError("issuer.crt does not chain to any trust anchor in ca.crt");
}

/** The rotation in progress, parsed, or undefined. */
export function rotationOf(pem: BundlePem): RotationState | undefined {
  return pem.rotation ? parseRotationState(pem.rotation.stateJson) : undefined;
}

/** Whether `cert` may have CA certificates below it: `depth` more than none (pathLen). */
function allowsDepth(cert: ParsedCertificate, depth: number): boolean {
  const extension = cert.extensions.get("2.5.29.19");
  if (!extension || !isCa(cert)) return false;
  const value = extension.value;
  const fields = der.children(value, der.expectElement(value, der.Tag.SEQUENCE));
  const pathLength = fields.find((field) => field.tag === der.Tag.INTEGER);
  if (!pathLength) return true;
  const content = der.contentOf(value, pathLength);
  const limit = content.length > 4 ? Infinity : content.reduce((n, byte) => n * 256 + byte, 0);
  return limit >= depth;
}

function identityOf(cert: ParsedCertificate, key: SigningKey): IssuerIdentity {
  return {
    key,
    subject: cert.subject,
    keyId: subjectKeyId(cert) ?? keyIdentifier(cert.subjectPublicKeyInfo),
  };
}

/**
 * The bridge for the switch: the new root cross-signed by the old root's key (when `caKey` is
 * stored and belongs to the old root), else by the old issuer when its path length allows two
 * more CA certificates below it. Returns the certificates to append after the new issuer (the
 * cross certificate, then the old issuer chain when the issuer signed it), or none.
 */
export function bridgeCertificates(
  pem: BundlePem,
  newRoot: ParsedCertificate,
  now: Date,
): Buffer[] {
  const view = viewBundle(pem);
  const cross = (signerCert: ParsedCertificate, signer: SigningKey) =>
    createCaCertificate({
      subject: newRoot.subject,
      subjectPublicKeyInfo: newRoot.subjectPublicKeyInfo,
      issuer: identityOf(signerCert, signer),
      validity: {
        notBefore: new Date(Math.max(newRoot.notBefore.getTime(), signerCert.notBefore.getTime())),
        notAfter: new Date(Math.min(newRoot.notAfter.getTime(), signerCert.notAfter.getTime())),
      },
      keyUsages: [...ROOT_KEY_USAGES],
    });
  if (pem.caKey) {
    const key = loadPrivateKey(pem.caKey);
    if (spkiOf(key).equals(view.root.subjectPublicKeyInfo)) {
      return [cross(view.root, new SigningKey(key))];
    }
  }
  const oldPath = view.chain.slice(0, view.pathLength);
  const usable = oldPath.every((cert, i) => allowsDepth(cert, i + 2)) &&
    allowsDepth(view.root, view.pathLength + 2) && view.issuer.notAfter > now;
  if (!usable) return [];
  const issuerKey = new SigningKey(loadPrivateKey(pem.issuerKey));
  return [cross(view.issuer, issuerKey), ...oldPath.map((cert) => cert.der)];
}

/** When a rotation must start: the trigger window before the root (or the issuer) expires. */
export function rotationDueAt(pem: BundlePem, settings: RotationSettings): Date {
  const view = viewBundle(pem);
  const rootKeyKept = pem.caKey !== undefined;
  const expiry = Math.min(
    view.root.notAfter.getTime(),
    ...(rootKeyKept ? [] : view.chain.slice(0, view.pathLength).map((c) => c.notAfter.getTime())),
  );
  return new Date(expiry - settings.triggerWindowMs);
}

/** When the issuer is renewed under the same root (root key kept): two-thirds of its life. */
export function issuerRenewalAt(pem: BundlePem): Date | undefined {
  if (!pem.caKey) return undefined;
  const { issuer } = viewBundle(pem);
  const life = issuer.notAfter.getTime() - issuer.notBefore.getTime();
  return new Date(issuer.notBefore.getTime() + (life * 2) / 3);
}

function names(
  pem: BundlePem,
  settings: RotationSettings,
): { trustDomain: string; namespace: string } {
  const { issuer, root } = viewBundle(pem);
  const fromIssuer = daprIdentityOf(issuer.subject);
  const fromRoot = daprIdentityOf(root.subject);
  return {
    trustDomain: fromIssuer.trustDomain ?? fromRoot.trustDomain ?? settings.trustDomain,
    namespace: fromIssuer.namespace ?? settings.namespace,
  };
}

/**
 * Starts a rotation at `now` (due to expiry, or asked for): a new root and issuer, anchors =
 * old + new, signing still old, switching at `now + propagation window` (earlier if the old
 * issuer or root would expire first). With JWT keys stored, a next JWT key is published now and
 * signs from the same time. Refuses when a rotation is already in progress.
 */
export async function startRotation(
  pem: BundlePem,
  now: Date,
  settings: RotationSettings,
  reason: RotationReason,
): Promise<BundlePem> {
  if (pem.rotation) throw new RotationError("a root rotation is already in progress");
  const view = viewBundle(pem);
  const { trustDomain, namespace } = names(pem, settings);
  const root: RootCa = generateRoot({
    trustDomain,
    algorithm: settings.algorithm,
    now,
    ttlMs: settings.rootTtlMs,
    skewMs: settings.skewMs,
  });
  const issuer = issueIssuer(root, {
    trustDomain,
    namespace,
    algorithm: settings.algorithm,
    now,
    skewMs: settings.skewMs,
    ttlMs: settings.rootTtlMs,
  });
  const state: RotationState = {
    phase: "distributing",
    distributedAt: now,
    oldRootNotAfter: view.root.notAfter,
    reason,
    oldRootSha256: sha256(view.root.der),
  };
  // An operator's start fixes the switch time it prints; the server's follows the window.
  const switchAt = switchTime(state, settings, signingExpiry(pem));
  if (reason === "manual") state.switchAt = switchAt;
  let jwt = pem.jwt;
  if (jwt) {
    const rotated = await rotateJwtKey(jwt, {
      now,
      delayMs: switchAt.getTime() - now.getTime(),
    });
    jwt = { keyPem: rotated.keyPem, jwksJson: rotated.jwksJson };
  }
  const newRootPem = encodeCertificates([root.certificate.der]);
  return {
    ...pem,
    caCrt: encodeCertificates([...view.anchors.map((cert) => cert.der), root.certificate.der]),
    ...(jwt ? { jwt } : {}),
    rotation: {
      stateJson: formatRotationState(state),
      caCrt: newRootPem,
      issuerCrt: issuer.issuerCrt,
      issuerKey: issuer.issuerKey,
      ...(pem.caKey ? { caKey: privateKeyToPem(root.key.privateKey) } : {}),
    },
  };
}

/**
 * Gives up a rotation that has not switched signing yet: anchors back to the old set, and the
 * next JWT key it published withdrawn.
 */
export function abortRotation(pem: BundlePem, now: Date = new Date()): BundlePem {
  const state = rotationOf(pem);
  if (!state || !pem.rotation) throw new RotationError("no root rotation is in progress");
  if (state.phase !== "distributing") {
    throw new RotationError(
      `signing switched to the new issuer at ${state.signingAt?.toISOString()}: too late to ` +
        `abort (certificates under the new root are out); let the rotation complete`,
    );
  }
  const newRoot = certificatesOf(pem.rotation.caCrt, ROTATION_FILE_NAMES.caCrt)[0];
  const anchors = certificatesOf(pem.caCrt, "ca.crt").filter((cert) =>
    !cert.der.equals(newRoot.der)
  );
  const { rotation: _dropped, ...rest } = pem;
  return {
    ...rest,
    caCrt: encodeCertificates(anchors.map((cert) => cert.der)),
    ...(pem.jwt ? { jwt: withdrawNextJwtKey(pem.jwt, { now }) } : {}),
  };
}

function switchSigning(
  pem: BundlePem,
  state: RotationState,
  now: Date,
  settings: RotationSettings,
): BundlePem {
  const rotation = pem.rotation!;
  const newRoot = certificatesOf(rotation.caCrt, ROTATION_FILE_NAMES.caCrt)[0];
  const newIssuer = certificatesOf(rotation.issuerCrt, ROTATION_FILE_NAMES.issuerCrt);
  const view = viewBundle(pem);
  const bridge = bridgeCertificates(pem, newRoot, now);
  const lastOldCertificate = now.getTime() + settings.workloadTtlMs + settings.completionMarginMs;
  const completeAt = new Date(Math.min(view.root.notAfter.getTime(), lastOldCertificate));
  const next: RotationState = { ...state, phase: "signing", signingAt: now, completeAt };
  const { caKey: _oldRootKey, ...rest } = pem;
  return {
    ...rest,
    issuerCrt: encodeCertificates([...newIssuer.map((cert) => cert.der), ...bridge]),
    issuerKey: rotation.issuerKey,
    ...(rotation.caKey ? { caKey: rotation.caKey } : {}),
    rotation: { ...rotation, stateJson: formatRotationState(next) },
  };
}

function completeRotation(
  pem: BundlePem,
  state: RotationState,
  now: Date,
  settings: RotationSettings,
): BundlePem {
  // Sentry's state names the old root; Dapr's does not, and Dapr keeps only the new root then.
  const newRoot = certificatesOf(pem.rotation!.caCrt, ROTATION_FILE_NAMES.caCrt);
  const anchors = state.oldRootSha256
    ? certificatesOf(pem.caCrt, "ca.crt").filter((cert) => sha256(cert.der) !== state.oldRootSha256)
    : newRoot;
  const { rotation: _done, ...rest } = pem;
  let jwt = pem.jwt;
  if (jwt) {
    const pruned = pruneJwtKeys(jwt, { now, ttlMs: settings.jwtTtlMs ?? 24 * 3_600_000 });
    jwt = { keyPem: pruned.keyPem, jwksJson: pruned.jwksJson };
  }
  return {
    ...rest,
    caCrt: encodeCertificates(anchors.map((cert) => cert.der)),
    ...(jwt ? { jwt } : {}),
  };
}

/** The stored chain without bridge certificates that have expired (undefined: none to drop). */
function prunedChain(pem: BundlePem, now: Date): string | undefined {
  const view = viewBundle(pem);
  const bridge = view.chain.slice(view.pathLength);
  if (bridge.length === 0 || !bridge.some((cert) => cert.notAfter <= now)) return undefined;
  return encodeCertificates(view.chain.slice(0, view.pathLength).map((cert) => cert.der));
}

function renewIssuer(pem: BundlePem, now: Date, settings: RotationSettings): BundlePem {
  const view = viewBundle(pem);
  const rootKey = loadPrivateKey(pem.caKey!);
  if (!spkiOf(rootKey).equals(view.root.subjectPublicKeyInfo)) {
    throw new RotationError("ca.key does not belong to the root the issuer chains to");
  }
  const issuerLife = view.issuer.notAfter.getTime() - view.issuer.notBefore.getTime();
  const { trustDomain, namespace } = names(pem, settings);
  const issuer = issueIssuer({ certificate: view.root, key: new SigningKey(rootKey) }, {
    trustDomain,
    namespace,
    algorithm: settings.algorithm,
    now,
    skewMs: settings.skewMs,
    ttlMs: issuerLife,
  });
  return { ...pem, ...issuer };
}

const at = (date: Date) => date.toISOString();

/**
 * What to do at `now`: start a due rotation, switch signing after the propagation window,
 * complete after the old certificates expired, renew the issuer (root key kept), prune an
 * expired bridge — or nothing, with what it waits for. `enabled: false` only finishes a
 * rotation in progress (e.g. one started by `sentry rotate start`) and prunes.
 */
export async function planRotation(
  pem: BundlePem,
  now: Date,
  settings: RotationSettings,
  options: { automatic: boolean } = { automatic: true },
): Promise<RotationStep> {
  const state = rotationOf(pem);
  if (state?.phase === "distributing") {
    const switchAt = switchTime(state, settings, signingExpiry(pem));
    if (now < switchAt) {
      return {
        kind: "none",
        waitingFor: `the propagation window: signing switches to the new issuer at ${at(switchAt)}`,
        nextAt: switchAt,
      };
    }
    const next = switchSigning(pem, state, now, settings);
    const bridged = viewBundle(next).chain.length > viewBundle(next).pathLength;
    return {
      kind: "switch",
      next,
      message: `root rotation: signing with the new issuer` +
        (bridged
          ? " (chain bridged to the old root for sidecars that do not know the new one yet)"
          : ""),
    };
  }
  if (state?.phase === "signing") {
    const completeAt = completionTime(state, settings);
    if (now < completeAt) {
      return {
        kind: "none",
        waitingFor: `certificates signed by the old issuer to expire: the old root leaves the ` +
          `trust anchors at ${at(completeAt)}`,
        nextAt: completeAt,
      };
    }
    return {
      kind: "complete",
      next: completeRotation(pem, state, now, settings),
      message: "root rotation complete: the old root left the trust anchors",
    };
  }
  const pruned = prunedChain(pem, now);
  if (pruned) {
    return {
      kind: "prune-bridge",
      next: { ...pem, issuerCrt: pruned },
      message: "removed the expired bridge certificates from the issuer chain",
    };
  }
  if (!options.automatic) {
    return { kind: "none", waitingFor: "automatic rotation is off (--rotation-enabled)" };
  }
  const dueAt = rotationDueAt(pem, settings);
  if (now >= dueAt) {
    return {
      kind: "start",
      next: await startRotation(pem, now, settings, "expiry"),
      message: `root rotation started: the current CA expires within the trigger window`,
    };
  }
  const renewAt = issuerRenewalAt(pem);
  if (renewAt && now >= renewAt) {
    return {
      kind: "renew-issuer",
      next: renewIssuer(pem, now, settings),
      message: "renewed the issuer under the same root (two-thirds of its life had passed)",
    };
  }
  const nextAt = renewAt && renewAt < dueAt ? renewAt : dueAt;
  return {
    kind: "none",
    waitingFor: renewAt && renewAt < dueAt
      ? `issuer renewal at ${at(renewAt)}`
      : `the trigger window: a root rotation starts at ${at(dueAt)}`,
    nextAt,
  };
}
