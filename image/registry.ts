/**
 * A client for the OCI distribution spec (Docker registry HTTP API v2),
 * enough to pull: manifests and blobs, anonymous or with bearer-token or
 * basic authentication, plain HTTP for local registries when TLS
 * verification is off, redirects to blob storage, bounded retries with
 * backoff, and blob downloads that resume with a `Range` request when the
 * connection drops, so a streaming digest simply carries on.
 *
 * @module
 */
import { type Credentials, findCredentials } from "./auth.ts";
import { digestOf, parseDigest, verifyDocument } from "./blob.ts";
import { type RegistryRef, registryRefString } from "./ref.ts";
import {
  BlockedRegistryError,
  findRegistry,
  loadRegistriesConf,
  type PullSource,
  pullSources,
  type RegistriesConfOptions,
} from "./registries_conf.ts";
import {
  BlobNotFoundError,
  type FetchedDocument,
  type ImageSource,
  MAX_DOCUMENT_SIZE,
  resolveImage,
  type ResolveOptions,
  type SourceImage,
  UNKNOWN_SIZE,
} from "./source.ts";
import { type Descriptor, MediaType } from "./types.ts";
import { asMissingPermission, MissingPermissionError } from "../sys/permissions.ts";

/** Options for {@linkcode RegistryClient} and {@linkcode openRegistryImage}. */
export interface RegistryOptions extends RegistriesConfOptions {
  /**
   * Verify TLS and require HTTPS. With false, plain HTTP and unverified TLS
   * are allowed everywhere; with true, nowhere. Unset (the default): verified,
   * except for the registries and mirrors registries.conf marks `insecure`.
   */
  tlsVerify?: boolean;
  /** `USER:PASS`, overriding auth files. */
  creds?: string;
  /** An auth file to use instead of the default ones. */
  authFile?: string;
  /** Attempts per request on 5xx, 429 and network errors (default 4). */
  retries?: number;
  /** First backoff delay in ms, doubled each retry (default 200). */
  retryDelay?: number;
  /** Resumptions of one blob download after dropped connections (default 5). */
  resumes?: number;
  /** User-Agent header. */
  userAgent?: string;
  /**
   * Milliseconds a request may wait for the response headers, or a body for
   * its next bytes, before it counts as a dropped connection (retried, or a
   * blob resumed with a `Range` request): a registry that stalls cannot hang
   * a pull forever. Default 60000.
   */
  idleTimeout?: number;
  /** Receives what registries.conf had that is worth saying (an unknown key), once per load. */
  onWarning?: (message: string) => void;
}

/**
 * A registry connection that sent nothing for {@linkcode RegistryOptions.idleTimeout}.
 * A `TypeError`, as fetch's own network errors are, so that it is retried the same way.
 *
 * @example Usage
 * ```ts
 * import { IdleTimeoutError } from "./registry.ts";
 * console.assert(new IdleTimeoutError(60000) instanceof TypeError);
 * ```
 */
export class IdleTimeoutError extends TypeError {
  /** Builds the error for a stall of `ms` milliseconds. */
  constructor(ms: number) {
    super(`no data from the registry for ${ms / 1000} s`);
    this.name = "IdleTimeoutError";
  }
}

/**
 * A registry request that failed: the status, the URL, and the registry's
 * own error code and message when it sent them.
 *
 * @example Usage
 * ```ts
 * import { RegistryError } from "./registry.ts";
 * const e = new RegistryError("GET https://r/v2/x/manifests/y", "404 MANIFEST_UNKNOWN", 404);
 * console.assert(e.status === 404);
 * ```
 */
export class RegistryError extends Error {
  /** HTTP status, if a response was received. */
  readonly status?: number;
  /** Builds the error for request `what`. */
  constructor(what: string, reason: string, status?: number, options?: ErrorOptions) {
    super(`${what}: ${reason}`, options);
    this.name = "RegistryError";
    if (status !== undefined) this.status = status;
  }
}

/**
 * The registry speaks HTTPS with a certificate this process cannot verify
 * (self-signed, or from a private CA), and TLS verification was turned off
 * (`tlsVerify: false`). Deno's `fetch` can skip the check only for the whole
 * process: `deno run --unsafely-ignore-certificate-errors=HOSTNAME`. The
 * CLI does that by itself (it runs itself again with the flag); a program
 * using the library adds the flag, or passes the CA with `caCerts`.
 *
 * @example Usage
 * ```ts
 * import { UnverifiedCertificateError } from "./registry.ts";
 * const e = new UnverifiedCertificateError("registry.local:5000", "invalid peer certificate");
 * console.log(e.hostname); // "registry.local"
 * ```
 */
