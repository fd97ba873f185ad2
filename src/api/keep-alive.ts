// HTTP/2 liveness: a peer that vanished without a FIN or an RST (its link cut, its host
// powered off) is noticed by a ping it does not answer, instead of being waited on for ever.

import type http2 from "node:http2";

export interface KeepAlive {
  /** a ping is sent this often */
  everyMs: number;
  /** a ping not answered in this time closes the session */
  timeoutMs: number;
}

/** Pings the peer while the session is open and destroys the session when a ping goes unanswered. */
export function keepAlive(session: http2.Http2Session, { everyMs, timeoutMs }: KeepAlive, describe: (timeoutMs: number) => string): void {
  const timer = setInterval(() => {
    // Destroyed a moment ago, its "close" not yet emitted: ping() would throw.
    if (session.destroyed || session.closed) return clearInterval(timer);
    let answered = false;
    const lapse = setTimeout(() => {
      // A busy event loop runs this timer before it reads the socket: let it read first, so an
      // answer already received is not taken for silence.
      setImmediate(() => {
        if (!answered && !session.destroyed) session.destroy(new Error(describe(timeoutMs)));
      });
    }, timeoutMs);
    lapse.unref();
    const sent = session.ping((err) => {
      answered = true;
      if (!err) clearTimeout(lapse);
    });
    if (!sent) clearTimeout(lapse);
  }, everyMs);
  timer.unref();
  session.once("close", () => clearInterval(timer));
}
