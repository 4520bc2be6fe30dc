/*
 * Sessions and leases: how processes sharing one cache directory (init containers of several
 * pods, a prewarm DaemonSet, an operator's CLI) tell a live owner from a dead one, without a
 * daemon.
 *
 * Every process with the cache open has a row in `sessions`: pid, boot id, PID namespace, the
 * process's start time, and a heartbeat. A download (and a version being pulled) names the
 * session that owns it. The owner is alive when:
 *  - it runs on this boot and in our PID namespace: its pid exists with the same start time
 *    (a recycled pid does not count); this is exact and immediate after a SIGKILL;
 *  - otherwise (another pod's PID namespace, another node on a network filesystem): its
 *    heartbeat, written every MC_HEARTBEAT_S while it works, is younger than MC_LEASE_TTL_S.
 * Temp files are also flock()ed by their writer; the kernel drops that lock when a process
 * dies. Either signal saying "alive" makes others wait, so a filesystem that ignores flock
 * still sees one writer per download, and a lease misjudged dead costs bandwidth, not
 * correctness (a download that changed hands is rehashed from disk before it is published).
 */
#include "cache_int.h"

#include "mc_util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mc_banned.h"

static void read_boot_id(char *buf, size_t len)
{
	ssize_t n = -1;
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		n = read(fd, buf, len - 1);
		close(fd);
	}
	if (n < 0)
		n = 0;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

/*
 * The start time of process @pid in clock ticks since boot (field 22 of /proc/PID/stat), 0
 * when there is no such process. The command name (field 2) may hold spaces and parentheses,
 * so fields are counted from the last ')'.
 */
static uint64_t start_ticks_of(long pid)
{
	char path[64], buf[1024], *p;
	unsigned long long v = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	/* After ") ": state is field 3, so field 22 is the 20th token. */
	for (int field = 3; p && field <= 22; field++) {
		p = strchr(p + 1, ' ');
		if (p && field == 22 && sscanf(p + 1, "%llu", &v) != 1)
			v = 0;
	}
	return v;
}

static uint64_t pid_ns_of_self(void)
{
	struct stat st;

	return stat("/proc/self/ns/pid", &st) ? 0 : (uint64_t)st.st_ino;
}

/* The liveness rule of the header comment, for one sessions row. */
static bool row_alive(const struct mc_cache *c, sqlite3_stmt *s, int64_t now)
{
	long pid = (long)sqlite3_column_int64(s, 0);
	const char *boot = mc_index_text(s, 1);
	uint64_t ns = (uint64_t)sqlite3_column_int64(s, 2);
	uint64_t start = (uint64_t)sqlite3_column_int64(s, 3);
	int64_t beat = sqlite3_column_int64(s, 4);

	if (c->boot_id[0] && !strcmp(boot, c->boot_id) && ns && ns == c->pid_ns)
		return pid > 0 && start && start_ticks_of(pid) == start;
	return now - beat <= MC_LEASE_TTL_S;
}

bool mc_session_alive(struct mc_cache *c, int64_t id)
{
	sqlite3_stmt *s = NULL;
	bool alive = true;
	int rc;

	if (id == c->session_id)
		return id != 0;
	if (!id)
		return false;
	if (sqlite3_prepare_v2(c->db,
			       "SELECT pid, boot_id, pid_ns, start_ticks, heartbeat_at"
			       " FROM sessions WHERE id = ?1",
			       -1, &s, NULL) != SQLITE_OK)
		goto out;
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_DONE)
		alive = false;
	else if (rc == SQLITE_ROW)
		alive = row_alive(c, s, mc_now_unix());
out:
	sqlite3_finalize(s);
	return alive;
}

