//! What the first bytes of a file are: the `infer` crate's answer, corrected
//! where it is known to be wrong or silent for the types uploads may declare.
//!
//! The answers are MIME types, or a short description where no MIME type
//! fits (`ID3_TAGGED_AUDIO`, `OOXML_OF_UNKNOWN_KIND`); they appear in the
//! message of a refused upload.

pub const PLAIN_TEXT: &str = "text/plain";
pub const HTML: &str = "text/html";
pub const XML: &str = "text/xml";
pub const SHELL_SCRIPT: &str = "text/x-shellscript";
pub const PDF: &str = "application/pdf";
pub const ZIP: &str = "application/zip";
pub const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
pub const PPTX: &str = "application/vnd.openxmlformats-officedocument.presentationml.presentation";
/// A ZIP that shows the Office Open XML package parts (`[Content_Types].xml`,
/// `_rels/`, `docProps/`) but none of `word/`, `xl/`, `ppt/` within the head.
pub const OOXML_OF_UNKNOWN_KIND: &str = "Office Open XML document";
/// An OLE compound file whose kind the head does not tell (infer's name).
pub const OLE: &str = "application/x-ole-storage";
pub const DOC: &str = "application/msword";
pub const XLS: &str = "application/vnd.ms-excel";
pub const PPT: &str = "application/vnd.ms-powerpoint";
/// A Windows Installer package: an OLE file, but a program, not a document.
pub const WINDOWS_INSTALLER: &str = "application/x-msi";
pub const AMR: &str = "audio/amr";
pub const AAC_ADTS: &str = "audio/aac";
pub const MPEG_AUDIO: &str = "audio/mpeg";
/// An ID3v2 tag whose audio starts beyond the head or in a form the
/// sniffer does not name. MP3 and ADTS AAC files both carry ID3 tags.
pub const ID3_TAGGED_AUDIO: &str = "ID3-tagged audio";
pub const OGG: &str = "audio/ogg";
pub const OGG_OPUS: &str = "audio/opus";
pub const M4A: &str = "audio/m4a";
pub const MP4: &str = "video/mp4";
pub const M4V: &str = "video/x-m4v";
pub const QUICKTIME: &str = "video/quicktime";
pub const THREE_GPP: &str = "video/3gpp";
pub const THREE_GPP2: &str = "video/3gpp2";
/// An ISO base media file with a brand infer does not list (RFC 4337).
pub const ISO_MEDIA: &str = "application/mp4";
pub const HEIF: &str = "image/heif";

/// Whether `head` starts an animated WebP: a RIFF `WEBP` file whose
/// extended header (`VP8X`, the first chunk) sets its animation flag.
pub fn is_animated_webp(head: &[u8]) -> bool {
    head.len() > 20
        && head.starts_with(b"RIFF")
        && &head[8..16] == b"WEBPVP8X"
        && head[20] & ANIMATION_FLAG != 0
}

/// The animation bit of a `VP8X` chunk's flags (Reserved 2, ICC, Alpha,
/// EXIF, XMP, Animation, Reserved 1, from the high bit down).
const ANIMATION_FLAG: u8 = 0b0000_0010;

/// What `head`, the first bytes of a file (all of it when short), is; `None`
/// when nothing is recognised.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    // infer knows only AMR-NB's "#!AMR\n"; AMR-WB ("#!AMR-WB\n") and
    // multichannel AMR would be taken for shell scripts.
    if head.starts_with(b"#!AMR") {
        return Some(AMR);
    }
    if after_id3_tag(head).is_some() {
        // Tags may follow one another. They are skipped in a loop, not a
        // call each: a head of empty tags would nest thousands of calls
        // deep, on a worker thread's stack.
        let mut audio = head;
        while let Some(after_tag) = after_id3_tag(audio) {
            audio = after_tag;
        }
        return Some(match sniff(audio) {
            Some(audio @ (MPEG_AUDIO | AAC_ADTS)) => audio,
            _ => ID3_TAGGED_AUDIO,
        });
    }
    let found = infer::get(head).map(|kind| kind.mime_type());
    if is_text(head) {
        // Many of infer's signatures are a few ASCII letters ("BC" for LLVM
        // bitcode, "MAC " for Monkey's Audio, "BZh" for bzip2, "WEBP" at
        // byte 8): in text they are words, not signatures. The formats kept
        // are those that are text themselves.
        return Some(match found {
            Some(kind @ (PDF | HTML | XML | SHELL_SCRIPT)) => kind,
            _ => PLAIN_TEXT,
        });
    }
    if head.starts_with(b"PK\x03\x04") {
        if let Some(kind) = ooxml_kind(head) {
            return Some(kind);
        }
        // infer's own Office Open XML guess is only trusted where the entry
        // names confirm it; OpenDocument, EPUB and the like it tells right.
        return match found {
            Some(DOCX | XLSX | PPTX) => Some(ZIP),
            other => other,
        };
    }
    if matches!(found, Some(OLE | DOC | XLS | PPT)) && is_windows_installer(head) {
        return Some(WINDOWS_INSTALLER);
    }
    if found.is_none() {
        if is_mpeg_audio_frame(head) {
            return Some(MPEG_AUDIO);
        }
        return iso_media_kind(head);
    }
    found
}

