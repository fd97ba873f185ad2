// The server's TLS identity: a self-signed certificate made on first start and kept in
// <state>/tls/. Clients pin its SHA-256 fingerprint (as PBS clients do) instead of
// trusting a CA, so the certificate only has to be stable, not signed by anyone.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import crypto from "node:crypto";
import fsp from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { GordeError } from "../errors.ts";
import { writeFileAtomic } from "../sys/atomic-write.ts";

x509.cryptoProvider.set(crypto.webcrypto);

const VALID_YEARS = 10;
const EC_KEY = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;

export interface CertificateOptions {
  /** Subject CN; the host name by default. */
  commonName?: string;
  /** Extra subjectAltNames: IP addresses become IP entries, anything else a DNS entry. */
  altNames?: string[];
}

export interface ServerCertificate {
  key: string; // PKCS#8 PEM
  cert: string; // PEM
  fingerprint: string; // aa:bb:… (SHA-256 of the DER)
  created: boolean; // true when this call made the pair
}

/**
 * Loads `<stateDir>/tls/{cert,key}.pem`, or creates them when the certificate does not
 * exist yet. Options only matter on creation: an existing certificate is never replaced,
 * since clients have pinned it.
 */
export async function ensureCertificate(stateDir: string, opts: CertificateOptions = {}): Promise<ServerCertificate> {
  const dir = path.join(stateDir, "tls");
  const certFile = path.join(dir, "cert.pem");
  const keyFile = path.join(dir, "key.pem");

  const certPem = await readIfExists(certFile);
  if (certPem !== undefined) {
    const keyPem = await readIfExists(keyFile);
    if (keyPem === undefined) {
      throw new GordeError("not-found", `The TLS key ${keyFile} is missing although its certificate exists.`);
    }
    return { ...checkPair(certPem, certFile, keyPem, keyFile), created: false };
  }

  // No certificate: nobody can have pinned this identity yet, so a key left alone by a
  // crash between the two writes below is simply replaced.
  const made = await createSelfSigned(opts);
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  // The key first: a certificate on disk always has its key beside it.
  await writeAtomic(keyFile, made.key, 0o600);
  await writeAtomic(certFile, made.cert, 0o644);
  return { ...made, fingerprint: certificateFingerprint(made.cert), created: true };
}

/** SHA-256 of the certificate's DER as lower-case hex pairs joined by colons. */
export function certificateFingerprint(certPem: string): string {
  let cert: crypto.X509Certificate;
  try {
    cert = new crypto.X509Certificate(certPem);
  } catch (err) {
    throw new GordeError("invalid", "The certificate is not a valid PEM X.509 certificate.", { cause: err });
  }
  return colonHex(crypto.createHash("sha256").update(cert.raw).digest("hex"));
}

export { normalizeFingerprint } from "../api/connection.ts";

function colonHex(hex: string): string {
  return hex.match(/../g)!.join(":");
}

async function writeAtomic(file: string, text: string, mode: number): Promise<void> {
  try {
    await writeFileAtomic(file, text, { mode });
  } catch (err) {
    throw new GordeError("io", `Cannot write ${file}: ${(err as Error).message}.`, { cause: err });
  }
}

async function createSelfSigned(opts: CertificateOptions): Promise<{ key: string; cert: string }> {
  const keys = await crypto.webcrypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
  const { notBefore, notAfter } = validity();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: [{ CN: [commonName(opts.commonName)] }, { O: ["gorde"] }],
    notBefore,
    notAfter,
    signingAlgorithm: SIGNING,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(altNames(opts.altNames ?? [])),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { key: await exportKey(keys.privateKey), cert: cert.toString("pem") };
}

/** A cluster's certificate authority: it signs its members' certificates (etcd's peer and client TLS). */
export interface CertificateAuthority {
  key: string; // PKCS#8 PEM
  cert: string; // PEM
}

