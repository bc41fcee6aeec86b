/**
 * The table of strata's commands and options: what `strata --help` and
 * `strata CMD --help` print and what the parser accepts. One table, so the
 * help can never disagree with the parser.
 *
 * @module
 */
import type { CommandSpec, OptionSpec } from "./args.ts";
import { optionTable } from "./args.ts";

/** Options every command accepts, before or after the command name. */
export const GLOBAL_OPTIONS: readonly OptionSpec[] = [
  {
    name: "cache",
    type: "string",
    value: "DIR",
    help: "default $STRATA_CACHE, /var/lib/strata (root), ~/.cache/strata",
  },
  { name: "quiet", short: "q", type: "boolean", help: "no progress and no notes on stderr" },
  { name: "debug", type: "boolean", help: "on failure, print the stack and every cause" },
  {
    name: "platform",
    type: "string",
    value: "OS/ARCH[/VARIANT]",
    help: "platform to pick from an index (default: linux/<host arch>)",
  },
  {
    name: "tls-verify",
    type: "boolean",
    help: "=false: allow plain HTTP and unverified TLS (default: registries.conf's insecure)",
  },
  {
    name: "registries-conf",
    type: "string",
    value: "FILE",
    help: "containers-registries.conf(5) (default $CONTAINERS_REGISTRIES_CONF, else podman's)",
  },
  {
    name: "creds",
    type: "string",
    value: "USER:PASS",
    help: "registry credentials (default: the containers/docker auth files)",
  },
  { name: "help", short: "h", type: "boolean", help: "show help" },
];

/** Options only the top level takes. */
export const TOP_OPTIONS: readonly OptionSpec[] = [
  { name: "version", short: "V", type: "boolean", help: "print the version" },
];

/**
 * For the commands that bring layers into the cache: a cached layer whose
 * owners this process's uid/gid mapping would show wrong is extracted again
 * under it (into a copy of its own) instead of being refused.
 */
const REEXTRACT_OPTION: OptionSpec = {
  name: "reextract-unmapped",
  type: "boolean",
  help: "extract again, for this uid/gid mapping, cached layers whose owners it would show wrong",
};

const IMAGE_REFS = `IMAGE is one of:
  oci:DIR[:TAG]                    an OCI image layout directory
  oci-archive:FILE[:TAG]           a tarred OCI layout
  docker-archive:FILE[:NAME:TAG]   a \`docker save\` archive
  docker://HOST[:PORT]/REPO[:TAG|@DIGEST], or HOST/REPO:TAG   a registry
  NAME[:TAG]                       a short name (busybox): registries.conf's aliases and
                                   unqualified-search-registries, else Docker Hub
  sha256:DIGEST                    an image already pulled (names work offline too)`;

