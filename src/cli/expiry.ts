/**
 * `sentry expiry`: when the root and the issuer in a store expire, which of them comes first and
 * what will happen to it: the rotation in progress and its next time, the automatic rotation
 * of a server with rotation on (`--rotation-enabled`: when it starts), or the command to run
 * (`sentry rotate start` for the root, which renewing the issuer cannot help; `sentry renew`
 * for the issuer when the store keeps the root key). With `--warn`, a non-zero exit when
 * either is closer than that (for cron jobs and CI gates), whatever the plan. An issuer that
 * outlives the root gets the server's warning on stderr.
 *
 * @module
 */
import { bundleLifetimes, type BundlePem } from "../ca/bundle.ts";
import { rotationOf } from "../ca/root-rotation.ts";
import { issuerOutlivesRootWarning } from "../server/expiry-monitor.ts";
import type { ParsedFlags } from "./flags.ts";
import {
  type CommandIO,
  type CommandSpec,
  Exit,
  flagValues,
  runCommand,
  ttlFlag,
} from "./command.ts";
import {
  ROTATION_WINDOW_FLAGS,
  rotationOutlook,
  rotationSettingsFromFlags,
  storeArguments,
} from "./rotate.ts";
import { openStore, STORE_FLAGS } from "./store-flags.ts";

const DAY_MS = 86_400_000;

/** `sentry expiry`. */
export const EXPIRY_COMMAND: CommandSpec = {
  name: "expiry",
  summary: "show when the root and issuer in a store expire; --warn fails when too close",
  usage: `Usage:
  sentry expiry --issuer-credentials DIR [--warn 30d] [--json]

Prints the NotAfter of the root (the earliest trust anchor) and of the issuer, and the days
left; then which of them expires first and what will happen to it:
  - a root rotation in progress: its phase and what it waits for (a running sentry carries
    it on);
  - with --rotation-enabled (say so when your server runs with it): when the server's
    automatic rotation starts (--rotation-trigger-window before the expiry; give the
    server's value), or renews the issuer under a stored root key;
  - otherwise the command to run: 'sentry rotate start' for the root (renewing the issuer
    cannot help: a new issuer never outlives its root), 'sentry renew' for the issuer when
    the store keeps the root key.
With --warn DURATION (Go duration or days, e.g. 30d), exits 1 when either expires sooner than
that, so that a cron job or CI step can alert before anything breaks (also when a rotation
is planned: the message says what happens). An issuer that expires after the root is warned
about on stderr: every chain breaks when the root expires.

A cron job that keeps a store valid (the sentry serving DIR finishes the rotation; while one
is under way, 'rotate start' is refused with exit 1 and nothing changes):
  sentry expiry --issuer-credentials DIR --warn 45d ||
    sentry rotate start --issuer-credentials DIR`,
  flags: [
    ...STORE_FLAGS,
    {
      name: "warn",
      type: "string",
      default: "",
      help: "Exit 1 when the root or issuer expires within this (e.g. 30d)",
    },
    { name: "json", type: "bool", default: false, help: "Print the result as JSON" },
    {
      name: "rotation-enabled",
      type: "bool",
      default: false,
      help: "The server runs with automatic rotation (--rotation-enabled): say when it acts",
    },
    ...ROTATION_WINDOW_FLAGS,
  ],
};

/** What will happen to the certificate that expires first. */
interface ExpiryPlan {
  /** Which one expires first (the root when both expire together: it is what limits). */
  first: "root" | "issuer";
  rootKeyKept: boolean;
  /** The phase of a rotation in progress, else null. */
  rotation: string | null;
  /** rotation-in-progress / automatic (--rotation-enabled) / command (to run). */
  kind: "rotation-in-progress" | "automatic" | "command";
  /** When the next step is due (null: due now, or a command to run). */
  at: string | null;
  /** The command to run (kind "command"), with the store flags given. */
  command: string | null;
  message: string;
}

/** Why the root's nearness matters: the sentence expiry prints about it. */
const ROOT_FIRST = "renewing the issuer cannot help (a new issuer never outlives its root): " +
  "the root must be replaced by a rotation";

