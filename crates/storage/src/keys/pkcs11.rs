//! KEKs in a PKCS#11 token (a hardware security module; SoftHSM2 in tests).
//! A KEK is an AES-256 secret key generated inside the token, sensitive and
//! not extractable: its material never leaves the token. The token itself
//! wraps and unwraps data keys with AES-256-GCM (C_Encrypt and C_Decrypt,
//! CKM_AES_GCM, a fresh random 96-bit IV, a 128-bit tag, the associated data
//! of `docs/format.md`), so a data key wrapped here has the same 60 bytes a
//! configured key would give it.
//!
//! Every token call blocks, so each runs on tokio's blocking pool, never on
//! the async executor, and at most `sessions` run at once: one logged-in
//! session each, kept open between calls. A token that goes away (removed,
//! its sessions closed, the device failing) fails the calls that meet it
//! with `KeyError::Unavailable`; the first such failure closes every
//! session, finalizes the module and connects again from scratch, and while
//! the token stays away further attempts are paced, so that it is back in
//! use as soon as it returns.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::{Dek, FINGERPRINT_LABEL, KeyError, KeyProvider, check_id};
use crate::format::{DEK_LEN, TAG_LEN, WRAPPED_DEK_LEN, dek_aad};

/// GCM IV bytes: 96 bits, the size GCM takes without hashing it.
const IV_LEN: usize = 12;
/// While the token is away, at most one attempt to reach it per this long;
/// calls in between fail at once.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Tries to reach the token when the provider opens, and the pause between.
const OPEN_TRIES: u32 = 5;
const OPEN_PAUSE: Duration = Duration::from_millis(200);

/// Which token of the module holds the keys.
#[derive(Debug, Clone)]
pub enum TokenSelector {
    /// The token's label (`crypto.pkcs11.token_label`).
    Label(String),
    /// The slot's id (`crypto.pkcs11.slot`).
    Slot(u64),
}

/// How to reach the token: the `[crypto.pkcs11]` settings.
#[derive(Debug, Clone)]
pub struct Pkcs11Settings {
    /// The vendor's PKCS#11 library.
    pub module: PathBuf,
    pub token: TokenSelector,
    /// The user PIN.
    pub pin: SecretString,
    /// Labels of the KEKs in use, the active one first. Empty only to
    /// create or destroy a key.
    pub keys: Vec<String>,
    /// Token calls at once, and so sessions open: the upload concurrency.
    pub sessions: usize,
}

/// The KEKs of `crypto.pkcs11.keys`, in a token.
pub struct Pkcs11Keys {
    ids: Vec<String>,
    token: Arc<Token>,
    /// One permit per session: a call waits here, on the executor, for a
    /// session rather than on a blocking thread.
    permits: Arc<Semaphore>,
}

/// What a token call failed on, which says what repairs it.
enum Failure {
    /// The token's answer to the operation itself (a wrapped key that does
    /// not authenticate, a label it lacks): final.
    Key(KeyError),
    /// A key `crypto.pkcs11.keys` names is not on the token. Final once the
    /// token has settled, but a token that other processes are using may
    /// not list it for a moment (SoftHSM2 was seen to list none of a key's
    /// label while other processes created and destroyed keys in the same
    /// token files), so opening the provider tries again before it gives
    /// this answer.
    Missing(KeyError),
    /// The session is unusable (closed, logged out); so, likely, are the
    /// other idle ones: open new ones.
    Session(CkError),
    /// The token or the module is: finalize and connect again.
    Token(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Key(error) | Failure::Missing(error) => write!(f, "{error}"),
            Failure::Session(error) => write!(f, "session: {}", short(error)),
            Failure::Token(what) => f.write_str(what),
        }
    }
}

/// A PKCS#11 error without the specification's paragraph about it.
fn short(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, function) => format!("{function:?}: {rv:?}"),
        other => other.to_string(),
    }
}

/// The failure a token call's error stands for.
fn failure(error: CkError) -> Failure {
    match error {
        CkError::Pkcs11(
            RvError::SessionHandleInvalid | RvError::SessionClosed | RvError::UserNotLoggedIn,
            _,
        ) => Failure::Session(error),
        CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired, _) => {
            Failure::Key(KeyError::Provider(format!(
                "crypto.pkcs11.pin: the token refused it ({})",
                short(&error)
            )))
        }
        other => Failure::Token(short(&other)),
    }
}

/// The module, the token and the sessions open on it.
struct Token {
    settings: Pkcs11Settings,
    library: Pkcs11,
    state: RwLock<State>,
}

