/*
 * enospc.c - a full disk on demand, for the damage suite: preloaded
 * (LD_PRELOAD) into a `tide run`, it makes writes and flushes of any file
 * named data.mdb fail while the file named by $TIDE_ENOSPC_FLAG exists,
 * and statvfs() report no room left meanwhile.  What the flag file says
 * chooses how the disk fills up:
 *   "short"   a write stores half of what it was given and says so, as
 *             on a filesystem that runs out mid-write (LMDB reports EIO)
 *   anything else: the write fails with ENOSPC
 * Flushes (fsync, fdatasync) fail with ENOSPC either way.
 *
 * No root privileges, no mounts: the test stays portable to CI.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OFF = 0, FAIL = 1, SHORT = 2 };

/* What the flag says now (it is read on every write, so a test can
 * switch the disk between full and not at any time). */
static int
mode(void)
{
	const char *flag = getenv("TIDE_ENOSPC_FLAG");
	char buf[8];
	ssize_t n;
	int fd, saved = errno;

	if (flag == NULL || (fd = open(flag, O_RDONLY | O_CLOEXEC)) < 0) {
		errno = saved;
		return OFF;
	}
	n = read(fd, buf, sizeof buf);
	close(fd);
	errno = saved;
	return n >= 5 && memcmp(buf, "short", 5) == 0 ? SHORT : FAIL;
}

/* 1 if @p fd is a data.mdb. */
static int
is_data(int fd)
{
	char link[64], path[4096];
	ssize_t n;
	int saved = errno;

	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof path - 1);
	errno = saved;
	if (n < 9)
		return 0;
	path[n] = '\0';
	return strcmp(path + n - 9, "/data.mdb") == 0;
}

/* The mode for a write to @p fd. */
static int
full(int fd)
{
	int m = mode();

	return m != OFF && is_data(fd) ? m : OFF;
}

#define REAL(name, type) \
	static type real_##name; \
	if (real_##name == NULL) \
		real_##name = (type)dlsym(RTLD_NEXT, #name);

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef int (*sync_fn)(int);
typedef int (*statvfs_fn)(const char *, struct statvfs *);
typedef int (*statvfs64_fn)(const char *, struct statvfs64 *);
typedef int (*fstatvfs_fn)(int, struct statvfs *);

ssize_t write(int fd, const void *buf, size_t n);
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off);
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off);
ssize_t writev(int fd, const struct iovec *iov, int cnt);
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off);
ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off);
int fsync(int fd);
int fdatasync(int fd);
int statvfs(const char *path, struct statvfs *sv);
int statvfs64(const char *path, struct statvfs64 *sv);
int fstatvfs(int fd, struct statvfs *sv);

/* For a short write: half of @p n, at least one byte. */
static size_t
half(size_t n)
{
	return n > 1 ? n / 2 : n;
}

/* The first @p want bytes of an iovec array, as a new array. */
static int
cut(const struct iovec *iov, int cnt, size_t want, struct iovec *out, int max)
{
	int k = 0;

	for (int i = 0; i < cnt && want > 0 && k < max; i++) {
		out[k] = iov[i];
		if (out[k].iov_len > want)
			out[k].iov_len = want;
		want -= out[k].iov_len;
		k++;
	}
	return k;
}

static size_t
total(const struct iovec *iov, int cnt)
{
	size_t n = 0;

	for (int i = 0; i < cnt; i++)
		n += iov[i].iov_len;
	return n;
}

ssize_t
write(int fd, const void *buf, size_t n)
{
	REAL(write, write_fn);
	switch (full(fd)) {
	case FAIL: errno = ENOSPC; return -1;
	case SHORT: return real_write(fd, buf, half(n));
	default: return real_write(fd, buf, n);
	}
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite, pwrite_fn);
	switch (full(fd)) {
	case FAIL: errno = ENOSPC; return -1;
	case SHORT: return real_pwrite(fd, buf, half(n), off);
	default: return real_pwrite(fd, buf, n, off);
	}
}

ssize_t
pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite64, pwrite_fn);
	switch (full(fd)) {
	case FAIL: errno = ENOSPC; return -1;
	case SHORT: return real_pwrite64(fd, buf, half(n), off);
	default: return real_pwrite64(fd, buf, n, off);
	}
}

ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
	struct iovec part[1024];

	REAL(writev, writev_fn);
	switch (full(fd)) {
	case FAIL: errno = ENOSPC; return -1;
	case SHORT: return real_writev(fd, part, cut(iov, cnt, half(total(iov, cnt)), part, 1024));
	default: return real_writev(fd, iov, cnt);
	}
}

ssize_t
pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	struct iovec part[1024];

	REAL(pwritev, pwritev_fn);
	switch (full(fd)) {
	case FAIL: errno = ENOSPC; return -1;
	case SHORT:
		return real_pwritev(fd, part, cut(iov, cnt, half(total(iov, cnt)), part, 1024),
				    off);
	default: return real_pwritev(fd, iov, cnt, off);
	}
}

ssize_t
pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	struct iovec part[1024];

	REAL(pwritev64, pwritev_fn);
	switch (full(fd)) {
	case FAIL: errno = ENOSPC; return -1;
	case SHORT:
		return real_pwritev64(fd, part, cut(iov, cnt, half(total(iov, cnt)), part, 1024),
				      off);
	default: return real_pwritev64(fd, iov, cnt, off);
	}
}

int
fsync(int fd)
{
	REAL(fsync, sync_fn);
	if (full(fd) != OFF) {
		errno = ENOSPC;
		return -1;
	}
	return real_fsync(fd);
}

int
fdatasync(int fd)
{
	REAL(fdatasync, sync_fn);
	if (full(fd) != OFF) {
		errno = ENOSPC;
		return -1;
	}
	return real_fdatasync(fd);
}

/* No room left while the flag is there. */
static int
no_room(int rc, struct statvfs *sv)
{
	if (rc == 0 && mode() != OFF)
		sv->f_bfree = sv->f_bavail = 0;
	return rc;
}

int
statvfs(const char *path, struct statvfs *sv)
{
	REAL(statvfs, statvfs_fn);
	return no_room(real_statvfs(path, sv), sv);
}

int
statvfs64(const char *path, struct statvfs64 *sv)
{
	int rc;

	REAL(statvfs64, statvfs64_fn);
	rc = real_statvfs64(path, sv);
	if (rc == 0 && mode() != OFF)
		sv->f_bfree = sv->f_bavail = 0;
	return rc;
}

int
fstatvfs(int fd, struct statvfs *sv)
{
	REAL(fstatvfs, fstatvfs_fn);
	return no_room(real_fstatvfs(fd, sv), sv);
}
