/*
 * A thin C shim over the system libsrtp2, so that struct layouts (srtp_policy_t,
 * srtp_master_key_t, ...) come from the real <srtp2/srtp.h> and Rust only sees a few
 * functions with plain integer and pointer arguments. Written for voxgate's differential
 * tests; see src/lib.rs for the safe API.
 *
 * All functions return a libsrtp status code (srtp_err_status_t, 0 = ok).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <srtp2/srtp.h>

/* Profile numbers shared with src/lib.rs. */
enum {
    VG_AES_CM_128_HMAC_SHA1_80 = 0,
    VG_AES_CM_128_HMAC_SHA1_32 = 1,
    VG_AEAD_AES_128_GCM = 2,
    VG_AEAD_AES_256_GCM = 3,
};

int vg_srtp_init(void)
{
    return (int)srtp_init();
}

const char *vg_srtp_version_string(void)
{
    return srtp_get_version_string();
}

/* (major << 24) | (minor << 16) | micro */
unsigned int vg_srtp_version(void)
{
    return srtp_get_version();
}

size_t vg_srtp_max_trailer_len(void)
{
    return SRTP_MAX_TRAILER_LEN;
}

/* Collects log messages into a caller's buffer, each followed by '\n'. */
struct vg_log_buf {
    char *out;
    size_t cap;
    size_t len;
};

static void vg_collect_log(srtp_log_level_t level, const char *msg, void *data)
{
    struct vg_log_buf *b = (struct vg_log_buf *)data;
    size_t n;
    (void)level;
    if (b == NULL || msg == NULL) {
        return;
    }
    n = strlen(msg);
    if (b->len + n + 1 >= b->cap) {
        return;
    }
    memcpy(b->out + b->len, msg, n);
    b->len += n;
    b->out[b->len++] = '\n';
    b->out[b->len] = '\0';
}

/*
 * Writes what srtp_list_debug_modules() reports (one log message per line) into out, which is
 * NUL-terminated. libsrtp names its crypto modules after the backend ("aes icm nss",
 * "aes icm ossl", "aes icm mbedtls", or plain "aes icm" for the built-in one). Must not run
 * concurrently with other libsrtp calls: it installs, then removes, the global log handler.
 */
int vg_srtp_list_debug_modules(char *out, size_t cap)
{
    struct vg_log_buf b;
    srtp_err_status_t st;
    if (out == NULL || cap == 0) {
        return (int)srtp_err_status_bad_param;
    }
    out[0] = '\0';
    b.out = out;
    b.cap = cap;
    b.len = 0;
    st = srtp_install_log_handler(vg_collect_log, &b);
    if (st != srtp_err_status_ok) {
        return (int)st;
    }
    st = srtp_list_debug_modules();
    srtp_install_log_handler(NULL, NULL);
    return (int)st;
}

/*
 * Creates a session with one wildcard policy: ssrc_any_outbound when outbound != 0, else
 * ssrc_any_inbound. key_salts holds n_keys concatenated key||salt strings of key_salt_len bytes.
 * With mki_len == 0 there must be exactly one key and no MKI is used; otherwise mkis holds
 * n_keys concatenated MKIs of mki_len bytes.
 */
