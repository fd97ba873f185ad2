/*
 * POSIX calls Node does not expose: extended attributes (which also carry POSIX
 * ACLs), mknod, nanosecond utimes on symlinks, flock and syncfs.
 *
 * Only the ABI-stable Node-API (version 8) is used, so the compiled module loads
 * in any later Node. All functions are synchronous. Paths and xattr names are
 * accepted as strings (encoded as UTF-8) or as Buffers/Uint8Arrays (raw bytes,
 * for names that are not valid UTF-8). System call failures throw an Error
 * shaped like Node's own: message "CODE: description, syscall 'path'" and the
 * properties code, errno (negative), syscall and path.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* Retries when an xattr grows between the size query and the read. */
#define XATTR_MAX_ATTEMPTS 8
/* First guess for xattr buffers: covers nearly every file in one call. */
#define XATTR_FIRST_GUESS 4096

/* Error names and descriptions as libuv (and therefore Node) spells them. */
struct errno_entry {
  int num;
  const char *code;
  const char *desc;
};

static const struct errno_entry errno_table[] = {
    {EPERM, "EPERM", "operation not permitted"},
    {ENOENT, "ENOENT", "no such file or directory"},
    {EINTR, "EINTR", "interrupted system call"},
    {EIO, "EIO", "i/o error"},
    {ENXIO, "ENXIO", "no such device or address"},
    {E2BIG, "E2BIG", "argument list too long"},
    {EBADF, "EBADF", "bad file descriptor"},
    {EAGAIN, "EAGAIN", "resource temporarily unavailable"},
    {ENOMEM, "ENOMEM", "not enough memory"},
    {EACCES, "EACCES", "permission denied"},
    {EFAULT, "EFAULT", "bad address in system call argument"},
    {EBUSY, "EBUSY", "resource busy or locked"},
    {EEXIST, "EEXIST", "file already exists"},
    {EXDEV, "EXDEV", "cross-device link not permitted"},
    {ENODEV, "ENODEV", "no such device"},
    {ENOTDIR, "ENOTDIR", "not a directory"},
    {EISDIR, "EISDIR", "illegal operation on a directory"},
    {EINVAL, "EINVAL", "invalid argument"},
    {ENFILE, "ENFILE", "file table overflow"},
    {EMFILE, "EMFILE", "too many open files"},
    {ETXTBSY, "ETXTBSY", "text file is busy"},
    {EFBIG, "EFBIG", "file too large"},
    {ENOSPC, "ENOSPC", "no space left on device"},
    {EROFS, "EROFS", "read-only file system"},
    {EMLINK, "EMLINK", "too many links"},
    {ERANGE, "ERANGE", "result too large"},
    {ENAMETOOLONG, "ENAMETOOLONG", "name too long"},
    {ENOSYS, "ENOSYS", "function not implemented"},
    {ENOTEMPTY, "ENOTEMPTY", "directory not empty"},
    {ELOOP, "ELOOP", "too many symbolic links encountered"},
    {ENODATA, "ENODATA", "no data available"},
    {EOVERFLOW, "EOVERFLOW", "value too large for defined data type"},
    {ENOTSUP, "ENOTSUP", "operation not supported"},
    {EDQUOT, "EDQUOT", "disk quota exceeded"},
    {ESTALE, "ESTALE", "stale file handle"},
};

/* A NUL-terminated copy of a path or name argument. */
struct cstr {
  char *data;
  size_t len;
};

static void cstr_free(struct cstr *s) {
  free(s->data);
  s->data = NULL;
  s->len = 0;
}

/* Throws a generic error when a Node-API call failed without a pending exception. */
static void throw_api_failure(napi_env env) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  const napi_extended_error_info *info = NULL;
  const char *msg = "internal Node-API call failed";
  if (napi_get_last_error_info(env, &info) == napi_ok && info != NULL && info->error_message != NULL)
    msg = info->error_message;
  napi_throw_error(env, NULL, msg);
}

