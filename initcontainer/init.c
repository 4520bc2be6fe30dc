/*
 * `mcache init`: environment → the models wanted → ensured in the node cache → materialised in
 * the target directory → a JSON log on stderr and the Kubernetes termination message.
 *
 * Warm start: when the cache holds the model, the cost is one conditional request per file
 * (304, no body), or nothing at all with MCACHE_OFFLINE=1; then a stat per file when the target
 * already holds the same inodes. Nothing is rehashed: blobs were verified when published.
 */
#include "mc_init.h"

#include "materialise.h"
#include "mc_alloc.h"
#include "mc_cache.h"
#include "mc_manifest.h"
#include "mc_util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mc_banned.h"

#define DEFAULT_TARGET		"/models"
#define DEFAULT_FILE		"model.safetensors"
#define DEFAULT_TERMINATION_LOG "/dev/termination-log"
/* Kubernetes keeps at most 4096 bytes of a termination message. */
#define TERMINATION_MAX 4096
/* A cold pull logs its progress this often. */
#define PROGRESS_LOG_MS 10000

/* One model to ensure and where it goes in the target. */
struct want {
	char *name;
	const char *const *uri;
	size_t nuri;
	const char *const *include;
	size_t ninclude;
	const char *const *exclude;
	size_t nexclude;
	bool pin;
	const char *dest; /* MODEL_FILE (a file), or the model's name (a directory) */
	bool single_file;
};

struct cfg {
	const char *target;
	const char *model_url;
	const char *model_file;
	const char *model_name;
	const char *manifest;
	char *cache_dir; /* owned */
	const char *termination;
	bool termination_explicit;
	bool offline;
	bool dry_run;
	bool allow_shared;
	bool quiet;
	unsigned connections;
	uint64_t max_rate;
};

/* ---- Logging: one JSON object per line on stderr ---- */

static void log_line(const struct cfg *cfg, const char *level, const char *msg, json_t *fields)
{
	char ts[40];
	struct timespec now;
	struct tm tm;
	json_t *o = fields ? fields : json_object();
	char *line;

	if (!o)
		return;
	if (cfg && cfg->quiet && !strcmp(level, "info")) {
		json_decref(o);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + strlen(ts), sizeof(ts) - strlen(ts), ".%03ldZ", now.tv_nsec / 1000000);
	json_object_set_new(o, "time", json_string(ts));
	json_object_set_new(o, "level", json_string(level));
	json_object_set_new(o, "msg", json_string(msg));
	line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (line) {
		fprintf(stderr, "%s\n", line);
		mc_free(line);
	}
	json_decref(o);
}

/* A fields object: pairs of (key, json_t *) ending with NULL. */
static json_t *fields(const char *key, ...)
{
	json_t *o = json_object();
	va_list ap;

	va_start(ap, key);
	for (const char *k = key; k && o; k = va_arg(ap, const char *)) {
		json_t *v = va_arg(ap, json_t *);

		if (v)
			json_object_set_new(o, k, v);
	}
	va_end(ap);
	return o;
}

static json_t *jstr(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *juint(uint64_t v)
{
	return json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v);
}

/*
 * The termination message: Kubernetes shows it in `kubectl describe pod` when the container
 * ends. Written when the file exists (kubelet creates it) or when MCACHE_TERMINATION_LOG names
 * one explicitly; never anywhere else, so a run outside Kubernetes leaves no stray file.
 */
