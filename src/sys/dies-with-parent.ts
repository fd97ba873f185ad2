// A guest process that dies with the process that started it: run through util-linux's
// setpriv with a parent-death signal (prctl PR_SET_PDEATHSIG, kept across its exec), so a
// node agent killed outright (SIGKILL, a crash) leaves no guest running that nobody fences.
// LXC does the same for a container's init when its monitor (lxc-start) dies.
export function diesWithParent(command: string, args: readonly string[]): [string, string[]] {
  return ["setpriv", ["--pdeathsig", "KILL", command, ...args]];
}