export class UnverifiedCertificateError extends RegistryError {
  /** The host name to pass to `--unsafely-ignore-certificate-errors`. */
  readonly hostname: string;
  /** Builds the error for registry `host` (`HOST[:PORT]`). */
  constructor(host: string, reason: string, options?: ErrorOptions) {
    const hostname = host.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
    super(
      `Cannot verify the TLS certificate of https://${host}`,
      `${reason}; with TLS verification off, run deno with ` +
        `--unsafely-ignore-certificate-errors=${hostname} (the command line does it by itself)`,
      undefined,
      options,
    );
    this.name = "UnverifiedCertificateError";
    this.hostname = hostname;
  }
}

/** The certificate problem `e` (a failed fetch) reports, when it is one. */
function certificateProblem(e: unknown): string | undefined {
  for (let c: unknown = e, i = 0; c instanceof Error && i < 5; c = c.cause, i++) {
    const m =
      /invalid peer certificate[^)]*\)*|certificate (?:verify failed|has expired|is not valid)[^)]*/i
        .exec(c.message);
    if (m) return m[0];
  }
  return undefined;
}

/**
 * The registry refused the credentials, or wants some and none were found.
 *
 * @example Usage
 * ```ts
 * import { AuthenticationError } from "./registry.ts";
 * console.assert(new AuthenticationError("GET x", "401").name === "AuthenticationError");
 * ```
 */
export class AuthenticationError extends RegistryError {
  /** Builds the error for request `what`. */
  constructor(what: string, reason: string, status?: number, options?: ErrorOptions) {
    super(what, reason, status, options);
    this.name = "AuthenticationError";
  }
}

/** The Accept header for manifests: OCI and Docker, images and indexes. */
export const MANIFEST_ACCEPT: string = [
  MediaType.OciIndex,
  MediaType.DockerManifestList,
  MediaType.OciManifest,
  MediaType.DockerManifest,
].join(", ");

/** A parsed `WWW-Authenticate` challenge. */
export interface Challenge {
  /** `bearer` or `basic` (lowercase). */
  scheme: string;
  /** Parameters (`realm`, `service`, `scope`, ...). */
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` header value (the first challenge).
 *
 * @example Usage
 * ```ts
 * import { parseChallenge } from "./registry.ts";
 * const c = parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io"');
 * console.assert(c?.scheme === "bearer" && c.params.service === "registry.docker.io");
 * ```
 */
export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?\s*/g;
  for (const p of m[2].matchAll(re)) {
    params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : p[3];
  }
  return { scheme: m[1].toLowerCase(), params };
}

/** Blob bytes are handed on in chunks of at least this size (except the last). */
const COALESCE = 256 * 1024;
/**
 * Buffer for reading a response body, and how full it gets before it is
 * passed on: full (the loopback pull bench: 1.07-1.09x the layout when
 * filled, 1.09-1.14x at 256 KiB).
 */
const BODY_BUFFER = 1 << 20;
const BODY_FILL = BODY_BUFFER;

const isLocal = (host: string) => /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/.test(host);

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted();
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

const isAbort = (e: unknown, signal?: AbortSignal) =>
  signal?.aborted || (e instanceof DOMException && e.name === "AbortError");

async function registryErrorText(res: Response): Promise<string> {
  let text = "";
  try {
    // An error body is for a message: 64 KiB of it is plenty, and an endless one must not hang.
    text = new TextDecoder().decode(await readBounded(res, 64 << 10, "", true));
  } catch { /* body unreadable */ }
  try {
    const j = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    if (Array.isArray(j.errors) && j.errors.length) {
      return j.errors.map((e) => [e.code, e.message].filter(Boolean).join(" ")).join("; ");
    }
  } catch { /* not JSON */ }
  // Control characters (a binary body, terminal escapes) have no place in a message line.
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x1f\x7f]+/g, " ").trim().slice(0, 200) || res.statusText;
}

/**
 * Parses a URL a registry handed over (a redirect's Location, a token realm)
 * and refuses any scheme but http and https: Deno's fetch reads `file:` URLs,
 * so a registry redirecting to `file:///etc/shadow` (or a FIFO, or
 * `/dev/zero`) would otherwise make strata read a local file.
 */
function webURL(text: string, base: URL | undefined, what: string): URL {
  let url: URL;
  try {
    url = new URL(text, base);
  } catch (e) {
    throw new RegistryError(what, `${JSON.stringify(text)} is not a URL`, undefined, { cause: e });
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new RegistryError(what, `refusing ${url.protocol} URL ${JSON.stringify(text)}`);
  }
  return url;
}

/**
 * Reads a response body whole, but no more than `max` bytes: a body without
 * a Content-Length (or with one that lies) is refused (or, with `truncate`,
 * cut) at the first byte past `max`, so a registry cannot make strata buffer
 * without bound.
 */
