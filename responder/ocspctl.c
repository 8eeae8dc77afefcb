/* ocspctl.c - the operator's command: provision the token, import
 * certificates, revoke, show status. It reads the responder's own
 * configuration file, so both find the same index, issuers and token.
 * Exit status: 0 done, 1 failed (nothing written), 2 usage. */
#include <errno.h>
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "conf/conf.h"
#include "db/db.h"
#include "hsm/hsm.h"
#include "responder/issuer.h"
#include "responder/log.h"

#define EXIT_USAGE 2

/* RFC 5280 5.3.1 CRLReason names; 7 is not used. */
static const char *const reason_names[] = {"unspecified", "keyCompromise",
    "cACompromise", "affiliationChanged", "superseded", "cessationOfOperation",
    "certificateHold", NULL, "removeFromCRL", "privilegeWithdrawn",
    "aACompromise"};

struct ctl {
	const char *conf_path;
	struct conf *conf;
	struct issuer issuers[CONF_MAX_ISSUERS];
	size_t n_issuers;
};

static void
usage(void)
{
	(void)fprintf(stderr,
	    "usage: ocspctl -c config command [arguments]\n"
	    "commands:\n"
	    "  provision --so-pin-file FILE [--key ec|rsa]\n"
	    "      create the token and generate the signing key inside it\n"
	    "  pubkey\n"
	    "      print the signing key's public key (PEM)\n"
	    "  import FILE...\n"
	    "      add certificates (PEM or DER) to the index as good;\n"
	    "      one transaction: any bad file writes nothing\n"
	    "  revoke SERIAL --reason NAME [--time YYYYMMDDHHMMSSZ]\n"
	    "      mark a certificate revoked (SERIAL in hex)\n"
	    "  status SERIAL\n"
	    "      print what the index holds for SERIAL\n"
	    "reasons: unspecified keyCompromise cACompromise "
	    "affiliationChanged superseded\n"
	    "  cessationOfOperation certificateHold removeFromCRL "
	    "privilegeWithdrawn aACompromise\n");
	exit(EXIT_USAGE);
}

static int
load_issuers(struct ctl *ctl)
{
	char err[512];
	size_t i;

	for (i = 0; i < ctl->conf->n_issuer_certs; i++) {
		if (issuer_load(ctl->conf->issuer_certs[i], &ctl->issuers[i],
			err, sizeof(err)) != 0) {
			log_err("%s", err);
			return -1;
		}
		ctl->n_issuers++;
	}
	return 0;
}

static int
open_index(const struct ctl *ctl, enum db_mode mode, struct db **db)
{
	int rc;

	if ((rc = db_open(ctl->conf->index_path, mode,
		 ctl->conf->index_map_size, db)) != DB_OK) {
		log_err("cannot open index %s: %s", ctl->conf->index_path,
		    db_strerror(rc));
		return -1;
	}
	return 0;
}

/* parse_serial reads hex as `openssl x509 -serial` prints it (an optional
 * 0x, colons allowed) into the magnitude bytes the index keys on. */
static int
parse_serial(const char *text, struct db_key *key)
{
	uint8_t bytes[64];
	size_t n_digits = 0, n = 0, i, skip = 0;
	char digits[130];
	int hi, lo;

	if (strncasecmp(text, "serial=", 7) == 0)
		text += 7;
	if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X'))
		text += 2;
	for (; *text != '\0'; text++) {
		if (*text == ':')
			continue;
		if (n_digits + 1 >= sizeof(digits))
			return -1;
		digits[n_digits++] = *text;
	}
	if (n_digits == 0)
		return -1;
	for (i = 0; i < n_digits; i++) {
		if (OPENSSL_hexchar2int((unsigned char)digits[i]) < 0)
			return -1;
	}
	/* An odd count has an implied leading zero. */
	i = 0;
	if (n_digits % 2 == 1) {
		bytes[n++] =
		    (uint8_t)OPENSSL_hexchar2int((unsigned char)digits[0]);
		i = 1;
	}
	for (; i < n_digits; i += 2) {
		hi = OPENSSL_hexchar2int((unsigned char)digits[i]);
		lo = OPENSSL_hexchar2int((unsigned char)digits[i + 1]);
		bytes[n++] = (uint8_t)(hi << 4 | lo);
	}
	while (skip < n - 1 && bytes[skip] == 0)
		skip++;
	if (n - skip > DB_SERIAL_MAX || bytes[skip] == 0)
		return -1;
	memcpy(key->serial, bytes + skip, n - skip);
	key->serial_len = n - skip;
	return 0;
}

