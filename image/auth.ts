/**
 * Registry credentials: `--creds USER:PASS` and the standard auth files
 * (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
 * `~/.config/containers/auth.json`, `~/.docker/config.json`), whose
 * `auths[KEY].auth` holds base64 `user:password`. Keys may be a host, a
 * `host/namespace/repo` (containers-auth.json's narrower scopes, longest
 * match wins), or a URL such as Docker's `https://index.docker.io/v1/`.
 *
 * @module
 */
import { join } from "@std/path";
import { getEnv } from "../sys/env.ts";
import { readTextFile } from "../sys/files.ts";

/** A user name and password (or token) for one registry. */
export interface Credentials {
  /** User name. */
  username: string;
  /** Password or access token. */
  password: string;
}

/**
 * Credentials that cannot be parsed (a `--creds` without `:`, an auth file
 * that is not JSON, an `auth` value that is not base64 `user:pass`).
 *
 * @example Usage
 * ```ts
 * import { CredentialsError, parseCreds } from "./auth.ts";
 * try {
 *   parseCreds("nocolon");
 * } catch (e) {
 *   console.assert(e instanceof CredentialsError);
 * }
 * ```
 */
export class CredentialsError extends Error {
  /** Builds the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CredentialsError";
  }
}

/**
 * Parses `USER:PASS` (the password may contain colons).
 *
 * @example Usage
 * ```ts
 * import { parseCreds } from "./auth.ts";
 * console.assert(parseCreds("me:se:cret").password === "se:cret");
 * ```
 */
export function parseCreds(creds: string): Credentials {
  const i = creds.indexOf(":");
  if (i <= 0) throw new CredentialsError("Invalid --creds: expected USER:PASSWORD");
  return { username: creds.slice(0, i), password: creds.slice(i + 1) };
}

/** The auth files consulted, in order, when none is given. */
export function defaultAuthFiles(): string[] {
  const env = (k: string) => getEnv(k);
  const files: string[] = [];
  const ra = env("REGISTRY_AUTH_FILE");
  if (ra) files.push(ra);
  const xdg = env("XDG_RUNTIME_DIR");
  if (xdg) files.push(join(xdg, "containers", "auth.json"));
  const home = env("HOME");
  if (home) {
    files.push(join(env("XDG_CONFIG_HOME") ?? join(home, ".config"), "containers", "auth.json"));
    files.push(join(home, ".docker", "config.json"));
  }
  return files;
}

function keyHostAndPath(key: string): string {
  // "https://index.docker.io/v1/" -> "index.docker.io"; "host/ns/repo" stays.
  let k = key.replace(/^[a-z]+:\/\//, "");
  if (/^[^/]+\/v[12]\/?$/.test(k)) k = k.replace(/\/v[12]\/?$/, "");
  return k.replace(/\/+$/, "");
}

const HUB_ALIASES = [
  "docker.io",
  "index.docker.io",
  "registry-1.docker.io",
  "registry.hub.docker.com",
];

/**
 * Finds credentials for `domain` (and optionally `repository`) in one auth
 * file's JSON. Returns undefined when the file has none.
 *
 * @example Usage
 * ```ts
 * import { credentialsFromAuthJSON } from "./auth.ts";
 * const c = credentialsFromAuthJSON({ auths: { "127.0.0.1:5000": { auth: btoa("u:p") } } }, "127.0.0.1:5000");
 * console.assert(c?.username === "u");
 * ```
 */
export function credentialsFromAuthJSON(
  json: unknown,
  domain: string,
  repository?: string,
  file = "auth file",
): Credentials | undefined {
  const auths =
    (json as { auths?: Record<string, { auth?: string; username?: string; password?: string }> })
      ?.auths;
  if (!auths || typeof auths !== "object") return undefined;
  const hosts = HUB_ALIASES.includes(domain) ? HUB_ALIASES : [domain];
  let best:
    | { len: number; entry: { auth?: string; username?: string; password?: string } }
    | undefined;
  for (const [key, entry] of Object.entries(auths)) {
    const k = keyHostAndPath(key);
    const slash = k.indexOf("/");
    const host = slash < 0 ? k : k.slice(0, slash);
    const path = slash < 0 ? "" : k.slice(slash + 1);
    if (!hosts.includes(host)) continue;
    if (path && !(repository && (repository === path || repository.startsWith(`${path}/`)))) {
      continue;
    }
    const len = path.length + 1;
    if (!best || len > best.len) best = { len, entry };
  }
  if (!best) return undefined;
  const { auth, username, password } = best.entry ?? {};
  if (typeof auth === "string" && auth) {
    let decoded: string;
    try {
      decoded = atob(auth);
    } catch (e) {
      throw new CredentialsError(`${file}: the auth entry for ${domain} is not base64`, {
        cause: e,
      });
    }
    const i = decoded.indexOf(":");
    if (i <= 0) {
      throw new CredentialsError(
        `${file}: the auth entry for ${domain} is not base64 USER:PASSWORD`,
      );
    }
    return { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
  }
  if (typeof username === "string" && typeof password === "string") return { username, password };
  return undefined;
}

/**
 * Looks up credentials: `creds` if given, else the first auth file (the given
 * one, else {@linkcode defaultAuthFiles}) that has an entry for the registry.
 *
 * @example Usage
 * ```ts
 * import { findCredentials } from "./auth.ts";
 * const c = await findCredentials("127.0.0.1:5000", "app", { creds: "u:p" });
 * console.assert(c?.password === "p");
 * ```
 */
export async function findCredentials(
  domain: string,
  repository: string | undefined,
  options: { creds?: string; authFile?: string } = {},
): Promise<Credentials | undefined> {
  if (options.creds) return parseCreds(options.creds);
  const files = options.authFile ? [options.authFile] : defaultAuthFiles();
  for (const file of files) {
    let text: string;
    try {
      text = await readTextFile(file);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
        if (options.authFile) {
          throw new CredentialsError(`Cannot read auth file ${file}: ${(e as Error).message}`, {
            cause: e,
          });
        }
        continue;
      }
      throw e;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new CredentialsError(`Auth file ${file} is not valid JSON: ${(e as Error).message}`, {
        cause: e,
      });
    }
    const c = credentialsFromAuthJSON(json, domain, repository, file);
    if (c) return c;
  }
  return undefined;
}