async function readBounded(
  res: Response,
  max: number,
  what: string,
  truncate = false,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = res.body?.getReader();
  if (!reader) return new Uint8Array();
  for (;;) {
    let r: ReadableStreamReadResult<Uint8Array>;
    try {
      r = await reader.read();
    } catch (e) {
      if (isAbort(e)) throw e;
      // The connection broke off, or sent fewer bytes than it announced.
      throw new BrokenBodyError(what || res.url, total, { cause: e });
    }
    const { done, value } = r;
    if (done) break;
    if (total + value.length > max) {
      await reader.cancel().catch(() => {});
      if (!truncate) throw new RegistryError(what, `larger than ${max} bytes`);
      chunks.push(value.subarray(0, max - total));
      total = max;
      break;
    }
    total += value.length;
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** A response body that broke off before its end (a transient failure: asked again). */
class BrokenBodyError extends RegistryError {
  constructor(what: string, read: number, options: ErrorOptions) {
    super(
      what,
      `the answer broke off after ${read} bytes (${(options.cause as Error)?.message})`,
      undefined,
      options,
    );
    this.name = "BrokenBodyError";
  }
}

/** A pull client for one registry host. */
export class RegistryClient {
  /** The registry as named (`docker.io`, `127.0.0.1:5000`). */
  readonly domain: string;
  /** The host contacted (`registry-1.docker.io` for Docker Hub). */
  readonly host: string;
  #options: RegistryOptions;
  #scheme?: Promise<"https" | "http">;
  #auth = new Map<string, string>(); // repository -> Authorization header
  #creds?: Promise<Credentials | undefined>;

  /**
   * A client for `host`, which serves registry `domain`.
   *
   * @example Usage
   * ```ts ignore
   * const client = new RegistryClient("127.0.0.1:5000", "127.0.0.1:5000", { tlsVerify: false });
   * const { bytes } = await client.getManifest("app", "latest");
   * ```
   */
  constructor(domain: string, host = domain, options: RegistryOptions = {}) {
    this.domain = domain;
    this.host = host;
    this.#options = options;
  }

  #credentials(repository: string): Promise<Credentials | undefined> {
    this.#creds ??= findCredentials(this.domain, repository, this.#options);
    return this.#creds;
  }

  /**
   * The scheme to use: https, or http when TLS verification is off and https
   * fails. A local host with TLS verification off is asked over plain HTTP
   * first (what a local registry usually speaks); one that answers "use
   * HTTPS" (Go's server does, with a 400) gets https.
   */
  #base(signal?: AbortSignal): Promise<"https" | "http"> {
    this.#scheme ??= (async () => {
      if (this.#options.tlsVerify === false && isLocal(this.host)) {
        const res = await this.#fetch(
          new URL(`http://${this.host}/v2/`),
          { redirect: "manual" },
          signal,
        ).catch((e) => {
          if (isAbort(e, signal) || e instanceof MissingPermissionError) throw e;
          return undefined; // not plain HTTP, it seems: try https
        });
        if (res) {
          // A few bytes of the answer tell; a hostile server's endless one must not hang us.
          const text = res.status === 400
            ? new TextDecoder().decode(
              await readBounded(res, 4096, "", true).catch(() => new Uint8Array()),
            )
            : "";
          if (res.status !== 400) await res.body?.cancel();
          if (!/\bHTTPS\b/.test(text)) return "http";
        }
      }
      try {
        const res = await this.#fetch(
          new URL(`https://${this.host}/v2/`),
          { redirect: "manual" },
          signal,
        );
        await res.body?.cancel();
        return "https";
      } catch (e) {
        if (isAbort(e, signal) || e instanceof MissingPermissionError) throw e;
        if (this.#options.tlsVerify === false) {
          const problem = certificateProblem(e);
          if (problem) throw new UnverifiedCertificateError(this.host, problem, { cause: e });
          return "http";
        }
        throw new RegistryError(
          `Cannot reach https://${this.host}/v2/`,
          `${(e as Error).message}${
            isLocal(this.host) ? " (a local plain-HTTP registry needs --tls-verify=false)" : ""
          }`,
          undefined,
          { cause: e },
        );
      }
    })();
    this.#scheme.catch(() => this.#scheme = undefined);
    return this.#scheme;
  }

  async #authorize(
    repository: string,
    challenge: Challenge | undefined,
    what: string,
    signal?: AbortSignal,
  ): Promise<void> {
    const creds = await this.#credentials(repository);
    if (!challenge) {
      throw new AuthenticationError(
        what,
        "401 Unauthorized without a WWW-Authenticate challenge",
        401,
      );
    }
    if (challenge.scheme === "basic") {
      if (!creds) {
        throw new AuthenticationError(
          what,
          `the registry requires a login (basic auth, realm ${
            JSON.stringify(challenge.params.realm ?? "")
          }); pass --creds USER:PASS or log in to ${this.domain} in an auth file`,
          401,
        );
      }
      this.#auth.set(repository, `Basic ${btoa(`${creds.username}:${creds.password}`)}`);
      return;
    }
    if (challenge.scheme !== "bearer" || !challenge.params.realm) {
      throw new AuthenticationError(
        what,
        `unsupported authentication challenge ${challenge.scheme}`,
        401,
      );
    }
    const url = webURL(challenge.params.realm, undefined, `${what}: token realm`);
    if (creds && url.protocol === "http:" && this.#options.tlsVerify !== false) {
      // The login would cross the network in clear text, though the registry
      // itself is reached over verified TLS: only when told TLS is optional.
      throw new AuthenticationError(
        what,
        `the token realm ${url.origin} is plain HTTP: refusing to send the login for ` +
          `${this.domain} unencrypted (--tls-verify=false allows it)`,
        401,
      );
    }
    if (challenge.params.service) url.searchParams.set("service", challenge.params.service);
    url.searchParams.set("scope", `repository:${repository}:pull`);
    const headers: Record<string, string> = {};
    if (creds) headers.authorization = `Basic ${btoa(`${creds.username}:${creds.password}`)}`;
    if (this.#options.userAgent) headers["user-agent"] = this.#options.userAgent;
    const twhat = `token request to ${url.origin}${url.pathname} for ${this.domain}/${repository}`;
    const res = await this.#retrying(twhat, signal, () => this.#fetch(url, { headers }, signal));
    if (res.status === 401 || res.status === 403) {
      throw new AuthenticationError(
        twhat,
        `${res.status} ${await registryErrorText(res)}${
          creds
            ? " (the credentials were refused)"
            : " (no credentials found; pass --creds USER:PASS)"
        }`,
        res.status,
      );
    }
    if (!res.ok) {
      throw new RegistryError(twhat, `${res.status} ${await registryErrorText(res)}`, res.status);
    }
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder().decode(await readBounded(res, 1 << 20, twhat)));
    } catch (e) {
      if (e instanceof RegistryError) throw e;
      throw new AuthenticationError(twhat, `the token server's answer is not JSON`, undefined, {
        cause: e,
      });
    }
    // An object with a string token, fit for a header (printable ASCII; a
    // bearer token is base64-like): anything else would be sent as "Bearer null" or
    // fail as an invalid header, retried as if the network had.
    const b = typeof body === "object" && body !== null && !Array.isArray(body)
      ? body as { token?: unknown; access_token?: unknown }
      : {};
    const token = b.token ?? b.access_token;
    if (token === undefined || token === null || token === "") {
      throw new AuthenticationError(twhat, "the token server answered without a token");
    }
    if (typeof token !== "string" || !/^[\x20-\x7e]+$/.test(token)) {
      throw new AuthenticationError(
        twhat,
        "the token server's token is not a string of printable ASCII characters",
      );
    }
    this.#auth.set(repository, `Bearer ${token}`);
  }

  /**
   * fetch() with the idle timeout: the request is aborted with
   * {@linkcode IdleTimeoutError} when its headers, or later its body's next
   * bytes, take longer than `idleTimeout`.
   */
  async #fetch(url: URL, init: RequestInit, signal?: AbortSignal): Promise<Response> {
    const ms = this.#options.idleTimeout ?? 60_000;
    const idle = new AbortController();
    // One interval per request checks the time of the last bytes, instead of
    // a timer re-armed for every body chunk (thousands per layer).
    let last = performance.now();
    const timer = setInterval(() => {
      if (performance.now() - last > ms) idle.abort(new IdleTimeoutError(ms));
    }, Math.max(10, Math.floor(ms / 8)));
    Deno.unrefTimer(timer); // a body nobody reads or cancels must not keep the process alive
    const arm = () => {
      last = performance.now();
    };
    const disarm = () => clearInterval(timer);
    const onAbort = () => idle.abort(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    const done = () => {
      disarm();
      signal?.removeEventListener("abort", onAbort);
    };
    if (signal?.aborted) idle.abort(signal.reason);
    arm();
    let res: Response;
    try {
      res = await fetch(url, { ...init, signal: idle.signal });
    } catch (e) {
      done();
      // Without --allow-net (or with a list that leaves out this host: a
      // token service or a blob store the registry redirects to): say so.
      throw asMissingPermission(
        e,
        "to reach registries: the registry, its token service and the hosts it redirects blobs to",
      );
    }
    if (!res.body || res.status < 200 || res.status > 599) {
      done();
      return res;
    }
    arm();
    // Read into large buffers when the body allows it (fetch bodies are byte
    // streams in Deno): the default reader hands out each network read as it
    // comes, ~60 KiB, and every chunk then costs a promise hop in each stage
    // downstream (digest, decompression, tar); here each chunk is a full
    // 1 MiB unless the body ends first, for one memcpy per byte.
    let byob: ReadableStreamBYOBReader | undefined;
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    try {
      byob = res.body.getReader({ mode: "byob" });
    } catch {
      reader = res.body.getReader();
    }
    // A body read must end when the request is aborted (idle timeout, Ctrl-C).
    // Deno's fetch does not always reject a read already waiting on the
    // network when its signal fires after the headers came (seen here: one
    // stalled download in ten hung for good), so each read races the abort.
    const aborted = new Promise<never>((_, reject) => {
      if (idle.signal.aborted) reject(idle.signal.reason);
      idle.signal.addEventListener("abort", () => reject(idle.signal.reason), { once: true });
    });
    aborted.catch(() => {}); // observed by the reads that race it
    const untilAborted = <T>(p: Promise<T>): Promise<T> =>
      Promise.race([p, aborted]).catch((e) => {
        if (idle.signal.aborted) (byob ?? reader)!.cancel(e).catch(() => {});
        throw e;
      });
    const length = Number(res.headers.get("content-length"));
    const size = length > 0 && length < BODY_BUFFER ? length : BODY_BUFFER;
    const fill = Math.min(BODY_FILL, size);
    let failed: { error: unknown } | undefined;
    let scratch = new ArrayBuffer(size);
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        try {
          if (reader) {
            const r = await untilAborted(reader.read());
            if (r.done) {
              done();
              c.close();
            } else {
              arm();
              c.enqueue(r.value);
            }
            return;
          }
          if (failed) throw failed.error;
          // Network reads land in `scratch` (a BYOB read takes its buffer,
          // and a failed one never gives it back) and are copied into
          // `out`, so bytes that did arrive survive a dropped connection.
          const out = new Uint8Array(size);
          let off = 0;
          while (off < fill) {
            let r: ReadableStreamReadResult<Uint8Array>;
            try {
              r = await untilAborted(byob!.read(new Uint8Array(scratch, 0, size - off)));
            } catch (e) {
              if (off === 0) throw e;
              // What arrived goes on first (a resumed download starts after
              // it); the failure comes with the next read.
              failed = { error: e };
              c.enqueue(out.subarray(0, off));
              return;
            }
            if (r.value) {
              scratch = r.value.buffer as ArrayBuffer;
              out.set(r.value, off);
              off += r.value.byteLength;
            }
            if (r.done) {
              if (off > 0) c.enqueue(out.subarray(0, off));
              done();
              c.close();
              return;
            }
            arm();
          }
          c.enqueue(out.subarray(0, off));
        } catch (e) {
          done();
          throw e;
        }
      },
      cancel(reason) {
        done();
        return (byob ?? reader)!.cancel(reason);
      },
    });
    return new Response(body, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  }

  /** Runs `attempt`, retrying with backoff on network errors, 5xx and 429. */
  async #retrying(
    what: string,
    signal: AbortSignal | undefined,
    attempt: () => Promise<Response>,
  ): Promise<Response> {
    const tries = Math.max(1, this.#options.retries ?? 4);
    let delay = this.#options.retryDelay ?? 200;
    for (let i = 1;; i++) {
      let res: Response;
      try {
        res = await attempt();
      } catch (e) {
        if (isAbort(e, signal) || i >= tries || !(e instanceof TypeError)) {
          if (isAbort(e, signal) || !(e instanceof TypeError)) throw e;
          throw new RegistryError(what, `${e.message} (after ${i} attempts)`, undefined, {
            cause: e,
          });
        }
        await sleep(delay, signal);
        delay *= 2;
        continue;
      }
      if ((res.status >= 500 || res.status === 429) && i < tries) {
        await res.body?.cancel();
        const retryAfter = Number(res.headers.get("retry-after"));
        await sleep(retryAfter > 0 && retryAfter < 30 ? retryAfter * 1000 : delay, signal);
        delay *= 2;
        continue;
      }
      return res;
    }
  }

  /**
   * GETs `/v2/REPOSITORY/PATH`, authenticating on a 401 challenge, following
   * redirects (dropping Authorization when one leaves the registry's origin),
   * and retrying transient failures. Returns the final response, whatever
   * its status.
   */
  async #get(
    repository: string,
    path: string,
    headers: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<Response> {
    const scheme = await this.#base(signal);
    const start = new URL(`${scheme}://${this.host}/v2/${repository}/${path}`);
    const what = `GET ${start}`;
    for (let authTries = 0;; authTries++) {
      let url = start;
      let res: Response;
      for (let hops = 0;; hops++) {
        const h: Record<string, string> = { ...headers };
        if (this.#options.userAgent) h["user-agent"] = this.#options.userAgent;
        const auth = this.#auth.get(repository);
        // Credentials go only to the registry itself, never to the storage it redirects to.
        if (auth && url.origin === start.origin) h.authorization = auth;
        const u = url;
        res = await this.#retrying(
          what,
          signal,
          () => this.#fetch(u, { headers: h, redirect: "manual" }, signal),
        );
        if (res.status >= 300 && res.status < 400 && res.headers.get("location")) {
          await res.body?.cancel();
          if (hops >= 10) throw new RegistryError(what, "too many redirects");
          url = webURL(res.headers.get("location")!, url, `${what}: redirect`);
          continue;
        }
        break;
      }
      if (res.status === 401 && authTries === 0 && url.origin === start.origin) {
        const challenge = parseChallenge(res.headers.get("www-authenticate"));
        await res.body?.cancel();
        await this.#authorize(repository, challenge, what, signal);
        continue;
      }
      if (res.status === 401 || res.status === 403) {
        throw new AuthenticationError(
          what,
          `${res.status} ${await registryErrorText(res)}${
            this.#auth.has(repository) ? " (the credentials were refused)" : ""
          }`,
          res.status,
        );
      }
      return res;
    }
  }

  /**
   * Fetches a manifest or index by tag or digest. A digest reference is
   * verified against the bytes; for a tag, the digest is computed from them
   * (and checked against `Docker-Content-Digest` when the registry sends it).
   */
  async getManifest(
    repository: string,
    reference: string,
    signal?: AbortSignal,
  ): Promise<FetchedDocument & { digest: string }> {
    const what = `manifest ${this.domain}/${repository}${
      reference.includes(":") ? "@" : ":"
    }${reference}`;
    const tries = Math.max(1, this.#options.retries ?? 4);
    let delay = this.#options.retryDelay ?? 200;
    for (let attempt = 1;; attempt++) {
      const res = await this.#get(
        repository,
        `manifests/${reference}`,
        { accept: MANIFEST_ACCEPT },
        signal,
      );
      if (res.status === 404) {
        throw new BlobNotFoundError(
          reference,
          `${this.domain}/${repository}`,
          `404 ${await registryErrorText(res)}`,
        );
      }
      if (!res.ok) {
        throw new RegistryError(what, `${res.status} ${await registryErrorText(res)}`, res.status);
      }
      const length = Number(res.headers.get("content-length") ?? 0);
      if (length > MAX_DOCUMENT_SIZE) {
        await res.body?.cancel();
        throw new RegistryError(what, `${length} bytes is larger than ${MAX_DOCUMENT_SIZE}`);
      }
      let bytes: Uint8Array;
      try {
        bytes = await readBounded(res, MAX_DOCUMENT_SIZE, what);
      } catch (e) {
        if (!(e instanceof BrokenBodyError) || attempt >= tries) throw e;
        await sleep(delay, signal);
        delay *= 2;
        continue;
      }
      return this.#manifestOf(res, bytes, reference, what);
    }
  }

  /** The fetched manifest, its digest checked against the registry's header. */
  #manifestOf(
    res: Response,
    bytes: Uint8Array,
    reference: string,
    what: string,
  ): FetchedDocument & { digest: string } {
    const mediaType = res.headers.get("content-type")?.split(";")[0].trim() || undefined;
    let digest: string;
    if (reference.includes(":")) digest = reference; // verified by the resolver
    else {
      const header = res.headers.get("docker-content-digest");
      digest = digestOf(bytes);
      let algorithm: string | undefined;
      try {
        if (header) algorithm = parseDigest(header).algorithm;
      } catch { /* an odd header: rely on our own sha256 */ }
      if (algorithm && digestOf(bytes, algorithm) !== header) {
        throw new RegistryError(
          what,
          `the registry says its digest is ${header} but its bytes hash to ${
            digestOf(bytes, algorithm)
          }`,
        );
      }
    }
    return { bytes, mediaType, digest };
  }

  /** Fetches a small blob (a config) whole. */
  async fetchBlob(repository: string, desc: Descriptor, signal?: AbortSignal): Promise<Uint8Array> {
    if (desc.size > MAX_DOCUMENT_SIZE) {
      throw new RegistryError(
        `blob ${desc.digest}`,
        `${desc.size} bytes is too large to read whole`,
      );
    }
    const stream = await this.openBlob(repository, desc, signal);
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  async #blobResponse(
    repository: string,
    desc: Descriptor,
    from: number,
    signal?: AbortSignal,
  ): Promise<Response> {
    const headers: Record<string, string> = {};
    if (from > 0) headers.range = `bytes=${from}-`;
    const res = await this.#get(repository, `blobs/${desc.digest}`, headers, signal);
    const where = `${this.domain}/${repository}`;
    if (res.status === 404) {
      throw new BlobNotFoundError(
        desc.digest,
        where,
        `the registry answered 404 ${await registryErrorText(res)} (deleted from the registry?)`,
      );
    }
    if (!res.ok) {
      throw new RegistryError(
        `GET blob ${desc.digest} from ${where}`,
        `${res.status} ${await registryErrorText(res)}`,
        res.status,
      );
    }
    return res;
  }

  /**
   * Opens a blob as a stream. The request is made before this resolves (a
   * missing blob rejects here); the body then flows as the consumer reads.
   * When the connection drops mid-blob, the download resumes from the last
   * byte received with `Range: bytes=N-` (a registry that ignores ranges is
   * read from the start and the first N bytes skipped), so the consumer sees
   * one uninterrupted stream. More bytes than the descriptor's size is an error.
   */
  async openBlob(
    repository: string,
    desc: Descriptor,
    signal?: AbortSignal,
  ): Promise<ReadableStream<Uint8Array>> {
    const what = `blob ${desc.digest} from ${this.domain}/${repository}`;
    let res = await this.#blobResponse(repository, desc, 0, signal);
    let reader = res.body!.getReader();
    let received = 0;
    let skip = 0;
    let resumes = 0;
    const maxResumes = this.#options.resumes ?? 5;
    let delay = this.#options.retryDelay ?? 200;
    const size = desc.size;
    // Network reads arrive in small pieces (~16-64 KiB); handing them on in
    // bigger chunks cuts the per-chunk cost of every stage downstream.
    const pending: Uint8Array[] = [];
    let pendingBytes = 0;
    const takePending = () => {
      const out = pending.length === 1 ? pending[0] : new Uint8Array(pendingBytes);
      if (pending.length > 1) {
        let off = 0;
        for (const p of pending) {
          out.set(p, off);
          off += p.length;
        }
      }
      pending.length = 0;
      pendingBytes = 0;
      return out;
    };
    return new ReadableStream<Uint8Array>({
      pull: async (c) => {
        for (;;) {
          let r: ReadableStreamReadResult<Uint8Array>;
          try {
            r = await reader.read();
          } catch (e) {
            if (isAbort(e, signal) || !(e instanceof TypeError)) throw e;
            if (size !== UNKNOWN_SIZE && received >= size) {
              // Dropped after the last byte: nothing is missing.
              if (pendingBytes) c.enqueue(takePending());
              return c.close();
            }
            if (++resumes > maxResumes) {
              throw new RegistryError(
                what,
                `connection lost after ${received} bytes; gave up after ${maxResumes} resumptions`,
                undefined,
                { cause: e },
              );
            }
            await sleep(delay, signal);
            delay *= 2;
            res = await this.#blobResponse(repository, desc, received, signal);
            if (res.status === 206) {
              const m = /^bytes (\d+)-/.exec(res.headers.get("content-range") ?? "");
              if (!m || Number(m[1]) !== received) {
                await res.body?.cancel();
                throw new RegistryError(
                  what,
                  `asked to resume at byte ${received}, got Content-Range ${
                    res.headers.get("content-range")
                  }`,
                );
              }
              skip = 0;
            } else skip = received; // the whole blob again: drop what we already passed on
            reader = res.body!.getReader();
            continue;
          }
          if (r.done) {
            if (size !== UNKNOWN_SIZE && received < size) {
              throw new RegistryError(what, `the body ended after ${received} of ${size} bytes`);
            }
            if (pendingBytes) c.enqueue(takePending());
            return c.close();
          }
          let chunk = r.value;
          if (skip > 0) {
            const n = Math.min(skip, chunk.length);
            skip -= n;
            chunk = chunk.subarray(n);
            if (!chunk.length) continue;
          }
          received += chunk.length;
          if (size !== UNKNOWN_SIZE && received > size) {
            await reader.cancel();
            throw new RegistryError(what, `more than the ${size} bytes its descriptor says`);
          }
          if (chunk.length >= COALESCE && !pendingBytes) {
            c.enqueue(chunk);
            return;
          }
          pending.push(chunk);
          pendingBytes += chunk.length;
          if (pendingBytes >= COALESCE) {
            c.enqueue(takePending());
            return;
          }
        }
      },
      cancel: (reason) => reader.cancel(reason),
    }, { highWaterMark: 4 });
  }
}