static void
format_serial(const struct db_key *key, char *out, size_t out_len)
{
	size_t i;

	out[0] = '\0';
	for (i = 0; i < key->serial_len && 2 * i + 2 < out_len; i++)
		(void)snprintf(out + 2 * i, 3, "%02X", key->serial[i]);
}

static void
format_time(int64_t t, char *out, size_t out_len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(out, out_len, "%Y%m%d%H%M%SZ", &tm) == 0)
		(void)snprintf(out, out_len, "?");
}

static int
parse_time(const char *text, int64_t *out)
{
	struct tm tm = {0};
	size_t i;

	if (strlen(text) != 15 || text[14] != 'Z')
		return -1;
	for (i = 0; i < 14; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -1;
	}
	if (sscanf(text, "%4d%2d%2d%2d%2d%2d", &tm.tm_year, &tm.tm_mon,
		&tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6 ||
	    tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
	    tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
	    tm.tm_sec > 59)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	*out = (int64_t)timegm(&tm);
	return 0;
}

static int
parse_reason(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(reason_names) / sizeof(reason_names[0]); i++) {
		if (reason_names[i] != NULL &&
		    strcmp(name, reason_names[i]) == 0)
			return (int)i;
	}
	return -1;
}

static const char *
reason_name(int reason)
{
	if (reason < 0 ||
	    (size_t)reason >= sizeof(reason_names) / sizeof(reason_names[0]) ||
	    reason_names[reason] == NULL)
		return "none";
	return reason_names[reason];
}

static int
cmd_provision(struct ctl *ctl, int argc, char **argv)
{
	const char *so_pin_file = NULL;
	enum hsm_key_type type = HSM_KEY_EC_P256;
	int i, rc;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--so-pin-file") == 0 && i + 1 < argc) {
			so_pin_file = argv[++i];
		} else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
			i++;
			if (strcmp(argv[i], "ec") == 0)
				type = HSM_KEY_EC_P256;
			else if (strcmp(argv[i], "rsa") == 0)
				type = HSM_KEY_RSA_2048;
			else
				usage();
		} else {
			usage();
		}
	}
	if (so_pin_file == NULL || ctl->conf->key_label == NULL)
		usage();
	rc = hsm_provision(ctl->conf->pkcs11_module, ctl->conf->token_label,
	    so_pin_file, ctl->conf->pin_file, ctl->conf->key_label,
	    ctl->conf->key_id, type);
	if (rc != HSM_OK) {
		log_err("cannot provision key \"%s\" in token \"%s\": %s",
		    ctl->conf->key_label, ctl->conf->token_label,
		    hsm_strerror(rc));
		return 1;
	}
	(void)printf("generated %s key \"%s\" inside token \"%s\"\n",
	    type == HSM_KEY_EC_P256 ? "EC P-256" : "RSA-2048",
	    ctl->conf->key_label, ctl->conf->token_label);
	return 0;
}