/** Every command. */
export const COMMANDS: readonly CommandSpec[] = [
  {
    name: "supported",
    usage: "",
    summary:
      "Tell whether the cache directory supports the overlay store (exit 0) or not (exit 1).",
    description: "With --why, print the mode (root or user namespace, mapped ids), the mount\n" +
      "backend in use, and the reason.",
    positionals: [],
    options: [{ name: "why", type: "boolean", help: "print the mode, mount backend and reason" }],
  },
  {
    name: "pull",
    usage: "IMAGE",
    summary: "Fetch and extract every layer of IMAGE into the cache; print the image digest.",
    description: IMAGE_REFS +
      "\n\nThe image is saved under the name given (a short name under the full name it " +
      "resolved to), so `strata run NAME` works offline.",
    positionals: ["IMAGE"],
    options: [REEXTRACT_OPTION],
  },
  {
    name: "run",
    usage: "IMAGE [--] [CMD [ARG...]]",
    summary: "Run a container from IMAGE; its stdout, stderr and exit status are the container's.",
    description:
      `Options may come before or after IMAGE. After IMAGE, the first argument that is not
an option starts the container's command, and everything after it is passed to
the container verbatim (\`strata run IMG ls -l\` runs \`ls -l\`). \`--\` ends
options: \`strata run IMG -- -x\` starts the command at \`-x\`. CMD replaces the
image's Cmd; its Entrypoint is kept. IMAGE is pulled first when not cached.

Confinement: every container gets strata's default seccomp profile (an
allowlist, as docker's: new namespaces, mounts, keyrings, modules, kexec,
io_uring, ... fail with EPERM), podman's default capabilities and
no-new-privileges. --cap-add opens the calls the profile gates on that
capability (SYS_ADMIN: mount, unshare; SYS_PTRACE: kcmp, ...).

Exit status: the container's; 125 when strata fails before or around it; 127
when the command is not found in the container, 126 when it cannot be executed.

${IMAGE_REFS}`,
    positionals: ["IMAGE"],
    argv: true,
    options: [
      {
        name: "runtime",
        type: "string",
        value: "R",
        help: "OCI runtime: runc, crun or a path (default: the first that works)",
      },
      {
        name: "user",
        short: "u",
        type: "string",
        value: "U[:G]",
        help: "user and group: name or id, resolved in the image",
      },
      { name: "workdir", short: "w", type: "string", value: "DIR", help: "working directory" },
      {
        name: "entrypoint",
        type: "string",
        value: "CMD",
        help: 'replace the image\'s Entrypoint (and drop its Cmd); "" clears it',
      },
      {
        name: "env",
        short: "e",
        type: "list",
        value: "K=V",
        help: "set a variable (repeatable; a bare K passes strata's own)",
      },
      {
        name: "volume",
        short: "v",
        type: "list",
        value: "SRC:DST[:ro]",
        help: "bind-mount host path SRC at DST (repeatable; ro: read-only)",
      },
      {
        name: "network",
        type: "string",
        value: "none|host",
        choices: ["none", "host"],
        help: "none (default: own namespace, loopback only) or host",
      },
      {
        name: "read-only",
        type: "boolean",
        help: "mount the container's root filesystem read-only",
      },
      {
        name: "memory",
        short: "m",
        type: "string",
        value: "SIZE",
        help: "memory limit (512m, 1g, 256Mi)",
      },
      {
        name: "cpus",
        type: "string",
        value: "N",
        help: "CPU limit: CPUs (0.5, 2) or millicpu (500m)",
      },
      { name: "pids-limit", type: "string", value: "N", help: "limit on the number of tasks" },
      {
        name: "tty",
        short: "t",
        type: "boolean",
        help: "a terminal for the container (stdin must be one; TERM=xterm if unset)",
      },
      {
        name: "interactive",
        short: "i",
        type: "boolean",
        help: "keep stdin open: always the case (accepted for docker's -it)",
      },
      REEXTRACT_OPTION,
      {
        name: "security-opt",
        type: "list",
        value: "OPT",
        help: "seccomp=unconfined, seccomp=FILE.json, no-new-privileges[=true|false] (repeatable)",
      },
      {
        name: "cap-add",
        type: "list",
        value: "CAP",
        help: "add a capability: NET_RAW, CAP_SYS_ADMIN, ALL (repeatable)",
      },
      {
        name: "cap-drop",
        type: "list",
        value: "CAP",
        help: "drop a capability, or ALL (repeatable)",
      },
      {
        name: "privileged",
        type: "boolean",
        help: "every capability, no seccomp filter, the host's devices, no masked paths",
      },
    ],
  },
  {
    name: "export",
    usage: "IMAGE DIR",
    summary:
      "Write IMAGE's flattened filesystem to DIR, read from an overlay of the cached layers.",
    description:
      "Owners, modes, times, xattrs (not overlay's own), hard links, symlinks, devices\nand fifos are kept. DIR must be missing or empty. IMAGE is pulled first when not cached.",
    positionals: ["IMAGE", "DIR"],
    options: [REEXTRACT_OPTION],
  },
  {
    name: "ls",
    usage: "",
    summary: "List cached images (name, digest, layers, size) and the cache's disk use.",
    positionals: [],
    options: [{ name: "json", type: "boolean", help: "print JSON (see the README for its shape)" }],
  },
  {
    name: "rm",
    usage: "IMAGE",
    summary: "Forget a cached image (its layers stay until `strata prune`).",
    positionals: ["IMAGE"],
    options: [],
  },
  {
    name: "prune",
    usage: "",
    summary: "Remove layers no image references and every leftover (temp dirs, stale containers).",
    description: "Never removes a layer that a running container uses.",
    positionals: [],
    options: [],
  },
  {
    name: "verify",
    usage: "",
    summary: "Re-check every cached layer against the record made when it was extracted.",
    description:
      "Exit 1 naming damaged layers; they are removed so the next pull extracts them again.",
    positionals: [],
    options: [],
  },
  {
    name: "demo",
    usage: "",
    summary: "Build a busybox image (no network), pull it, run it cold and warm, clean up.",
    description:
      "Uses a temporary cache unless --cache is given (then the image stays cached there).",
    positionals: [],
    options: [
      {
        name: "busybox",
        type: "string",
        value: "PATH",
        help: "static busybox to build the image from (default /bin/busybox)",
      },
    ],
  },
];

/**
 * The top-level help text.
 *
 * @example Usage
 * ```ts
 * import { topHelp } from "./spec.ts";
 * console.log(topHelp("0.1.0"));
 * ```
 */
export function topHelp(version: string): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 4;
  return [
    `strata ${version}: a daemonless OCI container store (overlay layers, runc bundles)`,
    "",
    "usage: strata [global options] COMMAND [options] [args]",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    `  ${"help".padEnd(width)}help [COMMAND]: show help for a command`,
    "",
    "global options (before or after the command):",
    ...optionTable([...GLOBAL_OPTIONS, ...TOP_OPTIONS]),
    "",
    "Progress and notes go to stderr, results to stdout. Exit status: 0 ok, 1 failure,",
    "2 usage error; `run` returns the container's status, 125 when strata fails,",
    "126/127 when its command cannot be run.",
    "Run `strata COMMAND --help` for a command's options.",
  ].join("\n") + "\n";
}
