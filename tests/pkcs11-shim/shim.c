/* shim.c - a PKCS#11 module for tests that forwards every call to a real
 * one (SoftHSM2), adding a delay to each signature, as a network HSM would,
 * and faults injected through a control file. Settings, all environment:
 *
 *	PKCS11_SHIM_MODULE        the real module
 *	                          (default /usr/lib/softhsm/libsofthsm2.so)
 *	PKCS11_SHIM_SIGN_DELAY_US microseconds C_Sign and C_SignFinal sleep
 *	                          before forwarding, 0..60000000 (default 0)
 *	PKCS11_SHIM_CONTROL       a file holding one word, read again on each
 *	                          C_OpenSession, C_Login, C_SignInit and C_Sign:
 *	                          ok, device_error, session_invalid,
 *	                          token_absent or hang (see check_fault())
 *
 * Link it with -Wl,-Bsymbolic (the Makefile does), or its list may point
 * at another library's C_GetFunctionList (libp11-kit exports one), and load
 * it RTLD_LOCAL, as PKCS#11 modules are: in the global scope its C_*
 * symbols would take the place of the real module's own. */
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define DEFAULT_MODULE  "/usr/lib/softhsm/libsofthsm2.so"
#define MAX_DELAY_US    60000000UL /* one minute */
#define HANG_STEP_US    100000UL   /* how often a hang looks at the file */
#define CONTROL_MAX_LEN 64         /* longer than any word we know */
#define DESCRIPTION     "pkcs11-shim"
#define US_PER_SECOND   1000000UL
#define NS_PER_US       1000UL

/* What the control file asks of the next call. */
enum fault {
	FAULT_NONE,            /* "ok", an empty file, or no file */
	FAULT_DEVICE_ERROR,    /* "device_error" */
	FAULT_SESSION_INVALID, /* "session_invalid" */
	FAULT_TOKEN_ABSENT,    /* "token_absent" */
	FAULT_HANG,            /* "hang" */
	FAULT_BAD_CONTROL,     /* unreadable, or a word we do not know */
};

static CK_FUNCTION_LIST shim_list;

/* Set once by load_real_module(), then only read: no lock needed. */
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static CK_FUNCTION_LIST_PTR real_list;

/* PKCS11_SHIM_SIGN_DELAY_US, read by each C_Initialize and stored when the
 * real one succeeds; read by every signing thread. */
static atomic_ulong sign_delay_us;

/* load_real_module dlopens the real module and takes its function list.
 * It runs once per process; the module then stays loaded until exit, as
 * callers may hold our function list after C_Finalize. On failure
 * real_list stays NULL and every call fails. */
