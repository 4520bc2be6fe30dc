/*
 * mc_cache_verify(): compares the disk with the index and reports every difference, without
 * changing either. For each model's current version it checks the models/NAME symlink, each
 * tree entry (present, the same inode as its blob), what the tree holds beyond the index (stray
 * files, dangling symlinks) and each blob (present, size, inode and mtime as recorded,
 * read-only). Asked about the whole cache, it also reports blobs, temp files, models/ links and
 * trees the index does not know.
 *
 * MC_VERIFY_DEEP reads every blob: its XXH3-128 digest, the SHA-256 the origin published where
 * the index has one, and the structure of *.safetensors files (safetensors.c), so that a file
 * the origin served broken is found although its checksum matches. Reading is the cost, so it
 * runs in several threads, each file in 64 MiB parts read sequentially 4 MiB at a time (a
 * file with a SHA-256 to check is one whole-file job, since SHA-256 cannot be split); the
 * threads only read and hash into memory that the calling thread allocated, and the calling
 * thread reports every finding afterwards, model by model, in path order.
 *
 * Findings carry precise expected/actual values (byte counts, inode numbers, mtimes in
 * nanoseconds, modes in octal, hex digests). Index rows are copied out before any disk work,
 * so a long deep check holds no read transaction. The one write, with MC_VERIFY_RECORD, is the
 * bookkeeping of the result (time, findings, depth) at the very end, without fsync.
 */
#include "cache_int.h"
#include "safetensors.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mc_banned.h"

/* Deep reading: blocks per job, bytes per read, and the thread count (default and limit). */
#define SEG_BLOCKS	    64
#define READ_BYTES	    (4u * MC_HASH_BLOCK)
#define DEFAULT_THREADS_MAX 4
#define MAX_THREADS	    64

/* What one checked model found, for MC_VERIFY_RECORD. */
struct model_done {
	const char *name;
	uint64_t findings;
};

struct verify {
	struct mc_cache *c;
	const struct mc_verify_opts *o;
	struct mc_verify_result *res;
	uint64_t model_findings; /* findings of the model being checked */
	int nomem;		 /* -ENOMEM when a check could not run: an error, not a finding */
	unsigned nbuf;		 /* deep: read buffers, one per thread */
	uint8_t *buf[MAX_THREADS];
	sqlite3_stmt *has_model;   /* whole-cache scans: live lookups (see scan_models) */
	sqlite3_stmt *has_version; /* ... */
	sqlite3_stmt *has_digest;  /* a download about to publish this digest */
};

static void report(struct verify *v, const char *model, const char *path, const char *kind,
		   const char *expected, const char *actual)
{
	struct mc_finding f = {
	    .model = model,
	    .path = path,
	    .kind = kind,
	    .expected = expected,
	    .actual = actual,
	};

	v->res->findings++;
	if (*model)
		v->model_findings++;
	if (v->o->cb)
		v->o->cb(v->o->ctx, &f);
}

/*
 * Checks that models/@name points at the tree of @version, and that the tree is there
 * (@have_tree) when it does.
 */
static void check_link(struct verify *v, const char *name, int64_t version, bool have_tree)
{
	char target[200], link[200], path[160];
	ssize_t len;

	mc_store_link_target(name, version, target, sizeof(target));
	snprintf(path, sizeof(path), "models/%s", name);
	len = readlinkat(v->c->models_fd, name, link, sizeof(link) - 1);
	if (len < 0) {
		report(v, name, path, "missing", target, "");
		goto out;
	}
	link[len] = '\0';
	if (strcmp(link, target))
		report(v, name, path, "not-linked", target, link);
	else if (!have_tree)
		report(v, name, path, "dangling-link", target, "");
out:
	return;
}

