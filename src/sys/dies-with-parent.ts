// A process that dies with the process that started it: run through util-linux's setpriv
// with a parent-death signal (prctl PR_SET_PDEATHSIG, kept across its exec). A drill's
// sandbox guest is started so: it is the node agent's own work and must not outlive it
// (LXC does the same for a container's init when its monitor, lxc-start, dies). A node's
// other guests outlive the agent (src/sys/processes.ts).
export function diesWithParent(command: string, args: readonly string[]): [string, string[]] {
  return ["setpriv", ["--pdeathsig", "KILL", command, ...args]];
}
