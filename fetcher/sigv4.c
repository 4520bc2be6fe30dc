/*
 * SigV4 query-string signing (see sigv4.h). The canonical request must be byte-exact with what
 * the server reconstructs, so everything that goes into it is built here from parts: the path
 * and every query key and value are encoded with one function, parameters are sorted by their
 * encoded key, and the host is the Host header curl will send. The crypto is OpenSSL's.
 *
 * Reference: AWS "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)".
 */
#include "sigv4.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mc_banned.h"

int mc_sigv4_encode(const char *s, int keep_slash, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(out);

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		unsigned char ch = *p;
		int plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
			    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
			    ch == '~' || (keep_slash && ch == '/');

		if (n + (plain ? 1 : 3) >= cap)
			return -ENAMETOOLONG;
		if (plain) {
			out[n++] = (char)ch;
		} else {
			out[n++] = '%';
			out[n++] = hex[ch >> 4];
			out[n++] = hex[ch & 15];
		}
	}
	out[n] = '\0';
	return 0;
}

/* A growing string; a failed append marks it broken and the caller checks once. */
struct sbuf {
	char *p;
	size_t len, cap;
	int broken;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->broken)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 512;
		char *q;

		while (cap < b->len + n + 1)
			cap *= 2;
		q = mc_realloc(b->p, cap);
		if (!q) {
			b->broken = 1;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

struct param {
	char *key;   /* encoded */
	char *value; /* encoded */
};

static int cmp_param(const void *a, const void *b)
{
	return strcmp(((const struct param *)a)->key, ((const struct param *)b)->key);
}

static void hex32(const unsigned char *in, char *out)
{
	mc_hex(in, 32, out);
}

static int hmac(const void *key, size_t klen, const char *msg, unsigned char out[32])
{
	unsigned int len = 32;

	return HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out,
		    &len)
		   ? 0
		   : -EIO;
}

static char *enc_dup(const char *s)
{
	size_t n = strlen(s) * 3 + 1;
	char *out = mc_malloc(n);

	if (!out)
		return NULL;
	out[0] = '\0';
	if (mc_sigv4_encode(s, 0, out, n)) {
		mc_free(out);
		return NULL;
	}
	return out;
}

int mc_sigv4_presign(const struct mc_s3_creds *c, const char *scheme, const char *host,
		     const char *path, const struct mc_query_param *params, size_t nparams,
		     time_t now, char **url, struct mc_err *err)
{
	char amzdate[17], date[9], scope[160], cred[512], expires[16], sig[65], hash[65];
	unsigned char k1[32], k2[32], sha[32];
	struct sbuf canon = {0}, sts = {0}, out = {0}, query = {0};
	struct param *pv = NULL;
	size_t np = 0, total = nparams + (c->access_key ? 6 : 0);
	struct tm tm;
	int ret = -ENOMEM;

	*url = NULL;
	pv = mc_calloc(total ? total : 1, sizeof(*pv));
	if (!pv)
		goto out;
	gmtime_r(&now, &tm);
	strftime(amzdate, sizeof(amzdate), "%Y%m%dT%H%M%SZ", &tm);
	strftime(date, sizeof(date), "%Y%m%d", &tm);
	snprintf(scope, sizeof(scope), "%s/%s/s3/aws4_request", date, c->region);
	snprintf(cred, sizeof(cred), "%s/%s", c->access_key ? c->access_key : "", scope);
	snprintf(expires, sizeof(expires), "%u", c->expires ? c->expires : MC_S3_PRESIGN_EXPIRES);
	for (size_t i = 0; i < nparams; i++) {
		pv[np].key = enc_dup(params[i].key);
		pv[np].value = enc_dup(params[i].value);
		if (!pv[np].key || !pv[np].value)
			goto out_np;
		np++;
	}
	if (c->access_key) {
		const struct mc_query_param auth[] = {
		    {"X-Amz-Algorithm", "AWS4-HMAC-SHA256"},
		    {"X-Amz-Credential", cred},
		    {"X-Amz-Date", amzdate},
		    {"X-Amz-Expires", expires},
		    {"X-Amz-SignedHeaders", "host"},
		    {"X-Amz-Security-Token", c->token ? c->token : ""},
		};
		for (size_t i = 0; i < 6; i++) {
			if (i == 5 && !(c->token && *c->token))
				break;
			pv[np].key = enc_dup(auth[i].key);
			pv[np].value = enc_dup(auth[i].value);
			if (!pv[np].key || !pv[np].value)
				goto out_np;
			np++;
		}
	}
	qsort(pv, np, sizeof(*pv), cmp_param);
	for (size_t i = 0; i < np; i++) {
		if (i)
			sb_str(&query, "&");
		sb_str(&query, pv[i].key);
		sb_str(&query, "=");
		sb_str(&query, pv[i].value);
	}
	sb_str(&out, scheme);
	sb_str(&out, "://");
	sb_str(&out, host);
	sb_str(&out, path);
	if (np) {
		sb_str(&out, "?");
		sb_str(&out, query.p ? query.p : "");
	}
	if (c->access_key) {
		/* Canonical request: method, path, query, headers, signed headers, payload. */
		sb_str(&canon, "GET\n");
		sb_str(&canon, path);
		sb_str(&canon, "\n");
		sb_str(&canon, query.p ? query.p : "");
		sb_str(&canon, "\nhost:");
		sb_str(&canon, host);
		sb_str(&canon, "\n\nhost\nUNSIGNED-PAYLOAD");
		if (canon.broken)
			goto out_np;
		SHA256((const unsigned char *)canon.p, canon.len, sha);
		hex32(sha, hash);
		sb_str(&sts, "AWS4-HMAC-SHA256\n");
		sb_str(&sts, amzdate);
		sb_str(&sts, "\n");
		sb_str(&sts, scope);
		sb_str(&sts, "\n");
		sb_str(&sts, hash);
		if (sts.broken)
			goto out_np;
		/* The signing key: HMAC chain from "AWS4" + secret over date, region, service. */
		{
			size_t sl = strlen(c->secret ? c->secret : "") + 5;
			char *k0 = mc_malloc(sl);

			if (!k0)
				goto out_np;
			snprintf(k0, sl, "AWS4%s", c->secret ? c->secret : "");
			ret = hmac(k0, strlen(k0), date, k1);
			memset(k0, 0, sl);
			mc_free(k0);
		}
		if (!ret)
			ret = hmac(k1, 32, c->region, k2);
		if (!ret)
			ret = hmac(k2, 32, "s3", k1);
		if (!ret)
			ret = hmac(k1, 32, "aws4_request", k2);
		if (!ret)
			ret = hmac(k2, 32, sts.p, k1);
		memset(k2, 0, sizeof(k2));
		if (ret) {
			mc_err_set(err, ret, "cannot sign an S3 request");
			goto out_np;
		}
		hex32(k1, sig);
		memset(k1, 0, sizeof(k1));
		sb_str(&out, "&X-Amz-Signature=");
		sb_str(&out, sig);
		ret = -ENOMEM;
	}
	if (out.broken)
		goto out_np;
	*url = out.p;
	out.p = NULL;
	ret = 0;
out_np:
	for (size_t i = 0; i < np || (i < total && (pv[i].key || pv[i].value)); i++) {
		mc_free(pv[i].key);
		mc_free(pv[i].value);
	}
out:
	if (ret == -ENOMEM)
		mc_err_set(err, ret, "out of memory");
	mc_free(pv);
	mc_free(canon.p);
	mc_free(sts.p);
	mc_free(out.p);
	mc_free(query.p);
	return ret;
}
