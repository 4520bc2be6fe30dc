/*
 * mc_cache_list(): the models of the cache, by name, each with the files of its current
 * version; a model never completed is listed with the state of its latest attempt: "pulling"
 * while a live process pulls it, "partial" when that process died (its downloads wait for a
 * resume), "failed".
 *
 * Rows are copied out of SQLite before the callback runs, so that no statement is active (and
 * no read transaction held) while the caller prints or calls back into the cache.
 */
#include "cache_int.h"

#include "mc_alloc.h"

#include <errno.h>
#include <string.h>

#include "mc_banned.h"

/*
 * The files of @version as the caller sees them: *out points into *entries (which the caller
 * frees with mc_tree_entries_free() after the callback), sizes summed into *bytes.
 */
static int read_files(struct mc_cache *c, int64_t version, struct mc_tree_entry **entries,
		      struct mc_file_info **out, size_t *n, uint64_t *bytes, struct mc_err *err)
{
	struct mc_file_info *f;
	int ret;

	ret = mc_index_tree_entries(c, version, entries, n, err);
	if (ret)
		return ret;
	f = mc_calloc(*n ? *n : 1, sizeof(*f));
	if (!f)
		return mc_err_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < *n; i++) {
		const struct mc_tree_entry *e = &(*entries)[i];

		f[i] = (struct mc_file_info){e->path, e->size, e->hex, e->source, e->etag};
		*bytes += e->size;
	}
	*out = f;
	return 0;
}

const char *mc_model_state(struct mc_cache *c, const struct mc_model_row *r)
{
	sqlite3_stmt *s = NULL;
	int64_t session = 0;

	/* Static strings: the caller may free the row before it is done with the state. */
	if (r->current || !strcmp(r->state, "complete"))
		return "complete";
	if (strcmp(r->state, "pulling"))
		return "failed";
	if (sqlite3_prepare_v2(c->db, "SELECT coalesce(session_id, 0) FROM versions WHERE id = ?1",
			       -1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(s, 1, r->version);
		if (sqlite3_step(s) == SQLITE_ROW)
			session = sqlite3_column_int64(s, 0);
	}
	sqlite3_finalize(s);
	/* Its process died (SIGKILL, a node crash): what it downloaded waits for a resume. */
	return session && mc_session_alive(c, session) ? "pulling" : "partial";
}

int mc_cache_list(struct mc_cache *c, int (*cb)(void *ctx, const struct mc_model_info *m),
		  void *ctx, struct mc_err *err)
{
	struct mc_model_row *rows = NULL;
	struct mc_tree_entry *entries;
	struct mc_file_info *files;
	struct mc_model_info m;
	size_t nrows = 0, nfiles;
	int ret;

	ret = mc_index_models(c, &rows, &nrows, err);
	for (size_t i = 0; !ret && i < nrows; i++) {
		memset(&m, 0, sizeof(m));
		entries = NULL;
		files = NULL;
		nfiles = 0;
		if (rows[i].current)
			ret = read_files(c, rows[i].current, &entries, &files, &nfiles, &m.bytes,
					 err);
		if (ret) {
			mc_tree_entries_free(entries, nfiles);
			break;
		}
		m.name = rows[i].name;
		m.state = mc_model_state(c, &rows[i]);
		m.version = rows[i].current ? rows[i].current : rows[i].version;
		m.files = nfiles;
		m.pinned = rows[i].pinned;
		m.created_at = rows[i].created_at;
		m.last_used_at = rows[i].last_used_at;
		m.file = files;
		m.nfile = nfiles;
		m.verified_at = rows[i].verified_at;
		m.verify_findings = rows[i].verify_findings;
		m.verify_deep = rows[i].verify_deep;
		ret = cb(ctx, &m);
		mc_free(files);
		mc_tree_entries_free(entries, nfiles);
	}
	mc_model_rows_free(rows, nrows);
	return ret;
}
