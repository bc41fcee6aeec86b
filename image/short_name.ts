/**
 * Short names (`busybox`, `team/app:1`) as podman resolves them with
 * containers-registries.conf(5): an `[aliases]` entry names the image
 * outright; otherwise each of `unqualified-search-registries` is a candidate,
 * in order, and `short-name-mode` says what an ambiguous one (more than one
 * candidate) does: `enforcing` asks on a terminal and refuses without one,
 * `permissive` (the default) asks on a terminal and tries them all in order
 * without one, `disabled` tries them all. Tags and digests are set aside for
 * the alias lookup and put back on every candidate. With no registries.conf
 * at all, a short name is Docker Hub's, as it always was in strata.
 *
 * The rules are containers/image's `pkg/shortnames`, read from its source.
 * Not done: the aliases podman records after a prompt
 * (`short-name-aliases.conf`) are neither read nor written.
 *
 * @module
 */
import { parseRegistryRef, RefError, type RegistryRef, registryRefString } from "./ref.ts";
import type { RegistriesConf } from "./registries_conf.ts";

/**
 * A short name that cannot be resolved: no alias and no search registries,
 * or an ambiguous one in enforcing mode with no terminal to ask on.
 *
 * @example Usage
 * ```ts
 * import { ShortNameError } from "./short_name.ts";
 * console.assert(new ShortNameError("busybox", "ambiguous").message.includes("busybox"));
 * ```
 */
export class ShortNameError extends Error {
  /** The short name as typed. */
  readonly shortName: string;
  /** Builds the error for `name`. */
  constructor(name: string, reason: string, options?: ErrorOptions) {
    super(`short name "${name}": ${reason}`, options);
    this.name = "ShortNameError";
    this.shortName = name;
  }
}

/** How a short name was resolved ({@linkcode resolveShortName}). */
export interface ShortNameResolution {
  /** The short name as typed. */
  readonly input: string;
  /** The fully qualified references to try, in order. */
  readonly candidates: readonly RegistryRef[];
  /** `alias`, `search` (unqualified-search-registries) or `default` (no registries.conf: Docker Hub). */
  readonly how: "alias" | "search" | "default";
  /** The file that set the alias or the search list. */
  readonly origin?: string;
}

/**
 * Resolves short name `input` to its candidates (all of them: see
 * {@linkcode chooseCandidates} for what the mode does with several).
 * `conf` undefined means there is no registries.conf: Docker Hub.
 *
 * @throws {ShortNameError} when there is no alias and no search registry.
 *
 * @example Usage
 * ```ts
 * import { parseRegistriesConf } from "./registries_conf.ts";
 * import { resolveShortName } from "./short_name.ts";
 * const conf = await parseRegistriesConf('unqualified-search-registries = ["quay.io", "docker.io"]\n', "r.conf");
 * const r = resolveShortName(conf, "busybox");
 * console.assert(r.candidates[1].repository === "library/busybox" && r.candidates[1].tag === "latest");
 * ```
 */
export function resolveShortName(
  conf: RegistriesConf | undefined,
  input: string,
): ShortNameResolution {
  // Parsed as Docker Hub's first: the short name's grammar is checked, and
  // its tag and digest come apart from it.
  const hub = parseRegistryRef(input);
  if (!conf) return { input, candidates: [hub], how: "default" };
  const at = input.indexOf("@");
  const named = at < 0 ? input : input.slice(0, at);
  const colon = named.indexOf(":", named.lastIndexOf("/") + 1);
  const bare = colon < 0 ? named : named.slice(0, colon);
  const suffix = input.slice(bare.length); // ":tag", "@digest", both, or ""
  const alias = conf.aliases.get(bare);
  if (alias?.value) {
    return {
      input,
      candidates: [parseRegistryRef(`${alias.value}${suffix}`, input)],
      how: "alias",
      origin: alias.file,
    };
  }
  const search = conf.unqualifiedSearchRegistries;
  if (!search.length) {
    throw new ShortNameError(
      input,
      `no alias for it and no unqualified-search-registries in ${conf.searchRegistriesFile}` +
        ` (use a fully qualified name, such as docker.io/${hub.repository}, or add an alias)`,
    );
  }
  const candidates = search.map((reg) => {
    try {
      return parseRegistryRef(`${reg}/${input}`, input);
    } catch (e) {
      throw new RefError(
        input,
        `with unqualified-search registry ${reg}: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
  });
  return { input, candidates, how: "search", origin: conf.searchRegistriesFile };
}

/**
 * Asks a person to choose one of `candidates` for `name` (a terminal
 * prompt); undefined when nobody can be asked.
 */
export type ShortNameChooser = (
  name: string,
  candidates: readonly string[],
) => Promise<string | undefined>;

/**
 * Applies `short-name-mode` to a resolution about to be pulled: one
 * candidate, or `disabled`, is used as is; several are offered to `choose`
 * (a terminal) in `enforcing` and `permissive` mode; without one,
 * `permissive` keeps them all (tried in order) and `enforcing` refuses.
 *
 * @throws {ShortNameError} for an ambiguous name in enforcing mode with nobody to ask.
 *
 * @example Usage
 * ```ts
 * import { parseRegistriesConf } from "./registries_conf.ts";
 * import { chooseCandidates, resolveShortName } from "./short_name.ts";
 * const conf = await parseRegistriesConf('unqualified-search-registries = ["quay.io", "docker.io"]\n', "r.conf");
 * const all = await chooseCandidates(conf, resolveShortName(conf, "busybox"));
 * console.assert(all.length === 2);
 * ```
 */
export async function chooseCandidates(
  conf: RegistriesConf | undefined,
  resolution: ShortNameResolution,
  choose?: ShortNameChooser,
): Promise<readonly RegistryRef[]> {
  const { candidates } = resolution;
  const mode = conf?.shortNameMode ?? "permissive";
  if (candidates.length <= 1 || mode === "disabled") return candidates;
  const names = candidates.map(registryRefString);
  const chosen = choose ? await choose(resolution.input, names) : undefined;
  if (chosen !== undefined) {
    const i = names.indexOf(chosen);
    if (i < 0) {
      throw new ShortNameError(resolution.input, `"${chosen}" is not one of ${names.join(", ")}`);
    }
    return [candidates[i]];
  }
  if (mode === "permissive") return candidates;
  throw new ShortNameError(
    resolution.input,
    `ambiguous: unqualified-search-registries in ${resolution.origin} lists ${candidates.length} registries, ` +
      `short-name-mode is enforcing and there is no terminal to ask on (use a fully qualified name, such as ${
        names[0]
      }, or add an alias)`,
  );
}

/**
 * The line to show on stderr once a short name's candidate is chosen:
 * `resolved "busybox" to "docker.io/library/busybox:latest" (…)`.
 *
 * @example Usage
 * ```ts
 * import { parseRegistryRef } from "./ref.ts";
 * import { resolutionNote } from "./short_name.ts";
 * const ref = parseRegistryRef("busybox");
 * console.log(resolutionNote({ input: "busybox", candidates: [ref], how: "default" }, ref));
 * ```
 */
export function resolutionNote(resolution: ShortNameResolution, chosen: RegistryRef): string {
  const why = resolution.how === "alias"
    ? `an alias in ${resolution.origin}`
    : resolution.how === "search"
    ? `unqualified-search-registries in ${resolution.origin}`
    : "no registries.conf: Docker Hub";
  return `resolved "${resolution.input}" to "${registryRefString(chosen)}" (${why})`;
}