static void
load_real_module(void)
{
	CK_C_GetFunctionList get_function_list;
	CK_FUNCTION_LIST_PTR list = NULL;
	const char *path;
	void *dl, *sym;

	if ((path = getenv("PKCS11_SHIM_MODULE")) == NULL || path[0] == '\0')
		path = DEFAULT_MODULE;
	if ((dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		(void)fprintf(stderr, "pkcs11-shim: cannot load %s: %s\n", path,
		    dlerror());
		return;
	}
	if ((sym = dlsym(dl, "C_GetFunctionList")) == NULL)
		goto fail;
	/* ISO C has no cast from object to function pointer; POSIX
	 * guarantees that dlsym()'s result converts. */
	memcpy(&get_function_list, &sym, sizeof(get_function_list));
	if (get_function_list(&list) != CKR_OK || list == NULL)
		goto fail;
	/* Our own functions in the real module's list would make every call
	 * recurse: the shim was loaded into the global scope, or is its
	 * own PKCS11_SHIM_MODULE. */
	if (list->C_Initialize == C_Initialize || list->C_Sign == C_Sign)
		goto fail;
	real_list = list;
	return;
fail:
	(void)fprintf(
	    stderr, "pkcs11-shim: %s is not a usable PKCS#11 module\n", path);
	(void)dlclose(dl);
}

/* get_real returns the real module's function list, or NULL if it could
 * not be loaded. */
static CK_FUNCTION_LIST_PTR
get_real(void)
{
	if (pthread_once(&load_once, load_real_module) != 0)
		return NULL;
	return real_list;
}

/* read_delay_us parses PKCS11_SHIM_SIGN_DELAY_US into *out: decimal
 * digits only, at most MAX_DELAY_US. Returns 0, or -1 for a bad value. */
static int
read_delay_us(unsigned long *out)
{
	const char *text = getenv("PKCS11_SHIM_SIGN_DELAY_US");
	unsigned long us = 0;

	if (text == NULL || text[0] == '\0') {
		*out = 0;
		return 0;
	}
	for (; *text != '\0'; text++) {
		if (*text < '0' || *text > '9')
			return -1;
		us = us * 10 + (unsigned long)(*text - '0');
		if (us > MAX_DELAY_US)
			return -1;
	}
	*out = us;
	return 0;
}

static void
sleep_us(unsigned long us)
{
	struct timespec left = {
	    .tv_sec = (time_t)(us / US_PER_SECOND),
	    .tv_nsec = (long)(us % US_PER_SECOND * NS_PER_US),
	};

	while (nanosleep(&left, &left) == -1 && errno == EINTR)
		continue;
}

/* delay_signature sleeps for the configured latency. It holds no lock,
 * so the delays of concurrent sessions overlap, as requests in flight to
 * a network HSM do. */
static void
delay_signature(void)
{
	unsigned long us =
	    atomic_load_explicit(&sign_delay_us, memory_order_relaxed);

	if (us > 0)
		sleep_us(us);
}

/* read_fault reads the control file named by PKCS11_SHIM_CONTROL. No
 * variable, or a missing or empty file, reads as FAULT_NONE: a test
 * rewriting it with `echo word >file` truncates it first, and a reader in
 * between must not fail. The variable is read on each call, with no copy
 * to free if we are unloaded; nothing in a test process calls setenv(). */
static enum fault
read_fault(void)
{
	const char *control_path = getenv("PKCS11_SHIM_CONTROL");
	char buf[CONTROL_MAX_LEN + 1];
	size_t len = 0, start = 0;
	ssize_t n;
	int fd;

	if (control_path == NULL || control_path[0] == '\0')
		return FAULT_NONE;
	fd = open(control_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd == -1)
		return errno == ENOENT ? FAULT_NONE : FAULT_BAD_CONTROL;
	while (len < sizeof(buf) - 1) {
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			(void)close(fd);
			return FAULT_BAD_CONTROL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	(void)close(fd);
	while (len > 0 && isspace((unsigned char)buf[len - 1]))
		len--;
	while (start < len && isspace((unsigned char)buf[start]))
		start++;
	buf[len] = '\0';
	if (start == len || strcmp(buf + start, "ok") == 0)
		return FAULT_NONE;
	if (strcmp(buf + start, "device_error") == 0)
		return FAULT_DEVICE_ERROR;
	if (strcmp(buf + start, "session_invalid") == 0)
		return FAULT_SESSION_INVALID;
	if (strcmp(buf + start, "token_absent") == 0)
		return FAULT_TOKEN_ABSENT;
	if (strcmp(buf + start, "hang") == 0)
		return FAULT_HANG;
	return FAULT_BAD_CONTROL;
}

/* check_fault returns CKR_OK if the call may go ahead, or the error it
 * must return instead. A hang sleeps until the file says something else,
 * then obeys that: `hang` then `device_error` is a request that times out.
 * A word we do not know fails the call, so a typo in a test shows. */
static CK_RV
check_fault(void)
{
	for (;;) {
		switch (read_fault()) {
		case FAULT_NONE:
			return CKR_OK;
		case FAULT_DEVICE_ERROR:
			return CKR_DEVICE_ERROR;
		case FAULT_SESSION_INVALID:
			return CKR_SESSION_HANDLE_INVALID;
		case FAULT_TOKEN_ABSENT:
			return CKR_TOKEN_NOT_PRESENT;
		case FAULT_BAD_CONTROL:
			return CKR_GENERAL_ERROR;
		case FAULT_HANG:
			sleep_us(HANG_STEP_US);
			continue;
		}
		return CKR_GENERAL_ERROR;
	}
}

/* abandon_sign ends the signing operation active in session after a
 * fault injected into C_Sign. PKCS#11 v2.40 (C_Sign): a call "always
 * terminates the active signing operation" unless it returns
 * CKR_BUFFER_TOO_SMALL or succeeds in asking the length, so a real token
 * would accept the next C_SignInit. SoftHSM2 ends an operation only by
 * finishing it, so we sign into scratch space and throw that away. */
static void
abandon_sign(CK_FUNCTION_LIST_PTR real, CK_SESSION_HANDLE session,
    CK_BYTE_PTR data, CK_ULONG data_len)
{
	CK_BYTE_PTR scratch = NULL;
	CK_ULONG len = 0;

	/* Any failure here has ended the operation already. */
	if (real->C_Sign(session, data, data_len, NULL, &len) != CKR_OK)
		return;
	if ((scratch = malloc(len > 0 ? len : 1)) == NULL)
		return;
	(void)real->C_Sign(session, data, data_len, scratch, &len);
	free(scratch);
}

/* General-purpose functions. */

CK_RV
C_Initialize(CK_VOID_PTR init_args)
{
	CK_FUNCTION_LIST_PTR real = get_real();
	unsigned long delay_us;
	CK_RV rv;

	if (real == NULL)
		return CKR_GENERAL_ERROR;
	if (read_delay_us(&delay_us) != 0) {
		(void)fprintf(stderr,
		    "pkcs11-shim: PKCS11_SHIM_SIGN_DELAY_US: not a number of "
		    "microseconds up to %lu\n",
		    MAX_DELAY_US);
		return CKR_ARGUMENTS_BAD;
	}
	rv = real->C_Initialize(init_args);
	if (rv == CKR_OK)
		atomic_store_explicit(
		    &sign_delay_us, delay_us, memory_order_relaxed);
	return rv;
}

CK_RV
C_Finalize(CK_VOID_PTR reserved)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_Finalize(reserved);
}

CK_RV
C_GetInfo(CK_INFO_PTR info)
{
	CK_FUNCTION_LIST_PTR real = get_real();
	CK_RV rv;

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if ((rv = real->C_GetInfo(info)) != CKR_OK)
		return rv;
	/* Blank-padded, not NUL-terminated, as CK_INFO's strings are. */
	memset(info->libraryDescription, ' ', sizeof(info->libraryDescription));
	memcpy(info->libraryDescription, DESCRIPTION, sizeof(DESCRIPTION) - 1);
	return CKR_OK;
}

CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
	if (out == NULL)
		return CKR_ARGUMENTS_BAD;
	if (get_real() == NULL)
		return CKR_GENERAL_ERROR;
	*out = &shim_list;
	return CKR_OK;
}