/// Whether the head reads as UTF-8 text: no bytes outside UTF-8 (a
/// sequence cut off by the end of the head is fine) and no control
/// characters but tab, line breaks, form feed and escape.
fn is_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    valid
        && !head.is_empty()
        && !head
            .iter()
            .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | 0x1B))
}

/// The bytes after an ID3v2 tag at the start of `head`, when there is one
/// (empty when the tag runs past the head). infer stops at the tag and
/// calls everything behind it MP3, AAC included.
fn after_id3_tag(head: &[u8]) -> Option<&[u8]> {
    // Versions 2.2 to 2.4: a text that begins with "ID3" is no tag.
    let header = head
        .get(..10)
        .filter(|h| h.starts_with(b"ID3") && matches!(h[3], 2..=4))?;
    // The size is 28 bits, seven to a byte; a footer of 10 bytes may follow.
    let size = header[6..10]
        .iter()
        .fold(0usize, |size, &b| (size << 7) | usize::from(b & 0x7F));
    let footer = if header[5] & 0x10 != 0 { 10 } else { 0 };
    Some(head.get(10 + size + footer..).unwrap_or_default())
}

/// The Office Open XML kind of a ZIP, read from the names of its entries.
///
/// A ZIP's table of contents is at its end, out of reach of the head; but
/// each entry is preceded by a local header with its name. Writers order
/// entries differently (Word: `[Content_Types].xml` first; LibreOffice:
/// `_rels/.rels` first and `[Content_Types].xml` last; openpyxl:
/// `docProps/app.xml` first), and infer 0.22 looks only at the first and
/// third names, so it calls the documents of LibreOffice and python-docx
/// plain ZIPs. Hence this walk over every local header within the head;
/// the first part folder seen (`word/`, `xl/`, `ppt/`) gives the kind.
///
/// Hand-written rather than a ZIP crate: those read the table of contents
/// at the end of a whole file, and here only a prefix is at hand.
fn ooxml_kind(head: &[u8]) -> Option<&'static str> {
    let mut at = 0usize;
    let mut package_part_seen = false;
    while let Some(header) = head.get(at..at.saturating_add(30)) {
        if !header.starts_with(b"PK\x03\x04") {
            break;
        }
        let flags = u16::from_le_bytes([header[6], header[7]]);
        let compressed = u32::from_le_bytes([header[18], header[19], header[20], header[21]]);
        let name_len = usize::from(u16::from_le_bytes([header[26], header[27]]));
        let extra_len = usize::from(u16::from_le_bytes([header[28], header[29]]));
        let Some(name) = head.get(at + 30..at + 30 + name_len) else {
            break;
        };
        for (folder, kind) in [(&b"word/"[..], DOCX), (b"xl/", XLSX), (b"ppt/", PPTX)] {
            if name.starts_with(folder) {
                return Some(kind);
            }
        }
        package_part_seen |=
            name == b"[Content_Types].xml" || name.starts_with(b"_rels/") || name.starts_with(b"docProps/");
        let data = at + 30 + name_len + extra_len;
        // Bit 3: the sizes follow the data instead (streamed writers);
        // 0xFFFFFFFF: the size is in a ZIP64 extra field. Either way the
        // next entry is found by its signature.
        at = if flags & 0x08 == 0 && compressed != u32::MAX {
            data.saturating_add(compressed as usize)
        } else {
            match head.get(data..).and_then(|rest| find(rest, b"PK\x03\x04")) {
                Some(offset) => data + offset,
                None => break,
            }
        };
    }
    package_part_seen.then_some(OOXML_OF_UNKNOWN_KIND)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether an OLE compound file is a Windows Installer package (.msi, .msp,
/// .mst), by the class id of its root storage, when the directory sector
/// that holds it lies within the head. infer calls these generic OLE
/// storage, the same as documents it cannot place.
fn is_windows_installer(head: &[u8]) -> bool {
    // {000C1084-, {000C1086-, {000C1082-0000-0000-C000-000000000046}, as stored.
    const INSTALLER_CLASS_TAIL: &[u8] = b"\x0C\x00\x00\x00\x00\x00\xC0\x00\x00\x00\x00\x00\x00\x46";
    let Some(&[shift_low, shift_high]) = head.get(0x1E..0x20) else {
        return false;
    };
    let Some(&[a, b, c, d]) = head.get(0x30..0x34) else {
        return false;
    };
    let shift = u16::from_le_bytes([shift_low, shift_high]);
    // Sector sizes are 512 or 4096 bytes; anything else is not a header.
    if shift != 9 && shift != 12 {
        return false;
    }
    // The header fills sector -1; the root is the directory's first entry,
    // with its class id 0x50 bytes in.
    let class_id = (u32::from_le_bytes([a, b, c, d]) as usize)
        .checked_add(1)
        .and_then(|sectors| sectors.checked_mul(1 << shift))
        .and_then(|root_entry| head.get(root_entry.checked_add(0x50)?..root_entry.checked_add(0x60)?));
    match class_id {
        Some(class_id) => {
            matches!(class_id[0..2], [0x84 | 0x86 | 0x82, 0x10]) && class_id[2..] == *INSTALLER_CLASS_TAIL
        }
        None => false,
    }
}

/// Whether `head` starts with an MPEG audio Layer II or III frame header
/// (MP2, MP3 without an ID3 tag). infer knows three of its sync patterns
/// (0xFFFB, 0xFFF3, 0xFFF2), missing MPEG 2.5 (the low sample rates) and
/// MPEG-1 with a checksum. Layer I is left out: its header can read 0xFFFE,
/// the byte order mark of UTF-16 text.
fn is_mpeg_audio_frame(head: &[u8]) -> bool {
    let Some(&[0xFF, b1, b2]) = head.get(..3) else {
        return false;
    };
    let sync = b1 & 0xE0 == 0xE0;
    let version = (b1 >> 3) & 0b11; // 0b01 is reserved
    let layer = (b1 >> 1) & 0b11; // 0b01: Layer III, 0b10: Layer II
    let bitrate = b2 >> 4; // 0b1111 is invalid
    let sample_rate = (b2 >> 2) & 0b11; // 0b11 is reserved
    sync && version != 0b01 && matches!(layer, 0b01 | 0b10) && bitrate != 0b1111 && sample_rate != 0b11
}

/// ISO base media files (MP4's family) that infer leaves unnamed: it lists
/// only some major brands, and 3GPP's ("3gp4", "3gp5", "3g2a"…) are not
/// among them.
fn iso_media_kind(head: &[u8]) -> Option<&'static str> {
    if head.get(4..8)? != b"ftyp" {
        return None;
    }
    let brand = head.get(8..12)?;
    Some(match brand {
        [b'3', b'g', b'2', _] => THREE_GPP2,
        [b'3', b'g', _, _] => THREE_GPP,
        b"mif1" | b"msf1" | b"heic" | b"heix" | b"hevc" | b"hevx" | b"avif" | b"avis" => HEIF,
        _ => ISO_MEDIA,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `VP8X` header with its flags byte set to `flags`.
    fn extended_webp(flags: u8) -> Vec<u8> {
        let mut head = b"RIFF\x00\x10\x00\x00WEBPVP8X\x0a\x00\x00\x00".to_vec();
        head.extend_from_slice(&[flags, 0, 0, 0, 0x3f, 0, 0, 0x3f, 0, 0]);
        head
    }

    #[test]
    fn an_animated_webp_is_told_by_its_extended_header() {
        assert!(is_animated_webp(&extended_webp(0b0000_0010)));
        assert!(is_animated_webp(&extended_webp(0b0001_0010)), "with alpha too");
        assert!(!is_animated_webp(&extended_webp(0b0001_0000)), "alpha alone");
        let simple = b"RIFF\x00\x10\x00\x00WEBPVP8 \x0a\x00\x00\x00\x02\x00\x00\x00";
        assert!(!is_animated_webp(simple), "a simple (lossy) WebP");
        assert!(!is_animated_webp(&extended_webp(0b10)[..20]), "cut short");
    }

    #[test]
    fn id3_tag_is_skipped_to_the_audio_behind_it() {
        let mut adts = b"ID3\x04\x00\x00\x00\x00\x00\x02\xAA\xBB".to_vec();
        adts.extend_from_slice(b"\xFF\xF1\x50\x80\x02\x1F\xFC");
        assert_eq!(sniff(&adts), Some(AAC_ADTS));
        // The tag claims 2^21 bytes: its audio lies beyond the head.
        assert_eq!(
            sniff(b"ID3\x03\x00\x00\x01\x00\x00\x00more tag"),
            Some(ID3_TAGGED_AUDIO)
        );
        // Tags after tags, then the audio.
        let mut tagged = b"ID3\x04\x00\x00\x00\x00\x00\x00".repeat(3);
        tagged.extend_from_slice(&adts[12..]);
        assert_eq!(sniff(&tagged), Some(AAC_ADTS));
    }

    /// A head of 64 KiB may hold 6,553 empty tags: they are skipped without
    /// a stack frame each (on a small stack here, as an uploads' worker
    /// thread has a bounded one).
    #[test]
    fn a_head_of_empty_tags_is_read_on_a_small_stack() {
        let head = b"ID3\x04\x00\x00\x00\x00\x00\x00".repeat(6_553);
        let kind = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || sniff(&head))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(kind, Some(ID3_TAGGED_AUDIO));
    }

    #[test]
    fn mpeg_audio_frames_are_told_from_adts_and_utf16() {
        assert_eq!(sniff(b"\xFF\xE3\x28\xC4\x00"), Some(MPEG_AUDIO)); // MPEG 2.5 Layer III
        assert_eq!(sniff(b"\xFF\xFD\x90\x64\x00"), Some(MPEG_AUDIO)); // MPEG-1 Layer II
        assert_eq!(sniff(b"\xFF\xF1\x50\x80\x02"), Some(AAC_ADTS));
        assert_eq!(sniff(b"\xFF\xF0\x50\x80\x02"), None); // ADTS with a checksum
        assert_eq!(
            sniff(
                "\u{FEFF}Hi"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect::<Vec<_>>()
                    .as_slice()
            ),
            None
        );
    }

    #[test]
    fn amr_wideband_is_audio_not_a_script() {
        assert_eq!(sniff(b"#!AMR-WB\n\x04\x10\x20\x00\x00\x7f"), Some(AMR));
        assert_eq!(sniff(b"#!/bin/sh\necho hi\n"), Some(SHELL_SCRIPT));
    }

    #[test]
    fn ascii_signatures_in_text_are_words() {
        // infer: LLVM bitcode, Monkey's Audio, bzip2, WebP.
        for text in [
            "BCC: the whole team\n",
            "MAC addresses: 00:1a:2b\n",
            "BZh, said the bee\n",
            "Subject WEBP images\n",
        ] {
            assert_eq!(sniff(text.as_bytes()), Some(PLAIN_TEXT), "{text}");
        }
        assert_eq!(sniff(b"ID3 tags name the artist\n"), Some(PLAIN_TEXT));
        assert_eq!(sniff(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n"), Some(PDF));
        assert_eq!(sniff("naïve café\n".as_bytes()), Some(PLAIN_TEXT));
        // Latin-1 is not UTF-8: such a head is left to infer.
        assert_eq!(sniff(b"na\xefve caf\xe9\n"), None);
    }

    #[test]
    fn malformed_containers_do_not_panic() {
        let mut ole = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1".to_vec();
        ole.resize(0x40, 0xFF);
        ole[0x1E] = 9;
        ole[0x1F] = 0;
        assert!(!is_windows_installer(&ole));
        let zip =
            b"PK\x03\x04\x14\x00\x08\x00\x08\x00\0\0\0\0\0\0\0\0\xFF\xFF\xFF\xFF\0\0\0\0\xFF\xFF\xFF\xFFword";
        assert_eq!(ooxml_kind(zip), None);
        assert_eq!(sniff(b"ID3\x04\x00\x10\x7F\x7F\x7F\x7F"), Some(ID3_TAGGED_AUDIO));
        assert_eq!(sniff(b"\0\0\0\x10ftyp"), None);
    }
}