struct State {
    /// C_Initialize has run, and C_Finalize not since.
    initialized: bool,
    /// Counts connections, so that a failure met by many calls at once is
    /// repaired once.
    generation: u64,
    live: Option<Live>,
    /// The last attempt to connect, to pace attempts while the token is away.
    last_attempt: Option<Instant>,
}

/// A connection to the token: its slot, idle logged-in sessions, and the
/// handles of the keys in use (valid in every session of the connection).
struct Live {
    slot: Slot,
    idle: Mutex<Vec<Session>>,
    handles: HashMap<String, ObjectHandle>,
    /// Keys not in `crypto.pkcs11.keys` (epoch keys, keys taken out of the
    /// configuration) found in the token by label when first used. A label
    /// may stand for more than one key: replicas that each made an epoch's
    /// key at once made several, and a data key is unwrapped by whichever
    /// of them wrapped it.
    found: RwLock<HashMap<String, Vec<ObjectHandle>>>,
}

impl Pkcs11Keys {
    /// Loads the module, logs in to the token, and finds each key of
    /// `settings.keys` there; fails naming the setting (or the label) that
    /// does not hold.
    pub async fn open(settings: Pkcs11Settings) -> Result<Pkcs11Keys, KeyError> {
        for label in &settings.keys {
            check_id(label).map_err(|_| KeyError::BadLabel(label.clone()))?;
        }
        let sessions = settings.sessions.max(1);
        let ids = settings.keys.clone();
        let token = tokio::task::spawn_blocking(move || Token::open(settings))
            .await
            .map_err(|e| KeyError::Unavailable(format!("opening the token: {e}")))??;
        Ok(Pkcs11Keys {
            ids,
            token: Arc::new(token),
            permits: Arc::new(Semaphore::new(sessions)),
        })
    }

    /// Runs `op` on a session of the token, on the blocking pool.
    async fn call<T: Send + 'static>(
        &self,
        op: impl Fn(&Session, &Live) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, KeyError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| KeyError::Unavailable("the token is closed".into()))?;
        let token = self.token.clone();
        // The permit goes with the token call, not with this future: a
        // caller that drops the future (a timeout, a client gone) leaves the
        // call running on its session, and the permit must stay taken until
        // it ends, or more than `sessions` calls (and sessions) pile up.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            token.call(op)
        })
        .await
        .map_err(|e| KeyError::Unavailable(format!("token call: {e}")))?
    }

    /// Generates KEK `label` inside the token: AES-256, sensitive, never
    /// extractable, kept on the token. Returns its fingerprint. Refused
    /// when the token already holds a key of that label.
    pub async fn create(&self, label: &str) -> Result<String, KeyError> {
        check_id(label).map_err(|_| KeyError::BadLabel(label.to_owned()))?;
        let label = label.to_owned();
        self.call(move |session, live| {
            if !find_keys(session, &label)?.is_empty() {
                return Err(Failure::Key(KeyError::Exists(label.clone())));
            }
            let key = session
                .generate_key(&Mechanism::AesKeyGen, &kek_template(&label))
                .map_err(failure)?;
            live.forget(&label);
            gmac_fingerprint(session, key)
        })
        .await
    }

    /// Destroys KEK `label` in the token: whatever it wrapped can no longer
    /// be read. The caller makes sure nothing needs it.
    pub async fn destroy(&self, label: &str) -> Result<(), KeyError> {
        let label = label.to_owned();
        self.call(move |session, live| {
            let keys = find_keys(session, &label)?;
            if keys.is_empty() {
                return Err(Failure::Key(KeyError::Unknown(label.clone())));
            }
            for key in keys {
                session.destroy_object(key).map_err(failure)?;
            }
            live.forget(&label);
            Ok(())
        })
        .await
    }

    /// The label of every AES key in the token, once each, sorted.
    pub async fn labels(&self) -> Result<Vec<String>, KeyError> {
        self.call(|session, _| {
            let keys = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                ])
                .map_err(failure)?;
            let mut labels = Vec::with_capacity(keys.len());
            for key in keys {
                for attribute in session
                    .get_attributes(key, &[AttributeType::Label])
                    .map_err(failure)?
                {
                    if let Attribute::Label(label) = attribute
                        && let Ok(label) = String::from_utf8(label)
                    {
                        labels.push(label);
                    }
                }
            }
            labels.sort_unstable();
            labels.dedup();
            Ok(labels)
        })
        .await
    }
}

