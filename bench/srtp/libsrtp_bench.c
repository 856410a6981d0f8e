/*
 * libsrtp side of the voxgate SRTP benchmark (see bench/srtp/run.sh and
 * crates/rtp/benches/srtp.rs). Compiled twice: against libsrtp 2.8.0 built with OpenSSL and
 * against Debian's libsrtp2 (NSS backend). It does exactly the work the Rust bench does:
 *
 *   protect:   copy a 172-byte RTP packet (12-byte header + 160-byte payload) into a work
 *              buffer, write the next sequence number (and timestamp), srtp_protect().
 *   unprotect: a sequence of PRE_COUNT packets protected beforehand (outside the timed region;
 *              the sequence crosses two ROC rollovers), each copied into a work buffer and
 *              srtp_unprotect()'ed in order by a fresh receiver session per pass.
 *
 * Sessions use wildcard SSRC policies (ssrc_any_outbound / ssrc_any_inbound), replay window
 * 128, no repeated transmissions: libsrtp parses the header, looks the stream up, runs the
 * index/replay checks, encrypts and authenticates every packet.
 *
 * Modes:
 *   libsrtp_bench [--runs N] [--secs S] [SUITE...]   standalone: prints median packets/s
 *   libsrtp_bench --serve                            line protocol on stdin/stdout, driven by
 *                                                    the Rust bench to interleave the runs:
 *       info                         -> info label=L version=V
 *       setup SUITE                  -> ok setup SUITE
 *       sample SUITE                 -> sample SUITE HEX   (first protected packet, for the
 *                                                           byte-for-byte cross-check)
 *       run SUITE protect|unprotect SECS
 *                                    -> result label=L suite=S dir=D packets=N seconds=T
 *                                       wall=W pps=X   (T: thread CPU time, W: wall clock)
 *       quit
 *   Any failure prints "error ..." on stdout and exits 1.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <srtp2/srtp.h>

#ifndef BENCH_LABEL
#define BENCH_LABEL "libsrtp"
#endif

/* Shared with crates/rtp/benches/srtp.rs: keep both in step. */
#define HDR_LEN 12
#define PAYLOAD_LEN 160
#define PKT_LEN (HDR_LEN + PAYLOAD_LEN)
#define SSRC 0xCAFEBABEu
#define TX_SEQ0 1u         /* first sequence number of the protect benchmark */
#define PRE_SEQ0 1000u     /* first sequence number of the pre-protected sequence */
#define PRE_COUNT 131072u  /* 2 * 65536: the receiver's ROC rolls over twice per pass */
#define STRIDE 256         /* bytes per pre-protected packet slot */
#define CHUNK 1024         /* protect: packets between clock reads */

typedef void (*policy_fn)(srtp_crypto_policy_t *);

struct suite {
    const char *name;
    policy_fn set_policy;
    int key_len;
    int salt_len;
    /* state */
    int ready;
    srtp_t tx;
    uint32_t tx_next; /* next packet number of the protect benchmark */
    uint8_t *pre;
    int *pre_len;
};

static struct suite suites[] = {
    {"AES_CM_128_HMAC_SHA1_80", srtp_crypto_policy_set_rtp_default, 16, 14, 0, NULL, 0, NULL, NULL},
    {"AES_CM_128_HMAC_SHA1_32", srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32, 16, 14, 0, NULL, 0, NULL, NULL},
    {"AEAD_AES_128_GCM", srtp_crypto_policy_set_aes_gcm_128_16_auth, 16, 12, 0, NULL, 0, NULL, NULL},
    {"AEAD_AES_256_GCM", srtp_crypto_policy_set_aes_gcm_256_16_auth, 32, 12, 0, NULL, 0, NULL, NULL},
};
#define NSUITES (sizeof(suites) / sizeof(suites[0]))

static volatile uint8_t sink;

