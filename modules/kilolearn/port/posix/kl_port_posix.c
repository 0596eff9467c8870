/*
 * kilolearn port for POSIX hosts.
 *
 *   console  stdout (line buffered)
 *   counter  none (kl_port_insn() == 0, kl_port_has_counter() == 0)
 *   job      the whole file named by argv[1], read into a malloc'd buffer
 *            (the port may allocate; the engine never does)
 *   exit     exit()
 */
#include "kl_port.h"

#include <stdio.h>
#include <stdlib.h>

static int port_argc;
static char **port_argv;
static uint8_t *job_buf;
static size_t job_len;
static int job_loaded;

int kl_port_init(int argc, char **argv)
{
    port_argc = argc;
    port_argv = argv;
    setvbuf(stdout, NULL, _IOLBF, 0);
    return 0;
}

void kl_port_write(const char *buf, size_t n)
{
    if (n > 0) {
        fwrite(buf, 1, n, stdout);
    }
}

int kl_port_getc(void)
{
    const int c = getchar();
    return c == EOF ? -1 : c;
}

void kl_port_flush(void)
{
    fflush(stdout);
}

uint64_t kl_port_insn(void)
{
    return 0;
}

int kl_port_has_counter(void)
{
    return 0;
}

/* Read a whole stream (works for pipes and special files too). */
static uint8_t *read_all(FILE *f, size_t *out_len)
{
    size_t cap = 1u << 16;
    size_t len = 0;
    uint8_t *buf = malloc(cap);

    if (buf == NULL) {
        return NULL;
    }
    for (;;) {
        size_t got;
        if (len == cap) {
            uint8_t *bigger;
            if (cap > ((size_t)-1) / 2) {
                free(buf);
                return NULL;
            }
            bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                return NULL;
            }
            buf = bigger;
            cap *= 2;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            break;
        }
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    *out_len = len;
    return buf;
}

uint8_t *kl_port_flash_sim(size_t *len)
{
    static uint64_t mem[(16u << 20) / 8u];
    *len = sizeof(mem);
    return (uint8_t *)mem;
}

const uint8_t *kl_port_job(size_t *len)
{
    if (!job_loaded) {
        job_loaded = 1;
        if (port_argc >= 2 && port_argv != NULL && port_argv[1] != NULL) {
            FILE *f = fopen(port_argv[1], "rb");
            if (f == NULL) {
                fprintf(stderr, "kilolearn: cannot open job file '%s'\n", port_argv[1]);
            } else {
                job_buf = read_all(f, &job_len);
                if (job_buf == NULL) {
                    fprintf(stderr, "kilolearn: cannot read job file '%s'\n", port_argv[1]);
                    job_len = 0;
                } else if (job_len == 0) {
                    free(job_buf);
                    job_buf = NULL;
                }
                fclose(f);
            }
        }
    }
    if (len != NULL) {
        *len = job_buf != NULL ? job_len : 0;
    }
    return job_buf;
}

void kl_port_exit(int code)
{
    fflush(stdout);
    exit(code);
}