static void termination(const struct cfg *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void termination(const struct cfg *cfg, const char *fmt, ...)
{
	char msg[TERMINATION_MAX];
	va_list ap;
	int fd, flags = O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW;
	int n;

	if (!cfg->termination || !*cfg->termination)
		return;
	if (cfg->termination_explicit)
		flags |= O_CREAT;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	fd = open(cfg->termination, flags, 0644);
	if (fd < 0)
		return;
	if (write(fd, msg, (size_t)n) != n)
		log_line(cfg, "warn", "cannot write the termination message",
			 fields("path", jstr(cfg->termination), NULL));
	close(fd);
}

/* ---- Configuration ---- */

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static int env_bool(const char *name, bool *out, struct mc_err *err)
{
	const char *v = env(name);

	if (!v)
		return 0;
	if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"))
		*out = true;
	else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no"))
		*out = false;
	else
		return mc_err_set(err, MC_E_USAGE, "invalid %s '%.40s': use 1 or 0", name, v);
	return 0;
}

static int read_cfg(struct cfg *cfg, const struct mc_init_args *a, struct mc_err *err)
{
	const char *v;
	uint64_t n;
	int ret;

	memset(cfg, 0, sizeof(*cfg));
	cfg->target = env("MCACHE_TARGET") ? env("MCACHE_TARGET") : DEFAULT_TARGET;
	cfg->model_url = env("MODEL_URL");
	cfg->model_file = env("MODEL_FILE") ? env("MODEL_FILE") : DEFAULT_FILE;
	cfg->model_name = env("MCACHE_MODEL_NAME");
	cfg->manifest = env("MCACHE_MANIFEST");
	cfg->termination_explicit = getenv("MCACHE_TERMINATION_LOG") != NULL;
	cfg->termination =
	    cfg->termination_explicit ? getenv("MCACHE_TERMINATION_LOG") : DEFAULT_TERMINATION_LOG;
	cfg->dry_run = a->dry_run;
	cfg->allow_shared = a->allow_shared_dir;
	cfg->quiet = a->quiet;
	ret = env_bool("MCACHE_OFFLINE", &cfg->offline, err);
	if (!ret && !a->dry_run)
		ret = env_bool("MCACHE_DRY_RUN", &cfg->dry_run, err);
	if (!ret && !a->allow_shared_dir)
		ret = env_bool("MCACHE_ALLOW_SHARED_DIR", &cfg->allow_shared, err);
	if (ret)
		return ret;
	if ((v = env("MCACHE_CONNECTIONS")) != NULL) {
		if (mc_parse_uint(v, 1, MC_MAX_CONNECTIONS, &n))
			return mc_err_set(err, MC_E_USAGE,
					  "invalid MCACHE_CONNECTIONS '%.40s': expected 1 to %u", v,
					  MC_MAX_CONNECTIONS);
		cfg->connections = (unsigned)n;
	}
	if ((v = env("MCACHE_MAX_RATE")) != NULL && mc_parse_size(v, &cfg->max_rate))
		return mc_err_set(err, MC_E_USAGE,
				  "invalid MCACHE_MAX_RATE '%.40s': expected bytes per second such "
				  "as 200M",
				  v);
	if (!cfg->model_url && !cfg->manifest)
		return mc_err_set(err, MC_E_USAGE,
				  "nothing to do: set MODEL_URL (one file) or MCACHE_MANIFEST (a "
				  "YAML list of models)");
	if (cfg->model_url && cfg->manifest)
		return mc_err_set(err, MC_E_USAGE,
				  "MODEL_URL and MCACHE_MANIFEST are both set: use one");
	if (!mc_relpath_is_valid(cfg->model_file))
		return mc_err_set(err, MC_E_USAGE,
				  "invalid MODEL_FILE '%.200s': use a relative path without '..'",
				  cfg->model_file);
	if (cfg->model_name && !mc_name_is_valid(cfg->model_name))
		return mc_err_set(
		    err, MC_E_USAGE,
		    "invalid MCACHE_MODEL_NAME '%.200s': use 1-128 of [A-Za-z0-9._-], "
		    "not starting with '.' or '-'",
		    cfg->model_name);
	if (a->cache_dir)
		cfg->cache_dir = mc_strdup(a->cache_dir);
	else if (env("MCACHE_DIR"))
		cfg->cache_dir = mc_strdup(env("MCACHE_DIR"));
	else {
		size_t len = strlen(cfg->target) + sizeof("/.mcache");

		cfg->cache_dir = mc_malloc(len);
		if (cfg->cache_dir)
			snprintf(cfg->cache_dir, len, "%s/.mcache", cfg->target);
	}
	return cfg->cache_dir ? 0 : mc_err_set(err, -ENOMEM, "out of memory");
}

/*
 * The model name for MODEL_URL: MCACHE_MODEL_NAME, else the URL's file name without its
 * extension plus a hash of the redacted URL ("model-3f2a9c01"), so that pods of different
 * deployments sharing a node cache never take each other's model for theirs.
 */
static char *name_for_url(const char *url)
{
	char *red = mc_url_redact(url), *out = NULL, base[100];
	const char *b, *e;
	uint64_t h = 0xcbf29ce484222325u; /* FNV-1a: a name, not a security boundary */
	size_t n = 0;

	if (!red)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)red; *p; p++)
		h = (h ^ *p) * 0x100000001b3u;
	e = red + strcspn(red, "?#");
	while (e > red && e[-1] == '/')
		e--;
	for (b = e; b > red && b[-1] != '/';)
		b--;
	for (const char *p = b; p < e && n < sizeof(base) - 1; p++) {
		if (*p == '.' && memchr(p + 1, '.', (size_t)(e - p - 1)) == NULL && n)
			break; /* the last extension */
		base[n++] =
		    (char)((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
				   (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'
			       ? *p
			       : '-');
	}
	while (n && (base[0] == '.' || base[0] == '-')) {
		memmove(base, base + 1, n - 1);
		n--;
	}
	base[n] = '\0';
	out = mc_malloc(n + 32);
	if (out)
		snprintf(out, n + 32, "%s%s%08x", n ? base : "", n ? "-" : "model-",
			 (unsigned)(h ^ (h >> 32)));
	mc_free(red);
	return out;
}

/* ---- Pulling, with progress in the log ---- */

struct progress {
	const struct cfg *cfg;
	const char *model;
	uint64_t start_ms, last_ms;
};

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct progress *p = ctx;
	uint64_t now = mc_now_ms();
	double s;

	if (now - p->last_ms < PROGRESS_LOG_MS)
		return;
	p->last_ms = now;
	s = (double)(now - p->start_ms) / 1000.0;
	log_line(p->cfg, "info", "pulling",
		 fields("model", jstr(p->model), "bytes", juint(done), "total", juint(total),
			"rate", juint(s > 0 ? (uint64_t)((double)done / s) : 0), NULL));
}