/* Slot and token management. */

CK_RV
C_GetSlotList(
    CK_BBOOL token_present, CK_SLOT_ID_PTR slot_list, CK_ULONG_PTR count)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GetSlotList(token_present, slot_list, count);
}

CK_RV
C_GetSlotInfo(CK_SLOT_ID slot_id, CK_SLOT_INFO_PTR info)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GetSlotInfo(slot_id, info);
}

CK_RV
C_GetTokenInfo(CK_SLOT_ID slot_id, CK_TOKEN_INFO_PTR info)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GetTokenInfo(slot_id, info);
}

CK_RV
C_GetMechanismList(CK_SLOT_ID slot_id, CK_MECHANISM_TYPE_PTR mechanism_list,
    CK_ULONG_PTR count)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GetMechanismList(slot_id, mechanism_list, count);
}

CK_RV
C_GetMechanismInfo(
    CK_SLOT_ID slot_id, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GetMechanismInfo(slot_id, type, info);
}

CK_RV
C_InitToken(CK_SLOT_ID slot_id, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len,
    CK_UTF8CHAR_PTR label)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_InitToken(slot_id, pin, pin_len, label);
}

CK_RV
C_InitPIN(CK_SESSION_HANDLE session, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_InitPIN(session, pin, pin_len);
}

