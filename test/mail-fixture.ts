// A real SMTP server on loopback for tests: it keeps what arrives.
import type { AddressInfo } from "node:net";
import { SMTPServer } from "smtp-server";

export interface Arrived {
  /** the mail came over TLS (STARTTLS) */
  secure: boolean;
  mailFrom: string;
  rcptTo: string[];
  user: unknown;
  raw: Buffer;
}

/**
 * A local SMTP server that keeps what arrives; with `auth`, it refuses mail without that
 * login; with `tls`, it offers STARTTLS with that certificate (else plain text on loopback:
 * no certificate the client would have to trust).
 */
export async function smtpServer(
  auth?: { user: string; pass: string },
  tls?: { key: string; cert: string },
): Promise<{ port: number; mails: Arrived[]; close(): Promise<void> }> {
  const mails: Arrived[] = [];
  const server = new SMTPServer({
    logger: false,
    ...(tls ? { key: tls.key, cert: tls.cert } : {}),
    disabledCommands: [...(tls ? [] : ["STARTTLS"]), ...(auth ? [] : ["AUTH"])],
    authOptional: !auth,
    allowInsecureAuth: true,
    onAuth(a, _session, cb) {
      if (auth && a.username === auth.user && a.password === auth.pass) cb(null, { user: a.username });
      else cb(new Error("Invalid username or password"));
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => {
        const { mailFrom, rcptTo } = session.envelope;
        mails.push({ secure: session.secure, mailFrom: mailFrom ? mailFrom.address : "", rcptTo: rcptTo.map((r) => r.address), user: session.user, raw: Buffer.concat(chunks) });
        cb();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.server.address() as AddressInfo).port;
  return { port, mails, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

