/*
 * The numbers behind `mcache metrics`: sizes and counts read from the index (and, for usage,
 * the temp files), the last verify results recorded by verify.c, and pull counters. This file
 * only collects them into struct mc_metrics; the Prometheus text is cmd/'s business.
 *
 * Counters live in the index's `stats` table (schema 4), keyed by name, because a metrics
 * scrape runs in another process than the pulls it counts; mc_metrics_count_pull() adds one
 * pull's outcome at the end of mc_cache_pull(). They are bookkeeping: written without fsync
 * (a power cut may lose the last increments) and best effort (a pull never fails because its
 * counters could not be written). A rebuilt index starts them at zero, which Prometheus reads
 * as a counter reset.
 */
#include "cache_int.h"

#include "mc_alloc.h"

#include <errno.h>
#include <string.h>

#include "mc_banned.h"

/* The `stats` keys, and where each lands in struct mc_metrics. */
static const struct stat_key {
	const char *key;
	size_t off;
} stat_keys[] = {
    {"pulls_ok", offsetof(struct mc_metrics, pulls_ok)},
    {"pulls_failed", offsetof(struct mc_metrics, pulls_failed)},
    {"pulls_interrupted", offsetof(struct mc_metrics, pulls_interrupted)},
    {"download_bytes", offsetof(struct mc_metrics, download_bytes)},
    {"download_requests", offsetof(struct mc_metrics, download_requests)},
    {"download_retries", offsetof(struct mc_metrics, download_retries)},
};

void mc_metrics_count_pull(struct mc_cache *c, const struct mc_fetch_stats *st, int ret)
{
	static const char sql[] = "INSERT INTO stats(key, value) VALUES(?1, ?2)"
				  " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value";
	const char *outcome = !ret			? "pulls_ok"
			      : ret == MC_E_INTERRUPTED ? "pulls_interrupted"
							: "pulls_failed";
	const struct {
		const char *key;
		uint64_t n;
	} add[] = {
	    {outcome, 1},
	    {"download_bytes", st ? st->bytes : 0},
	    {"download_requests", st ? st->requests : 0},
	    {"download_retries", st ? st->retries : 0},
	};
	sqlite3_stmt *s = NULL;
	bool ok;

	/* A usage error (no URI, a bad name) is not a pull that ran. */
	if (ret == MC_E_USAGE || !c->db)
		return;
	mc_index_durable(c, false);
	if (mc_index_begin(c, NULL))
		goto out;
	ok = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) == SQLITE_OK;
	for (size_t i = 0; ok && i < sizeof(add) / sizeof(add[0]); i++) {
		sqlite3_reset(s);
		sqlite3_bind_text(s, 1, add[i].key, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, (int64_t)add[i].n);
		ok = sqlite3_step(s) == SQLITE_DONE;
	}
	if (!ok || mc_index_commit(c, NULL))
		mc_index_rollback(c);
out:
	sqlite3_finalize(s);
	mc_index_durable(c, true);
}

/* Runs @sql, which yields one row of two integers, into *a and *b. */
static int query2(struct mc_cache *c, const char *sql, int64_t bind, uint64_t *a, uint64_t *b,
		  struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret = 0;

	rc = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK) {
		if (sqlite3_bind_parameter_count(s))
			sqlite3_bind_int64(s, 1, bind);
		rc = sqlite3_step(s);
	}
	if (rc == SQLITE_ROW) {
		*a = (uint64_t)sqlite3_column_int64(s, 0);
		if (b)
			*b = (uint64_t)sqlite3_column_int64(s, 1);
	} else {
		ret = mc_index_fail(c, rc, err, "read the metrics");
	}
	sqlite3_finalize(s);
	return ret;
}

/* The `stats` rows: counters and the last whole-cache verify. */
static int read_stats(struct mc_cache *c, struct mc_metrics *m, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	const char *key;
	int64_t value;
	int rc, ret = 0;

	m->verify_findings = -1;
	rc = sqlite3_prepare_v2(c->db, "SELECT key, value FROM stats", -1, &s, NULL);
	while (s && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		key = mc_index_text(s, 0);
		value = sqlite3_column_int64(s, 1);
		if (!strcmp(key, "verified_at"))
			m->verified_at = value;
		else if (!strcmp(key, "verify_findings"))
			m->verify_findings = value;
		else if (!strcmp(key, "verify_deep"))
			m->verify_deep = value != 0;
		for (size_t i = 0; i < sizeof(stat_keys) / sizeof(stat_keys[0]); i++)
			if (!strcmp(key, stat_keys[i].key))
				*(uint64_t *)((char *)m + stat_keys[i].off) = (uint64_t)value;
	}
	if (rc != SQLITE_DONE)
		ret = mc_index_fail(c, rc, err, "read the metrics");
	sqlite3_finalize(s);
	return ret;
}

static int read_models(struct mc_cache *c, struct mc_metrics *m, struct mc_err *err)
{
	struct mc_model_row *rows = NULL;
	size_t n = 0;
	int ret;

	ret = mc_index_models(c, &rows, &n, err);
	if (ret)
		goto out;
	m->model = mc_calloc(n ? n : 1, sizeof(*m->model));
	if (!m->model) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct mc_metrics_model *mm = &m->model[i];

		/* Move the name: the row's copy would be freed below. */
		mm->name = rows[i].name;
		rows[i].name = NULL;
		m->nmodel++;
		mm->state = mc_model_state(c, &rows[i]);
		mm->pinned = rows[i].pinned;
		m->models_pinned += rows[i].pinned;
		mm->last_used_at = rows[i].last_used_at;
		mm->verified_at = rows[i].verified_at;
		mm->verify_findings = rows[i].verify_findings;
		mm->verify_deep = rows[i].verify_deep;
		if (rows[i].current)
			ret = query2(c,
				     "SELECT count(*), coalesce(sum(size), 0) FROM files"
				     " WHERE version_id = ?1",
				     rows[i].current, &mm->files, &mm->bytes, err);
		if (ret)
			break;
	}
out:
	mc_model_rows_free(rows, n);
	return ret;
}

int mc_cache_metrics(struct mc_cache *c, struct mc_metrics *m, struct mc_err *err)
{
	int ret;

	memset(m, 0, sizeof(*m));
	m->verify_findings = -1;
	ret = mc_cache_usage(c, &m->usage_bytes, err);
	if (!ret)
		ret = mc_cache_budget(c, &m->budget_bytes, err);
	if (!ret)
		ret = query2(c, "SELECT count(*), coalesce(sum(size), 0) FROM blobs", 0, &m->blobs,
			     &m->blob_bytes, err);
	if (!ret)
		ret = query2(c, "SELECT count(*) FROM downloads", 0, &m->downloads, NULL, err);
	if (!ret)
		ret = read_stats(c, m, err);
	if (!ret)
		ret = read_models(c, m, err);
	return ret;
}

void mc_cache_metrics_release(struct mc_metrics *m)
{
	for (size_t i = 0; m->model && i < m->nmodel; i++)
		mc_free(m->model[i].name);
	mc_free(m->model);
	m->model = NULL;
	m->nmodel = 0;
}