CK_RV
C_SetPIN(CK_SESSION_HANDLE session, CK_UTF8CHAR_PTR old_pin,
    CK_ULONG old_pin_len, CK_UTF8CHAR_PTR new_pin, CK_ULONG new_pin_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_SetPIN(
	    session, old_pin, old_pin_len, new_pin, new_pin_len);
}

/* Session management. */

CK_RV
C_OpenSession(CK_SLOT_ID slot_id, CK_FLAGS flags, CK_VOID_PTR application,
    CK_NOTIFY notify, CK_SESSION_HANDLE_PTR session)
{
	CK_FUNCTION_LIST_PTR real = get_real();
	CK_RV rv;

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if ((rv = check_fault()) != CKR_OK)
		return rv;
	return real->C_OpenSession(
	    slot_id, flags, application, notify, session);
}

CK_RV
C_CloseSession(CK_SESSION_HANDLE session)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_CloseSession(session);
}

CK_RV
C_CloseAllSessions(CK_SLOT_ID slot_id)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_CloseAllSessions(slot_id);
}

CK_RV
C_GetSessionInfo(CK_SESSION_HANDLE session, CK_SESSION_INFO_PTR info)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GetSessionInfo(session, info);
}

CK_RV
C_GetOperationState(CK_SESSION_HANDLE session, CK_BYTE_PTR operation_state,
    CK_ULONG_PTR operation_state_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GetOperationState(
	    session, operation_state, operation_state_len);
}

CK_RV
C_SetOperationState(CK_SESSION_HANDLE session, CK_BYTE_PTR operation_state,
    CK_ULONG operation_state_len, CK_OBJECT_HANDLE encryption_key,
    CK_OBJECT_HANDLE authentication_key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_SetOperationState(session, operation_state,
	    operation_state_len, encryption_key, authentication_key);
}

CK_RV
C_Login(CK_SESSION_HANDLE session, CK_USER_TYPE user_type, CK_UTF8CHAR_PTR pin,
    CK_ULONG pin_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();
	CK_RV rv;

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if ((rv = check_fault()) != CKR_OK)
		return rv;
	return real->C_Login(session, user_type, pin, pin_len);
}

CK_RV
C_Logout(CK_SESSION_HANDLE session)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_Logout(session);
}

/* Object management. */

CK_RV
C_CreateObject(CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR templ,
    CK_ULONG count, CK_OBJECT_HANDLE_PTR object)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_CreateObject(session, templ, count, object);
}

CK_RV
C_CopyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
    CK_ATTRIBUTE_PTR templ, CK_ULONG count, CK_OBJECT_HANDLE_PTR new_object)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_CopyObject(session, object, templ, count, new_object);
}

CK_RV
C_DestroyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DestroyObject(session, object);
}

CK_RV
C_GetObjectSize(
    CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ULONG_PTR size)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GetObjectSize(session, object, size);
}

CK_RV
C_GetAttributeValue(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
    CK_ATTRIBUTE_PTR templ, CK_ULONG count)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GetAttributeValue(session, object, templ, count);
}

CK_RV
C_SetAttributeValue(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
    CK_ATTRIBUTE_PTR templ, CK_ULONG count)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_SetAttributeValue(session, object, templ, count);
}

CK_RV
C_FindObjectsInit(
    CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR templ, CK_ULONG count)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_FindObjectsInit(session, templ, count);
}

CK_RV
C_FindObjects(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE_PTR object,
    CK_ULONG max_object_count, CK_ULONG_PTR object_count)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_FindObjects(
	    session, object, max_object_count, object_count);
}

CK_RV
C_FindObjectsFinal(CK_SESSION_HANDLE session)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_FindObjectsFinal(session);
}

/* Encryption. */

CK_RV
C_EncryptInit(
    CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_EncryptInit(session, mechanism, key);
}

CK_RV
C_Encrypt(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG data_len,
    CK_BYTE_PTR encrypted_data, CK_ULONG_PTR encrypted_data_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_Encrypt(
	    session, data, data_len, encrypted_data, encrypted_data_len);
}

CK_RV
C_EncryptUpdate(CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len,
    CK_BYTE_PTR encrypted_part, CK_ULONG_PTR encrypted_part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_EncryptUpdate(
	    session, part, part_len, encrypted_part, encrypted_part_len);
}

