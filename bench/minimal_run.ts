/**
 * A minimal Deno program for a warm run, to measure beside strata's CLI and
 * `runc run` alone: start, make a private mount namespace, mount a
 * tmpfs and an overlay of cached layers (one `mount(2)` each), write a
 * prepared `config.json`, run runc, unmount. No argument parsing, no image
 * to open or verify, no locks, no spec to build, `Deno.Command` for runc:
 * roughly, what strata's CLI takes above this is strata's own work, and what
 * this takes above `runc run` alone is the price of a Deno process.
 *
 * `deno run --allow-all bench/minimal_run.ts DIR RUNC STATE_DIR CONFIG LOWER...`
 * (as root; LOWER bottom first; CONFIG's `root.path` is replaced).
 *
 * @module
 */
const [dir, runc, stateDir, configPath, ...lowers] = Deno.args;
const lib = Deno.dlopen("libc.so.6", {
  unshare: { parameters: ["i32"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
});
const c = (s: string) => new TextEncoder().encode(s + "\0");
const CLONE_NEWNS = 0x20000;
const MS_REC = 0x4000;
const MS_PRIVATE = 0x40000;
const check = (r: number, what: string) => {
  if (r !== 0) throw new Error(`${what} failed`);
};
check(lib.symbols.unshare(CLONE_NEWNS), "unshare");
check(lib.symbols.mount(c("none"), c("/"), null, BigInt(MS_REC | MS_PRIVATE), null), "mount /");
Deno.mkdirSync(dir);
check(lib.symbols.mount(c("tmpfs"), c(dir), c("tmpfs"), 0n, c("mode=700")), "mount tmpfs");
for (const d of ["upper", "work", "rootfs"]) Deno.mkdirSync(`${dir}/${d}`);
const data = `lowerdir=${[...lowers].reverse().join(":")},upperdir=${dir}/upper,` +
  `workdir=${dir}/work,userxattr`;
check(lib.symbols.mount(c("overlay"), c(`${dir}/rootfs`), c("overlay"), 0n, c(data)), "overlay");
const config = JSON.parse(Deno.readTextFileSync(configPath));
config.root.path = `${dir}/rootfs`;
Deno.writeTextFileSync(`${dir}/config.json`, JSON.stringify(config));
const id = `minimal-${Deno.pid}`;
const status = await new Deno.Command(runc, {
  args: ["--root", stateDir, "run", "--bundle", dir, id],
}).spawn().status;
lib.symbols.umount2(c(`${dir}/rootfs`), 0);
lib.symbols.umount2(c(dir), 0);
Deno.removeSync(dir);
Deno.exit(status.code);