#define CHECK(call)                 \
  do {                              \
    if ((call) != napi_ok) {        \
      throw_api_failure(env);       \
      goto fail;                    \
    }                               \
  } while (0)

static bool set_string_prop(napi_env env, napi_value obj, const char *key, const char *value,
                            size_t len) {
  napi_value v;
  return napi_create_string_utf8(env, value, len, &v) == napi_ok &&
         napi_set_named_property(env, obj, key, v) == napi_ok;
}

/* The Node-style error for errno `err` from `syscall`, with `path` when given; NULL on failure. */
static napi_value errno_error(napi_env env, int err, const char *syscall, const struct cstr *path) {
  const char *code = "UNKNOWN";
  const char *desc = strerror(err);
  for (size_t i = 0; i < sizeof errno_table / sizeof errno_table[0]; i++) {
    if (errno_table[i].num == err) {
      code = errno_table[i].code;
      desc = errno_table[i].desc;
      break;
    }
  }

  size_t cap = strlen(code) + strlen(desc) + strlen(syscall) + (path ? path->len : 0) + 16;
  char *msg = malloc(cap);
  if (msg == NULL) return NULL;
  int n = path ? snprintf(msg, cap, "%s: %s, %s '%s'", code, desc, syscall, path->data)
               : snprintf(msg, cap, "%s: %s, %s", code, desc, syscall);
  if (n < 0) n = 0;

  napi_value code_v, msg_v, error, errno_v;
  bool ok = napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v) == napi_ok &&
            napi_create_string_utf8(env, msg, (size_t)n, &msg_v) == napi_ok &&
            napi_create_error(env, code_v, msg_v, &error) == napi_ok &&
            napi_create_int32(env, -err, &errno_v) == napi_ok &&
            napi_set_named_property(env, error, "errno", errno_v) == napi_ok &&
            set_string_prop(env, error, "syscall", syscall, NAPI_AUTO_LENGTH) &&
            (path == NULL || set_string_prop(env, error, "path", path->data, path->len));
  free(msg);
  return ok ? error : NULL;
}

/* Throws the Node-style error for errno `err` from `syscall`, with `path` when given. */
static void throw_errno(napi_env env, int err, const char *syscall, const struct cstr *path) {
  napi_value error = errno_error(env, err, syscall, path);
  if (error == NULL || napi_throw(env, error) != napi_ok) throw_api_failure(env);
}

static void throw_arg_type(napi_env env, const char *name, const char *expected) {
  char msg[160];
  snprintf(msg, sizeof msg, "The \"%s\" argument must be %s", name, expected);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
}

/* Reads the callback arguments; throws unless exactly `want` were passed. */
static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    throw_api_failure(env);
    return false;
  }
  if (argc < want) {
    char msg[64];
    snprintf(msg, sizeof msg, "expected %zu arguments, got %zu", want, argc);
    napi_throw_type_error(env, "ERR_MISSING_ARGS", msg);
    return false;
  }
  return true;
}

/*
 * Copies a string (as UTF-8) or a Uint8Array (raw bytes) into a NUL-terminated
 * buffer. Embedded NUL bytes are rejected, as Node does for paths.
 */
