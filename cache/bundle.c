/*
 * Tar bundles: an object fetched as one blob (the archive) whose regular files become the
 * model's files. The download is an ordinary one (engine, resume, checksums, reuse), recorded
 * in `bundles` instead of `files`; when the pull publishes, this file gives the version the
 * bundle's files, and from then on they are blobs like any others.
 *
 * The archive is read with libarchive's tar reader and the gzip and zstd filters only, never
 * archive_read_support_*_all(): every other format and filter is attack surface a model cache
 * does not need. A filter libarchive could only run as an external program is refused (no
 * fork/exec in an init container). Nothing is ever extracted by libarchive (no
 * archive_write_disk): each entry's bytes are streamed by this file into a temp file under
 * tmp/, hashed on the way with the cache's file digest, and published as a blob. So no path
 * from the archive is ever opened, no owner, mode, setuid bit, ACL, xattr or time is restored,
 * and entries reach consumers only through the usual atomic publish (rows of a 'pulling'
 * version, then the tree, then the models/NAME swap).
 *
 * Every entry is checked before a byte of it is written, and any refusal fails the whole pull
 * (MC_E_ORIGIN: what the archive holds is the origin's input, like a listing's keys): a path
 * that mc_relpath_is_valid() refuses (absolute, "..", ".", empty component) once leading "./"
 * is stripped, one deeper than the limit, a symbolic link, a hard link to anything but an
 * earlier file of the same archive, a device, FIFO or socket, a path given twice or both a file
 * and a directory, more entries than the limit, and more bytes than the limits (absolute, and
 * relative to the archive's size, which catches a decompression bomb early). Directories are
 * implied by the files' paths; entries the include/exclude patterns leave out are skipped.
 *
 * A re-pull of a bundle already unpacked (the same blob, the same patterns, into a version that
 * completed) copies that version's rows instead of unpacking again, as long as their blobs are
 * intact.
 */
#include "cache_int.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "mc_banned.h"

#define DEFAULT_MAX_ENTRIES 100000
#define DEFAULT_MAX_BYTES   (4ull << 40)
#define DEFAULT_MAX_RATIO   100
#define DEFAULT_RATIO_SLACK (1ull << 30)
#define DEFAULT_MAX_DEPTH   32
/* mc_relpath_is_valid()'s bound on a whole path. */
#define PATH_MAX_BYTES 4096

static const char *const extensions[] = {".tar", ".tar.gz", ".tgz", ".tar.zst"};

size_t mc_bundle_ext_len(const char *path)
{
	size_t n = strlen(path), len;

	for (size_t i = 0; i < sizeof(extensions) / sizeof(extensions[0]); i++) {
		len = strlen(extensions[i]);
		if (n > len && !strcmp(path + n - len, extensions[i]))
			return len;
	}
	return 0;
}

bool mc_bundle_uri_is_bundle(const char *uri)
{
	char path[2048];
	size_t n = strcspn(uri, "?#");

	if (n >= sizeof(path))
		return false;
	memcpy(path, uri, n);
	path[n] = '\0';
	return mc_bundle_ext_len(path) > 0;
}

/* One limit: @v when set, else the variable @env when set and not empty, else @def. */
static int limit_resolve(uint64_t v, const char *env, bool size, uint64_t max, uint64_t def,
			 uint64_t *out, struct mc_err *err)
{
	const char *s = getenv(env);
	int ret = 0;

	*out = v ? v : def;
	if (v || !s || !*s)
		return 0;
	ret = size ? mc_parse_size(s, out) : mc_parse_uint(s, 1, max, out);
	if (!ret && *out == 0)
		ret = MC_E_USAGE;
	if (ret)
		ret = mc_err_set(err, MC_E_USAGE, "invalid %s '%.40s': expected %s", env, s,
				 size ? "a size such as 100G" : "a positive number");
	return ret;
}

int mc_bundle_limits_resolve(const struct mc_bundle_limits *in, struct mc_bundle_limits *out,
			     struct mc_err *err)
{
	int ret;

	memset(out, 0, sizeof(*out));
	ret = limit_resolve(in->max_entries, "MCACHE_BUNDLE_MAX_ENTRIES", false, UINT64_MAX,
			    DEFAULT_MAX_ENTRIES, &out->max_entries, err);
	if (!ret)
		ret = limit_resolve(in->max_bytes, "MCACHE_BUNDLE_MAX_BYTES", true, 0,
				    DEFAULT_MAX_BYTES, &out->max_bytes, err);
	if (!ret)
		ret = limit_resolve(in->max_ratio, "MCACHE_BUNDLE_MAX_RATIO", false, 1000000,
				    DEFAULT_MAX_RATIO, &out->max_ratio, err);
	if (!ret)
		ret = limit_resolve(in->max_depth, "MCACHE_BUNDLE_MAX_DEPTH", false, PATH_MAX_BYTES,
				    DEFAULT_MAX_DEPTH, &out->max_depth, err);
	out->ratio_slack = in->ratio_slack ? in->ratio_slack : DEFAULT_RATIO_SLACK;
	return ret;
}

