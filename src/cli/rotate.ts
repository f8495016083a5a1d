/**
 * `sentry rotate status|start|abort`: an operator's view of the root rotation
 * (src/ca/root-rotation.ts) and its two levers. `status` plans with the core's rules and writes
 * nothing; `start` begins a rotation now (after a key compromise, or instead of waiting for the
 * trigger window); `abort` gives one up before signing switched. Writes go through the store's
 * compare-and-swap, as the server's rotation driver does, so a command and a running sentry
 * never overwrite each other. The running sentry carries a started rotation on (switch, then
 * completion) whatever its `--rotation-enabled`: that flag only decides whether it starts
 * rotations by itself.
 *
 * Also the pieces `sentry expiry` shares: the rotation window flags, the settings they make and
 * {@link rotationOutlook}, what happens next in words.
 *
 * JSON output of `status` (`--json`), field names stable:
 *
 * ```text
 * { "store": string, "phase": "none" | "distributing" | "signing",
 *   "root": Cert (the root the issuer chains to: the old one until the switch),
 *   "issuer": { "notAfter": ISO }, "anchors": number, "rootKeyKept": boolean,
 *   "rotation": null | { "phase": "distributing" | "signing", "reason": "expiry" | "manual" | null,
 *     "distributedAt": ISO, "switchAt": ISO, "signingAt": ISO | null,
 *     "completeAt": ISO, "completeAtEstimated": boolean (true until the switch fixes it),
 *     "oldRootNotAfter": ISO, "newRoot": Cert },
 *   "automatic": boolean (--rotation-enabled),
 *   "next": { "action": "none" | "start" | "switch" | "complete" | "renew-issuer" | "prune-bridge",
 *             "due": boolean (the action is due now), "at": ISO | null, "waitingFor": string } }
 * Cert = { "subject": string, "notAfter": ISO, "sha256": "AB:CD:...", "keyType": string }
 * ```
 *
 * @module
 */
import type { BundlePem } from "../ca/bundle.ts";
import { daprIdentityOf } from "../ca/profiles.ts";
import {
  abortRotation,
  completionTime,
  planRotation,
  ROTATION_DEFAULTS,
  rotationOf,
  type RotationSettings,
  type RotationState,
  type RotationStep,
  startRotation,
  switchTime,
  viewBundle,
} from "../ca/root-rotation.ts";
import { DEFAULT_SETTINGS } from "../config/configuration.ts";
import { type CredentialStore, StoreConflictError } from "../stores/store.ts";
import { CA_KEY_ALGORITHMS, type CaKeyAlgorithm, describeKey } from "../x509/keys.ts";
import { fingerprint } from "../x509/describe.ts";
import { parseCertificate, type ParsedCertificate } from "../x509/parse.ts";
import { decodePem } from "../x509/pem.ts";
import { formatName } from "../x509/x509-text.ts";
import {
  type CommandIO,
  type CommandSpec,
  Exit,
  flagValues,
  runCommand,
  ttlFlag,
} from "./command.ts";
import { type FlagSpec, type ParsedFlags, UsageError } from "./flags.ts";
import { JWT_FLAGS } from "./jwt-flags.ts";
import { openStore, STORE_FLAGS } from "./store-flags.ts";

/** The default of `--workload-cert-ttl`: Dapr's workloadCertTTL. */
const WORKLOAD_TTL_DEFAULT = "24h";

/**
 * `--rotation-trigger-window` and `--rotation-propagation-window` as `sentry serve` has them,
 * and `--workload-cert-ttl` (the Configuration's workloadCertTTL), for planning offline.
 */
export const ROTATION_WINDOW_FLAGS: readonly FlagSpec[] = [
  {
    name: "rotation-trigger-window",
    type: "string",
    default: "720h",
    help: "How long before the root (or, without a stored root key, the issuer) expires a " +
      "server with --rotation-enabled starts a rotation (the server's value)",
  },
  {
    name: "rotation-propagation-window",
    type: "string",
    default: "24h",
    help: "How long both roots are served before signing switches to the new issuer " +
      "(at least --workload-cert-ttl)",
  },
  {
    name: "workload-cert-ttl",
    type: "string",
    default: WORKLOAD_TTL_DEFAULT,
    help: "Lifetime of workload certificates (Dapr's workloadCertTTL), for the dates shown",
  },
];