/** A new CA named `name` (the cluster's name), valid ten years. */
export async function createCertificateAuthority(name: string): Promise<CertificateAuthority> {
  const keys = await crypto.webcrypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
  const { notBefore, notAfter } = validity();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: [{ CN: [commonName(`${name} cluster CA`)] }, { O: ["gorde"] }],
    notBefore,
    notAfter,
    signingAlgorithm: SIGNING,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { key: await exportKey(keys.privateKey), cert: cert.toString("pem") };
}

/**
 * A certificate for member `name` signed by `ca`, for both ends of TLS (a member serves its
 * peers and clients and is a client of the others), valid for loopback and `addresses`.
 */
export async function issueCertificate(ca: CertificateAuthority, name: string, addresses: string[]): Promise<{ key: string; cert: string }> {
  const caCert = new x509.X509Certificate(ca.cert);
  const caKey = await crypto.webcrypto.subtle.importKey("pkcs8", x509.PemConverter.decodeFirst(ca.key), EC_KEY, false, ["sign"]);
  const keys = await crypto.webcrypto.subtle.generateKey(EC_KEY, true, ["sign", "verify"]);
  const { notBefore, notAfter } = validity();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: [{ CN: [commonName(name)] }, { O: ["gorde"] }],
    issuer: caCert.subject,
    notBefore,
    notAfter,
    signingAlgorithm: SIGNING,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(altNames(addresses)),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  return { key: await exportKey(keys.privateKey), cert: cert.toString("pem") };
}

function validity(): { notBefore: Date; notAfter: Date } {
  const notBefore = new Date(Date.now() - 60_000); // a little slack for clocks behind ours
  const notAfter = new Date(notBefore);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + VALID_YEARS);
  return { notBefore, notAfter };
}

async function exportKey(key: crypto.webcrypto.CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.webcrypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

function commonName(name: string | undefined): string {
  const cn = (name ?? os.hostname()).trim();
  if (cn === "" || cn.length > 64) {
    throw new GordeError("usage", `The certificate common name "${cn}" must be 1 to 64 characters long.`);
  }
  return cn;
}

/** A positive 128-bit serial: the top bit clear so DER does not read it as negative. */
function serialNumber(): string {
  const bytes = crypto.randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f | 0x01;
  return bytes.toString("hex");
}

function altNames(extra: string[]): x509.JsonGeneralName[] {
  const seen = new Set<string>();
  const out: x509.JsonGeneralName[] = [];
  for (const raw of ["localhost", "127.0.0.1", "::1", ...extra]) {
    const name = raw.trim();
    if (name === "") continue;
    const type = net.isIP(name) !== 0 ? "ip" : "dns";
    if (type === "dns" && !/^(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/.test(name)) {
      throw new GordeError("usage", `The certificate name "${name}" is neither an IP address nor a DNS name.`);
    }
    const keyOf = `${type}:${type === "dns" ? name.toLowerCase() : name}`;
    if (seen.has(keyOf)) continue;
    seen.add(keyOf);
    out.push({ type, value: name });
  }
  return out;
}

/** Parses both files and checks that the key belongs to the certificate. */
function checkPair(certPem: string, certFile: string, keyPem: string, keyFile: string): Omit<ServerCertificate, "created"> {
  let cert: crypto.X509Certificate;
  try {
    cert = new crypto.X509Certificate(certPem);
  } catch (err) {
    throw new GordeError("invalid", `The TLS certificate ${certFile} is not a valid PEM certificate.`, { cause: err });
  }
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(keyPem);
  } catch (err) {
    throw new GordeError("invalid", `The TLS key ${keyFile} is not a valid PEM private key.`, { cause: err });
  }
  if (!cert.checkPrivateKey(key)) {
    throw new GordeError("invalid", `The TLS key ${keyFile} does not belong to the certificate ${certFile}.`);
  }
  return { key: keyPem, cert: certPem, fingerprint: certificateFingerprint(certPem) };
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new GordeError("io", `Cannot read ${file}: ${(err as Error).message}.`, { cause: err });
  }
}

