/**
 * Long-running helper programs of the tests (a real kube-apiserver, etcd, Vault): a child
 * process whose output is kept for error messages and that stops with SIGTERM then SIGKILL, and
 * a poll-until-true wait.
 *
 * @module
 */
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