/** Reads an image's documents and blobs from one repository of a registry. */
export class RegistrySource implements ImageSource {
  readonly name: string;
  /** The client. */
  readonly client: RegistryClient;
  /** The repository path. */
  readonly repository: string;

  /**
   * A source for `ref`'s repository.
   *
   * @example Usage
   * ```ts ignore
   * const source = new RegistrySource(parseRegistryRef("127.0.0.1:5000/app"), { tlsVerify: false });
   * ```
   */
  constructor(ref: RegistryRef, options: RegistryOptions = {}, client?: RegistryClient) {
    this.client = client ?? new RegistryClient(ref.domain, ref.host, options);
    this.repository = ref.repository;
    this.name = registryRefString(ref);
  }

  /** Fetches a manifest by the descriptor's digest. */
  fetchManifest(desc: Descriptor, signal?: AbortSignal): Promise<FetchedDocument> {
    return this.client.getManifest(this.repository, desc.digest, signal);
  }

  /** Fetches a config blob. */
  fetchBlob(desc: Descriptor, signal?: AbortSignal): Promise<Uint8Array> {
    return this.client.fetchBlob(this.repository, desc, signal);
  }

  /** Streams a layer blob. */
  openBlob(desc: Descriptor, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    return this.client.openBlob(this.repository, desc, signal);
  }
}

