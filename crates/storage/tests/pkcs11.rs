//! The PKCS#11 key provider against a real token (SoftHSM2, initialised by
//! `scripts/test-services.sh`): the keys it makes never leave the token; a
//! data key the token wraps has the layout of `docs/format.md`, checked
//! against the configured-key implementation both ways; and sessions taken
//! from under it are opened again.
//!
//! Each test runs in a process of its own (nextest): the module is loaded
//! and initialised once per process, as the service does.

use std::time::Duration;

use base64::Engine as _;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use mediavault_storage::Dek;
use mediavault_storage::keys::{
    ConfiguredKeys, EpochSettings, KeyError, Keyring, Pkcs11Keys, Pkcs11Settings, TokenSelector,
};
use mediavault_test_support::services::{Pkcs11Fault, test_env};

fn settings(keys: &[&str]) -> Pkcs11Settings {
    Pkcs11Settings {
        module: test_env("MEDIAVAULT_TEST_PKCS11_MODULE").into(),
        token: TokenSelector::Label(test_env("MEDIAVAULT_TEST_PKCS11_TOKEN")),
        pin: test_env("MEDIAVAULT_TEST_PKCS11_PIN").into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        sessions: 4,
    }
}

fn new_label() -> String {
    format!("st-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// `settings(keys)`, through the module that fails on a test's word
/// (`scripts/pkcs11-faults.c`).
fn faulty_settings(keys: &[&str]) -> Pkcs11Settings {
    Pkcs11Settings {
        module: test_env("MEDIAVAULT_TEST_PKCS11_FAULTY_MODULE").into(),
        ..settings(keys)
    }
}

/// A key made in the token under a new label, by a provider closed again
/// before the test opens its own: the label.
async fn new_key() -> String {
    let label = new_label();
    let maker = Pkcs11Keys::open(settings(&[])).await.unwrap();
    maker.create(&label).await.unwrap();
    label
}

/// Destroys key `label`, through a provider of its own.
async fn destroy_key(label: &str) {
    let keys = Pkcs11Keys::open(settings(&[])).await.unwrap();
    keys.destroy(label).await.unwrap();
}

/// A session of the test's own on the token, beside the provider's: the
/// module is already initialised in this process, and logged in.
fn own_session() -> Session {
    let library = Pkcs11::new(test_env("MEDIAVAULT_TEST_PKCS11_MODULE")).unwrap();
    let initialize = || match library.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(error) => panic!("C_Initialize: {error}"),
    };
    initialize();
    let label = test_env("MEDIAVAULT_TEST_PKCS11_TOKEN");
    let find_slot = || {
        let slots = library.get_slots_with_token().ok()?;
        slots.into_iter().find(|slot| {
            library
                .get_token_info(*slot)
                .is_ok_and(|info| info.label() == label)
        })
    };
    // SoftHSM2 may fail to read a token whose files another test process
    // is writing at that moment, and then leaves it out, or invalid, in this
    // process until the module is initialised again (it reads the token
    // directory only in C_Initialize; `OSToken::index` never turns an
    // invalid token valid). So each try starts the module afresh, as the
    // provider does when it connects; the provider's sessions closed with
    // it are opened again at its next call.
    let slot = (0..5)
        .find_map(|attempt| {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(200) * attempt);
                let _ = library.clone().finalize();
                initialize();
            }
            find_slot()
        })
        .expect("the test token");
    let session = library.open_rw_session(slot).unwrap();
    let pin = AuthPin::new(test_env("MEDIAVAULT_TEST_PKCS11_PIN").into());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => session,
        Err(error) => panic!("C_Login: {error}"),
    }
}

/// Imports `material` into the token as an AES key labelled `label`, as
/// an operator may import a configured key.
fn import_key(label: &str, material: [u8; 32]) {
    own_session()
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(material.to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
}

fn find(session: &Session, label: &str) -> cryptoki::object::ObjectHandle {
    let found = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1, "one object labelled {label}");
    found[0]
}

