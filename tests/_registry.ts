/**
 * Test and benchmark fixtures for registries: Debian's real `docker-registry`
 * on 127.0.0.1 (optionally behind htpasswd basic auth), pushed to with skopeo,
 * and two small fronts written here: a TCP proxy that cuts a connection once
 * mid-stream, and an HTTP front that demands bearer tokens and redirects blob
 * downloads to another origin (as registries backed by object storage do).
 *
 * @module
 */
import { join } from "@std/path";
import { run, sh } from "./_helpers.ts";
import { listenLocal, type LocalServer } from "./_fake_registry.ts";

let policy: Promise<string> | undefined;

/**
 * A signature policy that accepts anything, for skopeo's `--policy`: tests do
 * not depend on /etc/containers/policy.json being installed.
 */
export function skopeoPolicy(): Promise<string> {
  policy ??= (async () => {
    const file = await Deno.makeTempFile({ prefix: "strata-policy-", suffix: ".json" });
    await Deno.writeTextFile(file, `{"default":[{"type":"insecureAcceptAnything"}]}`);
    globalThis.addEventListener("unload", () => Deno.removeSync(file));
    return file;
  })();
  return policy;
}

/** Runs `skopeo copy -q` with {@linkcode skopeoPolicy} and `args`. */
export async function skopeoCopy(...args: string[]): Promise<void> {
  const r = await run("skopeo", ["--policy", await skopeoPolicy(), "copy", "-q", ...args]);
  if (r.code !== 0) throw new Error(`skopeo copy ${args.join(" ")} failed: ${r.stderr}`);
}

/** Returns a TCP port that was free a moment ago. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A running `docker-registry serve`. */
export class Registry implements AsyncDisposable {
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** Storage root (blobs live under `docker/registry/v2/blobs`). */
  readonly storage: string;
  #child: Deno.ChildProcess;
  #dir: string;

  private constructor(host: string, storage: string, dir: string, child: Deno.ChildProcess) {
    this.host = host;
    this.storage = storage;
    this.#dir = dir;
    this.#child = child;
  }