/** `sentry rotate`. */
export const ROTATE_COMMAND: CommandSpec = {
  name: "rotate",
  summary: "root CA rotation: status, start (now) or abort (before signing switches)",
  usage: `Usage:
  sentry rotate status --issuer-credentials DIR [--json] [--rotation-enabled=false]
  sentry rotate start  --issuer-credentials DIR [--rotation-propagation-window 24h] [--root-ttl 365d]
  sentry rotate abort  --issuer-credentials DIR

A root rotation replaces the root without a failed call and without restarting sidecars:
  distributing  a new root and issuer are stored; the trust anchors are old + new, signing
                stays with the old issuer, for the propagation window (every sidecar renews
                its certificate, and learns the new root, within --workload-cert-ttl);
  signing       the new issuer signs (its chain is bridged to the old root while possible);
  complete      once the certificates signed before the switch have expired, the old root
                leaves the trust anchors.

status  shows the current root and issuer, the phase and its dates, and what happens next,
        as a server with --rotation-enabled (default here; =false for a server without it)
        would do it. Writes nothing.
start   begins a rotation now, e.g. after a key compromise or before the root expires
        (reason "manual"). Refused while a rotation is in progress. The switch time is
        fixed now: start + --rotation-propagation-window (sooner if the old issuer or root
        expires first). A running sentry carries the rotation on, with or without
        --rotation-enabled; nothing moves while no sentry runs on the store.
abort   gives up a rotation that has not switched signing yet: the new root leaves the
        trust anchors. Refused after the switch (certificates under the new root are out).

Exit codes: 0 done, 1 refused or failed (the message says why), 2 bad usage.

Examples:
  sentry rotate status --issuer-credentials ./certs
  sentry rotate start --issuer-credentials ./certs --rotation-propagation-window 48h
  sentry rotate status --store k8s --namespace dapr-system --json
  sentry rotate abort --issuer-credentials ./certs`,
  positionals: 1,
  flags: [
    ...STORE_FLAGS,
    {
      name: "rotation-enabled",
      type: "bool",
      default: true,
      help: "status: describe a server that starts rotations by itself (--rotation-enabled)",
    },
    ...ROTATION_WINDOW_FLAGS,
    {
      name: "root-ttl",
      type: "string",
      default: "365d",
      help: "start: lifetime of the new root and issuer",
    },
    {
      name: "key-algorithm",
      type: "string",
      default: "",
      choices: CA_KEY_ALGORITHMS,
      help: "start: key algorithm of the new root and issuer (default: the current root's " +
        "when sentry makes that kind, else ecdsa-p256)",
    },
    {
      name: "trust-domain",
      type: "string",
      default: "",
      help: "start: trust domain of the new root (default: read from the current issuer or root)",
    },
    { name: "json", type: "bool", default: false, help: "Print the result as JSON" },
    ...JWT_FLAGS.filter((flag) =>
      flag.name === "jwt-key-filename" || flag.name === "jwks-filename"
    ),
  ],
};

const ACTIONS = ["status", "start", "abort"] as const;
type Action = typeof ACTIONS[number];

/** A flag's value when the command has it, else its default (expiry has fewer flags). */
function flagOr(parsed: ParsedFlags, name: string, fallback: string): string {
  const value = parsed.values[name];
  return typeof value === "string" && value !== "" ? value : fallback;
}

/** The key algorithm of a certificate's key when sentry can make it, else ecdsa-p256. */
function algorithmOf(cert: ParsedCertificate): CaKeyAlgorithm {
  return describeKey(cert.publicKey) === "ed25519" ? "ed25519" : "ecdsa-p256";
}

/**
 * The rotation settings the flags give for `pem` (flags a command lacks take `sentry serve`'s
 * defaults). UsageError when a window is not a duration, or the propagation window is shorter
 * than the workload certificate TTL (sidecars would not all know the new root at the switch).
 */
