/**
 * A registry reached over verified TLS whose token realm is plain HTTP: the
 * login is never sent there (it would cross the network in clear text); the
 * pull fails with one line that says why and what allows it.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "@std/path";
import { denoPath, repoRoot, run, sh, tempDir } from "./_helpers.ts";

Deno.test("registry over TLS: a plain-HTTP token realm never gets the login", async () => {
  await using tmp = await tempDir();
  const dir = String(tmp);
  // A private CA and a server certificate it signed (rustls refuses a CA
  // certificate as the server's own).
  const [caKey, ca, key, csr, cert, ext] = ["ca.key", "ca.pem", "key.pem", "csr", "cert.pem", "ext"]
    .map((f) => join(dir, f));
  await Deno.writeTextFile(ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n");
  // deno-fmt-ignore
  for (const args of [
    ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", caKey, "-out", ca, "-days", "2", "-subj", "/CN=strata test CA"],
    ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
    ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", caKey, "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext],
  ]) await sh("openssl", args);
  const logins: (string | null)[] = [];
  await using tokens = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    logins.push(req.headers.get("authorization"));
    return Response.json({ token: "t" });
  });
  const realm = `http://127.0.0.1:${tokens.addr.port}/token`;
  await using registry = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(cert),
    key: await Deno.readTextFile(key),
    onListen() {},
  }, () =>
    new Response("{}", {
      status: 401,
      headers: { "www-authenticate": `Bearer realm="${realm}",service="s"` },
    }));
  const ref = `127.0.0.1:${registry.addr.port}/app:v1`;
  const pull = (...flags: string[]) =>
    run(denoPath, [
      "run",
      "-A",
      `--cert=${ca}`, // trusts the registry's CA: TLS is verified
      join(repoRoot, "cli.ts"),
      "pull",
      "--cache",
      join(dir, "cache"),
      "--creds",
      "alice:s3cret",
      ...flags,
      ref,
    ]);

  const r = await pull();
  assertEquals(r.code, 1, r.stderr);
  const lines = r.stderr.trim().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  assertStringIncludes(lines[0], "plain HTTP");
  assertStringIncludes(lines[0], "--tls-verify=false");
  assertEquals(logins, [], "nothing was sent to the plain-HTTP realm");

  // Told TLS is optional, the login goes (the registry then refuses the token).
  const allowed = await pull("--tls-verify=false");
  assertEquals(allowed.code, 1);
  assert(logins.length > 0 && logins.every((l) => l?.startsWith("Basic ")), String(logins));
});
