/**
 * The CLI's two channels. stdout carries only results (a digest, a listing,
 * JSON, a container's own output) so that `strata pull X | xargs ...` works;
 * everything meant for a person (notes, warnings, progress) goes to stderr.
 *
 * Progress is per layer: bytes fetched (compressed) and applied
 * (uncompressed), redrawn in place with a bar on a terminal, one plain line
 * per layer event when stderr is a file or pipe, nothing with `--quiet`.
 *
 * @module
 */
import { getEnv } from "../sys/env.ts";

const encoder = new TextEncoder();

/** How progress and notes are shown. */
export type OutputMode = "tty" | "plain" | "quiet";

/** Where the output goes; tests pass their own sinks. */
export interface OutputSinks {
  /** Results (stdout). */
  stdout: (text: string) => void;
  /** Notes, warnings, progress and errors (stderr). */
  stderr: (text: string) => void;
}

/** The process's own stdout and stderr, written synchronously so lines never interleave. */
export const processSinks: OutputSinks = {
  stdout: (t) => writeAll(Deno.stdout, t),
  stderr: (t) => writeAll(Deno.stderr, t),
};

function writeAll(w: { writeSync(p: Uint8Array): number }, text: string): void {
  let b = encoder.encode(text);
  while (b.length > 0) b = b.subarray(w.writeSync(b));
}

/**
 * Picks the output mode: `quiet` when asked, `tty` when stderr is a
 * terminal (and `TERM` is not `dumb`), else `plain`.
 *
 * @example Usage
 * ```ts
 * import { detectMode } from "./output.ts";
 * console.log(detectMode(false)); // "plain" when stderr is a pipe
 * ```
 */
export function detectMode(quiet: boolean): OutputMode {
  if (quiet) return "quiet";
  let tty = false;
  try {
    tty = Deno.stderr.isTerminal();
  } catch {
    tty = false;
  }
  let dumb = false;
  try {
    dumb = getEnv("TERM") === "dumb";
  } catch {
    // No --allow-env: assume a capable terminal.
  }
  return tty && !dumb ? "tty" : "plain";
}

/**
 * Formats a byte count for people: `512 B`, `1.5 KB`, `12.3 MB` (powers of 1000).
 *
 * @example Usage
 * ```ts
 * import { formatBytes } from "./output.ts";
 * console.log(formatBytes(12_345_678)); // "12.3 MB"
 * ```
 */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

/**
 * Formats a duration in milliseconds: `850 ms`, `1.25 s`.
 *
 * @example Usage
 * ```ts
 * import { formatMs } from "./output.ts";
 * console.log(formatMs(1250)); // "1.25 s"
 * ```
 */
