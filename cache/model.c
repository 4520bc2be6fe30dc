/*
 * mc_cache_open_model(): one model's current version, for a front end that materialises it
 * elsewhere (the init container): its files and a directory handle on its tree, so that the
 * caller links or copies from beneath that handle and never resolves models/NAME by path
 * twice (a pull in another process may swap it meanwhile; the handle keeps one version).
 */
#include "cache_int.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mc_banned.h"

/* The model's id, current version and source; *found false when there is no such model. */
static int model_row(struct mc_cache *c, const char *name, int64_t *id, int64_t *current,
		     char **source, bool *found, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret = 0;

	*found = false;
	rc = sqlite3_prepare_v2(c->db,
				"SELECT id, coalesce(current_version, 0), source FROM models"
				" WHERE name = ?1",
				-1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
	}
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(s, 0);
		*current = sqlite3_column_int64(s, 1);
		*source = mc_strdup(mc_index_text(s, 2));
		*found = true;
		if (!*source)
			ret = mc_err_set(err, -ENOMEM, "out of memory");
	} else if (rc != SQLITE_DONE) {
		ret = mc_index_fail(c, rc, err, "look up model '%s'", name);
	}
	sqlite3_finalize(s);
	return ret;
}

static int open_tree(struct mc_cache *c, const char *name, int64_t version, struct mc_err *err)
{
	char v[24];
	int dir, fd;

	dir = mc_store_open_dir(c->trees_fd, name, false, NULL);
	if (dir < 0)
		return mc_err_errno(err, dir, "cannot open '%s/trees/%s'", c->dir, name);
	snprintf(v, sizeof(v), "%lld", (long long)version);
	fd = mc_store_open_dir(dir, v, false, NULL);
	close(dir);
	if (fd < 0)
		return mc_err_errno(err, fd, "cannot open '%s/trees/%s/%s'", c->dir, name, v);
	return fd;
}

int mc_cache_open_model(struct mc_cache *c, const char *name, struct mc_model_view *v,
			struct mc_err *err)
{
	int64_t id = 0, current = 0;
	bool found;
	int ret;

	memset(v, 0, sizeof(*v));
	v->tree_fd = -1;
	ret = model_row(c, name, &id, &current, &v->source, &found, err);
	if (ret)
		goto out_free;
	if (!found || !current) {
		ret = mc_err_set(err, MC_E_NOTFOUND, "model '%s' is not in the cache", name);
		goto out_free;
	}
	ret = mc_index_tree_entries(c, current, &v->entry, &v->nentry, err);
	if (ret)
		goto out_free;
	v->tree_fd = open_tree(c, name, current, err);
	if (v->tree_fd < 0) {
		ret = v->tree_fd;
		goto out_free;
	}
	v->version = current;
	v->model_id = id;
	for (size_t i = 0; i < v->nentry; i++)
		v->bytes += v->entry[i].size;
	goto out;
out_free:
	mc_cache_model_release(v);
out:
	return ret;
}

void mc_cache_model_release(struct mc_model_view *v)
{
	if (v->tree_fd >= 0)
		close(v->tree_fd);
	mc_tree_entries_free(v->entry, v->nentry);
	mc_free(v->source);
	memset(v, 0, sizeof(*v));
	v->tree_fd = -1;
}

int mc_cache_touch_model(struct mc_cache *c, const struct mc_model_view *v, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int ret;

	ret = mc_index_stmt(c, MC_STMT_MODEL_TOUCH, &s, err);
	if (ret)
		return ret;
	sqlite3_bind_int64(s, 1, v->model_id);
	sqlite3_bind_int64(s, 2, mc_now_unix());
	/* An access time lost with the machine costs nothing: no fsync for it. */
	mc_index_durable(c, false);
	ret = mc_index_exec(c, s, "record the use of a model", err);
	mc_index_durable(c, true);
	return ret;
}

const char *mc_model_view_path(const struct mc_model_view *v, size_t i)
{
	return v->entry[i].path;
}

uint64_t mc_model_view_size(const struct mc_model_view *v, size_t i)
{
	return v->entry[i].size;
}
