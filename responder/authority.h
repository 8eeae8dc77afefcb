/* authority.h - who this responder speaks for and with what: the issuers,
 * the responder certificate, the signing key's handle, and the validity
 * rules every answer follows. Built and checked once at startup, then
 * shared read-only by every thread. */
#ifndef RESPONDER_AUTHORITY_H
#define RESPONDER_AUTHORITY_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "hsm/hsm.h"
#include "responder/issuer.h"
#include "responder/ocsp.h"

#ifndef MUST_CHECK
#define MUST_CHECK __attribute__((warn_unused_result))
#endif

struct authority {
	const struct conf *conf;
	struct issuer issuers[CONF_MAX_ISSUERS];
	size_t n_issuers;
	X509 *responder_cert;
	uint8_t *responder_cert_der;
	size_t responder_cert_der_len;
	int64_t responder_not_after;
	struct ocsp_signer signer;
};

/* authority_new loads the issuer and responder certificates named by conf
 * and checks them against each other and against hsm's key (the responder
 * certificate holds the key, is valid now, has the OCSPSigning EKU and
 * id-pkix-ocsp-nocheck, and was issued by every issuer, unless it is the
 * issuer itself). conf and hsm are borrowed until authority_free(). On
 * failure returns -1 with the rule that failed in err. */
int authority_new(const struct conf *conf, struct hsm *hsm,
    struct authority **out, char *err, size_t err_len) MUST_CHECK;

/* authority_free releases a. Accepts NULL. */
void authority_free(struct authority *a);

/* authority_next_update returns the nextUpdate of an answer produced at
 * this_update: CA/B Forum BR 4.9.10 counts the validity interval
 * inclusively, so its last second is this_update + validity - 1; and no
 * answer outlives the certificate that vouches for it (Mozilla policy). */
int64_t authority_next_update(const struct authority *a, int64_t this_update);
#endif
