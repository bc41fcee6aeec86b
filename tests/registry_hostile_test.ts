/**
 * Hostile registry answers found in an audit, served by a fake registry on
 * raw TCP (tests/_fake_registry.ts), each pinned by the error (or the bytes)
 * that the OCI distribution and image specs, and containerd, give.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { join } from "@std/path";
import { gzipSync } from "node:zlib";
import { digestOf } from "../image/blob.ts";
import { openImage } from "../image/open.ts";
import { MediaType } from "../image/types.ts";
import { TarWriter } from "../layer/tar_writer.ts";
import { FakeRegistry } from "./_fake_registry.ts";
import { runCli, tempDir } from "./_helpers.ts";

const enc = new TextEncoder();
const OPTS = { tlsVerify: false, retryDelay: 5 };

/** A one-layer image in `reg`, tagged `tag`. */
function image(reg: FakeRegistry, tag = "v1") {
  const tar = new TarWriter().file("hello", "hello\n").bytes();
  const gz = new Uint8Array(gzipSync(tar));
  const layer = reg.addBlob(gz);
  const config = enc.encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [digestOf(tar)] },
    config: {},
  }));
  const configDigest = reg.addBlob(config);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: configDigest, size: config.length },
    layers: [{ mediaType: MediaType.OciLayerGzip, digest: layer, size: gz.length }],
  });
  const digest = reg.addManifest(manifest, MediaType.OciManifest, tag);
  return { tar, manifest, digest };
}

/** Runs the CLI's pull against `ref` with a fresh cache below `dir`. */
async function pull(dir: string, ref: string, ...flags: string[]) {
  const cache = join(dir, "cache");
  const r = await runCli(["pull", "--tls-verify=false", "--cache", cache, ...flags, ref]);
  return { code: r.code, lines: r.stderr.split("\n").filter((l) => l && !l.includes("Check")) };
}

// A document's kind is what its bytes say; a registry (Content-Type) or an
// index (descriptor mediaType) saying otherwise is the media type confusion
// of CVE-2021-41190 / GHSA-77vh-xpmg-72qh: the same digest must not be an
// image to one client and an index to another. containerd refuses it
// ("expected manifest but found index"), as does a document that has both
// an index's manifests and a manifest's layers or config.
Deno.test("hostile registry: a manifest served as an index (or the reverse) is refused", async (t) => {
  await using reg = new FakeRegistry();
  const img = image(reg);
  const platform = { os: "linux", architecture: "amd64" };
  const index = (type: string) =>
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [{ mediaType: type, digest: img.digest, size: img.manifest.length, platform }],
    });
  // Both shapes and no mediaType field: the Content-Type alone decided.
  const ambiguous = JSON.parse(img.manifest);
  delete ambiguous.mediaType;
  ambiguous.manifests = JSON.parse(index(MediaType.OciManifest)).manifests;
  const inner = index(MediaType.OciManifest);
  const innerDigest = reg.addManifest(inner, MediaType.OciIndex);
  const cases: [string, string, string, string][] = [
    [
      "a manifest with Content-Type index",
      img.manifest,
      MediaType.OciIndex,
      "but it is an image manifest",
    ],
    [
      "an index with Content-Type manifest",
      index(MediaType.OciManifest),
      MediaType.OciManifest,
      "but it is an index",
    ],
    ["both shapes, served as an index", JSON.stringify(ambiguous), MediaType.OciIndex, "both"],
    ["both shapes, served as a manifest", JSON.stringify(ambiguous), MediaType.OciManifest, "both"],
    [
      "an index whose descriptor says manifest for an index",
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [{
          mediaType: MediaType.OciManifest,
          digest: innerDigest,
          size: inner.length,
          platform,
        }],
      }),
      MediaType.OciIndex,
      innerDigest,
    ],
  ];
  for (const [i, [name, body, type, includes]] of cases.entries()) {
    await t.step(name, async () => {
      reg.addManifest(body, type, `c${i}`);
      const e = await assertRejects(() => openImage(`docker://${reg.host}/app:c${i}`, OPTS));
      assertEquals((e as Error).name, "ManifestError", String(e));
      assert((e as Error).message.includes(includes), (e as Error).message);
    });
  }
  await t.step("the CLI: one line, exit 1, and the good image still pulls", async () => {
    await using d = await tempDir();
    const r = await pull(String(d), `${reg.host}/app:c0`);
    assertEquals(r.code, 1, r.lines.join("\n"));
    assertEquals(r.lines.length, 1, r.lines.join("\n"));
    assert(/^strata: .*served as application\/vnd\.oci\.image\.index/.test(r.lines[0]), r.lines[0]);
    const ok = await pull(String(d), `${reg.host}/app:v1`, "-q");
    assertEquals(ok.code, 0, ok.lines.join("\n"));
  });
  await t.step("a matching type, or one that names neither kind, still opens", async () => {
    const ok = await openImage(`docker://${reg.host}/app:v1`, OPTS);
    assertEquals(ok.digest, img.digest);
    reg.addManifest(img.manifest, "application/octet-stream", "plain");
    assertEquals((await openImage(`docker://${reg.host}/app:plain`, OPTS)).digest, img.digest);
    reg.addManifest(index(MediaType.DockerManifest), MediaType.DockerManifestList, "docker");
    assertEquals((await openImage(`docker://${reg.host}/app:docker`, OPTS)).digest, img.digest);
  });
});

