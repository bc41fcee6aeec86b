/**
 * A registry written on raw TCP for hostile-response tests: it serves
 * manifests and blobs from memory (by tag or digest, ranges honoured) and
 * lets a test answer any request itself, with what no HTTP library sends (a
 * Content-Length that lies, a body cut short). Requests and their headers
 * are recorded. The raw TCP pieces (a local listener, reading a request
 * head, writing a response head) are exported for other hand-written servers.
 */
import { digestOf } from "../image/blob.ts";

/** A raw response. */
export interface RawResponse {
  status: number;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  /** Send exactly this Content-Length header, whatever the body's length. */
  contentLength?: number;
  /** Close the connection after this many body bytes. */
  cutAfter?: number;
}

/** A request as the fake registry saw it. */
export interface SeenRequest {
  path: string;
  headers: Record<string, string>;
}

const enc = new TextEncoder();

/** One fake registry (or any HTTP origin) on 127.0.0.1. */
export class FakeRegistry implements AsyncDisposable {
  readonly host: string;
  readonly seen: SeenRequest[] = [];
  /** Answers a request itself when it returns something. */
  handler: (req: SeenRequest) => RawResponse | undefined = () => undefined;
  readonly manifests = new Map<string, { bytes: Uint8Array; type: string }>();
  readonly blobs = new Map<string, Uint8Array>();
  #server: LocalServer;

  constructor() {
    this.#server = serveLocal((conn) => this.#serve(conn));
    this.host = this.#server.host;
  }

  /** Stores a manifest under its digest and `tag`; returns the digest. */
  addManifest(bytes: Uint8Array | string, type: string, tag?: string): string {
    const b = typeof bytes === "string" ? enc.encode(bytes) : bytes;
    const d = digestOf(b);
    this.manifests.set(d, { bytes: b, type });
    if (tag) this.manifests.set(tag, { bytes: b, type });
    return d;
  }

  /** Stores a blob; returns its digest. */
  addBlob(bytes: Uint8Array | string): string {
    const b = typeof bytes === "string" ? enc.encode(bytes) : bytes;
    const d = digestOf(b);
    this.blobs.set(d, b);
    return d;
  }

  #default(req: SeenRequest): RawResponse {
    if (req.path === "/v2/") return { status: 200, body: "{}" };
    const m = /^\/v2\/.+\/(manifests|blobs)\/([^/?]+)$/.exec(req.path);
    if (m?.[1] === "manifests") {
      const doc = this.manifests.get(decodeURIComponent(m[2]));
      if (doc) return { status: 200, headers: { "content-type": doc.type }, body: doc.bytes };
    } else if (m?.[1] === "blobs") {
      const b = this.blobs.get(decodeURIComponent(m[2]));
      if (b) {
        const r = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
        if (r) {
          const from = Number(r[1]);
          return {
            status: 206,
            headers: { "content-range": `bytes ${from}-${b.length - 1}/${b.length}` },
            body: b.subarray(from),
          };
        }
        return { status: 200, body: b };
      }
    }
    return { status: 404, body: '{"errors":[{"code":"NOT_FOUND"}]}' };
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    const head = await readRequestHead(conn, new Uint8Array(16384));
    if (head === null) return;
    const [requestLine, ...lines] = head.split("\r\n\r\n")[0].split("\r\n");
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const i = l.indexOf(":");
      if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    const req = { path: requestLine.split(" ")[1], headers };
    this.seen.push(req);
    const r = this.handler(req) ?? this.#default(req);
    const body = typeof r.body === "string" ? enc.encode(r.body) : r.body ?? new Uint8Array();
    const h: Record<string, string> = {
      connection: "close",
      "content-length": String(r.contentLength ?? body.length),
      ...r.headers,
    };
    await writeResponseHead(conn, r.status, h);
    await writeAll(conn, r.cutAfter !== undefined ? body.subarray(0, r.cutAfter) : body);
  }

  async [Symbol.asyncDispose]() {
    await this.#server[Symbol.asyncDispose]();
  }
}

/** A TCP server on a free port of 127.0.0.1 (see {@linkcode listenLocal}). */
export interface LocalServer extends AsyncDisposable {
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** The connections open now; disposing closes them all. */
  readonly conns: Set<Deno.Conn>;
}

/**
 * Listens on a free port of 127.0.0.1, adds each connection to `conns` and
 * hands it to `accept` (awaited before the next; a throw stops accepting).
 * Disposing stops listening, closes every connection in `conns` and waits
 * for the accept loop to end.
 */
export function listenLocal(
  accept: (conn: Deno.Conn, conns: Set<Deno.Conn>) => void | Promise<void>,
): LocalServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const done = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      await accept(conn, conns);
    }
  })().catch(() => {});
  return {
    host: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    conns,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await done;
    },
  };
}

/**
 * {@linkcode listenLocal} that serves each connection with `serve` at once
 * (side by side with the others), ignores its errors, and closes the
 * connection when `serve` ends.
 */
export function serveLocal(serve: (conn: Deno.Conn) => Promise<void>): LocalServer {
  return listenLocal((conn, conns) => {
    serve(conn).catch(() => {}).finally(() => {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    });
  });
}

/**
 * Reads from `conn` into `buf` until an HTTP request head has ended; returns
 * all that was read (the head, its blank line, and anything after), or null
 * if the client closed first.
 */
export async function readRequestHead(conn: Deno.Conn, buf: Uint8Array): Promise<string | null> {
  let head = "";
  while (!head.includes("\r\n\r\n")) {
    const n = await conn.read(buf);
    if (n === null) return null;
    head += new TextDecoder().decode(buf.subarray(0, n));
  }
  return head;
}

/** Writes an HTTP/1.1 status line (reason `X`), `headers` as given, and the blank line. */
export async function writeResponseHead(
  conn: Deno.Conn,
  status: number,
  headers: Record<string, string>,
): Promise<void> {
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  await writeAll(conn, enc.encode(`HTTP/1.1 ${status} X\r\n${lines}\r\n`));
}

/** Writes all of `bytes` to `conn`. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}
