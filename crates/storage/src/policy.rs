//! Upload policy: which declared types an app accepts, and whether the bytes
//! agree with the declared type.

use crate::error::UploadError;
use crate::model::{App, TypeLimit};
use crate::sniff;

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

const MIB: u64 = 1024 * 1024;

/// What the WhatsApp Cloud surface accepts by default: Meta's media types
/// and the largest file of each, by kind (audio 16 MB, document 100 MB,
/// image 5 MB, sticker 100 KB, video 16 MB; Meta's megabytes are MiB), in
/// the order of Meta's list. An app may set its own (`App::wa_type_limits`).
pub const WHATSAPP_TYPE_LIMITS: &[(&str, u64)] = &[
    // audio
    ("audio/aac", 16 * MIB),
    ("audio/amr", 16 * MIB),
    ("audio/mpeg", 16 * MIB),
    ("audio/mp4", 16 * MIB),
    ("audio/ogg", 16 * MIB),
    // document
    ("text/plain", 100 * MIB),
    ("application/vnd.ms-excel", 100 * MIB),
    ("application/msword", 100 * MIB),
    ("application/vnd.ms-powerpoint", 100 * MIB),
    ("application/pdf", 100 * MIB),
    (sniff::XLSX, 100 * MIB),
    (sniff::DOCX, 100 * MIB),
    (sniff::PPTX, 100 * MIB),
    // image
    ("image/jpeg", 5 * MIB),
    ("image/png", 5 * MIB),
    // sticker (static; an animated one may be `ANIMATED_STICKER_MAX_BYTES`)
    ("image/webp", 100 * 1024),
    // video
    ("video/3gpp", 16 * MIB),
    ("video/mp4", 16 * MIB),
];

/// The largest animated sticker (an animated WebP) Meta takes: 500 KB,
/// where a static one may be 100. Applies with Meta's list; an app that
/// sets its own limits sets one for `image/webp`, whatever its content.
pub const ANIMATED_STICKER_MAX_BYTES: u64 = 500 * 1024;

/// Bytes from the start of a file that the sniffer looks at. Office
/// documents are told apart by ZIP entries that follow the first one.
pub const SNIFF_LEN: usize = 64 * 1024;