export function rotationSettingsFromFlags(
  parsed: ParsedFlags,
  pem: BundlePem,
  namespace: string,
): RotationSettings {
  const duration = (name: string, fallback: string) =>
    ttlFlag(name, flagOr(parsed, name, fallback));
  const propagationWindowMs = duration("rotation-propagation-window", "24h");
  const workloadTtlMs = duration("workload-cert-ttl", WORKLOAD_TTL_DEFAULT);
  if (propagationWindowMs < workloadTtlMs) {
    throw new UsageError(
      `--rotation-propagation-window (${
        flagOr(parsed, "rotation-propagation-window", "24h")
      }) must be at least --workload-cert-ttl (${
        flagOr(parsed, "workload-cert-ttl", WORKLOAD_TTL_DEFAULT)
      }): every sidecar must renew once, and learn the new root, before signing switches`,
    );
  }
  const algorithm = flagOr(parsed, "key-algorithm", "");
  return {
    triggerWindowMs: duration("rotation-trigger-window", "720h"),
    propagationWindowMs,
    workloadTtlMs,
    completionMarginMs: ROTATION_DEFAULTS.checkIntervalMs,
    skewMs: DEFAULT_SETTINGS.allowedClockSkewMs,
    algorithm: (algorithm || algorithmOf(viewBundle(pem).root)) as CaKeyAlgorithm,
    rootTtlMs: duration("root-ttl", "365d"),
    trustDomain: flagOr(parsed, "trust-domain", "") || "localhost",
    namespace,
  };
}

/** What happens next, in words: the step the core plans now, without writing it. */
export interface RotationOutlook {
  /** "none", or the step that is due now (a running sentry takes it at its next check). */
  action: RotationStep["kind"];
  due: boolean;
  /** When the next step is due (undefined: due now, or nothing planned). */
  at?: Date;
  /** What the store waits for, or what is due now and who does it. */
  waitingFor: string;
}

/** Who takes a due step and how, by kind. */
const DUE_NOW: Record<Exclude<RotationStep["kind"], "none">, string> = {
  start: "a root rotation is due now (the CA expires within the trigger window): a sentry " +
    "with --rotation-enabled starts it at its next check; or run 'sentry rotate start'",
  "renew-issuer": "issuer renewal under the same root is due now (two-thirds of its life " +
    "passed): a sentry with --rotation-enabled does it at its next check; or run 'sentry renew'",
  switch: "signing is due to switch to the new issuer now: a running sentry does it at its " +
    "next check",
  complete: "the rotation is due to complete now (the old root leaves the trust anchors): a " +
    "running sentry does it at its next check",
  "prune-bridge": "expired bridge certificates are due to leave the issuer chain: a running " +
    "sentry removes them at its next check",
};

/** Plans at `now` with {@link planRotation} (writes nothing) and says what happens next. */
export async function rotationOutlook(
  pem: BundlePem,
  now: Date,
  settings: RotationSettings,
  automatic: boolean,
): Promise<RotationOutlook> {
  const step = await planRotation(pem, now, settings, { automatic });
  if (step.kind === "none") {
    return { action: "none", due: false, at: step.nextAt, waitingFor: step.waitingFor };
  }
  return { action: step.kind, due: true, waitingFor: DUE_NOW[step.kind] };
}

/**
 * When the old root leaves the anchors: fixed once signing switched; before that, what the
 * core would fix if the switch happened on time (estimated).
 */
async function completionOf(
  pem: BundlePem,
  state: RotationState,
  settings: RotationSettings,
): Promise<{ at: Date; estimated: boolean }> {
  if (state.phase === "signing") return { at: completionTime(state, settings), estimated: false };
  const step = await planRotation(pem, switchTime(state, settings), settings, { automatic: false });
  const switched = step.kind === "switch" ? rotationOf(step.next) : undefined;
  return {
    at: switched ? completionTime(switched, settings) : state.oldRootNotAfter,
    estimated: true,
  };
}

/** A certificate as status shows it. */
function certInfo(cert: ParsedCertificate) {
  return {
    subject: formatName(cert.subject),
    notAfter: cert.notAfter.toISOString(),
    sha256: fingerprint(cert.der, "sha256"),
    keyType: describeKey(cert.publicKey),
  };
}