impl KeyProvider for Pkcs11Keys {
    fn ids(&self) -> Vec<&str> {
        self.ids.iter().map(String::as_str).collect()
    }

    async fn wrap(&self, media_id: &str, kek_id: &str, dek: &Dek) -> Result<Vec<u8>, KeyError> {
        let (kek_id, aad) = (kek_id.to_owned(), dek_aad(media_id, kek_id));
        let dek = Dek::from_bytes(*dek.as_bytes());
        self.call(move |session, live| {
            let key = live.keys(session, &kek_id, Lookup::Cached)?[0];
            let mut iv = [0u8; IV_LEN];
            rand::rng().fill_bytes(&mut iv);
            let sealed = session
                .encrypt(&gcm(&mut iv, &aad)?, key, dek.as_bytes())
                .map_err(failure)?;
            if sealed.len() != DEK_LEN + TAG_LEN {
                return Err(Failure::Token(format!(
                    "C_Encrypt gave {} bytes for a {DEK_LEN}-byte key",
                    sealed.len()
                )));
            }
            // The IV is read only now: the token gets it by mutable
            // reference and may have written the IV it used in its place.
            let mut wrapped = Vec::with_capacity(WRAPPED_DEK_LEN);
            wrapped.extend_from_slice(&iv);
            wrapped.extend_from_slice(&sealed);
            Ok(wrapped)
        })
        .await
    }

    async fn unwrap(&self, media_id: &str, kek_id: &str, wrapped: &[u8]) -> Result<Dek, KeyError> {
        if wrapped.len() != WRAPPED_DEK_LEN {
            return Err(KeyError::Integrity);
        }
        let (kek_id, aad, wrapped) = (kek_id.to_owned(), dek_aad(media_id, kek_id), wrapped.to_vec());
        self.call(move |session, live| {
            let mut tried = Vec::new();
            for lookup in [Lookup::Cached, Lookup::Fresh] {
                for key in live.keys(session, &kek_id, lookup)? {
                    if tried.contains(&key) {
                        continue;
                    }
                    tried.push(key);
                    match decrypt_dek(session, key, &aad, &wrapped) {
                        Err(Failure::Key(KeyError::Integrity)) => continue,
                        outcome => return outcome,
                    }
                }
                if live.handles.contains_key(&kek_id) {
                    break;
                }
            }
            Err(Failure::Key(KeyError::Integrity))
        })
        .await
    }

    async fn fingerprint(&self, kek_id: &str) -> Result<String, KeyError> {
        let kek_id = kek_id.to_owned();
        self.call(move |session, live| {
            gmac_fingerprint(session, live.keys(session, &kek_id, Lookup::Cached)?[0])
        })
        .await
    }

    async fn create(&self, kek_id: &str) -> Result<String, KeyError> {
        Pkcs11Keys::create(self, kek_id).await
    }

    async fn destroy(&self, kek_id: &str) -> Result<(), KeyError> {
        Pkcs11Keys::destroy(self, kek_id).await
    }

    async fn labels(&self) -> Result<Vec<String>, KeyError> {
        Pkcs11Keys::labels(self).await
    }
}

/// CKM_AES_GCM with `iv`, associated data `aad` and a 128-bit tag.
fn gcm<'a>(iv: &'a mut [u8], aad: &'a [u8]) -> Result<Mechanism<'a>, Failure> {
    let params = GcmParams::new(iv, aad, ((TAG_LEN * 8) as u64).into())
        .map_err(|e| Failure::Token(format!("GCM parameters: {e}")))?;
    Ok(Mechanism::AesGcm(params))
}

/// The data key `wrapped` holds, if `key` wrapped it with associated data `aad`.
fn decrypt_dek(session: &Session, key: ObjectHandle, aad: &[u8], wrapped: &[u8]) -> Result<Dek, Failure> {
    let mut iv: [u8; IV_LEN] = wrapped[..IV_LEN].try_into().expect("length checked");
    let opened = session.decrypt(&gcm(&mut iv, aad)?, key, &wrapped[IV_LEN..]);
    let plain = Zeroizing::new(match opened {
        Ok(plain) => plain,
        // A tag that does not verify.
        Err(CkError::Pkcs11(
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
            Function::Decrypt,
        )) => return Err(Failure::Key(KeyError::Integrity)),
        // Some tokens answer a tag that does not verify with these too
        // (SoftHSM2: CKR_GENERAL_ERROR), and so does a device failing. Only
        // a token that still opens what it has just sealed under the same key
        // has judged the wrapped key; otherwise the token is what failed, and
        // is connected again, not reported as stored data tampered with.
        Err(CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, Function::Decrypt)) => {
            opens_its_own_seal(session, key)?;
            return Err(Failure::Key(KeyError::Integrity));
        }
        Err(error) => return Err(failure(error)),
    });
    let bytes: [u8; DEK_LEN] = plain
        .as_slice()
        .try_into()
        .map_err(|_| Failure::Key(KeyError::Integrity))?;
    Ok(Dek::from_bytes(bytes))
}