static int
cmd_pubkey(struct ctl *ctl, int argc, char **argv)
{
	struct hsm_params params = {
	    .module_path = ctl->conf->pkcs11_module,
	    .token_label = ctl->conf->token_label,
	    .key_label = ctl->conf->key_label,
	    .key_id = ctl->conf->key_id,
	    .pin_file = ctl->conf->pin_file,
	};
	struct hsm *hsm = NULL;
	const uint8_t *spki;
	size_t spki_len;
	int rc, status = 1;

	(void)argv;
	if (argc != 0)
		usage();
	if ((rc = hsm_open(&params, &hsm)) != HSM_OK) {
		log_err("cannot open key in token \"%s\": %s",
		    ctl->conf->token_label, hsm_strerror(rc));
		goto out;
	}
	hsm_get0_public_key(hsm, &spki, &spki_len);
	if (PEM_write(stdout, "PUBLIC KEY", "", spki, (long)spki_len) <= 0) {
		log_err("cannot write the public key");
		goto out;
	}
	status = 0;
out:
	hsm_close(hsm);
	return status;
}

/* import_file adds every certificate in path (PEM, several allowed, or
 * one DER) to txn. Returns the number added, or -1 naming the cause. */
static int
import_file(
    struct ctl *ctl, struct db_txn *txn, const char *path, unsigned *n_new)
{
	const struct issuer *issuer;
	const ASN1_INTEGER *serial;
	struct db_key key;
	struct db_cert cert, old;
	struct tm not_after;
	X509 *x509 = NULL;
	BIO *bio = NULL;
	int n = 0, rc, len;
	bool is_pem = true;

	if ((bio = BIO_new_file(path, "rb")) == NULL) {
		log_err("%s: cannot open: %s", path, strerror(errno));
		goto fail;
	}
	for (;;) {
		x509 = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		if (x509 == NULL && n == 0 && is_pem) {
			/* Not PEM: the file is one DER certificate. */
			is_pem = false;
			ERR_clear_error();
			if (BIO_reset(bio) == 0)
				x509 = d2i_X509_bio(bio, NULL);
			if (x509 == NULL) {
				log_err(
				    "%s: not a PEM or DER certificate", path);
				goto fail;
			}
		}
		if (x509 == NULL)
			break;
		if ((issuer = issuer_of_cert(
			 ctl->issuers, ctl->n_issuers, x509)) == NULL) {
			log_err(
			    "%s: certificate %d not issued by any configured "
			    "issuer_cert",
			    path, n + 1);
			goto fail;
		}
		serial = X509_get0_serialNumber(x509);
		len = ASN1_STRING_length(serial);
		if (ASN1_STRING_type(serial) != V_ASN1_INTEGER || len < 1 ||
		    len > DB_SERIAL_MAX ||
		    ASN1_STRING_get0_data(serial)[0] == 0) {
			log_err(
			    "%s: certificate %d has a serial number that is "
			    "not 1 to 20 positive octets (RFC 5280 4.1.2.2)",
			    path, n + 1);
			goto fail;
		}
		memcpy(key.issuer_id, issuer->id, sizeof(key.issuer_id));
		memcpy(key.serial, ASN1_STRING_get0_data(serial), (size_t)len);
		key.serial_len = (size_t)len;
		memset(&cert, 0, sizeof(cert));
		cert.state = DB_CERT_GOOD;
		cert.revocation_reason = -1;
		if (ASN1_TIME_to_tm(X509_get0_notAfter(x509), &not_after) == 1)
			cert.not_after = (int64_t)timegm(&not_after);
		rc = db_txn_get(txn, &key, &old);
		if (rc == DB_OK) {
			/* Importing again never undoes a revocation. */
			old.not_after = cert.not_after;
			cert = old;
		} else if (rc == DB_ERR_NOT_FOUND) {
			(*n_new)++;
		} else {
			log_err("%s: cannot read the index: %s", path,
			    db_strerror(rc));
			goto fail;
		}
		if ((rc = db_txn_put(txn, &key, &cert)) != DB_OK) {
			log_err("%s: cannot write the index: %s", path,
			    db_strerror(rc));
			goto fail;
		}
		X509_free(x509);
		x509 = NULL;
		n++;
		if (!is_pem)
			break;
	}
	ERR_clear_error();
	BIO_free(bio);
	return n;
fail:
	ERR_clear_error();
	X509_free(x509);
	BIO_free(bio);
	return -1;
}