/* Zero fields (a pull begun without mc_bundle_limits_resolve(), as in tests): the defaults. */
static void limits_fill(struct mc_bundle_limits *l)
{
	if (!l->max_entries)
		l->max_entries = DEFAULT_MAX_ENTRIES;
	if (!l->max_bytes)
		l->max_bytes = DEFAULT_MAX_BYTES;
	if (!l->max_ratio)
		l->max_ratio = DEFAULT_MAX_RATIO;
	if (!l->ratio_slack)
		l->ratio_slack = DEFAULT_RATIO_SLACK;
	if (!l->max_depth)
		l->max_depth = DEFAULT_MAX_DEPTH;
}

/*
 * The entry selection as one string, "+GLOB\n" per include then "-GLOB\n" per exclude: an
 * earlier unpack is reused only when it was made with the same one. Returns NULL when out of
 * memory; "" (allocated) without patterns.
 */
static char *filter_string(const struct mc_pull *p)
{
	size_t len = 1, off = 0;
	char *s;

	for (size_t i = 0; i < p->ninclude; i++)
		len += strlen(p->include[i]) + 2;
	for (size_t i = 0; i < p->nexclude; i++)
		len += strlen(p->exclude[i]) + 2;
	s = mc_malloc(len);
	if (!s)
		return NULL;
	s[0] = '\0';
	for (size_t i = 0; i < p->ninclude; i++)
		off += (size_t)snprintf(s + off, len - off, "+%s\n", p->include[i]);
	for (size_t i = 0; i < p->nexclude; i++)
		off += (size_t)snprintf(s + off, len - off, "-%s\n", p->exclude[i]);
	return s;
}

int mc_bundle_record(struct mc_pull *p, struct mc_pull_file *pf, const char *hex,
		     struct mc_err *err)
{
	const struct mc_remote_info *r = &pf->f.remote;
	sqlite3_stmt *s = NULL;
	char *filter = filter_string(p);
	int ret;

	if (!filter)
		return mc_err_set(err, -ENOMEM, "out of memory");
	ret = mc_index_stmt(p->c, MC_STMT_BUNDLE_INSERT, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, p->version);
	sqlite3_bind_text(s, 2, pf->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)r->size);
	sqlite3_bind_text(s, 4, r->etag, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, r->last_modified, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 6, hex, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 7, pf->sha256, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 8, filter, -1, SQLITE_STATIC);
	ret = mc_index_exec(p->c, s, "record a bundle", err);
	if (ret)
		goto out;
	snprintf(pf->bundle_hex, sizeof(pf->bundle_hex), "%s", hex);
	pf->recorded = true;
out:
	mc_free(filter);
	return ret;
}

/* The unpacking of one bundle. */
struct unpack {
	struct mc_pull *p;
	struct mc_pull_file *pf;
	struct mc_err *err;
	struct mc_bundle_limits lim;
	struct archive *a;
	uint64_t archive_size;
	uint64_t ratio_bytes; /* what the archive may expand to: max_ratio × size + slack */
	uint64_t nentries;    /* entries of any kind read */
	uint64_t bytes;	      /* bytes of the files selected so far, as their headers say */
	uint64_t files;	      /* files rows recorded */
	uint64_t reused;      /* of those, files whose bytes were already a blob */
	uint8_t *buf;	      /* one hash block */
	uint8_t *blocks;      /* the block digests of the entry being written */
	size_t blocks_cap;    /* bytes */
	sqlite3_stmt *find;   /* source, digest, size of a path in this version */
	sqlite3_stmt *below;  /* a path beneath a directory, in this version */
	sqlite3_stmt *insert; /* a files row of an entry */
};

/* @s for a message: at most 200 bytes, control characters shown as '?'. */
static const char *shown(const char *s, char *buf, size_t len)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < len && i < 200; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	buf[i] = '\0';
	return buf;
}