/* Deletes the rows of dead sessions; sets c->unclean when there were any. */
static int reap(struct mc_cache *c, struct mc_err *err)
{
	sqlite3_stmt *s = NULL, *del = NULL;
	int64_t now = mc_now_unix();
	int rc, ret = 0;

	rc = sqlite3_prepare_v2(c->db,
				"SELECT pid, boot_id, pid_ns, start_ticks, heartbeat_at, id"
				" FROM sessions WHERE id <> ?1",
				-1, &s, NULL);
	if (rc == SQLITE_OK)
		rc =
		    sqlite3_prepare_v2(c->db, "DELETE FROM sessions WHERE id = ?1", -1, &del, NULL);
	if (rc != SQLITE_OK) {
		ret = mc_index_fail(c, rc, err, "read the sessions");
		goto out;
	}
	sqlite3_bind_int64(s, 1, c->session_id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (row_alive(c, s, now))
			continue;
		c->unclean = true;
		sqlite3_bind_int64(del, 1, sqlite3_column_int64(s, 5));
		rc = sqlite3_step(del);
		sqlite3_reset(del);
		if (rc != SQLITE_DONE)
			break;
	}
	if (rc != SQLITE_DONE)
		ret = mc_index_fail(c, rc, err, "reap the sessions of dead processes");
out:
	sqlite3_finalize(s);
	sqlite3_finalize(del);
	return ret;
}

int mc_session_open(struct mc_cache *c, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	read_boot_id(c->boot_id, sizeof(c->boot_id));
	c->pid_ns = pid_ns_of_self();
	c->start_ticks = start_ticks_of((long)getpid());
	c->heartbeat_at = mc_now_unix();
	/* A session row dies with the machine anyway: no fsync for it (see mc_index_durable). */
	mc_index_durable(c, false);
	ret = mc_index_begin(c, err);
	if (ret)
		goto out;
	rc =
	    sqlite3_prepare_v2(c->db,
			       "INSERT INTO sessions(pid, boot_id, pid_ns, start_ticks, started_at,"
			       " heartbeat_at) VALUES(?1, ?2, ?3, ?4, ?5, ?5)",
			       -1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(s, 1, (sqlite3_int64)getpid());
		sqlite3_bind_text(s, 2, c->boot_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, (sqlite3_int64)c->pid_ns);
		sqlite3_bind_int64(s, 4, (sqlite3_int64)c->start_ticks);
		sqlite3_bind_int64(s, 5, c->heartbeat_at);
		rc = sqlite3_step(s);
	}
	if (rc != SQLITE_DONE) {
		ret = mc_index_fail(c, rc, err, "record this process");
		goto out_rollback;
	}
	c->session_id = sqlite3_last_insert_rowid(c->db);
	ret = reap(c, err);
	/*
	 * Checked before the reaping commits: when the index is damaged the dead sessions stay,
	 * so every later open checks again (and refuses) until rebuild-index replaces it.
	 */
	if (!ret && c->unclean)
		ret = mc_index_quick_check(c, err);
	if (!ret)
		ret = mc_index_commit(c, err);
	if (!ret)
		goto out;
out_rollback:
	mc_index_rollback(c);
	c->session_id = 0;
out:
	mc_index_durable(c, true);
	sqlite3_finalize(s);
	return ret;
}

void mc_session_close(struct mc_cache *c)
{
	sqlite3_stmt *s = NULL;

	if (!c->db || !c->session_id)
		return;
	/* Leases end with the session: a later pull by anyone may take them at once. */
	mc_index_durable(c, false);
	if (sqlite3_prepare_v2(c->db, "DELETE FROM sessions WHERE id = ?1", -1, &s, NULL) ==
	    SQLITE_OK) {
		sqlite3_bind_int64(s, 1, c->session_id);
		sqlite3_step(s);
	}
	mc_index_durable(c, true);
	sqlite3_finalize(s);
	c->session_id = 0;
}

int mc_session_heartbeat(struct mc_cache *c, bool force, struct mc_err *err)
{
	int64_t now = mc_now_unix();
	sqlite3_stmt *s = NULL;
	int rc, ret = 0;

	if (!c->session_id || (!force && now - c->heartbeat_at < MC_HEARTBEAT_S))
		return 0;
	rc = sqlite3_prepare_v2(c->db, "UPDATE sessions SET heartbeat_at = ?2 WHERE id = ?1", -1,
				&s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(s, 1, c->session_id);
		sqlite3_bind_int64(s, 2, now);
		rc = sqlite3_step(s);
	}
	if (rc != SQLITE_DONE)
		ret = mc_index_fail(c, rc, err, "write a heartbeat");
	else
		c->heartbeat_at = now;
	sqlite3_finalize(s);
	return ret;
}