/** Everything `status` shows (the JSON form; see the module comment). */
export async function rotationStatus(
  store: CredentialStore,
  pem: BundlePem,
  now: Date,
  settings: RotationSettings,
  automatic: boolean,
) {
  const view = viewBundle(pem);
  const state = rotationOf(pem);
  let rotation = null;
  if (state && pem.rotation) {
    const [newRoot] = decodePem(pem.rotation.caCrt)
      .filter((block) => block.label === "CERTIFICATE")
      .map((block) => parseCertificate(block.der));
    const completion = await completionOf(pem, state, settings);
    rotation = {
      phase: state.phase,
      reason: state.reason ?? null,
      distributedAt: state.distributedAt.toISOString(),
      switchAt: (state.signingAt ?? switchTime(state, settings)).toISOString(),
      signingAt: state.signingAt?.toISOString() ?? null,
      completeAt: completion.at.toISOString(),
      completeAtEstimated: completion.estimated,
      oldRootNotAfter: state.oldRootNotAfter.toISOString(),
      newRoot: certInfo(newRoot),
    };
  }
  const next = await rotationOutlook(pem, now, settings, automatic);
  return {
    store: store.description,
    phase: state?.phase ?? "none",
    root: certInfo(view.root),
    issuer: { notAfter: view.issuer.notAfter.toISOString() },
    anchors: view.anchors.length,
    rootKeyKept: pem.caKey !== undefined,
    rotation,
    automatic,
    next: {
      action: next.action,
      due: next.due,
      at: next.at?.toISOString() ?? null,
      waitingFor: next.waitingFor,
    },
  };
}

type Status = Awaited<ReturnType<typeof rotationStatus>>;

const LABEL_WIDTH = 20;
const line = (label: string, value: string) => `${`${label}:`.padEnd(LABEL_WIDTH)}${value}\n`;

/** The text form of {@link rotationStatus}. */
export function formatStatus(status: Status): string {
  let text = line("store", status.store) +
    line("root", status.root.subject) +
    line("  expires", status.root.notAfter) +
    line("  sha256", status.root.sha256) +
    line("issuer expires", status.issuer.notAfter) +
    line("trust anchors", String(status.anchors)) +
    line("root key", status.rootKeyKept ? "kept in the store" : "not in the store") +
    line("phase", status.phase);
  const rotation = status.rotation;
  if (rotation) {
    text += line("  reason", rotation.reason ?? "not recorded") +
      line("  new root", `${rotation.newRoot.subject}, expires ${rotation.newRoot.notAfter}`) +
      line("  new root sha256", rotation.newRoot.sha256) +
      line("  distributed at", rotation.distributedAt) +
      line("  switch at", rotation.switchAt) +
      line("  signing at", rotation.signingAt ?? "not yet (signing with the old issuer)") +
      line(
        "  complete at",
        `${rotation.completeAt}${
          rotation.completeAtEstimated ? " (expected; fixed when signing switches)" : ""
        }`,
      ) +
      line("  old root expires", rotation.oldRootNotAfter);
  }
  return text + line("waiting for", status.next.waitingFor);
}

/** Writes `next` in place of `current`; a conflict becomes a message saying to run again. */
async function replaceOrExplain(
  store: CredentialStore,
  next: BundlePem,
  current: BundlePem,
  action: Action,
): Promise<void> {
  try {
    await store.replace(next, current);
  } catch (error) {
    if (error instanceof StoreConflictError) {
      throw new Error(
        `the store changed while 'sentry rotate ${action}' was running (a running sentry or ` +
          `another command wrote it); nothing was written: run again`,
        { cause: error },
      );
    }
    throw error;
  }
}

/** The trust domain for a new root: the flag, else what the issuer or root says; UsageError. */
function checkTrustDomain(parsed: ParsedFlags, pem: BundlePem): void {
  if (flagOr(parsed, "trust-domain", "") !== "") return;
  const { issuer, root } = viewBundle(pem);
  if (daprIdentityOf(issuer.subject).trustDomain ?? daprIdentityOf(root.subject).trustDomain) {
    return;
  }
  throw new UsageError(
    "the current issuer and root do not name a trust domain: pass --trust-domain",
  );
}

