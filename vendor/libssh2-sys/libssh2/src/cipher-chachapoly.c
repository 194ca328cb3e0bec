/*
 * Copyright (c) 2013 Damien Miller <djm@mindrot.org>
 *
 * Adapted by Will Cosgrove <will@panic.com> for libssh2
 *
 * Permission to use, copy, modify, and distribute this software for any
 * purpose with or without fee is hereby granted, provided that the above
 * copyright notice and this permission notice appear in all copies.
 *
 * THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
 * WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF
 * MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR
 * ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
 * WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN
 * ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF
 * OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.
 *
 * SPDX-License-Identifier: BSD-2-Clause
 */

/* $OpenBSD: cipher-chachapoly.c,v 1.8 2016/08/03 05:41:57 djm Exp $ */

#include "libssh2_priv.h"
#include "cipher-chachapoly.h"

static int chachapoly_timingsafe_bcmp(const void *b1, const void *b2, size_t n)
{
    const unsigned char *p1 = b1, *p2 = b2;
    int ret = 0;

    for(; n > 0; n--)
        ret |= *p1++ ^ *p2++;
    return ret != 0;
}

#ifdef LIBSSH2_OPENSSL

int chachapoly_init(struct chachapoly_ctx *ctx, const unsigned char *key,
                    size_t keylen)
{
    ctx->main_evp = NULL;
    ctx->header_evp = NULL;
#ifdef LIBSSH2_POLY1305_EVP_MAC
    ctx->poly_mac = NULL;
    {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "POLY1305", NULL);
        if(mac) {
            ctx->poly_mac = EVP_MAC_CTX_new(mac);
            EVP_MAC_free(mac);
        }
    }
#endif
    if(keylen != (32 + 32)) /* 2 x 256-bit keys */
        return LIBSSH2_ERROR_INVAL;
    ctx->main_evp = EVP_CIPHER_CTX_new();
    ctx->header_evp = EVP_CIPHER_CTX_new();
    if(!ctx->main_evp || !ctx->header_evp ||
       !EVP_CipherInit(ctx->main_evp, EVP_chacha20(), key, NULL, 1) ||
       !EVP_CipherInit(ctx->header_evp, EVP_chacha20(), key + 32, NULL, 1) ||
       EVP_CIPHER_CTX_iv_length(ctx->header_evp) != 16) {
        chachapoly_free(ctx);
        return LIBSSH2_ERROR_INVAL;
    }
    return 0;
}

void chachapoly_free(struct chachapoly_ctx *ctx)
{
    EVP_CIPHER_CTX_free(ctx->main_evp);
    EVP_CIPHER_CTX_free(ctx->header_evp);
    ctx->main_evp = NULL;
    ctx->header_evp = NULL;
#ifdef LIBSSH2_POLY1305_EVP_MAC
    EVP_MAC_CTX_free(ctx->poly_mac);
    ctx->poly_mac = NULL;
#endif
}

/* The Poly1305 tag of 'len' bytes of 'm' under 'key' */
static int chachapoly_poly1305(struct chachapoly_ctx *ctx,
                               unsigned char out[POLY1305_TAGLEN],
                               const unsigned char *m, size_t len,
                               const unsigned char key[POLY1305_KEYLEN])
{
#ifdef LIBSSH2_POLY1305_EVP_MAC
    if(ctx->poly_mac) {
        size_t outl = 0;
        if(!EVP_MAC_init(ctx->poly_mac, key, POLY1305_KEYLEN, NULL) ||
           !EVP_MAC_update(ctx->poly_mac, m, len) ||
           !EVP_MAC_final(ctx->poly_mac, out, &outl, POLY1305_TAGLEN) ||
           outl != POLY1305_TAGLEN)
            return -1;
        return 0;
    }
#else
    (void)ctx;
#endif
    poly1305_auth(out, m, len, key);
    return 0;
}

