//! The upload policy against real files (tests/samples, made by the tools
//! its README names): every sample declared as every default type, each
//! pair accepted or refused as the table below says.

use std::path::PathBuf;

use mediavault_storage::UploadError;
use mediavault_storage::policy::{DEFAULT_ALLOWED_TYPES, SNIFF_LEN, check_content};

const AAC: &str = "audio/aac";
const MP4_AUDIO: &str = "audio/mp4";
const MPEG: &str = "audio/mpeg";
const AMR: &str = "audio/amr";
const OGG: &str = "audio/ogg";
const OPUS: &str = "audio/opus";
const PPT: &str = "application/vnd.ms-powerpoint";
const DOC: &str = "application/msword";
const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
const PPTX: &str = "application/vnd.openxmlformats-officedocument.presentationml.presentation";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
const PDF: &str = "application/pdf";
const TEXT: &str = "text/plain";
const XLS: &str = "application/vnd.ms-excel";
const JPEG: &str = "image/jpeg";
const PNG: &str = "image/png";
const WEBP: &str = "image/webp";
const MP4: &str = "video/mp4";
const THREE_GPP: &str = "video/3gpp";

const OLE_DOCUMENTS: &[&str] = &[PPT, DOC, XLS];

struct Sample {
    file: &'static str,
    /// What the message of a refusal calls the content.
    detected: &'static str,
    /// The default types it is accepted as, its own first; it is refused
    /// as all others.
    accepted_as: &'static [&'static str],
}

const fn sample(file: &'static str, detected: &'static str, accepted_as: &'static [&'static str]) -> Sample {
    Sample {
        file,
        detected,
        accepted_as,
    }
}

const SAMPLES: &[Sample] = &[
    // Audio.
    sample("aac-adts.aac", "audio/aac", &[AAC, MP4_AUDIO]),
    sample("aac-adts-id3.aac", "audio/aac", &[AAC, MP4_AUDIO]),
    sample("aac.m4a", "audio/m4a", &[MP4_AUDIO, AAC, MP4, THREE_GPP]),
    sample("mp3-id3.mp3", "audio/mpeg", &[MPEG]),
    sample("mp3-mpeg25.mp3", "audio/mpeg", &[MPEG]),
    sample("mp3-one-frame.mp3", "audio/mpeg", &[MPEG]),
    sample("amr-nb.amr", "audio/amr", &[AMR]),
    sample("vorbis.ogg", "audio/ogg", &[OGG, OPUS]),
    sample("opus.opus", "audio/opus", &[OPUS, OGG]),
    // Office 97–2003: OLE files, interchangeable.
    sample("libreoffice.ppt", PPT, &[PPT, DOC, XLS]),
    sample("libreoffice.doc", DOC, &[DOC, PPT, XLS]),
    sample("libreoffice.xls", XLS, &[XLS, PPT, DOC]),
    // Office Open XML: ZIPs, told apart by their entries.
    sample("libreoffice.docx", DOCX, &[DOCX]),
    sample("python-docx.docx", DOCX, &[DOCX]),
    sample("libreoffice.pptx", PPTX, &[PPTX]),
    sample("python-pptx.pptx", PPTX, &[PPTX]),
    sample("libreoffice.xlsx", XLSX, &[XLSX]),
    sample("openpyxl.xlsx", XLSX, &[XLSX]),
    // Password-protected: an OLE file whose kind cannot be seen.
    sample(
        "msoffcrypto-encrypted.docx",
        "application/x-ole-storage",
        &[DOCX, PPT, DOC, PPTX, XLSX, XLS],
    ),
    sample("libreoffice.pdf", PDF, &[PDF]),
    sample("utf8.txt", TEXT, &[TEXT]),
    sample("testsrc.jpg", JPEG, &[JPEG]),
    sample("testsrc.png", PNG, &[PNG]),
    sample("testsrc.webp", WEBP, &[WEBP]),
    sample("h264-aac.mp4", "video/mp4", &[MP4, AAC, MP4_AUDIO, THREE_GPP]),
    sample("h263-aac.3gp", "video/3gpp", &[THREE_GPP, AAC, MP4_AUDIO, MP4]),
    // Contradicting content.
    sample("exit.elf", "application/x-executable", &[]),
    sample("exit.exe", "application/vnd.microsoft.portable-executable", &[]),
    sample("exit-macho.o", "application/x-mach-binary", &[]),
    sample("wixl.msi", "application/x-msi", &[]),
    sample("plain.zip", "application/zip", &[]),
    sample("libreoffice.odt", "application/vnd.oasis.opendocument.text", &[]),
    sample("utf8.txt.gz", "application/gzip", &[]),
    sample("script.sh", "text/x-shellscript", &[]),
    // Markup is text.
    sample("script.html", "text/html", &[TEXT]),
];

fn read(file: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/samples")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What an upload hands the policy: the first `SNIFF_LEN` bytes.
fn head(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(SNIFF_LEN)]
}

#[test]
fn every_sample_as_every_default_type() {
    let mut wrong = Vec::new();
    for sample in SAMPLES {
        let bytes = read(sample.file);
        for &declared in DEFAULT_ALLOWED_TYPES {
            let verdict = check_content(declared, head(&bytes));
            let expected = sample.accepted_as.contains(&declared);
            match verdict {
                Ok(()) if expected => {}
                Err(UploadError::ContentMismatch {
                    declared: named_declared,
                    detected,
                }) if !expected && named_declared == declared && detected == sample.detected => {}
                other => wrong.push(format!(
                    "{} as {declared}: expected {}, got {other:?}",
                    sample.file,
                    if expected { "acceptance" } else { "refusal" }
                )),
            }
        }
    }
    assert!(wrong.is_empty(), "{} wrong:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn every_default_type_has_a_sample() {
    for &declared in DEFAULT_ALLOWED_TYPES {
        assert!(
            SAMPLES.iter().any(|s| s.accepted_as.first() == Some(&declared)),
            "no sample of {declared}"
        );
    }
}

#[test]
fn every_sample_file_is_listed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name == "README.md" || SAMPLES.iter().any(|s| s.file == name),
            "{name} is not in SAMPLES"
        );
    }
}

/// The class id that tells Word from Excel from PowerPoint sits in the
/// directory, which a large file keeps beyond the head: the kind is not
/// needed to accept an OLE document.
#[test]
fn ole_documents_pass_without_their_directory() {
    for file in ["libreoffice.doc", "libreoffice.xls", "libreoffice.ppt"] {
        let bytes = read(file);
        for &declared in OLE_DOCUMENTS {
            assert!(
                check_content(declared, &bytes[..4096]).is_ok(),
                "{file} as {declared}"
            );
        }
        assert!(check_content(PNG, &bytes[..4096]).is_err());
    }
}