static void die(const char *fmt, ...)
{
    va_list ap;
    printf("error ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    exit(1);
}

/* Runs are timed by this thread's CPU time (the machine is shared: a wall clock would also count
 * the time other processes hold the core); the wall-clock time is reported beside it. */
static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); }
static double wall(void) { return clock_s(CLOCK_MONOTONIC); }

static struct suite *find_suite(const char *name)
{
    for (size_t i = 0; i < NSUITES; i++)
        if (strcmp(suites[i].name, name) == 0)
            return &suites[i];
    die("unknown suite %s", name);
    return NULL;
}

/* Master key k[i] = 0x10 + i, master salt s[i] = 0xA0 + i; libsrtp takes key || salt. */
static void master_key(const struct suite *s, uint8_t *out)
{
    for (int i = 0; i < s->key_len; i++)
        out[i] = (uint8_t)(0x10 + i);
    for (int i = 0; i < s->salt_len; i++)
        out[s->key_len + i] = (uint8_t)(0xA0 + i);
}

static srtp_t new_session(const struct suite *s, srtp_ssrc_type_t dir)
{
    uint8_t key[64];
    srtp_policy_t p;
    srtp_t ctx = NULL;
    memset(&p, 0, sizeof(p));
    master_key(s, key);
    s->set_policy(&p.rtp);
    s->set_policy(&p.rtcp);
    p.ssrc.type = dir;
    p.key = key;
    p.window_size = 128;
    p.allow_repeat_tx = 0;
    p.next = NULL;
    srtp_err_status_t st = srtp_create(&ctx, &p);
    if (st != srtp_err_status_ok)
        die("srtp_create(%s) failed: %d", s->name, (int)st);
    return ctx;
}

/* Packet number n: sequence number seq0 + n (mod 2^16), timestamp 160 * n. */
static void template_packet(uint8_t *pkt)
{
    memset(pkt, 0, HDR_LEN);
    pkt[0] = 0x80; /* V=2 */
    pkt[1] = 0x00; /* PT 0 (PCMU): 20 ms = 160 bytes */
    pkt[8] = (uint8_t)(SSRC >> 24);
    pkt[9] = (uint8_t)(SSRC >> 16);
    pkt[10] = (uint8_t)(SSRC >> 8);
    pkt[11] = (uint8_t)SSRC;
    for (int i = 0; i < PAYLOAD_LEN; i++)
        pkt[HDR_LEN + i] = (uint8_t)(i * 31 + 7);
}

static inline void set_seq_ts(uint8_t *pkt, uint32_t seq0, uint32_t n)
{
    uint16_t seq = (uint16_t)(seq0 + n);
    uint32_t ts = n * 160u;
    pkt[2] = (uint8_t)(seq >> 8);
    pkt[3] = (uint8_t)seq;
    pkt[4] = (uint8_t)(ts >> 24);
    pkt[5] = (uint8_t)(ts >> 16);
    pkt[6] = (uint8_t)(ts >> 8);
    pkt[7] = (uint8_t)ts;
}

static uint8_t tmpl[PKT_LEN];

static void setup(struct suite *s)
{
    if (s->ready)
        return;
    s->tx = new_session(s, ssrc_any_outbound);
    s->tx_next = 0;
    s->pre = malloc((size_t)PRE_COUNT * STRIDE);
    s->pre_len = malloc(PRE_COUNT * sizeof(int));
    if (!s->pre || !s->pre_len)
        die("out of memory");
    srtp_t pre_tx = new_session(s, ssrc_any_outbound);
    for (uint32_t n = 0; n < PRE_COUNT; n++) {
        uint8_t *slot = s->pre + (size_t)n * STRIDE;
        int len = PKT_LEN;
        memcpy(slot, tmpl, PKT_LEN);
        set_seq_ts(slot, PRE_SEQ0, n);
        srtp_err_status_t st = srtp_protect(pre_tx, slot, &len);
        if (st != srtp_err_status_ok || len > STRIDE)
            die("pre-protect %s packet %u failed: %d", s->name, n, (int)st);
        s->pre_len[n] = len;
    }
    srtp_dealloc(pre_tx);
    s->ready = 1;
}