CK_RV
C_EncryptFinal(CK_SESSION_HANDLE session, CK_BYTE_PTR last_encrypted_part,
    CK_ULONG_PTR last_encrypted_part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_EncryptFinal(
	    session, last_encrypted_part, last_encrypted_part_len);
}

/* Decryption. */

CK_RV
C_DecryptInit(
    CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DecryptInit(session, mechanism, key);
}

CK_RV
C_Decrypt(CK_SESSION_HANDLE session, CK_BYTE_PTR encrypted_data,
    CK_ULONG encrypted_data_len, CK_BYTE_PTR data, CK_ULONG_PTR data_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_Decrypt(
	    session, encrypted_data, encrypted_data_len, data, data_len);
}

CK_RV
C_DecryptUpdate(CK_SESSION_HANDLE session, CK_BYTE_PTR encrypted_part,
    CK_ULONG encrypted_part_len, CK_BYTE_PTR part, CK_ULONG_PTR part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DecryptUpdate(
	    session, encrypted_part, encrypted_part_len, part, part_len);
}

CK_RV
C_DecryptFinal(CK_SESSION_HANDLE session, CK_BYTE_PTR last_part,
    CK_ULONG_PTR last_part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DecryptFinal(session, last_part, last_part_len);
}

/* Message digesting. */

CK_RV
C_DigestInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DigestInit(session, mechanism);
}

CK_RV
C_Digest(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG data_len,
    CK_BYTE_PTR digest, CK_ULONG_PTR digest_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_Digest(session, data, data_len, digest, digest_len);
}

CK_RV
C_DigestUpdate(CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DigestUpdate(session, part, part_len);
}

CK_RV
C_DigestKey(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DigestKey(session, key);
}

CK_RV
C_DigestFinal(
    CK_SESSION_HANDLE session, CK_BYTE_PTR digest, CK_ULONG_PTR digest_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DigestFinal(session, digest, digest_len);
}

/* Signing and MACing: where the latency and the faults go. */

CK_RV
C_SignInit(
    CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
	CK_FUNCTION_LIST_PTR real = get_real();
	CK_RV rv;

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if ((rv = check_fault()) != CKR_OK)
		return rv;
	return real->C_SignInit(session, mechanism, key);
}

CK_RV
C_Sign(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG data_len,
    CK_BYTE_PTR signature, CK_ULONG_PTR signature_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();
	CK_RV rv;

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if ((rv = check_fault()) != CKR_OK) {
		abandon_sign(real, session, data, data_len);
		return rv;
	}
	delay_signature();
	return real->C_Sign(session, data, data_len, signature, signature_len);
}

CK_RV
C_SignUpdate(CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_SignUpdate(session, part, part_len);
}

CK_RV
C_SignFinal(CK_SESSION_HANDLE session, CK_BYTE_PTR signature,
    CK_ULONG_PTR signature_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	delay_signature();
	return real->C_SignFinal(session, signature, signature_len);
}

CK_RV
C_SignRecoverInit(
    CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_SignRecoverInit(session, mechanism, key);
}

CK_RV
C_SignRecover(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG data_len,
    CK_BYTE_PTR signature, CK_ULONG_PTR signature_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_SignRecover(
	    session, data, data_len, signature, signature_len);
}

/* Verifying signatures and MACs. */

CK_RV
C_VerifyInit(
    CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_VerifyInit(session, mechanism, key);
}

CK_RV
C_Verify(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG data_len,
    CK_BYTE_PTR signature, CK_ULONG signature_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_Verify(
	    session, data, data_len, signature, signature_len);
}

CK_RV
C_VerifyUpdate(CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_VerifyUpdate(session, part, part_len);
}

CK_RV
C_VerifyFinal(
    CK_SESSION_HANDLE session, CK_BYTE_PTR signature, CK_ULONG signature_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_VerifyFinal(session, signature, signature_len);
}

CK_RV
C_VerifyRecoverInit(
    CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_VerifyRecoverInit(session, mechanism, key);
}

CK_RV
C_VerifyRecover(CK_SESSION_HANDLE session, CK_BYTE_PTR signature,
    CK_ULONG signature_len, CK_BYTE_PTR data, CK_ULONG_PTR data_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_VerifyRecover(
	    session, signature, signature_len, data, data_len);
}

