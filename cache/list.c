/*
 * mc_cache_list(): the models of the cache, by name, each with the files of its current
 * version; a model never completed is listed with the state of its latest attempt.
 *
 * Rows are copied out of SQLite before the callback runs, so that no statement is active (and
 * no read transaction held) while the caller prints or calls back into the cache.
 */
#include "cache_int.h"

#include "mc_alloc.h"

#include <errno.h>
#include <string.h>

#include "mc_banned.h"

static void files_free(struct mc_file_info *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		mc_free((char *)f[i].path);
		mc_free((char *)f[i].digest);
		mc_free((char *)f[i].source);
		mc_free((char *)f[i].etag);
	}
	mc_free(f);
}

/* Copies the files of @version into *out, summing their sizes into *bytes. */
static int read_files(struct mc_cache *c, int64_t version, struct mc_file_info **out, size_t *n,
		      uint64_t *bytes, struct mc_err *err)
{
	struct mc_file_info *f = NULL, *grown;
	size_t len = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = mc_index_stmt(c, MC_STMT_FILES_OF_VERSION, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, version);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap ? 2 * cap : 16;
			grown = mc_realloc(f, cap * sizeof(*f));
			if (!grown) {
				ret = mc_err_set(err, -ENOMEM, "out of memory");
				goto out_free;
			}
			f = grown;
		}
		f[len].path = mc_strdup(mc_index_text(s, 0));
		f[len].size = (uint64_t)sqlite3_column_int64(s, 1);
		f[len].digest = mc_strdup(mc_index_text(s, 2));
		f[len].source = mc_strdup(mc_index_text(s, 3));
		f[len].etag = mc_strdup(mc_index_text(s, 4));
		len++;
		if (!f[len - 1].path || !f[len - 1].digest || !f[len - 1].source ||
		    !f[len - 1].etag) {
			ret = mc_err_set(err, -ENOMEM, "out of memory");
			goto out_free;
		}
		*bytes += f[len - 1].size;
	}
	if (rc != SQLITE_DONE) {
		ret =
		    mc_index_fail(c, rc, err, "list the files of version %lld", (long long)version);
		goto out_free;
	}
	*out = f;
	*n = len;
	f = NULL;
	len = 0;
out_free:
	sqlite3_reset(s);
	files_free(f, len);
out:
	return ret;
}

int mc_cache_list(struct mc_cache *c, int (*cb)(void *ctx, const struct mc_model_info *m),
		  void *ctx, struct mc_err *err)
{
	struct mc_model_row *rows = NULL;
	struct mc_file_info *files;
	struct mc_model_info m;
	size_t nrows = 0, nfiles;
	int ret;

	ret = mc_index_models(c, &rows, &nrows, err);
	for (size_t i = 0; !ret && i < nrows; i++) {
		memset(&m, 0, sizeof(m));
		files = NULL;
		nfiles = 0;
		if (rows[i].current)
			ret = read_files(c, rows[i].current, &files, &nfiles, &m.bytes, err);
		if (ret)
			break;
		m.name = rows[i].name;
		m.state = rows[i].current ? "complete" : rows[i].state;
		m.version = rows[i].current ? rows[i].current : rows[i].version;
		m.files = nfiles;
		m.pinned = rows[i].pinned;
		m.created_at = rows[i].created_at;
		m.last_used_at = rows[i].last_used_at;
		m.file = files;
		m.nfile = nfiles;
		ret = cb(ctx, &m);
		files_free(files, nfiles);
	}
	mc_model_rows_free(rows, nrows);
	return ret;
}