/* "refusing bundle 'SOURCE': <why>" with @code; the first message wins (mc_err). */
static int refuse(struct unpack *u, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(struct unpack *u, int code, const char *fmt, ...)
{
	char why[MC_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	return mc_err_set(u->err, code, "refusing bundle '%.200s': %s", u->pf->source, why);
}

/* The archive's last error, for a message. */
static const char *archive_why(struct archive *a)
{
	const char *s = archive_error_string(a);

	return s ? s : "unknown error";
}

/*
 * The entry's path in the model, in @buf: its name without leading "./" and, for a directory,
 * without trailing slashes; "" for the archive's root. False when it does not fit.
 */
static bool entry_path(const char *name, bool dir, char *buf, size_t len)
{
	size_t n;

	while (name[0] == '.' && name[1] == '/')
		name += 2;
	if (!strcmp(name, "."))
		name = "";
	n = strlen(name);
	if (dir)
		while (n && name[n - 1] == '/')
			n--;
	if (n >= len)
		return false;
	memcpy(buf, name, n);
	buf[n] = '\0';
	return true;
}

/* Path components of a valid relative path. */
static uint64_t depth_of(const char *path)
{
	uint64_t d = 1;

	for (; *path; path++)
		d += *path == '/';
	return d;
}

/* True when @path is selected by the pull's include and exclude patterns (all when none). */
static bool selected(const struct mc_pull *p, const char *path)
{
	bool in = !p->ninclude;

	for (size_t i = 0; i < p->ninclude && !in; i++)
		in = fnmatch(p->include[i], path, 0) == 0;
	for (size_t i = 0; i < p->nexclude && in; i++)
		in = fnmatch(p->exclude[i], path, 0) != 0;
	return in;
}

/* True when the files row of @path with @source came from this bundle ("SOURCE#PATH"). */
static bool from_this_bundle(const struct unpack *u, const char *source, const char *path)
{
	size_t n = strlen(u->pf->source);

	return !strncmp(source, u->pf->source, n) && source[n] == '#' &&
	       !strcmp(source + n + 1, path);
}

/*
 * Looks up the files row of @path in this version: *found, and its source (@source, @slen),
 * hex digest and size when the pointers are not NULL.
 */
static int find_file(struct unpack *u, const char *path, bool *found, char *source, size_t slen,
		     char *hex, uint64_t *size)
{
	int rc, ret = 0;

	sqlite3_bind_int64(u->find, 1, u->p->version);
	sqlite3_bind_text(u->find, 2, path, -1, SQLITE_STATIC);
	rc = sqlite3_step(u->find);
	*found = rc == SQLITE_ROW;
	if (rc == SQLITE_ROW) {
		if (source)
			snprintf(source, slen, "%s", mc_index_text(u->find, 0));
		if (hex)
			snprintf(hex, MC_DIGEST_HEX, "%s", mc_index_text(u->find, 1));
		if (size)
			*size = (uint64_t)sqlite3_column_int64(u->find, 2);
	} else if (rc != SQLITE_DONE) {
		ret = mc_index_fail(u->p->c, rc, u->err, "look up a file of '%s'", u->p->name);
	}
	sqlite3_reset(u->find);
	return ret;
}

/*
 * Refuses @path when the version already has it, has a file where @path needs a directory
 * ("a" for "a/b"), or has files beneath it ("a/b" for "a"): the tree could not hold both.
 * A clash inside the bundle is the origin's (MC_E_ORIGIN); one with another URI's file is
 * the request's (MC_E_USAGE), as for two URIs giving the same file.
 */
static int check_clash(struct unpack *u, const char *path)
{
	char source[4096 + 2048], other[PATH_MAX_BYTES + 1], b1[256], b2[256];
	size_t n = strlen(path);
	bool found;
	int rc, ret;

	ret = find_file(u, path, &found, source, sizeof(source), NULL, NULL);
	if (!ret && found)
		return from_this_bundle(u, source, path)
			   ? refuse(u, MC_E_ORIGIN, "it holds '%s' twice",
				    shown(path, b1, sizeof(b1)))
			   : refuse(u, MC_E_USAGE,
				    "'%s' is also a file of another URI of model '%s'",
				    shown(path, b1, sizeof(b1)), u->p->name);
	for (size_t i = 0; !ret && i < n; i++) {
		if (path[i] != '/')
			continue;
		memcpy(other, path, i);
		other[i] = '\0';
		ret = find_file(u, other, &found, source, sizeof(source), NULL, NULL);
		if (!ret && found)
			return refuse(u,
				      from_this_bundle(u, source, other) ? MC_E_ORIGIN : MC_E_USAGE,
				      "'%s' is beneath '%s', which is a file",
				      shown(path, b1, sizeof(b1)), shown(other, b2, sizeof(b2)));
	}
	if (ret)
		return ret;
	/* Rows of this version strictly between "PATH/" and "PATH0" ('0' follows '/'). */
	memcpy(other, path, n);
	memcpy(other + n, "/", 2);
	sqlite3_bind_int64(u->below, 1, u->p->version);
	sqlite3_bind_text(u->below, 2, other, -1, SQLITE_TRANSIENT);
	other[n] = '0';
	sqlite3_bind_text(u->below, 3, other, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(u->below);
	if (rc == SQLITE_ROW) {
		snprintf(other, sizeof(other), "%s", mc_index_text(u->below, 0));
		snprintf(source, sizeof(source), "%s", mc_index_text(u->below, 1));
		ret = refuse(u, from_this_bundle(u, source, other) ? MC_E_ORIGIN : MC_E_USAGE,
			     "'%s' is a file, but '%s' is beneath it", shown(path, b1, sizeof(b1)),
			     shown(other, b2, sizeof(b2)));
	} else if (rc != SQLITE_DONE) {
		ret = mc_index_fail(u->p->c, rc, u->err, "look up the files of '%s'", u->p->name);
	}
	sqlite3_reset(u->below);
	return ret;
}

/* Inserts the files row of entry @path (blob @hex, @size bytes); a transaction is open. */
static int insert_file(struct unpack *u, const char *path, const char *hex, uint64_t size)
{
	const struct mc_remote_info *r = &u->pf->f.remote;

	sqlite3_bind_int64(u->insert, 1, u->p->version);
	sqlite3_bind_text(u->insert, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_text(u->insert, 3, u->pf->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(u->insert, 4, (sqlite3_int64)size);
	sqlite3_bind_text(u->insert, 5, r->etag, -1, SQLITE_STATIC);
	sqlite3_bind_text(u->insert, 6, r->last_modified, -1, SQLITE_STATIC);
	sqlite3_bind_text(u->insert, 7, hex, -1, SQLITE_STATIC);
	return mc_index_exec(u->p->c, u->insert, "record a file of a bundle", u->err);
}

/* Names temp files uniquely within a session (whose id is never reused). */
static atomic_ulong tmp_seq;

/*
 * Creates and locks tmp/unpack-<session>-<n>.tmp for @size bytes. gc removes unlocked temp
 * files no download owns, so the lock is taken at once; a file gc unlinked between its creation
 * and the lock (no link left) is given up for a new one.
 */
static int tmp_open(struct unpack *u, const char *label, uint64_t size, char *name, size_t len,
		    int *out)
{
	struct mc_cache *c = u->p->c;
	struct stat st;
	int fd = -1, ret = 0;

	for (int tries = 0; tries < 3; tries++) {
		snprintf(name, len, "unpack-%lld-%lu.tmp", (long long)c->session_id,
			 (unsigned long)atomic_fetch_add(&tmp_seq, 1));
		ret = mc_gc_tmp_create(c, u->p->name, name, size, label, &fd, u->err);
		if (ret)
			return ret;
		if (!flock(fd, LOCK_EX | LOCK_NB) && !fstat(fd, &st) && st.st_nlink > 0) {
			*out = fd;
			return 0;
		}
		close(fd);
		unlinkat(c->tmp_fd, name, 0);
	}
	return mc_err_set(u->err, -EBUSY, "cannot create a temp file in '%s/tmp': removed by gc",
			  c->dir);
}

/* Writes @len bytes at @off, all of them. */
static int write_all(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
	ssize_t n;

	while (len) {
		n = pwrite(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/*
 * Streams the current entry (@size bytes by its header) into the temp file @fd, hashing each
 * block on the way; *digest is the file digest, the bytes are fsynced.
 */
static int stream_entry(struct unpack *u, const char *shown_path, int fd, const char *tmp,
			uint64_t size, uint8_t digest[MC_DIGEST_LEN])
{
	uint64_t nblocks = (size + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK, off = 0, b = 0;
	size_t fill = 0, need = nblocks ? (size_t)nblocks * MC_DIGEST_LEN : 1;
	la_ssize_t n;
	uint8_t *grown;
	int ret;

	if (need > u->blocks_cap) {
		grown = mc_realloc(u->blocks, need);
		if (!grown)
			return mc_err_set(u->err, -ENOMEM, "out of memory");
		u->blocks = grown;
		u->blocks_cap = need;
	}
	do {
		n = archive_read_data(u->a, u->buf + fill, MC_HASH_BLOCK - fill);
		if (n < 0)
			return refuse(u, MC_E_ORIGIN, "cannot read '%s': %s", shown_path,
				      archive_why(u->a));
		fill += (size_t)n;
		if (fill < MC_HASH_BLOCK && n > 0)
			continue;
		if (!fill)
			break;
		/* libarchive ends an entry where its header says; a longer one is not ours. */
		if (fill > size - off)
			return refuse(u, MC_E_ORIGIN,
				      "'%s' holds more than the %llu bytes its header "
				      "says",
				      shown_path, (unsigned long long)size);
		ret = write_all(fd, u->buf, fill, off);
		if (ret)
			return mc_err_errno(u->err, ret, "cannot write '%s/tmp/%s'", u->p->c->dir,
					    tmp);
		mc_digest_block(u->buf, fill, u->blocks + b * MC_DIGEST_LEN);
		b++;
		off += fill;
		fill = 0;
		if (mc_fetch_interrupted())
			return mc_err_set(u->err, MC_E_INTERRUPTED, "interrupted");
	} while (n > 0);
	if (off != size)
		return refuse(u, MC_E_ORIGIN, "'%s' ends after %llu of its %llu bytes", shown_path,
			      (unsigned long long)off, (unsigned long long)size);
	mc_digest_combine(u->blocks, b, size, digest);
	/* Durable before the write lock is taken for the rename: that lock is kept short. */
	if (fsync(fd))
		return mc_err_errno(u->err, -errno, "cannot sync '%s/tmp/%s'", u->p->c->dir, tmp);
	return 0;
}

/*
 * Publishes the temp file as a blob and records its blob and files rows in one transaction:
 * holding the write lock from before the rename to the commit keeps gc (which decides under
 * the same lock) from taking a blob file that has no row yet.
 */
static int publish_entry(struct unpack *u, int fd, const char *tmp, const char *path,
			 const uint8_t digest[MC_DIGEST_LEN])
{
	struct mc_cache *c = u->p->c;
	char hex[MC_DIGEST_HEX], rel[MC_BLOB_REL_MAX];
	sqlite3_stmt *s = NULL;
	bool indexed, dedup = false;
	struct stat st;
	int ret;

	mc_store_blob_rel(digest, hex, rel);
	ret = mc_index_begin(c, u->err);
	if (ret)
		return ret;
	ret = mc_pull_blob_is_indexed(u->p, hex, rel, &indexed, u->err);
	if (!ret)
		ret = mc_store_blob_publish(c, fd, tmp, digest, indexed, &st, &dedup, u->err);
	if (!ret)
		ret = mc_index_stmt(c, MC_STMT_BLOB_UPSERT, &s, u->err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_text(s, 1, hex, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)st.st_size);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)st.st_ino);
	sqlite3_bind_int64(s, 4, mc_store_mtime_ns(&st));
	sqlite3_bind_int64(s, 5, mc_now_unix());
	ret = mc_index_exec(c, s, "record a blob", u->err);
	if (!ret)
		ret = insert_file(u, path, hex, (uint64_t)st.st_size);
	if (!ret)
		ret = mc_index_commit(c, u->err);
	if (ret)
		goto out_rollback;
	u->files++;
	u->reused += dedup;
	return 0;
out_rollback:
	/* A blob renamed in place without its row is an orphan that gc removes. */
	mc_index_rollback(c);
	return ret;
}

/* A regular file entry: checked against the limits, streamed, published. */
static int regular(struct unpack *u, const char *path, uint64_t size)
{
	char tmp[64], b1[256];
	uint8_t digest[MC_DIGEST_LEN];
	int fd = -1, ret;

	shown(path, b1, sizeof(b1));
	if (size > u->lim.max_bytes - u->bytes)
		return refuse(u, MC_E_ORIGIN,
			      "its files exceed %llu bytes at '%s' (MCACHE_BUNDLE_MAX_BYTES)",
			      (unsigned long long)u->lim.max_bytes, b1);
	u->bytes += size;
	ret = check_clash(u, path);
	if (!ret)
		ret = tmp_open(u, b1, size, tmp, sizeof(tmp), &fd);
	if (ret)
		return ret;
	ret = stream_entry(u, b1, fd, tmp, size, digest);
	if (!ret)
		ret = publish_entry(u, fd, tmp, path, digest);
	close(fd);
	/* Gone already when published (renamed, or dropped as a duplicate). */
	if (ret)
		unlinkat(u->p->c->tmp_fd, tmp, 0);
	return ret;
}

/*
 * A hard link: allowed only to an earlier file of this archive, which the index already holds;
 * the link becomes a second path to the same blob. A link with data of its own (which tar
 * would write through to the target) is refused.
 */
static int hardlink(struct unpack *u, struct archive_entry *e, const char *path, int64_t size)
{
	const char *name = archive_entry_hardlink(e);
	char target[PATH_MAX_BYTES + 1], source[4096 + 2048], hex[MC_DIGEST_HEX];
	char b1[256], b2[256];
	uint64_t tsize = 0;
	bool found = false;
	int ret;

	if (!name)
		name = archive_entry_hardlink_utf8(e);
	shown(path, b1, sizeof(b1));
	if (!name || !entry_path(name, false, target, sizeof(target)) ||
	    !mc_relpath_is_valid(target))
		return refuse(u, MC_E_ORIGIN, "'%s' is a hard link to '%s', outside the bundle", b1,
			      name ? shown(name, b2, sizeof(b2)) : "");
	if (size > 0)
		return refuse(u, MC_E_ORIGIN, "'%s' is a hard link with data of its own", b1);
	ret = find_file(u, target, &found, source, sizeof(source), hex, &tsize);
	if (ret)
		return ret;
	if (!found || !from_this_bundle(u, source, target))
		return refuse(u, MC_E_ORIGIN,
			      "'%s' is a hard link to '%s', which is not an earlier file of the "
			      "bundle",
			      b1, shown(target, b2, sizeof(b2)));
	ret = check_clash(u, path);
	if (!ret)
		ret = mc_index_begin(u->p->c, u->err);
	if (ret)
		return ret;
	ret = insert_file(u, path, hex, tsize);
	if (!ret)
		ret = mc_index_commit(u->p->c, u->err);
	if (ret) {
		mc_index_rollback(u->p->c);
		return ret;
	}
	u->files++;
	u->reused++;
	return 0;
}

/* What a refused entry type is called in the message. */
static const char *type_name(mode_t type)
{
	switch (type) {
	case AE_IFLNK:
		return "a symbolic link";
	case AE_IFCHR:
		return "a character device";
	case AE_IFBLK:
		return "a block device";
	case AE_IFIFO:
		return "a FIFO";
	case AE_IFSOCK:
		return "a socket";
	default:
		return "of an unknown type";
	}
}

/* One entry, whatever its kind. */
static int entry(struct unpack *u, struct archive_entry *e)
{
	mode_t type = archive_entry_filetype(e);
	const char *name = archive_entry_pathname(e);
	bool dir = type == AE_IFDIR && !archive_entry_hardlink(e);
	int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
	int64_t consumed = archive_filter_bytes(u->a, 0);
	char path[PATH_MAX_BYTES + 1], b1[256];

	if (!name)
		name = archive_entry_pathname_utf8(e);
	if (++u->nentries > u->lim.max_entries)
		return refuse(u, MC_E_ORIGIN,
			      "it holds more than %llu entries "
			      "(MCACHE_BUNDLE_MAX_ENTRIES)",
			      (unsigned long long)u->lim.max_entries);
	if (!name)
		return refuse(u, MC_E_ORIGIN, "entry %llu has no readable name",
			      (unsigned long long)u->nentries);
	if (size < 0)
		return refuse(u, MC_E_ORIGIN, "'%s' has a negative size",
			      shown(name, b1, sizeof(b1)));
	/* What the archive expanded to so far plus this entry: a bomb fails at its header. */
	if (consumed < 0 || (uint64_t)size > u->ratio_bytes ||
	    (uint64_t)consumed > u->ratio_bytes - (uint64_t)size)
		return refuse(u, MC_E_ORIGIN,
			      "it expands past %llu bytes (%llu times its size plus %llu) at '%s' "
			      "(MCACHE_BUNDLE_MAX_RATIO)",
			      (unsigned long long)u->ratio_bytes,
			      (unsigned long long)u->lim.max_ratio,
			      (unsigned long long)u->lim.ratio_slack, shown(name, b1, sizeof(b1)));
	if (!entry_path(name, dir, path, sizeof(path)))
		return refuse(u, MC_E_ORIGIN, "'%s' has a path longer than %d bytes",
			      shown(name, b1, sizeof(b1)), PATH_MAX_BYTES);
	if (dir && !path[0])
		return 0;
	shown(path, b1, sizeof(b1));
	if (!mc_relpath_is_valid(path))
		return refuse(u, MC_E_ORIGIN,
			      "'%s' is not a safe relative path (absolute, '..', '.' or an empty "
			      "component, a control character or a backslash)",
			      shown(name, b1, sizeof(b1)));
	if (depth_of(path) > u->lim.max_depth)
		return refuse(u, MC_E_ORIGIN,
			      "'%s' is %llu components deep, more than %llu "
			      "(MCACHE_BUNDLE_MAX_DEPTH)",
			      b1, (unsigned long long)depth_of(path),
			      (unsigned long long)u->lim.max_depth);
	if (dir)
		return 0;
	if (type != AE_IFREG && !archive_entry_hardlink(e))
		return refuse(u, MC_E_ORIGIN,
			      "'%s' is %s; bundles may hold files, hard links to earlier files "
			      "and directories",
			      b1, type_name(type));
	if (!selected(u->p, path))
		return 0;
	if (archive_entry_hardlink(e))
		return hardlink(u, e, path, size);
	return regular(u, path, (uint64_t)size);
}

/* Prepares the statements an unpack runs per entry. */
static int prepare(struct unpack *u)
{
	static const char *const sql[] = {
	    "SELECT source, digest, size FROM files WHERE version_id = ?1 AND path = ?2",
	    "SELECT path, source FROM files WHERE version_id = ?1 AND path > ?2 AND path < ?3"
	    " LIMIT 1",
	    /* Never OR REPLACE: a path given twice must fail, not overwrite. */
	    "INSERT INTO files(version_id, path, source, size, etag, last_modified, digest)"
	    " VALUES(?1, ?2, ?3 || '#' || ?2, ?4, ?5, ?6, ?7)",
	};
	sqlite3_stmt **out[] = {&u->find, &u->below, &u->insert};
	int rc;

	for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
		rc = sqlite3_prepare_v2(u->p->c->db, sql[i], -1, out[i], NULL);
		if (rc != SQLITE_OK)
			return mc_index_fail(u->p->c, rc, u->err, "prepare a statement");
	}
	return 0;
}

/* Records on the bundles row that the version holds its @n files. */
static int set_entries(struct unpack *u, uint64_t n)
{
	sqlite3_stmt *s = NULL;
	int rc;

	rc = sqlite3_prepare_v2(
	    u->p->c->db, "UPDATE bundles SET entries = ?3 WHERE version_id = ?1 AND source = ?2",
	    -1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(s, 1, u->p->version);
		sqlite3_bind_text(s, 2, u->pf->source, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, (sqlite3_int64)n);
		rc = sqlite3_step(s);
	}
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : mc_index_fail(u->p->c, rc, u->err, "record a bundle");
}

/* A files row of an earlier unpack, as copied. */
struct copied {
	char *path;
	char hex[MC_DIGEST_HEX];
	uint64_t size;
	uint64_t inode;
	int64_t mtime_ns;
};

/* Reads the files an earlier unpack gave version @v from the bundle @source. */
static int read_earlier(struct unpack *u, int64_t v, const char *source, struct copied **out,
			size_t *n)
{
	struct copied *r = NULL, *grown;
	size_t cap = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret = 0;

	*n = 0;
	rc = sqlite3_prepare_v2(u->p->c->db,
				"SELECT f.path, f.size, f.digest, b.inode, b.mtime_ns FROM files f"
				" JOIN blobs b ON b.digest = f.digest WHERE f.version_id = ?1"
				" AND f.source = ?2 || '#' || f.path",
				-1, &s, NULL);
	if (rc != SQLITE_OK)
		return mc_index_fail(u->p->c, rc, u->err, "read an earlier unpack");
	sqlite3_bind_int64(s, 1, v);
	sqlite3_bind_text(s, 2, source, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (*n == cap) {
			cap = cap ? 2 * cap : 64;
			grown = mc_realloc(r, cap * sizeof(*r));
			if (!grown) {
				ret = mc_err_set(u->err, -ENOMEM, "out of memory");
				break;
			}
			r = grown;
		}
		r[*n].path = mc_strdup(mc_index_text(s, 0));
		if (!r[*n].path) {
			ret = mc_err_set(u->err, -ENOMEM, "out of memory");
			break;
		}
		r[*n].size = (uint64_t)sqlite3_column_int64(s, 1);
		snprintf(r[*n].hex, sizeof(r[*n].hex), "%s", mc_index_text(s, 2));
		r[*n].inode = (uint64_t)sqlite3_column_int64(s, 3);
		r[*n].mtime_ns = sqlite3_column_int64(s, 4);
		(*n)++;
	}
	if (!ret && rc != SQLITE_DONE)
		ret = mc_index_fail(u->p->c, rc, u->err, "read an earlier unpack");
	sqlite3_finalize(s);
	*out = r;
	return ret;
}

static void copied_free(struct copied *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mc_free(r[i].path);
	mc_free(r);
}

/*
 * Looks for an earlier unpack of the same blob with the same patterns into a version that
 * completed: inside the transaction the caller opened, the earlier version @v, its bundle's
 * source and its count of files. *v is 0 when there is none.
 */
static int find_earlier(struct unpack *u, const char *filter, int64_t *v, char **source,
			uint64_t *count)
{
	sqlite3_stmt *s = NULL;
	int rc, ret = 0;

	*v = 0;
	rc = sqlite3_prepare_v2(
	    u->p->c->db,
	    "SELECT u.version_id, u.source, u.entries FROM bundles u"
	    " JOIN versions v ON v.id = u.version_id WHERE u.digest = ?1"
	    " AND u.filter = ?2 AND u.entries IS NOT NULL AND v.state = 'complete'"
	    " AND u.version_id <> ?3 ORDER BY u.version_id DESC LIMIT 1",
	    -1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(s, 1, u->pf->bundle_hex, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, filter, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, u->p->version);
		rc = sqlite3_step(s);
	}
	if (rc == SQLITE_ROW) {
		*v = sqlite3_column_int64(s, 0);
		*count = (uint64_t)sqlite3_column_int64(s, 2);
		*source = mc_strdup(mc_index_text(s, 1));
		if (!*source)
			ret = mc_err_set(u->err, -ENOMEM, "out of memory");
	} else if (rc != SQLITE_DONE) {
		ret = mc_index_fail(u->p->c, rc, u->err, "look up an earlier unpack");
	}
	sqlite3_finalize(s);
	return ret;
}

/*
 * Sets *done when an earlier unpack could be copied: every one of its files still matches its
 * blob, and none clashes with this version's other files. One write transaction, as for a
 * reused download: gc cannot take a blob between the check and the row that references it.
 */
static int copy_earlier(struct unpack *u, bool *done)
{
	struct copied *r = NULL;
	char *filter = filter_string(u->p), *source = NULL, rel[MC_BLOB_REL_MAX];
	uint64_t count = 0;
	int64_t v = 0;
	size_t n = 0;
	int ret;

	*done = false;
	if (!filter)
		return mc_err_set(u->err, -ENOMEM, "out of memory");
	ret = mc_index_begin(u->p->c, u->err);
	if (ret)
		goto out;
	ret = find_earlier(u, filter, &v, &source, &count);
	if (!ret && v)
		ret = read_earlier(u, v, source, &r, &n);
	if (ret || !v || n != count || !n)
		goto out_rollback;
	for (size_t i = 0; i < n; i++)
		if (mc_store_blob_rel_hex(r[i].hex, rel) ||
		    !mc_store_blob_matches(u->p->c, rel, r[i].size, r[i].inode, r[i].mtime_ns))
			goto out_rollback; /* damaged since: unpack again, which repairs it */
	for (size_t i = 0; !ret && i < n; i++) {
		ret = check_clash(u, r[i].path);
		if (!ret)
			ret = insert_file(u, r[i].path, r[i].hex, r[i].size);
	}
	if (!ret)
		ret = set_entries(u, n);
	if (!ret)
		ret = mc_index_commit(u->p->c, u->err);
	if (ret)
		goto out_rollback;
	u->files = u->reused = n;
	*done = true;
	goto out;
out_rollback:
	mc_index_rollback(u->p->c);
out:
	copied_free(r, n);
	mc_free(source);
	mc_free(filter);
	return ret;
}

/* Opens the bundle's blob read-only, beneath blobs/ without following a symlink. */
static int open_blob(struct unpack *u, int *out)
{
	struct mc_cache *c = u->p->c;
	char rel[MC_BLOB_REL_MAX];
	const char *leaf = NULL;
	struct stat st;
	int abfd, fd, ret;

	if (mc_store_blob_rel_hex(u->pf->bundle_hex, rel))
		return mc_err_set(u->err, MC_E_INDEX, "bad digest '%s' for '%s' in the index",
				  u->pf->bundle_hex, u->pf->source);
	abfd = mc_store_open_parent(c->blobs_fd, rel, &leaf);
	if (abfd < 0)
		return mc_err_errno(u->err, abfd, "cannot open '%s/blobs/%.2s'", c->dir, rel);
	fd = openat(abfd, leaf, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ret = fd < 0 ? -errno : 0;
	close(abfd);
	if (!ret && fstat(fd, &st))
		ret = -errno;
	if (ret) {
		if (fd >= 0)
			close(fd);
		return mc_err_errno(u->err, ret, "cannot open '%s/blobs/%s'", c->dir, rel);
	}
	u->archive_size = (uint64_t)st.st_size;
	*out = fd;
	return 0;
}

/*
 * The tar reader and the gzip and zstd filters, nothing else. ARCHIVE_WARN from a filter means
 * libarchive would run an external program for it: refused.
 */
static int open_archive(struct unpack *u, int fd)
{
	u->a = archive_read_new();
	if (!u->a)
		return mc_err_set(u->err, -ENOMEM, "out of memory");
	if (archive_read_support_format_tar(u->a) != ARCHIVE_OK ||
	    archive_read_support_filter_none(u->a) != ARCHIVE_OK ||
	    archive_read_support_filter_gzip(u->a) != ARCHIVE_OK ||
	    archive_read_support_filter_zstd(u->a) != ARCHIVE_OK)
		return mc_err_set(
		    u->err, -ENOTSUP,
		    "cannot read bundles: this libarchive lacks built-in tar, gzip or "
		    "zstd support (%s)",
		    archive_why(u->a));
	if (archive_read_open_fd(u->a, fd, MC_HASH_BLOCK) != ARCHIVE_OK)
		return refuse(u, MC_E_ORIGIN, "it is not a tar archive (plain, gzip or zstd): %s",
			      archive_why(u->a));
	return 0;
}

/* Unpacks the blob of @u->pf entry by entry. */
static int unpack_blob(struct unpack *u)
{
	struct archive_entry *e;
	int fd = -1, r, ret;

	ret = open_blob(u, &fd);
	if (ret)
		return ret;
	u->ratio_bytes = u->archive_size > (UINT64_MAX - u->lim.ratio_slack) / u->lim.max_ratio
			     ? UINT64_MAX
			     : u->archive_size * u->lim.max_ratio + u->lim.ratio_slack;
	u->buf = mc_malloc(MC_HASH_BLOCK);
	if (!u->buf)
		ret = mc_err_set(u->err, -ENOMEM, "out of memory");
	if (!ret)
		ret = open_archive(u, fd);
	while (!ret) {
		r = archive_read_next_header(u->a, &e);
		if (r == ARCHIVE_EOF)
			break;
		/* ARCHIVE_WARN (a name not convertible, a malformed pax attribute) goes on. */
		if (r < ARCHIVE_WARN) {
			ret = refuse(u, MC_E_ORIGIN, "cannot read entry %llu: %s",
				     (unsigned long long)u->nentries + 1, archive_why(u->a));
			break;
		}
		if (mc_fetch_interrupted())
			ret = mc_err_set(u->err, MC_E_INTERRUPTED, "interrupted");
		if (!ret)
			ret = entry(u, e);
	}
	if (!ret && !u->files)
		ret = mc_err_set(
		    u->err, MC_E_NOTFOUND, "nothing to pull: the bundle '%.200s' holds no file%s",
		    u->pf->source,
		    u->p->ninclude || u->p->nexclude ? " the include and exclude patterns select"
						     : "");
	if (!ret)
		ret = set_entries(u, u->files);
	if (u->a)
		archive_read_free(u->a);
	u->a = NULL;
	close(fd);
	return ret;
}

static int unpack_one(struct mc_pull *p, struct mc_pull_file *pf, struct mc_err *err)
{
	struct unpack u = {.p = p, .pf = pf, .err = err, .lim = p->limits};
	bool done = false;
	int ret;

	limits_fill(&u.lim);
	ret = prepare(&u);
	if (!ret)
		ret = copy_earlier(&u, &done);
	if (!ret && !done) {
		ret = unpack_blob(&u);
		pf->unpacked = !ret;
	}
	if (!ret) {
		pf->entries = u.files;
		pf->entries_reused = u.reused;
	}
	sqlite3_finalize(u.find);
	sqlite3_finalize(u.below);
	sqlite3_finalize(u.insert);
	mc_free(u.buf);
	mc_free(u.blocks);
	return ret;
}

int mc_bundle_unpack_all(struct mc_pull *p, struct mc_err *err)
{
	int ret = 0;

	for (size_t i = 0; !ret && i < p->nfile; i++) {
		struct mc_pull_file *pf = &p->file[i];

		if (!pf->bundle)
			continue;
		if (!pf->recorded || !pf->bundle_hex[0])
			ret = mc_err_set(err, MC_E_INTEGRITY, "the bundle '%s' did not arrive",
					 pf->source);
		else
			ret = unpack_one(p, pf, err);
	}
	return ret;
}
