# Sourced by the bench scripts as `. bench/server-env.sh BIN WORK BACKEND`:
# points `mediavault` at a fresh key, a SQLite database under WORK, and blobs
# in WORK/blobs (BACKEND files) or in a fresh prefix (`bench-<pid>`) of the
# Garage test bucket (BACKEND s3), starting the test services if need be;
# then migrates the database and makes an app and its token ($app, $token).
export MEDIAVAULT__CRYPTO__KEYS=$("$1" keys generate --id bench | sed 's/.*"key":"\([^"]*\)".*/\1/')
export MEDIAVAULT__DATABASE__URL="sqlite://$2/mv.db"
if [ "$3" = s3 ]; then
  "$root/scripts/test-services.sh" >&2
  . "${MEDIAVAULT_TEST_SERVICES_DIR:-$root/target/test-services}/env"
  export MEDIAVAULT__BLOBS__URL="s3://$MEDIAVAULT_TEST_S3_BUCKET/bench-$$"
  export MEDIAVAULT__BLOBS__ENDPOINT=$MEDIAVAULT_TEST_S3_ENDPOINT
  export MEDIAVAULT__BLOBS__REGION=garage
  export MEDIAVAULT__BLOBS__ACCESS_KEY_ID=$MEDIAVAULT_TEST_S3_ACCESS_KEY_ID
  export MEDIAVAULT__BLOBS__SECRET_ACCESS_KEY=$MEDIAVAULT_TEST_S3_SECRET_ACCESS_KEY
  export MEDIAVAULT__BLOBS__ALLOW_HTTP=true
else
  export MEDIAVAULT__BLOBS__URL="$2/blobs"
fi
# The benchmarks measure throughput, not the per-app rate limit.
export MEDIAVAULT__LIMITS__UPLOADS_PER_SECOND=${MEDIAVAULT__LIMITS__UPLOADS_PER_SECOND:-1000000}
export MEDIAVAULT__LIMITS__UPLOAD_BURST=${MEDIAVAULT__LIMITS__UPLOAD_BURST:-1000000}
# A migrated database with one app and its token: $app, $token.
"$1" migrate > /dev/null
app=$("$1" apps create --name bench | sed 's/.*"appId":"\([^"]*\)".*/\1/')
token=$("$1" tokens issue --app "$app" | sed 's/.*"token":"\([^"]*\)".*/\1/')

# Deletes media by ID through the server running at $base, so that a run
# leaves no blobs behind it (against Garage, runs would otherwise fill the
# test bucket until its disk is full).
delete_media() {
  local media
  for media in "$@"; do
    curl -sS --fail -X DELETE -H "token: $token" -o /dev/null "$base/partner/app/$app/media/$media" \
      || echo "could not delete media $media" >&2
  done
}