/* Checks one file of a model: its tree entry in @vfd (-1 when the tree is gone) and its blob. */
static bool check_file(struct verify *v, const char *name, const char *where, int vfd,
		       const struct mc_tree_entry *e)
{
	char rel[MC_BLOB_REL_MAX], exp[128], act[128], tree[4400];
	struct stat tst, bst;
	const char *leaf;
	bool have_tree = false, deep = false;
	int parent;

	if (vfd >= 0) {
		parent = mc_store_open_parent(vfd, e->path, &leaf);
		if (parent >= 0) {
			have_tree = fstatat(parent, leaf, &tst, AT_SYMLINK_NOFOLLOW) == 0;
			close(parent);
		}
	}
	if (!have_tree) {
		snprintf(tree, sizeof(tree), "%s/%s", where, e->path);
		report(v, name, e->path, "missing", tree, "");
	}
	if (mc_store_blob_rel_hex(e->hex, rel) ||
	    fstatat(v->c->blobs_fd, rel, &bst, AT_SYMLINK_NOFOLLOW)) {
		snprintf(exp, sizeof(exp), "blobs/%.2s/%s", e->hex, e->hex);
		report(v, name, e->path, "missing", exp, "");
		goto out;
	}
	if (have_tree && (tst.st_ino != bst.st_ino || tst.st_dev != bst.st_dev)) {
		snprintf(exp, sizeof(exp), "inode %llu", (unsigned long long)bst.st_ino);
		snprintf(act, sizeof(act), "inode %llu", (unsigned long long)tst.st_ino);
		report(v, name, e->path, "not-linked", exp, act);
	}
	if ((uint64_t)bst.st_size != e->size) {
		snprintf(exp, sizeof(exp), "%llu", (unsigned long long)e->size);
		snprintf(act, sizeof(act), "%llu", (unsigned long long)bst.st_size);
		report(v, name, e->path, "size", exp, act);
	} else if ((uint64_t)bst.st_ino != e->inode || mc_store_mtime_ns(&bst) != e->mtime_ns) {
		snprintf(exp, sizeof(exp), "inode %llu mtime_ns %lld", (unsigned long long)e->inode,
			 (long long)e->mtime_ns);
		snprintf(act, sizeof(act), "inode %llu mtime_ns %lld",
			 (unsigned long long)bst.st_ino, (long long)mc_store_mtime_ns(&bst));
		report(v, name, e->path, "changed", exp, act);
	}
	if (bst.st_mode & 0222) {
		snprintf(act, sizeof(act), "%04o", (unsigned)(bst.st_mode & 07777));
		report(v, name, e->path, "not-readonly", "0444", act);
	}
	/* A blob of the wrong size already has its finding; reading it would add nothing. */
	deep = S_ISREG(bst.st_mode) && (uint64_t)bst.st_size == e->size;
out:
	return deep;
}

/* A path, or a leading part of one, not NUL-terminated at len. */
struct pstr {
	const char *p;
	size_t len;
};

static int cmp_pstr(const void *a, const void *b)
{
	const struct pstr *x = a, *y = b;
	int r = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);

	return r ? r : (x->len > y->len) - (x->len < y->len);
}

static bool pstr_has(const struct pstr *set, size_t n, const char *p, size_t len)
{
	struct pstr key = {p, len};

	return n && bsearch(&key, set, n, sizeof(*set), cmp_pstr) != NULL;
}

/*
 * Reports the entries of directory @dir (@dlen bytes of a model path, 0 for the tree's root,
 * open as @dfd) that are neither a listed file nor a directory leading to one.
 */
static void scan_tree_dir(struct verify *v, const char *name, int dfd, const char *dir, size_t dlen,
			  const struct pstr *files, size_t nfiles, const struct pstr *dirs,
			  size_t ndirs)
{
	char path[4400], link[4200], act[4300];
	struct dirent *d;
	struct stat st;
	size_t len;
	DIR *dp;
	ssize_t n;

	dp = fdopendir(dfd);
	if (!dp) {
		close(dfd);
		return;
	}
	while ((d = readdir(dp)) != NULL) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		len = (size_t)snprintf(path, sizeof(path), "%.*s%s%s", (int)dlen, dir,
				       dlen ? "/" : "", d->d_name);
		if (len >= sizeof(path) || pstr_has(files, nfiles, path, len) ||
		    pstr_has(dirs, ndirs, path, len))
			continue;
		if (fstatat(dirfd(dp), d->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue; /* gone meanwhile */
		if (S_ISLNK(st.st_mode)) {
			n = readlinkat(dirfd(dp), d->d_name, link, sizeof(link) - 1);
			link[n < 0 ? 0 : n] = '\0';
			snprintf(act, sizeof(act), "symlink to %s", link);
			/* Resolving it only reads: a dangling link is worth its own kind. */
			report(v, name, path,
			       fstatat(dirfd(dp), d->d_name, &st, 0) && errno == ENOENT
				   ? "dangling-link"
				   : "stray",
			       "", act);
		} else if (S_ISDIR(st.st_mode)) {
			report(v, name, path, "stray", "", "directory");
		} else if (S_ISREG(st.st_mode)) {
			snprintf(act, sizeof(act), "file of %llu bytes",
				 (unsigned long long)st.st_size);
			report(v, name, path, "stray", "", act);
		} else {
			report(v, name, path, "stray", "", "other");
		}
	}
	closedir(dp);
}

/*
 * Reports what the tree @vfd holds beyond @e[0..n): each directory that leads to a listed file
 * is listed in turn, one open directory at a time (a deep path must not cost an fd per level).
 */
static int check_strays(struct verify *v, const char *name, int vfd, const struct mc_tree_entry *e,
			size_t n)
{
	struct pstr *files = NULL, *dirs = NULL;
	size_t ndirs = 0, cap = 0;
	const char *leaf;
	char path[4200];
	int fd, parent, ret = 0;

	files = mc_calloc(n ? n : 1, sizeof(*files));
	for (size_t i = 0; files && i < n; i++) {
		files[i] = (struct pstr){e[i].path, strlen(e[i].path)};
		for (size_t k = 0; k < files[i].len; k++)
			cap += e[i].path[k] == '/';
	}
	dirs = mc_calloc(cap ? cap : 1, sizeof(*dirs));
	if (!files || !dirs) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < files[i].len; k++)
			if (e[i].path[k] == '/')
				dirs[ndirs++] = (struct pstr){e[i].path, k};
	qsort(files, n, sizeof(*files), cmp_pstr);
	qsort(dirs, ndirs, sizeof(*dirs), cmp_pstr);
	cap = ndirs;
	ndirs = 0;
	for (size_t i = 0; i < cap; i++)
		if (ndirs == 0 || cmp_pstr(&dirs[ndirs - 1], &dirs[i]))
			dirs[ndirs++] = dirs[i];
	fd = fcntl(vfd, F_DUPFD_CLOEXEC, 0);
	if (fd >= 0)
		scan_tree_dir(v, name, fd, "", 0, files, n, dirs, ndirs);
	for (size_t i = 0; i < ndirs; i++) {
		if (dirs[i].len >= sizeof(path))
			continue;
		snprintf(path, sizeof(path), "%.*s", (int)dirs[i].len, dirs[i].p);
		/* Gone or not a directory: check_file() reports the files beneath as missing. */
		parent = mc_store_open_parent(vfd, path, &leaf);
		if (parent < 0)
			continue;
		fd = mc_store_open_dir(parent, leaf, false, NULL);
		close(parent);
		if (fd >= 0)
			scan_tree_dir(v, name, fd, dirs[i].p, dirs[i].len, files, n, dirs, ndirs);
	}
out:
	mc_free(files);
	mc_free(dirs);
	return ret;
}

