# Sourced by the bench scripts: starts the test services if need be and
# points `mediavault` at a fresh prefix (`bench-$1`) of the Garage test bucket.
"$root/scripts/test-services.sh" >&2
. "$root/target/test-services/env"
export MEDIAVAULT__BLOBS__URL="s3://$MEDIAVAULT_TEST_S3_BUCKET/bench-$1"
export MEDIAVAULT__BLOBS__ENDPOINT=$MEDIAVAULT_TEST_S3_ENDPOINT
export MEDIAVAULT__BLOBS__REGION=garage
export MEDIAVAULT__BLOBS__ACCESS_KEY_ID=$MEDIAVAULT_TEST_S3_ACCESS_KEY_ID
export MEDIAVAULT__BLOBS__SECRET_ACCESS_KEY=$MEDIAVAULT_TEST_S3_SECRET_ACCESS_KEY
export MEDIAVAULT__BLOBS__ALLOW_HTTP=true
