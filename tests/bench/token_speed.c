/* token_speed.c - the raw signing rate of a PKCS#11 token: T threads, each
 * with its own session, in each of P processes, sign for S seconds through
 * the module alone (no libp11, no OpenSSL), so the rate is the token's own.
 *
 * usage: token_speed --module PATH --token LABEL --key LABEL --pin-file F
 *            [--seconds S] [--threads T] [--procs P] [--sweep [--runs N]]
 *
 * Every run forks its P processes before anything touches the module; each
 * one loads and initialises the module, logs in with the PIN it reads from
 * the file, opens one session per thread and waits. Only then does the
 * clock start, for all of them at once, so setup is never timed. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define MAX_THREADS     256
#define MAX_PROCS       64
#define MAX_SECONDS     3600.0
#define PIN_MAX_LEN     255
#define PIN_BUF_LEN     (PIN_MAX_LEN + 3) /* PIN, newline, overflow, NUL */
#define TOKEN_LABEL_LEN 32
#define SIG_BUF_LEN     1024
#define SWEEP_RUNS      3 /* default runs of each point */
#define MAX_RUNS        99

#define READY_OK   'R'
#define READY_FAIL 'F'
#define GO_ABORT   'A'

/* What is signed: a SHA-256 digest (any 32 bytes will do for a rate), bare
 * for CKM_ECDSA, in a DigestInfo for CKM_RSA_PKCS (RFC 8017 9.2 note 1). */
#define DIGEST_BYTES                                                           \
	0x5b, 0x1e, 0x0c, 0x3a, 0x9d, 0x74, 0x22, 0xe8, 0x61, 0x0f, 0xb4,      \
	    0x37, 0xc9, 0x85, 0x4a, 0xd2, 0x13, 0x6e, 0xa0, 0x58, 0xf7, 0x29,  \
	    0x8c, 0x45, 0xbe, 0x02, 0x93, 0x7d, 0x16, 0xe1, 0x6a, 0xcf
static const CK_BYTE ecdsa_input[] = {DIGEST_BYTES};
static const CK_BYTE rsa_input[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
    0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
    DIGEST_BYTES};
/* DER OBJECT IDENTIFIER prime256v1 (RFC 5480 2.1.1.1), as CKA_EC_PARAMS. */
static const CK_BYTE p256_params[] = {
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

struct opts {
	const char *module_path;
	const char *token_label;
	const char *key_label;
	const char *pin_file;
	double seconds;
	int threads;
	int procs;
	int runs; /* of each point of a sweep */
	bool is_sweep;
};

enum key_kind {
	KEY_OTHER = 0,
	KEY_EC,
	KEY_EC_P256,
	KEY_RSA,
};

/* One process's answer, sent to the parent through a pipe in one write
 * (smaller than PIPE_BUF, so answers never interleave). */
struct report {
	int32_t is_ok;
	int32_t key_kind; /* enum key_kind */
	uint32_t key_bits;
	uint32_t pad;
	uint64_t sigs;
	double cpu_s; /* user and system time of the process while signing */
};

/* The state one process shares with its signing threads. */
struct child {
	CK_FUNCTION_LIST_PTR fl;
	CK_SLOT_ID slot;
	CK_OBJECT_HANDLE key;
	CK_MECHANISM_TYPE mechanism;
	const CK_BYTE *input;
	CK_ULONG input_len;
	pthread_barrier_t ready; /* every session is open */
	pthread_barrier_t go;    /* the clock starts */
	bool is_aborted;         /* written before go, read after it */
	atomic_bool stop;
};

struct worker {
	struct child *child;
	pthread_t thread;
	CK_SESSION_HANDLE session;
	bool has_session;
	uint64_t sigs;
	const char *failed_call;
	CK_RV rv;
};

/* What one run measured. */
struct result {
	double rate;           /* signatures per second of wall-clock time */
	double cpu_us_per_sig; /* CPU time the signing processes used */
	struct report key;     /* key_kind and key_bits describe the key */
};

/* One (threads, procs) point of the sweep and its runs. */
struct point {
	int threads;
	int procs;
	double rates[MAX_RUNS];
	double cpu_us[MAX_RUNS];
};

static void
usage(void)
{
	(void)fprintf(stderr,
	    "usage: token_speed --module PATH --token LABEL --key LABEL "
	    "--pin-file FILE\n"
	    "           [--seconds S] [--threads T] [--procs P] "
	    "[--sweep [--runs N]]\n"
	    "  signs for S seconds (default 3) with T threads (default 1),\n"
	    "  each with its own session, in each of P processes (default 1);\n"
	    "  --sweep tries threads 1,2,4,8 x procs 1, threads 1 x procs "
	    "2,4,\n"
	    "  threads 2 x procs 2, N runs each (default %d), and prints the\n"
	    "  medians\n",
	    SWEEP_RUNS);
	exit(2);
}

/* cpu_s returns the user and system time this process has used. */
static double
cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0.0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double
now_s(void)
{
	struct timespec ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
parse_int(const char *s, int min, int max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = (int)v;
	return 0;
}

static int
parse_seconds(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v > 0.0) ||
	    v > MAX_SECONDS)
		return -1;
	*out = v;
	return 0;
}