/* Deep checks: one file, and one job (a part of a file) for the reading threads. */
struct deep_file {
	const struct mc_tree_entry *e;
	char rel[MC_BLOB_REL_MAX];
	const char *sha256; /* what the origin published, lowercase hex; NULL for none */
	uint8_t *blocks;    /* the block digests, filled by the jobs */
	uint8_t sha[32];
	int ret; /* the first failure reading it */
};

struct deep_job {
	struct deep_file *f;
	uint64_t first;
	uint64_t count;
};

struct pool {
	pthread_mutex_t lock;
	int blobs_fd;
	struct deep_job *job;
	size_t njob;
	size_t next;
	bool stop;
	uint64_t bytes;
};

struct worker {
	struct pool *p;
	uint8_t *buf;
	pthread_t thread;
};

/* Reads and hashes one part of a file. Runs in any thread: it allocates nothing. */
static void run_job(struct pool *p, struct deep_job *j, uint8_t *buf)
{
	struct deep_file *f = j->f;
	uint64_t off = j->first * MC_HASH_BLOCK, end = (j->first + j->count) * MC_HASH_BLOCK;
	int fd, ret;

	if (end > f->e->size)
		end = f->e->size;
	fd = openat(p->blobs_fd, f->rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		ret = -errno;
	} else {
		posix_fadvise(fd, (off_t)off, (off_t)(end - off), POSIX_FADV_SEQUENTIAL);
		ret = mc_digest_blocks(fd, f->e->size, j->first, j->count,
				       f->blocks + j->first * MC_DIGEST_LEN,
				       f->sha256 ? f->sha : NULL, buf, READ_BYTES);
		close(fd);
	}
	pthread_mutex_lock(&p->lock);
	if (ret && !f->ret)
		f->ret = ret;
	if (ret == MC_E_INTERRUPTED)
		p->stop = true;
	if (!ret)
		p->bytes += end - off;
	pthread_mutex_unlock(&p->lock);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct pool *p = w->p;
	struct deep_job *j;

	for (;;) {
		pthread_mutex_lock(&p->lock);
		j = !p->stop && p->next < p->njob ? &p->job[p->next++] : NULL;
		pthread_mutex_unlock(&p->lock);
		if (!j)
			break;
		run_job(p, j, w->buf);
	}
	return NULL;
}

/*
 * Splits @f[0..n) into jobs, whole-file jobs (SHA-256) first since they take longest, and runs
 * them on v->nbuf threads, the calling thread being one. Returns 0, -ENOMEM, or
 * MC_E_INTERRUPTED when a signal stopped the reading.
 */
