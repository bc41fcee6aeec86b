import { assert, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { join } from "@std/path";
import { DigestMismatchError, digestOf } from "../image/blob.ts";
import { writeOciLayout } from "../image/build.ts";
import { openImage } from "../image/open.ts";
import { PlatformNotFoundError } from "../image/platform.ts";
import { parseRef, RefError, refString } from "../image/ref.ts";
import { BlobNotFoundError, ManifestError } from "../image/source.ts";
import { ImageNotFoundError, ImageStore, LayerNotAvailableError } from "../image/store.ts";
import { credentialsFromAuthJSON, findCredentials } from "../image/auth.ts";
import type { Image } from "../image/types.ts";
import { gzip, TarWriter } from "../layer/tar_writer.ts";
import { sh, tempDir } from "./_helpers.ts";
import { skopeoCopy } from "./_registry.ts";

async function readAll(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

function layerTar(tag: string, n = 3): Uint8Array {
  const w = new TarWriter();
  w.directory("etc/");
  for (let i = 0; i < n; i++) w.file(`etc/${tag}-${i}.txt`, `${tag} file ${i}\n`.repeat(100 + i));
  return w.bytes();
}

/** Reads every layer of `image` through the verifying path and returns the tars. */
async function readLayers(image: Image): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (const l of image.layers) out.push(await readAll(await l.uncompressed()));
  return out;
}

Deno.test("parseRef understands skopeo's transports and Docker Hub names", () => {
  const hub = parseRef("busybox");
  assertEquals(hub, {
    transport: "docker",
    domain: "docker.io",
    host: "registry-1.docker.io",
    repository: "library/busybox",
    tag: "latest",
  });
  assertEquals(
    refString(parseRef("docker://busybox:1.36")),
    "docker://docker.io/library/busybox:1.36",
  );
  assertEquals(parseRef("user/app").transport === "docker" && parseRef("user/app"), {
    transport: "docker",
    domain: "docker.io",
    host: "registry-1.docker.io",
    repository: "user/app",
    tag: "latest",
  });
  const local = parseRef("localhost:5000/a/b:v2");
  assert(local.transport === "docker");
  assertEquals([local.domain, local.host, local.repository, local.tag], [
    "localhost:5000",
    "localhost:5000",
    "a/b",
    "v2",
  ]);
  const d = "sha256:" + "ab".repeat(32);
  const pinned = parseRef(`docker://127.0.0.1:5000/app@${d}`);
  assert(pinned.transport === "docker" && pinned.digest === d && pinned.tag === undefined);
  assertEquals(parseRef("oci:/tmp/lay:v1"), { transport: "oci", path: "/tmp/lay", tag: "v1" });
  assertEquals(parseRef("oci:/tmp/lay"), { transport: "oci", path: "/tmp/lay" });
  assertEquals(parseRef("oci-archive:/x.tar:t"), {
    transport: "oci-archive",
    path: "/x.tar",
    tag: "t",
  });
  assertEquals(parseRef("docker-archive:/x.tar:busybox:latest"), {
    transport: "docker-archive",
    path: "/x.tar",
    name: "busybox:latest",
  });
  assertEquals(parseRef("docker-archive:/x.tar:@1"), {
    transport: "docker-archive",
    path: "/x.tar",
    index: 1,
  });
  for (
    const bad of [
      "",
      "docker:busybox",
      "Busybox",
      "docker://host/Repo",
      "app:bad tag",
      "app@sha256:12",
      "oci:",
      "dir:/x",
      "a//b",
    ]
  ) {
    assertThrows(() => parseRef(bad), RefError);
  }
});

Deno.test("auth files: host, namespaced and Docker Hub keys", async () => {
  const j = {
    auths: {
      "reg.example:5000": { auth: btoa("host:pw") },
      "reg.example:5000/team": { auth: btoa("team:pw:with:colons") },
      "https://index.docker.io/v1/": { auth: btoa("hub:pw") },
    },
  };
  assertEquals(credentialsFromAuthJSON(j, "reg.example:5000", "other")?.username, "host");
  assertEquals(credentialsFromAuthJSON(j, "reg.example:5000", "team/app"), {
    username: "team",
    password: "pw:with:colons",
  });
  assertEquals(credentialsFromAuthJSON(j, "docker.io", "library/busybox")?.username, "hub");
  assertEquals(credentialsFromAuthJSON(j, "elsewhere", "x"), undefined);
  await using tmp = await tempDir();
  const dir = `${tmp}`;
  const file = join(dir, "auth.json");
  await Deno.writeTextFile(file, JSON.stringify(j));
  assertEquals(
    (await findCredentials("reg.example:5000", "x", { authFile: file }))?.password,
    "pw",
  );
  assertEquals(
    (await findCredentials("reg.example:5000", "x", { creds: "a:b", authFile: file }))?.username,
    "a",
  );
});

Deno.test("OCI layout: tags, layers verified and decompressed, every compression", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp}`;
  const layout = join(dir, "layout");
  const tars = [layerTar("base"), layerTar("mid"), layerTar("top")];
  const [w1, w2] = await writeOciLayout(layout, [
    {
      tag: "v1",
      images: [{
        layers: [{ tar: tars[0] }, { tar: tars[1], compression: "zstd" }, {
          tar: tars[2],
          compression: "none",
        }],
        config: { Cmd: ["/bin/sh"] },
      }],
    },
    { tag: "docker", images: [{ layers: [{ tar: tars[0] }], docker: true }] },
  ]);
  const image = await openImage(`oci:${layout}:v1`);
  assertEquals(image.digest, w1.images[0].digest);
  assertEquals(image.configDigest, w1.images[0].configDigest);
  assertEquals(image.config.config?.Cmd, ["/bin/sh"]);
  assertEquals(image.layers.map((l) => l.diffID), tars.map((t) => digestOf(t)));
  assertEquals(await readLayers(image), tars);
  assertEquals(image.layers[2].digest, image.layers[2].diffID);

  const docker = await openImage(`oci:${layout}:docker`);
  assertEquals(docker.digest, w2.images[0].digest);
  assertEquals(docker.manifest.mediaType, "application/vnd.docker.distribution.manifest.v2+json");
  assertEquals(await readLayers(docker), [tars[0]]);

  // Two images and no tag: ask for one.
  await assertRejects(() => openImage(`oci:${layout}`), ManifestError, "v1, docker");
  await assertRejects(() => openImage(`oci:${layout}:nope`), BlobNotFoundError, "v1, docker");
  await assertRejects(() => openImage(`oci:${dir}:v1`), ManifestError, "not an OCI layout");
});

Deno.test("OCI layout: a multi-platform index picks the platform, or lists what exists", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp}`;
  const layout = join(dir, "layout");
  const amd = layerTar("amd64");
  const arm = layerTar("arm64");
  const [w] = await writeOciLayout(layout, [{
    tag: "multi",
    images: [
      { layers: [{ tar: amd }], platform: "linux/amd64" },
      { layers: [{ tar: arm }], platform: "linux/arm64/v8" },
    ],
  }]);
  const a = await openImage(`oci:${layout}:multi`, { platform: "linux/amd64" });
  assertEquals(a.digest, w.images[0].digest);
  assertEquals(a.config.architecture, "amd64");
  const b = await openImage(`oci:${layout}:multi`, { platform: "linux/arm64" });
  assertEquals(b.digest, w.images[1].digest);
  assertEquals(await readLayers(b), [arm]);
  const host = await openImage(`oci:${layout}:multi`);
  assertEquals(host.config.architecture, Deno.build.arch === "aarch64" ? "arm64" : "amd64");
  const e = await assertRejects(
    () => openImage(`oci:${layout}:multi`, { platform: "linux/s390x" }),
    PlatformNotFoundError,
  );
  assertEquals(e.available, ["linux/amd64", "linux/arm64/v8"]);
  assert(e.message.includes("linux/s390x") && e.message.includes("linux/arm64/v8"));
});