static void
parse_args(int argc, char **argv, struct opts *o)
{
	bool has_threads = false, has_procs = false, has_runs = false;
	const char *arg, *val;
	int i;

	memset(o, 0, sizeof(*o));
	o->seconds = 3.0;
	o->threads = 1;
	o->procs = 1;
	o->runs = SWEEP_RUNS;
	for (i = 1; i < argc; i++) {
		arg = argv[i];
		if (strcmp(arg, "--sweep") == 0) {
			o->is_sweep = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		val = argv[++i];
		if (strcmp(arg, "--module") == 0) {
			o->module_path = val;
		} else if (strcmp(arg, "--token") == 0) {
			o->token_label = val;
		} else if (strcmp(arg, "--key") == 0) {
			o->key_label = val;
		} else if (strcmp(arg, "--pin-file") == 0) {
			o->pin_file = val;
		} else if (strcmp(arg, "--seconds") == 0) {
			if (parse_seconds(val, &o->seconds) != 0)
				usage();
		} else if (strcmp(arg, "--threads") == 0) {
			if (parse_int(val, 1, MAX_THREADS, &o->threads) != 0)
				usage();
			has_threads = true;
		} else if (strcmp(arg, "--runs") == 0) {
			if (parse_int(val, 1, MAX_RUNS, &o->runs) != 0)
				usage();
			has_runs = true;
		} else if (strcmp(arg, "--procs") == 0) {
			if (parse_int(val, 1, MAX_PROCS, &o->procs) != 0)
				usage();
			has_procs = true;
		} else {
			usage();
		}
	}
	if (o->module_path == NULL || o->token_label == NULL ||
	    o->key_label == NULL || o->pin_file == NULL)
		usage();
	if (strlen(o->token_label) > TOKEN_LABEL_LEN)
		usage();
	/* The sweep chooses its own points. */
	if (o->is_sweep && (has_threads || has_procs))
		usage();
	if (!o->is_sweep && has_runs)
		usage();
}

/* read_pin copies the PIN in path into pin (PIN_BUF_LEN bytes) as a C
 * string, one trailing newline dropped. It uses read(2), so no stdio buffer
 * we cannot wipe holds the PIN; the caller wipes pin. As hsm/ does, it
 * refuses anything but a regular file that others cannot read. */
static int
read_pin(const char *path, char *pin)
{
	struct stat st;
	size_t len = 0;
	ssize_t n;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd == -1)
		goto out;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    (st.st_mode & S_IROTH) != 0)
		goto out;
	while (len < PIN_BUF_LEN - 1) {
		n = read(fd, pin + len, PIN_BUF_LEN - 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto out;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > 0 && pin[len - 1] == '\n')
		len--;
	if (len == 0 || len > PIN_MAX_LEN || memchr(pin, '\0', len) != NULL)
		goto out;
	pin[len] = '\0';
	rc = 0;
out:
	if (fd != -1)
		(void)close(fd);
	return rc;
}