static void on_wait(void *ctx, const char *label)
{
	struct progress *p = ctx;

	log_line(p->cfg, "info", "waiting for another process downloading into this cache",
		 fields("model", jstr(p->model), "file", jstr(label), NULL));
}

/* The model is in the cache at the wanted version: pull (cheap when warm) unless offline. */
static int ensure(const struct cfg *cfg, struct mc_cache *c, const struct want *w,
		  struct mc_model_view *v, uint64_t *fetched, struct mc_err *err)
{
	struct progress pr = {cfg, w->name, mc_now_ms(), mc_now_ms()};
	struct mc_pull_opts o = {0};
	struct mc_pull_result res;
	char *first = NULL;
	int ret;

	*fetched = 0;
	if (cfg->offline) {
		ret = mc_cache_open_model(c, w->name, v, err);
		first = mc_url_redact(w->uri[0]);
		if (!ret && first && !strcmp(first, v->source)) {
			mc_free(first);
			return 0;
		}
		mc_free(first);
		if (!ret)
			mc_cache_model_release(v);
		else if (ret != MC_E_NOTFOUND)
			return ret;
		mc_err_init(err);
		log_line(cfg, "info", "not cached: pulling although MCACHE_OFFLINE is set",
			 fields("model", jstr(w->name), NULL));
	}
	o.name = w->name;
	o.uris = w->uri;
	o.nuris = w->nuri;
	o.include = w->include;
	o.ninclude = w->ninclude;
	o.exclude = w->exclude;
	o.nexclude = w->nexclude;
	mc_fetch_opts_init(&o.fetch);
	if (cfg->connections)
		o.fetch.connections = cfg->connections;
	o.fetch.max_rate = cfg->max_rate;
	o.fetch.progress = on_progress;
	o.fetch.progress_ctx = &pr;
	o.notice = on_wait;
	o.notice_ctx = &pr;
	ret = mc_cache_pull(c, &o, &res, err);
	if (ret)
		return ret;
	*fetched = res.bytes_fetched;
	return mc_cache_open_model(c, w->name, v, err);
}

