/**
 * `sentry expiry`: when the root and the issuer in a store expire, and, with `--warn`, a
 * non-zero exit when either is closer than that (for cron jobs and CI gates). An issuer that
 * outlives the root gets the server's warning on stderr.
 *
 * @module
 */
import { bundleLifetimes } from "../ca/bundle.ts";
import { issuerOutlivesRootWarning } from "../server/expiry-monitor.ts";
import {
  type CommandIO,
  type CommandSpec,
  Exit,
  flagValues,
  runCommand,
  ttlFlag,
} from "./command.ts";
import { openStore, STORE_FLAGS } from "./store-flags.ts";

const DAY_MS = 86_400_000;

/** `sentry expiry`. */
export const EXPIRY_COMMAND: CommandSpec = {
  name: "expiry",
  summary: "show when the root and issuer in a store expire; --warn fails when too close",
  usage: `Usage:
  sentry expiry --issuer-credentials DIR [--warn 30d] [--json]

Prints the NotAfter of the root (the earliest trust anchor) and of the issuer, and the days
left. With --warn DURATION (Go duration or days, e.g. 30d), exits 1 when either expires
sooner than that, so that a cron job or CI step can alert before anything breaks. An issuer
that expires after the root is warned about on stderr: every chain breaks when the root
expires.`,
  flags: [
    ...STORE_FLAGS,
    {
      name: "warn",
      type: "string",
      default: "",
      help: "Exit 1 when the root or issuer expires within this (e.g. 30d)",
    },
    { name: "json", type: "bool", default: false, help: "Print the result as JSON" },
  ],
};

/** Runs `sentry expiry`. */
export function runExpiry(argv: readonly string[], io: CommandIO): Promise<number> {
  return runCommand(EXPIRY_COMMAND, argv, io, async (parsed) => {
    const flags = flagValues(parsed);
    const warnMs = flags.string("warn") === "" ? undefined : ttlFlag("warn", flags.string("warn"));
    const { store } = await openStore(parsed, io.env);
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
    }
    if (failing.length > 0) {
      io.stderr(
        `sentry expiry: the ${failing.map((entry) => entry.what).join(" and ")} expire(s) within ` +
          `--warn ${flags.string("warn")}: rotate with 'sentry renew'\n`,
      );
      return Exit.FAILED;
    }
    return Exit.OK;
  });
}