/**
 * Every place a pull tried, and why each failed: mirrors first, then the
 * location, as registries.conf lists them. Its `cause` is the location's
 * failure.
 *
 * @example Usage
 * ```ts
 * import { PullSourcesError } from "./registry.ts";
 * const e = new PullSourcesError("example.com/app:1", [
 *   { where: "mirror 127.0.0.1:1/app:1", error: new Error("connection refused") },
 *   { where: "127.0.0.1:5000/app:1", error: new Error("404 MANIFEST_UNKNOWN") },
 * ]);
 * console.assert(e.message.includes("connection refused") && e.message.includes("404"));
 * ```
 */
export class PullSourcesError extends RegistryError {
  /** Each place tried, in order, with its failure. */
  readonly attempts: readonly { where: string; error: unknown }[];
  /** Builds the error for pulling `ref`. */
  constructor(ref: string, attempts: { where: string; error: unknown }[]) {
    super(
      `no source has ${ref}`,
      attempts.map((a) => `${a.where}: ${errorText(a.error)}`).join("; "),
      undefined,
      { cause: attempts.at(-1)?.error },
    );
    this.name = "PullSourcesError";
    this.attempts = attempts;
  }
}

/** An error's message with its causes' (once each), on one line. */
function errorText(e: unknown): string {
  let text = "";
  for (let c: unknown = e, i = 0; c !== undefined && i < 6; c = (c as Error)?.cause, i++) {
    const m = (c instanceof Error ? c.message : String(c)).replace(/\s*\n\s*/g, "; ");
    if (m && !text.includes(m)) text = text ? `${text}: ${m}` : m;
  }
  return text;
}