Deno.test("OCI layout: tampered blobs are refused by digest", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp}`;
  const layout = join(dir, "layout");
  const tar = layerTar("x", 20);
  const [w] = await writeOciLayout(layout, [{
    tag: "t",
    images: [{ layers: [{ tar, compression: "none" }] }],
  }]);
  const image = await openImage(`oci:${layout}:t`);
  // Flip one byte of the layer blob in place.
  const blob = join(layout, "blobs", "sha256", w.images[0].layers[0].slice(7));
  const bytes = await Deno.readFile(blob);
  bytes[700] ^= 0x20;
  await Deno.writeFile(blob, bytes);
  const e = await assertRejects(
    async () => readAll(await image.layers[0].uncompressed()),
    DigestMismatchError,
  );
  assertEquals(e.expected, w.images[0].layers[0]);
  // Tampered config: opening fails.
  const cfg = join(layout, "blobs", "sha256", w.images[0].configDigest.slice(7));
  await Deno.writeTextFile(cfg, (await Deno.readTextFile(cfg)).replace("amd64", "AMD64"));
  await assertRejects(() => openImage(`oci:${layout}:t`), DigestMismatchError, "config");
  // A missing blob is named.
  await Deno.remove(cfg);
  await assertRejects(
    () => openImage(`oci:${layout}:t`),
    BlobNotFoundError,
    w.images[0].configDigest,
  );
});

Deno.test("oci-archive and skopeo's docker-archive read the same image as the layout", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp}`;
  const layout = join(dir, "layout");
  const tars = [layerTar("a"), layerTar("b", 40)];
  const [w] = await writeOciLayout(layout, [{
    tag: "v1",
    images: [{ layers: tars.map((tar) => ({ tar })), config: { Env: ["A=1"] } }],
  }]);
  const fromLayout = await openImage(`oci:${layout}:v1`);

  // oci-archive: GNU tar of the layout directory (with ./ prefixes), and skopeo's.
  const archive = join(dir, "image.tar");
  await sh("tar", ["-C", layout, "-cf", archive, "."]);
  const fromArchive = await openImage(`oci-archive:${archive}:v1`);
  assertEquals(fromArchive.digest, w.images[0].digest);
  assertEquals(await readLayers(fromArchive), tars);
  const skopeoArchive = join(dir, "skopeo-oci.tar");
  await skopeoCopy(`oci:${layout}:v1`, `oci-archive:${skopeoArchive}:v1`);
  const fromSkopeoArchive = await openImage(`oci-archive:${skopeoArchive}`);
  assertEquals(
    fromSkopeoArchive.layers.map((l) => l.diffID),
    fromLayout.layers.map((l) => l.diffID),
  );

  // docker-archive written by skopeo: uncompressed layers, Docker config.
  const dockerArchive = join(dir, "docker.tar");
  await skopeoCopy(`oci:${layout}:v1`, `docker-archive:${dockerArchive}:example.com/app:v1`);
  const fromDocker = await openImage(`docker-archive:${dockerArchive}`);
  assertEquals(fromDocker.layers.map((l) => l.diffID), fromLayout.layers.map((l) => l.diffID));
  assertEquals(fromDocker.config.config?.Env, ["A=1"]);
  assertEquals(fromDocker.config.rootfs, fromLayout.config.rootfs);
  assertEquals(await readLayers(fromDocker), tars);
  const byName = await openImage(`docker-archive:${dockerArchive}:example.com/app:v1`);
  assertEquals(byName.digest, fromDocker.digest);
  await assertRejects(
    () => openImage(`docker-archive:${dockerArchive}:other:v1`),
    BlobNotFoundError,
    "example.com/app:v1",
  );

  // The same archive gzip'd as a whole (docker save | gzip).
  await sh("sh", ["-c", `gzip -c '${dockerArchive}' > '${dockerArchive}.gz'`]);
  const gz = await openImage(`docker-archive:${dockerArchive}.gz`);
  assertEquals(gz.digest, fromDocker.digest);
  assertEquals(await readLayers(gz), tars);
});