static bool get_cstr(napi_env env, napi_value v, const char *name, struct cstr *out) {
  out->data = NULL;
  out->len = 0;
  napi_valuetype type;
  if (napi_typeof(env, v, &type) != napi_ok) goto api_fail;

  if (type == napi_string) {
    size_t len;
    if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) goto api_fail;
    out->data = malloc(len + 1);
    if (out->data == NULL) goto oom;
    if (napi_get_value_string_utf8(env, v, out->data, len + 1, &out->len) != napi_ok) goto api_fail;
  } else {
    bool is_typed = false;
    if (napi_is_typedarray(env, v, &is_typed) != napi_ok) goto api_fail;
    napi_typedarray_type ta_type = napi_int8_array;
    size_t len = 0;
    void *data = NULL;
    if (is_typed &&
        napi_get_typedarray_info(env, v, &ta_type, &len, &data, NULL, NULL) != napi_ok)
      goto api_fail;
    if (!is_typed || ta_type != napi_uint8_array) {
      throw_arg_type(env, name, "of type string or an instance of Buffer or Uint8Array");
      return false;
    }
    out->data = malloc(len + 1);
    if (out->data == NULL) goto oom;
    if (len > 0) memcpy(out->data, data, len);
    out->data[len] = '\0';
    out->len = len;
  }

  if (memchr(out->data, '\0', out->len) != NULL) {
    char msg[128];
    snprintf(msg, sizeof msg, "The argument '%s' must not contain null bytes", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
    cstr_free(out);
    return false;
  }
  return true;

oom:
  napi_throw_error(env, "ENOMEM", "out of memory");
  return false;
api_fail:
  throw_api_failure(env);
  cstr_free(out);
  return false;
}

static bool get_int32(napi_env env, napi_value v, const char *name, int32_t *out) {
  napi_valuetype type;
  if (napi_typeof(env, v, &type) != napi_ok) {
    throw_api_failure(env);
    return false;
  }
  if (type != napi_number) {
    throw_arg_type(env, name, "of type number");
    return false;
  }
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    throw_api_failure(env);
    return false;
  }
  return true;
}

/* Reads a bigint (or a safe-integer number) that must fit in int64_t. */
static bool get_int64(napi_env env, napi_value v, const char *name, int64_t *out) {
  napi_valuetype type;
  if (napi_typeof(env, v, &type) != napi_ok) {
    throw_api_failure(env);
    return false;
  }
  if (type == napi_bigint) {
    bool lossless = false;
    if (napi_get_value_bigint_int64(env, v, out, &lossless) != napi_ok) {
      throw_api_failure(env);
      return false;
    }
    if (!lossless) {
      char msg[96];
      snprintf(msg, sizeof msg, "The value of \"%s\" is out of range", name);
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
      return false;
    }
    return true;
  }
  if (type == napi_number) {
    double d;
    if (napi_get_value_double(env, v, &d) != napi_ok) {
      throw_api_failure(env);
      return false;
    }
    if (!(d >= -9007199254740991.0 && d <= 9007199254740991.0) || d != (double)(int64_t)d) {
      char msg[96];
      snprintf(msg, sizeof msg, "The value of \"%s\" must be a safe integer", name);
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
      return false;
    }
    *out = (int64_t)d;
    return true;
  }
  throw_arg_type(env, name, "of type bigint");
  return false;
}

static napi_value undefined_value(napi_env env) {
  napi_value v = NULL;
  if (napi_get_undefined(env, &v) != napi_ok) throw_api_failure(env);
  return v;
}

/* llistxattr(path) -> Buffer[]: attribute names as raw bytes; [] when xattrs are unsupported. */
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  napi_value argv[1], result = NULL;
  struct cstr path = {NULL, 0};
  char *buf = NULL;
  ssize_t n = -1;

  if (!get_args(env, info, 1, argv) || !get_cstr(env, argv[0], "path", &path)) return NULL;

  size_t cap = XATTR_FIRST_GUESS;
  for (int attempt = 0;; attempt++) {
    buf = malloc(cap);
    if (buf == NULL) {
      throw_errno(env, ENOMEM, "llistxattr", &path);
      goto fail;
    }
    n = llistxattr(path.data, buf, cap);
    if (n >= 0) break;
    int err = errno;
    free(buf);
    buf = NULL;
    if (err == ENOTSUP) {
      n = 0;
      break;
    }
    if (err != ERANGE || attempt + 1 >= XATTR_MAX_ATTEMPTS) {
      throw_errno(env, err, "llistxattr", &path);
      goto fail;
    }
    ssize_t need = llistxattr(path.data, NULL, 0);
    if (need < 0) {
      throw_errno(env, errno, "llistxattr", &path);
      goto fail;
    }
    cap = need > 0 ? (size_t)need : 1;
  }

  CHECK(napi_create_array(env, &result));
  uint32_t index = 0;
  for (ssize_t start = 0; start < n;) {
    const char *name = buf + start;
    size_t len = strnlen(name, (size_t)(n - start));
    if (len > 0) {
      napi_value item;
      CHECK(napi_create_buffer_copy(env, len, name, NULL, &item));
      CHECK(napi_set_element(env, result, index++, item));
    }
    start += (ssize_t)len + 1;
  }
  free(buf);
  cstr_free(&path);
  return result;

