// One file's round trip through a WhatsApp Cloud API media surface, driven by
// a public client library used as its users use it: @great-detail/whatsapp,
// pointed at the server by its `prefixUrl` option and nothing else, and only
// its public media calls (upload, getURL, download, delete).
//
// Uploads the file, reads its URL and metadata, downloads it through that URL,
// checks that the id, MIME type, sha256 and size all match the file, deletes
// it, and checks that reading it again fails with the Graph error code 100.
// Prints a JSON summary on stdout (every check, what the server answered, the
// first unexpected failure) and exits 1 if anything did not match.
//
//   node whatsapp_cloud.mjs --base-url http://127.0.0.1:PORT \
//     --phone-number-id 123456789012345 --file photo.jpg [--mime-type image/jpeg] \
//     [--graph-version v23.0] [--downloaded-to copy.jpg]
//
// scripts/client-tools.sh installs the library first (`make test` runs it).
// The token comes from WHATSAPP_TOKEN (kept out of the process list); every
// option can also come from the environment: WHATSAPP_BASE_URL,
// WHATSAPP_PHONE_NUMBER_ID, WHATSAPP_FILE, WHATSAPP_MIME_TYPE,
// WHATSAPP_GRAPH_VERSION, WHATSAPP_DOWNLOADED_TO.