Deno.test("docker save's layout: <id>/layer.tar, a symlinked duplicate, a gzip'd layer", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp}`;
  const tars = [layerTar("one"), layerTar("two"), layerTar("one")];
  const gz = gzip(tars[1]);
  const config = new TextEncoder().encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    config: { Cmd: ["sh"] },
    rootfs: { type: "layers", diff_ids: tars.map((t) => digestOf(t)) },
  }));
  const configName = `${digestOf(config).slice(7)}.json`;
  const w = new TarWriter()
    .directory("aaa/")
    .file("aaa/layer.tar", tars[0])
    .directory("bbb/")
    .file("bbb/layer.tar", gz)
    .directory("ccc/")
    .symlink("ccc/layer.tar", "../aaa/layer.tar")
    .file(configName, config)
    .file(
      "manifest.json",
      JSON.stringify([{
        Config: configName,
        RepoTags: ["busybox:latest", "example.com/x:1"],
        Layers: ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
      }]),
    );
  const archive = join(dir, "save.tar");
  await Deno.writeFile(archive, w.bytes());
  const image = await openImage(`docker-archive:${archive}:docker.io/library/busybox:latest`);
  assertEquals(image.configDigest, digestOf(config));
  assertEquals(image.layers.map((l) => l.mediaType), [
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
  ]);
  assertEquals(image.layers[1].digest, digestOf(gz));
  assertEquals(await readLayers(image), tars);
  assertEquals((await openImage(`docker-archive:${archive}:@0`)).digest, image.digest);
  // A config whose name is not its digest is refused.
  const bad = new TarWriter()
    .file(`${"0".repeat(64)}.json`, config)
    .file("l.tar", tars[0])
    .file(
      "manifest.json",
      JSON.stringify([{ Config: `${"0".repeat(64)}.json`, Layers: ["l.tar"] }]),
    );
  await Deno.writeFile(archive, bad.bytes());
  await assertRejects(() => openImage(`docker-archive:${archive}`), DigestMismatchError, "config");
});

Deno.test("umoci-built layouts open and verify", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp}`;
  const layout = join(dir, "umoci");
  await sh("umoci", ["init", "--layout", layout]);
  await sh("umoci", ["new", "--image", `${layout}:base`]);
  const bundle = join(dir, "bundle");
  await sh("umoci", ["unpack", "--image", `${layout}:base`, bundle]);
  await Deno.mkdir(join(bundle, "rootfs", "bin"), { recursive: true });
  await Deno.copyFile("/bin/busybox", join(bundle, "rootfs", "bin", "busybox"));
  await sh("umoci", ["repack", "--image", `${layout}:v1`, bundle]);
  await sh("umoci", ["config", "--image", `${layout}:v1`, "--config.cmd", "/bin/busybox"]);
  const image = await openImage(`oci:${layout}:v1`);
  assertEquals(image.layers.length, 1);
  assertEquals(image.config.config?.Cmd, ["/bin/busybox"]);
  const [tar] = await readLayers(image);
  assertEquals(digestOf(tar), image.layers[0].diffID);
  assert(tar.length > (await Deno.stat("/bin/busybox")).size);
});

