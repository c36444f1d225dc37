/*
 * A PKCS#11 module for the key-provider tests: SoftHSM2, every call passed
 * on to it, with a device fault that a test switches on for its own
 * process. While the file $MEDIAVAULT_TEST_PKCS11_FAULTS/<pid> exists,
 * C_Encrypt and C_Decrypt answer CKR_GENERAL_ERROR, as a failing device
 * does; SoftHSM2 answers a GCM tag that does not verify with the same code,
 * which is why the provider must tell the two apart. The failed operation
 * is still run to its end on SoftHSM2, so the session is left as a failed
 * call leaves it: with no operation active.
 *
 * While $MEDIAVAULT_TEST_PKCS11_FAULTS/<pid>.hang exists, C_FindObjectsInit
 * does not return, as a device that stops answering; it goes on once the
 * file is removed.
 *
 * While $MEDIAVAULT_TEST_PKCS11_FAULTS/<pid>.hide exists, C_FindObjects
 * finds nothing, as SoftHSM2 was seen to for a moment while other
 * processes created and destroyed keys in the same token files.
 *
 * Built by scripts/test-services.sh; the module it wraps is the one
 * $MEDIAVAULT_TEST_PKCS11_MODULE names.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST faulty;
static CK_FUNCTION_LIST_PTR real;
static pthread_once_t loaded = PTHREAD_ONCE_INIT;

/* Whether the switch file <pid><suffix> of this process exists. */
static int switched_on(const char *suffix)
{
	const char *dir = getenv("MEDIAVAULT_TEST_PKCS11_FAULTS");
	char path[4096];

	if (dir == NULL)
		return 0;
	snprintf(path, sizeof path, "%s/%ld%s", dir, (long)getpid(), suffix);
	return access(path, F_OK) == 0;
}

static int device_failing(void)
{
	return switched_on("");
}

static CK_RV hanging_find_objects_init(CK_SESSION_HANDLE session,
				       CK_ATTRIBUTE_PTR template,
				       CK_ULONG count)
{
	while (switched_on(".hang"))
		usleep(10000);
	return real->C_FindObjectsInit(session, template, count);
}

static CK_RV hiding_find_objects(CK_SESSION_HANDLE session,
				 CK_OBJECT_HANDLE_PTR objects, CK_ULONG max,
				 CK_ULONG_PTR count)
{
	CK_RV rv = real->C_FindObjects(session, objects, max, count);

	if (rv == CKR_OK && switched_on(".hide"))
		*count = 0;
	return rv;
}

typedef CK_RV (*single_part)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG,
			     CK_BYTE_PTR, CK_ULONG_PTR);

/* Runs `op` to its end, its output thrown away, and fails. */
static CK_RV fail(single_part op, CK_SESSION_HANDLE session, CK_BYTE_PTR in,
		  CK_ULONG in_len)
{
	CK_ULONG out_len = 0;
	CK_BYTE_PTR out;

	if (op(session, in, in_len, NULL, &out_len) == CKR_OK) {
		out = malloc(out_len ? out_len : 1);
		if (out != NULL) {
			op(session, in, in_len, out, &out_len);
			free(out);
		}
	}
	return CKR_GENERAL_ERROR;
}

static CK_RV faulty_encrypt(CK_SESSION_HANDLE session, CK_BYTE_PTR in,
			    CK_ULONG in_len, CK_BYTE_PTR out,
			    CK_ULONG_PTR out_len)
{
	if (device_failing())
		return fail(real->C_Encrypt, session, in, in_len);
	return real->C_Encrypt(session, in, in_len, out, out_len);
}

static CK_RV faulty_decrypt(CK_SESSION_HANDLE session, CK_BYTE_PTR in,
			    CK_ULONG in_len, CK_BYTE_PTR out,
			    CK_ULONG_PTR out_len)
{
	if (device_failing())
		return fail(real->C_Decrypt, session, in, in_len);
	return real->C_Decrypt(session, in, in_len, out, out_len);
}

static void load(void)
{
	const char *path = getenv("MEDIAVAULT_TEST_PKCS11_MODULE");
	void *module = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
	CK_C_GetFunctionList get_list;

	if (module == NULL)
		return;
	get_list = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
	if (get_list == NULL || get_list(&real) != CKR_OK) {
		real = NULL;
		return;
	}
	faulty = *real;
	faulty.C_GetFunctionList = C_GetFunctionList;
	faulty.C_Encrypt = faulty_encrypt;
	faulty.C_Decrypt = faulty_decrypt;
	faulty.C_FindObjectsInit = hanging_find_objects_init;
	faulty.C_FindObjects = hiding_find_objects;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	pthread_once(&loaded, load);
	if (real == NULL)
		return CKR_GENERAL_ERROR;
	*list = &faulty;
	return CKR_OK;
}
