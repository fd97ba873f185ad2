// The interface asks the host that served it what it is: a node gets the cluster view, the
// backup server its datastore view (as PVE and PBS each serve their own).
import { useEffect, useState } from "react";
import { call } from "./api.ts";
import { NodeApp } from "./NodeApp.tsx";
import { ServerApp } from "./ServerApp.tsx";
import { LoggedIn } from "./Shell.tsx";

export function App() {
  const [product, setProduct] = useState<"node" | "server" | undefined>();
  const [error, setError] = useState("");
  useEffect(() => {
    call("version").then(
      (v) => setProduct(v.product),
      (e: Error) => setError(e.message),
    );
  }, []);
  if (!product) return error ? <p className="bad">{error}</p> : <progress />;
  return <LoggedIn>{(who, logOut) => (product === "server" ? <ServerApp who={who} onLogout={logOut} /> : <NodeApp who={who} onLogout={logOut} />)}</LoggedIn>;
}
