// The cluster's routes: every node serves them, and the backup server those a witness
// needs (join, admit, status). Creating and joining change the host: Sys.Modify on /.
import { z } from "zod";
import { route } from "./route.ts";

/** A node's name, or "witness" for the member on the backup host. */
export const MemberName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/, "a host name");
export const ClusterName = z.string().regex(/^[A-Za-z][A-Za-z0-9-]{0,31}$/, "a letter, then letters, digits or '-', at most 32");
const Port = z.number().int().min(1).max(65535);
/** Where this host's etcd member listens: its address and two ports (etcd's 2380 for peers and 2379 for clients by default). */
const Listen = {
  address: z.union([z.ipv4(), z.ipv6()]),
  peerPort: Port.optional(),
  clientPort: Port.optional(),
};

export const ClusterStatusSchema = z.object({
  /** this host's cluster, null when it is in none */
  cluster: z.string().nullable(),
  /** whether this host's side of the cluster holds a majority of its members */
  quorate: z.boolean(),
  nodes: z.array(z.object({ name: z.string(), online: z.boolean(), guests: z.array(z.number()) })),
  witness: z.object({ online: z.boolean() }),
});
export type ClusterStatus = z.infer<typeof ClusterStatusSchema>;

/** What a member gives a host it admits: the cluster's CA, the new member's TLS pair, whom to start with. */
export const JoinBundleSchema = z.strictObject({
  cluster: ClusterName,
  ca: z.strictObject({ cert: z.string().max(16384), key: z.string().max(16384) }),
  cert: z.string().max(16384),
  key: z.string().max(16384),
  /** every member's name and peer URL, the new one's included */
  initialCluster: z.record(MemberName, z.string().url()),
  /** the client URLs of the members before this one */
  clientUrls: z.array(z.string().url()).min(1).max(16),
});
export type JoinBundle = z.infer<typeof JoinBundleSchema>;

/** What a host is told to join a cluster with: the cluster's name, a member node and its administrator's credentials, where to listen. */
const JoinClusterSchema = z.strictObject({
  /** the cluster's name, as its member must confirm */
  cluster: ClusterName,
  member: z.strictObject({
    /** https://<user>[!<token>]@<host>[:<port>] of a node of the cluster */
    url: z.string().startsWith("https://").max(1024),
    fingerprint: z.string().min(1).max(200),
    secret: z.string().min(1).max(1024),
  }),
  ...Listen,
});
export type JoinClusterBody = z.infer<typeof JoinClusterSchema>;

export const CLUSTER_ROUTES = {
  clusterStatus: route({
    method: "GET",
    path: "/api/cluster",
    summary: "The cluster this host is in: quorum, nodes online with their guests, the witness",
    access: "authenticated",
    permission: "Sys.Audit on /",
    response: ClusterStatusSchema,
  }),
  joinCluster: route({
    method: "POST",
    path: "/api/cluster/join",
    summary: "Joins this host to the cluster of a member (a node), given that member's address and an administrator's credentials there",
    access: "system",
    permission: "Sys.Modify on /",
    body: JoinClusterSchema,
    response: ClusterStatusSchema,
  }),
  admitMember: route({
    method: "POST",
    path: "/api/cluster/members",
    summary: "Adds a member to this host's cluster and answers what it needs to start (the cluster's CA included)",
    access: "system",
    permission: "Sys.Modify on /",
    body: z.strictObject({ name: MemberName, peerUrl: z.string().url().startsWith("https://"), role: z.enum(["node", "witness"]) }),
    response: JoinBundleSchema,
  }),
} as const;

/** The route only a node serves: a cluster is created on its first node. */
export const CREATE_CLUSTER_ROUTE = route({
  method: "POST",
  path: "/api/cluster",
  summary: "Creates a cluster with this node as its first member",
  access: "system",
  permission: "Sys.Modify on /",
  body: z.strictObject({ name: ClusterName, ...Listen }),
  response: ClusterStatusSchema,
});