fail:
  free(buf);
  cstr_free(&path);
  return NULL;
}

/* lgetxattr(path, name) -> Buffer: the attribute value (ENODATA when absent). */
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[2], result = NULL;
  struct cstr path = {NULL, 0}, name = {NULL, 0};
  char *buf = NULL;
  ssize_t n = -1;

  if (!get_args(env, info, 2, argv) || !get_cstr(env, argv[0], "path", &path)) return NULL;
  if (!get_cstr(env, argv[1], "name", &name)) goto fail;

  size_t cap = XATTR_FIRST_GUESS;
  for (int attempt = 0;; attempt++) {
    buf = malloc(cap);
    if (buf == NULL) {
      throw_errno(env, ENOMEM, "lgetxattr", &path);
      goto fail;
    }
    n = lgetxattr(path.data, name.data, buf, cap);
    if (n >= 0) break;
    int err = errno;
    free(buf);
    buf = NULL;
    if (err != ERANGE || attempt + 1 >= XATTR_MAX_ATTEMPTS) {
      throw_errno(env, err, "lgetxattr", &path);
      goto fail;
    }
    ssize_t need = lgetxattr(path.data, name.data, NULL, 0);
    if (need < 0) {
      throw_errno(env, errno, "lgetxattr", &path);
      goto fail;
    }
    /* Never pass size 0 again: that would only query the size, not read the value. */
    cap = need > 0 ? (size_t)need : 1;
  }

  CHECK(napi_create_buffer_copy(env, (size_t)n, buf, NULL, &result));
  free(buf);
  cstr_free(&path);
  cstr_free(&name);
  return result;

fail:
  free(buf);
  cstr_free(&path);
  cstr_free(&name);
  return NULL;
}

/* lsetxattr(path, name, value): creates or replaces the attribute, without following symlinks. */
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[3], result = NULL;
  struct cstr path = {NULL, 0}, name = {NULL, 0};

  if (!get_args(env, info, 3, argv) || !get_cstr(env, argv[0], "path", &path)) return NULL;
  if (!get_cstr(env, argv[1], "name", &name)) goto fail;

  bool is_typed = false;
  napi_typedarray_type ta_type = napi_int8_array;
  size_t len = 0;
  void *data = NULL;
  CHECK(napi_is_typedarray(env, argv[2], &is_typed));
  if (is_typed) CHECK(napi_get_typedarray_info(env, argv[2], &ta_type, &len, &data, NULL, NULL));
  if (!is_typed || ta_type != napi_uint8_array) {
    throw_arg_type(env, "value", "an instance of Buffer or Uint8Array");
    goto fail;
  }

  if (lsetxattr(path.data, name.data, len > 0 ? data : "", len, 0) != 0) {
    throw_errno(env, errno, "lsetxattr", &path);
    goto fail;
  }
  result = undefined_value(env);

fail:
  cstr_free(&path);
  cstr_free(&name);
  return result;
}

/* mknod(path, mode, dev): mode carries the file type bits (S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK). */
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  napi_value argv[3], result = NULL;
  struct cstr path = {NULL, 0};
  int32_t mode;
  int64_t dev;

  if (!get_args(env, info, 3, argv) || !get_cstr(env, argv[0], "path", &path)) return NULL;
  if (!get_int32(env, argv[1], "mode", &mode) || !get_int64(env, argv[2], "dev", &dev)) goto fail;

  if (mknod(path.data, (mode_t)mode, (dev_t)dev) != 0) {
    throw_errno(env, errno, "mknod", &path);
    goto fail;
  }
  result = undefined_value(env);