  /**
   * Starts a registry in a temp dir; with `auth`, htpasswd basic auth for
   * that user; with `tls`, HTTPS with a self-signed certificate for
   * 127.0.0.1 (made with openssl), as a private registry often has; with
   * `proxy` (`http://HOST:PORT`, which must answer now), a pull-through cache
   * of that registry (Distribution's proxy mode: it fetches what it lacks from
   * there, keeps it in its own storage, and serves what it holds once the
   * upstream is gone).
   */
  static async start(
    auth?: { user: string; pass: string },
    parent?: string,
    options: { tls?: boolean; proxy?: string } = {},
  ): Promise<Registry> {
    const dir = await Deno.makeTempDir({ prefix: "strata-registry-", dir: parent });
    const storage = join(dir, "storage");
    const port = freePort();
    let authYaml = "";
    if (auth) {
      const htpasswd = join(dir, "htpasswd");
      await Deno.writeTextFile(htpasswd, await sh("htpasswd", ["-Bbn", auth.user, auth.pass]));
      authYaml = `auth:\n  htpasswd:\n    realm: strata-test\n    path: ${htpasswd}\n`;
    }
    let tlsYaml = "";
    if (options.tls) {
      const key = join(dir, "key.pem");
      const cert = join(dir, "cert.pem");
      // deno-fmt-ignore
      await sh("openssl", [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
      ]);
      tlsYaml = `  tls:\n    certificate: ${cert}\n    key: ${key}\n`;
    }
    const config = join(dir, "config.yml");
    await Deno.writeTextFile(
      config,
      `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
${tlsYaml}${authYaml}${options.proxy ? `proxy:\n  remoteurl: ${options.proxy}\n` : ""}`,
    );
    const child = new Deno.Command("/usr/bin/docker-registry", {
      args: ["serve", config],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const host = `127.0.0.1:${port}`;
    const reg = new Registry(host, storage, dir, child);
    for (let i = 0;; i++) {
      try {
        const res = await fetch(`http://${host}/v2/`);
        await res.body?.cancel();
        break;
      } catch (e) {
        if (i > 100) {
          await reg[Symbol.asyncDispose]();
          throw new Error(`docker-registry did not start on ${host}`, { cause: e });
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return reg;
  }

  /** Pushes `src` (a skopeo source reference) to `REPO:TAG` on this registry. */
  async push(src: string, dest: string, options: { creds?: string; all?: boolean } = {}) {
    await skopeoCopy(
      "--dest-tls-verify=false",
      ...(options.creds ? ["--dest-creds", options.creds] : []),
      ...(options.all ? ["--all"] : []),
      src,
      `docker://${this.host}/${dest}`,
    );
  }

  /** Copies `REPO:TAG` from this registry to `dest` with skopeo. */
  async pull(src: string, dest: string, options: { creds?: string } = {}) {
    await skopeoCopy(
      "--src-tls-verify=false",
      ...(options.creds ? ["--src-creds", options.creds] : []),
      `docker://${this.host}/${src}`,
      dest,
    );
  }

  /** The data file of blob `digest` in the registry's storage. */
  blobData(digest: string): string {
    const hex = digest.slice(7);
    return join(this.storage, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
  }

  /** Stops the registry and removes its storage. */
  async [Symbol.asyncDispose]() {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* already gone */ }
    await this.#child.stderr.cancel().catch(() => {});
    await this.#child.status;
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

/**
 * A TCP proxy to `upstream` that, once, closes a connection after it has
 * passed `cutAfter` bytes from upstream to the client. It records the
 * requests' first lines and `Range` headers it sees.
 */
export class CuttingProxy implements AsyncDisposable {
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** Request lines and Range headers seen, in order. */
  readonly seen: string[] = [];
  /** Number of connections cut. */
  cuts = 0;
  #cutAfter: number;
  #server: LocalServer;

  /** Listens on a free port, forwarding to `upstream` (`host:port`). */
  constructor(upstream: string, cutAfter: number) {
    this.#cutAfter = cutAfter;
    const [uh, up] = upstream.split(":");
    this.#server = listenLocal(async (client, conns) => {
      const server = await Deno.connect({ hostname: uh, port: Number(up) });
      conns.add(server);
      this.#pump(client, server, false);
      this.#pump(server, client, true);
    });
    this.host = this.#server.host;
  }

  async #pump(from: Deno.Conn, to: Deno.Conn, downstream: boolean) {
    const buf = new Uint8Array(64 * 1024);
    let passed = 0;
    const dec = new TextDecoder();
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        let chunk = buf.subarray(0, n);
        if (!downstream) {
          const text = dec.decode(chunk);
          for (const line of text.split("\r\n")) {
            if (/^(GET|HEAD) /.test(line) || /^range:/i.test(line)) this.seen.push(line);
          }
        }
        if (downstream && this.cuts === 0 && passed + n > this.#cutAfter) {
          // Counted before the write: a concurrent download must not cut too.
          this.cuts++;
          chunk = chunk.subarray(0, this.#cutAfter - passed);
          await to.write(chunk);
          break;
        }
        passed += n;
        let off = 0;
        while (off < chunk.length) off += await to.write(chunk.subarray(off));
      }
    } catch { /* the other side closed */ }
    for (const c of [from, to]) {
      try {
        c.close();
      } catch { /* closed already */ }
      this.#server.conns.delete(c);
    }
  }

  /** Stops listening and closes every connection. */
  async [Symbol.asyncDispose]() {
    await this.#server[Symbol.asyncDispose]();
  }
}

/**
 * An HTTP front for a registry that demands bearer tokens from its own token
 * endpoint (checking basic credentials there when `user` is set), redirects
 * blob downloads to a storage endpoint on another origin (a second port), and
 * can fail a number of requests with 503.
 */
export class TokenFront implements AsyncDisposable {
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** Scopes requested from the token endpoint. */
  readonly scopes: string[] = [];
  /** Authorization headers that reached the storage origin (should stay empty). */
  readonly leakedAuth: string[] = [];
  /** Requests to fail with 503 before serving normally. */
  fail503 = 0;
  /** Count of 503s sent. */
  sent503 = 0;
  #server: Deno.HttpServer;
  #storage: Deno.HttpServer;
  #ac = new AbortController();

  /** Serves on a free port in front of `upstream` (`host:port`, plain HTTP, anonymous). */
  constructor(upstream: string, auth?: { user: string; pass: string }) {
    let port = 0;
    this.#storage = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      signal: this.#ac.signal,
      onListen: () => {},
    }, async (req) => {
      const a = req.headers.get("authorization");
      if (a) this.leakedAuth.push(a);
      return await this.#forward(upstream, new URL(req.url).pathname, req);
    });
    const storagePort = (this.#storage.addr as Deno.NetAddr).port;
    this.#server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      signal: this.#ac.signal,
      onListen: () => {},
    }, async (req) => {
      const url = new URL(req.url);
      if (url.pathname === "/token") {
        const want = auth ? `Basic ${btoa(`${auth.user}:${auth.pass}`)}` : undefined;
        if (want && req.headers.get("authorization") !== want) {
          return new Response('{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}', {
            status: 401,
          });
        }
        const scope = url.searchParams.get("scope") ?? "";
        this.scopes.push(`${url.searchParams.get("service")} ${scope}`);
        return Response.json({ token: `tok ${scope}` });
      }
      if (this.fail503 > this.sent503) {
        this.sent503++;
        return new Response("busy", { status: 503 });
      }
      const m = /^\/v2\/(.+)\/(manifests|blobs)\//.exec(url.pathname);
      const scope = m ? `repository:${m[1]}:pull` : "";
      if (req.headers.get("authorization") !== `Bearer tok ${scope}`) {
        return new Response('{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}', {
          status: 401,
          headers: {
            "www-authenticate":
              `Bearer realm="http://127.0.0.1:${port}/token",service="strata-test",scope="${scope}"`,
          },
        });
      }
      if (m?.[2] === "blobs") {
        return new Response(null, {
          status: 307,
          headers: { location: `http://127.0.0.1:${storagePort}${url.pathname}` },
        });
      }
      return await this.#forward(upstream, url.pathname, req);
    });
    port = (this.#server.addr as Deno.NetAddr).port;
    this.host = `127.0.0.1:${port}`;
  }

  async #forward(upstream: string, path: string, req: Request): Promise<Response> {
    const headers = new Headers();
    for (const h of ["accept", "range"]) {
      const v = req.headers.get(h);
      if (v) headers.set(h, v);
    }
    const res = await fetch(`http://${upstream}${path}`, { headers, redirect: "manual" });
    return new Response(res.body, { status: res.status, headers: res.headers });
  }

  /** Stops serving. */
  async [Symbol.asyncDispose]() {
    this.#ac.abort();
    await this.#server.finished;
    await this.#storage.finished;
  }
}