static int run_pool(struct verify *v, struct deep_file *f, size_t n)
{
	struct worker w[MAX_THREADS];
	struct pool p = {.blobs_fd = v->c->blobs_fd};
	size_t njob = 0, started = 1;
	uint64_t t0 = mc_now_ms(), nb;

	for (size_t i = 0; i < n; i++) {
		nb = (f[i].e->size + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK;
		njob += f[i].sha256 || !nb ? 1 : (nb + SEG_BLOCKS - 1) / SEG_BLOCKS;
	}
	p.job = mc_calloc(njob ? njob : 1, sizeof(*p.job));
	if (!p.job)
		return -ENOMEM;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			nb = (f[i].e->size + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK;
			if ((pass == 0) != (f[i].sha256 != NULL))
				continue;
			if (f[i].sha256 || !nb) {
				p.job[p.njob++] = (struct deep_job){&f[i], 0, nb};
				continue;
			}
			for (uint64_t b = 0; b < nb; b += SEG_BLOCKS)
				p.job[p.njob++] = (struct deep_job){
				    &f[i], b, nb - b < SEG_BLOCKS ? nb - b : SEG_BLOCKS};
		}
	}
	pthread_mutex_init(&p.lock, NULL);
	w[0] = (struct worker){&p, v->buf[0], pthread_self()};
	/* A thread that cannot start leaves its share to the others. */
	for (unsigned i = 1; i < v->nbuf && i < p.njob; i++) {
		w[started] = (struct worker){&p, v->buf[i], pthread_self()};
		if (pthread_create(&w[started].thread, NULL, worker_main, &w[started]) == 0)
			started++;
	}
	worker_main(&w[0]);
	for (size_t i = 1; i < started; i++)
		pthread_join(w[i].thread, NULL);
	pthread_mutex_destroy(&p.lock);
	if ((unsigned)started > v->res->threads)
		v->res->threads = (unsigned)started;
	v->res->bytes_hashed += p.bytes;
	v->res->hash_ms += mc_now_ms() - t0;
	mc_free(p.job);
	/* Jobs never run left their files' digests unset: nothing may be reported from them. */
	return p.stop ? MC_E_INTERRUPTED : 0;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && !strcmp(s + n - k, suffix);
}