static void
say_rv(const char *call, CK_RV rv)
{
	(void)fprintf(stderr, "token_speed: %s failed: CK_RV 0x%lx\n", call,
	    (unsigned long)rv);
}

/* load_module dlopens path and sets *out_fl to its function list; the
 * caller dlcloses *out_dl, set even on failure (NULL or the handle). */
static int
load_module(const char *path, void **out_dl, CK_FUNCTION_LIST_PTR *out_fl)
{
	CK_C_GetFunctionList get_function_list;
	void *sym;

	*out_fl = NULL;
	if ((*out_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		(void)fprintf(stderr, "token_speed: cannot load %s: %s\n", path,
		    dlerror());
		return -1;
	}
	if ((sym = dlsym(*out_dl, "C_GetFunctionList")) == NULL) {
		(void)fprintf(
		    stderr, "token_speed: %s has no C_GetFunctionList\n", path);
		return -1;
	}
	/* ISO C has no cast from object to function pointer; POSIX
	 * guarantees that dlsym()'s result converts. */
	memcpy(&get_function_list, &sym, sizeof(get_function_list));
	if (get_function_list(out_fl) != CKR_OK || *out_fl == NULL) {
		(void)fprintf(
		    stderr, "token_speed: C_GetFunctionList failed\n");
		return -1;
	}
	return 0;
}

/* find_slot sets *out to the slot whose token is labelled label. */
static int
find_slot(CK_FUNCTION_LIST_PTR fl, const char *label, CK_SLOT_ID *out)
{
	CK_SLOT_ID *slots = NULL;
	CK_TOKEN_INFO info;
	CK_ULONG i, n = 0;
	size_t label_len = strlen(label), j;
	CK_RV rv;
	int rc = -1;

	if ((rv = fl->C_GetSlotList(CK_TRUE, NULL, &n)) != CKR_OK) {
		say_rv("C_GetSlotList", rv);
		goto out;
	}
	if (n == 0 || (slots = calloc(n, sizeof(*slots))) == NULL)
		goto out_missing;
	if ((rv = fl->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK) {
		say_rv("C_GetSlotList", rv);
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (fl->C_GetTokenInfo(slots[i], &info) != CKR_OK)
			continue;
		/* CK_TOKEN_INFO.label is blank-padded, not terminated. */
		if (memcmp(info.label, label, label_len) != 0)
			continue;
		for (j = label_len; j < TOKEN_LABEL_LEN; j++)
			if (info.label[j] != ' ')
				break;
		if (j == TOKEN_LABEL_LEN) {
			*out = slots[i];
			rc = 0;
			goto out;
		}
	}
out_missing:
	(void)fprintf(stderr, "token_speed: no token labelled \"%s\"\n", label);
out:
	free(slots);
	return rc;
}

static int
login(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE session, const char *path)
{
	char pin[PIN_BUF_LEN];
	CK_RV rv;
	int rc = -1;

	if (read_pin(path, pin) != 0) {
		(void)fprintf(stderr,
		    "token_speed: unusable PIN file %s (a regular file, "
		    "not readable by others)\n",
		    path);
		goto out;
	}
	rv = fl->C_Login(session, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		say_rv("C_Login", rv);
		goto out;
	}
	rc = 0;
out:
	explicit_bzero(pin, sizeof(pin));
	return rc;
}

/* find_key sets c->key to the one private key labelled label, chooses the
 * mechanism for its type, and describes the key in *r. */
static int
find_key(struct child *c, CK_SESSION_HANDLE session, const char *label,
    struct report *r)
{
	CK_OBJECT_CLASS class = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE find[] = {
	    {CKA_CLASS, &class, sizeof(class)},
	    {CKA_LABEL, (void *)(uintptr_t)label, strlen(label)},
	};
	CK_OBJECT_HANDLE found[2];
	CK_KEY_TYPE type;
	CK_ATTRIBUTE attr = {CKA_KEY_TYPE, &type, sizeof(type)};
	CK_BYTE value[1024];
	CK_ULONG n = 0;
	CK_RV rv;

	if ((rv = c->fl->C_FindObjectsInit(session, find, 2)) != CKR_OK) {
		say_rv("C_FindObjectsInit", rv);
		return -1;
	}
	rv = c->fl->C_FindObjects(session, found, 2, &n);
	(void)c->fl->C_FindObjectsFinal(session);
	if (rv != CKR_OK) {
		say_rv("C_FindObjects", rv);
		return -1;
	}
	if (n != 1) {
		(void)fprintf(stderr,
		    "token_speed: %s private key labelled \"%s\"\n",
		    n == 0 ? "no" : "more than one", label);
		return -1;
	}
	c->key = found[0];
	if ((rv = c->fl->C_GetAttributeValue(session, c->key, &attr, 1)) !=
	    CKR_OK) {
		say_rv("C_GetAttributeValue(CKA_KEY_TYPE)", rv);
		return -1;
	}
	if (type == CKK_EC) {
		c->mechanism = CKM_ECDSA;
		c->input = ecdsa_input;
		c->input_len = sizeof(ecdsa_input);
		r->key_kind = KEY_EC;
		attr = (CK_ATTRIBUTE){CKA_EC_PARAMS, value, sizeof(value)};
		if (c->fl->C_GetAttributeValue(session, c->key, &attr, 1) ==
			CKR_OK &&
		    attr.ulValueLen == sizeof(p256_params) &&
		    memcmp(value, p256_params, sizeof(p256_params)) == 0) {
			r->key_kind = KEY_EC_P256;
			r->key_bits = 256;
		}
	} else if (type == CKK_RSA) {
		c->mechanism = CKM_RSA_PKCS;
		c->input = rsa_input;
		c->input_len = sizeof(rsa_input);
		r->key_kind = KEY_RSA;
		attr = (CK_ATTRIBUTE){CKA_MODULUS, value, sizeof(value)};
		if (c->fl->C_GetAttributeValue(session, c->key, &attr, 1) ==
			CKR_OK &&
		    attr.ulValueLen <= sizeof(value)) {
			n = 0;
			while (n < attr.ulValueLen && value[n] == 0)
				n++;
			r->key_bits = (uint32_t)((attr.ulValueLen - n) * 8);
		}
	} else {
		(void)fprintf(stderr,
		    "token_speed: key \"%s\" is neither EC nor RSA "
		    "(CKA_KEY_TYPE 0x%lx)\n",
		    label, (unsigned long)type);
		return -1;
	}
	return 0;
}

/* sign_loop is one signing thread: its own session, then signatures until
 * the child says stop. */
static void *
sign_loop(void *arg)
{
	struct worker *w = arg;
	struct child *c = w->child;
	CK_MECHANISM mech = {c->mechanism, NULL, 0};
	CK_BYTE sig[SIG_BUF_LEN];
	CK_ULONG sig_len;
	CK_RV rv;

	rv = c->fl->C_OpenSession(
	    c->slot, CKF_SERIAL_SESSION, NULL, NULL, &w->session);
	if (rv == CKR_OK)
		w->has_session = true;
	else {
		w->failed_call = "C_OpenSession";
		w->rv = rv;
	}
	(void)pthread_barrier_wait(&c->ready);
	(void)pthread_barrier_wait(&c->go);
	if (!w->has_session || c->is_aborted)
		return NULL;
	while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
		rv = c->fl->C_SignInit(w->session, &mech, c->key);
		if (rv != CKR_OK) {
			w->failed_call = "C_SignInit";
			break;
		}
		sig_len = sizeof(sig);
		rv = c->fl->C_Sign(w->session, (CK_BYTE_PTR)(uintptr_t)c->input,
		    c->input_len, sig, &sig_len);
		if (rv != CKR_OK) {
			w->failed_call = "C_Sign";
			break;
		}
		w->sigs++;
	}
	w->rv = rv;
	return NULL;
}

static int
write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* read_all returns the bytes read, fewer than len only at end of file. */
static size_t
read_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = read(fd, p + done, len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += (size_t)n;
	}
	return done;
}

