//! Upload policy: which declared types an app accepts, and whether the bytes
//! agree with the declared type.

use crate::error::UploadError;
use crate::model::App;

/// The Gupshup list, in the order its error message names them.
pub const DEFAULT_ALLOWED_TYPES: &[&str] = &[
    "audio/aac",
    "audio/mp4",
    "audio/mpeg",
    "audio/amr",
    "audio/ogg",
    "audio/opus",
    "application/vnd.ms-powerpoint",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/pdf",
    "text/plain",
    "application/vnd.ms-excel",
    "image/jpeg",
    "image/png",
    "image/webp",
    "video/mp4",
    "video/3gpp",
];

/// Bytes from the start of a file that the sniffer looks at. Office
/// documents are told apart by ZIP entries that follow the first one.
pub const SNIFF_LEN: usize = 64 * 1024;

impl App {
    /// The types this app accepts, in the order error messages list them.
    pub fn allowed_types(&self) -> Vec<String> {
        match &self.allowed_types {
            Some(list) => list
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            None => DEFAULT_ALLOWED_TYPES.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    /// Refuses apps that may not upload at all.
    pub fn check_may_upload(&self) -> Result<(), UploadError> {
        if self.capi {
            Ok(())
        } else {
            Err(UploadError::NotCapi)
        }
    }

    /// Checks a declared `file_type` against the app's list; returns it
    /// normalised (trimmed, lowercase).
    pub fn check_declared_type(&self, declared: Option<&str>) -> Result<String, UploadError> {
        let allowed = self.allowed_types();
        let normalised = declared
            .map(|t| t.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if !normalised.is_empty() && allowed.contains(&normalised) {
            Ok(normalised)
        } else {
            Err(UploadError::UnsupportedType {
                allowed,
                received: declared.unwrap_or_default().to_owned(),
            })
        }
    }
}

/// What a declared type tolerates from the sniffer.
struct Rule {
    /// Sniffed types that agree with the declared one.
    agrees: &'static [&'static str],
    /// Whether the declared type has a signature the sniffer always finds;
    /// if so, finding nothing is a contradiction too.
    signature_required: bool,
}

const OLE: &[&str] = &[
    "application/x-ole-storage",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
];
const MP4_FAMILY: &[&str] = &["video/mp4", "video/x-m4v", "video/quicktime", "audio/m4a"];
const TEXT: &[&str] = &["text/html", "text/xml", "text/x-shellscript"];

fn rule(declared: &str) -> Option<Rule> {
    let (agrees, signature_required): (&'static [&'static str], bool) = match declared {
        "audio/aac" => (&["audio/aac", "audio/m4a"], false),
        "audio/mp4" => (&["audio/m4a", "video/mp4", "audio/aac"], false),
        "audio/mpeg" => (&["audio/mpeg"], false),
        "audio/amr" => (&["audio/amr"], false),
        "audio/ogg" | "audio/opus" => (&["audio/ogg", "audio/opus"], false),
        "application/vnd.ms-powerpoint" | "application/msword" | "application/vnd.ms-excel" => (OLE, true),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => (
            &["application/vnd.openxmlformats-officedocument.wordprocessingml.document"],
            true,
        ),
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => (
            &["application/vnd.openxmlformats-officedocument.presentationml.presentation"],
            true,
        ),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => (
            &["application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"],
            true,
        ),
        "application/pdf" => (&["application/pdf"], true),
        "text/plain" => (TEXT, false),
        "image/jpeg" => (&["image/jpeg"], true),
        "image/png" => (&["image/png"], true),
        "image/webp" => (&["image/webp"], true),
        "video/mp4" | "video/3gpp" => (MP4_FAMILY, false),
        _ => return None,
    };
    Some(Rule {
        agrees,
        signature_required,
    })
}

/// Checks the first bytes of a file against its declared type.
pub fn check_content(declared: &str, head: &[u8]) -> Result<(), UploadError> {
    let detected = infer::get(head).map(|kind| kind.mime_type());
    let agrees = match (rule(declared), detected) {
        (_, Some(found)) if found == declared => true,
        (Some(rule), Some(found)) => rule.agrees.contains(&found),
        (Some(rule), None) => !rule.signature_required,
        // A type an operator added: anything but a different known type.
        (None, found) => found.is_none(),
    };
    if agrees {
        Ok(())
    } else {
        Err(UploadError::ContentMismatch {
            declared: declared.to_owned(),
            detected: detected.unwrap_or("unrecognised data").to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(allowed: Option<&str>) -> App {
        App {
            id: "a".into(),
            name: "a".into(),
            capi: true,
            retention_seconds: 1,
            max_file_bytes: 1,
            allowed_types: allowed.map(str::to_owned),
            uploads_per_second: None,
            created_at: 0,
        }
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    /// The first 64 bytes of an x86-64 ELF header.
    const ELF: &[u8; 64] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0\x01\0\0\0\
        \0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    const PDF: &[u8] = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n";

    #[test]
    fn declared_type_must_be_on_the_list() {
        let a = app(None);
        assert_eq!(a.check_declared_type(Some(" Image/PNG ")).unwrap(), "image/png");
        let Err(UploadError::UnsupportedType { allowed, received }) =
            a.check_declared_type(Some("image/gif"))
        else {
            panic!("gif accepted")
        };
        assert_eq!(received, "image/gif");
        assert_eq!(allowed.len(), 19);
        assert_eq!(allowed[0], "audio/aac");
        assert!(
            matches!(a.check_declared_type(None), Err(UploadError::UnsupportedType { received, .. }) if received.is_empty())
        );
        let custom = app(Some("image/gif, text/plain"));
        assert!(custom.check_declared_type(Some("image/gif")).is_ok());
        assert!(custom.check_declared_type(Some("image/png")).is_err());
    }

    #[test]
    fn content_must_agree_with_declared_type() {
        assert!(check_content("image/png", PNG).is_ok());
        assert!(check_content("application/pdf", PDF).is_ok());
        assert!(matches!(
            check_content("image/png", ELF.as_slice()),
            Err(UploadError::ContentMismatch { detected, .. }) if detected == "application/x-executable"
        ));
        assert!(check_content("application/pdf", PNG).is_err());
        // A signature type with no recognisable signature is refused...
        assert!(check_content("image/jpeg", b"just some words").is_err());
        // ...while a type without a reliable signature passes plain bytes.
        assert!(check_content("text/plain", b"just some words").is_ok());
        assert!(check_content("text/plain", PNG).is_err());
        assert!(check_content("audio/mpeg", b"\0\0\0\0 not really audio").is_ok());
    }
}
