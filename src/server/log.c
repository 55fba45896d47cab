/*
 * log.c — dynembd's log: one event per line on stderr, "dynembd: " first, each line
 * written with a single write(2) so that lines from several threads never interleave.
 * The level is the one process-wide setting of the daemon, set before threads start.
 */
#include "log.h"

#include <stdarg.h>

#include <stdio.h>
#include <unistd.h>

static int log_level = SRV_LOG_INFO;

void srv_log_set_level(int level) { log_level = level; }

void srv_log(int level, const char *fmt, ...)
{
	if (level > log_level)
		return;
	char buf[1024];
	int n = snprintf(buf, sizeof buf, "dynembd: ");
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	size_t len = (size_t)n + (size_t)m;
	if (len > sizeof buf - 2)
		len = sizeof buf - 2;
	buf[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, buf, len);
	(void)w; /* nowhere to report a failed log write */
}
