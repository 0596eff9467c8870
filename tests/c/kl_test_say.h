/* printf-style lines to the port's console, flushed at once (the power-cut
 * tests: a cut must not lose what was said before it). */
#ifndef KL_TEST_SAY_H
#define KL_TEST_SAY_H

#include <stdarg.h>
#include <stdio.h>

#include "kl_port.h"

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	const int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0) {
		kl_port_write(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1u);
		kl_port_flush();
	}
}

#endif /* KL_TEST_SAY_H */
