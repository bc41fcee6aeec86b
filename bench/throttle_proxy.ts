/**
 * A TCP proxy that limits every connection's downstream (server to client)
 * rate, the way a distant registry or a CDN limits each download: parallel
 * connections each get the full rate. The pull benchmark runs it as its own
 * process (so its copying does not share the measured process's event loop)
 * in front of the loopback registry.
 *
 * `deno run --allow-net bench/throttle_proxy.ts UPSTREAM_HOST:PORT BYTES_PER_SECOND`
 * prints `127.0.0.1:PORT` on stdout once it listens, and runs until killed.
 *
 * @module
 */

const SLICE = 64 * 1024;

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** Copies `from` to `to`, at most `rate` bytes per second when `rate` > 0. */
async function pump(from: Deno.Conn, to: Deno.Conn, rate: number): Promise<void> {
  const buf = new Uint8Array(SLICE);
  // When the link is free again; idle time earns no credit (no bursts after a pause).
  let due = performance.now();
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      await writeAll(to, buf.subarray(0, n));
      if (rate > 0) {
        due = Math.max(due, performance.now()) + (n / rate) * 1000;
        const wait = due - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      }
    }
  } catch {
    // the other side closed
  }
  for (const c of [from, to]) {
    try {
      c.close();
    } catch {
      // closed already
    }
  }
}

/**
 * Listens on a free loopback port and forwards every connection to
 * `upstream`, limiting each connection's downstream to `rate` bytes/s.
 * Returns the address and a function that stops listening.
 *
 * @example Usage
 * ```ts ignore
 * import { throttleProxy } from "./throttle_proxy.ts";
 * const { host, close } = throttleProxy("127.0.0.1:5000", 40e6);
 * // ... fetch through `host` ...
 * close();
 * ```
 */
export function throttleProxy(upstream: string, rate: number): { host: string; close(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [hostname, port] = upstream.split(":");
  (async () => {
    for await (const client of listener) {
      Deno.connect({ hostname, port: Number(port) }).then((server) => {
        pump(client, server, 0);
        pump(server, client, rate);
      }, () => client.close());
    }
  })().catch(() => {});
  return {
    host: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    close: () => listener.close(),
  };
}

if (import.meta.main) {
  const [upstream, rate] = Deno.args;
  const { host } = throttleProxy(upstream, Number(rate));
  console.log(host);
}