import Client from "@great-detail/whatsapp";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { basename, dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** MIME types by extension, for files given without --mime-type. */
const MIME_TYPES = {
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".png": "image/png",
  ".webp": "image/webp",
  ".pdf": "application/pdf",
  ".txt": "text/plain",
  ".mp4": "video/mp4",
  ".ogg": "audio/ogg",
};

/** The Graph error of an unknown (or deleted) object: code 100, subcode 33. */
const UNKNOWN_OBJECT = { code: 100, subcode: 33 };

const { values: args } = parseArgs({
  options: {
    "base-url": { type: "string", default: process.env.WHATSAPP_BASE_URL },
    "phone-number-id": { type: "string", default: process.env.WHATSAPP_PHONE_NUMBER_ID },
    file: { type: "string", default: process.env.WHATSAPP_FILE },
    "mime-type": { type: "string", default: process.env.WHATSAPP_MIME_TYPE },
    "graph-version": { type: "string", default: process.env.WHATSAPP_GRAPH_VERSION ?? "v23.0" },
    "downloaded-to": { type: "string", default: process.env.WHATSAPP_DOWNLOADED_TO },
  },
});
const token = process.env.WHATSAPP_TOKEN;
const baseUrl = args["base-url"];
const phoneNumberID = args["phone-number-id"];
const file = args.file;
const mimeType = args["mime-type"] ?? MIME_TYPES[extname(file ?? "").toLowerCase()];
for (const [name, value] of [
  ["--base-url (or WHATSAPP_BASE_URL)", baseUrl],
  ["WHATSAPP_TOKEN", token],
  ["--phone-number-id (or WHATSAPP_PHONE_NUMBER_ID)", phoneNumberID],
  ["--file (or WHATSAPP_FILE)", file],
  ["--mime-type (no type is known for this file's extension)", mimeType],
]) {
  if (!value) {
    console.error(`whatsapp_cloud: missing ${name}`);
    process.exit(2);
  }
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** The installed library's name and version, read from its own package.json. */
function library() {
  let dir = dirname(fileURLToPath(import.meta.resolve("@great-detail/whatsapp")));
  for (;;) {
    try {
      const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
      if (manifest.name === "@great-detail/whatsapp") {
        return { name: manifest.name, version: manifest.version };
      }
    } catch {
      // no package.json at this level
    }
    if (dirname(dir) === dir) return { name: "@great-detail/whatsapp", version: "unknown" };
    dir = dirname(dir);
  }
}

const bytes = readFileSync(file);
const summary = {
  library: library(),
  baseUrl,
  graphVersion: args["graph-version"],
  phoneNumberId: phoneNumberID,
  file: { path: file, mimeType, bytes: bytes.length, sha256: sha256(bytes) },
  checks: [],
  failures: [],
};

/** Records one comparison; a mismatch is a failure, and the run goes on. */
function check(name, actual, expected) {
  record(name, actual === expected, actual, expected);
}

/** `check` for a property of `actual` that `expected` describes in words. */
function checkThat(name, actual, holds, expected) {
  record(name, holds(actual), actual, expected);
}

function record(name, ok, actual, expected) {
  summary.checks.push({ name, ok, actual, expected });
  if (!ok) summary.failures.push(`${name}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
}

/** What a failed call answered: the library's error with the HTTP response it carries. */
async function describe(error) {
  const described = { name: error?.name, message: error?.message };
  // fetch hides why a connection failed in the error's cause.
  if (error?.cause) described.cause = String(error.cause.message ?? error.cause);
  const response = error?.response;
  if (response) {
    described.status = response.status;
    const text = await response.text().catch(() => "");
    try {
      described.body = JSON.parse(text);
    } catch {
      described.body = text;
    }
  }
  return described;
}

/** Runs one step; an unexpected failure ends the run with what the server said. */
async function step(name, call) {
  try {
    return await call();
  } catch (error) {
    summary.failed = { step: name, ...(await describe(error)) };
    summary.failures.push(`${name} failed: ${error?.message}`);
    finish();
  }
}

function finish() {
  summary.ok = summary.failures.length === 0;
  console.log(JSON.stringify(summary, null, 2));
  process.exit(summary.ok ? 0 : 1);
}

const sdk = new Client({
  prefixUrl: baseUrl,
  graphVersion: args["graph-version"],
  request: { headers: { Authorization: `Bearer ${token}` } },
});

const uploaded = await step("upload", () =>
  sdk.media
    .upload({
      phoneNumberID,
      file: new Blob([bytes], { type: mimeType }),
      filename: basename(file),
      mimeType,
    })
    .json(),
);
summary.upload = uploaded;
const mediaID = uploaded.id;
checkThat("upload: id", mediaID, (id) => /^[0-9]{16,19}$/.test(id ?? ""), "a decimal string of 16 to 19 digits");

const media = await step("getURL", () => sdk.media.getURL({ mediaID, phoneNumberID }).json());
summary.media = media;
check("getURL: messaging_product", media.messaging_product, "whatsapp");
check("getURL: id", media.id, mediaID);
check("getURL: mime_type", media.mime_type, mimeType);
check("getURL: sha256", media.sha256, summary.file.sha256);
// Meta documents file_size both as a string and as a number; the library's
// type allows both.
check("getURL: file_size", Number(media.file_size), bytes.length);
checkThat("getURL: url", media.url, (url) => /^https?:\/\//.test(url ?? ""), "an absolute http(s) URL");

const downloaded = await step("download", async () => {
  const response = await sdk.media.download({ mediaURL: media.url });
  return {
    status: response.status,
    contentType: response.headers.get("content-type"),
    bytes: Buffer.from(await response.arrayBuffer()),
  };
});
summary.download = {
  status: downloaded.status,
  contentType: downloaded.contentType,
  bytes: downloaded.bytes.length,
  sha256: sha256(downloaded.bytes),
};
if (args["downloaded-to"]) writeFileSync(args["downloaded-to"], downloaded.bytes);
check("download: Content-Type", downloaded.contentType?.split(";")[0].trim(), mimeType);
check("download: size", downloaded.bytes.length, bytes.length);
check("download: sha256", summary.download.sha256, summary.file.sha256);

const deleted = await step("delete", () => sdk.media.delete({ mediaID, phoneNumberID }).json());
summary.delete = deleted;
check("delete: success", deleted.success, true);

// After the delete the id is unknown: the library fails with the server's
// Graph error. (Asked without phone_number_id, the other form of the call.)
try {
  const after = await sdk.media.getURL({ mediaID }).json();
  summary.afterDelete = { answered: after };
  summary.failures.push("getURL after delete succeeded");
} catch (error) {
  const described = await describe(error);
  summary.afterDelete = described;
  const graph = described.body?.error ?? {};
  check("getURL after delete: the library's error", described.name, "HTTPError");
  check("getURL after delete: HTTP status", described.status, 400);
  check("getURL after delete: error.code", graph.code, UNKNOWN_OBJECT.code);
  check("getURL after delete: error.error_subcode", graph.error_subcode, UNKNOWN_OBJECT.subcode);
  checkThat(
    "getURL after delete: error.type",
    graph.type,
    (type) => ["GraphMethodException", "OAuthException"].includes(type),
    "GraphMethodException or OAuthException",
  );
  const unknown = `Unsupported get request. Object with ID '${mediaID}' does not exist`;
  checkThat(
    "getURL after delete: error.message",
    graph.message,
    (message) => typeof message === "string" && message.startsWith(unknown),
    `${unknown}, …`,
  );
  checkThat("getURL after delete: error.fbtrace_id", graph.fbtrace_id, (id) => typeof id === "string" && id !== "", "a string");
}

finish();