/* libcrypto's ChaCha20 takes a 16-byte IV: a 32-bit little-endian block
   counter, then the nonce. OpenSSH's uses a 64-bit counter and a 64-bit nonce
   (the sequence number, big-endian): the same thing while the counter stays
   below 2^32, as it does for any packet. */
int chachapoly_crypt(struct chachapoly_ctx *ctx, libssh2_uint64_t seqnr,
                     unsigned char *dest, const unsigned char *src, size_t len,
                     size_t aadlen, int do_encrypt)
{
    unsigned char seqbuf[16];
    unsigned char expected_tag[POLY1305_TAGLEN], poly_key[POLY1305_KEYLEN];
    int r = LIBSSH2_ERROR_DECRYPT;  /* fail */
    unsigned char *ptr = NULL;

    memset(seqbuf, 0, sizeof(seqbuf));
    ptr = &seqbuf[8];
    ssh2_store_u64(&ptr, seqnr);

    /* Run ChaCha20 once to generate the Poly1305 key. */
    memset(poly_key, 0, sizeof(poly_key));
    if(!EVP_CipherInit(ctx->main_evp, NULL, NULL, seqbuf, 1) ||
       EVP_Cipher(ctx->main_evp, poly_key, poly_key, sizeof(poly_key)) < 0)
        goto out;

    /* If decrypting, check tag before anything else */
    if(!do_encrypt) {
        const unsigned char *tag = src + aadlen + len;

        if(chachapoly_poly1305(ctx, expected_tag, src, aadlen + len,
                               poly_key) ||
           chachapoly_timingsafe_bcmp(expected_tag, tag, POLY1305_TAGLEN))
            goto out;
    }

    /* Crypt additional data */
    if(aadlen) {
        if(!EVP_CipherInit(ctx->header_evp, NULL, NULL, seqbuf, 1) ||
           EVP_Cipher(ctx->header_evp, dest, src, (unsigned int)aadlen) < 0)
            goto out;
    }

    /* Set Chacha's block counter to 1 */
    seqbuf[0] = 1;
    if(!EVP_CipherInit(ctx->main_evp, NULL, NULL, seqbuf, 1) ||
       EVP_Cipher(ctx->main_evp, dest + aadlen, src + aadlen,
                  (unsigned int)len) < 0)
        goto out;

    /* If encrypting, calculate and append tag */
    if(do_encrypt &&
       chachapoly_poly1305(ctx, dest + aadlen + len, dest, aadlen + len,
                           poly_key))
        goto out;

    r = LIBSSH2_ERROR_NONE;
out:
    ssh2_explicit_zero(expected_tag, sizeof(expected_tag));
    ssh2_explicit_zero(seqbuf, sizeof(seqbuf));
    ssh2_explicit_zero(poly_key, sizeof(poly_key));
    return r;
}

/* Decrypt and extract the encrypted packet length */
int chachapoly_get_length(struct chachapoly_ctx *ctx, unsigned int *plenp,
                          libssh2_uint64_t seqnr, const unsigned char *cp,
                          size_t len)
{
    unsigned char buf[4], seqbuf[16];
    unsigned char *ptr = NULL;

    if(len < 4)
        return -1;  /* fail */
    memset(seqbuf, 0, sizeof(seqbuf));
    ptr = &seqbuf[8];
    ssh2_store_u64(&ptr, seqnr);
    if(!EVP_CipherInit(ctx->header_evp, NULL, NULL, seqbuf, 1) ||
       EVP_Cipher(ctx->header_evp, buf, cp, 4) < 0)
        return -1;
    *plenp = ssh2_ntohu32(buf);
    return 0;  /* success */
}

#else /* !LIBSSH2_OPENSSL */

void chachapoly_free(struct chachapoly_ctx *ctx)
{
    (void)ctx;
}