/* The structure of the safetensors file @f (read in this thread: the header is small). */
static void check_safetensors(struct verify *v, const char *name, const struct deep_file *f)
{
	struct mc_safetensors_report r;
	int fd, ret;

	fd = openat(v->c->blobs_fd, f->rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return; /* the digest check already said it is unreadable */
	ret = mc_safetensors_check_fd(fd, f->e->size, &r);
	close(fd);
	if (ret == MC_E_INTEGRITY)
		report(v, name, f->e->path, "safetensors", r.expected, r.actual);
	else if (ret == -ENOMEM)
		v->nomem = ret;
}

/* Reports what the reading found for @f[0..n), in order. */
static int report_deep(struct verify *v, const char *name, struct deep_file *f, size_t n)
{
	uint8_t digest[MC_DIGEST_LEN];
	char hex[MC_DIGEST_HEX], sha[65], why[96];

	for (size_t i = 0; i < n && !v->nomem; i++) {
		if (f[i].ret == MC_E_INTERRUPTED)
			return MC_E_INTERRUPTED;
		if (f[i].ret == -ENOMEM) {
			v->nomem = -ENOMEM;
			break;
		}
		if (f[i].ret) {
			snprintf(why, sizeof(why), "unreadable: %s",
				 f[i].ret < 0 ? strerror(-f[i].ret) : "error");
			report(v, name, f[i].e->path, "digest", f[i].e->hex, why);
			continue;
		}
		mc_digest_combine(f[i].blocks, (f[i].e->size + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK,
				  f[i].e->size, digest);
		mc_hex(digest, MC_DIGEST_LEN, hex);
		if (strcmp(hex, f[i].e->hex))
			report(v, name, f[i].e->path, "digest", f[i].e->hex, hex);
		if (f[i].sha256) {
			mc_hex(f[i].sha, 32, sha);
			if (strcmp(sha, f[i].sha256))
				report(v, name, f[i].e->path, "sha256", f[i].sha256, sha);
		}
		if (ends_with(f[i].e->path, ".safetensors"))
			check_safetensors(v, name, &f[i]);
	}
	return 0;
}

/* The SHA-256 the origin published for each of @e[0..n) (sorted by path), in @sha[i]. */
static int read_sha256(struct verify *v, int64_t version, const struct mc_tree_entry *e, size_t n,
		       char (*sha)[65], struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	const char *path, *hex;
	size_t lo, hi, mid;
	int rc, ret = 0;

	rc = sqlite3_prepare_v2(v->c->db,
				"SELECT path, lower(sha256) FROM files"
				" WHERE version_id = ?1 AND length(sha256) = 64",
				-1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(s, 1, version);
		while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
			path = mc_index_text(s, 0);
			hex = mc_index_text(s, 1);
			for (lo = 0, hi = n; lo < hi;) {
				mid = lo + (hi - lo) / 2;
				if (strcmp(e[mid].path, path) < 0)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (lo < n && !strcmp(e[lo].path, path))
				snprintf(sha[lo], sizeof(sha[lo]), "%s", hex);
		}
	}
	if (rc != SQLITE_DONE)
		ret = mc_index_fail(v->c, rc, err, "read the SHA-256 of version %lld",
				    (long long)version);
	sqlite3_finalize(s);
	return ret;
}

/* Reads the blobs of @e[i] for which @deep[i] is set, then reports, in path order. */
static int check_deep(struct verify *v, const char *name, int64_t version,
		      const struct mc_tree_entry *e, size_t n, const bool *deep, struct mc_err *err)
{
	struct deep_file *f = NULL;
	char(*sha)[65] = NULL;
	size_t nf = 0;
	int ret;

	f = mc_calloc(n ? n : 1, sizeof(*f));
	sha = mc_calloc(n ? n : 1, sizeof(*sha));
	if (!f || !sha) {
		ret = -ENOMEM;
		goto out;
	}
	ret = read_sha256(v, version, e, n, sha, err);
	if (ret)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (!deep[i] || mc_store_blob_rel_hex(e[i].hex, f[nf].rel))
			continue;
		f[nf].e = &e[i];
		f[nf].sha256 = sha[i][0] ? sha[i] : NULL;
		f[nf].blocks =
		    mc_malloc((e[i].size + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK * MC_DIGEST_LEN + 1);
		if (!f[nf++].blocks) {
			ret = -ENOMEM;
			goto out;
		}
	}
	ret = run_pool(v, f, nf);
	if (!ret)
		ret = report_deep(v, name, f, nf);
out:
	if (ret == -ENOMEM)
		v->nomem = ret, ret = 0;
	if (ret == MC_E_INTERRUPTED)
		mc_err_set(err, ret, "interrupted");
	for (size_t i = 0; f && i < nf; i++)
		mc_free(f[i].blocks);
	mc_free(f);
	mc_free(sha);
	return ret;
}

static int check_model(struct verify *v, const char *name, int64_t version, struct mc_err *err)
{
	struct mc_tree_entry *e = NULL;
	char vname[24], where[200];
	bool *deep = NULL;
	size_t n = 0;
	int mfd, vfd = -1, ret;

	ret = mc_index_tree_entries(v->c, version, &e, &n, err);
	if (ret)
		goto out;
	snprintf(vname, sizeof(vname), "%lld", (long long)version);
	snprintf(where, sizeof(where), "trees/%s/%s", name, vname);
	mfd = mc_store_open_dir(v->c->trees_fd, name, false, NULL);
	if (mfd >= 0) {
		vfd = mc_store_open_dir(mfd, vname, false, NULL);
		close(mfd);
	}
	check_link(v, name, version, vfd >= 0);
	deep = mc_calloc(n ? n : 1, sizeof(*deep));
	if (!deep) {
		v->nomem = -ENOMEM;
		goto out_close;
	}
	for (size_t i = 0; i < n && !v->nomem; i++)
		deep[i] = check_file(v, name, where, vfd, &e[i]);
	if (vfd >= 0 && !v->nomem && check_strays(v, name, vfd, e, n))
		v->nomem = -ENOMEM;
	if ((v->o->flags & MC_VERIFY_DEEP) && !v->nomem)
		ret = check_deep(v, name, version, e, n, deep, err);
	v->res->files += n;
out_close:
	if (vfd >= 0)
		close(vfd);
	mc_free(deep);
	mc_tree_entries_free(e, n);
	if (!ret && v->nomem)
		ret = mc_err_set(err, -ENOMEM, "out of memory while verifying '%s'", name);
out:
	return ret;
}

/* Runs the one-parameter existence query @s (a cached or a verify-owned one) for @key. */
static int lookup(struct mc_cache *c, sqlite3_stmt *s, const char *key, int64_t num, bool *found,
		  struct mc_err *err)
{
	int rc, ret = 0;

	sqlite3_reset(s);
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_bind_parameter_count(s) > 1)
		sqlite3_bind_int64(s, 2, num);
	rc = sqlite3_step(s);
	*found = rc == SQLITE_ROW;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = mc_index_fail(c, rc, err, "look up '%s'", key);
	sqlite3_reset(s);
	return ret;
}

/* Runs the one-parameter existence query @id for @key into *found. */
static int index_has(struct mc_cache *c, enum mc_stmt id, const char *key, bool *found,
		     struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int ret;

	ret = mc_index_stmt(c, id, &s, err);
	if (!ret)
		ret = lookup(c, s, key, 0, found, err);
	return ret;
}

static bool is_lower_hex(const char *s, size_t len)
{
	return strlen(s) == len && strspn(s, "0123456789abcdef") == len;
}

/* Reports every entry of blobs/@ab that is not a blob the index knows. */
static int scan_blob_dir(struct verify *v, const char *ab, struct mc_err *err)
{
	char path[MC_BLOB_REL_MAX + 300];
	struct dirent *d;
	bool found;
	DIR *dir;
	int fd, ret = 0;

	fd = mc_store_open_dir(v->c->blobs_fd, ab, false, NULL);
	if (fd == -ENOTDIR) {
		snprintf(path, sizeof(path), "blobs/%s", ab);
		report(v, "", path, "orphan-blob", "", "");
		goto out;
	}
	dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		ret = mc_err_errno(err, fd < 0 ? fd : -errno, "cannot read '%s/blobs/%s'",
				   v->c->dir, ab);
		if (fd >= 0)
			close(fd);
		goto out;
	}
	while ((d = readdir(dir)) != NULL) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		found = false;
		if (is_lower_hex(d->d_name, 2 * MC_DIGEST_LEN) && !strncmp(d->d_name, ab, 2)) {
			ret = index_has(v->c, MC_STMT_BLOB_GET, d->d_name, &found, err);
			/* A publisher records its digest, renames, then commits the blob row. */
			if (!ret && !found)
				ret = lookup(v->c, v->has_digest, d->d_name, 0, &found, err);
			if (ret)
				break;
		}
		if (!found) {
			snprintf(path, sizeof(path), "blobs/%s/%s", ab, d->d_name);
			report(v, "", path, "orphan-blob", "", "");
		}
	}
	closedir(dir);