export function formatMs(ms: number): string {
  return ms < 1000 ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** Shortens a digest for display: `sha256:0123456789ab`. */
export function shortDigest(d: string): string {
  const i = d.indexOf(":");
  return i < 0 ? d.slice(0, 12) : d.slice(0, i + 13);
}

/** The state of one layer in a progress display. */
export interface LayerState {
  /** Position, 1-based. */
  index: number;
  /** Layer digest (blob). */
  digest: string;
  /** Blob size in bytes (from the manifest). */
  size: number;
  /** Compressed bytes fetched so far. */
  fetched: number;
  /** Uncompressed bytes applied so far. */
  applied: number;
  /** Where the layer is. */
  phase: "waiting" | "fetching" | "done" | "cached" | "failed";
  /** When fetching started (ms, performance.now()). */
  started?: number;
  /** When it finished. */
  finished?: number;
}

/** Progress of one layer, as reported by whoever reads it. */
export interface LayerProgress {
  /** Reading the blob started. */
  start(): void;
  /** `n` more compressed bytes were fetched. */
  fetched(n: number): void;
  /** `n` more uncompressed bytes were applied. */
  applied(n: number): void;
  /** The layer is in the cache; `cached` when no byte had to be read. */
  done(cached?: boolean): void;
  /** The layer failed. */
  failed(): void;
}

// C0 controls but tab and newline, DEL and the C1 controls.
// deno-lint-ignore no-control-regex
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g;

/**
 * Shows the control characters of `text` (C0 but newline and tab, DEL, C1)
 * as `\xNN`. Notes and errors carry strings an image's author chose (tag
 * names and platforms from an index, a registry's error text): written raw,
 * an escape sequence would drive the user's terminal (retitle it, move the
 * cursor, hide or fake lines) and a carriage return would overwrite the
 * `strata:` line.
 *
 * @example Usage
 * ```ts
 * import { escapeControls } from "./output.ts";
 * console.assert(escapeControls("a\x1b[2Jb") === "a\\x1b[2Jb");
 * ```
 */
export function escapeControls(text: string): string {
  return text.replace(CONTROLS, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/**
 * The CLI's output: results to stdout, notes and progress to stderr in the
 * chosen {@linkcode OutputMode}.
 *
 * @example Usage
 * ```ts
 * import { Output } from "./output.ts";
 * const out = new Output("plain");
 * out.note("pulling example");
 * out.result("sha256:0123");
 * ```
 */
export class Output {
  /** The mode in use. */
  readonly mode: OutputMode;
  #sinks: OutputSinks;
  #layers: LayerState[] = [];
  #drawn = 0;
  #active = false;
  // Never drawn yet: the first redraw is not throttled (performance.now()
  // counts from the start of the process or worker, so it can be under 90).
  #lastDraw = -Infinity;
  #timer?: ReturnType<typeof setInterval>;
  #width: number;

  /** Creates the output in `mode`, writing to `sinks` (default: the process's). */
  constructor(mode: OutputMode, sinks: OutputSinks = processSinks) {
    this.mode = mode;
    this.#sinks = sinks;
    let width = 80;
    if (mode === "tty") {
      try {
        width = Deno.consoleSize().columns || 80;
      } catch {
        width = 80;
      }
    }
    this.#width = Math.max(40, Math.min(width, 160));
  }

  /** Writes a result line (stdout), whatever the mode. */
  result(text: string): void {
    this.#sinks.stdout(text.endsWith("\n") ? text : text + "\n");
  }

  /** Writes raw result bytes as text (stdout), without adding a newline. */
  resultRaw(text: string): void {
    this.#sinks.stdout(text);
  }

  /** Writes a note for people (stderr); silent with `--quiet`. */
  note(text: string): void {
    if (this.mode === "quiet") return;
    this.#clear();
    text = escapeControls(text);
    this.#sinks.stderr(text.endsWith("\n") ? text : text + "\n");
    this.#redraw(true);
  }

  /** Writes a warning (stderr) prefixed `strata: warning:`; silent with `--quiet`. */
  warn(text: string): void {
    this.note(`strata: warning: ${text}`);
  }

  /** Writes an error line (stderr), whatever the mode. */
  error(text: string): void {
    this.#clear();
    text = escapeControls(text);
    this.#sinks.stderr(text.endsWith("\n") ? text : text + "\n");
  }

  /**
   * Starts tracking `count` layers; returns one {@linkcode LayerProgress} per layer.
   * On a terminal the block of lines is redrawn in place at most ten times a second.
   */
  layers(layers: readonly { digest: string; size: number }[]): LayerProgress[] {
    this.#finishBlock();
    this.#layers = layers.map((l, i) => ({
      index: i + 1,
      digest: l.digest,
      size: l.size,
      fetched: 0,
      applied: 0,
      phase: "waiting",
    }));
    const total = this.#layers.length;
    // Nothing is shown until a layer is actually fetched: a run whose layers
    // are all cached prints no progress at all.
    this.#active = false;
    const activate = () => {
      if (this.#active || this.mode !== "tty") return;
      this.#active = true;
      const timer = setInterval(() => this.#redraw(false), 100);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    };
    return this.#layers.map((s) => ({
      start: () => {
        if (s.phase !== "waiting") return;
        s.phase = "fetching";
        s.started = performance.now();
        activate();
        if (this.mode === "plain") {
          this.#sinks.stderr(
            `layer ${s.index}/${total} ${shortDigest(s.digest)}: fetching ${formatBytes(s.size)}\n`,
          );
        }
        this.#redraw(false);
      },
      fetched: (n) => {
        s.fetched += n;
      },
      applied: (n) => {
        s.applied += n;
      },
      done: (cached) => {
        s.phase = cached && s.fetched === 0 && s.applied === 0 ? "cached" : "done";
        s.finished = performance.now();
        if (this.mode === "plain" && s.phase !== "cached") {
          this.#sinks.stderr(this.#plainLine(s, total) + "\n");
        }
        this.#redraw(true);
      },
      failed: () => {
        s.phase = "failed";
        s.finished = performance.now();
        if (this.mode === "plain") this.#sinks.stderr(this.#plainLine(s, total) + "\n");
        this.#redraw(true);
      },
    }));
  }

  /** Stops redrawing and leaves the final state of the layer block on screen. */
  endLayers(): void {
    this.#finishBlock();
  }

  #finishBlock(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.mode === "tty" && this.#layers.length) this.#redraw(true);
    this.#drawn = 0;
    this.#active = false;
    this.#layers = [];
  }

  #plainLine(s: LayerState, total: number): string {
    const head = `layer ${s.index}/${total} ${shortDigest(s.digest)}`;
    if (s.phase === "cached") return `${head}: cached`;
    const secs = s.started !== undefined && s.finished !== undefined
      ? ` in ${formatMs(s.finished - s.started)}`
      : "";
    const what = s.phase === "failed" ? "failed after" : "done:";
    return `${head}: ${what} ${formatBytes(s.fetched)} fetched, ${
      formatBytes(s.applied)
    } applied${secs}`;
  }

  #ttyLine(s: LayerState, total: number): string {
    // The hex alone, and a bar of fixed width, so the columns stay put on an 80-column terminal.
    const head = `layer ${s.index}/${total} ${shortDigest(s.digest).replace(/^[a-z0-9]+:/, "")}`;
    let tail: string;
    let frac = 0;
    switch (s.phase) {
      case "waiting":
        tail = "waiting";
        break;
      case "cached":
        tail = "cached";
        frac = 1;
        break;
      case "failed":
        tail = "failed";
        frac = s.size ? s.fetched / s.size : 0;
        break;
      default:
        frac = s.phase === "done" ? 1 : s.size ? s.fetched / s.size : 0;
        tail = `${formatBytes(s.fetched)}/${formatBytes(s.size)}, ${
          formatBytes(s.applied)
        } applied${s.phase === "done" ? " ✓" : ""}`;
    }
    const barWidth = Math.max(10, Math.min(20, this.#width - 60));
    const filled = Math.round(Math.min(1, Math.max(0, frac)) * barWidth);
    const bar = `[${"#".repeat(filled)}${".".repeat(barWidth - filled)}]`;
    return `${head} ${bar} ${tail}`.slice(0, this.#width - 1);
  }

  #clear(): void {
    if (this.mode !== "tty" || this.#drawn === 0) return;
    // Move up over the block and clear to the end of the screen.
    this.#sinks.stderr(`\x1b[${this.#drawn}F\x1b[J`);
    this.#drawn = 0;
  }

  #redraw(force: boolean): void {
    if (this.mode !== "tty" || !this.#active || this.#layers.length === 0) return;
    const now = performance.now();
    if (!force && now - this.#lastDraw < 90) return;
    this.#lastDraw = now;
    const total = this.#layers.length;
    const text = this.#layers.map((s) => this.#ttyLine(s, total) + "\x1b[K\n").join("");
    const up = this.#drawn ? `\x1b[${this.#drawn}F` : "";
    this.#sinks.stderr(up + text);
    this.#drawn = this.#layers.length;
  }
}