static int
cmd_import(struct ctl *ctl, int argc, char **argv)
{
	struct db_txn *txn = NULL;
	struct db *db = NULL;
	unsigned n_total = 0, n_new = 0;
	int i, n, rc, status = 1;

	if (argc < 1)
		usage();
	if (load_issuers(ctl) != 0 || open_index(ctl, DB_MODE_CREATE, &db) != 0)
		goto out;
	if ((rc = db_txn_begin(db, &txn)) != DB_OK) {
		log_err("cannot write index %s: %s", ctl->conf->index_path,
		    db_strerror(rc));
		goto out;
	}
	for (i = 0; i < argc; i++) {
		if ((n = import_file(ctl, txn, argv[i], &n_new)) < 0)
			goto out;
		n_total += (unsigned)n;
	}
	rc = db_txn_commit(txn);
	txn = NULL;
	if (rc != DB_OK) {
		log_err("cannot commit to index %s: %s", ctl->conf->index_path,
		    db_strerror(rc));
		goto out;
	}
	(void)printf("imported %u certificates (%u new)\n", n_total, n_new);
	status = 0;
out:
	db_txn_abort(txn);
	db_close(db);
	return status;
}

/* find_serial looks for serial under every issuer: exactly one must hold
 * it. On success key->issuer_id names it and *cert holds its record. */
static int
find_serial(struct ctl *ctl, struct db_txn *txn, struct db *db,
    struct db_key *key, struct db_cert *cert)
{
	struct db_key probe = *key;
	struct db_cert found;
	size_t i, n_found = 0;
	int rc;

	for (i = 0; i < ctl->n_issuers; i++) {
		memcpy(probe.issuer_id, ctl->issuers[i].id,
		    sizeof(probe.issuer_id));
		rc = txn != NULL ? db_txn_get(txn, &probe, &found)
				 : db_lookup(db, &probe, &found);
		if (rc == DB_ERR_NOT_FOUND)
			continue;
		if (rc != DB_OK) {
			log_err("cannot read index %s: %s",
			    ctl->conf->index_path, db_strerror(rc));
			return -1;
		}
		if (n_found++ == 0) {
			*key = probe;
			*cert = found;
		}
	}
	if (n_found == 0) {
		log_err("no certificate with that serial in index %s (import "
			"it first)",
		    ctl->conf->index_path);
		return -1;
	}
	if (n_found > 1) {
		log_err("serial held under %zu issuers; this version cannot "
			"tell them apart",
		    n_found);
		return -1;
	}
	return 0;
}

