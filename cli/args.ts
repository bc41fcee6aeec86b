/**
 * strata's own command-line parser: no dependency, one table per command, and
 * errors that say what was wrong and where to look (`unknown option --foo for
 * run; see strata run --help`).
 *
 * Rules, in the order they apply to each argument:
 * - `--` ends options; every later argument is positional.
 * - `--name=value`, `--name value` and `-x value` set an option; a boolean
 *   option takes no separate value but accepts `--name=true|false`.
 * - Options may come before or after positionals (`pull IMAGE --quiet`).
 * - For a command with a trailing argv (`run`), the first positional is IMAGE;
 *   after IMAGE the first argument that is not an option starts the argv and
 *   everything from there on is taken verbatim (`run IMG ls -l` gives `-l` to
 *   `ls`). `run IMG -- -x` starts the argv at `-x`.
 * - Global options (`--cache`, `--quiet`, ...) are accepted before the command
 *   name and anywhere a command's own options are.
 *
 * @module
 */
import { nearest } from "../sys/nearest.ts";

/** The kinds of values an option takes. */
export type OptionType = "boolean" | "string" | "list";

/** One option a command accepts. */
export interface OptionSpec {
  /** Long name without the leading dashes, for example `cache`. */
  readonly name: string;
  /** One-letter alias without the dash, for example `e`. */
  readonly short?: string;
  /** `boolean` (a flag), `string` (one value; the last wins) or `list` (repeatable). */
  readonly type: OptionType;
  /** Placeholder for the value in help text, for example `DIR`. */
  readonly value?: string;
  /** The only values allowed, when the option is an enumeration. */
  readonly choices?: readonly string[];
  /** One line of help. */
  readonly help: string;
}

/** One command: its name, positionals, options and help. */
export interface CommandSpec {
  /** The command name as typed, for example `pull`. */
  readonly name: string;
  /** What comes after the command name in the usage line, for example `IMAGE`. */
  readonly usage: string;
  /** One line saying what the command does. */
  readonly summary: string;
  /** Longer help, printed after the usage line by `strata CMD --help`. */
  readonly description?: string;
  /** Names of the required positionals, in order, for example `["IMAGE", "DIR"]`. */
  readonly positionals: readonly string[];
  /** When true, after the required positionals the first non-option argument starts a verbatim argv. */
  readonly argv?: boolean;
  /** The command's own options (global options are added by the parser). */
  readonly options: readonly OptionSpec[];
}

/** Values of parsed options, by long name. */
export type OptionValues = Record<string, string | boolean | string[] | undefined>;

/** What {@linkcode parseArgs} returns. */
export interface ParsedArgs {
  /** The command name, or `undefined` when only global options (like `--version`) were given. */
  readonly command?: string;
  /** Option values (global and the command's), by long name; absent options are undefined. */
  readonly options: OptionValues;
  /** The positionals, in order. */
  readonly positionals: string[];
  /** The verbatim argv after the positionals (commands with `argv: true`). */
  readonly argv: string[];
}

/**
 * A command line that cannot be understood. The CLI prints its message on one
 * line and exits 2.
 *
 * @example Usage
 * ```ts
 * import { UsageError } from "./args.ts";
 * const e = new UsageError("unknown option --foo for run", "run");
 * console.log(e.message); // "unknown option --foo for run; see strata run --help"
 * ```
 */
export class UsageError extends Error {
  /** The command the error is about, when known. */
  readonly command?: string;
  /** Creates the error; the message gains a pointer to the right help page. */
  constructor(what: string, command?: string, options?: ErrorOptions) {
    super(`${what}; see strata ${command ? `${command} ` : ""}--help`, options);
    this.name = "UsageError";
    this.command = command;
  }
}

function findLong(specs: readonly OptionSpec[], name: string): OptionSpec | undefined {
  return specs.find((s) => s.name === name);
}

function findShort(specs: readonly OptionSpec[], letter: string): OptionSpec | undefined {
  return specs.find((s) => s.short === letter);
}

function setValue(
  values: OptionValues,
  spec: OptionSpec,
  raw: string | undefined,
  display: string,
  command: string | undefined,
): void {
  const where = command ? ` for ${command}` : "";
  if (spec.type === "boolean") {
    if (raw === undefined || raw === "true") values[spec.name] = true;
    else if (raw === "false") values[spec.name] = false;
    else {
      throw new UsageError(`option ${display} takes true or false, not '${raw}'${where}`, command);
    }
    return;
  }
  if (raw === undefined) {
    throw new UsageError(
      `option ${display} needs a value${spec.value ? ` (${spec.value})` : ""}${where}`,
      command,
    );
  }
  if (spec.choices && !spec.choices.includes(raw)) {
    throw new UsageError(
      `option ${display} must be ${spec.choices.join(" or ")}, not '${raw}'${where}`,
      command,
    );
  }
  if (spec.type === "list") {
    const list = (values[spec.name] as string[] | undefined) ?? [];
    list.push(raw);
    values[spec.name] = list;
  } else {
    values[spec.name] = raw;
  }
}

/**
 * ` (did you mean 'pull'?)` when one of `known` is within two edits of
 * `word` (a typo), else nothing.
 */
function didYouMean(word: string, known: readonly string[], prefix: string): string {
  const best = nearest(word, known);
  return best ? ` (did you mean '${prefix}${best}'?)` : "";
}

