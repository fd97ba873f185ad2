import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import https from "node:https";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import type { TLSSocket } from "node:tls";
import { after, describe, it } from "node:test";
import { GordeError } from "../errors.ts";
import { certificateFingerprint, createCertificateAuthority, ensureCertificate, issueCertificate, normalizeFingerprint } from "./tls.ts";

const dirs: string[] = [];
async function stateDir(): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "gorde-tls-"));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const dir of dirs) await fsp.rm(dir, { recursive: true, force: true });
});

const FP = /^[0-9a-f]{2}(:[0-9a-f]{2}){31}$/;

void describe("ensureCertificate", () => {
  void it("creates the pair once and reuses it", async () => {
    const dir = await stateDir();
    const first = await ensureCertificate(dir, { commonName: "backup1", altNames: ["backup.example", "10.1.2.3", "localhost"] });
    assert.equal(first.created, true);
    assert.match(first.fingerprint, FP);
    assert.match(first.key, /^-----BEGIN PRIVATE KEY-----\n/);
    assert.equal(fs.readFileSync(path.join(dir, "tls", "cert.pem"), "utf8"), first.cert);
    assert.equal(fs.readFileSync(path.join(dir, "tls", "key.pem"), "utf8"), first.key);
    assert.equal(fs.statSync(path.join(dir, "tls", "key.pem")).mode & 0o777, 0o600);
    assert.deepEqual(fs.readdirSync(path.join(dir, "tls")).sort(), ["cert.pem", "key.pem"]);

    const x = new crypto.X509Certificate(first.cert);
    assert.equal(x.subject.split("\n").find((l) => l.startsWith("CN=")), "CN=backup1");
    assert.equal(x.subjectAltName, "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, DNS:backup.example, IP Address:10.1.2.3");
    assert.equal(x.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
    assert.ok(x.checkPrivateKey(crypto.createPrivateKey(first.key)));
    assert.ok(x.verify(x.publicKey), "self-signed");
    const years = (Date.parse(x.validTo) - Date.parse(x.validFrom)) / (365.25 * 24 * 3600 * 1000);
    assert.ok(years > 9.9 && years < 10.1, `valid for ${years} years`);

    const second = await ensureCertificate(dir, { commonName: "other" });
    assert.deepEqual(second, { ...first, created: false });
  });

  void it("fingerprints the DER as Node does", async () => {
    const { cert, fingerprint } = await ensureCertificate(await stateDir());
    assert.equal(certificateFingerprint(cert), fingerprint);
    assert.equal(fingerprint, normalizeFingerprint(new crypto.X509Certificate(cert).fingerprint256));
    assert.throws(() => certificateFingerprint("not a certificate"), (e) => e instanceof GordeError && e.code === "invalid");
  });

  void it("serves HTTPS that a pinning client accepts", async () => {
    const tls = await ensureCertificate(await stateDir());
    const server = https.createServer({ key: tls.key, cert: tls.cert }, (_req, res) => res.end("hello"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const get = (pin: string) =>
        new Promise<{ body: string; peer: string }>((resolve, reject) => {
          const req = https.get({ host: "127.0.0.1", port, path: "/", agent: false, rejectUnauthorized: false }, (res) => {
            const peer = normalizeFingerprint((res.socket as TLSSocket).getPeerCertificate().fingerprint256);
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (d: string) => (body += d));
            res.on("end", () => resolve({ body, peer }));
          });
          req.on("socket", (s: TLSSocket) => {
            s.on("secureConnect", () => {
              const seen = normalizeFingerprint(s.getPeerCertificate().fingerprint256);
              if (seen !== normalizeFingerprint(pin)) req.destroy(new Error(`fingerprint mismatch: ${seen}`));
            });
          });
          req.on("error", reject);
        });
      const ok = await get(tls.fingerprint.toUpperCase());
      assert.deepEqual(ok, { body: "hello", peer: tls.fingerprint });
      await assert.rejects(get("00".repeat(32)), /fingerprint mismatch/);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  void it("names the file when the pair is broken", async () => {
    const dir = await stateDir();
    const made = await ensureCertificate(dir);
    const certFile = path.join(dir, "tls", "cert.pem");
    const keyFile = path.join(dir, "tls", "key.pem");

    fs.writeFileSync(keyFile, "garbage\n");
    await assert.rejects(ensureCertificate(dir), (e) => e instanceof GordeError && e.code === "invalid" && e.message.includes(keyFile));

    const other = await ensureCertificate(await stateDir());
    fs.writeFileSync(keyFile, other.key);
    await assert.rejects(ensureCertificate(dir), (e) => e instanceof GordeError && /does not belong/.test(e.message));

    fs.writeFileSync(keyFile, made.key);
    fs.writeFileSync(certFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    await assert.rejects(ensureCertificate(dir), (e) => e instanceof GordeError && e.code === "invalid" && e.message.includes(certFile));

    fs.writeFileSync(certFile, made.cert);
    fs.rmSync(keyFile);
    await assert.rejects(ensureCertificate(dir), (e) => e instanceof GordeError && e.code === "not-found" && e.message.includes(keyFile));
  });

  void it("replaces a key left without its certificate", async () => {
    const dir = await stateDir();
    fs.mkdirSync(path.join(dir, "tls"));
    fs.writeFileSync(path.join(dir, "tls", "key.pem"), "half-finished\n");
    const made = await ensureCertificate(dir);
    assert.equal(made.created, true);
    assert.equal(fs.readFileSync(path.join(dir, "tls", "key.pem"), "utf8"), made.key);
  });

  void it("refuses a name that is neither IP nor DNS", async () => {
    await assert.rejects(ensureCertificate(await stateDir(), { altNames: ["bad name/x"] }), (e) => e instanceof GordeError && e.code === "usage");
  });
});

void describe("normalizeFingerprint", () => {
  const canon = Array.from({ length: 32 }, (_, i) => (i * 7 + 10).toString(16).padStart(2, "0")).join(":");

  void it("accepts case and colon variants", () => {
    assert.equal(normalizeFingerprint(canon), canon);
    assert.equal(normalizeFingerprint(canon.toUpperCase()), canon);
    assert.equal(normalizeFingerprint(canon.replaceAll(":", "")), canon);
    assert.equal(normalizeFingerprint(` ${canon.replaceAll(":", "").toUpperCase()}\n`), canon);
  });

  void it("rejects anything that is not 32 bytes of hex", () => {
    const bad = [
      "",
      canon.slice(3), // 31 bytes
      `${canon}:00`, // 33 bytes
      canon.replace(/^../, "zz"),
      canon.replaceAll(":", "").slice(1) + ":", // misplaced colon
      canon.replaceAll(":", "-"),
      `sha256:${canon}`,
    ];
    for (const fp of bad) {
      assert.throws(
        () => normalizeFingerprint(fp),
        (e) => e instanceof GordeError && e.code === "usage" && /SHA-256 fingerprint/.test(e.message),
        JSON.stringify(fp),
      );
    }
  });
});

void describe("a cluster's certificate authority", () => {
  void it("signs member certificates for both ends of TLS that verify against it and not against another", async () => {
    const ca = await createCertificateAuthority("lab");
    const caCert = new crypto.X509Certificate(ca.cert);
    assert.ok(caCert.ca, "the CA's certificate is a CA");
    const member = await issueCertificate(ca, "node1", ["10.0.0.1"]);
    const cert = new crypto.X509Certificate(member.cert);
    assert.equal(cert.ca, false);
    assert.ok(cert.verify(caCert.publicKey), "signed by the cluster's CA");
    assert.ok(cert.checkIssued(caCert));
    assert.ok(cert.checkPrivateKey(crypto.createPrivateKey(member.key)));
    assert.match(cert.subjectAltName ?? "", /IP Address:10\.0\.0\.1/);
    assert.match(cert.subjectAltName ?? "", /IP Address:127\.0\.0\.1/);
    assert.deepEqual(cert.keyUsage?.sort(), ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
    const other = new crypto.X509Certificate((await createCertificateAuthority("other")).cert);
    assert.equal(cert.verify(other.publicKey), false);
  });
});