/* Dual-function cryptographic operations. */

CK_RV
C_DigestEncryptUpdate(CK_SESSION_HANDLE session, CK_BYTE_PTR part,
    CK_ULONG part_len, CK_BYTE_PTR encrypted_part,
    CK_ULONG_PTR encrypted_part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DigestEncryptUpdate(
	    session, part, part_len, encrypted_part, encrypted_part_len);
}

CK_RV
C_DecryptDigestUpdate(CK_SESSION_HANDLE session, CK_BYTE_PTR encrypted_part,
    CK_ULONG encrypted_part_len, CK_BYTE_PTR part, CK_ULONG_PTR part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DecryptDigestUpdate(
	    session, encrypted_part, encrypted_part_len, part, part_len);
}

CK_RV
C_SignEncryptUpdate(CK_SESSION_HANDLE session, CK_BYTE_PTR part,
    CK_ULONG part_len, CK_BYTE_PTR encrypted_part,
    CK_ULONG_PTR encrypted_part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_SignEncryptUpdate(
	    session, part, part_len, encrypted_part, encrypted_part_len);
}

CK_RV
C_DecryptVerifyUpdate(CK_SESSION_HANDLE session, CK_BYTE_PTR encrypted_part,
    CK_ULONG encrypted_part_len, CK_BYTE_PTR part, CK_ULONG_PTR part_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DecryptVerifyUpdate(
	    session, encrypted_part, encrypted_part_len, part, part_len);
}

/* Key management. */

CK_RV
C_GenerateKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
    CK_ATTRIBUTE_PTR templ, CK_ULONG count, CK_OBJECT_HANDLE_PTR key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GenerateKey(session, mechanism, templ, count, key);
}

CK_RV
C_GenerateKeyPair(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
    CK_ATTRIBUTE_PTR public_key_template, CK_ULONG public_key_attribute_count,
    CK_ATTRIBUTE_PTR private_key_template, CK_ULONG private_key_attribute_count,
    CK_OBJECT_HANDLE_PTR public_key, CK_OBJECT_HANDLE_PTR private_key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GenerateKeyPair(session, mechanism, public_key_template,
	    public_key_attribute_count, private_key_template,
	    private_key_attribute_count, public_key, private_key);
}

CK_RV
C_WrapKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
    CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key,
    CK_BYTE_PTR wrapped_key, CK_ULONG_PTR wrapped_key_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_WrapKey(session, mechanism, wrapping_key, key,
	    wrapped_key, wrapped_key_len);
}

CK_RV
C_UnwrapKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
    CK_OBJECT_HANDLE unwrapping_key, CK_BYTE_PTR wrapped_key,
    CK_ULONG wrapped_key_len, CK_ATTRIBUTE_PTR templ, CK_ULONG attribute_count,
    CK_OBJECT_HANDLE_PTR key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_UnwrapKey(session, mechanism, unwrapping_key,
	    wrapped_key, wrapped_key_len, templ, attribute_count, key);
}

CK_RV
C_DeriveKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism,
    CK_OBJECT_HANDLE base_key, CK_ATTRIBUTE_PTR templ, CK_ULONG attribute_count,
    CK_OBJECT_HANDLE_PTR key)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_DeriveKey(
	    session, mechanism, base_key, templ, attribute_count, key);
}

/* Random number generation. */

CK_RV
C_SeedRandom(CK_SESSION_HANDLE session, CK_BYTE_PTR seed, CK_ULONG seed_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_SeedRandom(session, seed, seed_len);
}

CK_RV
C_GenerateRandom(
    CK_SESSION_HANDLE session, CK_BYTE_PTR random_data, CK_ULONG random_len)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GenerateRandom(session, random_data, random_len);
}

/* Parallel function management (legacy) and slot events. */

CK_RV
C_GetFunctionStatus(CK_SESSION_HANDLE session)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_GetFunctionStatus(session);
}

CK_RV
C_CancelFunction(CK_SESSION_HANDLE session)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_CancelFunction(session);
}