fail:
  cstr_free(&path);
  return result;
}

/* Splits nanoseconds since the epoch into a timespec with 0 <= tv_nsec < 1e9. */
static struct timespec ns_to_timespec(int64_t ns) {
  int64_t sec = ns / 1000000000;
  int64_t rem = ns % 1000000000;
  if (rem < 0) {
    rem += 1000000000;
    sec -= 1;
  }
  struct timespec ts = {.tv_sec = (time_t)sec, .tv_nsec = (long)rem};
  return ts;
}

/* lutimes(path, atimeNs, mtimeNs): sets times to the nanosecond, on a symlink itself. */
static napi_value js_lutimes(napi_env env, napi_callback_info info) {
  napi_value argv[3], result = NULL;
  struct cstr path = {NULL, 0};
  int64_t atime_ns, mtime_ns;

  if (!get_args(env, info, 3, argv) || !get_cstr(env, argv[0], "path", &path)) return NULL;
  if (!get_int64(env, argv[1], "atime", &atime_ns) || !get_int64(env, argv[2], "mtime", &mtime_ns))
    goto fail;

  struct timespec ts[2] = {ns_to_timespec(atime_ns), ns_to_timespec(mtime_ns)};
  if (utimensat(AT_FDCWD, path.data, ts, AT_SYMLINK_NOFOLLOW) != 0) {
    throw_errno(env, errno, "lutimes", &path);
    goto fail;
  }
  result = undefined_value(env);

fail:
  cstr_free(&path);
  return result;
}

/* flock(fd, "sh"|"ex"|"un", wait) -> boolean: false only when !wait and the lock is taken. */
static napi_value js_flock(napi_env env, napi_callback_info info) {
  napi_value argv[3], result = NULL;
  int32_t fd;
  char op_buf[4];
  size_t op_len = 0;
  bool wait = false;
  napi_valuetype type;

  if (!get_args(env, info, 3, argv) || !get_int32(env, argv[0], "fd", &fd)) return NULL;
  CHECK(napi_typeof(env, argv[1], &type));
  if (type != napi_string) {
    throw_arg_type(env, "op", "one of \"sh\", \"ex\" or \"un\"");
    return NULL;
  }
  CHECK(napi_get_value_string_utf8(env, argv[1], op_buf, sizeof op_buf, &op_len));
  int op;
  if (op_len == 2 && memcmp(op_buf, "sh", 2) == 0) {
    op = LOCK_SH;
  } else if (op_len == 2 && memcmp(op_buf, "ex", 2) == 0) {
    op = LOCK_EX;
  } else if (op_len == 2 && memcmp(op_buf, "un", 2) == 0) {
    op = LOCK_UN;
  } else {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE",
                          "The argument 'op' must be one of \"sh\", \"ex\" or \"un\"");
    return NULL;
  }
  CHECK(napi_typeof(env, argv[2], &type));
  if (type != napi_boolean) {
    throw_arg_type(env, "wait", "of type boolean");
    return NULL;
  }
  CHECK(napi_get_value_bool(env, argv[2], &wait));
  if (!wait) op |= LOCK_NB;

  int rc;
  do {
    rc = flock(fd, op);
  } while (rc != 0 && errno == EINTR);
  bool acquired = true;
  if (rc != 0) {
    if (errno != EWOULDBLOCK || wait) {
      throw_errno(env, errno, "flock", NULL);
      return NULL;
    }
    acquired = false;
  }
  CHECK(napi_get_boolean(env, acquired, &result));
  return result;

fail:
  return NULL;
}

