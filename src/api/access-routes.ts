// Users, API tokens and the access control list: the routes the server and every node
// serve alike (PBS's and PVE's /access paths), each host with its own users.
import { z } from "zod";
import { AuthId, Ok, route, UserName } from "./route.ts";

/** The roles of PBS and PVE that gorde knows; host/auth-roles.ts gives each its privileges. */
export const Role = z.enum([
  "Admin",
  "NoAccess",
  "DatastoreAdmin",
  "DatastorePowerUser",
  "DatastoreBackup",
  "DatastoreReader",
  "DatastoreAudit",
  "RemoteAdmin",
  "RemoteAudit",
  "RemoteSyncOperator",
  "PVEAuditor",
  "PVEVMUser",
  "PVEDatastoreUser",
]);
export type Role = z.infer<typeof Role>;

export const UserInfoSchema = z.object({
  name: z.string(),
  comment: z.string().optional(),
  /** unix seconds; absent = never */
  expire: z.number().optional(),
  enable: z.boolean(),
});

export const TokenInfoSchema = z.object({
  /** `user!name` */
  tokenId: z.string(),
  user: z.string(),
  name: z.string(),
  comment: z.string().optional(),
  /** unix seconds; absent = never */
  expire: z.number().optional(),
  enable: z.boolean(),
});

export const ACCESS_ROUTES = {
  listUsers: route({
    method: "GET",
    path: "/api/access/users",
    summary: "Users",
    access: "system",
    permission: "Permissions.Modify or Sys.Audit on /",
    response: z.array(UserInfoSchema),
  }),
  addUser: route({
    method: "POST",
    path: "/api/access/users",
    summary: "Create a user",
    access: "system",
    permission: "Permissions.Modify on /",
    body: z.strictObject({
      name: UserName,
      password: z.string().min(8).max(1024),
      comment: z.string().max(1024).optional(),
      expire: z.number().int().min(0).optional(),
    }),
    response: Ok,
  }),
  updateUser: route({
    method: "PUT",
    path: "/api/access/users/{user}",
    summary: "Change a user's password, comment, expiry or enabled state",
    access: "authenticated",
    permission: "Permissions.Modify on /, or the user itself (password only)",
    params: z.strictObject({ user: UserName }),
    body: z.strictObject({
      password: z.string().min(8).max(1024).optional(),
      comment: z.string().max(1024).optional(),
      expire: z.number().int().min(0).optional(),
      enable: z.boolean().optional(),
    }),
    response: Ok,
  }),
  removeUser: route({
    method: "DELETE",
    path: "/api/access/users/{user}",
    summary: "Remove a user, its tokens and its ACL entries",
    access: "system",
    permission: "Permissions.Modify on /",
    params: z.strictObject({ user: UserName }),
    response: Ok,
  }),
  listTokens: route({
    method: "GET",
    path: "/api/access/users/{user}/tokens",
    summary: "A user's API tokens",
    access: "authenticated",
    permission: "Permissions.Modify on /, or the user itself",
    params: z.strictObject({ user: UserName }),
    response: z.array(TokenInfoSchema),
  }),
  addToken: route({
    method: "POST",
    path: "/api/access/users/{user}/tokens/{token}",
    summary: "Create an API token; its secret is shown only in this answer",
    access: "authenticated",
    permission: "Permissions.Modify on /, or the user itself",
    params: z.strictObject({ user: UserName, token: UserName }),
    body: z.strictObject({ comment: z.string().max(1024).optional(), expire: z.number().int().min(0).optional() }),
    response: z.object({ tokenId: z.string(), secret: z.string() }),
  }),
  removeToken: route({
    method: "DELETE",
    path: "/api/access/users/{user}/tokens/{token}",
    summary: "Revoke an API token",
    access: "authenticated",
    permission: "Permissions.Modify on /, or the user itself",
    params: z.strictObject({ user: UserName, token: UserName }),
    response: Ok,
  }),
  listAcl: route({
    method: "GET",
    path: "/api/access/acl",
    summary: "Access control list",
    access: "system",
    permission: "Permissions.Modify or Sys.Audit on /",
    response: z.array(z.object({ path: z.string(), authId: z.string(), role: z.string(), propagate: z.boolean() })),
  }),
  setAcl: route({
    method: "PUT",
    path: "/api/access/acl",
    summary: "Grant a role on a path to a user or token, or remove the grant",
    access: "system",
    permission: "Permissions.Modify on /",
    body: z.strictObject({
      path: z.string().max(600),
      authId: AuthId,
      role: Role,
      propagate: z.boolean().optional(),
      remove: z.boolean().optional(),
    }),
    response: Ok,
  }),
  login: route({
    method: "POST",
    path: "/api/access/ticket",
    summary: "Log in to the web interface: a session cookie, and the CSRF token its writing requests carry",
    access: "public",
    permission: "a valid user name and password, or an API token and its secret",
    /** a user and its password, or an API token (`user!token`) and its secret */
    body: z.strictObject({ username: AuthId, password: z.string().min(1).max(1024) }),
    response: z.object({ username: z.string(), csrfToken: z.string(), expires: z.number() }),
  }),
  logout: route({
    method: "DELETE",
    path: "/api/access/ticket",
    summary: "End the web interface's session",
    access: "authenticated",
    permission: "any user",
    response: Ok,
  }),
  permissions: route({
    method: "GET",
    path: "/api/access/permissions",
    summary: "The caller's privileges on / and on each path of the ACL (and on `path`, when given)",
    access: "authenticated",
    permission: "any user or token (its own privileges)",
    query: z.strictObject({ path: z.string().max(600).regex(/^\//, "an ACL path such as /vms/100").optional() }),
    response: z.object({ authId: z.string(), paths: z.record(z.string(), z.array(z.string())) }),
  }),
} as const;
