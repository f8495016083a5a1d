/**
 * Long-running helper programs of the tests (a real kube-apiserver, etcd, Vault): the build
 * script that makes them (once per test process), a child process whose output is kept for error
 * messages and that stops with SIGTERM then SIGKILL, and a poll-until-true wait.
 *
 * @module
 */
const builds = new Map<string, Promise<string>>();

/**
 * Runs build script `script` (a `tests/<name>/build.sh`, which prints the directory of what it
 * built as its last line) once per test process; returns that directory. Its stderr shows.
 */
export function builtDirectory(script: string): Promise<string> {
  let built = builds.get(script);
  if (!built) {
    built = (async () => {
      const out = await new Deno.Command("sh", { args: [script], stderr: "inherit" }).output();
      if (!out.success) {
        throw new Error(`${script} failed (exit ${out.code}); its output is above`);
      }
      return new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!;
    })();
    builds.set(script, built);
  }
  return built;
}

/** A child process whose output is kept (the last 64 KiB) for error messages. */
export class Daemon {
  readonly #child: Deno.ChildProcess;
  #output = "";
  readonly #drained: Promise<unknown>;
  readonly exited: Promise<Deno.CommandStatus>;

  /** Starts `command args` with stdin closed; `name` labels it in messages. */
  constructor(readonly name: string, command: string, args: string[]) {
    this.#child = new Deno.Command(command, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.exited = this.#child.status;
    const keep = async (stream: ReadableStream<Uint8Array>) => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        this.#output = (this.#output + text).slice(-65536);
      }
    };
    this.#drained = Promise.all([keep(this.#child.stdout), keep(this.#child.stderr)]);
  }

  /** The tail of its output. */
  tail(lines = 40): string {
    return this.#output.split("\n").slice(-lines).join("\n");
  }

  /** SIGTERM, then SIGKILL after 10 s; waits for the exit and the end of the output. */
  async stop(): Promise<void> {
    let exited = false;
    this.exited.then(() => exited = true);
    try {
      this.#child.kill("SIGTERM");
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      if (!exited) {
        try {
          this.#child.kill("SIGKILL");
        } catch { /* already gone */ }
      }
    }, 10_000);
    await this.exited;
    clearTimeout(timer);
    await this.#drained;
  }
}

/** Polls `probe` every 250 ms until true; throws `failure()` after `timeoutMs` or when it throws. */
export async function waitFor(
  probe: () => Promise<boolean>,
  timeoutMs: number,
  failure: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(failure());
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
