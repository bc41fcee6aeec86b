/**
 * Installs what strata's tests and benchmarks drive, so that `deno task test`
 * passes on a fresh Debian machine: OCI runtimes (runc, crun), image tools
 * (skopeo, umoci, buildah, podman), a real registry (docker-registry,
 * htpasswd, openssl for a self-signed HTTPS one), uid mapping helpers (uidmap), busybox-static for images, zstd,
 * attr (getfattr/setfattr), libcap2-bin (setcap), debootstrap (the
 * benchmark's Debian rootfs), keyutils (keyctl, which the seccomp tests
 * run in a container), and the tar implementations the tar
 * differential test reads and writes with (pax, python3's tarfile,
 * libarchive13; bsdtar from libarchive-tools when it installs, see
 * {@linkcode OPTIONAL}). Run by `deno task test` and `deno task bench`
 * before anything else; as root it apt-get installs what is missing, as
 * anyone else it says what to run.
 *
 * @module
 */
import { SMOL_TOML } from "../image/registries_conf.ts";

/** Debian packages the tests and benchmarks use, by the command they provide. */
export const PACKAGES: Record<string, string> = {
  runc: "runc",
  crun: "crun",
  umoci: "umoci",
  skopeo: "skopeo",
  buildah: "buildah",
  podman: "podman",
  newuidmap: "uidmap",
  busybox: "busybox-static",
  zstd: "zstd",
  getfattr: "attr",
  setcap: "libcap2-bin",
  "docker-registry": "docker-registry",
  htpasswd: "apache2-utils",
  openssl: "openssl",
  debootstrap: "debootstrap",
  keyctl: "keyutils",
  unshare: "util-linux",
  setpriv: "util-linux",
  nsenter: "util-linux",
  mount: "mount",
  tar: "tar",
  gzip: "gzip",
  script: "bsdutils",
  hyperfine: "hyperfine",
  pax: "pax",
  python3: "python3",
};

/** Shared libraries the tests load through FFI, by file, with their package. */
export const LIBRARIES: Record<string, string> = {
  "/usr/lib/x86_64-linux-gnu/libarchive.so.13": "libarchive13",
};

/**
 * Packages the tests use when they are there and do without otherwise: on
 * Debian 12 `libarchive-tools` (bsdtar) may not install beside a newer
 * `libarchive13` from the security updates (the mirror lags); the tar tests
 * read through libarchive itself.
 */
export const OPTIONAL: Record<string, string> = {
  bsdtar: "libarchive-tools",
};

function onPath(cmd: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"])) {
    try {
      if (Deno.statSync(`${dir}/${cmd}`).isFile) return true;
    } catch {
      // not here
    }
  }
  return false;
}

async function apt(args: string[]): Promise<boolean> {
  const r = await new Deno.Command("apt-get", {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "null",
    stderr: "inherit",
  }).output();
  return r.success;
}

/**
 * Fetches every module the import map and the tests name (npm packages
 * included) into the Deno cache now, while it is writable: hostile-input
 * tests start Deno inside a sandbox where every mount but their own
 * directory is read-only, and a Deno started there with a cold cache fails
 * to create its npm cache directories.
 */
async function cacheDependencies(): Promise<boolean> {
  if (!(await denoInstall([]))) return false;
  // A computed `npm:` import (smol-toml, image/registries_conf.ts) needs the
  // package's npm metadata in the Deno cache. `deno install` over a
  // node_modules that Deno set up from the lockfile alone (as `deno task`
  // does on a fresh clone) leaves that metadata out, and then every process
  // that imports the package asks the registry for it again, printing
  // "Download https://registry.npmjs.org/smol-toml" and failing inside the
  // read-only sandbox. Probe for that, and install again with `--reload`
  // (which writes the metadata) when it happens.
  if (!(await downloadsOnImport())) return true;
  if (!(await denoInstall(["--reload"]))) return false;
  if (await downloadsOnImport()) {
    console.error(`strata: ${SMOL_TOML} still fetches npm metadata on import after deno install`);
    return false;
  }
  return true;
}

/** Runs `deno install --quiet ARGS` in the repository. */
async function denoInstall(args: string[]): Promise<boolean> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["install", "--quiet", ...args],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "null",
    stderr: "inherit",
  }).output();
  if (!r.success) console.error("strata: `deno install` (the import map's packages) failed");
  return r.success;
}

/** Whether importing smol-toml by its computed specifier makes Deno fetch anything. */
async function downloadsOnImport(): Promise<boolean> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `const s = ${JSON.stringify(SMOL_TOML)}; await import(s);`],
    cwd: new URL("..", import.meta.url).pathname,
    env: { NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(r.stderr);
  return !r.success || /^Download /m.test(err);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** A note that the optional packages were tried here (apt-get is not run again each test run). */
const TRIED = "/var/tmp/strata-setup-optional-tried";

/** Tries the optional packages once a day; a failure is a note, not an error. */
async function optional(): Promise<void> {
  const want = Object.entries(OPTIONAL).filter(([cmd]) => !onPath(cmd)).map(([, p]) => p);
  if (want.length === 0 || Deno.uid() !== 0) return;
  try {
    const tried = Deno.statSync(TRIED).mtime?.getTime() ?? 0;
    if (Date.now() - tried < 86400_000 && Deno.readTextFileSync(TRIED) === want.join(" ")) return;
  } catch {
    // not tried yet
  }
  Deno.writeTextFileSync(TRIED, want.join(" "));
  const r = await new Deno.Command("apt-get", {
    args: ["install", "-y", "-qq", "--no-install-recommends", ...want],
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "null",
    stderr: "null",
  }).output();
  if (!r.success) {
    console.error(
      `strata: optional packages not installed (${want.join(" ")}); the tests do without them`,
    );
  }
}

async function main(): Promise<number> {
  if (!(await cacheDependencies())) return 1;
  const missing = [
    ...new Set([
      ...Object.entries(PACKAGES).filter(([cmd]) => !onPath(cmd)).map(([, p]) => p),
      ...Object.entries(LIBRARIES).filter(([f]) => !exists(f)).map(([, p]) => p),
    ]),
  ];
  if (Deno.uid() !== 0) {
    console.error(
      "strata's tests mount file systems and create an unprivileged test user: run them as root" +
        (missing.length ? ` (after: apt-get install ${missing.join(" ")})` : ""),
    );
    return 1;
  }
  await optional();
  if (missing.length === 0) return 0;
  console.error(`strata: installing Debian packages for the tests: ${missing.join(" ")}`);
  const flags = ["install", "-y", "-qq", "--no-install-recommends", ...missing];
  if (!(await apt(flags))) {
    if (!(await apt(["update", "-qq"])) || !(await apt(flags))) {
      console.error(`strata: apt-get install ${missing.join(" ")} failed`);
      return 1;
    }
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main());