out:
	return ret;
}

/* Opens a directory stream on a dup of @fd, or fails naming @what. */
static DIR *open_stream(struct verify *v, int fd, const char *what, int *ret, struct mc_err *err)
{
	int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	DIR *dir = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;

	if (!dir) {
		*ret = mc_err_errno(err, -errno, "cannot read '%s/%s'", v->c->dir, what);
		if (dup_fd >= 0)
			close(dup_fd);
	}
	return dir;
}

/* Reports files under blobs/ and tmp/ that the index does not account for. */
static int scan_orphans(struct verify *v, struct mc_err *err)
{
	char path[300];
	struct dirent *d;
	bool found;
	DIR *dir;
	int ret = 0;

	dir = open_stream(v, v->c->blobs_fd, "blobs", &ret, err);
	if (!dir)
		goto out;
	while (!ret && (d = readdir(dir)) != NULL) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		if (is_lower_hex(d->d_name, 2)) {
			ret = scan_blob_dir(v, d->d_name, err);
		} else {
			snprintf(path, sizeof(path), "blobs/%s", d->d_name);
			report(v, "", path, "orphan-blob", "", "");
		}
	}
	closedir(dir);
	if (ret)
		goto out;
	dir = open_stream(v, v->c->tmp_fd, "tmp", &ret, err);
	if (!dir)
		goto out;
	while (!ret && (d = readdir(dir)) != NULL) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		ret = index_has(v->c, MC_STMT_DOWNLOAD_BY_TMP, d->d_name, &found, err);
		if (!ret && !found) {
			snprintf(path, sizeof(path), "tmp/%s", d->d_name);
			report(v, "", path, "orphan-tmp", "", "");
		}
	}
	closedir(dir);
out:
	return ret;
}

/* True for "<positive decimal>" or, with @json, "<positive decimal>.json"; sets *id. */
static bool version_name(const char *s, int64_t *id, bool *json)
{
	size_t n = strspn(s, "0123456789");

	*json = !strcmp(s + n, ".json");
	if (n == 0 || n > 18 || s[0] == '0' || (s[n] && !*json))
		return false;
	*id = strtoll(s, NULL, 10);
	return true;
}

/*
 * Reports entries of trees/@name (a model the index has) that are no version of it. Lookups are
 * live, not from the list read at the start: a pull may have begun since.
 */
static int scan_model_tree(struct verify *v, const char *name, struct mc_err *err)
{
	char path[600];
	struct dirent *d;
	bool found, json;
	int64_t id;
	DIR *dir;
	int fd, ret = 0;

	fd = mc_store_open_dir(v->c->trees_fd, name, false, NULL);
	dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		snprintf(path, sizeof(path), "trees/%s", name);
		report(v, "", path, "orphan-tree", "", "not a directory");
		return 0;
	}
	while (!ret && (d = readdir(dir)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		found = false;
		if (version_name(d->d_name, &id, &json))
			ret = lookup(v->c, v->has_version, name, id, &found, err);
		if (!ret && !found) {
			snprintf(path, sizeof(path), "trees/%s/%s", name, d->d_name);
			report(v, "", path, "orphan-tree", "", "");
		}
	}
	closedir(dir);
	return ret;
}

