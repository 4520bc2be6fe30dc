/*
 * Version sidecars: trees/NAME/<version>.json, written beside a version's tree (never inside it:
 * consumers read the tree) when the tree is built.
 *
 * A sidecar holds what the index knows about a version that the bytes on disk cannot tell: the
 * model's and each file's source, the origin's validators (ETag, Last-Modified), the SHA-256 an
 * origin published, the revision tag, the times and the pin. `mcache rebuild-index` (rebuild.c)
 * uses it where its paths and digests agree with the disk, so that a rebuilt index still
 * recognises cached objects on the next pull (one conditional request, no download) instead of
 * knowing the files only by their digests.
 *
 * Written atomically: a temp name in the same directory (O_EXCL, O_NOFOLLOW), fsync, renameat,
 * fsync of the directory, so a sidecar is either whole or absent. Built and parsed with jansson.
 * A sidecar that does not parse, or does not describe the version it sits beside, is ignored:
 * the disk stays the truth.
 */
#include "cache_int.h"

#include "mc_alloc.h"
#include "mc_fs.h"
#include "mc_util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mc_banned.h"

/* Bumped if the layout of a sidecar ever changes incompatibly; readers ignore other formats. */
#define SIDECAR_FORMAT 1

/* Sets key @k of @o to a new string (a NULL column becomes ""); returns -1 when out of memory. */
static int set_str(json_t *o, const char *k, const char *v)
{
	return json_object_set_new(o, k, json_string(v ? v : ""));
}

static int set_int(json_t *o, const char *k, int64_t v)
{
	return json_object_set_new(o, k, json_integer((json_int_t)v));
}

/* The model and version fields, from the index. */
static int add_version(struct mc_cache *c, json_t *root, const char *name, int64_t version,
		       struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret = 0;

	rc = sqlite3_prepare_v2(
	    c->db,
	    "SELECT m.source, m.pinned, m.created_at, v.created_at,"
	    " coalesce(v.tag, ''), coalesce(v.completed_at, ?3) FROM versions v"
	    " JOIN models m ON m.id = v.model_id WHERE v.id = ?1 AND m.name = ?2",
	    -1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(s, 1, version);
		sqlite3_bind_text(s, 2, name, -1, SQLITE_STATIC);
		/* A tree is built just before its version completes: now. */
		sqlite3_bind_int64(s, 3, mc_now_unix());
		rc = sqlite3_step(s);
	}
	if (rc == SQLITE_DONE) {
		ret = mc_err_set(err, MC_E_INDEX, "no version %lld of model '%s' in the index",
				 (long long)version, name);
		goto out;
	}
	if (rc != SQLITE_ROW) {
		ret = mc_index_fail(c, rc, err, "read version %lld", (long long)version);
		goto out;
	}
	if (set_int(root, "format", SIDECAR_FORMAT) || set_str(root, "model", name) ||
	    set_str(root, "source", mc_index_text(s, 0)) ||
	    json_object_set_new(root, "pinned", json_boolean(sqlite3_column_int(s, 1) != 0)) ||
	    set_int(root, "model_created_at", sqlite3_column_int64(s, 2)) ||
	    set_int(root, "version", version) || set_str(root, "tag", mc_index_text(s, 4)) ||
	    set_int(root, "created_at", sqlite3_column_int64(s, 3)) ||
	    set_int(root, "completed_at", sqlite3_column_int64(s, 5)))
		ret = mc_err_set(err, -ENOMEM, "out of memory");
out:
	sqlite3_finalize(s);
	return ret;
}