/* One timed protect run of at least `secs` seconds; returns packets/s. */
static double run_protect(struct suite *s, double secs, uint64_t *packets, double *elapsed,
                          double *wall_elapsed)
{
    uint8_t work[PKT_LEN + SRTP_MAX_TRAILER_LEN + 16];
    uint64_t count = 0;
    uint32_t n = s->tx_next;
    double w0 = wall(), t0 = now(), t1;
    do {
        for (int i = 0; i < CHUNK; i++) {
            int len = PKT_LEN;
            memcpy(work, tmpl, PKT_LEN);
            set_seq_ts(work, TX_SEQ0, n);
            srtp_err_status_t st = srtp_protect(s->tx, work, &len);
            if (st != srtp_err_status_ok)
                die("srtp_protect(%s) failed: %d", s->name, (int)st);
            sink ^= work[len - 1];
            n++;
        }
        count += CHUNK;
        t1 = now();
    } while (t1 - t0 < secs);
    *wall_elapsed = wall() - w0;
    s->tx_next = n;
    *packets = count;
    *elapsed = t1 - t0;
    return (double)count / (t1 - t0);
}

/* Timed unprotect passes (fresh receiver each, created outside the timed region) until `secs`
 * seconds of unprotecting have been measured; returns packets/s. */
static double run_unprotect(struct suite *s, double secs, uint64_t *packets, double *elapsed,
                            double *wall_elapsed)
{
    uint8_t work[STRIDE];
    uint64_t count = 0;
    double total = 0, wall_total = 0;
    do {
        srtp_t rx = new_session(s, ssrc_any_inbound);
        double w0 = wall(), t0 = now();
        for (uint32_t n = 0; n < PRE_COUNT; n++) {
            int len = s->pre_len[n];
            memcpy(work, s->pre + (size_t)n * STRIDE, (size_t)len);
            srtp_err_status_t st = srtp_unprotect(rx, work, &len);
            if (st != srtp_err_status_ok || len != PKT_LEN)
                die("srtp_unprotect(%s) packet %u failed: %d", s->name, n, (int)st);
            sink ^= work[len - 1];
        }
        total += now() - t0;
        wall_total += wall() - w0;
        count += PRE_COUNT;
        srtp_dealloc(rx);
        /* The last packet must decrypt to the template's payload. */
        if (memcmp(work + HDR_LEN, tmpl + HDR_LEN, PAYLOAD_LEN) != 0)
            die("unprotect(%s) produced a wrong payload", s->name);
    } while (total < secs);
    *packets = count;
    *elapsed = total;
    *wall_elapsed = wall_total;
    return (double)count / total;
}

static double run_one(struct suite *s, const char *dir, double secs, uint64_t *packets,
                      double *elapsed, double *wall_elapsed)
{
    setup(s);
    if (strcmp(dir, "protect") == 0)
        return run_protect(s, secs, packets, elapsed, wall_elapsed);
    if (strcmp(dir, "unprotect") == 0)
        return run_unprotect(s, secs, packets, elapsed, wall_elapsed);
    die("unknown direction %s", dir);
    return 0;
}