/// The fingerprint of a key in the token: the 128-bit GCM tag, under the
/// key, of the empty message with the fixed label as associated data and
/// an all-zero IV, in lowercase hex. The key cannot leave the token to be
/// MACed as configured keys are; this MAC (GMAC) needs no mechanism but the
/// one the key already serves, is the same for the same key and differs
/// for another, and tells nothing of the key. The fixed IV is never that of
/// a wrapped key but with the odds of two random 96-bit IVs meeting.
fn gmac_fingerprint(session: &Session, key: ObjectHandle) -> Result<String, Failure> {
    let mut iv = [0u8; IV_LEN];
    let tag = session
        .encrypt(&gcm(&mut iv, FINGERPRINT_LABEL)?, key, &[])
        .map_err(failure)?;
    Ok(hex::encode(tag))
}

/// Whether the token, under `key`, opens the fingerprint's GMAC it has just
/// made: the check that a failed C_Decrypt was the data's fault and not the
/// token's. Any failure here is the token's (a `Failure::Token`, or a
/// `Failure::Session` when the session is what went away).
fn opens_its_own_seal(session: &Session, key: ObjectHandle) -> Result<(), Failure> {
    let as_token_failure = |error: CkError| match failure(error) {
        Failure::Key(error) => Failure::Token(error.to_string()),
        other => other,
    };
    let mut iv = [0u8; IV_LEN];
    let tag = session
        .encrypt(&gcm(&mut iv, FINGERPRINT_LABEL)?, key, &[])
        .map_err(as_token_failure)?;
    let mut iv = [0u8; IV_LEN];
    let opened = session
        .decrypt(&gcm(&mut iv, FINGERPRINT_LABEL)?, key, &tag)
        .map_err(as_token_failure)?;
    if !opened.is_empty() {
        return Err(Failure::Token(format!(
            "C_Decrypt of the token's own GMAC gave {} bytes, not none",
            opened.len()
        )));
    }
    Ok(())
}

/// The AES secret keys in the token labelled `label`.
fn find_keys(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, Failure> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(failure)
}

/// A KEK as `create` makes it: AES-256 on the token, readable only after
/// login, sensitive and never extractable (its value can never be read or
/// wrapped out), for encryption and decryption alone.
fn kek_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

impl Token {
    fn open(settings: Pkcs11Settings) -> Result<Token, KeyError> {
        let library = Pkcs11::new(&settings.module).map_err(|e| {
            KeyError::Provider(format!(
                "crypto.pkcs11.module: cannot load {}: {e}",
                settings.module.display()
            ))
        })?;
        let token = Token {
            settings,
            library,
            state: RwLock::new(State {
                initialized: false,
                generation: 0,
                live: None,
                last_attempt: None,
            }),
        };
        {
            let mut state = token.state.write().expect("token state poisoned");
            // A token busy at that moment (SoftHSM2 while another process
            // writes its files; a network HSM's blip) is not absent, nor is
            // a key it does not list during it: a few tries before the
            // start fails.
            let mut attempt = 1;
            loop {
                match token.connect(&mut state) {
                    Ok(()) => break,
                    Err(Failure::Key(error)) => return Err(error),
                    Err(Failure::Missing(error)) if attempt == OPEN_TRIES => return Err(error),
                    Err(failure) if attempt == OPEN_TRIES => {
                        return Err(KeyError::Unavailable(failure.to_string()));
                    }
                    Err(failure) => {
                        tracing::debug!(%failure, attempt, "PKCS#11 token not reached; trying again");
                        attempt += 1;
                        std::thread::sleep(OPEN_PAUSE);
                    }
                }
            }
        }
        Ok(token)
    }