// A token server's answer must be a JSON object with a string token (or
// access_token) fit for an Authorization header: `null` was a TypeError
// ("Cannot read properties of null"), a CR/LF in the token an invalid
// header retried four times, an object sent as "Bearer [object Object]".
Deno.test("hostile registry: a token server's odd answers are one clear authentication error", async (t) => {
  await using reg = new FakeRegistry();
  await using auth = new FakeRegistry();
  image(reg);
  let answer = "";
  reg.handler = (r) =>
    r.path.startsWith("/v2/app/") && r.headers.authorization !== "Bearer good"
      ? {
        status: 401,
        headers: { "www-authenticate": `Bearer realm="http://${auth.host}/token",service="s"` },
      }
      : undefined;
  auth.handler = () => ({
    status: 200,
    headers: { "content-type": "application/json" },
    body: answer,
  });
  const bad = [
    "null",
    "[]",
    '"good"',
    '{"token":{"a":1}}',
    '{"token":5}',
    '{"token":"a\\r\\nX-Evil: 1"}',
    '{"token":""}',
  ];
  for (const body of bad) {
    await t.step(body, async () => {
      answer = body;
      const seen = reg.seen.length;
      const e = await assertRejects(() => openImage(`docker://${reg.host}/app:v1`, OPTS));
      assertEquals((e as Error).name, "AuthenticationError", String(e));
      assert((e as Error).message.includes("token"), (e as Error).message);
      assert(!/[\r\n]/.test((e as Error).message), (e as Error).message);
      // No request went out with what the answer held.
      assert(reg.seen.slice(seen).every((r) => !r.headers.authorization), "a bad token was sent");
    });
  }
  await t.step("the CLI: one line, exit 1; a good token then pulls", async () => {
    await using d = await tempDir();
    answer = "null";
    const r = await pull(String(d), `${reg.host}/app:v1`);
    assertEquals(r.code, 1, r.lines.join("\n"));
    assertEquals(r.lines.length, 1, r.lines.join("\n"));
    assert(r.lines[0].startsWith("strata: ") && r.lines[0].includes("token"), r.lines[0]);
    answer = '{"access_token":"good"}';
    const ok = await pull(String(d), `${reg.host}/app:v1`, "-q");
    assertEquals(ok.code, 0, ok.lines.join("\n"));
  });
});

// A manifest answer that breaks off before its Content-Length (a dropped
// connection): asked again, as a failed request is; when it keeps breaking
// off, one line that names the manifest (it was Deno's bare "error reading a
// body from connection").
Deno.test("hostile registry: a manifest cut short is asked again, then named", async (t) => {
  await using reg = new FakeRegistry();
  const img = image(reg);
  const manifest = enc.encode(img.manifest);
  let cuts = 0;
  reg.handler = (r) =>
    r.path === "/v2/app/manifests/v1" && cuts-- > 0
      ? {
        status: 200,
        headers: { "content-type": MediaType.OciManifest },
        body: manifest,
        contentLength: manifest.length + 100,
      }
      : undefined;
  await t.step("once: the second answer is used", async () => {
    cuts = 1;
    const opened = await openImage(`docker://${reg.host}/app:v1`, OPTS);
    assertEquals(opened.digest, img.digest);
    assertEquals(cuts, -1, "asked twice");
  });
  await t.step("always: one line naming the manifest, exit 1", async () => {
    await using d = await tempDir();
    cuts = 1000;
    const r = await pull(String(d), `${reg.host}/app:v1`);
    assertEquals(r.code, 1, r.lines.join("\n"));
    assertEquals(r.lines.length, 1, r.lines.join("\n"));
    assert(r.lines[0].includes(`manifest ${reg.host}/app:v1`), r.lines[0]);
    assert(r.lines[0].includes("broke off after"), r.lines[0]);
  });
});