static void sample(struct suite *s)
{
    uint8_t work[PKT_LEN + SRTP_MAX_TRAILER_LEN + 16];
    int len = PKT_LEN;
    srtp_t tx = new_session(s, ssrc_any_outbound);
    memcpy(work, tmpl, PKT_LEN);
    set_seq_ts(work, TX_SEQ0, 0);
    srtp_err_status_t st = srtp_protect(tx, work, &len);
    if (st != srtp_err_status_ok)
        die("srtp_protect(%s) failed: %d", s->name, (int)st);
    srtp_dealloc(tx);
    printf("sample %s ", s->name);
    for (int i = 0; i < len; i++)
        printf("%02x", work[i]);
    printf("\n");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void serve(void)
{
    char line[512];
    while (fgets(line, sizeof(line), stdin)) {
        char cmd[32] = "", a[64] = "", b[32] = "";
        double secs = 0;
        int n = sscanf(line, "%31s %63s %31s %lf", cmd, a, b, &secs);
        if (n < 1)
            continue;
        if (strcmp(cmd, "info") == 0) {
            printf("info label=%s version=%s\n", BENCH_LABEL, srtp_get_version_string());
        } else if (strcmp(cmd, "setup") == 0 && n >= 2) {
            setup(find_suite(a));
            printf("ok setup %s\n", a);
        } else if (strcmp(cmd, "sample") == 0 && n >= 2) {
            sample(find_suite(a));
        } else if (strcmp(cmd, "run") == 0 && n == 4) {
            uint64_t packets;
            double elapsed, wall_elapsed;
            double pps = run_one(find_suite(a), b, secs, &packets, &elapsed, &wall_elapsed);
            printf("result label=%s suite=%s dir=%s packets=%llu seconds=%.6f wall=%.6f pps=%.0f\n",
                   BENCH_LABEL, a, b, (unsigned long long)packets, elapsed, wall_elapsed, pps);
        } else if (strcmp(cmd, "quit") == 0) {
            break;
        } else {
            die("bad command: %s", cmd);
        }
        fflush(stdout);
    }
}

static void standalone(int runs, double secs, int nnames, char **names)
{
    static const char *dirs[] = {"protect", "unprotect"};
    printf("# libsrtp_bench label=%s version=%s runs=%d secs=%.2f packet=%d+%d bytes\n",
           BENCH_LABEL, srtp_get_version_string(), runs, secs, HDR_LEN, PAYLOAD_LEN);
    for (size_t i = 0; i < NSUITES; i++) {
        struct suite *s = &suites[i];
        if (nnames > 0) {
            int want = 0;
            for (int k = 0; k < nnames; k++)
                want |= strcmp(names[k], s->name) == 0;
            if (!want)
                continue;
        }
        for (int d = 0; d < 2; d++) {
            double pps[64];
            uint64_t packets;
            double elapsed, wall_elapsed;
            run_one(s, dirs[d], secs, &packets, &elapsed, &wall_elapsed); /* warm-up */
            for (int r = 0; r < runs; r++)
                pps[r] = run_one(s, dirs[d], secs, &packets, &elapsed, &wall_elapsed);
            qsort(pps, (size_t)runs, sizeof(double), cmp_double);
            printf("libsrtp_bench label=%s suite=%s dir=%s pps=%.0f min=%.0f max=%.0f runs=%d\n",
                   BENCH_LABEL, s->name, dirs[d], pps[runs / 2], pps[0], pps[runs - 1], runs);
            fflush(stdout);
        }
    }
}

int main(int argc, char **argv)
{
    int serve_mode = 0, runs = 7, nnames = 0;
    double secs = 0.5;
    char *names[NSUITES + 1];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--serve") == 0) {
            serve_mode = 1;
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--secs") == 0 && i + 1 < argc) {
            secs = atof(argv[++i]);
        } else if (argv[i][0] != '-' && nnames < (int)NSUITES) {
            find_suite(argv[i]);
            names[nnames++] = argv[i];
        } else {
            fprintf(stderr, "usage: %s [--serve] [--runs N] [--secs S] [SUITE...]\n", argv[0]);
            return 2;
        }
    }
    if (runs < 1 || runs > 64 || secs <= 0) {
        fprintf(stderr, "--runs must be 1..64 and --secs positive\n");
        return 2;
    }
    srtp_err_status_t st = srtp_init();
    if (st != srtp_err_status_ok)
        die("srtp_init failed: %d", (int)st);
    template_packet(tmpl);
    if (serve_mode)
        serve();
    else
        standalone(runs, secs, nnames, names);
    return 0;
}