#[tokio::test]
async fn a_key_made_in_the_token_is_sensitive_and_never_extractable() {
    let label = new_label();
    let keys = Pkcs11Keys::open(settings(&[])).await.unwrap();
    let fingerprint = keys.create(&label).await.unwrap();
    assert_eq!(fingerprint.len(), 32);
    assert!(matches!(keys.create(&label).await, Err(KeyError::Exists(l)) if l == label));

    let session = own_session();
    let key = find(&session, &label);
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::AlwaysSensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
            ],
        )
        .unwrap();
    let want = [
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::AlwaysSensitive(true),
        Attribute::Extractable(false),
        Attribute::NeverExtractable(true),
    ];
    assert_eq!(format!("{attributes:?}"), format!("{want:?}"));
    // Its value cannot be read.
    match session.get_attributes(key, &[AttributeType::Value]) {
        Ok(value) => assert!(
            !value.iter().any(|a| matches!(a, Attribute::Value(_))),
            "the key's value was read"
        ),
        Err(error) => assert!(
            matches!(error, CkError::Pkcs11(RvError::AttributeSensitive, _)),
            "{error}"
        ),
    }
    drop(session);

    // The same key gives the same fingerprint at start as at creation.
    drop(keys);
    let keyring = Keyring::pkcs11(Pkcs11Keys::open(settings(&[&label])).await.unwrap(), None, None).unwrap();
    assert_eq!(
        keyring.fingerprints().await.unwrap(),
        [(label.clone(), fingerprint)]
    );
    drop(keyring);
    let keys = Pkcs11Keys::open(settings(&[])).await.unwrap();
    keys.destroy(&label).await.unwrap();
}

/// Known key material imported into the token (as an operator may import
/// a configured key): what the token wraps, the configured implementation
/// unwraps, and the other way round; a wrapped key bound to another media
/// id or tampered with does not unwrap.
#[tokio::test]
async fn the_token_wraps_data_keys_in_the_configured_format_both_ways() {
    let label = new_label();
    let material = [0x42u8; 32];
    let configured = ConfiguredKeys::parse(&format!(
        "{label}:{}",
        base64::engine::general_purpose::STANDARD.encode(material)
    ))
    .unwrap();
    import_key(&label, material);
    let keyring = Keyring::pkcs11(Pkcs11Keys::open(settings(&[&label])).await.unwrap(), None, None).unwrap();
    assert_eq!(keyring.active_id(), Some(label.as_str()));

    let dek = Dek::generate();
    let by_token = keyring.wrap("media-1", 0, &dek).await.unwrap();
    assert_eq!(by_token.kek_id, label);
    assert_eq!(by_token.bytes.len(), mediavault_storage::format::WRAPPED_DEK_LEN);
    let opened = configured.unwrap("media-1", &label, &by_token.bytes).unwrap();
    assert_eq!(opened.as_bytes(), dek.as_bytes());

    let by_config = configured.wrap("media-2", &dek);
    let opened = keyring.unwrap("media-2", &label, &by_config.bytes).await.unwrap();
    assert_eq!(opened.as_bytes(), dek.as_bytes());

    assert!(matches!(
        keyring.unwrap("media-1", &label, &by_config.bytes).await,
        Err(KeyError::Integrity)
    ));
    let mut flipped = by_token.bytes.clone();
    flipped[20] ^= 1;
    assert!(matches!(
        keyring.unwrap("media-1", &label, &flipped).await,
        Err(KeyError::Integrity)
    ));
    assert!(matches!(
        keyring.unwrap("media-1", "other", &by_token.bytes).await,
        Err(KeyError::Unknown(_))
    ));

    let session = own_session();
    session.destroy_object(find(&session, &label)).unwrap();
}