async function start(
  store: CredentialStore,
  current: BundlePem,
  io: CommandIO,
  parsed: ParsedFlags,
  settings: RotationSettings,
): Promise<number> {
  const now = io.now();
  const json = parsed.values.json as boolean;
  if (current.rotation) {
    const status = await rotationStatus(store, current, now, settings, true);
    io.stdout(json ? JSON.stringify(status, null, 2) + "\n" : formatStatus(status));
    io.stderr(
      `sentry rotate: a root rotation is already in progress (phase ${status.phase}, since ` +
        `${status.rotation?.distributedAt}); nothing was written: let it complete, or give it ` +
        `up with 'sentry rotate abort' before signing switches\n`,
    );
    return Exit.FAILED;
  }
  checkTrustDomain(parsed, current);
  const next = await startRotation(current, now, settings, "manual");
  await replaceOrExplain(store, next, current, "start");
  const status = await rotationStatus(store, next, now, settings, true);
  if (json) {
    io.stdout(JSON.stringify(status, null, 2) + "\n");
    return Exit.OK;
  }
  const rotation = status.rotation!;
  io.stdout(
    `started a root rotation in ${status.store} (reason: manual)\n` +
      formatStatus(status) +
      `signing switches at ${rotation.switchAt}; the old root leaves at about ` +
      `${rotation.completeAt} (after the certificates signed before the switch expire)\n` +
      `next: a running sentry on this store carries the rotation on, with or without ` +
      `--rotation-enabled: it serves both roots now (sidecars learn the new one as they renew), ` +
      `switches signing at ${rotation.switchAt} and then removes the old root. Nothing ` +
      `moves while no sentry runs. 'sentry rotate abort' gives it up before the switch.\n`,
  );
  return Exit.OK;
}

async function abort(
  store: CredentialStore,
  current: BundlePem,
  io: CommandIO,
  parsed: ParsedFlags,
  settings: RotationSettings,
): Promise<number> {
  const next = abortRotation(current, io.now());
  await replaceOrExplain(store, next, current, "abort");
  const status = await rotationStatus(store, next, io.now(), settings, true);
  if (parsed.values.json as boolean) {
    io.stdout(JSON.stringify(status, null, 2) + "\n");
  } else {
    io.stdout(
      `aborted the root rotation in ${status.store}: the new root left the trust anchors ` +
        `(${status.anchors} left); signing stays with the current issuer\n` +
        `next: nothing to do; sidecars that already received the new root keep it, unused, ` +
        `until their trust anchors are refreshed\n`,
    );
  }
  return Exit.OK;
}

/**
 * The store flags given on the command line, as arguments to repeat in a command to run
 * (`--issuer-credentials ./certs`), so that advice names the same store.
 */
export function storeArguments(parsed: ParsedFlags): string {
  return STORE_FLAGS.filter((flag) => parsed.given.has(flag.name)).map((flag) => {
    const value = String(parsed.values[flag.name]);
    return ` --${flag.name}${flag.type === "bool" ? `=${value}` : ` ${shellWord(value)}`}`;
  }).join("");
}

/** `value` as one shell word: as is when plain, else single-quoted. */
function shellWord(value: string): string {
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replaceAll("'", `'\\''`)}'`;
}

/** The action named on the command line; UsageError for none or an unknown one. */
function actionOf(parsed: ParsedFlags): Action {
  const [name] = parsed.positionals;
  if (name === undefined) {
    throw new UsageError(`say what to do: ${ACTIONS.join(", ")}`);
  }
  if (!(ACTIONS as readonly string[]).includes(name)) {
    throw new UsageError(
      `unknown action ${JSON.stringify(name)}: use one of ${ACTIONS.join(", ")}`,
    );
  }
  return name as Action;
}

/** Runs `sentry rotate`. */
export function runRotate(argv: readonly string[], io: CommandIO): Promise<number> {
  return runCommand(ROTATE_COMMAND, argv, io, async (parsed) => {
    const action = actionOf(parsed);
    const flags = flagValues(parsed);
    const { store, namespace } = await openStore(parsed, io.env);
    try {
      const current = await store.load();
      if (!current) {
        throw new Error(`${store.description} holds no trust bundle (use 'sentry init')`);
      }
      const settings = rotationSettingsFromFlags(parsed, current, namespace);
      if (action === "start") return await start(store, current, io, parsed, settings);
      if (action === "abort") return await abort(store, current, io, parsed, settings);
      const status = await rotationStatus(
        store,
        current,
        io.now(),
        settings,
        flags.bool("rotation-enabled"),
      );
      io.stdout(flags.bool("json") ? JSON.stringify(status, null, 2) + "\n" : formatStatus(status));
      return Exit.OK;
    } finally {
      store.close?.();
    }
  });
}