    /// Runs `op` on an idle session (or a new one), repairing what a failure
    /// says is broken and trying again, up to twice.
    fn call<T>(&self, op: impl Fn(&Session, &Live) -> Result<T, Failure>) -> Result<T, KeyError> {
        const TRIES: usize = 3;
        for attempt in 1..=TRIES {
            let (outcome, generation) = {
                let state = self.state.read().expect("token state poisoned");
                let outcome = match &state.live {
                    Some(live) => live.run(self, &op),
                    None => Err(Failure::Token("the token is not connected".into())),
                };
                (outcome, state.generation)
            };
            let failure = match outcome {
                Ok(value) => return Ok(value),
                Err(Failure::Key(error)) => return Err(error),
                Err(failure) if attempt == TRIES => failure,
                // `run` dropped the idle sessions: the next try opens one.
                Err(Failure::Session(_)) if attempt == 1 => continue,
                Err(failure) => failure,
            };
            if attempt == TRIES {
                return Err(KeyError::Unavailable(failure.to_string()));
            }
            tracing::warn!(%failure, "PKCS#11 token failed; connecting again");
            self.reconnect(generation).map_err(|failure| match failure {
                Failure::Key(error) | Failure::Missing(error) => error,
                other => KeyError::Unavailable(other.to_string()),
            })?;
        }
        unreachable!("the last try returns")
    }

    /// Closes every session, finalizes the module and connects again,
    /// unless another call did so since generation `seen` failed.
    fn reconnect(&self, seen: u64) -> Result<(), Failure> {
        let mut state = self.state.write().expect("token state poisoned");
        if state.generation != seen && state.live.is_some() {
            return Ok(());
        }
        let was_live = state.live.take().is_some();
        if !was_live
            && let Some(last) = state.last_attempt
            && last.elapsed() < RECONNECT_PAUSE
        {
            return Err(Failure::Token("the token is unavailable".into()));
        }
        self.connect(&mut state)
    }

    /// (Re)initializes the module, opens and logs in a session on the
    /// token, and finds every key in use.
    fn connect(&self, state: &mut State) -> Result<(), Failure> {
        state.live = None;
        if state.initialized {
            // Each session closed with the connection: none outlives it.
            let _ = self.library.clone().finalize();
            state.initialized = false;
        }
        state.last_attempt = Some(Instant::now());
        match self
            .library
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(error) => return Err(Failure::Token(format!("C_Initialize: {}", short(&error)))),
        }
        state.initialized = true;
        match self.connect_initialized() {
            Ok(live) => {
                state.live = Some(live);
                state.generation += 1;
                tracing::info!(generation = state.generation, "PKCS#11 token connected");
                Ok(())
            }
            Err(failure) => {
                let _ = self.library.clone().finalize();
                state.initialized = false;
                Err(failure)
            }
        }
    }

    fn connect_initialized(&self) -> Result<Live, Failure> {
        let slot = self.find_slot()?;
        let session = self.login(slot)?;
        let mut handles = HashMap::new();
        for label in &self.settings.keys {
            let found = find_keys(&session, label)?;
            let [key] = found[..] else {
                let error = KeyError::Provider(format!(
                    "crypto.pkcs11.keys: the token holds {} AES keys labelled {label:?}, not one; \
                     create it with `mediavault keys generate --provider pkcs11 --label {label}`",
                    found.len()
                ));
                return Err(if found.is_empty() {
                    Failure::Missing(error)
                } else {
                    Failure::Key(error)
                });
            };
            check_kek(&session, label, key)?;
            handles.insert(label.clone(), key);
        }
        Ok(Live {
            slot,
            idle: Mutex::new(vec![session]),
            handles,
            found: RwLock::new(HashMap::new()),
        })
    }

    /// The slot of the configured token.
    fn find_slot(&self) -> Result<Slot, Failure> {
        let slots = self
            .library
            .get_slots_with_token()
            .map_err(|e| Failure::Token(format!("listing slots: {}", short(&e))))?;
        let found = match &self.settings.token {
            TokenSelector::Slot(id) => slots.into_iter().find(|slot| slot.id() == *id),
            TokenSelector::Label(label) => slots.into_iter().find(|slot| {
                self.library
                    .get_token_info(*slot)
                    .is_ok_and(|info| info.label().trim_end() == label)
            }),
        };
        // Not a configuration error: a removed token is away, not wrong.
        found.ok_or_else(|| {
            Failure::Token(match &self.settings.token {
                TokenSelector::Slot(id) => format!("no token in slot {id} (crypto.pkcs11.slot)"),
                TokenSelector::Label(label) => {
                    format!("no token labelled {label:?} (crypto.pkcs11.token_label)")
                }
            })
        })
    }

    /// A new read-write session on `slot`, logged in as the user. Login is
    /// per token, not per session: a session opened while another is logged
    /// in is logged in already.
    fn login(&self, slot: Slot) -> Result<Session, Failure> {
        let session = self.library.open_rw_session(slot).map_err(failure)?;
        let pin = AuthPin::new(self.settings.pin.expose_secret().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(error) => Err(failure(error)),
        }
    }
}