/// A failing device answers C_Decrypt with CKR_GENERAL_ERROR, the code
/// SoftHSM2 gives a tag that does not verify: the provider reports the token
/// unavailable (a storage failure, and a reconnection), not a wrapped key tampered with
/// (an integrity failure, the alarm of stored data changed), and unwraps
/// again once the device is back. Through the same module a tampered key is
/// still an integrity failure.
#[tokio::test]
async fn a_failing_device_is_unavailable_not_a_tampered_key() {
    let label = new_label();
    let mut faulty = faulty_settings(&[]);
    let maker = Pkcs11Keys::open(faulty.clone()).await.unwrap();
    maker.create(&label).await.unwrap();
    drop(maker);
    faulty.keys = vec![label.clone()];
    let keyring = Keyring::pkcs11(Pkcs11Keys::open(faulty.clone()).await.unwrap(), None, None).unwrap();
    let dek = Dek::generate();
    let wrapped = keyring.wrap("media-1", 0, &dek).await.unwrap();
    let mut flipped = wrapped.bytes.clone();
    flipped[20] ^= 1;
    let tampered = keyring.unwrap("media-1", &label, &flipped).await;
    assert!(matches!(tampered, Err(KeyError::Integrity)), "{tampered:?}");

    let fault = Pkcs11Fault::failing_device();
    let failing = keyring.unwrap("media-1", &label, &wrapped.bytes).await;
    assert!(matches!(failing, Err(KeyError::Unavailable(_))), "{failing:?}");
    drop(fault);

    let opened = keyring.unwrap("media-1", &label, &wrapped.bytes).await.unwrap();
    assert_eq!(opened.as_bytes(), dek.as_bytes());

    drop(keyring);
    faulty.keys.clear();
    Pkcs11Keys::open(faulty)
        .await
        .unwrap()
        .destroy(&label)
        .await
        .unwrap();
}

/// A token that lists none of its keys for a moment, as SoftHSM2 was seen
/// to while other processes created and destroyed keys in the same token
/// files (tests in parallel; a `keys generate` beside a starting server),
/// has not lost the configured key: the provider tries again while it
/// opens, and finds it.
#[tokio::test]
async fn a_key_the_token_does_not_list_for_a_moment_is_found_when_the_provider_opens() {
    let label = new_key().await;
    let faulty = faulty_settings(&[&label]);

    let hidden = Pkcs11Fault::hidden_objects();
    let shown = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(hidden);
    });
    let opened = Pkcs11Keys::open(faulty).await;
    shown.join().unwrap();
    let keyring = Keyring::pkcs11(opened.unwrap(), None, None).unwrap();
    let dek = Dek::generate();
    let wrapped = keyring.wrap("media-1", 0, &dek).await.unwrap();
    let unwrapped = keyring.unwrap("media-1", &label, &wrapped.bytes).await.unwrap();
    assert_eq!(unwrapped.as_bytes(), dek.as_bytes());

    drop(keyring);
    destroy_key(&label).await;
}

/// A configured key that the token does not list through all of the
/// provider's tries is missing: the start fails as misconfigured, saying
/// how to create it, and not as a token that is away. (The key is there,
/// hidden by the test module: the switch the test above relies on works.)
#[tokio::test]
async fn a_key_the_token_never_lists_is_a_configuration_error() {
    let label = new_key().await;
    let faulty = faulty_settings(&[&label]);

    let hidden = Pkcs11Fault::hidden_objects();
    let refused = Pkcs11Keys::open(faulty).await.map(|_| ()).unwrap_err();
    drop(hidden);
    assert!(
        matches!(&refused, KeyError::Provider(why)
            if why.contains(&format!("holds 0 AES keys labelled {label:?}")) && why.contains("keys generate")),
        "{refused:?}"
    );

    destroy_key(&label).await;
}

/// Logging out of the token from another session logs every session of
/// the process out (PKCS#11 login is per token): the provider's idle
/// sessions are useless from then on. It opens sessions again, logs in,
/// and the next wrap and unwrap succeed.
#[tokio::test]
async fn sessions_taken_from_under_the_provider_are_opened_again() {
    let label = new_key().await;
    let keyring = Keyring::pkcs11(Pkcs11Keys::open(settings(&[&label])).await.unwrap(), None, None).unwrap();
    let dek = Dek::generate();
    let mut wrapped = Vec::new();
    for i in 0..8 {
        wrapped.push(keyring.wrap(&format!("m{i}"), 0, &dek).await.unwrap());
    }

    let session = own_session();
    session.logout().unwrap();
    drop(session);

    for (i, wrapped) in wrapped.iter().enumerate() {
        let opened = keyring
            .unwrap(&format!("m{i}"), &label, &wrapped.bytes)
            .await
            .unwrap();
        assert_eq!(opened.as_bytes(), dek.as_bytes());
    }
    keyring.wrap("after", 0, &dek).await.unwrap();

    drop(keyring);
    destroy_key(&label).await;
}

