// A container's port forwarder, started by lxc.ts inside the container's network namespace
// (`nsenter --net=/proc/<pid>/ns/net node ct-forwarder.ts <socket> <port>`). It accepts on
// a unix socket, which the host reaches because such a socket is a file, not a network
// address, and connects each connection to 127.0.0.1:<port> of the container. No packet
// leaves a loopback device. It prints "listening" once ready and exits when its stdin
// closes, so it never outlives the process that started it.
import fs from "node:fs";
import net from "node:net";

/** Pipes two sockets into each other; an error on either side ends both. */
export function join(a: net.Socket, b: net.Socket): void {
  a.on("error", () => b.destroy());
  b.on("error", () => a.destroy());
  a.pipe(b);
  b.pipe(a);
}

if (import.meta.main) {
  const [sock, portArg] = process.argv.slice(2);
  const port = Number(portArg);
  if (!sock || !Number.isInteger(port) || port < 1 || port > 65535) {
    process.stderr.write("usage: ct-forwarder.ts <unix socket> <port>\n");
    process.exit(2);
  }
  fs.rmSync(sock, { force: true });
  const server = net.createServer((conn) => join(conn, net.createConnection(port, "127.0.0.1")));
  server.on("error", (err) => {
    process.stderr.write(`cannot listen on ${sock}: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(sock, () => {
    fs.chmodSync(sock, 0o600);
    process.stdout.write("listening\n");
  });
  process.stdin.on("close", () => process.exit(0));
  process.stdin.resume();
}
