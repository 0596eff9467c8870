/*
 * Minimal newlib system-call layer for the bare-metal port.
 *
 * The engine itself needs none of these; they exist so that code linked
 * with --specs=nano.specs that does touch stdio/malloc/assert links without
 * libnosys and behaves sensibly. Each sits in its own section, so
 * --gc-sections drops whatever is not referenced.
 *
 * assert() and abort() are overridden so that they print one line on the
 * UART and exit with KL_EXIT_FAULT, instead of pulling in fprintf and
 * raise()/signal machinery.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "kl_baremetal.h"

extern uint8_t __heap_start[];
extern uint8_t __heap_end[];

/* Prototypes (newlib declares some of these only in some configurations). */
void *_sbrk(ptrdiff_t incr);
int _write(int fd, const void *buf, size_t n);
int _read(int fd, void *buf, size_t n);
int _close(int fd);
int _lseek(int fd, int off, int whence);
int _fstat(int fd, struct stat *st);
int _isatty(int fd);
int _kill(int pid, int sig);
int _getpid(void);
void _exit(int code) __attribute__((noreturn));
void abort(void) __attribute__((noreturn));
void __assert_func(const char *file, int line, const char *func, const char *expr)
    __attribute__((noreturn));

void *_sbrk(ptrdiff_t incr)
{
    static uint8_t *brk = __heap_start;
    uint8_t *prev = brk;
    if (incr > __heap_end - brk || incr < __heap_start - brk) {
        errno = ENOMEM;
        return (void *)-1;
    }
    brk += incr;
    return prev;
}

int _write(int fd, const void *buf, size_t n)
{
    if (fd != 1 && fd != 2) {
        errno = EBADF;
        return -1;
    }
    kl_bm_write((const char *)buf, n);
    return (int)n;
}

int _read(int fd, void *buf, size_t n)
{
    (void)fd;
    (void)buf;
    (void)n;
    return 0; /* EOF */
}

int _close(int fd)
{
    (void)fd;
    errno = EBADF;
    return -1;
}

int _lseek(int fd, int off, int whence)
{
    (void)fd;
    (void)off;
    (void)whence;
    errno = ESPIPE;
    return -1;
}

int _fstat(int fd, struct stat *st)
{
    (void)fd;
    st->st_mode = S_IFCHR;
    return 0;
}

int _isatty(int fd)
{
    return fd >= 0 && fd <= 2;
}

int _kill(int pid, int sig)
{
    (void)pid;
    (void)sig;
    errno = EINVAL;
    return -1;
}

int _getpid(void)
{
    return 1;
}

void _exit(int code)
{
    kl_bm_exit(code);
}

void abort(void)
{
    kl_bm_puts("\n*** kilolearn: abort()\n");
    kl_bm_exit(KL_EXIT_FAULT);
}

static void put_dec(int v)
{
    char buf[12];
    int i = (int)sizeof buf;
    unsigned u = v < 0 ? 0u - (unsigned)v : (unsigned)v;
    do {
        buf[--i] = (char)('0' + u % 10u);
        u /= 10u;
    } while (u != 0u && i > 1);
    if (v < 0) {
        buf[--i] = '-';
    }
    kl_bm_write(buf + i, sizeof buf - (size_t)i);
}

void __assert_func(const char *file, int line, const char *func, const char *expr)
{
    kl_bm_puts("\n*** kilolearn: assertion failed: ");
    kl_bm_puts(expr != NULL ? expr : "?");
    kl_bm_puts(" (");
    kl_bm_puts(file != NULL ? file : "?");
    kl_bm_puts(":");
    put_dec(line);
    if (func != NULL) {
        kl_bm_puts(", ");
        kl_bm_puts(func);
    }
    kl_bm_puts(")\n");
    kl_bm_exit(KL_EXIT_FAULT);
}