/* ---- The run ---- */

struct totals {
	size_t models;
	uint64_t files, bytes, fetched;
	enum mc_place worst;
};

static int open_target(const struct cfg *cfg, int *fd, struct mc_err *err)
{
	if (mkdir(cfg->target, 0755) && errno != EEXIST)
		return mc_err_errno(err, -errno, "cannot create the target '%s'", cfg->target);
	*fd = open(cfg->target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*fd < 0)
		return mc_err_errno(err, -errno, "cannot open the target '%s'", cfg->target);
	return 0;
}

static int do_model(const struct cfg *cfg, struct mc_cache *c, int target_fd, const struct want *w,
		    struct totals *t, struct mc_err *err)
{
	struct mc_model_view v;
	enum mc_place how = MC_PLACE_NONE;
	uint64_t start = mc_now_ms(), fetched, ms;
	int ret;

	ret = ensure(cfg, c, w, &v, &fetched, err);
	if (ret)
		return ret;
	if (w->pin)
		ret = mc_cache_pin(c, w->name, true, err);
	if (!ret)
		ret = mc_cache_touch_model(c, &v, err);
	if (!ret && w->single_file)
		ret = mc_place_file(target_fd, w->dest, &v, &how, err);
	else if (!ret)
		ret = mc_place_tree(target_fd, w->dest, &v, &how, err);
	if (!ret) {
		ms = mc_now_ms() - start;
		log_line(cfg, "info", "model ready",
			 fields("model", jstr(w->name), "path", jstr(w->dest), "version",
				json_integer(v.version), "files", juint(v.nentry), "bytes",
				juint(v.bytes), "fetched", juint(fetched), "rate",
				juint(ms ? fetched * 1000 / ms : 0), "duration_ms", juint(ms),
				"materialised", jstr(mc_place_name(how)), NULL));
		t->models++;
		t->files += v.nentry;
		t->bytes += v.bytes;
		t->fetched += fetched;
		if (how > t->worst)
			t->worst = how;
	}
	mc_cache_model_release(&v);
	return ret;
}

/* What would happen, from the cache's knowledge alone: no request, nothing written. */
static int dry_run(const struct cfg *cfg, const struct want *w, size_t n, struct mc_err *err)
{
	struct mc_cache *c = NULL;
	struct mc_model_view v;
	char path[4096];
	struct stat st;
	int ret = 0;

	snprintf(path, sizeof(path), "%s/index.db", cfg->cache_dir);
	if (!stat(path, &st))
		ret = mc_cache_open2(&c, cfg->cache_dir,
				     cfg->allow_shared ? MC_CACHE_ALLOW_SHARED_DIR : 0, err);
	for (size_t i = 0; !ret && i < n; i++) {
		json_t *uris = json_array();
		bool cached = false;

		for (size_t k = 0; uris && k < w[i].nuri; k++) {
			char *r = mc_url_redact(w[i].uri[k]);

			json_array_append_new(uris, jstr(r));
			mc_free(r);
		}
		if (c && mc_cache_open_model(c, w[i].name, &v, err) == 0)
			cached = true;
		mc_err_init(err);
		printf("%s %s -> %s/%s: %s", cached ? "cached" : "pull", w[i].name, cfg->target,
		       w[i].dest,
		       cached ? (cfg->offline ? "materialise, no request"
					      : "check the origin (conditional requests), "
						"then materialise")
			      : "download, then materialise");
		if (cached)
			printf(" (version %lld, %zu files, %llu bytes)", (long long)v.version,
			       v.nentry, (unsigned long long)v.bytes);
		printf("\n");
		log_line(cfg, "info", "dry run",
			 fields("model", jstr(w[i].name), "uris", uris, "path", jstr(w[i].dest),
				"cached", json_boolean(cached), "files",
				cached ? juint(v.nentry) : NULL, "bytes",
				cached ? juint(v.bytes) : NULL, NULL));
		if (cached)
			mc_cache_model_release(&v);
	}
	mc_cache_close(c);
	return ret;
}

