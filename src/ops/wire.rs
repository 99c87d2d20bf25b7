//! Wire types: how an operation's arguments and results look on the wire.
//!
//! Every argument and result type implements [`Wire`], which describes it as a [`WireType`]
//! (a compile-time constant). The SOAP codec, the WSDL and the OpenAPI document are all derived
//! from these descriptions, so they cannot drift from the Rust types the operations use.
//! [`FromArg`] decodes one named argument from the JSON-shaped value both adapters produce.

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::ops::registry::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    Long,
    String,
    Boolean,
    DateTime,
    Struct(&'static StructType),
    Array(&'static WireType),
}

#[derive(Debug, PartialEq, Eq)]
pub struct StructType {
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
}

#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub ty: WireType,
    pub nillable: bool,
    /// The API version the field appeared in (`#[since(N)]` in [`wire_struct!`]): responses
    /// of older versions leave it out, so that their strict clients (zeep, Axis stubs) meet
    /// only the fields their WSDL names.
    pub since: Version,
}

impl StructType {
    /// The fields `version` of the API has, in wire order.
    pub fn fields_in(&self, version: Version) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(move |f| f.since <= version)
    }
}

/// A Rust type that has a description on the wire.
pub trait Wire {
    const TYPE: WireType;
    /// May the value be absent / nil?
    const NILLABLE: bool = false;
}

impl Wire for i64 {
    const TYPE: WireType = WireType::Long;
}
impl Wire for String {
    const TYPE: WireType = WireType::String;
}
impl Wire for bool {
    const TYPE: WireType = WireType::Boolean;
}
impl<T: Wire> Wire for Option<T> {
    const TYPE: WireType = T::TYPE;
    const NILLABLE: bool = true;
}
impl<T: Wire> Wire for Vec<T> {
    const TYPE: WireType = WireType::Array(&T::TYPE);
}

impl WireType {
    /// The XML Schema name of the type, as used in the WSDL (`xsd:long`, `tns:Disk`, ...).
    pub fn xsd_name(&self) -> String {
        match self {
            WireType::Long => "xsd:long".into(),
            WireType::String => "xsd:string".into(),
            WireType::Boolean => "xsd:boolean".into(),
            WireType::DateTime => "xsd:dateTime".into(),
            WireType::Struct(s) => format!("tns:{}", s.name),
            WireType::Array(item) => format!("tns:{}", item.array_name()),
        }
    }

    /// The name of the SOAP-encoded array type of this item type (`ArrayOfDisk`, `ArrayOflong`).
    pub fn array_name(&self) -> String {
        match self {
            WireType::Long => "ArrayOflong".into(),
            WireType::String => "ArrayOfstring".into(),
            WireType::Boolean => "ArrayOfboolean".into(),
            WireType::DateTime => "ArrayOfdateTime".into(),
            WireType::Struct(s) => format!("ArrayOf{}", s.name),
            WireType::Array(item) => format!("ArrayOf{}", item.array_name()),
        }
    }
}

/// A point in time, stored as epoch milliseconds and shown as RFC 3339 (`xsd:dateTime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Wire for Timestamp {
    const TYPE: WireType = WireType::DateTime;
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let time = chrono::DateTime::from_timestamp_millis(self.0).unwrap_or_default();
        serializer.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }
}

/// Decodes one named argument. `None` means the caller did not send it; both adapters
/// represent an explicit nil / null as `Some(Value::Null)`, which optional arguments accept.
pub trait FromArg: Sized {
    fn from_arg(name: &str, value: Option<Value>) -> ApiResult<Self>;

    /// Whether a value sent for an optional argument of this type means "not given", as nil
    /// does. Only optional numbers have one: -1, for clients that cannot send nil (Axis maps
    /// `xsd:long` to a Java `long`), as `vlan_id` -1 means no VLAN.
    fn means_not_given(_value: &Value) -> bool {
        false
    }
}

fn present(name: &str, value: Option<Value>) -> ApiResult<Value> {
    match value {
        None | Some(Value::Null) => Err(ApiError::MissingArgument(name.to_string())),
        Some(v) => Ok(v),
    }
}

impl FromArg for i64 {
    fn from_arg(name: &str, value: Option<Value>) -> ApiResult<Self> {
        let value = present(name, value)?;
        value
            .as_i64()
            .ok_or_else(|| ApiError::invalid(name, format!("must be an integer, got {value}")))
    }

    fn means_not_given(value: &Value) -> bool {
        value.as_i64() == Some(-1)
    }
}

impl FromArg for String {
    fn from_arg(name: &str, value: Option<Value>) -> ApiResult<Self> {
        match present(name, value)? {
            Value::String(s) => Ok(s),
            other => Err(ApiError::invalid(
                name,
                format!("must be a string, got {other}"),
            )),
        }
    }
}

