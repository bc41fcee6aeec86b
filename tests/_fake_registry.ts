/**
 * A registry written on raw TCP for hostile-response tests: it serves
 * manifests and blobs from memory (by tag or digest, ranges honoured) and
 * lets a test answer any request itself, with what no HTTP library sends (a
 * Content-Length that lies, a body cut short). Requests and their headers
 * are recorded.
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
  #listener: Deno.Listener;
  #conns = new Set<Deno.Conn>();
  #done: Promise<void>;

  constructor() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.host = `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
    this.#done = (async () => {
      for await (const conn of listener) {
        this.#conns.add(conn);
        this.#serve(conn).catch(() => {}).finally(() => {
          this.#conns.delete(conn);
          try {
            conn.close();
          } catch { /* closed */ }
        });
      }
    })().catch(() => {});
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
    const buf = new Uint8Array(16384);
    let head = "";
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) return;
      head += new TextDecoder().decode(buf.subarray(0, n));
    }
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
    await writeAll(
      conn,
      enc.encode(
        `HTTP/1.1 ${r.status} X\r\n${
          Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join("")
        }\r\n`,
      ),
    );
    await writeAll(conn, r.cutAfter !== undefined ? body.subarray(0, r.cutAfter) : body);
  }

  async [Symbol.asyncDispose]() {
    this.#listener.close();
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await this.#done;
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}