/* Reports entries of models/ and trees/ that name no model (or no version of one). */
static int scan_models(struct verify *v, struct mc_err *err)
{
	char path[600], link[300];
	struct dirent *d;
	bool found;
	ssize_t n;
	DIR *dir;
	int ret = 0;

	dir = open_stream(v, v->c->models_fd, "models", &ret, err);
	if (!dir)
		goto out;
	while (!ret && (d = readdir(dir)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		ret = lookup(v->c, v->has_model, d->d_name, 0, &found, err);
		if (ret || found)
			continue;
		n = readlinkat(dirfd(dir), d->d_name, link, sizeof(link) - 1);
		link[n < 0 ? 0 : n] = '\0';
		snprintf(path, sizeof(path), "models/%s", d->d_name);
		report(v, "", path, "orphan-link", "", n < 0 ? "not a symlink" : link);
	}
	closedir(dir);
	if (ret)
		goto out;
	dir = open_stream(v, v->c->trees_fd, "trees", &ret, err);
	if (!dir)
		goto out;
	while (!ret && (d = readdir(dir)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		ret = lookup(v->c, v->has_model, d->d_name, 0, &found, err);
		if (!ret && found) {
			ret = scan_model_tree(v, d->d_name, err);
		} else if (!ret) {
			snprintf(path, sizeof(path), "trees/%s", d->d_name);
			report(v, "", path, "orphan-tree", "", "");
		}
	}
	closedir(dir);
out:
	return ret;
}

/* Prepares the whole-cache scans' own statements (not cached: verify is their only user). */
static int prepare_scans(struct verify *v, struct mc_err *err)
{
	static const char *const sql[] = {
	    "SELECT 1 FROM models WHERE name = ?1",
	    "SELECT 1 FROM versions v JOIN models m ON m.id = v.model_id"
	    " WHERE m.name = ?1 AND v.id = ?2",
	    "SELECT 1 FROM downloads WHERE digest = ?1",
	};
	sqlite3_stmt **out[] = {&v->has_model, &v->has_version, &v->has_digest};
	int rc;

	for (size_t i = 0; i < 3; i++) {
		rc = sqlite3_prepare_v2(v->c->db, sql[i], -1, out[i], NULL);
		if (rc != SQLITE_OK)
			return mc_index_fail(v->c, rc, err, "prepare a statement");
	}
	return 0;
}

/* Resolves @names[0..n) (all models when n == 0) to rows, refusing unknown names. */
static int select_models(struct mc_cache *c, const char *const *names, size_t n,
			 struct mc_model_row **out, size_t *nout, struct mc_err *err)
{
	struct mc_model_row *all = NULL, *sel = NULL;
	size_t nall = 0, j;
	int ret;

	ret = mc_index_models(c, &all, &nall, err);
	if (ret || n == 0)
		goto out;
	sel = mc_calloc(n, sizeof(*sel));
	if (!sel) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		for (j = 0; j < nall && strcmp(all[j].name, names[i]); j++)
			;
		if (j == nall) {
			ret = mc_err_set(err, MC_E_NOTFOUND, "no model '%.200s' in the cache",
					 names[i]);
			goto out;
		}
		sel[i] = all[j];
		sel[i].name = mc_strdup(all[j].name);
		sel[i].state = mc_strdup(all[j].state);
		if (!sel[i].name || !sel[i].state) {
			ret = mc_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	mc_model_rows_free(all, nall);
	all = sel;
	nall = n;
	sel = NULL;
out:
	if (!ret) {
		*out = all;
		*nout = nall;
	} else {
		mc_model_rows_free(all, nall);
	}
	if (sel)
		mc_model_rows_free(sel, n);
	return ret;
}

/* Sets stats key @key to @value (inside the caller's transaction). */
static int put_stat(struct mc_cache *c, sqlite3_stmt *s, const char *key, int64_t value,
		    struct mc_err *err)
{
	sqlite3_reset(s);
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, value);
	return mc_index_exec(c, s, "record the verify result", err);
}

/*
 * MC_VERIFY_RECORD: each checked model's time, findings and depth and, for a whole-cache check,
 * the cache-wide result, in one transaction. Bookkeeping that a power cut may lose: no fsync.
 */
static int record(struct verify *v, const struct model_done *done, size_t n, bool whole,
		  struct mc_err *err)
{
	sqlite3_stmt *m = NULL, *s = NULL;
	int64_t deep = (v->o->flags & MC_VERIFY_DEEP) != 0;
	int rc, ret;

	mc_index_durable(v->c, false);
	ret = mc_index_begin(v->c, err);
	if (ret)
		goto out;
	rc = sqlite3_prepare_v2(v->c->db,
				"UPDATE models SET verified_at = ?2, verify_findings = ?3,"
				" verify_deep = ?4 WHERE name = ?1",
				-1, &m, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(v->c->db,
					"INSERT OR REPLACE INTO stats(key, value) VALUES(?1, ?2)",
					-1, &s, NULL);
	if (rc != SQLITE_OK) {
		ret = mc_index_fail(v->c, rc, err, "record the verify result");
		goto out_rollback;
	}
	for (size_t i = 0; !ret && i < n; i++) {
		sqlite3_reset(m);
		sqlite3_bind_text(m, 1, done[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_int64(m, 2, v->res->at);
		sqlite3_bind_int64(m, 3, (int64_t)done[i].findings);
		sqlite3_bind_int64(m, 4, deep);
		ret = mc_index_exec(v->c, m, "record the verify result", err);
	}
	if (!ret && whole)
		ret = put_stat(v->c, s, "verified_at", v->res->at, err);
	if (!ret && whole)
		ret = put_stat(v->c, s, "verify_findings", (int64_t)v->res->findings, err);
	if (!ret && whole)
		ret = put_stat(v->c, s, "verify_deep", deep, err);
	if (!ret)
		ret = mc_index_commit(v->c, err);
	if (!ret)
		goto out;
out_rollback:
	mc_index_rollback(v->c);
out:
	sqlite3_finalize(m);
	sqlite3_finalize(s);
	mc_index_durable(v->c, true);
	return ret;
}

/* The deep threads' count and read buffers, allocated here, in the calling thread. */
static int alloc_buffers(struct verify *v, struct mc_err *err)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned n = v->o->threads;

	if (!n)
		n = cpus < 2			 ? 2
		    : cpus > DEFAULT_THREADS_MAX ? DEFAULT_THREADS_MAX
						 : (unsigned)cpus;
	if (n > MAX_THREADS)
		n = MAX_THREADS;
	for (v->nbuf = 0; v->nbuf < n; v->nbuf++) {
		v->buf[v->nbuf] = mc_malloc(READ_BYTES);
		if (!v->buf[v->nbuf])
			return mc_err_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}

int mc_cache_verify2(struct mc_cache *c, const struct mc_verify_opts *o,
		     struct mc_verify_result *res, struct mc_err *err)
{
	struct verify v = {.c = c, .o = o, .res = res};
	struct mc_model_row *rows = NULL;
	struct model_done *done = NULL;
	size_t nrows = 0, ndone = 0;
	int ret;

	memset(res, 0, sizeof(*res));
	res->at = mc_now_unix();
	ret = select_models(c, o->names, o->n, &rows, &nrows, err);
	if (ret)
		goto out;
	done = mc_calloc(nrows ? nrows : 1, sizeof(*done));
	if (!done) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (o->flags & MC_VERIFY_DEEP)
		ret = alloc_buffers(&v, err);
	if (!ret && o->n == 0)
		ret = prepare_scans(&v, err);
	/* A model never completed promises nothing on disk yet. */
	for (size_t i = 0; !ret && i < nrows; i++) {
		if (!rows[i].current)
			continue;
		if (mc_fetch_interrupted()) {
			ret = mc_err_set(err, MC_E_INTERRUPTED, "interrupted");
			break;
		}
		v.model_findings = 0;
		ret = check_model(&v, rows[i].name, rows[i].current, err);
		res->models++;
		done[ndone++] = (struct model_done){rows[i].name, v.model_findings};
	}
	if (!ret && o->n == 0)
		ret = scan_orphans(&v, err);
	if (!ret && o->n == 0)
		ret = scan_models(&v, err);
	if (!ret && mc_fetch_interrupted())
		ret = mc_err_set(err, MC_E_INTERRUPTED, "interrupted");
	if (!ret && (o->flags & MC_VERIFY_RECORD))
		ret = record(&v, done, ndone, o->n == 0, err);
out:
	sqlite3_finalize(v.has_model);
	sqlite3_finalize(v.has_version);
	sqlite3_finalize(v.has_digest);
	for (unsigned i = 0; i < v.nbuf; i++)
		mc_free(v.buf[i]);
	mc_free(done);
	mc_model_rows_free(rows, nrows);
	return ret;
}

int mc_cache_verify(struct mc_cache *c, const char *const *names, size_t n, unsigned flags,
		    void (*cb)(void *ctx, const struct mc_finding *f), void *ctx,
		    uint64_t *nfindings, struct mc_err *err)
{
	struct mc_verify_opts o = {.names = names, .n = n, .flags = flags, .cb = cb, .ctx = ctx};
	struct mc_verify_result res;
	int ret;

	ret = mc_cache_verify2(c, &o, &res, err);
	if (nfindings)
		*nfindings = res.findings;
	return ret;
}