/* syncfs(fd): flushes the whole filesystem that holds fd. */
static napi_value js_syncfs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;

  if (!get_args(env, info, 1, argv) || !get_int32(env, argv[0], "fd", &fd)) return NULL;
  if (syncfs(fd) != 0) {
    throw_errno(env, errno, "syncfs", NULL);
    return NULL;
  }
  return undefined_value(env);
}

/* seekData(fd, offset, hole): lseek with SEEK_DATA (hole false) or SEEK_HOLE (hole
 * true): the next data or hole at or after offset; -1 when there is no more data
 * (ENXIO). File systems without support report all data, which is still correct. */
static napi_value js_seek_data(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  int64_t offset;
  bool hole;
  napi_value result;

  if (!get_args(env, info, 3, argv) || !get_int32(env, argv[0], "fd", &fd)) return NULL;
  if (napi_get_value_int64(env, argv[1], &offset) != napi_ok || offset < 0) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "offset must be a non-negative integer");
    return NULL;
  }
  if (napi_get_value_bool(env, argv[2], &hole) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "hole must be a boolean");
    return NULL;
  }
  off_t r = lseek(fd, (off_t)offset, hole ? SEEK_HOLE : SEEK_DATA);
  if (r < 0) {
    if (errno == ENXIO) r = -1;
    else {
      throw_errno(env, errno, "lseek", NULL);
      return NULL;
    }
  }
  if (napi_create_int64(env, (int64_t)r, &result) != napi_ok) return NULL;
  return result;
}

/*
 * scanDir(path): reads a directory and lstat()s every entry in one job on the libuv
 * thread pool. Resolves to [names, stats]: the names as one buffer of NUL-terminated
 * byte strings, and SCAN_FIELDS int64 values per name (mode, uid, gid, size, mtime ns,
 * ctime ns, ino, dev, nlink, rdev). Entries that vanish meanwhile are left out. One
 * call per directory instead of one per entry: for a tree of many small files, the
 * per-call cost of asynchronous file system calls is most of a metadata scan.
 */
#define SCAN_FIELDS 10

struct scan_work {
  napi_async_work work;
  napi_deferred deferred;
  struct cstr path;
  int err;
  const char *syscall;
  char *names;
  size_t names_len, names_cap;
  int64_t *stats;
  size_t count, cap;
};

static bool scan_grow(struct scan_work *w, size_t name_len) {
  if (w->names_len + name_len + 1 > w->names_cap) {
    size_t cap = w->names_cap ? w->names_cap * 2 : 4096;
    while (cap < w->names_len + name_len + 1) cap *= 2;
    char *p = realloc(w->names, cap);
    if (p == NULL) return false;
    w->names = p;
    w->names_cap = cap;
  }
  if (w->count == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 64;
    int64_t *p = realloc(w->stats, cap * SCAN_FIELDS * sizeof(int64_t));
    if (p == NULL) return false;
    w->stats = p;
    w->cap = cap;
  }
  return true;
}

static void scan_execute(napi_env env, void *data) {
  struct scan_work *w = data;
  (void)env;
  int dfd = open(w->path.data, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) {
    w->err = errno;
    w->syscall = "scandir";
    return;
  }
  DIR *d = fdopendir(dfd);
  if (d == NULL) {
    w->err = errno;
    w->syscall = "scandir";
    close(dfd);
    return;
  }
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (de == NULL) {
      if (errno != 0) {
        w->err = errno;
        w->syscall = "scandir";
      }
      break;
    }
    const char *n = de->d_name;
    if (n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0))) continue;
    struct stat st;
    if (fstatat(dfd, n, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      w->err = errno;
      w->syscall = "lstat";
      break;
    }
    size_t len = strlen(n);
    if (!scan_grow(w, len)) {
      w->err = ENOMEM;
      w->syscall = "scandir";
      break;
    }
    memcpy(w->names + w->names_len, n, len + 1);
    w->names_len += len + 1;
    int64_t *f = w->stats + w->count * SCAN_FIELDS;
    f[0] = (int64_t)st.st_mode;
    f[1] = (int64_t)st.st_uid;
    f[2] = (int64_t)st.st_gid;
    f[3] = (int64_t)st.st_size;
    f[4] = (int64_t)st.st_mtim.tv_sec * 1000000000LL + (int64_t)st.st_mtim.tv_nsec;
    f[5] = (int64_t)st.st_ctim.tv_sec * 1000000000LL + (int64_t)st.st_ctim.tv_nsec;
    f[6] = (int64_t)st.st_ino;
    f[7] = (int64_t)st.st_dev;
    f[8] = (int64_t)st.st_nlink;
    f[9] = (int64_t)st.st_rdev;
    w->count++;
  }
  closedir(d);
}