/**
 * Parses `args` (without the program name) against the command table.
 *
 * @param args The arguments, as in `Deno.args`.
 * @param commands Every command strata knows.
 * @param globals Options every command accepts, also before the command name.
 * @throws {UsageError} for unknown commands or options, missing values or positionals.
 *
 * @example Usage
 * ```ts
 * import { parseArgs } from "./args.ts";
 * const run = {
 *   name: "run", usage: "IMAGE [CMD...]", summary: "run", positionals: ["IMAGE"], argv: true,
 *   options: [{ name: "env", short: "e", type: "list", value: "K=V", help: "set" }] as const,
 * };
 * const p = parseArgs(["run", "-e", "A=1", "img", "ls", "-l"], [run], []);
 * console.log(p.positionals, p.argv, p.options.env); // ["img"] ["ls", "-l"] ["A=1"]
 * ```
 */
export function parseArgs(
  args: readonly string[],
  commands: readonly CommandSpec[],
  globals: readonly OptionSpec[],
): ParsedArgs {
  const options: OptionValues = {};
  const positionals: string[] = [];
  const argv: string[] = [];
  let command: CommandSpec | undefined;
  let specs: readonly OptionSpec[] = globals;
  let endOfOptions = false;

  const positional = (arg: string): boolean => {
    // Returns true when the rest of the line is the verbatim argv.
    if (!command) {
      command = commands.find((c) => c.name === arg);
      if (!command) {
        throw new UsageError(
          `unknown command '${arg}'${didYouMean(arg, commands.map((c) => c.name), "")}`,
        );
      }
      specs = [...command.options, ...globals];
      return false;
    }
    if (command.argv && positionals.length >= command.positionals.length) {
      return true;
    }
    if (positionals.length >= command.positionals.length) {
      throw new UsageError(`unexpected argument '${arg}' for ${command.name}`, command.name);
    }
    positionals.push(arg);
    return false;
  };

  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (endOfOptions || arg === "-" || !arg.startsWith("-")) {
      if (positional(arg)) {
        argv.push(...args.slice(i));
        break;
      }
      continue;
    }
    if (arg === "--") {
      endOfOptions = true;
      continue;
    }
    const cmdName = command?.name;
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      const spec = findLong(specs, name);
      if (!spec) {
        throw new UsageError(
          `unknown option --${name}${cmdName ? ` for ${cmdName}` : ""}${
            didYouMean(name, specs.map((s) => s.name), "--")
          }`,
          cmdName,
        );
      }
      let raw = eq < 0 ? undefined : arg.slice(eq + 1);
      if (raw === undefined && spec.type !== "boolean") {
        raw = args[++i];
      }
      setValue(options, spec, raw, `--${name}`, cmdName);
      continue;
    }
    // Short options: `-q`, `-e K=V`, `-eK=V`, and clusters of flags like `-qh`.
    for (let j = 1; j < arg.length; j++) {
      const letter = arg[j];
      const spec = findShort(specs, letter);
      if (!spec) {
        throw new UsageError(
          `unknown option -${letter}${cmdName ? ` for ${cmdName}` : ""}`,
          cmdName,
        );
      }
      if (spec.type === "boolean") {
        setValue(options, spec, undefined, `-${letter}`, cmdName);
        continue;
      }
      const rest = arg.slice(j + 1);
      const raw = rest !== "" ? rest : args[++i];
      setValue(options, spec, raw, `-${letter}`, cmdName);
      break;
    }
  }

  const wantsHelp = options.help === true;
  if (command && !wantsHelp && positionals.length < command.positionals.length) {
    const missing = command.positionals.slice(positionals.length).join(" and ");
    throw new UsageError(`${command.name} needs ${missing}`, command.name);
  }
  return { command: command?.name, options, positionals, argv };
}

/**
 * Formats a command's help page: usage line, description and options table.
 *
 * @example Usage
 * ```ts
 * import { commandHelp } from "./args.ts";
 * console.log(commandHelp({ name: "ls", usage: "", summary: "list images", positionals: [], options: [] }, []));
 * ```
 */
export function commandHelp(command: CommandSpec, globals: readonly OptionSpec[]): string {
  const lines = [
    `usage: strata ${command.name}${command.options.length ? " [options]" : ""}${
      command.usage ? ` ${command.usage}` : ""
    }`,
    "",
    command.summary,
  ];
  if (command.description) lines.push("", command.description.trimEnd());
  if (command.options.length) lines.push("", "options:", ...optionTable(command.options));
  lines.push("", "global options:", ...optionTable(globals));
  return lines.join("\n") + "\n";
}

/**
 * Formats a list of options as an aligned table, one option a line.
 *
 * @example Usage
 * ```ts
 * import { optionTable } from "./args.ts";
 * console.log(optionTable([{ name: "json", type: "boolean", help: "print JSON" }]).join("\n"));
 * ```
 */
export function optionTable(specs: readonly OptionSpec[]): string[] {
  const left = specs.map((s) =>
    `  ${s.short ? `-${s.short}, ` : "    "}--${s.name}${s.value ? ` ${s.value}` : ""}`
  );
  const width = Math.max(0, ...left.map((l) => l.length)) + 2;
  return specs.map((s, i) => `${left[i].padEnd(width)}${s.help}`);
}