/** The rotation in progress, the automatic one, or the command to run, for `pem` at `now`. */
async function expiryPlan(
  parsed: ParsedFlags,
  pem: BundlePem,
  namespace: string,
  now: Date,
  first: "root" | "issuer",
): Promise<ExpiryPlan> {
  const state = rotationOf(pem);
  const automatic = parsed.values["rotation-enabled"] as boolean;
  const base = { first, rootKeyKept: pem.caKey !== undefined, rotation: state?.phase ?? null };
  if (state || automatic) {
    const settings = rotationSettingsFromFlags(parsed, pem, namespace);
    const outlook = await rotationOutlook(pem, now, settings, automatic);
    const next = outlook.due ? outlook.waitingFor : `waiting for ${outlook.waitingFor}`;
    return {
      ...base,
      kind: state ? "rotation-in-progress" : "automatic",
      at: outlook.at?.toISOString() ?? null,
      command: null,
      message: state
        ? `a root rotation is in progress (phase ${state.phase}; a running sentry carries it ` +
          `on): ${next}`
        : `automatic rotation (--rotation-enabled): ${next}`,
    };
  }
  const store = storeArguments(parsed);
  if (first === "issuer" && base.rootKeyKept) {
    const command = `sentry renew${store}`;
    return {
      ...base,
      kind: "command",
      at: null,
      command,
      message: `run '${command}': a new issuer under the same root (the store keeps the root ` +
        `key), sidecars keep their trust anchors`,
    };
  }
  const command = `sentry rotate start${store}`;
  return {
    ...base,
    kind: "command",
    at: null,
    command,
    message: `run '${command}' while a sentry serves the store: it switches signing to a new ` +
      `root after the propagation window and retires the old root, no restarts` +
      (first === "issuer"
        ? ` (the store does not keep the root key; with the root key kept offline, ` +
          `'sentry renew --root-key FILE' renews the issuer alone)`
        : `; or run sentry with --rotation-enabled to rotate automatically`),
  };
}

/** Runs `sentry expiry`. */
export function runExpiry(argv: readonly string[], io: CommandIO): Promise<number> {
  return runCommand(EXPIRY_COMMAND, argv, io, async (parsed) => {
    const flags = flagValues(parsed);
    const warnMs = flags.string("warn") === "" ? undefined : ttlFlag("warn", flags.string("warn"));
    const { store, namespace } = await openStore(parsed, io.env);
    const pem = await store.load();
    if (!pem) throw new Error(`${store.description} holds no trust bundle`);
    const lifetimes = bundleLifetimes(pem, store.names);
    const outlives = issuerOutlivesRootWarning(lifetimes.issuerNotAfter, lifetimes.rootNotAfter);
    if (outlives) io.stderr(`sentry expiry: warning: ${outlives}\n`);
    const now = io.now().getTime();
    const entries = [
      { what: "root", notAfter: lifetimes.rootNotAfter },
      { what: "issuer", notAfter: lifetimes.issuerNotAfter },
    ].map(({ what, notAfter }) => {
      const daysLeft = (notAfter.getTime() - now) / DAY_MS;
      const tooClose = warnMs !== undefined && notAfter.getTime() - now < warnMs;
      return {
        what,
        notAfter: notAfter.toISOString(),
        daysLeft: Number(daysLeft.toFixed(2)),
        tooClose,
      };
    });
    const failing = entries.filter((entry) => entry.tooClose);
    const first = lifetimes.rootNotAfter <= lifetimes.issuerNotAfter ? "root" : "issuer";
    const plan = await expiryPlan(parsed, pem, namespace, io.now(), first);
    const firstText = first === "root"
      ? `the root (${lifetimes.rootNotAfter.toISOString()}): ${
        plan.rotation ? "the rotation in progress replaces it" : ROOT_FIRST
      }`
      : `the issuer (${lifetimes.issuerNotAfter.toISOString()}), before its root`;
    if (flags.bool("json")) {
      io.stdout(
        JSON.stringify(
          {
            store: store.description,
            root: { notAfter: entries[0].notAfter, daysLeft: entries[0].daysLeft },
            issuer: { notAfter: entries[1].notAfter, daysLeft: entries[1].daysLeft },
            ...(warnMs !== undefined
              ? { warnDays: Number((warnMs / DAY_MS).toFixed(2)), ok: failing.length === 0 }
              : {}),
            firstToExpire: plan.first,
            rootKeyKept: plan.rootKeyKept,
            rotation: plan.rotation,
            plan: { kind: plan.kind, at: plan.at, command: plan.command, message: plan.message },
          },
          null,
          2,
        ) + "\n",
      );
    } else {
      for (const entry of entries) {
        const left = entry.daysLeft >= 0
          ? `${entry.daysLeft.toFixed(1)} days left`
          : `expired ${(-entry.daysLeft).toFixed(1)} days ago`;
        io.stdout(
          `${entry.what.padEnd(6)} expires ${entry.notAfter} (${left})${
            entry.tooClose ? "  <- within --warn" : ""
          }\n`,
        );
      }
      io.stdout(`first to expire: ${firstText}\nwhat happens:    ${plan.message}\n`);
    }
    if (failing.length > 0) {
      io.stderr(
        `sentry expiry: the ${failing.map((entry) => entry.what).join(" and ")} expire(s) within ` +
          `--warn ${flags.string("warn")}` +
          (failing.some((entry) => entry.what === "root") && !plan.rotation
            ? `; for the root, ${ROOT_FIRST}`
            : "") +
          `; ${plan.message}\n`,
      );
      return Exit.FAILED;
    }
    return Exit.OK;
  });
}