static void scan_complete(napi_env env, napi_status status, void *data) {
  struct scan_work *w = data;
  napi_value result = NULL;
  if (status == napi_ok && w->err == 0) {
    napi_value names, ab, stats;
    void *abdata = NULL;
    size_t bytes = w->count * SCAN_FIELDS * sizeof(int64_t);
    if (napi_create_buffer_copy(env, w->names_len, w->names_len ? w->names : "", NULL, &names) == napi_ok &&
        napi_create_arraybuffer(env, bytes, &abdata, &ab) == napi_ok &&
        napi_create_typedarray(env, napi_bigint64_array, w->count * SCAN_FIELDS, ab, 0, &stats) == napi_ok &&
        napi_create_array_with_length(env, 2, &result) == napi_ok) {
      if (bytes) memcpy(abdata, w->stats, bytes);
      if (napi_set_element(env, result, 0, names) != napi_ok || napi_set_element(env, result, 1, stats) != napi_ok)
        result = NULL;
    } else {
      result = NULL;
    }
    if (result != NULL) napi_resolve_deferred(env, w->deferred, result);
  }
  if (result == NULL) {
    napi_value error = w->err ? errno_error(env, w->err, w->syscall, &w->path) : NULL;
    if (error == NULL) {
      napi_value msg;
      napi_create_string_utf8(env, "scanDir failed", NAPI_AUTO_LENGTH, &msg);
      napi_create_error(env, NULL, msg, &error);
    }
    napi_reject_deferred(env, w->deferred, error);
  }
  napi_delete_async_work(env, w->work);
  cstr_free(&w->path);
  free(w->names);
  free(w->stats);
  free(w);
}

static napi_value js_scan_dir(napi_env env, napi_callback_info info) {
  napi_value argv[1], promise, name;
  if (!get_args(env, info, 1, argv)) return NULL;
  struct scan_work *w = calloc(1, sizeof *w);
  if (w == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  if (!get_cstr(env, argv[0], "path", &w->path)) {
    free(w);
    return NULL;
  }
  if (napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "gorde.scanDir", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, scan_execute, scan_complete, w, &w->work) != napi_ok ||
      napi_queue_async_work(env, w->work) != napi_ok) {
    cstr_free(&w->path);
    free(w);
    throw_api_failure(env);
    return NULL;
  }
  return promise;
}

/* mallocTrim(): returns free heap memory of every malloc arena to the system. Buffers
 * that move between threads leave glibc's per-thread arenas holding freed memory. */
static napi_value js_malloc_trim(napi_env env, napi_callback_info info) {
  (void)info;
  malloc_trim(0);
  return undefined_value(env);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mknod", NULL, js_mknod, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lutimes", NULL, js_lutimes, NULL, NULL, NULL, napi_enumerable, NULL},
      {"flock", NULL, js_flock, NULL, NULL, NULL, napi_enumerable, NULL},
      {"syncfs", NULL, js_syncfs, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mallocTrim", NULL, js_malloc_trim, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seekData", NULL, js_seek_data, NULL, NULL, NULL, napi_enumerable, NULL},
      {"scanDir", NULL, js_scan_dir, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) {
    throw_api_failure(env);
    return NULL;
  }
  return exports;
}

NAPI_MODULE(gorde_posix, init)
