/*
 * backup.c - tide_log_backup(): a consistent, compacted copy of a log
 * into a new data directory, ready to run.
 *
 * LMDB copies from one read transaction (mdb_env_copyfd2 with
 * MDB_CP_COMPACT), so the copy is the log as of one commit even while an
 * engine writes, and free pages are left out.  The copy goes to a
 * temporary file that is flushed and then renamed into place, so the
 * destination never holds half a log under the name data.mdb; the marker
 * follows, and the copy is opened again to say what it holds (which also
 * proves that it opens).
 *
 * The destination is new or empty: a backup never overwrites anything.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

/* Make @p dest (0700), or accept it if it is an empty directory; *made
 * says whether it was made here. */
static int
prepare_dest(const char *dest, int *made, char *err)
{
	struct dirent *d;
	DIR *dp;
	int files = 0;

	*made = 0;
	if (mkdir(dest, 0700) == 0) {
		*made = 1;
		return TIDE_OK;
	}
	if (errno != EEXIST)
		return tidei_err(err, TIDE_EIO, "cannot create %s: %s", dest, strerror(errno));
	if ((dp = opendir(dest)) == NULL)
		return tidei_err(err, errno == ENOTDIR ? TIDE_EINVAL : TIDE_EIO, "%s: %s", dest,
				 strerror(errno));
	while ((d = readdir(dp)) != NULL)
		if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
			files++;
	closedir(dp);
	if (files > 0)
		return tidei_err(err, TIDE_EINVAL,
				 "%s is not empty: a backup goes to a new directory (it never "
				 "overwrites a log)",
				 dest);
	return TIDE_OK;
}

static void
sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/* A failed write of the copy: a full disk says so. */
static int
write_fail(char *err, int rc, const char *dest, const char *what)
{
	char room[64];

	if (tidei_disk_full(dest, rc, room, sizeof room))
		return tidei_err(err, TIDE_EFULL, "disk full: cannot %s %s (%s)", what, dest, room);
	return tidei_err(err, TIDE_EIO, "cannot %s %s: %s", what, dest, mdb_strerror(rc));
}

/* Fill @p info from the copy, opened like any log. */
static int
describe(const char *dest, tide_backup_info *info, char *err)
{
	tidei_log_opts o = { 0 };
	tidei_log *copy;
	MDB_txn *txn;
	MDB_stat st;
	struct stat sb;
	char path[4200];
	int rc;

	o.readonly = 1;
	if ((rc = tidei_log_open(&copy, dest, &o, err)) != TIDE_OK)
		return rc;
	info->last_seq = copy->committed;
	if ((rc = tidei_log_read_begin(copy, &txn)) == TIDE_OK) {
		if (mdb_stat(txn, copy->events, &st) == 0)
			info->events = st.ms_entries;
		tidei_log_read_end(copy);
	} else {
		tidei_err(err, rc, "%s", copy->err);
	}
	tidei_log_close(copy);
	snprintf(path, sizeof path, "%s/data.mdb", dest);
	if (stat(path, &sb) == 0)
		info->size = (uint64_t)sb.st_size;
	return rc;
}

static int
log_backup_impl(const char *dir, const char *dest, tide_backup_info *info, char *err, size_t errlen)
{
	tidei_log_opts o = { 0 };
	tidei_log *src = NULL;
	tide_backup_info got;
	char msg[TIDEI_ERRLEN], tmp[4200], path[4200];
	int fd = -1, made = 0, created = 0, placed = 0, rc, mrc;

	memset(&got, 0, sizeof got);
	msg[0] = tmp[0] = '\0';
	if (dir == NULL || dest == NULL) {
		rc = tidei_err(msg, TIDE_EINVAL, "no data directory or destination");
		goto out;
	}
	o.readonly = 1;
	if ((rc = tidei_log_open(&src, dir, &o, msg)) != TIDE_OK)
		goto out;
	got.source_size = src->need_size;
	if ((rc = prepare_dest(dest, &made, msg)) != TIDE_OK)
		goto out;
	snprintf(tmp, sizeof tmp, "%s/data.mdb.tmp", dest);
	snprintf(path, sizeof path, "%s/data.mdb", dest);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		rc = tidei_err(msg, TIDE_EIO, "cannot create %s: %s", tmp, strerror(errno));
		goto out;
	}
	created = 1;
	mrc = mdb_env_copyfd2(src->env, fd, MDB_CP_COMPACT);
	if (mrc == MDB_MAP_RESIZED) {
		/* the engine grew the map since the log was opened: adopt its
		 * size and copy again from the start */
		mdb_env_set_mapsize(src->env, 0);
		if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
			mrc = errno;
		else
			mrc = mdb_env_copyfd2(src->env, fd, MDB_CP_COMPACT);
	}
	if (mrc != 0) {
		rc = write_fail(msg, mrc, dest, "copy the log to");
		goto out;
	}
	if (fsync(fd) != 0) {
		rc = write_fail(msg, errno, dest, "flush the copy in");
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = write_fail(msg, errno, dest, "write the copy in");
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		rc = tidei_err(msg, TIDE_EIO, "cannot rename %s: %s", tmp, strerror(errno));
		goto out;
	}
	placed = 1;
	sync_dir(dest);
	if ((rc = tidei_log_mark(dest, msg)) != TIDE_OK)
		goto out;
	rc = describe(dest, &got, msg);
out:
	if (fd >= 0)
		close(fd);
	if (rc != TIDE_OK && !placed) {
		/* leave nothing behind but what was there */
		if (created)
			unlink(tmp);
		if (made)
			rmdir(dest);
	}
	tidei_log_close(src);
	if (info != NULL)
		*info = got;
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", rc == TIDE_OK ? "" : msg);
	return rc;
}

TIDE_API int
tide_log_backup(const char *dir, const char *dest, tide_backup_info *info)
{
	char msg[TIDEI_ERRLEN] = "";

	return tidei_done(log_backup_impl(dir, dest, info, msg, sizeof msg), msg);
}