static void
sleep_until(double deadline_s)
{
	struct timespec ts;

	ts.tv_sec = (time_t)deadline_s;
	ts.tv_nsec = (long)((deadline_s - (double)ts.tv_sec) * 1e9);
	while (
	    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* run_child is one process of a run: it sets up, says READY_OK or
 * READY_FAIL on ready_fd and closes it, waits for the parent to close
 * go_fd (a byte there means abort), signs for o->seconds and sends a
 * struct report on report_fd. It never returns. */
static void
run_child(const struct opts *o, int ready_fd, int go_fd, int report_fd)
{
	struct child c;
	struct worker *workers = NULL;
	struct report r;
	CK_C_INITIALIZE_ARGS init_args;
	CK_SESSION_HANDLE login_session = CK_INVALID_HANDLE;
	CK_RV rv;
	void *dl = NULL;
	char ready = READY_FAIL, go;
	bool is_initialized = false, has_barriers = false;
	int i, n_started = 0, status = 1;

	memset(&c, 0, sizeof(c));
	memset(&r, 0, sizeof(r));
	atomic_init(&c.stop, false);
	if (load_module(o->module_path, &dl, &c.fl) != 0)
		goto out;
	memset(&init_args, 0, sizeof(init_args));
	init_args.flags = CKF_OS_LOCKING_OK;
	if ((rv = c.fl->C_Initialize(&init_args)) != CKR_OK) {
		say_rv("C_Initialize", rv);
		goto out;
	}
	is_initialized = true;
	if (find_slot(c.fl, o->token_label, &c.slot) != 0)
		goto out;
	/* This session keeps the login alive for the threads' sessions. */
	rv = c.fl->C_OpenSession(
	    c.slot, CKF_SERIAL_SESSION, NULL, NULL, &login_session);
	if (rv != CKR_OK) {
		say_rv("C_OpenSession", rv);
		goto out;
	}
	if (login(c.fl, login_session, o->pin_file) != 0)
		goto out;
	if (find_key(&c, login_session, o->key_label, &r) != 0)
		goto out;

	if ((workers = calloc((size_t)o->threads, sizeof(*workers))) == NULL)
		goto out;
	if (pthread_barrier_init(&c.ready, NULL, (unsigned)o->threads + 1) !=
		0 ||
	    pthread_barrier_init(&c.go, NULL, (unsigned)o->threads + 1) != 0)
		goto out;
	has_barriers = true;
	for (i = 0; i < o->threads; i++) {
		workers[i].child = &c;
		if (pthread_create(
			&workers[i].thread, NULL, sign_loop, &workers[i]) != 0)
			break;
		n_started++;
	}
	if (n_started < o->threads) {
		/* The barriers wait for every thread: those started cannot
		 * pass them, so end the process without tearing down. */
		(void)fprintf(stderr, "token_speed: cannot start threads\n");
		(void)write_all(ready_fd, &ready, 1);
		_exit(1);
	}
	(void)pthread_barrier_wait(&c.ready);
	ready = READY_OK;
	for (i = 0; i < o->threads; i++) {
		if (workers[i].failed_call != NULL) {
			say_rv(workers[i].failed_call, workers[i].rv);
			ready = READY_FAIL;
		}
	}
	/* Closing ready_fd at once lets the parent see end of file should
	 * a sibling die before it says ready. */
	(void)write_all(ready_fd, &ready, 1);
	(void)close(ready_fd);
	ready_fd = -1;
	c.is_aborted = ready != READY_OK || read_all(go_fd, &go, 1) != 0;
	(void)pthread_barrier_wait(&c.go);
	r.cpu_s = -cpu_s();
	if (!c.is_aborted)
		sleep_until(now_s() + o->seconds);
	atomic_store(&c.stop, true);
	r.is_ok = !c.is_aborted;
	for (i = 0; i < o->threads; i++) {
		(void)pthread_join(workers[i].thread, NULL);
		if (workers[i].failed_call != NULL && !c.is_aborted &&
		    workers[i].has_session) {
			say_rv(workers[i].failed_call, workers[i].rv);
			r.is_ok = 0;
		}
		r.sigs += workers[i].sigs;
	}
	r.cpu_s += cpu_s();
	if (write_all(report_fd, &r, sizeof(r)) == 0 && r.is_ok)
		status = 0;
	(void)close(report_fd);
	for (i = 0; i < o->threads; i++)
		if (workers[i].has_session)
			(void)c.fl->C_CloseSession(workers[i].session);
out:
	if (ready_fd != -1)
		(void)write_all(ready_fd, &ready, 1);
	if (has_barriers) {
		(void)pthread_barrier_destroy(&c.ready);
		(void)pthread_barrier_destroy(&c.go);
	}
	free(workers);
	if (login_session != CK_INVALID_HANDLE) {
		(void)c.fl->C_Logout(login_session);
		(void)c.fl->C_CloseSession(login_session);
	}
	if (is_initialized)
		(void)c.fl->C_Finalize(NULL);
	if (dl != NULL)
		(void)dlclose(dl);
	_exit(status);
}

/* run_once measures one (threads, procs) point: it forks o->procs children,
 * starts them together once all are ready, and sets out->rate to their
 * signatures over the wall-clock time from the start to the last report.
 * It prints the run's line on log. Returns 0, or -1 if any child failed.
 *
 * The children set up one at a time. SoftHSM 2.6.1 rewrites token.object
 * on every C_Login and drops the file lock before its stdio buffer reaches
 * the file (fixed upstream after 2.6.1, "Flush files before unlocking"),
 * so a process initialising meanwhile may read it empty and not see the
 * token at all. */
static int
run_once(const struct opts *o, FILE *log, struct result *out)
{
	pid_t pids[MAX_PROCS], waited;
	int ready_pipe[2] = {-1, -1}, go_pipe[2] = {-1, -1};
	int report_pipe[2] = {-1, -1};
	struct report r;
	uint64_t sigs = 0;
	double start_s, end_s, used_s = 0.0;
	char ready, abort_bytes[MAX_PROCS];
	int i, n_forked = 0, n_reports = 0, status = 0, rc = -1;
	bool is_ready = true;

	memset(out, 0, sizeof(*out));
	if (pipe(go_pipe) != 0 || pipe(report_pipe) != 0) {
		perror("token_speed: pipe");
		goto out;
	}
	(void)fflush(NULL);
	for (i = 0; i < o->procs && is_ready; i++) {
		if (pipe(ready_pipe) != 0) {
			perror("token_speed: pipe");
			is_ready = false;
			break;
		}
		pids[i] = fork();
		if (pids[i] == -1) {
			perror("token_speed: fork");
			is_ready = false;
		}
		if (pids[i] == 0) {
			(void)close(ready_pipe[0]);
			(void)close(go_pipe[1]);
			(void)close(report_pipe[0]);
			run_child(o, ready_pipe[1], go_pipe[0], report_pipe[1]);
		}
		(void)close(ready_pipe[1]);
		ready_pipe[1] = -1;
		if (pids[i] != -1) {
			n_forked++;
			/* End of file here: the child died before it said. */
			if (read_all(ready_pipe[0], &ready, 1) != 1 ||
			    ready != READY_OK)
				is_ready = false;
		}
		(void)close(ready_pipe[0]);
		ready_pipe[0] = -1;
	}
	(void)close(report_pipe[1]);
	report_pipe[1] = -1;
	(void)close(go_pipe[0]);
	go_pipe[0] = -1;

	if (!is_ready) {
		/* One abort byte for each child still reading. */
		memset(abort_bytes, GO_ABORT, sizeof(abort_bytes));
		(void)write_all(go_pipe[1], abort_bytes, (size_t)n_forked);
	}
	start_s = now_s();
	(void)close(go_pipe[1]);
	go_pipe[1] = -1;
	/* Exactly one report each, not until end of file: the clock stops
	 * before the children tear down. */
	while (n_reports < n_forked &&
	    read_all(report_pipe[0], &r, sizeof(r)) == sizeof(r)) {
		n_reports++;
		sigs += r.sigs;
		used_s += r.cpu_s;
		if (r.is_ok)
			out->key = r;
		else
			is_ready = false;
	}
	end_s = now_s();
	for (i = 0; i < n_forked; i++) {
		while ((waited = waitpid(pids[i], &status, 0)) == -1 &&
		    errno == EINTR)
			;
		if (waited == -1 || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			is_ready = false;
	}
	if (!is_ready || n_reports != o->procs)
		goto out;
	out->rate = (double)sigs / (end_s - start_s);
	out->cpu_us_per_sig = sigs > 0 ? used_s * 1e6 / (double)sigs : 0.0;
	(void)fprintf(log,
	    "threads=%d procs=%d sigs=%llu rate=%.1f/s cpu_us_per_sig=%.1f\n",
	    o->threads, o->procs, (unsigned long long)sigs, out->rate,
	    out->cpu_us_per_sig);
	(void)fflush(log);
	rc = 0;
out:
	for (i = 0; i < 2; i++) {
		if (ready_pipe[i] != -1)
			(void)close(ready_pipe[i]);
		if (go_pipe[i] != -1)
			(void)close(go_pipe[i]);
		if (report_pipe[i] != -1)
			(void)close(report_pipe[i]);
	}
	return rc;
}

static int
compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double
median(const double *values, size_t n)
{
	double sorted[MAX_RUNS];

	memcpy(sorted, values, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), compare_doubles);
	return n % 2 == 1 ? sorted[n / 2]
			  : (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0;
}

static void
name_key(const struct report *r, char *out, size_t out_len)
{
	switch ((enum key_kind)r->key_kind) {
	case KEY_EC_P256:
		(void)snprintf(out, out_len, "p256");
		return;
	case KEY_EC:
		(void)snprintf(out, out_len, "ec");
		return;
	case KEY_RSA:
		(void)snprintf(out, out_len, "rsa%u", (unsigned)r->key_bits);
		return;
	case KEY_OTHER:
		break;
	}
	(void)snprintf(out, out_len, "unknown");
}

/* sweep runs every point o->runs times, a round of all points at a
 * time, so that a neighbour's load on a shared machine falls on all points
 * rather than on one. Each run's line goes to stderr, the medians and the
 * best to stdout. */
static int
sweep(struct opts *o)
{
	struct point points[] = {{1, 1, {0}, {0}}, {2, 1, {0}, {0}},
	    {4, 1, {0}, {0}}, {8, 1, {0}, {0}}, {1, 2, {0}, {0}},
	    {1, 4, {0}, {0}}, {2, 2, {0}, {0}}};
	const size_t n_points = sizeof(points) / sizeof(points[0]);
	struct result res = {0};
	char alg[32];
	double m, best = -1.0;
	size_t best_i = 0, i;
	int run;

	for (run = 0; run < o->runs; run++) {
		for (i = 0; i < n_points; i++) {
			o->threads = points[i].threads;
			o->procs = points[i].procs;
			if (run_once(o, stderr, &res) != 0) {
				(void)fprintf(stderr,
				    "token_speed: run with threads=%d "
				    "procs=%d failed\n",
				    o->threads, o->procs);
				return 1;
			}
			points[i].rates[run] = res.rate;
			points[i].cpu_us[run] = res.cpu_us_per_sig;
		}
	}
	for (i = 0; i < n_points; i++) {
		m = median(points[i].rates, (size_t)o->runs);
		(void)printf("median threads=%d procs=%d rate=%.1f/s "
			     "cpu_us_per_sig=%.1f (runs",
		    points[i].threads, points[i].procs, m,
		    median(points[i].cpu_us, (size_t)o->runs));
		for (run = 0; run < o->runs; run++)
			(void)printf(" %.1f", points[i].rates[run]);
		(void)printf(")\n");
		if (m > best) {
			best = m;
			best_i = i;
		}
	}
	name_key(&res.key, alg, sizeof(alg));
	(void)printf("best rate=%.1f/s (threads=%d procs=%d)\n", best,
	    points[best_i].threads, points[best_i].procs);
	(void)printf("BENCH token_raw_%s %.1f\n", alg, best);
	return 0;
}

int
main(int argc, char **argv)
{
	struct opts o;
	struct result res;

	parse_args(argc, argv, &o);
	/* A child that dies must not take the parent with it. */
	(void)signal(SIGPIPE, SIG_IGN);
	if (o.is_sweep)
		return sweep(&o);
	return run_once(&o, stdout, &res) == 0 ? 0 : 1;
}