static int
cmd_revoke(struct ctl *ctl, int argc, char **argv)
{
	struct db_txn *txn = NULL;
	struct db *db = NULL;
	struct db_key key;
	struct db_cert cert;
	int64_t revoked_at = (int64_t)time(NULL);
	int reason = -1, i, rc, status = 1;
	char serial_text[2 * DB_SERIAL_MAX + 1], time_text[32];

	if (argc < 1 || parse_serial(argv[0], &key) != 0)
		usage();
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--reason") == 0 && i + 1 < argc) {
			if ((reason = parse_reason(argv[++i])) < 0) {
				log_err("unknown reason %s", argv[i]);
				usage();
			}
		} else if (strcmp(argv[i], "--time") == 0 && i + 1 < argc) {
			if (parse_time(argv[++i], &revoked_at) != 0) {
				log_err("bad --time %s: expected "
					"YYYYMMDDHHMMSSZ",
				    argv[i]);
				usage();
			}
		} else {
			usage();
		}
	}
	if (reason < 0)
		usage();
	if (load_issuers(ctl) != 0 || open_index(ctl, DB_MODE_WRITE, &db) != 0)
		goto out;
	if ((rc = db_txn_begin(db, &txn)) != DB_OK) {
		log_err("cannot write index %s: %s", ctl->conf->index_path,
		    db_strerror(rc));
		goto out;
	}
	if (find_serial(ctl, txn, db, &key, &cert) != 0)
		goto out;
	cert.state = DB_CERT_REVOKED;
	cert.revoked_at = revoked_at;
	cert.revocation_reason = reason;
	if ((rc = db_txn_put(txn, &key, &cert)) != DB_OK ||
	    (rc = db_txn_commit(txn)) != DB_OK) {
		txn = NULL;
		log_err("cannot write index %s: %s", ctl->conf->index_path,
		    db_strerror(rc));
		goto out;
	}
	txn = NULL;
	format_serial(&key, serial_text, sizeof(serial_text));
	format_time(revoked_at, time_text, sizeof(time_text));
	(void)printf("serial=%s status=revoked reason=%s revoked_at=%s\n",
	    serial_text, reason_name(reason), time_text);
	status = 0;
out:
	db_txn_abort(txn);
	db_close(db);
	return status;
}

static int
cmd_status(struct ctl *ctl, int argc, char **argv)
{
	struct db *db = NULL;
	struct db_key key;
	struct db_cert cert;
	char serial_text[2 * DB_SERIAL_MAX + 1], time_text[32];
	int status = 1;

	if (argc != 1 || parse_serial(argv[0], &key) != 0)
		usage();
	if (load_issuers(ctl) != 0 || open_index(ctl, DB_MODE_READ, &db) != 0)
		goto out;
	if (find_serial(ctl, NULL, db, &key, &cert) != 0)
		goto out;
	format_serial(&key, serial_text, sizeof(serial_text));
	if (cert.state == DB_CERT_REVOKED) {
		format_time(cert.revoked_at, time_text, sizeof(time_text));
		(void)printf("serial=%s status=revoked reason=%s "
			     "revoked_at=%s\n",
		    serial_text, reason_name(cert.revocation_reason),
		    time_text);
	} else {
		(void)printf("serial=%s status=good\n", serial_text);
	}
	status = 0;
out:
	db_close(db);
	return status;
}

int
main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(struct ctl *, int, char **);
	} commands[] = {
	    {"provision", cmd_provision},
	    {"pubkey", cmd_pubkey},
	    {"import", cmd_import},
	    {"revoke", cmd_revoke},
	    {"status", cmd_status},
	};
	struct conf_error conf_err;
	struct ctl ctl = {0};
	int i = 1, status = EXIT_USAGE;
	size_t c;

	log_init("ocspctl", LOG_LEVEL_INFO, false);
	if (argc > 1 &&
	    (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))
		usage();
	if (argc < 4 ||
	    (strcmp(argv[1], "-c") != 0 && strcmp(argv[1], "--config") != 0))
		usage();
	ctl.conf_path = argv[2];
	i = 3;
	for (c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
		if (strcmp(argv[i], commands[c].name) == 0)
			break;
	}
	if (c == sizeof(commands) / sizeof(commands[0]))
		usage();
	if (conf_load(ctl.conf_path, &ctl.conf, &conf_err) != CONF_OK) {
		if (conf_err.line > 0)
			log_err("%s:%u: %s: %s", ctl.conf_path, conf_err.line,
			    conf_err.key, conf_err.message);
		else
			log_err("%s: %s%s%s", ctl.conf_path, conf_err.key,
			    conf_err.key[0] ? ": " : "", conf_err.message);
		return 1;
	}
	status = commands[c].run(&ctl, argc - i - 1, argv + i + 1);
	for (c = 0; c < ctl.n_issuers; c++)
		issuer_release(&ctl.issuers[c]);
	conf_free(ctl.conf);
	return status;
}
