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
#include <openssl/ocsp.h>
#include <signal.h>
#include <unistd.h>

#include "responder/authority.h"
#include "responder/issuer.h"
#include "responder/log.h"
#include "responder/presign.h"

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
	    "  import-serials FILE [--issuer ISSUER_CERT]\n"
	    "      add serials (hex, one a line; - for stdin) without their\n"
	    "      certificates, as good\n"
	    "  revoke SERIAL --reason NAME [--time YYYYMMDDHHMMSSZ]\n"
	    "      mark a certificate revoked (SERIAL in hex)\n"
	    "  status SERIAL\n"
	    "      print what the index holds for SERIAL\n"
	    "  sign [--all]\n"
	    "      pre-sign every response that is missing or due (--all:\n"
	    "      every response); interrupt and rerun at will\n"
	    "  verify\n"
	    "      check every stored response against the status and the\n"
	    "      responder certificate; exit 1 on any bad one\n"
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

/* schedule_now makes key's responses due at once: the pre-signer signs
 * what is new or changed ahead of any refresh. */
static int
schedule_now(struct ctl *ctl, struct db_txn *txn, const struct db_key *key)
{
	int rc;

	rc = db_txn_schedule(txn, key, DB_HASH_SHA1, 0);
	if (rc == DB_OK && ctl->conf->presign_sha256)
		rc = db_txn_schedule(txn, key, DB_HASH_SHA256, 0);
	if (rc != DB_OK) {
		log_err("cannot schedule signing: %s", db_strerror(rc));
		return -1;
	}
	return 0;
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
			if (schedule_now(ctl, txn, &key) != 0)
				goto fail;
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

/* cmd_import_serials adds serials without their certificates (a
 * precertificate's serial, a bulk load from the issuance database): one
 * hex serial per line, `#` comments, for the issuer given by --issuer
 * (one of the configured issuer_cert files) or the only one configured.
 * One transaction: a bad line writes nothing. */
static int
cmd_import_serials(struct ctl *ctl, int argc, char **argv)
{
	const char *path = NULL, *issuer_path = NULL;
	const struct issuer *issuer = NULL;
	struct db_txn *txn = NULL;
	struct db *db = NULL;
	struct db_key key;
	struct db_cert cert, old;
	char line[256], *end;
	unsigned long long n_total = 0, n_new = 0, line_no = 0;
	FILE *f = NULL;
	size_t i;
	int rc, status = 1;

	for (i = 0; i < (size_t)argc; i++) {
		if (strcmp(argv[i], "--issuer") == 0 && i + 1 < (size_t)argc)
			issuer_path = argv[++i];
		else if (path == NULL)
			path = argv[i];
		else
			usage();
	}
	if (path == NULL)
		usage();
	if (load_issuers(ctl) != 0)
		goto out;
	for (i = 0; i < ctl->n_issuers; i++) {
		if (issuer_path == NULL ||
		    strcmp(issuer_path, ctl->conf->issuer_certs[i]) == 0 ||
		    strcmp(issuer_path, ctl->issuers[i].subject) == 0)
			issuer = issuer == NULL ? &ctl->issuers[i] : issuer;
	}
	if (issuer == NULL || (issuer_path == NULL && ctl->n_issuers > 1)) {
		log_err("name the issuer with --issuer and one of the "
			"configured issuer_cert paths");
		goto out;
	}
	f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (f == NULL) {
		log_err("%s: cannot open: %s", path, strerror(errno));
		goto out;
	}
	if (open_index(ctl, DB_MODE_CREATE, &db) != 0)
		goto out;
	if ((rc = db_txn_begin(db, &txn)) != DB_OK) {
		log_err("cannot write index %s: %s", ctl->conf->index_path,
		    db_strerror(rc));
		goto out;
	}
	memset(&cert, 0, sizeof(cert));
	cert.state = DB_CERT_GOOD;
	cert.revocation_reason = -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		line_no++;
		if ((end = strpbrk(line, "#\r\n")) != NULL)
			*end = '\0';
		for (end = line + strlen(line);
		     end > line && (end[-1] == ' ' || end[-1] == '\t');)
			*--end = '\0';
		if (line[0] == '\0')
			continue;
		if (parse_serial(line, &key) != 0) {
			log_err("%s:%llu: not a serial number of 1 to 20 "
				"positive octets in hex",
			    path, line_no);
			goto out;
		}
		memcpy(key.issuer_id, issuer->id, sizeof(key.issuer_id));
		rc = db_txn_get(txn, &key, &old);
		if (rc == DB_OK) {
			n_total++;
			continue; /* never undo a revocation */
		}
		if (rc != DB_ERR_NOT_FOUND ||
		    (rc = db_txn_put(txn, &key, &cert)) != DB_OK) {
			log_err("%s:%llu: cannot write the index: %s", path,
			    line_no, db_strerror(rc));
			goto out;
		}
		if (schedule_now(ctl, txn, &key) != 0)
			goto out;
		n_total++;
		n_new++;
	}
	if (ferror(f)) {
		log_err("%s: cannot read", path);
		goto out;
	}
	rc = db_txn_commit(txn);
	txn = NULL;
	if (rc != DB_OK) {
		log_err("cannot commit to index %s: %s", ctl->conf->index_path,
		    db_strerror(rc));
		goto out;
	}
	(void)printf("imported %llu serials (%llu new)\n", n_total, n_new);
	status = 0;
out:
	if (f != NULL && f != stdin)
		(void)fclose(f);
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
	if (schedule_now(ctl, txn, &key) != 0)
		goto out;
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

static volatile sig_atomic_t sign_stop;

static void
stop_signing(int sig)
{
	(void)sig;
	sign_stop = 1;
}

struct sign_progress {
	bool is_tty;
	uint64_t total;
	struct timespec started, last_drawn;
};

static double
seconds_since(const struct timespec *t)
{
	struct timespec now;

	(void)clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) +
	    (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* draw_progress shows count, rate and ETA on a terminal, five times a
 * second at most. */
static void
draw_progress(void *cls, const struct presign_stats *stats)
{
	struct sign_progress *progress = cls;
	double elapsed, rate, eta, done;
	char bar[31];
	size_t filled, i;

	if (!progress->is_tty || seconds_since(&progress->last_drawn) < 0.2)
		return;
	(void)clock_gettime(CLOCK_MONOTONIC, &progress->last_drawn);
	elapsed = seconds_since(&progress->started);
	rate = elapsed > 0 ? (double)stats->n_signed / elapsed : 0;
	done = progress->total > 0
	    ? (double)stats->n_signed / (double)progress->total
	    : 1;
	if (done > 1)
		done = 1;
	filled = (size_t)(done * 30);
	for (i = 0; i < 30; i++)
		bar[i] = i < filled ? '#' : '.';
	bar[30] = '\0';
	eta = rate > 0 && progress->total > stats->n_signed
	    ? (double)(progress->total - stats->n_signed) / rate
	    : 0;
	(void)fprintf(stderr,
	    "\r[%s] %3.0f%% %llu/%llu %.0f/s ETA %d:%02d:%02d  ", bar,
	    done * 100, (unsigned long long)stats->n_signed,
	    (unsigned long long)progress->total, rate, (int)eta / 3600,
	    ((int)eta / 60) % 60, (int)eta % 60);
}

/* schedule_all makes every certificate's responses due now, in batches
 * of one transaction each. */
static int
schedule_all(struct ctl *ctl, struct db *db)
{
	struct db_cursor_pos pos = {0};
	struct db_key keys[256];
	struct db_cert certs[256];
	struct db_txn *txn = NULL;
	size_t n, i;
	int rc;

	for (;;) {
		if ((rc = db_list_certs(db, &pos, keys, certs, 256, &n)) !=
			DB_OK ||
		    n == 0)
			break;
		if ((rc = db_txn_begin(db, &txn)) != DB_OK)
			break;
		for (i = 0; i < n; i++) {
			if (schedule_now(ctl, txn, &keys[i]) != 0) {
				rc = DB_ERR_IO;
				break;
			}
		}
		if (rc != DB_OK || (rc = db_txn_commit(txn)) != DB_OK) {
			txn = NULL;
			break;
		}
		txn = NULL;
	}
	db_txn_abort(txn);
	return rc;
}

static struct hsm *
open_signing_key(struct ctl *ctl)
{
	struct hsm_params params = {
	    .module_path = ctl->conf->pkcs11_module,
	    .token_label = ctl->conf->token_label,
	    .key_label = ctl->conf->key_label,
	    .key_id = ctl->conf->key_id,
	    .pin_file = ctl->conf->pin_file,
	    .sessions = ctl->conf->hsm_sessions,
	    .in_flight = ctl->conf->hsm_in_flight,
	    .processes = ctl->conf->hsm_processes,
	};
	struct hsm *hsm = NULL;
	int rc;

	if ((rc = hsm_open(&params, &hsm)) != HSM_OK) {
		log_err("cannot open key in token \"%s\": %s",
		    ctl->conf->token_label, hsm_strerror(rc));
		return NULL;
	}
	return hsm;
}

static int
cmd_sign(struct ctl *ctl, int argc, char **argv)
{
	struct sign_progress progress = {0};
	struct presign_stats stats = {0};
	struct authority *authority = NULL;
	struct presign *presign = NULL;
	struct hsm *hsm = NULL;
	struct db *db = NULL;
	char err[512];
	double elapsed;
	bool is_all = false;
	int i, rc, status = 1;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--all") == 0)
			is_all = true;
		else
			usage();
	}
	if ((hsm = open_signing_key(ctl)) == NULL)
		goto out;
	if (authority_new(ctl->conf, hsm, &authority, err, sizeof(err)) != 0) {
		log_err("%s", err);
		goto out;
	}
	if (open_index(ctl, DB_MODE_WRITE, &db) != 0)
		goto out;
	if (is_all && (rc = schedule_all(ctl, db)) != DB_OK) {
		log_err("cannot schedule signing: %s", db_strerror(rc));
		goto out;
	}
	if (presign_new(authority, db, &presign) != 0) {
		log_err("out of memory");
		goto out;
	}
	(void)signal(SIGINT, stop_signing);
	(void)signal(SIGTERM, stop_signing);
	progress.is_tty = isatty(STDERR_FILENO) == 1;
	/* Counting walks the whole schedule, so only for the progress bar;
	 * and its pages are handed back before the run. */
	if (progress.is_tty &&
	    (db_count_due(db, (int64_t)time(NULL), &progress.total) != DB_OK ||
		db_release_pages(db) != DB_OK))
		progress.total = 0;
	(void)clock_gettime(CLOCK_MONOTONIC, &progress.started);
	rc = presign_run(presign, (int64_t)time(NULL), &sign_stop,
	    draw_progress, &progress, &stats);
	elapsed = seconds_since(&progress.started);
	if (progress.is_tty)
		(void)fprintf(stderr, "\n");
	(void)printf("signed %llu responses in %.1f s (%.0f/s); %llu failed, "
		     "%llu left for a status change%s\n",
	    (unsigned long long)stats.n_signed, elapsed,
	    elapsed > 0 ? (double)stats.n_signed / elapsed : 0.0,
	    (unsigned long long)stats.n_failed,
	    (unsigned long long)stats.n_skipped,
	    sign_stop ? "; interrupted: rerun to finish" : "");
	if (rc != DB_OK) {
		log_err("cannot write index %s: %s", ctl->conf->index_path,
		    db_strerror(rc));
		goto out;
	}
	status = stats.n_failed > 0 || sign_stop ? 1 : 0;
out:
	presign_free(presign);
	authority_free(authority);
	hsm_close(hsm);
	db_close(db);
	return status;
}

/* check_response verifies one stored response: it parses, its signature
 * verifies with the responder certificate, and it states exactly the
 * status and times its record says. Returns NULL or what is wrong. */
static const char *
check_response(
    X509 *responder, const struct db_key *key, const struct db_response *stored)
{
	const unsigned char *p = stored->der;
	STACK_OF(X509) *signers = NULL;
	OCSP_RESPONSE *response = NULL;
	OCSP_BASICRESP *basic = NULL;
	X509_STORE *store = NULL;
	OCSP_SINGLERESP *single;
	ASN1_GENERALIZEDTIME *revoked_at = NULL, *this_update = NULL,
			     *next_update = NULL;
	ASN1_INTEGER *serial = NULL;
	uint8_t etag[32];
	unsigned int etag_len;
	struct tm tm;
	const char *why = "does not parse";
	int reason = -1, state;

	response = d2i_OCSP_RESPONSE(NULL, &p, (long)stored->der_len);
	if (response == NULL || p != stored->der + stored->der_len ||
	    OCSP_response_status(response) != OCSP_RESPONSE_STATUS_SUCCESSFUL ||
	    (basic = OCSP_response_get1_basic(response)) == NULL ||
	    OCSP_resp_count(basic) != 1)
		goto out;
	why = "signature does not verify";
	signers = sk_X509_new_null();
	store = X509_STORE_new();
	if (signers == NULL || store == NULL ||
	    sk_X509_push(signers, responder) <= 0 ||
	    OCSP_basic_verify(basic, signers, store,
		OCSP_NOVERIFY | OCSP_TRUSTOTHER | OCSP_NOINTERN) != 1)
		goto out;
	why = "states another certificate";
	single = OCSP_resp_get0(basic, 0);
	if (OCSP_id_get0_info(NULL, NULL, NULL, &serial,
		(OCSP_CERTID *)(uintptr_t)OCSP_SINGLERESP_get0_id(single)) !=
		1 ||
	    (size_t)ASN1_STRING_length(serial) != key->serial_len ||
	    memcmp(ASN1_STRING_get0_data(serial), key->serial,
		key->serial_len) != 0)
		goto out;
	why = "states another status than it was signed for";
	state = OCSP_single_get0_status(
	    single, &reason, &revoked_at, &this_update, &next_update);
	if (stored->signed_for.state == DB_CERT_GOOD
		? state != V_OCSP_CERTSTATUS_GOOD
		: state != V_OCSP_CERTSTATUS_REVOKED)
		goto out;
	if (state == V_OCSP_CERTSTATUS_REVOKED &&
	    (ASN1_TIME_to_tm(revoked_at, &tm) != 1 ||
		(int64_t)timegm(&tm) != stored->signed_for.revoked_at ||
		(stored->signed_for.revocation_reason >= 0 &&
		    reason != stored->signed_for.revocation_reason)))
		goto out;
	why = "states other times than its record";
	if (this_update == NULL || next_update == NULL ||
	    ASN1_TIME_to_tm(this_update, &tm) != 1 ||
	    (int64_t)timegm(&tm) != stored->this_update ||
	    ASN1_TIME_to_tm(next_update, &tm) != 1 ||
	    (int64_t)timegm(&tm) != stored->next_update)
		goto out;
	why = "has a wrong ETag";
	if (EVP_Digest(stored->der, stored->der_len, etag, &etag_len,
		EVP_sha256(), NULL) != 1 ||
	    memcmp(etag, stored->etag, sizeof(etag)) != 0)
		goto out;
	why = NULL;
out:
	X509_STORE_free(store);
	sk_X509_free(signers);
	OCSP_BASICRESP_free(basic);
	OCSP_RESPONSE_free(response);
	ERR_clear_error();
	return why;
}

static int
cmd_verify(struct ctl *ctl, int argc, char **argv)
{
	static const enum db_hash hashes[] = {DB_HASH_SHA1, DB_HASH_SHA256};
	struct db_response *stored = NULL;
	struct db_cursor_pos pos = {0};
	struct db_key keys[256];
	struct db_cert certs[256], cert;
	char serial_text[2 * DB_SERIAL_MAX + 1];
	uint64_t n_certs = 0, n_ok = 0, n_bad = 0, n_missing = 0, n_due = 0;
	X509 *responder = NULL;
	struct db *db = NULL;
	const char *why;
	size_t n, i, h;
	bool has_response;
	int rc, status = 1;

	(void)argv;
	if (argc != 0)
		usage();
	if ((responder = issuer_read_cert(ctl->conf->responder_cert)) == NULL) {
		log_err("cannot read responder certificate %s",
		    ctl->conf->responder_cert);
		goto out;
	}
	if ((stored = malloc(sizeof(*stored))) == NULL ||
	    open_index(ctl, DB_MODE_READ, &db) != 0)
		goto out;
	for (;;) {
		rc = db_list_certs(db, &pos, keys, certs, 256, &n);
		if (rc != DB_OK) {
			log_err("index %s: %s", ctl->conf->index_path,
			    db_strerror(rc));
			n_bad++;
			break;
		}
		if (n == 0)
			break;
		for (i = 0; i < n; i++) {
			n_certs++;
			for (h = 0; h < 2; h++) {
				rc = db_lookup_answer(db, &keys[i], hashes[h],
				    &cert, stored, &has_response);
				if (rc != DB_OK) {
					n_bad++;
					continue;
				}
				if (!has_response) {
					if (hashes[h] == DB_HASH_SHA1)
						n_missing++;
					continue;
				}
				format_serial(
				    &keys[i], serial_text, sizeof(serial_text));
				if ((why = check_response(responder, &keys[i],
					 stored)) != NULL) {
					log_err("serial %s: stored response %s",
					    serial_text, why);
					n_bad++;
					continue;
				}
				n_ok++;
				if (cert.state != stored->signed_for.state ||
				    cert.revoked_at !=
					stored->signed_for.revoked_at)
					n_due++;
			}
		}
	}
	(void)printf("certificates=%llu responses_ok=%llu bad=%llu "
		     "missing=%llu awaiting_status_change=%llu\n",
	    (unsigned long long)n_certs, (unsigned long long)n_ok,
	    (unsigned long long)n_bad, (unsigned long long)n_missing,
	    (unsigned long long)n_due);
	status = n_bad == 0 ? 0 : 1;
out:
	free(stored);
	X509_free(responder);
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
	    {"import-serials", cmd_import_serials},
	    {"revoke", cmd_revoke},
	    {"status", cmd_status},
	    {"sign", cmd_sign},
	    {"verify", cmd_verify},
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