impl FromArg for bool {
    fn from_arg(name: &str, value: Option<Value>) -> ApiResult<Self> {
        match present(name, value)? {
            Value::Bool(b) => Ok(b),
            other => Err(ApiError::invalid(
                name,
                format!("must be a boolean, got {other}"),
            )),
        }
    }
}

impl FromArg for Timestamp {
    fn from_arg(name: &str, value: Option<Value>) -> ApiResult<Self> {
        let text = String::from_arg(name, value)?;
        chrono::DateTime::parse_from_rfc3339(text.trim())
            .map(|t| Timestamp(t.timestamp_millis()))
            .map_err(|_| {
                ApiError::invalid(
                    name,
                    format!(
                        "must be an RFC 3339 time such as 2024-05-01T00:00:00Z, got \"{text}\""
                    ),
                )
            })
    }
}

impl<T: FromArg> FromArg for Option<T> {
    fn from_arg(name: &str, value: Option<Value>) -> ApiResult<Self> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(v) if T::means_not_given(&v) => Ok(None),
            some => T::from_arg(name, some).map(Some),
        }
    }
}

impl<T: FromArg> FromArg for Vec<T> {
    fn from_arg(name: &str, value: Option<Value>) -> ApiResult<Self> {
        match present(name, value)? {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| T::from_arg(&format!("{name}[{i}]"), Some(item)))
                .collect(),
            other => Err(ApiError::invalid(
                name,
                format!("must be an array, got {other}"),
            )),
        }
    }
}

/// Declares a record returned on the wire: the struct, its `Serialize`, and its [`Wire`]
/// description, from one list of fields. A field added after the first release says in which
/// API version with `#[since(N)]` after its doc comment (see `registry`); a field of a record
/// that no released version has needs none.
#[macro_export]
macro_rules! wire_struct {
    (
        $(#[doc = $doc:literal])*
        $vis:vis struct $name:ident as $wire_name:literal {
            $(
                $(#[doc = $fdoc:literal])*
                $(#[since($since:literal)])?
                pub $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        $vis struct $name {
            $( $(#[doc = $fdoc])* pub $field: $ty ),*
        }

        impl $crate::ops::wire::Wire for $name {
            const TYPE: $crate::ops::wire::WireType =
                $crate::ops::wire::WireType::Struct(&$crate::ops::wire::StructType {
                    name: $wire_name,
                    doc: concat!($($doc, "\n"),*),
                    fields: &[
                        $( $crate::ops::wire::Field {
                            name: $crate::ops::registry::wire_name(stringify!($field)),
                            ty: <$ty as $crate::ops::wire::Wire>::TYPE,
                            nillable: <$ty as $crate::ops::wire::Wire>::NILLABLE,
                            since: $crate::ops::registry::since!($($since)?),
                        } ),*
                    ],
                });
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_and_mistyped_arguments_are_named() {
        let err = i64::from_arg("vdc_id", None).unwrap_err();
        assert_eq!(err.to_string(), "missing argument 'vdc_id'");
        let err = i64::from_arg("vdc_id", Some(json!("abc"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "argument 'vdc_id' must be an integer, got \"abc\""
        );
        let err = Vec::<i64>::from_arg("ids", Some(json!([1, "x"]))).unwrap_err();
        assert!(err.to_string().starts_with("argument 'ids[1]'"));
    }

    #[test]
    fn optional_arguments_accept_null_and_absence() {
        assert_eq!(Option::<String>::from_arg("c", None).unwrap(), None);
        assert_eq!(
            Option::<String>::from_arg("c", Some(Value::Null)).unwrap(),
            None
        );
        assert_eq!(
            Option::<String>::from_arg("c", Some(json!("x"))).unwrap(),
            Some("x".to_string())
        );
    }

    #[test]
    fn optional_numbers_take_minus_one_as_not_given() {
        assert_eq!(
            Option::<i64>::from_arg("index", Some(json!(-1))).unwrap(),
            None
        );
        assert_eq!(
            Option::<i64>::from_arg("index", Some(json!(0))).unwrap(),
            Some(0)
        );
        assert_eq!(
            Option::<i64>::from_arg("index", Some(json!(-2))).unwrap(),
            Some(-2)
        );
        // Only optional ones: a required number keeps its -1.
        assert_eq!(i64::from_arg("vlan_id", Some(json!(-1))).unwrap(), -1);
        assert_eq!(
            Option::<String>::from_arg("c", Some(json!("-1"))).unwrap(),
            Some("-1".to_string())
        );
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let v = serde_json::to_value(Timestamp(0)).unwrap();
        assert_eq!(v, json!("1970-01-01T00:00:00.000Z"));
    }

    #[test]
    fn timestamp_arguments_are_rfc3339() {
        let t = Timestamp::from_arg("from", Some(json!("1970-01-01T00:00:01.500+00:00"))).unwrap();
        assert_eq!(t, Timestamp(1500));
        let err = Timestamp::from_arg("from", Some(json!("yesterday"))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("argument 'from' must be an RFC 3339 time")
        );
    }
}