int vg_srtp_create(void **out,
                   int profile,
                   int outbound,
                   const unsigned char *key_salts,
                   size_t key_salt_len,
                   size_t n_keys,
                   const unsigned char *mkis,
                   size_t mki_len,
                   unsigned long window_size)
{
    srtp_policy_t policy;
    srtp_master_key_t keys[SRTP_MAX_NUM_MASTER_KEYS];
    srtp_master_key_t *key_ptrs[SRTP_MAX_NUM_MASTER_KEYS];
    size_t want_len;
    size_t i;
    srtp_t session = NULL;
    srtp_err_status_t st;

    if (out == NULL || key_salts == NULL) {
        return (int)srtp_err_status_bad_param;
    }
    *out = NULL;
    memset(&policy, 0, sizeof(policy));
    switch (profile) {
    case VG_AES_CM_128_HMAC_SHA1_80:
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtcp);
        want_len = SRTP_AES_ICM_128_KEY_LEN_WSALT;
        break;
    case VG_AES_CM_128_HMAC_SHA1_32:
        /* RFC 4568 6.2.2: the 32-bit tag is for SRTP only; SRTCP keeps 80 bits. */
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&policy.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy.rtcp);
        want_len = SRTP_AES_ICM_128_KEY_LEN_WSALT;
        break;
    case VG_AEAD_AES_128_GCM:
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp);
        want_len = SRTP_AES_GCM_128_KEY_LEN_WSALT;
        break;
    case VG_AEAD_AES_256_GCM:
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy.rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy.rtcp);
        want_len = SRTP_AES_GCM_256_KEY_LEN_WSALT;
        break;
    default:
        return (int)srtp_err_status_bad_param;
    }
    if (key_salt_len != want_len || n_keys == 0) {
        return (int)srtp_err_status_bad_param;
    }
    policy.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    policy.ssrc.value = 0;
    policy.window_size = window_size;
    policy.allow_repeat_tx = 0;
    policy.enc_xtn_hdr = NULL;
    policy.enc_xtn_hdr_count = 0;
    policy.next = NULL;
    if (mki_len == 0) {
        if (n_keys != 1) {
            return (int)srtp_err_status_bad_param;
        }
        policy.key = (unsigned char *)key_salts;
    } else {
        if (mkis == NULL || n_keys > SRTP_MAX_NUM_MASTER_KEYS ||
            mki_len > SRTP_MAX_MKI_LEN) {
            return (int)srtp_err_status_bad_param;
        }
        for (i = 0; i < n_keys; i++) {
            keys[i].key = (unsigned char *)key_salts + i * key_salt_len;
            keys[i].mki_id = (unsigned char *)mkis + i * mki_len;
            keys[i].mki_size = (unsigned int)mki_len;
            key_ptrs[i] = &keys[i];
        }
        policy.keys = key_ptrs;
        policy.num_master_keys = (unsigned long)n_keys;
    }
    /* srtp_create derives the session keys and copies the MKIs: nothing here must outlive it. */
    st = srtp_create(&session, &policy);
    if (st != srtp_err_status_ok) {
        return (int)st;
    }
    *out = session;
    return (int)srtp_err_status_ok;
}

int vg_srtp_dealloc(void *session)
{
    if (session == NULL) {
        return (int)srtp_err_status_ok;
    }
    return (int)srtp_dealloc((srtp_t)session);
}

/*
 * buf holds *len bytes of packet in a buffer of cap bytes. The protect functions need
 * SRTP_MAX_TRAILER_LEN (+4 for RTCP) spare bytes, since libsrtp may write that far.
 */
static int vg_check_len(const void *buf, const int *len, size_t cap, size_t spare)
{
    if (buf == NULL || len == NULL || *len < 0 || (size_t)*len > cap ||
        cap - (size_t)*len < spare) {
        return 0;
    }
    return 1;
}

int vg_srtp_protect_rtp(void *session, void *buf, int *len, size_t cap,
                        unsigned int use_mki, unsigned int mki_index)
{
    if (session == NULL || !vg_check_len(buf, len, cap, SRTP_MAX_TRAILER_LEN)) {
        return (int)srtp_err_status_bad_param;
    }
    return (int)srtp_protect_mki((srtp_t)session, buf, len, use_mki, mki_index);
}

int vg_srtp_unprotect_rtp(void *session, void *buf, int *len, size_t cap,
                          unsigned int use_mki)
{
    if (session == NULL || !vg_check_len(buf, len, cap, 0)) {
        return (int)srtp_err_status_bad_param;
    }
    return (int)srtp_unprotect_mki((srtp_t)session, buf, len, use_mki);
}

int vg_srtp_protect_rtcp(void *session, void *buf, int *len, size_t cap,
                         unsigned int use_mki, unsigned int mki_index)
{
    if (session == NULL ||
        !vg_check_len(buf, len, cap, SRTP_MAX_TRAILER_LEN + 4)) {
        return (int)srtp_err_status_bad_param;
    }
    return (int)srtp_protect_rtcp_mki((srtp_t)session, buf, len, use_mki,
                                      mki_index);
}

int vg_srtp_unprotect_rtcp(void *session, void *buf, int *len, size_t cap,
                           unsigned int use_mki)
{
    if (session == NULL || !vg_check_len(buf, len, cap, 0)) {
        return (int)srtp_err_status_bad_param;
    }
    return (int)srtp_unprotect_rtcp_mki((srtp_t)session, buf, len, use_mki);
}
