/**
 * Sources of mTLS settings snapshots: built-in defaults, or a Configuration file that is
 * watched and re-read. A source hands out whole validated snapshots; an invalid document is
 * reported and never replaces the last good one. The Kubernetes Configuration resource will be
 * another source behind the same interface.
 *
 * @module
 */
import { readSmallFile } from "../util/bounded-read.ts";
import {
  ConfigurationError,
  DEFAULT_SETTINGS,
  type MtlsSettings,
  parseConfiguration,
} from "./configuration.ts";
import { type FileWatch, watchFiles } from "./file-watcher.ts";
import { fileErrorReason } from "../util/file-errors.ts";

/** What a source reports while watched. */
export interface SettingsHandlers {
  /** A new valid snapshot (different from the last one). */
  onUpdate(settings: MtlsSettings): void;
  /** A changed document that is not valid; the previous snapshot stays in force. */
  onError(error: Error): void;
}

/** Where the settings come from. */
export interface SettingsSource {
  /** For logs, e.g. `configuration file ./config.yaml`. */
  readonly description: string;
  /** Reads the settings once; throws ConfigurationError when they are unusable. */
  load(): Promise<MtlsSettings>;
  /** Starts reporting changes until the returned handle (or {@link close}) stops it. */
  watch(handlers: SettingsHandlers): { close(): void };
  /** Re-reads now (for SIGHUP); reports through the handlers like a change. */
  reload(): Promise<void>;
  /** Stops watching. */
  close(): void;
}

/** Dapr's built-in defaults; nothing to watch. */
export class DefaultSettingsSource implements SettingsSource {
  readonly description = "built-in defaults";
  /** Returns the defaults. */
  load(): Promise<MtlsSettings> {
    return Promise.resolve(DEFAULT_SETTINGS);
  }
  /** Nothing changes. */
  watch(): { close(): void } {
    return { close() {} };
  }
  /** Nothing to re-read. */
  reload(): Promise<void> {
    return Promise.resolve();
  }
  /** Nothing to stop. */
  close(): void {}
}

/** A Configuration file, watched for edits, renames and symlink swaps. */
export class FileSettingsSource implements SettingsSource {
  readonly description: string;
  #lastText?: string;
  #lastError?: string;
  #handlers?: SettingsHandlers;
  #watch?: FileWatch;

  /** `env` is used for `$VAR` expansion, as Dapr does. */
  constructor(readonly path: string, readonly env: Record<string, string | undefined>) {
    this.description = `configuration file ${path}`;
  }

  async #read(): Promise<string> {
    try {
      return await readSmallFile(this.path);
    } catch (error) {
      const reason = fileErrorReason(error);
      throw new ConfigurationError(`${this.description}: ${reason}`);
    }
  }

  /** Reads and parses the file. */
  async load(): Promise<MtlsSettings> {
    const text = await this.#read();
    const settings = parseConfiguration(text, this.description, this.env);
    this.#lastText = text;
    return settings;
  }

  /** Starts watching the file's directory. */
  watch(handlers: SettingsHandlers): { close(): void } {
    this.#handlers = handlers;
    this.#watch = watchFiles([this.path], () => void this.#check(false));
    return { close: () => this.close() };
  }

  /** Re-reads the file even if its text did not change. */
  reload(): Promise<void> {
    return this.#check(true);
  }

  async #check(force: boolean): Promise<void> {
    const handlers = this.#handlers;
    if (!handlers) return;
    let text: string;
    try {
      text = await this.#read();
    } catch (error) {
      this.#report(error as Error, force);
      return;
    }
    if (!force && text === this.#lastText) return;
    this.#lastText = text;
    try {
      const settings = parseConfiguration(text, this.description, this.env);
      this.#lastError = undefined;
      handlers.onUpdate(settings);
    } catch (error) {
      this.#report(error as Error, true);
    }
  }

  /** Reports an error once until the situation changes (the poll would repeat it). */
  #report(error: Error, always: boolean): void {
    if (!always && error.message === this.#lastError) return;
    this.#lastError = error.message;
    this.#handlers?.onError(error);
  }

  /** Stops watching. */
  close(): void {
    this.#watch?.close();
  }
}