CK_RV
C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR reserved)
{
	CK_FUNCTION_LIST_PTR real = get_real();

	if (real == NULL)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	return real->C_WaitForSlotEvent(flags, slot, reserved);
}

/* All 68 entries of a PKCS#11 v2.40 CK_FUNCTION_LIST, in its order. */
static CK_FUNCTION_LIST shim_list = {
    .version = {CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR},
    .C_Initialize = C_Initialize,
    .C_Finalize = C_Finalize,
    .C_GetInfo = C_GetInfo,
    .C_GetFunctionList = C_GetFunctionList,
    .C_GetSlotList = C_GetSlotList,
    .C_GetSlotInfo = C_GetSlotInfo,
    .C_GetTokenInfo = C_GetTokenInfo,
    .C_GetMechanismList = C_GetMechanismList,
    .C_GetMechanismInfo = C_GetMechanismInfo,
    .C_InitToken = C_InitToken,
    .C_InitPIN = C_InitPIN,
    .C_SetPIN = C_SetPIN,
    .C_OpenSession = C_OpenSession,
    .C_CloseSession = C_CloseSession,
    .C_CloseAllSessions = C_CloseAllSessions,
    .C_GetSessionInfo = C_GetSessionInfo,
    .C_GetOperationState = C_GetOperationState,
    .C_SetOperationState = C_SetOperationState,
    .C_Login = C_Login,
    .C_Logout = C_Logout,
    .C_CreateObject = C_CreateObject,
    .C_CopyObject = C_CopyObject,
    .C_DestroyObject = C_DestroyObject,
    .C_GetObjectSize = C_GetObjectSize,
    .C_GetAttributeValue = C_GetAttributeValue,
    .C_SetAttributeValue = C_SetAttributeValue,
    .C_FindObjectsInit = C_FindObjectsInit,
    .C_FindObjects = C_FindObjects,
    .C_FindObjectsFinal = C_FindObjectsFinal,
    .C_EncryptInit = C_EncryptInit,
    .C_Encrypt = C_Encrypt,
    .C_EncryptUpdate = C_EncryptUpdate,
    .C_EncryptFinal = C_EncryptFinal,
    .C_DecryptInit = C_DecryptInit,
    .C_Decrypt = C_Decrypt,
    .C_DecryptUpdate = C_DecryptUpdate,
    .C_DecryptFinal = C_DecryptFinal,
    .C_DigestInit = C_DigestInit,
    .C_Digest = C_Digest,
    .C_DigestUpdate = C_DigestUpdate,
    .C_DigestKey = C_DigestKey,
    .C_DigestFinal = C_DigestFinal,
    .C_SignInit = C_SignInit,
    .C_Sign = C_Sign,
    .C_SignUpdate = C_SignUpdate,
    .C_SignFinal = C_SignFinal,
    .C_SignRecoverInit = C_SignRecoverInit,
    .C_SignRecover = C_SignRecover,
    .C_VerifyInit = C_VerifyInit,
    .C_Verify = C_Verify,
    .C_VerifyUpdate = C_VerifyUpdate,
    .C_VerifyFinal = C_VerifyFinal,
    .C_VerifyRecoverInit = C_VerifyRecoverInit,
    .C_VerifyRecover = C_VerifyRecover,
    .C_DigestEncryptUpdate = C_DigestEncryptUpdate,
    .C_DecryptDigestUpdate = C_DecryptDigestUpdate,
    .C_SignEncryptUpdate = C_SignEncryptUpdate,
    .C_DecryptVerifyUpdate = C_DecryptVerifyUpdate,
    .C_GenerateKey = C_GenerateKey,
    .C_GenerateKeyPair = C_GenerateKeyPair,
    .C_WrapKey = C_WrapKey,
    .C_UnwrapKey = C_UnwrapKey,
    .C_DeriveKey = C_DeriveKey,
    .C_SeedRandom = C_SeedRandom,
    .C_GenerateRandom = C_GenerateRandom,
    .C_GetFunctionStatus = C_GetFunctionStatus,
    .C_CancelFunction = C_CancelFunction,
    .C_WaitForSlotEvent = C_WaitForSlotEvent,
};