const refName = (r: RegistryRef) => `${r.domain}/${r.repository}`;

/**
 * Pulls the image `ref` names (documents only; layers stream when read).
 * registries.conf (see {@linkcode loadRegistriesConf}) is consulted first: a
 * blocked name is refused; the mirrors of its `[[registry]]` are tried in
 * order, then its location, and the first that serves the manifest is used
 * for everything else (as containers/image does). Any failure to get the
 * manifest from one (unreachable, refused login, not there, a wrong digest)
 * moves on to the next; an unverifiable certificate where TLS may go
 * unverified stops here (the CLI runs itself again with Deno's flag for that
 * host), as does an abort. Credentials are looked up for the registry
 * actually contacted; `creds` go only to the registry the name is on.
 *
 * @example Usage
 * ```ts ignore
 * import { parseRegistryRef } from "./ref.ts";
 * import { openRegistryImage } from "./registry.ts";
 * const image = await openRegistryImage(parseRegistryRef("127.0.0.1:5000/app:v1"), { tlsVerify: false });
 * ```
 */
export async function openRegistryImage(
  ref: RegistryRef,
  options: RegistryOptions & ResolveOptions = {},
): Promise<SourceImage> {
  const conf = await loadRegistriesConf(options);
  if (conf?.warnings.length && options.onWarning && !warned.has(conf)) {
    warned.add(conf);
    for (const w of conf.warnings) options.onWarning(w);
  }
  const sources = pullSources(conf, ref);
  const reference = ref.digest ?? ref.tag ?? "latest";
  const attempts: { where: string; error: unknown }[] = [];
  const where = (s: PullSource) =>
    `${s.mirror ? "mirror " : ""}${registryRefString(s.ref)}${s.insecure ? " (insecure)" : ""}`;
  for (const src of sources) {
    options.signal?.throwIfAborted();
    let source: RegistrySource;
    let fetched: FetchedDocument & { digest: string };
    try {
      // The place contacted may itself be blocked by an entry of its own.
      const own = conf && findRegistry(conf, refName(src.ref));
      if (own?.blocked) {
        throw new BlockedRegistryError(registryRefString(src.ref), own.prefix, own.file);
      }
      source = new RegistrySource(src.ref, {
        ...options,
        tlsVerify: options.tlsVerify ?? (src.insecure ? false : undefined),
        // Credentials given for the name's registry are not for a mirror elsewhere.
        creds: src.ref.domain === ref.domain ? options.creds : undefined,
      });
      fetched = await source.client.getManifest(src.ref.repository, reference, options.signal);
      // A pinned manifest that does not hash right is that source's failure: the next may be right.
      if (ref.digest && sources.length > 1) {
        await verifyDocument(fetched.bytes, ref.digest, `manifest ${registryRefString(src.ref)}`);
      }
    } catch (e) {
      if (endsThePull(e, options.signal) || sources.length === 1) throw e;
      attempts.push({ where: where(src), error: e });
      continue;
    }
    // This source has the image: everything else comes from it (containers/image does the same).
    const root: Descriptor = {
      mediaType: fetched.mediaType ?? "",
      digest: fetched.digest,
      size: ref.digest ? fetched.bytes.length : UNKNOWN_SIZE,
    };
    return await resolveImage(source, root, { ...options, prefetched: fetched });
  }
  throw new PullSourcesError(registryRefString(ref), attempts);
}

const warned = new WeakSet<object>();

/**
 * Whether a source's failure ends the pull at once: an abort, or an
 * unverifiable certificate where TLS may go unverified (the CLI runs itself
 * again with Deno's flag for that host, and tries the same order).
 */
function endsThePull(e: unknown, signal: AbortSignal | undefined): boolean {
  return isAbort(e, signal) || e instanceof UnverifiedCertificateError;
}
