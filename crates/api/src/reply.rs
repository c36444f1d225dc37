//! The envelope of every successful JSON reply: the reply's own fields, then
//! `"status": "success"`, as the Gupshup contract answers.

use std::borrow::Cow;

use mediavault_storage::to_datetime;
use serde::Serialize;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// A successful reply: the fields of `T`, then `"status": "success"`. Its
/// OpenAPI schema is `T`'s with `status` added, under `T`'s name, so that
/// each reply keeps its own name in the document.
#[derive(Serialize)]
pub struct Success<T> {
    #[serde(flatten)]
    body: T,
    status: &'static str,
}

impl<T> Success<T> {
    pub fn new(body: T) -> Success<T> {
        Success {
            body,
            status: "success",
        }
    }
}

/// The schema of the `status` field: always `"success"`.
fn status() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["success"]))
}

impl<T: ToSchema> PartialSchema for Success<T> {
    fn schema() -> RefOr<Schema> {
        match T::schema() {
            RefOr::T(Schema::Object(mut object)) => {
                object.properties.insert("status".into(), status().into());
                object.required.push("status".into());
                Schema::Object(object).into()
            }
            // Not a plain object: the two side by side.
            other => AllOfBuilder::new()
                .item(other)
                .item(
                    ObjectBuilder::new()
                        .property("status", status())
                        .required("status"),
                )
                .into(),
        }
    }
}

impl<T: ToSchema> ToSchema for Success<T> {
    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        T::schemas(schemas);
    }
}

/// A time in milliseconds since the epoch as RFC 3339 UTC with milliseconds,
/// as replies write times.
pub(crate) fn rfc3339(ms: i64) -> String {
    to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        media_id: &'static str,
    }

    #[test]
    fn the_status_follows_the_fields() {
        let reply = serde_json::to_string(&Success::new(Body { media_id: "m" })).unwrap();
        assert_eq!(reply, r#"{"mediaId":"m","status":"success"}"#);
        let bare = serde_json::to_string(&Success::new(())).unwrap();
        assert_eq!(bare, r#"{"status":"success"}"#);
    }
}