static json_t *file_json(sqlite3_stmt *s)
{
	json_t *o = json_object();

	if (!o || set_str(o, "path", mc_index_text(s, 0)) ||
	    set_str(o, "source", mc_index_text(s, 1)) ||
	    set_int(o, "size", sqlite3_column_int64(s, 2)) ||
	    set_str(o, "etag", mc_index_text(s, 3)) ||
	    set_str(o, "last_modified", mc_index_text(s, 4)) ||
	    set_str(o, "digest", mc_index_text(s, 5)) ||
	    set_str(o, "sha256", mc_index_text(s, 6))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int add_files(struct mc_cache *c, json_t *root, int64_t version, struct mc_err *err)
{
	json_t *files = json_array();
	sqlite3_stmt *s = NULL;
	int rc, ret = 0;

	if (!files || json_object_set_new(root, "files", files))
		return mc_err_set(err, -ENOMEM, "out of memory");
	rc = sqlite3_prepare_v2(c->db,
				"SELECT path, source, size, etag, last_modified, digest,"
				" coalesce(sha256, '') FROM files WHERE version_id = ?1"
				" ORDER BY path",
				-1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(s, 1, version);
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			if (json_array_append_new(files, file_json(s))) {
				ret = mc_err_set(err, -ENOMEM, "out of memory");
				goto out;
			}
		}
	}
	if (rc != SQLITE_DONE)
		ret =
		    mc_index_fail(c, rc, err, "read the files of version %lld", (long long)version);
out:
	sqlite3_finalize(s);
	return ret;
}

int mc_sidecar_write(struct mc_cache *c, int mfd, const char *name, int64_t version,
		     struct mc_err *err)
{
	const size_t flags = JSON_INDENT(1) | JSON_PRESERVE_ORDER;
	char file[32];
	json_t *root = json_object();
	char *text = NULL;
	size_t len;
	int ret;

	snprintf(file, sizeof(file), "%lld.json", (long long)version);
	if (!root) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = add_version(c, root, name, version, err);
	if (!ret)
		ret = add_files(c, root, version, err);
	if (ret)
		goto out;
	/* Sized first, so that the text is allocated by mc_malloc like everything else. */
	len = json_dumpb(root, NULL, 0, flags);
	text = len ? mc_malloc(len) : NULL;
	if (!text || json_dumpb(root, text, len, flags) != len) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = mc_fs_write_atomic(mfd, file, text, len);
	if (ret)
		mc_err_errno(err, ret, "cannot write '%s/trees/%s/%s'", c->dir, name, file);
out:
	mc_free(text);
	json_decref(root);
	return ret;
}

int mc_sidecar_rewrite(struct mc_cache *c, const char *name, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int64_t current = 0;
	int mfd, rc, ret = 0;

	rc = sqlite3_prepare_v2(c->db,
				"SELECT coalesce(current_version, 0) FROM models"
				" WHERE name = ?1",
				-1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
	}
	if (rc == SQLITE_ROW)
		current = sqlite3_column_int64(s, 0);
	else if (rc != SQLITE_DONE)
		ret = mc_index_fail(c, rc, err, "read model '%s'", name);
	sqlite3_finalize(s);
	if (ret || !current)
		return ret;
	mfd = mc_store_open_dir(c->trees_fd, name, false, NULL);
	if (mfd < 0)
		return mc_err_errno(err, mfd, "cannot open '%s/trees/%s'", c->dir, name);
	ret = mc_sidecar_write(c, mfd, name, current, err);
	close(mfd);
	return ret;
}

/* Copies string member @k of @o into *out; false when it is there but not a string. */
static bool get_str(const json_t *o, const char *k, const char **out)
{
	const json_t *v = json_object_get(o, k);

	*out = "";
	if (!v)
		return true;
	if (!json_is_string(v))
		return false;
	*out = json_string_value(v);
	return true;
}

static bool get_int(const json_t *o, const char *k, int64_t *out)
{
	const json_t *v = json_object_get(o, k);

	*out = 0;
	if (!v)
		return true;
	if (!json_is_integer(v))
		return false;
	*out = (int64_t)json_integer_value(v);
	return true;
}

static bool is_hex_digest(const char *s)
{
	return strlen(s) == MC_DIGEST_HEX - 1 && strspn(s, "0123456789abcdef") == MC_DIGEST_HEX - 1;
}

/* Checks every file entry and indexes them by path into m->by_path. */
static int index_files(struct mc_sidecar *m, const json_t *files, char *why, size_t whylen)
{
	struct mc_sidecar_file f;
	size_t i;
	json_t *v;

	if (!json_is_array(files)) {
		snprintf(why, whylen, "no file list");
		return MC_E_INDEX;
	}
	json_array_foreach(files, i, v)
	{
		if (!json_is_object(v) || !mc_sidecar_file_get(v, &f) ||
		    !mc_relpath_is_valid(f.path)) {
			snprintf(why, whylen, "file entry %zu is not valid", i);
			return MC_E_INDEX;
		}
		if (json_object_get(m->by_path, f.path)) {
			snprintf(why, whylen, "file '%.200s' is listed twice", f.path);
			return MC_E_INDEX;
		}
		if (json_object_set(m->by_path, f.path, v))
			return -ENOMEM;
	}
	return 0;
}

bool mc_sidecar_file_get(const json_t *o, struct mc_sidecar_file *f)
{
	int64_t size;

	memset(f, 0, sizeof(*f));
	if (!get_str(o, "path", &f->path) || !get_str(o, "source", &f->source) ||
	    !get_str(o, "etag", &f->etag) || !get_str(o, "last_modified", &f->last_modified) ||
	    !get_str(o, "digest", &f->digest) || !get_str(o, "sha256", &f->sha256) ||
	    !get_int(o, "size", &size) || size < 0 || !is_hex_digest(f->digest))
		return false;
	f->size = (uint64_t)size;
	return true;
}

int mc_sidecar_read(int mfd, const char *name, int64_t version, struct mc_sidecar *m, char *why,
		    size_t whylen)
{
	char file[32];
	json_error_t jerr;
	const json_t *pinned;
	int64_t format = 0, v = 0;
	const char *model = "";
	int fd, ret = 0;

	memset(m, 0, sizeof(*m));
	why[0] = '\0';
	snprintf(file, sizeof(file), "%lld.json", (long long)version);
	fd = openat(mfd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(why, whylen, "%s", strerror(errno));
		goto out;
	}
	m->root = json_loadfd(fd, JSON_REJECT_DUPLICATES, &jerr);
	close(fd);
	if (!m->root) {
		snprintf(why, whylen, "not JSON: %.200s", jerr.text);
		ret = MC_E_INDEX;
		goto out;
	}
	pinned = json_object_get(m->root, "pinned");
	if (!json_is_object(m->root) || !get_int(m->root, "format", &format) ||
	    format != SIDECAR_FORMAT || !get_str(m->root, "model", &model) || strcmp(model, name) ||
	    !get_int(m->root, "version", &v) || v != version ||
	    !get_str(m->root, "source", &m->source) || !get_str(m->root, "tag", &m->tag) ||
	    !get_int(m->root, "model_created_at", &m->model_created_at) ||
	    !get_int(m->root, "created_at", &m->created_at) ||
	    !get_int(m->root, "completed_at", &m->completed_at) ||
	    (pinned && !json_is_boolean(pinned))) {
		snprintf(why, whylen, "not the sidecar of version %lld of '%s'", (long long)version,
			 name);
		ret = MC_E_INDEX;
		goto out;
	}
	m->pinned = json_is_true(pinned);
	m->by_path = json_object();
	if (!m->by_path) {
		ret = -ENOMEM;
		goto out;
	}
	ret = index_files(m, json_object_get(m->root, "files"), why, whylen);
out:
	if (ret == -ENOMEM)
		snprintf(why, whylen, "out of memory");
	if (ret)
		mc_sidecar_release(m);
	return ret;
}

void mc_sidecar_release(struct mc_sidecar *m)
{
	json_decref(m->by_path);
	json_decref(m->root);
	memset(m, 0, sizeof(*m));
}