impl App {
    /// The types this app accepts, in the order error messages list them.
    pub fn allowed_types(&self) -> Vec<String> {
        match &self.allowed_types {
            Some(list) => list.clone(),
            None => DEFAULT_ALLOWED_TYPES.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    /// The types the WhatsApp Cloud surface accepts from this app and the
    /// largest file of each, in the order error messages list them: the
    /// app's own, else Meta's (`WHATSAPP_TYPE_LIMITS`).
    pub fn whatsapp_limits(&self) -> Vec<TypeLimit> {
        match &self.wa_type_limits {
            Some(limits) => limits.clone(),
            None => WHATSAPP_TYPE_LIMITS
                .iter()
                .map(|(mime_type, max_bytes)| TypeLimit {
                    mime_type: (*mime_type).to_owned(),
                    max_bytes: *max_bytes,
                })
                .collect(),
        }
    }

    /// The largest file of `mime_type` (compared trimmed and lowercase) the
    /// WhatsApp Cloud surface accepts from this app; `None`: not a type it
    /// accepts.
    pub fn whatsapp_limit(&self, mime_type: &str) -> Option<u64> {
        let wanted = mime_type.trim().to_ascii_lowercase();
        match &self.wa_type_limits {
            Some(limits) => limits
                .iter()
                .find(|limit| limit.mime_type == wanted)
                .map(|limit| limit.max_bytes),
            None => WHATSAPP_TYPE_LIMITS
                .iter()
                .find(|(listed, _)| *listed == wanted)
                .map(|(_, max_bytes)| *max_bytes),
        }
    }

    /// `whatsapp_limit`, for a file whose first bytes are `head`: with
    /// Meta's list, an animated sticker may be larger than a static one.
    pub fn whatsapp_limit_of_file(&self, mime_type: &str, head: &[u8]) -> Option<u64> {
        let limit = self.whatsapp_limit(mime_type)?;
        if self.is_animated_sticker(mime_type) && sniff::is_animated_webp(head) {
            Some(limit.max(ANIMATED_STICKER_MAX_BYTES))
        } else {
            Some(limit)
        }
    }

    /// The largest file of `mime_type` this app may take on the WhatsApp
    /// surface, whatever its content: what a file is received under before
    /// its first bytes are judged (`whatsapp_limit_of_file`).
    pub fn whatsapp_receive_limit(&self, mime_type: &str) -> Option<u64> {
        let limit = self.whatsapp_limit(mime_type)?;
        if self.is_animated_sticker(mime_type) {
            Some(limit.max(ANIMATED_STICKER_MAX_BYTES))
        } else {
            Some(limit)
        }
    }

    /// Whether a file of `mime_type` may be an animated sticker under its
    /// own limit: a WebP, with Meta's list.
    fn is_animated_sticker(&self, mime_type: &str) -> bool {
        self.wa_type_limits.is_none() && mime_type.trim().eq_ignore_ascii_case("image/webp")
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
        check_listed(declared, self.allowed_types())
    }

    /// Checks a declared type against the app's WhatsApp list (see
    /// `whatsapp_limits`); returns it normalised (trimmed, lowercase).
    pub fn check_whatsapp_type(&self, declared: Option<&str>) -> Result<String, UploadError> {
        let allowed = self
            .whatsapp_limits()
            .into_iter()
            .map(|limit| limit.mime_type)
            .collect();
        check_listed(declared, allowed)
    }
}

/// `declared`, trimmed and lowercase, if `allowed` lists it; else the
/// refusal that names the list in its order.
fn check_listed(declared: Option<&str>, allowed: Vec<String>) -> Result<String, UploadError> {
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

/// Whether a declared type's files always begin with a signature the
/// sniffer recognises, so that bytes it cannot place contradict the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signature {
    Required,
    /// The format has no reliable signature: unrecognised bytes pass, while
    /// bytes recognisably of another type do not.
    Optional,
}
use Signature::{Optional, Required};

/// MP4's family, ISO base media files: the brand in the `ftyp` box names
/// the file's profile, not whether it holds video or only sound, so any
/// member agrees with any of audio/mp4, video/mp4 and video/3gpp (3GPP is a
/// profile of the same format; phones label one as the other).
const ISO_MEDIA_FAMILY: &[&str] = &[
    sniff::MP4,
    sniff::M4A,
    sniff::M4V,
    sniff::QUICKTIME,
    sniff::THREE_GPP,
    sniff::THREE_GPP2,
    sniff::ISO_MEDIA,
];

/// AAC without MP4 around it: an ADTS stream (.aac), which may start with
/// an ID3 tag.
const AAC_STREAM: &[&str] = &[sniff::AAC_ADTS, sniff::ID3_TAGGED_AUDIO];

/// Word, Excel and PowerPoint 97–2003 files are OLE compound files. Which
/// one a file is, is written in its root directory entry, which a 64 KiB
/// head often does not reach; so any OLE document agrees with any of the
/// three. Windows Installer packages, OLE files too, agree with none.
const OLE_DOCUMENTS: &[&str] = &[sniff::DOC, sniff::XLS, sniff::PPT, sniff::OLE];

/// Ogg is the container: .ogg (Vorbis) and .opus files are both labelled
/// audio/ogg, and an Ogg file's first page need not be its audio stream.
const OGG_AUDIO: &[&str] = &[sniff::OGG, sniff::OGG_OPUS];

/// Office Open XML documents are ZIPs told apart by their entries (`word/`,
/// `xl/`, `ppt/`); one whose head shows only the package parts agrees with
/// all three kinds. Plain ZIPs and OpenDocument files agree with none. A
/// password-protected document is an OLE file holding the encrypted
/// package, whose kind cannot be seen.
const DOCX: &[&str] = &[sniff::DOCX, sniff::OOXML_OF_UNKNOWN_KIND, sniff::OLE];
const PPTX: &[&str] = &[sniff::PPTX, sniff::OOXML_OF_UNKNOWN_KIND, sniff::OLE];
const XLSX: &[&str] = &[sniff::XLSX, sniff::OOXML_OF_UNKNOWN_KIND, sniff::OLE];

/// MP3 frames, or an ID3 tag too long to see the frames behind it.
const MPEG: &[&str] = &[sniff::MPEG_AUDIO, sniff::ID3_TAGGED_AUDIO];

/// Markup is text too. Scripts that name their interpreter (`#!`) are
/// programs, refused like other executables.
const TEXT: &[&str] = &[sniff::PLAIN_TEXT, sniff::HTML, sniff::XML];

/// The upload policy: for each default type, the groups of sniffed types
/// that agree with it (no other type does), and whether unrecognised bytes
/// pass. AAC is carried in ADTS streams and in MP4 (.m4a), and clients
/// label either audio/aac or audio/mp4 (an ID3 tag, though, is no MP4's).
const AGREEMENTS: &[(&str, Signature, &[&[&str]])] = &[
    ("audio/aac", Optional, &[AAC_STREAM, ISO_MEDIA_FAMILY]),
    ("audio/mp4", Optional, &[&[sniff::AAC_ADTS], ISO_MEDIA_FAMILY]),
    ("audio/mpeg", Optional, &[MPEG]),
    ("audio/amr", Optional, &[&[sniff::AMR]]),
    ("audio/ogg", Required, &[OGG_AUDIO]),
    ("audio/opus", Required, &[OGG_AUDIO]),
    ("application/vnd.ms-powerpoint", Required, &[OLE_DOCUMENTS]),
    ("application/msword", Required, &[OLE_DOCUMENTS]),
    (sniff::DOCX, Required, &[DOCX]),
    (sniff::PPTX, Required, &[PPTX]),
    (sniff::XLSX, Required, &[XLSX]),
    ("application/pdf", Required, &[&[sniff::PDF]]),
    ("text/plain", Optional, &[TEXT]),
    ("application/vnd.ms-excel", Required, &[OLE_DOCUMENTS]),
    ("image/jpeg", Required, &[&["image/jpeg"]]),
    ("image/png", Required, &[&["image/png"]]),
    ("image/webp", Required, &[&["image/webp"]]),
    ("video/mp4", Required, &[ISO_MEDIA_FAMILY]),
    ("video/3gpp", Required, &[ISO_MEDIA_FAMILY]),
];

/// Checks the first bytes of a file (at most `SNIFF_LEN`; all of a shorter
/// file) against its declared type.
pub fn check_content(declared: &str, head: &[u8]) -> Result<(), UploadError> {
    let detected = sniff::sniff(head);
    let row = AGREEMENTS.iter().find(|(row_type, ..)| *row_type == declared);
    let agrees = match (row, detected) {
        (Some((_, _, groups)), Some(found)) => groups.iter().any(|group| group.contains(&found)),
        (Some((_, signature, _)), None) => *signature == Optional,
        (None, found) => agrees_with_unlisted(declared, found),
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

/// A type an operator added has no row: anything agrees with it but a
/// recognisably different type. Plain text is not recognisably different,
/// having no signature (JSON, CSV and subtitles are text); XML agrees with
/// the XML types (application/xml, image/svg+xml); and the same subtype
/// under another top-level type is one format (audio/3gpp, video/3gpp).
fn agrees_with_unlisted(declared: &str, found: Option<&str>) -> bool {
    let Some(found) = found else {
        return true;
    };
    found == declared
        || found == sniff::PLAIN_TEXT
        || (found == sniff::XML && declared.ends_with("xml"))
        || subtype(declared).is_some() && subtype(found) == subtype(declared)
}

fn subtype(mime: &str) -> Option<&str> {
    mime.split_once('/').map(|(_, subtype)| subtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(allowed: Option<&str>) -> App {
        App {
            id: crate::AppId::new("a"),
            name: "a".into(),
            capi: true,
            retention: std::time::Duration::from_secs(1),
            max_file_bytes: 1,
            allowed_types: allowed.map(|list| list.split(',').map(|t| t.trim().to_owned()).collect()),
            uploads_per_second: None,
            max_bytes_stored: None,
            max_media: None,
            wa_type_limits: None,
            created_at: 0,
        }
    }

    #[test]
    fn whatsapp_limits_are_metas_unless_the_app_sets_its_own() {
        let mut a = app(None);
        let limits = a.whatsapp_limits();
        assert_eq!(limits.len(), 18);
        assert_eq!(
            limits[0],
            TypeLimit {
                mime_type: "audio/aac".into(),
                max_bytes: 16_777_216
            }
        );
        assert_eq!(a.whatsapp_limit("image/jpeg"), Some(5_242_880));
        assert_eq!(a.whatsapp_limit(" Image/PNG "), Some(5_242_880));
        assert_eq!(a.whatsapp_limit("image/webp"), Some(102_400));
        assert_eq!(a.whatsapp_limit("application/pdf"), Some(104_857_600));
        assert_eq!(a.whatsapp_limit(sniff::PPTX), Some(104_857_600));
        assert_eq!(a.whatsapp_limit("video/mp4"), Some(16_777_216));
        assert_eq!(a.whatsapp_limit("audio/opus"), None, "not on Meta's list");
        assert_eq!(a.whatsapp_limit("image/gif"), None);

        let own = vec![
            TypeLimit {
                mime_type: "image/gif".into(),
                max_bytes: 10,
            },
            TypeLimit {
                mime_type: "image/jpeg".into(),
                max_bytes: 20,
            },
        ];
        a.wa_type_limits = Some(own.clone());
        assert_eq!(a.whatsapp_limits(), own);
        assert_eq!(a.whatsapp_limit("IMAGE/GIF"), Some(10));
        assert_eq!(a.whatsapp_limit("image/jpeg"), Some(20));
        assert_eq!(
            a.whatsapp_limit("image/png"),
            None,
            "the app's list replaces Meta's"
        );
    }

    /// Every type Meta lists has a row in the content policy, so that the
    /// WhatsApp surface checks its content as the Gupshup surface does.
    #[test]
    fn every_whatsapp_type_is_checked_by_content() {
        for (mime_type, _) in WHATSAPP_TYPE_LIMITS {
            assert!(
                AGREEMENTS.iter().any(|(declared, ..)| declared == mime_type),
                "{mime_type}"
            );
        }
    }

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
    fn every_default_type_has_one_row() {
        let declared: Vec<&str> = AGREEMENTS.iter().map(|(declared, ..)| *declared).collect();
        assert_eq!(declared, DEFAULT_ALLOWED_TYPES);
    }

    // Real files of every type, and the whole matrix of declarations, are
    // in tests/sniffing.rs; these are the cases no sample file shows.
    #[test]
    fn unrecognised_bytes_pass_only_where_no_signature_is_required() {
        let noise = b"\x00\x01\x02\x03 not any format";
        assert!(check_content("audio/mpeg", noise).is_ok());
        assert!(check_content("text/plain", noise).is_ok());
        assert!(matches!(
            check_content("image/jpeg", noise),
            Err(UploadError::ContentMismatch { declared, detected })
                if declared == "image/jpeg" && detected == "unrecognised data"
        ));
    }

    #[test]
    fn a_type_an_operator_added_refuses_only_other_known_types() {
        let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00";
        assert!(check_content("image/gif", gif).is_ok());
        assert!(check_content("image/gif", b"\x00\x01 unknown").is_ok());
        assert!(matches!(
            check_content("image/gif", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Err(UploadError::ContentMismatch { detected, .. }) if detected == "image/png"
        ));
        assert!(check_content("application/json", "{\"city\": \"Zürich\"}".as_bytes()).is_ok());
        assert!(check_content("image/svg+xml", b"<?xml version=\"1.0\"?>\n<svg/>").is_ok());
        assert!(check_content("image/gif", b"<?xml version=\"1.0\"?>\n<svg/>").is_err());
        let three_gpp = b"\0\0\0\x1cftyp3gp4\0\0\x02\x003gp4isomiso2";
        assert!(check_content("audio/3gpp", three_gpp).is_ok());
        assert!(check_content("audio/wav", three_gpp).is_err());
    }
}