int chachapoly_init(struct chachapoly_ctx *ctx, const unsigned char *key,
                    size_t keylen)
{
    if(keylen != (32 + 32)) /* 2 x 256-bit keys */
        return LIBSSH2_ERROR_INVAL;
    chacha_keysetup(&ctx->main_ctx, key, 256);
    chacha_keysetup(&ctx->header_ctx, key + 32, 256);
    return 0;
}

/*
 * chachapoly_crypt() operates as following:
 * En/decrypt with header key 'aadlen' bytes from 'src', storing result
 * to 'dest'. The ciphertext here is treated as additional authenticated
 * data for MAC calculation.
 * En/decrypt 'len' bytes at offset 'aadlen' from 'src' to 'dest'. Use
 * POLY1305_TAGLEN bytes at offset 'len'+'aadlen' as the authentication
 * tag. This tag is written on encryption and verified on decryption.
 */
int chachapoly_crypt(struct chachapoly_ctx *ctx, libssh2_uint64_t seqnr,
                     unsigned char *dest, const unsigned char *src, size_t len,
                     size_t aadlen, int do_encrypt)
{
    static const unsigned char one[8] = {
        1, 0, 0, 0, 0, 0, 0, 0  /* NB little-endian */
    };
    unsigned char seqbuf[8];
    unsigned char expected_tag[POLY1305_TAGLEN], poly_key[POLY1305_KEYLEN];
    int r = LIBSSH2_ERROR_DECRYPT;  /* fail */
    unsigned char *ptr = NULL;

    /*
     * Run ChaCha20 once to generate the Poly1305 key. The IV is the
     * packet sequence number.
     */
    memset(poly_key, 0, sizeof(poly_key));
    ptr = &seqbuf[0];
    ssh2_store_u64(&ptr, seqnr);
    chacha_ivsetup(&ctx->main_ctx, seqbuf, NULL);
    chacha_encrypt_bytes(&ctx->main_ctx, poly_key, poly_key, sizeof(poly_key));

    /* If decrypting, check tag before anything else */
    if(!do_encrypt) {
        const unsigned char *tag = src + aadlen + len;

        poly1305_auth(expected_tag, src, aadlen + len, poly_key);
        if(chachapoly_timingsafe_bcmp(expected_tag, tag, POLY1305_TAGLEN))
            goto out;
    }

    /* Crypt additional data */
    if(aadlen) {
        chacha_ivsetup(&ctx->header_ctx, seqbuf, NULL);
        chacha_encrypt_bytes(&ctx->header_ctx, src, dest, aadlen);
    }

    /* Set Chacha's block counter to 1 */
    chacha_ivsetup(&ctx->main_ctx, seqbuf, one);
    chacha_encrypt_bytes(&ctx->main_ctx, src + aadlen, dest + aadlen, len);

    /* If encrypting, calculate and append tag */
    if(do_encrypt)
        poly1305_auth(dest + aadlen + len, dest, aadlen + len, poly_key);

    r = LIBSSH2_ERROR_NONE;
out:
    ssh2_explicit_zero(expected_tag, sizeof(expected_tag));
    ssh2_explicit_zero(seqbuf, sizeof(seqbuf));
    ssh2_explicit_zero(poly_key, sizeof(poly_key));
    return r;
}

/* Decrypt and extract the encrypted packet length */
int chachapoly_get_length(struct chachapoly_ctx *ctx, unsigned int *plenp,
                          libssh2_uint64_t seqnr, const unsigned char *cp,
                          size_t len)
{
    unsigned char buf[4], seqbuf[8];
    unsigned char *ptr = NULL;

    if(len < 4)
        return -1;  /* fail */
    ptr = &seqbuf[0];
    ssh2_store_u64(&ptr, seqnr);
    chacha_ivsetup(&ctx->header_ctx, seqbuf, NULL);
    chacha_encrypt_bytes(&ctx->header_ctx, cp, buf, 4);
    *plenp = ssh2_ntohu32(buf);
    return 0;  /* success */
}

#endif /* LIBSSH2_OPENSSL */