/// A key whose label starts with the epoch keys' prefix, a day's or not,
/// is refused beside epoch keys: `keys rewrap` takes whatever lies under
/// such a label as moved already, so its data keys would stay under it.
#[tokio::test]
async fn a_key_labelled_with_the_epoch_prefix_is_refused_beside_epoch_keys() {
    let prefix = format!("{}-", new_label());
    for id in [format!("{prefix}main"), format!("{prefix}2026-12-03")] {
        let legacy = ConfiguredKeys::parse(&Keyring::generate_line(&id)).unwrap();
        let refused = Keyring::pkcs11(
            Pkcs11Keys::open(settings(&[])).await.unwrap(),
            Some(legacy),
            Some(EpochSettings::new(&prefix)),
        )
        .map(|_| ())
        .unwrap_err();
        assert!(
            matches!(&refused, KeyError::Provider(why) if why.contains(&format!("key {id:?} starts with"))),
            "{refused:?}"
        );
    }
    let other = ConfiguredKeys::parse(&Keyring::generate_line("main")).unwrap();
    Keyring::pkcs11(
        Pkcs11Keys::open(settings(&[])).await.unwrap(),
        Some(other),
        Some(EpochSettings::new(&prefix)),
    )
    .unwrap();
}

/// Epoch keys in the token: a data key goes under its expiry day's key,
/// made when first needed; keys ahead are made once; a day whose key two
/// replicas made at once (two keys of one label) unwraps under either, and
/// destroying the day's key destroys both.
#[tokio::test]
async fn epoch_keys_are_made_when_needed_and_a_day_made_twice_unwraps_under_either() {
    let prefix = format!("{}-", new_label());
    let epochs = EpochSettings {
        ahead_days: 1,
        ..EpochSettings::new(&prefix)
    };
    let keyring =
        Keyring::pkcs11(Pkcs11Keys::open(settings(&[])).await.unwrap(), None, Some(epochs)).unwrap();
    assert_eq!(keyring.active_id(), None);
    let held = |labels: Vec<String>| -> Vec<String> {
        labels
            .into_iter()
            .filter(|label| label.starts_with(&prefix))
            .collect()
    };

    // 2030-03-17T12:00:00Z, and the next day.
    let expires_at = 1_899_979_200_000;
    let day = format!("{prefix}20300317");
    let dek = Dek::generate();
    let wrapped = keyring.wrap("m-1", expires_at, &dek).await.unwrap();
    assert_eq!(wrapped.kek_id, day);
    assert_eq!(held(keyring.labels().await.unwrap()), std::slice::from_ref(&day));
    let again = keyring.wrap("m-2", expires_at + 3_600_000, &dek).await.unwrap();
    assert_eq!(again.kek_id, day, "the same day, the same key");
    assert_eq!(
        keyring
            .make_epoch_keys_ahead(expires_at, &keyring.labels().await.unwrap())
            .await
            .unwrap(),
        [format!("{prefix}20300318")],
        "the day itself has its key already"
    );
    assert!(
        keyring
            .make_epoch_keys_ahead(expires_at, &keyring.labels().await.unwrap())
            .await
            .unwrap()
            .is_empty()
    );

    // Another replica made the same day's key at the same moment: a key
    // of the same label, other material, which wrapped m-3's data key.
    let material = [0x17u8; 32];
    import_key(&day, material);
    let other = ConfiguredKeys::parse(&format!(
        "{day}:{}",
        base64::engine::general_purpose::STANDARD.encode(material)
    ))
    .unwrap();
    let by_other = other.wrap("m-3", &dek);
    for (media_id, bytes) in [("m-1", &wrapped.bytes), ("m-3", &by_other.bytes)] {
        let opened = keyring.unwrap(media_id, &day, bytes).await.unwrap();
        assert_eq!(opened.as_bytes(), dek.as_bytes(), "{media_id}");
    }
    assert!(matches!(
        keyring.unwrap("m-2", &day, &by_other.bytes).await,
        Err(KeyError::Integrity)
    ));

    // Destroying the day destroys both of its keys.
    keyring.destroy(&day).await.unwrap();
    assert_eq!(
        held(keyring.labels().await.unwrap()),
        [format!("{prefix}20300318")]
    );
    for (media_id, bytes) in [("m-1", &wrapped.bytes), ("m-3", &by_other.bytes)] {
        assert!(matches!(
            keyring.unwrap(media_id, &day, bytes).await,
            Err(KeyError::Unknown(label)) if label == day
        ));
    }
    keyring.destroy(&format!("{prefix}20300318")).await.unwrap();
}