Deno.test("image store: save, resolve, list, remove; offline open; lazy layer errors", async () => {
  await using tmp = await tempDir();
  const dir = `${tmp}`;
  const layout = join(dir, "layout");
  const cache = join(dir, "cache");
  const tar = layerTar("s");
  await writeOciLayout(layout, [{ tag: "v1", images: [{ layers: [{ tar }] }] }]);
  const image = await openImage(`oci:${layout}:v1`, { cacheRoot: cache });
  const store = await ImageStore.create(cache);
  assertEquals((await Deno.stat(join(cache, "images"))).mode! & 0o777, 0o700);
  const rec = await store.resolve(`oci:${layout}:v1`);
  assertEquals(rec?.digest, image.digest);
  await store.save(image, "myapp:v1", { source: `oci:${layout}:v1` });
  assertEquals((await store.list()).map((r) => r.name), [
    "docker.io/library/myapp:v1",
    `oci:${layout}:v1`,
  ]);
  // Offline: the name opens from the store alone; the layer comes from the source on demand.
  const again = await openImage("myapp:v1", { cacheRoot: cache, pull: "never" });
  assertEquals(again.digest, image.digest);
  assertEquals(again.layers.map((l) => l.diffID), image.layers.map((l) => l.diffID));
  assertEquals(await readLayers(again), [tar]);
  // With the source gone, only reading the layer fails, and clearly.
  await Deno.remove(layout, { recursive: true });
  const offline = await openImage("myapp:v1", { cacheRoot: cache });
  await assertRejects(
    () => offline.layers[0].uncompressed(),
    LayerNotAvailableError,
    "not available offline",
  );
  await assertRejects(
    () => openImage("other", { cacheRoot: cache, pull: "never" }),
    ImageNotFoundError,
  );
  // Remove by name keeps blobs another name uses; remove by digest removes the rest.
  assertEquals(await store.remove("myapp:v1"), ["docker.io/library/myapp:v1"]);
  assert(await Deno.stat(join(cache, "images", "blobs", "sha256", image.digest.slice(7))));
  assertEquals(await store.remove(image.digest), [`oci:${layout}:v1`]);
  await assertRejects(() =>
    Deno.stat(join(cache, "images", "blobs", "sha256", image.digest.slice(7)))
  );
  await assertRejects(() => store.remove("myapp:v1"), ImageNotFoundError);
});