static int run(const struct cfg *cfg, const struct want *w, size_t n, struct totals *t,
	       struct mc_err *err)
{
	struct mc_cache *c = NULL;
	int target_fd = -1, ret;

	ret = open_target(cfg, &target_fd, err);
	if (!ret)
		ret = mc_cache_open2(&c, cfg->cache_dir,
				     cfg->allow_shared ? MC_CACHE_ALLOW_SHARED_DIR : 0, err);
	for (size_t i = 0; !ret && i < n; i++) {
		ret = do_model(cfg, c, target_fd, &w[i], t, err);
		if (!ret && mc_fetch_interrupted())
			ret = mc_err_set(err, MC_E_INTERRUPTED, "interrupted");
	}
	mc_cache_close(c);
	if (target_fd >= 0)
		close(target_fd);
	return ret;
}

int mc_init_main(const struct mc_init_args *a)
{
	struct mc_manifest man = {0};
	struct totals t = {0};
	struct want *w = NULL;
	struct cfg cfg;
	struct mc_err err;
	uint64_t start = mc_now_ms();
	const char *one_uri[1];
	char h[32];
	size_t n = 0;
	int ret, status;

	mc_err_init(&err);
	ret = read_cfg(&cfg, a, &err);
	if (!ret && cfg.manifest) {
		ret = mc_manifest_load(cfg.manifest, &man, &err);
		if (!ret)
			mc_manifest_sort(&man);
		n = man.n;
	} else if (!ret) {
		n = 1;
	}
	if (!ret) {
		w = mc_calloc(n, sizeof(*w));
		if (!w)
			ret = mc_err_set(&err, -ENOMEM, "out of memory");
	}
	for (size_t i = 0; !ret && i < n; i++) {
		if (cfg.manifest) {
			const struct mc_manifest_model *m = &man.model[i];

			w[i] = (struct want){mc_strdup(m->name),
					     (const char *const *)m->uri,
					     m->nuri,
					     (const char *const *)m->include,
					     m->ninclude,
					     (const char *const *)m->exclude,
					     m->nexclude,
					     m->pin,
					     m->name,
					     false};
		} else {
			one_uri[0] = cfg.model_url;
			w[i] = (struct want){cfg.model_name ? mc_strdup(cfg.model_name)
							    : name_for_url(cfg.model_url),
					     one_uri,
					     1,
					     NULL,
					     0,
					     NULL,
					     0,
					     false,
					     cfg.model_file,
					     true};
		}
		if (!w[i].name)
			ret = mc_err_set(&err, -ENOMEM, "out of memory");
	}
	if (!ret && cfg.dry_run)
		ret = dry_run(&cfg, w, n, &err);
	else if (!ret)
		ret = run(&cfg, w, n, &t, &err);

	status = ret ? mc_exit_code(ret) : MC_EXIT_OK;
	if (ret) {
		log_line(&cfg, "error", err.msg,
			 fields("exit", json_integer(status), "duration_ms",
				juint(mc_now_ms() - start), NULL));
		termination(&cfg, "mcache init failed (exit %d): %s\n", status, err.msg);
	} else if (!cfg.dry_run) {
		log_line(&cfg, "info", "ready",
			 fields("models", juint(t.models), "files", juint(t.files), "bytes",
				juint(t.bytes), "fetched", juint(t.fetched), "duration_ms",
				juint(mc_now_ms() - start), NULL));
		termination(
		    &cfg,
		    "mcache init: ready: %zu %s, %llu %s, %s (fetched %llu bytes) in %llu ms\n",
		    t.models, t.models == 1 ? "model" : "models", (unsigned long long)t.files,
		    t.files == 1 ? "file" : "files", mc_format_size(t.bytes, h, sizeof(h)),
		    (unsigned long long)t.fetched, (unsigned long long)(mc_now_ms() - start));
	}
	for (size_t i = 0; w && i < n; i++)
		mc_free(w[i].name);
	mc_free(w);
	mc_manifest_free(&man);
	mc_free(cfg.cache_dir);
	return status;
}
