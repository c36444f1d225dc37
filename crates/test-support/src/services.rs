//! What the tests know of the services `make test` starts: the variables
//! `scripts/test-services.sh` writes to its env file, and the switches of
//! its faulty PKCS#11 module (`scripts/pkcs11-faults.c`).

use std::path::PathBuf;

/// The value of `name`, a variable of the test services' env file. A test
/// run without it fails here, naming it: nothing is skipped.
pub fn test_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `make test`, which starts the test services and sources their env")
    })
}

/// A fault of the faulty PKCS#11 module (`MEDIAVAULT_TEST_PKCS11_FAULTY_MODULE`),
/// on for this process while the value lives. It is a file the module looks
/// for on each call, removed when the value is dropped, a failed
/// assertion's unwinding included, so that a test that fails leaves the
/// token answering and its runtime able to stop.
pub struct Pkcs11Fault(PathBuf);

impl Pkcs11Fault {
    /// The device fails: C_Encrypt and C_Decrypt answer CKR_GENERAL_ERROR.
    pub fn failing_device() -> Pkcs11Fault {
        Pkcs11Fault::switch_on("")
    }

    /// The device stops answering: C_FindObjectsInit does not return until
    /// the fault is dropped.
    pub fn hung_device() -> Pkcs11Fault {
        Pkcs11Fault::switch_on(".hang")
    }

    /// The token lists no object: C_FindObjects finds nothing, as SoftHSM2
    /// was seen to for a moment while other processes changed its files.
    pub fn hidden_objects() -> Pkcs11Fault {
        Pkcs11Fault::switch_on(".hide")
    }

    fn switch_on(suffix: &str) -> Pkcs11Fault {
        let switch = PathBuf::from(test_env("MEDIAVAULT_TEST_PKCS11_FAULTS"))
            .join(format!("{}{suffix}", std::process::id()));
        std::fs::write(&switch, b"")
            .unwrap_or_else(|e| panic!("cannot switch the PKCS#11 fault on at {}: {e}", switch.display()));
        Pkcs11Fault(switch)
    }
}

impl Drop for Pkcs11Fault {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