/// Refuses a key that is not AES-256; warns of one whose material could
/// leave the token.
fn check_kek(session: &Session, label: &str, key: ObjectHandle) -> Result<(), Failure> {
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )
        .map_err(failure)?;
    for attribute in attributes {
        match attribute {
            Attribute::ValueLen(len) if u64::from(len) != 32 => {
                return Err(Failure::Key(KeyError::Provider(format!(
                    "crypto.pkcs11.keys: key {label:?} is AES-{}, not AES-256",
                    u64::from(len) * 8
                ))));
            }
            Attribute::Sensitive(false) | Attribute::Extractable(true) => {
                tracing::warn!(
                    label,
                    "a PKCS#11 KEK's material can leave the token (not sensitive, or extractable)"
                );
            }
            _ => {}
        }
    }
    Ok(())
}

impl Live {
    /// Runs `op` on an idle session, or on a new one; puts the session
    /// back unless it failed.
    fn run<T>(
        &self,
        token: &Token,
        op: &impl Fn(&Session, &Live) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let idle = self.idle.lock().expect("idle sessions poisoned").pop();
        let session = match idle {
            Some(session) => session,
            None => token.login(self.slot)?,
        };
        match op(&session, self) {
            Ok(value) => {
                self.idle.lock().expect("idle sessions poisoned").push(session);
                Ok(value)
            }
            Err(Failure::Key(error)) => {
                self.idle.lock().expect("idle sessions poisoned").push(session);
                Err(Failure::Key(error))
            }
            Err(Failure::Session(error)) => {
                // Its siblings share its fate (all closed, or logged out).
                self.idle.lock().expect("idle sessions poisoned").clear();
                Err(Failure::Session(error))
            }
            Err(failure) => Err(failure),
        }
    }

    /// The handles of KEK `label`: the one found when the connection was
    /// made for a key of `crypto.pkcs11.keys`, else those of that label in
    /// the token, looked up once (or again, with `Lookup::Fresh`).
    fn keys(&self, session: &Session, label: &str, lookup: Lookup) -> Result<Vec<ObjectHandle>, Failure> {
        if let Some(key) = self.handles.get(label) {
            return Ok(vec![*key]);
        }
        if lookup == Lookup::Cached
            && let Some(keys) = self.found.read().expect("found keys poisoned").get(label)
        {
            return Ok(keys.clone());
        }
        let keys = find_keys(session, label)?;
        if keys.is_empty() {
            self.forget(label);
            return Err(Failure::Key(KeyError::Unknown(label.to_owned())));
        }
        self.found
            .write()
            .expect("found keys poisoned")
            .insert(label.to_owned(), keys.clone());
        Ok(keys)
    }

    /// Drops what was found of `label`: the token's keys of it changed.
    fn forget(&self, label: &str) {
        self.found.write().expect("found keys poisoned").remove(label);
    }
}

/// Whether a key's handles may come from what an earlier call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Cached,
    Fresh,
}

impl Drop for Token {
    fn drop(&mut self) {
        let state = self.state.get_mut().expect("token state poisoned");
        state.live = None;
        if state.initialized {
            let _ = self.library.clone().finalize();
        }
    }
}

impl fmt::Debug for Pkcs11Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Keys")
            .field("module", &self.token.settings.module)
            .field("token", &self.token.settings.token)
            .field("ids", &self.ids)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::testing::pkcs11_settings;

    /// A token call whose caller gave up (a timeout) holds its session's
    /// permit until it ends: calls beyond `sessions` wait, and no more
    /// sessions than that are opened.
    #[tokio::test]
    async fn calls_given_up_on_open_no_more_sessions_than_configured() {
        let keys = Pkcs11Keys::open(pkcs11_settings(1)).await.unwrap();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        for _ in 0..10 {
            let (running, most) = (running.clone(), most.clone());
            let call = keys.call(move |_, _| {
                most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            });
            let _ = tokio::time::timeout(Duration::from_millis(10), call).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(most.load(Ordering::SeqCst), 1, "token calls at once");
        let state = keys.token.state.read().unwrap();
        let idle = state.live.as_ref().unwrap().idle.lock().unwrap().len();
        assert!(idle <= 1, "{idle} sessions open");
    }
}
